"""The Job Service server: ``potluck.jobservice.v1.JobService`` over gRPC, on a JobService.

Each RPC checks its request, makes one :class:`~potluck.jobservice.service.JobService` call and
maps the result back (``jobservice/_wire.py``). A :class:`~potluck.errors.PotluckError` ends the
call with the status ``registry/_errors.py`` maps it to (a client's mistake: ``INVALID_ARGUMENT``
or ``NOT_FOUND``, the message naming the field or table) and the error's code and fields as
trailing metadata, as the Core service does; a request that is not valid protobuf ends with
``INVALID_ARGUMENT``. The standard ``grpc.health.v1.Health`` service runs alongside.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from sqlalchemy.engine import make_url

from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as pb
from potluck._proto.potluck.jobservice.v1 import job_service_pb2_grpc as pb_grpc
from potluck._stop_signals import StopSignals, Terminated
from potluck.auth.denials import DenialAudit
from potluck.auth.grpc import server_interceptors
from potluck.auth.rules import JOB_SERVICE_RULES
from potluck.auth.settings import AuthSettings, resolved
from potluck.config import Settings
from potluck.definitions._checks import check_name
from potluck.definitions.serde import format_duration
from potluck.errors import PotluckError, ValidationError
from potluck.jobservice._wire import (
    SERVICE_NAME,
    job_to_proto,
    optional_time,
    schedule_to_proto,
)
from potluck.jobservice.scheduler import MAX_LOOK_BACK
from potluck.jobservice.service import DEFAULT_CONTROL_LOOP_INTERVAL, JobService
from potluck.registry._edge import RejectUndecodable, shorten
from potluck.registry._errors import error_metadata, status_for
from potluck.registry._wire import GRPC_OPTIONS
from potluck.registry.base import Registry
from potluck.registry.server import CoreServer, ExtraService, start_listening

_log = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

ExtraJobService = Callable[[grpc.Server, JobService], None]
"""Adds another gRPC service over the same JobService before the server starts; the CLI passes
them, such as Feast 0.9's ``feast.core.JobService``."""

DEFAULT_PORT = 6568
"""The Job Service's usual port."""


def _rpc(
    method: Callable[[Any, _Request], _Response],
) -> Callable[[Any, _Request, grpc.ServicerContext], _Response]:
    """Turn ``method(self, request)`` into a handler that maps errors to statuses."""

    @functools.wraps(method)
    def handler(self: Any, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request)
        except PotluckError as exc:
            context.set_trailing_metadata(error_metadata(exc))
            context.abort(status_for(exc), shorten(exc.message))
        except Exception as exc:
            _log.exception("Job Service call %s failed", method.__name__)
            error = PotluckError(f"internal error in the Job Service: {type(exc).__name__}: {exc}")
            context.set_trailing_metadata(error_metadata(error))
            context.abort(grpc.StatusCode.INTERNAL, shorten(error.message))

    return handler


def _table(request: Any) -> tuple[str, str]:
    """Return the request's project and table, checked (an empty one names its field)."""
    project = check_name(request.project, "project")
    if not request.table:
        raise ValidationError("table is empty: name a feature table", field="table")
    return project, request.table


def _look_back(duration: Duration) -> timedelta:
    """Return a request's ``look_back``; one too long for a ``timedelta`` names the field."""
    try:
        return duration.ToTimedelta()
    except (OverflowError, ValueError):
        raise ValidationError(
            f"look_back {duration.seconds}s is too long: at most "
            f"{format_duration(MAX_LOOK_BACK)} (100 years)",
            field="look_back",
        ) from None


