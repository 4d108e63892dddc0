"""Online Serving as one process: the gRPC and HTTP adapters over one :class:`ServingService`.

:func:`start_serving` starts both (gRPC on its thread pool, HTTP on uvicorn in a thread) and
returns a handle with the bound ports, so tests can ask for port 0. Turning settings into a
registry and an online store is the caller's job (the Client or the CLI), as everywhere else.
"""

from __future__ import annotations

import gc
import ssl
import threading
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import uvicorn

from potluck.auth.denials import DenialAudit, Refusal
from potluck.auth.settings import AuthSettings
from potluck.errors import UnavailableError
from potluck.serving._listen import address, bound_socket
from potluck.serving._server_logs import forward_uvicorn_logs
from potluck.serving.grpc import ExtraService, start_grpc_server
from potluck.serving.health import StoreHealth
from potluck.serving.http import create_app
from potluck.serving.http_protocol import MAX_REQUEST_HEAD, CappedHttpToolsProtocol
from potluck.serving.metrics import ServingMetrics
from potluck.serving.service import DEFAULT_MAX_REQUEST_BYTES, ServingService

VERSION = version("potluck")
"""The version the servers report."""

STARTUP_TIMEOUT = 10.0
"""Seconds to wait for the HTTP server to start listening."""


class ServingServer:
    """A running serving process's servers.

    Attributes:
        service: The service both adapters call.
        metrics: The metrics both adapters record.
        health: The readiness check both adapters answer from (HTTP ``/health``, gRPC health).
        host: The address both listen on.
        grpc_port: The bound gRPC port.
        http_port: The bound HTTP port.
    """

    def __init__(
        self,
        service: ServingService,
        *,
        host: str,
        grpc_port: int,
        http_port: int,
        reuse_port: bool = False,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        services: Sequence[ExtraService] = (),
        auth: AuthSettings | None = None,
    ) -> None:
        self.service = service
        self.auth = auth
        self.host = host
        self._stopped = threading.Event()
        self.metrics = ServingMetrics(service)
        self.health = StoreHealth(service.online_store)
        self._denials = (
            DenialAudit(service.registry.record_denial)
            if auth is not None and auth.authenticates
            else None
        )
        self._grpc, self.grpc_port = start_grpc_server(
            service,
            self.metrics,
            version=VERSION,
            host=host,
            port=grpc_port,
            reuse_port=reuse_port,
            max_request_bytes=max_request_bytes,
            services=services,
            health=self.health,
            auth=auth,
            on_refusal=self._refused,
        )
        try:
            self._start_http(http_port, reuse_port=reuse_port, max_request_bytes=max_request_bytes)
        except BaseException:  # a failure, or a signal while starting: leave nothing running
            self._grpc.stop(None)
            if self._denials is not None:
                self._denials.close()
            raise

    def _refused(self, refusal: Refusal) -> None:
        """Count a refused call on ``/metrics`` and audit it (a denial) in the registry."""
        how, _, where = refusal.method.rpartition(" ")
        endpoint = f"http:{where}" if how else f"grpc:{where.rpartition('/')[2]}"
        self.metrics.error(endpoint, refusal.status)
        if self._denials is not None:
            self._denials(refusal)

    def _start_http(self, port: int, *, reuse_port: bool, max_request_bytes: int) -> None:
        """Start uvicorn on ``port`` in a thread and return once it listens."""
        try:
            sock = bound_socket(self.host, port, reuse_port=reuse_port)
        except OSError as exc:
            where = address(self.host, port)
            raise UnavailableError(
                f"cannot listen for HTTP on {where}: {exc.strerror}", address=where
            ) from None
        sock.listen(2048)
        self.http_port = sock.getsockname()[1]
        forward_uvicorn_logs()
        config = uvicorn.Config(
            create_app(
                self.service,
                self.metrics,
                version=VERSION,
                max_request_bytes=max_request_bytes,
                health=self.health,
                auth=self.auth,
                on_refusal=self._refused,
            ),
            **_uvicorn_tls(self.auth),
            http=CappedHttpToolsProtocol,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(
            target=self._http.run, kwargs={"sockets": [sock]}, name="potluck-http", daemon=True
        )
        self._http_thread.start()
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not self._http.started:
                if time.monotonic() > deadline or not self._http_thread.is_alive():
                    where = address(self.host, self.http_port)
                    raise UnavailableError(
                        f"the HTTP server on {where} did not start", address=where
                    )
                time.sleep(0.01)
        except BaseException:
            self._http.should_exit = True
            self._http_thread.join(timeout=5)
            raise

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return address(self.host, self.grpc_port)

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP endpoint."""
        scheme = "https" if self.auth is not None and self.auth.tls is not None else "http"
        return f"{scheme}://{address(self.host, self.http_port)}"

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop both servers, letting requests in flight finish for up to ``grace`` seconds."""
        self._http.should_exit = True
        self._grpc.stop(grace).wait()
        self._http_thread.join(timeout=(grace or 0) + 5)
        if self._denials is not None:
            self._denials.close()
        self._stopped.set()

    def wait(self) -> None:
        """Block until :meth:`stop` is called."""
        self._stopped.wait()

    def __enter__(self) -> ServingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _uvicorn_tls(auth: AuthSettings | None) -> dict[str, Any]:
    """Return uvicorn's TLS options for ``auth``'s certificate (none without one)."""
    if auth is None or auth.tls is None:
        return {}
    tls = auth.tls
    options: dict[str, Any] = {
        "ssl_certfile": str(tls.cert_file),
        "ssl_keyfile": str(tls.key_file),
    }
    if tls.client_ca_file is not None:
        options.update(ssl_ca_certs=str(tls.client_ca_file), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def freeze_heap() -> None:
    """Exempt every object alive now from the cyclic garbage collector, for a serving process.

    A serving process allocates its modules, definitions and connections once and then only
    short-lived objects per request; without this, each full collection walks all of the former
    (measured: 73 ms for the ~130,000 objects of a process set up for serving) and stalls every
    request in flight. After :func:`gc.freeze` a full collection takes about 0.1 ms. Call it
    once the servers are up; only whole-process entry points (``potluck serve``, its workers)
    should, not code that embeds a server.
    """
    gc.collect()
    gc.freeze()


def start_serving(
    service: ServingService,
    *,
    host: str = "127.0.0.1",
    grpc_port: int = 0,
    http_port: int = 0,
    reuse_port: bool = False,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    services: Sequence[ExtraService] = (),
    auth: AuthSettings | None = None,
) -> ServingServer:
    """Start gRPC and HTTP serving for ``service``; port 0 picks a free port.

    Args:
        service: The service both endpoints answer from.
        host: The interface to listen on.
        grpc_port: The gRPC port.
        http_port: The HTTP port.
        reuse_port: Bind both ports with ``SO_REUSEPORT`` so that sibling worker processes
            (:mod:`potluck.serving.workers`) share them; off, a port in use is refused.
        max_request_bytes: The largest request accepted, in bytes: an HTTP body (larger gets
            413 before it is read) or a gRPC message (larger gets ``RESOURCE_EXHAUSTED``).
        services: More gRPC services served from ``service`` on the gRPC port.
        auth: Tokens and TLS for both endpoints (paths absolute; ``potluck.auth``); ``None``:
            open, plain connections.

    Raises:
        UnavailableError: If a port cannot be bound; the message names it.

    Example:
        >>> with start_serving(ServingService(registry, store, "default")) as server:
        ...     print(server.grpc_address, server.http_url)
    """
    return ServingServer(
        service,
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        reuse_port=reuse_port,
        max_request_bytes=max_request_bytes,
        services=services,
        auth=auth,
    )


__all__ = ["MAX_REQUEST_HEAD", "ServingServer", "freeze_heap", "start_serving"]
