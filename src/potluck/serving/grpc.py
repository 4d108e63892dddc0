"""The gRPC adapter: Feast's ``feast.serving.ServingService`` over a :class:`ServingService`.

Wire-compatible with Feast (DESIGN, "Serving wire contract"): columnar ``entities`` in, one
``FeatureVector`` per column out (entity columns first). The adapter only converts protos and
maps errors: a :class:`~potluck.errors.PotluckError` ends the call with the status from
:data:`STATUS_BY_CODE`, its message as the details, and its code and fields as trailing metadata
(``potluck-error-code``, ``potluck-error-attrs``, as the Core service does), so
:class:`~potluck.serving.remote.RemoteServing` raises the same error.

The standard health service ``grpc.health.v1.Health`` runs on the same port: the services ``""``
and ``feast.serving.ServingService`` are the readiness check (``SERVING`` while the online store
answers a ping, ``NOT_SERVING`` while it does not; ``serving/health.py``, shared with HTTP
``/health``), ``liveness`` is ``SERVING`` while the process serves. ``Watch`` streams a change as
soon as a check (gRPC or HTTP) observes it.

Hostile input: bytes that are not a valid request message end with ``INVALID_ARGUMENT``
(``registry/_edge.py``), a message larger than the server's ``max_request_bytes`` with gRPC's
own ``RESOURCE_EXHAUSTED``, and messages are cut to 1,000 bytes (a status's details travel in a
header clients refuse beyond 8 KiB). Each call a client's mistake ends is logged on one line;
only an unexpected failure (a bug) is logged with its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from potluck._proto.feast.serving import ServingService_pb2 as serving_pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as serving_grpc
from potluck.auth.denials import OnRefusal
from potluck.auth.grpc import add_port, server_interceptors
from potluck.auth.rules import SERVING_RULES
from potluck.auth.settings import AuthSettings
from potluck.errors import PotluckError, UnavailableError, ValidationError
from potluck.registry._edge import RejectUndecodable, log_line, shorten
from potluck.registry._errors import error_metadata
from potluck.serving._listen import address
from potluck.serving._values import entities_from_proto, response_to_proto
from potluck.serving.health import Readiness, StoreHealth
from potluck.serving.metrics import ServingMetrics
from potluck.serving.service import DEFAULT_MAX_REQUEST_BYTES, ServingService

logger = logging.getLogger(__name__)

STATUS_BY_CODE: Mapping[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_feature_ref": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_data": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_definition": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "transient": grpc.StatusCode.UNAVAILABLE,
    "conflict": grpc.StatusCode.ABORTED,
}
"""Error code to gRPC status; any other code is ``INTERNAL``."""

ExtraService = Callable[[grpc.Server, ServingService, ServingMetrics], None]
"""Adds another gRPC service over the same serving service to the server before it starts; the
composition root (the CLI) passes them, such as Feast 0.9's ``GetOnlineFeaturesV2``."""

GRPC_OPTIONS = (("grpc.so_reuseport", 0),)
"""Refuse to share a port with another server (gRPC's default would bind silently)."""

GRPC_REUSE_PORT_OPTIONS = (("grpc.so_reuseport", 1),)
"""Share the port with this server's sibling worker processes (``SO_REUSEPORT``)."""

_MAX_RECEIVE = "grpc.max_receive_message_length"

HANDLER_THREADS = 2
"""Threads that run handlers: two, so that one runs Python while the other waits on the store.
More only contend for the interpreter lock: with 4 clients, 1 entity, 1 / 2 / 4 / 8 threads
served about 1,340 / 1,830 / 1,790 / 1,450 requests/s, and with 100 entities 2 threads beat 4
and 8 by 15-30% in both requests/s and CPU per request (benchmarks/RESULTS.md, "Serving")."""