class _JobServiceServicer:
    """The ``potluck.jobservice.v1.JobService`` methods, one JobService call each."""

    def __init__(self, service: JobService) -> None:
        self._service = service

    @_rpc
    def StartOfflineToOnline(  # noqa: N802
        self, request: pb.StartOfflineToOnlineRequest
    ) -> pb.JobResponse:
        project, table = _table(request)
        job = self._service.start_offline_to_online(
            project,
            table,
            start=optional_time(request, "start"),
            end=optional_time(request, "end"),
            since_last=request.since_last,
            full=request.full,
        )
        return pb.JobResponse(job=job_to_proto(job))

    @_rpc
    def StartStreamToOnline(  # noqa: N802
        self, request: pb.StartStreamToOnlineRequest
    ) -> pb.JobResponse:
        project, table = _table(request)
        return pb.JobResponse(
            job=job_to_proto(self._service.start_stream_to_online(project, table))
        )

    @_rpc
    def GetHistoricalFeatures(  # noqa: N802
        self, request: pb.GetHistoricalFeaturesRequest
    ) -> pb.JobResponse:
        job = self._service.get_historical_features(
            check_name(request.project, "project"),
            list(request.feature_refs),
            request.entity_source,
            request.output_location,
            full_feature_names=not request.bare_feature_names,
        )
        return pb.JobResponse(job=job_to_proto(job))

    @_rpc
    def ListJobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:  # noqa: N802
        project = check_name(request.project, "project") if request.project else None
        jobs = self._service.list_jobs(
            project, table=request.table or None, include_terminated=not request.active_only
        )
        return pb.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    @_rpc
    def GetJob(self, request: pb.JobRequest) -> pb.JobResponse:  # noqa: N802
        project, job_id = self._job(request)
        return pb.JobResponse(job=job_to_proto(self._service.get_job(project, job_id)))

    @_rpc
    def CancelJob(self, request: pb.JobRequest) -> pb.JobResponse:  # noqa: N802
        project, job_id = self._job(request)
        return pb.JobResponse(job=job_to_proto(self._service.cancel_job(project, job_id)))

    @_rpc
    def ScheduleOfflineToOnline(self, request: pb.ScheduleRequest) -> pb.Schedule:  # noqa: N802
        project, table = _table(request)
        if not request.HasField("look_back"):
            raise ValidationError(
                "look_back is missing: give the span each run loads, such as 1h", field="look_back"
            )
        schedule = self._service.schedule_offline_to_online(
            project, table, request.cron, _look_back(request.look_back)
        )
        return schedule_to_proto(schedule, self._service.now())

    @_rpc
    def Unschedule(self, request: pb.UnscheduleRequest) -> pb.UnscheduleResponse:  # noqa: N802
        self._service.unschedule(*_table(request))
        return pb.UnscheduleResponse()

    @_rpc
    def ListSchedules(  # noqa: N802
        self, request: pb.ListSchedulesRequest
    ) -> pb.ListSchedulesResponse:
        project = check_name(request.project, "project") if request.project else None
        now = self._service.now()
        return pb.ListSchedulesResponse(
            schedules=[schedule_to_proto(s, now) for s in self._service.list_schedules(project)]
        )

    @staticmethod
    def _job(request: pb.JobRequest) -> tuple[str, str]:
        project = check_name(request.project, "project")
        if not request.job_id:
            raise ValidationError("job_id is empty: name a job (see ListJobs)", field="job_id")
        return project, request.job_id


def add_job_service(server: grpc.Server, service: JobService) -> None:
    """Serve ``service`` as ``potluck.jobservice.v1.JobService`` on ``server`` (not started)."""
    pb_grpc.add_JobServiceServicer_to_server(_JobServiceServicer(service), server)


def start_jobservice_server(
    service: JobService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 8,
    services: Sequence[ExtraJobService] = (),
    auth: AuthSettings | None = None,
) -> CoreServer:
    """Serve ``service`` over gRPC and return at once.

    Args:
        service: The backend every call uses.
        host: The interface to listen on.
        port: The port to listen on; 0 picks a free one (see :attr:`CoreServer.port`).
        max_workers: Threads serving calls concurrently.
        services: More services served from ``service`` on the same port.
        auth: Tokens and TLS (paths absolute); with a token source every call needs a bearer
            token and the permission ``JOB_SERVICE_RULES`` gives its method; ``None``: open.

    Returns:
        The running server (``stop``, ``wait``, ``port``, ``address``).

    Raises:
        UnavailableError: If ``host:port`` cannot be listened on, or the JWKS cannot be read.
        ConfigError: If the tokens file, the JWKS or a TLS file is invalid.
    """
    options = (*GRPC_OPTIONS, ("grpc.so_reuseport", 0))
    denials = (
        DenialAudit(service.registry.record_denial)
        if auth is not None and auth.authenticates
        else None
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers),
        options=options,
        interceptors=[
            *server_interceptors(
                auth, JOB_SERVICE_RULES, default_project="default", on_refusal=denials
            ),
            RejectUndecodable(),
        ],
    )
    add_job_service(server, service)
    for add_service in services:
        add_service(server, service)
    return start_listening(
        server,
        host=host,
        port=port,
        auth=auth,
        denials=denials,
        what="the Job Service",
        service_name=SERVICE_NAME,
    )


