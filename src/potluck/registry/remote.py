"""RemoteRegistry: the Registry interface over gRPC, as a client of the Core service.

Every method is one ``potluck.core.v1.CoreService`` call. Errors the server raised come back as
the same :class:`~potluck.errors.PotluckError` subclass with the same message and fields;
transport failures become :class:`~potluck.errors.UnavailableError` naming the address.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as pb_grpc
from potluck.auth.grpc import PLAIN, ClientSecurity, open_channel, plain_hint
from potluck.definitions import Entity, FeatureTable, serde
from potluck.definitions.serde import KIND_ENTITY, Definition, kind_of
from potluck.errors import PotluckError, UnavailableError, ValidationError
from potluck.registry._audit_wire import allowed_from_proto, entry_from_proto
from potluck.registry._errors import CODE_KEY, rebuild_error
from potluck.registry._wire import (
    GRPC_OPTIONS,
    SERVICE_NAME,
    change_from_proto,
    job_from_proto,
    job_to_proto,
    project_from_proto,
    revision_from_proto,
    timestamp_to_proto,
)
from potluck.registry.audit import check_limit
from potluck.registry.base import (
    AllowedLocation,
    AuditEntry,
    Change,
    JobRecord,
    Project,
    Registry,
    Revision,
)
from potluck.registry.plan import KIND_LABELS

CONNECT_TIMEOUT = 5.0
"""Longest wait, in seconds, for the Core service's health check when constructing."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class RemoteRegistry(Registry):
    """A Registry served by a Core service (``potluck core``).

    Args:
        address: ``host:port`` of the Core service.
        timeout: Deadline in seconds for each call.
        security: TLS (``core_secure``, ``ca_file``) and the bearer token to send.

    Raises:
        ConfigError: If ``security.ca_file`` cannot be read.
        UnavailableError: If no Core service answers its health check at ``address`` within
            ``min(timeout, 5)`` seconds (a refused connection fails at once); the message
            names the address.

    Example:
        >>> registry = RemoteRegistry("127.0.0.1:6565")
        >>> registry.list_projects()
    """

    def __init__(
        self, address: str, *, timeout: float = 10.0, security: ClientSecurity = PLAIN
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._security = security
        self._channel = open_channel(address, security, GRPC_OPTIONS)
        self._stub = pb_grpc.CoreServiceStub(self._channel)
        try:
            self._check_health(min(timeout, CONNECT_TIMEOUT))
        except UnavailableError:
            self._channel.close()
            raise

    def _check_health(self, timeout: float) -> None:
        # A health check rather than channel_ready_future: a refused connection fails at once
        # with its cause, and a server that is not a Core service is told apart.
        health = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            response = health.Check(request, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            call = cast(grpc.Call, exc)
            status = call.code()
            if status in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                reason = f"it answers but does not serve {SERVICE_NAME}"
            elif status == grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"no answer within {timeout:g} s"
            else:
                reason = call.details() or status.name
            raise UnavailableError(
                f"cannot reach the Core service at {self.address}: {reason}; "
                f"is `potluck core` running?{plain_hint(self._security, 'core_secure', reason)}",
                address=self.address,
            ) from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise UnavailableError(
                f"the Core service at {self.address} is not serving (it is shutting down)",
                address=self.address,
            )

    # ---- definitions ---------------------------------------------------------------------------

    def apply(
        self,
        project: str,
        objects: Sequence[Definition],
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> builtins.list[Change]:
        """Apply ``objects`` through the Core service (``Plan`` when ``dry_run``).

        The changes come back in the order the objects were given, as from the registry itself.
        """
        for obj in objects:
            if not isinstance(obj, (Entity, FeatureTable)):
                raise ValidationError(
                    f"apply takes Entity and FeatureTable objects, got {type(obj).__name__}"
                )
        request = pb.ApplyRequest(
            project=project,
            entities=[serde.entity_to_proto(o) for o in objects if isinstance(o, Entity)],
            feature_tables=[
                serde.feature_table_to_proto(o) for o in objects if isinstance(o, FeatureTable)
            ],
            force=force,
        )
        rpc = self._stub.Plan if dry_run else self._stub.Apply
        changes = [change_from_proto(c) for c in self._call(rpc, request).changes]
        # The request carries entities and tables in separate lists; restore the caller's order.
        order = {(kind_of(o), o.name): i for i, o in enumerate(objects)}
        return sorted(changes, key=lambda c: order.get((c.kind, c.name), len(order)))

    def get(self, project: str, kind: str, name: str) -> Definition:
        """Return the current definition of ``kind`` named ``name``."""
        request = pb.GetRequest(project=project, name=name)
        if _check_kind(kind) == KIND_ENTITY:
            return serde.entity_from_proto(self._call(self._stub.GetEntity, request))
        return serde.feature_table_from_proto(self._call(self._stub.GetFeatureTable, request))

    def list(
        self, project: str, kind: str, labels: Mapping[str, str] | None = None
    ) -> list[Definition]:
        """Return the definitions of ``kind`` whose labels include ``labels``, sorted by name."""
        request = pb.ListRequest(project=project, labels=dict(labels or {}))
        if _check_kind(kind) == KIND_ENTITY:
            entities = self._call(self._stub.ListEntities, request).entities
            return [serde.entity_from_proto(e) for e in entities]
        tables = self._call(self._stub.ListFeatureTables, request).feature_tables
        return [serde.feature_table_from_proto(t) for t in tables]

    def delete(self, project: str, kind: str, name: str) -> None:
        """Delete a definition (its history is kept)."""
        request = pb.GetRequest(project=project, name=name)
        if _check_kind(kind) == KIND_ENTITY:
            self._call(self._stub.DeleteEntity, request)
        else:
            self._call(self._stub.DeleteFeatureTable, request)

    def history(self, project: str, kind: str, name: str) -> builtins.list[Revision]:
        """Return every applied revision of a definition, oldest first."""
        request = pb.GetRequest(project=project, name=name)
        if _check_kind(kind) == KIND_ENTITY:
            response = self._call(self._stub.GetEntityHistory, request)
        else:
            response = self._call(self._stub.GetFeatureTableHistory, request)
        return [revision_from_proto(r) for r in response.revisions]

    # ---- projects ------------------------------------------------------------------------------

    def list_projects(self, *, include_archived: bool = False) -> builtins.list[Project]:
        """Return the projects, sorted by name."""
        request = pb.ListProjectsRequest(include_archived=include_archived)
        response = self._call(self._stub.ListProjects, request)
        return [project_from_proto(p) for p in response.projects]

    def create_project(self, name: str) -> Project:
        """Create a project."""
        return project_from_proto(
            self._call(self._stub.CreateProject, pb.ProjectRequest(name=name))
        )

    def archive_project(self, name: str) -> Project:
        """Archive a project."""
        return project_from_proto(
            self._call(self._stub.ArchiveProject, pb.ProjectRequest(name=name))
        )

    def restore_project(self, name: str) -> Project:
        """Restore an archived project."""
        return project_from_proto(
            self._call(self._stub.RestoreProject, pb.ProjectRequest(name=name))
        )

    def allow_location(self, project: str, location: str) -> AllowedLocation:
        """Allow ``project``'s tables to name ``location`` outside its data roots."""
        request = pb.AllowLocationRequest(project=project, location=location)
        return allowed_from_proto(self._call(self._stub.AllowLocation, request))

    def data_roots(self, project: str) -> tuple[str, ...]:
        """Return the roots the Core service holds ``project``'s sources to (empty: none)."""
        request = pb.ProjectRequest(name=project)
        return tuple(self._call(self._stub.ListAllowedLocations, request).data_roots)

    def list_allowed_locations(self, project: str) -> builtins.list[AllowedLocation]:
        """Return the locations allowed for ``project``, sorted by location."""
        request = pb.ProjectRequest(name=project)
        response = self._call(self._stub.ListAllowedLocations, request)
        return [allowed_from_proto(a) for a in response.locations]

    # ---- audit ---------------------------------------------------------------------------------

    def audit_log(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> builtins.list[AuditEntry]:
        """Return audit entries, newest first."""
        request = pb.ListAuditRequest(project=project or "", limit=check_limit(limit))
        if since is not None:
            request.since.CopyFrom(timestamp_to_proto(since))
        response = self._call(self._stub.ListAudit, request)
        return [entry_from_proto(e) for e in response.entries]

    def record_denial(
        self,
        actor: str,
        project: str,
        permission: str,
        method: str,
        *,
        reported_by: str | None = None,
    ) -> None:
        """Report a denied call to the Core service, which records it with who reported it.

        ``reported_by`` is not sent: the Core service records its own caller as the reporter.

        Raises:
            ValidationError: If the Core service refuses the report (see ``RecordDenial``).
        """
        request = pb.RecordDenialRequest(
            actor=actor, project=project, permission=permission, method=method
        )
        self._call(self._stub.RecordDenial, request)

    # ---- jobs ----------------------------------------------------------------------------------

    def put_job(self, job: JobRecord) -> None:
        """Create or replace a job record."""
        self._call(self._stub.PutJob, job_to_proto(job))

    def get_job(self, project: str, job_id: str) -> JobRecord:
        """Return a job record."""
        request = pb.GetJobRequest(project=project, id=job_id)
        return job_from_proto(self._call(self._stub.GetJob, request))

    def list_jobs(self, project: str) -> builtins.list[JobRecord]:
        """Return the project's job records, newest first."""
        response = self._call(self._stub.ListJobs, pb.ListJobsRequest(project=project))
        return [job_from_proto(j) for j in response.jobs]

    def authorize_job_control(self, project: str) -> None:
        """Ask Core whether the caller holds ``run_jobs`` on ``project`` (it changes nothing)."""
        self._call(self._stub.AuthorizeJobControl, pb.AuthorizeJobControlRequest(project=project))

    # ---- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel to the Core service."""
        self._channel.close()

    def _call(self, rpc: Callable[..., _Response], request: _Request) -> _Response:
        try:
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(cast(grpc.Call, exc)) from None

    def _error(self, call: grpc.Call) -> PotluckError:
        metadata = {key: value for key, value in call.trailing_metadata() or ()}
        code = metadata.get(CODE_KEY)
        details = call.details() or ""
        if isinstance(code, str):
            return rebuild_error(code, details, metadata)
        status = call.code()
        if status == grpc.StatusCode.UNAVAILABLE:
            return UnavailableError(
                f"cannot reach the Core service at {self.address}: {details}; "
                f"is `potluck core` running?{plain_hint(self._security, 'core_secure', details)}",
                address=self.address,
            )
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UnavailableError(
                f"the Core service at {self.address} did not answer within {self.timeout:g} s",
                address=self.address,
            )
        return PotluckError(
            f"the Core service at {self.address} failed: {status.name}: {details}",
            address=self.address,
        )


def _check_kind(kind: str) -> str:
    """Refuse an unknown kind with the same error the SQL registry raises."""
    if kind not in KIND_LABELS:
        raise ValidationError(
            f"unknown kind {kind!r}; expected one of {', '.join(sorted(KIND_LABELS))}", kind=kind
        )
    return kind
