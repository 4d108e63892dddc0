"""Several serving processes on one pair of ports, started and stopped by one parent.

One job: run ``N`` worker processes that each build their own :class:`ServingService` (so each
has its own registry and online-store connections, and its own interpreter and GIL) and serve
gRPC and HTTP on the *same* two ports, bound with ``SO_REUSEPORT``; the kernel spreads incoming
connections over the workers. Serving is stateless, so this is horizontal scaling within one
machine: a Python process tops out near one core, and ``N`` workers can use ``N``.

The parent first checks that each port is free (a plain bind, which fails if any other server,
with or without ``SO_REUSEPORT``, holds it), then keeps a bound, non-listening
``SO_REUSEPORT`` socket on it for as long as the workers run: port 0 becomes a fixed free port
the workers can all bind, and no unrelated server can take the port meanwhile. Workers are
spawned (never forked: gRPC does not survive a fork), report ready or their error through a
pipe, and stop when the parent asks, when the parent's end of the pipe closes (the parent died),
or on SIGTERM/SIGINT. If one worker exits on its own, the parent stops the others:
:meth:`ServingWorkers.wait` then returns a non-zero status, and whatever supervises the parent
(systemd, Kubernetes) restarts the whole group.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from potluck.errors import PotluckError, UnavailableError
from potluck.serving.server import ServingServer, freeze_heap, start_serving
from potluck.serving.service import DEFAULT_MAX_REQUEST_BYTES, ServingService

ServiceFactory = Callable[[], ServingService]
"""Builds a worker's service; it must be picklable (a module-level function or a
``functools.partial`` of one), because each worker is a fresh interpreter."""

STARTUP_TIMEOUT = 60.0
"""Seconds a worker may take to build its service and start listening."""

STOP_TIMEOUT = 10.0
"""Seconds a worker may take to stop before it is killed."""

_READY = "ready"
_STOP = "stop"


class ServingWorkers:
    """Running worker processes that share a gRPC and an HTTP port.

    Use :func:`start_workers` to create one.

    Attributes:
        host: The interface the workers listen on.
        grpc_port: The shared gRPC port.
        http_port: The shared HTTP port.
    """

    def __init__(
        self,
        factory: ServiceFactory,
        *,
        workers: int,
        host: str,
        grpc_port: int,
        http_port: int,
        grace: float = 1.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.host = host
        self._grace = grace
        self._stopping = threading.Event()
        self._reserved = [_reserve(host, grpc_port, "gRPC")]
        try:
            self._reserved.append(_reserve(host, http_port, "HTTP"))
        except UnavailableError:
            self._reserved[0].close()
            raise
        self.grpc_port = int(self._reserved[0].getsockname()[1])
        self.http_port = int(self._reserved[1].getsockname()[1])
        context = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        try:
            for _ in range(workers):
                parent_end, child_end = context.Pipe()
                proc = context.Process(
                    target=_worker_main,
                    args=(
                        factory,
                        host,
                        self.grpc_port,
                        self.http_port,
                        grace,
                        max_request_bytes,
                        child_end,
                    ),
                    name="potluck-serve-worker",
                )
                proc.start()
                child_end.close()
                self._procs.append(proc)
                self._conns.append(parent_end)
            for conn in self._conns:
                _await_ready(conn)
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return [int(proc.pid) for proc in self._procs]

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP endpoint."""
        return f"http://{self.host}:{self.http_port}"

    def stop(self) -> None:
        """Ask every worker to stop (requests in flight get the grace period), then reap them."""
        self._stopping.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):  # that worker is gone already
                conn.send(_STOP)
        for proc in self._procs:
            proc.join(self._grace + STOP_TIMEOUT)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            conn.close()
        for sock in self._reserved:
            sock.close()

    def wait(self) -> int:
        """Block until :meth:`stop` is called or a worker exits on its own.

        Returns:
            0 after :meth:`stop`; 1 if a worker exited by itself (the others are then stopped).
        """
        sentinels = [proc.sentinel for proc in self._procs]
        while not self._stopping.is_set():
            if wait(sentinels, timeout=0.5):
                if self._stopping.is_set():
                    break
                self.stop()
                return 1
        for proc in self._procs:
            proc.join()
        return 0

    def __enter__(self) -> ServingWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reserve(host: str, port: int, what: str) -> socket.socket:
    """Check ``port`` is free and hold it with a non-listening ``SO_REUSEPORT`` socket."""
    try:
        if port != 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise UnavailableError(
            f"cannot listen for {what} on {host}:{port}: {exc.strerror}", address=f"{host}:{port}"
        ) from None
    return sock


def _await_ready(conn: Connection) -> None:
    if not conn.poll(STARTUP_TIMEOUT):
        raise UnavailableError(f"a serving worker did not start within {STARTUP_TIMEOUT:g} s")
    try:
        message = conn.recv()
    except EOFError:
        raise UnavailableError("a serving worker exited while starting") from None
    if message != _READY:
        raise message


def _worker_main(
    factory: ServiceFactory,
    host: str,
    grpc_port: int,
    http_port: int,
    grace: float,
    max_request_bytes: int,
    conn: Connection,
) -> None:
    """Run one worker: build the service, serve on the shared ports, stop when told."""
    try:
        service = factory()
        server = start_serving(
            service,
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            reuse_port=True,
            max_request_bytes=max_request_bytes,
        )
    except PotluckError as exc:
        conn.send(exc)
        raise SystemExit(1) from None

    def _stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, args=(grace,), daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    freeze_heap()
    conn.send(_READY)
    watcher = threading.Thread(target=_stop_on_request, args=(conn, server, grace), daemon=True)
    watcher.start()
    server.wait()
    service.online_store.close()


def _stop_on_request(conn: Connection, server: ServingServer, grace: float) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.recv()  # the stop request, or EOF when the parent has died
    server.stop(grace)


def start_workers(
    factory: ServiceFactory,
    *,
    workers: int,
    host: str = "127.0.0.1",
    grpc_port: int = 0,
    http_port: int = 0,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> ServingWorkers:
    """Start ``workers`` serving processes that share one gRPC and one HTTP port.

    Args:
        factory: Builds each worker's service in the worker (picklable).
        workers: How many processes.
        host: The interface to listen on.
        grpc_port: The gRPC port; 0 picks a free one.
        http_port: The HTTP port; 0 picks a free one.
        max_request_bytes: The largest request each worker accepts (see
            :func:`~potluck.serving.server.start_serving`).

    Returns:
        The running workers, once every one of them listens.

    Raises:
        UnavailableError: If a port is in use, or a worker could not start.
        PotluckError: The error a worker's factory raised (e.g. a ``ConfigError``).

    Example:
        >>> with start_workers(partial(make_service, settings), workers=2) as group:
        ...     print(group.grpc_address, group.pids)
    """
    return ServingWorkers(
        factory,
        workers=workers,
        host=host,
        grpc_port=grpc_port,
        http_port=http_port,
        max_request_bytes=max_request_bytes,
    )


__all__ = ["STARTUP_TIMEOUT", "STOP_TIMEOUT", "ServiceFactory", "ServingWorkers", "start_workers"]