def run_jobservice(
    settings: Settings,
    port: int,
    host: str = "127.0.0.1",
    services: Sequence[ExtraJobService] = (),
    *,
    control_loop_interval: float = DEFAULT_CONTROL_LOOP_INTERVAL,
) -> signal.Signals:
    """Run the Job Service (server, scheduler, control loop) until SIGINT or SIGTERM.

    Must run in the main thread (see :func:`potluck.registry.server.run_core`, whose signal
    handling, logging and bind errors it shares). Either signal stops it gracefully: calls in
    flight get 5 seconds, and the jobs running in this process are cancelled and waited for.

    Args:
        settings: The settings (registry, stores, engine).
        port: The port to listen on (0 picks a free one).
        host: The interface to listen on.
        services: More services served from the JobService on the same port.
        control_loop_interval: Seconds between two passes of the control loop.

    Returns:
        The signal that stopped it (the CLI exits 130 after SIGINT, 0 after SIGTERM).

    Raises:
        UnavailableError: If the port cannot be listened on or the registry is unreachable.
        ConfigError: If a setting is wrong.
        KeyboardInterrupt: If SIGINT arrives while it starts.
    """
    with StopSignals() as signals, contextlib.suppress(Terminated):
        service = JobService(settings, control_loop_interval=control_loop_interval)
        try:
            service.registry.list_projects()  # fail now if the database is unusable
            auth = resolved(settings.auth, settings.root) if settings.auth is not None else None
            server = start_jobservice_server(
                service, host=host, port=port, services=services, auth=auth
            )
            try:
                service.start_background()
                stopped = threading.Event()
                signals.serving(stopped.set)
                if not logging.getLogger().handlers:
                    logging.basicConfig(level=logging.INFO, format="%(message)s")
                _log.info(
                    "potluck jobservice listening on %s (registry: %s, engine: %s)",
                    server.address,
                    make_url(settings.registry_url).render_as_string(hide_password=True),
                    settings.engine.get("type", "local"),
                )
                stopped.wait()
            finally:
                server.stop(grace=5.0)
        finally:
            service.close()
    assert signals.received is not None  # only a signal ends serving
    return signals.received


@contextlib.contextmanager
def beside_core(
    settings: Settings,
    services: Sequence[ExtraJobService] = (),
    *,
    control_loop_interval: float = DEFAULT_CONTROL_LOOP_INTERVAL,
) -> Iterator[list[ExtraService]]:
    """Run a Job Service inside ``potluck core``; a :data:`potluck.registry.server.Companion`.

    Pass ``functools.partial(beside_core, settings, ...)`` as ``run_core``'s ``companion``: the
    Job Service (its scheduler and control loop running) is served on Core's port with
    ``services``, and is closed as :func:`run_jobservice` closes it once Core has stopped.

    Args:
        settings: The settings (registry, stores, engine); Core serves the same registry.
        services: More services served from the JobService on Core's port.
        control_loop_interval: Seconds between two passes of the control loop.

    Yields:
        The services to add to the Core server.

    Raises:
        UnavailableError: If the registry is unreachable.
        ConfigError: If a setting is wrong.
    """
    service = JobService(settings, control_loop_interval=control_loop_interval)
    try:
        service.registry.list_projects()  # fail now if the database is unusable
        service.start_background()
        _log.info(
            "potluck core serves the Job Service too (engine: %s)",
            settings.engine.get("type", "local"),
        )
        yield [_on_core(add, service) for add in (add_job_service, *services)]
    finally:
        service.close()


def _on_core(add: ExtraJobService, service: JobService) -> ExtraService:
    """Return ``add`` as a service of the Core server (which passes its registry, unused)."""

    def add_to_core(server: grpc.Server, registry: Registry) -> None:
        add(server, service)

    return add_to_core


__all__ = [
    "DEFAULT_PORT",
    "ExtraJobService",
    "add_job_service",
    "beside_core",
    "run_jobservice",
    "start_jobservice_server",
]
