"""The gRPC adapter: Feast's ``feast.serving.ServingService`` over a :class:`ServingService`.

Wire-compatible with Feast (DESIGN, "Serving wire contract"): columnar ``entities`` in, one
``FeatureVector`` per column out (entity columns first). The adapter only converts protos and
maps errors: a :class:`~potluck.errors.PotluckError` ends the call with the status from
:data:`STATUS_BY_CODE`, its message as the details, and its code and fields as trailing metadata
(``potluck-error-code``, ``potluck-error-attrs``, as the Core service does), so
:class:`~potluck.serving.remote.RemoteServing` raises the same error.

Hostile input: bytes that are not a valid request message end with ``INVALID_ARGUMENT``
(``registry/_edge.py``), a message larger than the server's ``max_request_bytes`` with gRPC's
own ``RESOURCE_EXHAUSTED``, and messages are cut to 1,000 bytes (a status's details travel in a
header clients refuse beyond 8 KiB). Each call a client's mistake ends is logged on one line;
only an unexpected failure (a bug) is logged with its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from potluck._proto.feast.serving import ServingService_pb2 as serving_pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as serving_grpc
from potluck.errors import PotluckError, UnavailableError, ValidationError
from potluck.registry._edge import RejectUndecodable, log_line, shorten
from potluck.registry._errors import error_metadata
from potluck.serving._values import entities_from_proto, response_to_proto
from potluck.serving.metrics import ServingMetrics
from potluck.serving.service import DEFAULT_MAX_REQUEST_BYTES, ServingService

logger = logging.getLogger(__name__)

STATUS_BY_CODE: Mapping[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_feature_ref": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_data": grpc.StatusCode.INVALID_ARGUMENT,
    "invalid_definition": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "transient": grpc.StatusCode.UNAVAILABLE,
    "conflict": grpc.StatusCode.ABORTED,
}
"""Error code to gRPC status; any other code is ``INTERNAL``."""

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

    Raises:
        UnavailableError: If the port cannot be bound.
    """
    options = (
        *(GRPC_REUSE_PORT_OPTIONS if reuse_port else GRPC_OPTIONS),
        (_MAX_RECEIVE, max_request_bytes),
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers),
        options=options,
        interceptors=[RejectUndecodable()],
    )
    serving_grpc.add_ServingServiceServicer_to_server(
        ServingServicer(service, metrics, version), server
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise UnavailableError(
            f"cannot listen for gRPC on {host}:{port}: {exc}", address=f"{host}:{port}"
        ) from None
    server.start()
    return server, bound


__all__ = [
    "GRPC_OPTIONS",
    "GRPC_REUSE_PORT_OPTIONS",
    "HANDLER_THREADS",
    "STATUS_BY_CODE",
    "ServingServicer",
    "start_grpc_server",
]
