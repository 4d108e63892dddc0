"""The Core service: ``potluck.core.v1.CoreService`` over gRPC, a thin adapter on a Registry.

Each RPC maps its request to one :class:`~potluck.registry.base.Registry` call through
``potluck.definitions.serde`` and maps the result back. A :class:`~potluck.errors.PotluckError`
ends the call with the status from ``registry/_errors.py`` and the error's code, message (cut to
``registry/_edge.py``'s bound) and fields, so :class:`~potluck.registry.remote.RemoteRegistry`
raises the same error; a request that is not valid protobuf ends with ``INVALID_ARGUMENT``
(``registry/_edge.py``). The standard ``grpc.health.v1.Health`` service runs alongside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from potluck._grpc_bind import bind_problem
from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as pb_grpc
from potluck._proto.potluck.core.v1 import definitions_pb2 as defs_pb
from potluck._stop_signals import StopSignals, Terminated
from potluck.auth.denials import DenialAudit
from potluck.auth.exposure import isolation_warning
from potluck.auth.grpc import add_port, server_interceptors
from potluck.auth.identity import current_caller
from potluck.auth.reports import check_report
from potluck.auth.rules import CORE_RULES, FEAST_CORE_RULES, JOB_SERVICE_RULES
from potluck.auth.settings import AuthSettings, resolved
from potluck.config import Settings
from potluck.definitions import Entity, FeatureTable, serde
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, Definition
from potluck.definitions.sources import received_source_path
from potluck.errors import DefinitionError, PotluckError, UnavailableError, ValidationError
from potluck.registry import audit
from potluck.registry._audit_wire import allowed_to_proto, entry_to_proto
from potluck.registry._edge import RejectUndecodable, shorten
from potluck.registry._errors import error_metadata, status_for
from potluck.registry._wire import (
    GRPC_OPTIONS,
    SERVICE_NAME,
    change_to_proto,
    definition_to_proto,
    job_from_proto,
    job_to_proto,
    project_to_proto,
    revision_to_proto,
    timestamp_from_proto,
)
from potluck.registry.audit import RecordPeer
from potluck.registry.base import Registry
from potluck.registry.isolation import DataIsolation
from potluck.registry.sql import SqlRegistry

_log = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Spec = defs_pb.EntitySpec | defs_pb.FeatureTableSpec

ExtraService = Callable[[grpc.Server, Registry], None]
"""Adds another gRPC service over the same registry to the Core server before it starts; the
composition root (the CLI) passes them, such as Feast 0.9's ``feast.core.CoreService``."""

Companion = Callable[[], AbstractContextManager[Sequence[ExtraService]]]
"""Runs beside the Core service in its process (``potluck core --job-service``: the Job
Service): entered once the stop signals are handled and before the server starts, it gives more
services to serve on Core's port; left after the server has stopped."""


def _rpc(
    method: Callable[[_CoreServicer, _Request], _Response],
) -> Callable[[_CoreServicer, _Request, grpc.ServicerContext], _Response]:
    """Turn ``method(self, request)`` into a gRPC handler that maps errors to statuses.

    A PotluckError ends the call with its mapped status, its message as the details and its
    code and fields as trailing metadata; anything else ends it with ``INTERNAL`` (and is
    logged with its traceback, since it is a bug).
    """

    @functools.wraps(method)
    def handler(self: _CoreServicer, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request)
        except PotluckError as exc:
            context.set_trailing_metadata(error_metadata(exc))
            context.abort(status_for(exc), shorten(exc.message))
        except Exception as exc:
            _log.exception("Core service call %s failed", method.__name__)
            error = PotluckError(f"internal error in the Core service: {type(exc).__name__}: {exc}")
            context.set_trailing_metadata(error_metadata(error))
            context.abort(grpc.StatusCode.INTERNAL, shorten(error.message))

    return handler