class ServingServicer(serving_grpc.ServingServiceServicer):  # type: ignore[misc]
    """Handles ``GetFeastServingInfo`` and ``GetOnlineFeatures``.

    Args:
        service: The service that answers.
        metrics: Where latencies and errors are recorded.
        version: What ``GetFeastServingInfo`` reports.
    """

    def __init__(self, service: ServingService, metrics: ServingMetrics, version: str) -> None:
        self._service = service
        self._metrics = metrics
        self._version = version
        self._info_latency = metrics.latency("grpc:GetFeastServingInfo")
        self._read_latency = metrics.latency("grpc:GetOnlineFeatures")

    def GetFeastServingInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Report the server's version."""
        start = time.perf_counter()
        response = serving_pb.GetFeastServingInfoResponse(version=self._version)
        self._info_latency.observe(time.perf_counter() - start)
        return response

    def GetOnlineFeatures(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Read online features; errors end the call with a mapped status."""
        start = time.perf_counter()
        try:
            if request.WhichOneof("kind") == "feature_service":
                raise ValidationError(
                    "feature services are not supported; list the features in 'features'",
                    field="feature_service",
                )
            response = self._service.get_online_features(
                request.features.val,
                entities_from_proto(request.entities),
                full_feature_names=request.full_feature_names,
            )
            return response_to_proto(response)
        except PotluckError as exc:
            self._abort(context, exc)
        except Exception as exc:
            logger.exception("GetOnlineFeatures failed")
            self._abort(context, PotluckError(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._read_latency.observe(time.perf_counter() - start)

    def _abort(self, context: grpc.ServicerContext, error: PotluckError) -> None:
        self._metrics.error("grpc:GetOnlineFeatures", error.code)
        status = STATUS_BY_CODE.get(error.code, grpc.StatusCode.INTERNAL)
        if status is not grpc.StatusCode.INTERNAL:
            logger.warning(
                "rejected GetOnlineFeatures from %s: %s %s: %s",
                context.peer(),
                status.name,
                error.code,
                log_line(error.message),
            )
        context.set_trailing_metadata(error_metadata(error))
        context.abort(status, shorten(error.message))


LIVENESS_SERVICE = "liveness"
"""The health service name that answers ``SERVING`` while the process serves, whatever the store."""

READINESS_SERVICES = ("", serving_pb.DESCRIPTOR.services_by_name["ServingService"].full_name)
"""The health service names that answer whether the online store answers (readiness)."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health.HealthServicer):
    """``grpc.health.v1.Health``: readiness from a :class:`StoreHealth`, and liveness.

    Args:
        readiness: The readiness check (shared with HTTP ``/health``).
    """

    def __init__(self, readiness: StoreHealth) -> None:
        super().__init__()
        self._readiness = readiness
        for name in (*READINESS_SERVICES, LIVENESS_SERVICE):
            self.set(name, _SERVING)
        readiness.on_change(self._changed)

    def _changed(self, answer: Readiness) -> None:
        for name in READINESS_SERVICES:
            self.set(name, _SERVING if answer.ready else _NOT_SERVING)

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Answer a service's status; a readiness service's is checked first (cached ~1 s)."""
        if request.service in READINESS_SERVICES:
            self._readiness.check()  # sets the readiness statuses through _changed
        return super().Check(request, context)


def start_grpc_server(
    service: ServingService,
    metrics: ServingMetrics,
    *,
    version: str,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = HANDLER_THREADS,
    reuse_port: bool = False,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    services: Sequence[ExtraService] = (),
    health: StoreHealth | None = None,
    auth: AuthSettings | None = None,
    on_refusal: OnRefusal | None = None,
) -> tuple[grpc.Server, int]:
    """Start a gRPC server for ``service`` and return it with the port it listens on.

    Args:
        service: The service that answers.
        metrics: Where latencies and errors are recorded.
        version: What ``GetFeastServingInfo`` reports.
        host: The interface to listen on.
        port: The port; 0 picks a free one.
        max_workers: Threads that run handlers.
        reuse_port: Bind with ``SO_REUSEPORT``, so sibling worker processes share the port and
            the kernel spreads connections over them.
        max_request_bytes: The largest request message accepted; a larger one ends with
            ``RESOURCE_EXHAUSTED`` before it is parsed.
        services: More services served from ``service`` on the same port.
        health: The readiness check of the health service (shared with HTTP ``/health``);
            default: one of the service's online store.
        auth: Tokens and TLS (paths absolute); with a token source every call but the health
            service's needs a bearer token with ``read_online`` on the projects it reads;
            ``None``: open.
        on_refusal: Told of every call refused for its token (``potluck.auth.denials``).

    Raises:
        UnavailableError: If the port cannot be bound, or the JWKS cannot be read.
        ConfigError: If the tokens file, the JWKS or a TLS file is invalid.
    """
    options = (
        *(GRPC_REUSE_PORT_OPTIONS if reuse_port else GRPC_OPTIONS),
        (_MAX_RECEIVE, max_request_bytes),
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers),
        options=options,
        interceptors=[
            *server_interceptors(
                auth, SERVING_RULES, default_project=service.project, on_refusal=on_refusal
            ),
            RejectUndecodable(),
        ],
    )
    serving_grpc.add_ServingServiceServicer_to_server(
        ServingServicer(service, metrics, version), server
    )
    readiness = health if health is not None else StoreHealth(service.online_store)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(readiness), server)
    for add_service in services:
        add_service(server, service, metrics)
    target = address(host, port)
    try:
        bound = add_port(server, target, auth)
    except PotluckError:
        server.stop(None)
        raise
    except RuntimeError as exc:
        raise UnavailableError(
            f"cannot listen for gRPC on {target}: {exc}", address=target
        ) from None
    server.start()
    return server, bound


__all__ = [
    "GRPC_OPTIONS",
    "GRPC_REUSE_PORT_OPTIONS",
    "HANDLER_THREADS",
    "LIVENESS_SERVICE",
    "READINESS_SERVICES",
    "HealthServicer",
    "STATUS_BY_CODE",
    "ExtraService",
    "ServingServicer",
    "start_grpc_server",
]
