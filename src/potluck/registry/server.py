"""The Core service: ``potluck.core.v1.CoreService`` over gRPC, a thin adapter on a Registry.

Each RPC maps its request to one :class:`~potluck.registry.base.Registry` call through
``potluck.definitions.serde`` and maps the result back. A :class:`~potluck.errors.PotluckError`
ends the call with the status from ``registry/_errors.py`` and the error's code, message and
fields, so :class:`~potluck.registry.remote.RemoteRegistry` raises the same error. The standard
``grpc.health.v1.Health`` service runs alongside.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as pb_grpc
from potluck.config import Settings
from potluck.definitions import Entity, FeatureTable
from potluck.definitions import serde
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, Definition
from potluck.errors import PotluckError, UnavailableError, ValidationError
from potluck.registry._errors import error_metadata, status_for
from potluck.registry.base import Change, JobRecord, Project, Registry, Revision

SERVICE_NAME = "potluck.core.v1.CoreService"
"""The fully qualified gRPC service name (also the health-check service name)."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest request or response either side accepts (a registry listing can be large)."""

GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
"""Channel and server options shared by the Core server and its client."""

_log = logging.getLogger(__name__)

_Response = TypeVar("_Response")


class CoreServer:
    """A running Core service.

    Attributes:
        port: The port it listens on (the chosen one when started with port 0).
        address: ``host:port`` a client connects to.
    """

    def __init__(
        self, server: grpc.Server, health_servicer: health.HealthServicer, host: str, port: int
    ) -> None:
        self._server = server
        self._health = health_servicer
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls in flight get ``grace`` seconds to finish (``None``: none)."""
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._server.wait_for_termination()


def start_core_server(
    registry: Registry, *, host: str = "127.0.0.1", port: int = 0, max_workers: int = 8
) -> CoreServer:
    """Serve ``registry`` as the Core service and return at once.

    Args:
        registry: The registry every call reads and writes.
        host: The interface to listen on.
        port: The port to listen on; 0 picks a free one (see :attr:`CoreServer.port`).
        max_workers: Threads serving calls concurrently.

    Returns:
        The running server.

    Raises:
        UnavailableError: If ``host:port`` cannot be listened on (in use, or not a local
            address).

    Example:
        >>> server = start_core_server(SqlRegistry("sqlite:///registry.db"))
        >>> remote = RemoteRegistry(server.address)
    """
    # so_reuseport off: a second server on a taken port must fail, not silently share it.
    options = (*GRPC_OPTIONS, ("grpc.so_reuseport", 0))
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers), options=options)
    pb_grpc.add_CoreServiceServicer_to_server(_CoreServicer(registry), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise UnavailableError(
            f"the Core service cannot listen on {target}: {exc}; is the port already in use?",
            address=target,
        ) from None
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return CoreServer(server, health_servicer, host, bound)


def run_core(settings: Settings, port: int, host: str = "127.0.0.1") -> None:
    """Serve the configured registry as the Core service until SIGINT or SIGTERM.

    Must run in the main thread (it installs signal handlers). Logs one line with the address
    and the registry URL (password masked).

    Args:
        settings: The settings; ``registry`` names the database served.
        port: The port to listen on (0 picks a free one).
        host: The interface to listen on.

    Raises:
        UnavailableError: If the port cannot be listened on or the registry cannot be opened.
    """
    from potluck.registry.sql import SqlRegistry

    registry = SqlRegistry(settings.registry_url)
    try:
        server = start_core_server(registry, host=host, port=port)
        stopping = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            if not stopping.is_set():
                stopping.set()
                threading.Thread(target=server.stop, args=(5.0,), daemon=True).start()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        _log.info(
            "potluck core listening on %s (registry: %s)",
            server.address,
            make_url(settings.registry_url).render_as_string(hide_password=True),
        )
        server.wait()
    finally:
        registry.close()


class _CoreServicer:
    """The CoreService methods, named as the generated ``add_CoreServiceServicer_to_server``
    expects; each is one registry call."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def Apply(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: self._apply(request, dry_run=False))

    def Plan(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: self._apply(request, dry_run=True))

    def GetEntity(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: _definition_to_proto(
            self._registry.get(request.project, KIND_ENTITY, request.name)))

    def ListEntities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: pb.ListEntitiesResponse(entities=[
            _definition_to_proto(e) for e in self._list(request, KIND_ENTITY)]))

    def DeleteEntity(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: self._delete(request, KIND_ENTITY))

    def GetFeatureTable(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: _definition_to_proto(
            self._registry.get(request.project, KIND_FEATURE_TABLE, request.name)))

    def ListFeatureTables(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: pb.ListFeatureTablesResponse(feature_tables=[
            _definition_to_proto(t) for t in self._list(request, KIND_FEATURE_TABLE)]))

    def DeleteFeatureTable(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: self._delete(request, KIND_FEATURE_TABLE))

    def GetFeatureTableHistory(  # noqa: N802
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        return _handle(context, lambda: pb.HistoryResponse(revisions=[
            _revision_to_proto(r) for r in
            self._registry.history(request.project, KIND_FEATURE_TABLE, request.name)]))

    def ListProjects(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: pb.ListProjectsResponse(projects=[
            project_to_proto(p) for p in
            self._registry.list_projects(include_archived=request.include_archived)]))

    def CreateProject(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: project_to_proto(
            self._registry.create_project(request.name)))

    def ArchiveProject(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: project_to_proto(
            self._registry.archive_project(request.name)))

    def PutJob(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: self._put_job(request))

    def GetJob(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: job_to_proto(
            self._registry.get_job(request.project, request.id)))

    def ListJobs(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _handle(context, lambda: pb.ListJobsResponse(jobs=[
            job_to_proto(j) for j in self._registry.list_jobs(request.project)]))

    def _apply(self, request: Any, *, dry_run: bool) -> Any:
        objects: list[Definition] = [serde.entity_from_proto(e) for e in request.entities]
        objects += [serde.feature_table_from_proto(t) for t in request.feature_tables]
        changes = self._registry.apply(
            request.project, objects, force=request.force, dry_run=dry_run
        )
        return pb.ApplyResponse(changes=[change_to_proto(c) for c in changes])

    def _list(self, request: Any, kind: str) -> list[Definition]:
        return self._registry.list(request.project, kind, dict(request.labels) or None)

    def _delete(self, request: Any, kind: str) -> Any:
        self._registry.delete(request.project, kind, request.name)
        return pb.DeleteResponse()

    def _put_job(self, request: Any) -> Any:
        self._registry.put_job(job_from_proto(request))
        return request


def _handle(context: grpc.ServicerContext, call: Callable[[], _Response]) -> _Response:
    """Run one registry call; end the RPC with the mapped status if it raises."""
    try:
        return call()
    except PotluckError as exc:
        context.set_trailing_metadata(error_metadata(exc))
        context.abort(status_for(exc), exc.message)
    except Exception as exc:
        _log.exception("Core service call failed")
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error in the Core service: {type(exc).__name__}: {exc}",
        )


# ---- message mapping (shared with remote.py) ---------------------------------------------------


def _definition_to_proto(obj: Definition) -> Any:
    if isinstance(obj, Entity):
        return serde.entity_to_proto(obj)
    return serde.feature_table_to_proto(obj)


def change_to_proto(change: Change) -> Any:
    """Return the protobuf form of an apply-plan line."""
    return pb.Change(
        kind=change.kind,
        name=change.name,
        action=change.action,
        revision=change.revision,
        details=list(change.details),
    )


def _revision_to_proto(revision: Revision) -> Any:
    spec = revision.spec
    if not isinstance(spec, FeatureTable):
        raise ValidationError(
            f"history is kept for feature tables only, got a {type(spec).__name__}"
        )
    return pb.Revision(
        revision=revision.revision,
        applied_at=timestamp_to_proto(revision.applied_at),
        spec=serde.feature_table_to_proto(spec),
    )


def project_to_proto(project: Project) -> Any:
    """Return the protobuf form of a project."""
    msg = pb.Project(name=project.name, archived=project.archived)
    if project.created_at is not None:
        msg.created_at.CopyFrom(timestamp_to_proto(project.created_at))
    return msg


def job_to_proto(job: JobRecord) -> Any:
    """Return the protobuf form of a job record (its body as JSON)."""
    return pb.Job(project=job.project, id=job.id, body_json=json.dumps(dict(job.body)))


def job_from_proto(msg: Any) -> JobRecord:
    """Build a job record from its protobuf form.

    Raises:
        ValidationError: If ``body_json`` is not a JSON object.
    """
    try:
        body = json.loads(msg.body_json or "{}")
    except ValueError as exc:
        raise ValidationError(f"job {msg.id!r}: body_json is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError(
            f"job {msg.id!r}: body_json must be a JSON object, got {type(body).__name__}"
        )
    return JobRecord(project=msg.project, id=msg.id, body=body)


def timestamp_to_proto(value: datetime) -> Timestamp:
    """Return ``value`` as a Timestamp; a naive datetime is read as UTC."""
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc))
    return ts