class CoreServer:
    """A running Core service.

    Attributes:
        port: The port it listens on (the chosen one when started with port 0).
        address: ``host:port`` a client connects to.
    """

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        host: str,
        port: int,
        denials: DenialAudit | None = None,
    ) -> None:
        self._server = server
        self._health = health_servicer
        self._denials = denials
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls in flight get ``grace`` seconds to finish (``None``: none)."""
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        if self._denials is not None:
            self._denials.close()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._server.wait_for_termination()


def start_core_server(
    registry: Registry,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 8,
    services: Sequence[ExtraService] = (),
    auth: AuthSettings | None = None,
) -> CoreServer:
    """Serve ``registry`` as the Core service and return at once.

    Args:
        registry: The registry every call reads and writes.
        host: The interface to listen on.
        port: The port to listen on; 0 picks a free one (see :attr:`CoreServer.port`).
        max_workers: Threads serving calls concurrently.
        services: More services served from ``registry`` on the same port.
        auth: Tokens and TLS (paths absolute); with a token source every call needs a bearer
            token and the permission ``potluck.auth.rules`` gives its method, and each denied
            call is recorded in ``registry``'s audit log; ``None``: open.

    Returns:
        The running server.

    Raises:
        UnavailableError: If ``host:port`` cannot be listened on (in use, or not a local
            address), or the JWKS cannot be read.
        ConfigError: If the tokens file, the JWKS or a TLS file is invalid.

    Example:
        >>> server = start_core_server(SqlRegistry("sqlite:///registry.db"))
        >>> remote = RemoteRegistry(server.address)
    """
    # so_reuseport off: a second server on a taken port must fail, not silently share it.
    options = (*GRPC_OPTIONS, ("grpc.so_reuseport", 0))
    denials = (
        DenialAudit(registry.record_denial) if auth is not None and auth.authenticates else None
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers),
        options=options,
        interceptors=[
            RecordPeer(),
            *server_interceptors(
                auth,
                {**CORE_RULES, **FEAST_CORE_RULES, **JOB_SERVICE_RULES},  # --job-service
                default_project="default",
                on_refusal=denials,
            ),
            RejectUndecodable(),
        ],
    )
    pb_grpc.add_CoreServiceServicer_to_server(_CoreServicer(registry), server)
    for add_service in services:
        add_service(server, registry)
    return start_listening(
        server,
        host=host,
        port=port,
        auth=auth,
        denials=denials,
        what="the Core service",
        service_name=SERVICE_NAME,
    )


def start_listening(
    server: grpc.Server,
    *,
    host: str,
    port: int,
    auth: AuthSettings | None,
    denials: DenialAudit | None,
    what: str,
    service_name: str,
) -> CoreServer:
    """Add the health service to ``server``, listen on ``host:port`` and start it.

    Both ``service_name`` and the whole server (``""``) report ``SERVING`` once it listens.

    Args:
        server: A gRPC server with its services added, not started.
        host: The interface to listen on.
        port: The port to listen on; 0 picks a free one.
        auth: TLS for the port when it names a certificate; ``None``: plain.
        denials: The denial audit its interceptor writes to (closed if it cannot start).
        what: The service, for the error (``"the Core service"``).
        service_name: The full name of its main gRPC service, for the health service.

    Raises:
        UnavailableError: If ``host:port`` cannot be listened on (in use, or not a local
            address).
        ConfigError: If a TLS file is invalid.
    """
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = add_port(server, target, auth)
    except (PotluckError, RuntimeError) as exc:
        server.stop(None)
        if denials is not None:
            denials.close()
        if isinstance(exc, PotluckError):
            raise
        raise UnavailableError(
            f"{what} cannot listen on {target}: {bind_problem(host, port)}",
            address=target,
        ) from None
    server.start()
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return CoreServer(server, health_servicer, host, bound, denials)


def run_core(
    settings: Settings,
    port: int,
    host: str = "127.0.0.1",
    services: Sequence[ExtraService] = (),
    *,
    companion: Companion | None = None,
) -> signal.Signals:
    """Serve the configured registry as the Core service until SIGINT or SIGTERM.

    Must run in the main thread: it handles both signals from its first instruction on
    (:class:`~potluck._stop_signals.StopSignals`). Either stops the service gracefully (calls
    in flight get 5 seconds); one that arrives while it starts ends the start-up instead. Logs
    one line with the address and the registry URL (password masked).

    Args:
        settings: The settings; ``registry`` names the database served.
        port: The port to listen on (0 picks a free one).
        host: The interface to listen on.
        services: More services served from the registry on the same port.
        companion: Runs beside it and adds its services (see :data:`Companion`).

    Returns:
        The signal that stopped it, so that a caller can end as that signal asks (the CLI exits
        with code 130 after SIGINT, 0 after SIGTERM).

    Raises:
        UnavailableError: If the port cannot be listened on or the registry's database cannot
            be reached.
        ConfigError: If the registry URL or its credentials are wrong.
        KeyboardInterrupt: If SIGINT arrives while it starts.
    """
    # SIGTERM while starting (Terminated) is a clean stop too: what started is closed.
    with StopSignals() as signals, contextlib.suppress(Terminated):
        beside = companion() if companion is not None else contextlib.nullcontext(())
        with beside as more:
            _serve_core(settings, port, host, signals, [*services, *more])
    assert signals.received is not None  # only a signal ends serving
    return signals.received


def _serve_core(
    settings: Settings,
    port: int,
    host: str,
    signals: StopSignals,
    services: Sequence[ExtraService],
) -> None:
    isolation = DataIsolation.from_settings(settings)
    registry = SqlRegistry(settings.registry_url, isolation=isolation)
    try:
        registry.list_projects()  # fail now, not on the first call, if the database is unusable
        auth = resolved(settings.auth, settings.root) if settings.auth is not None else None
        server = start_core_server(registry, host=host, port=port, services=services, auth=auth)
        try:
            stopped = threading.Event()
            signals.serving(stopped.set)
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(message)s")
            _log.info(
                "potluck core listening on %s (registry: %s)",
                server.address,
                make_url(settings.registry_url).render_as_string(hide_password=True),
            )
            warning = isolation_warning(isolation is not None, auth)
            if warning is not None:
                _log.warning("%s", warning)
            stopped.wait()
        finally:
            server.stop(grace=5.0)
    finally:
        registry.close()


def _received(table: FeatureTable) -> FeatureTable:
    """Return ``table`` with its batch source path as every route stores it.

    See :func:`potluck.definitions.sources.received_source_path`: a relative path is refused,
    a ``file://`` URL decoded, a local path normalised.

    Raises:
        DefinitionError: Naming the table and ``batch_source.path``.
    """
    source = table.batch_source
    if source is None:
        return table
    try:
        path = received_source_path(source.path)
    except DefinitionError as exc:
        attrs = {**exc.attrs(), "table": table.name}
        raise DefinitionError(f"feature table {table.name}: {exc.message}", **attrs) from None
    if path == source.path:
        return table
    return dataclasses.replace(table, batch_source=dataclasses.replace(source, path=path))


class _CoreServicer:
    """The CoreService methods, one registry call each.

    Named as the generated ``add_CoreServiceServicer_to_server`` expects; :func:`_rpc` adds the
    ``context`` argument and the error mapping.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def _apply(self, request: pb.ApplyRequest, *, dry_run: bool) -> pb.ApplyResponse:
        objects: list[Definition] = [serde.entity_from_proto(e) for e in request.entities]
        objects += [_received(serde.feature_table_from_proto(t)) for t in request.feature_tables]
        changes = self._registry.apply(
            request.project, objects, force=request.force, dry_run=dry_run
        )
        return pb.ApplyResponse(changes=[change_to_proto(c) for c in changes])

    @_rpc
    def Apply(self, request: pb.ApplyRequest) -> pb.ApplyResponse:  # noqa: N802
        return self._apply(request, dry_run=False)

    @_rpc
    def Plan(self, request: pb.ApplyRequest) -> pb.ApplyResponse:  # noqa: N802
        return self._apply(request, dry_run=True)

    @_rpc
    def GetEntity(self, request: pb.GetRequest) -> _Spec:  # noqa: N802
        return definition_to_proto(self._registry.get(request.project, KIND_ENTITY, request.name))

    @_rpc
    def ListEntities(self, request: pb.ListRequest) -> pb.ListEntitiesResponse:  # noqa: N802
        found = self._registry.list(request.project, KIND_ENTITY, dict(request.labels) or None)
        return pb.ListEntitiesResponse(
            entities=[serde.entity_to_proto(e) for e in found if isinstance(e, Entity)]
        )

    @_rpc
    def DeleteEntity(self, request: pb.GetRequest) -> pb.DeleteResponse:  # noqa: N802
        self._registry.delete(request.project, KIND_ENTITY, request.name)
        return pb.DeleteResponse()

    @_rpc
    def GetEntityHistory(self, request: pb.GetRequest) -> pb.HistoryResponse:  # noqa: N802
        history = self._registry.history(request.project, KIND_ENTITY, request.name)
        return pb.HistoryResponse(revisions=[revision_to_proto(r) for r in history])

    @_rpc
    def GetFeatureTable(self, request: pb.GetRequest) -> _Spec:  # noqa: N802
        return definition_to_proto(
            self._registry.get(request.project, KIND_FEATURE_TABLE, request.name)
        )

    @_rpc
    def ListFeatureTables(  # noqa: N802
        self, request: pb.ListRequest
    ) -> pb.ListFeatureTablesResponse:
        found = self._registry.list(
            request.project, KIND_FEATURE_TABLE, dict(request.labels) or None
        )
        return pb.ListFeatureTablesResponse(
            feature_tables=[
                serde.feature_table_to_proto(t) for t in found if isinstance(t, FeatureTable)
            ]
        )

    @_rpc
    def DeleteFeatureTable(self, request: pb.GetRequest) -> pb.DeleteResponse:  # noqa: N802
        self._registry.delete(request.project, KIND_FEATURE_TABLE, request.name)
        return pb.DeleteResponse()

    @_rpc
    def GetFeatureTableHistory(self, request: pb.GetRequest) -> pb.HistoryResponse:  # noqa: N802
        history = self._registry.history(request.project, KIND_FEATURE_TABLE, request.name)
        return pb.HistoryResponse(revisions=[revision_to_proto(r) for r in history])

    @_rpc
    def ListProjects(  # noqa: N802
        self, request: pb.ListProjectsRequest
    ) -> pb.ListProjectsResponse:
        projects = self._registry.list_projects(include_archived=request.include_archived)
        return pb.ListProjectsResponse(projects=[project_to_proto(p) for p in projects])

    @_rpc
    def CreateProject(self, request: pb.ProjectRequest) -> pb.Project:  # noqa: N802
        return project_to_proto(self._registry.create_project(request.name))

    @_rpc
    def ArchiveProject(self, request: pb.ProjectRequest) -> pb.Project:  # noqa: N802
        return project_to_proto(self._registry.archive_project(request.name))

    @_rpc
    def RestoreProject(self, request: pb.ProjectRequest) -> pb.Project:  # noqa: N802
        return project_to_proto(self._registry.restore_project(request.name))

    @_rpc
    def AllowLocation(  # noqa: N802
        self, request: pb.AllowLocationRequest
    ) -> pb.AllowedLocation:
        allowed = self._registry.allow_location(request.project, request.location)
        return allowed_to_proto(allowed)

    @_rpc
    def ListAllowedLocations(  # noqa: N802
        self, request: pb.ProjectRequest
    ) -> pb.ListAllowedLocationsResponse:
        allowed = self._registry.list_allowed_locations(request.name)
        return pb.ListAllowedLocationsResponse(
            locations=[allowed_to_proto(a) for a in allowed],
            data_roots=self._registry.data_roots(request.name),
        )

    @_rpc
    def ListAudit(self, request: pb.ListAuditRequest) -> pb.ListAuditResponse:  # noqa: N802
        since = timestamp_from_proto(request.since) if request.HasField("since") else None
        limit = request.limit or 100
        caller = current_caller()
        if request.project or caller is None or caller.projects is None:
            entries = self._registry.audit_log(
                project=request.project or None, since=since, limit=limit
            )
        else:  # an administrator of some projects reads their entries only
            scoped = [
                entry
                for project in sorted(caller.projects)
                for entry in self._registry.audit_log(project=project, since=since, limit=limit)
            ]
            entries = sorted(scoped, key=lambda e: e.at, reverse=True)[:limit]
        return pb.ListAuditResponse(entries=[entry_to_proto(e) for e in entries])

    @_rpc
    def RecordDenial(  # noqa: N802
        self, request: pb.RecordDenialRequest
    ) -> pb.RecordDenialResponse:
        # The caller reports someone else's denial: only what a server could have denied, and
        # who reported it in a field of its own (potluck.auth.reports).
        check_report(request.actor, request.project, request.permission, request.method)
        if request.project:
            known = {p.name for p in self._registry.list_projects(include_archived=True)}
            if request.project not in known:
                raise ValidationError(
                    f"project: {request.project!r} does not exist; a denial is recorded for an "
                    "existing project (or none, for a method that acts on no project)",
                    field="project",
                )
        self._registry.record_denial(
            request.actor,
            request.project,
            request.permission,
            request.method,
            reported_by=audit.current_actor(),
        )
        return pb.RecordDenialResponse()

    @_rpc
    def PutJob(self, request: pb.Job) -> pb.Job:  # noqa: N802
        self._registry.put_job(job_from_proto(request))
        return request

    @_rpc
    def GetJob(self, request: pb.GetJobRequest) -> pb.Job:  # noqa: N802
        return job_to_proto(self._registry.get_job(request.project, request.id))

    @_rpc
    def ListJobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:  # noqa: N802
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in self._registry.list_jobs(request.project)]
        )

    @_rpc
    def AuthorizeJobControl(  # noqa: N802
        self, request: pb.AuthorizeJobControlRequest
    ) -> pb.AuthorizeJobControlResponse:
        # The interceptor has checked run_jobs on the project; the registry has nothing to do.
        self._registry.authorize_job_control(request.project)
        return pb.AuthorizeJobControlResponse()
