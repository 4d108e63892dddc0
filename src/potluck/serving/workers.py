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
or on SIGTERM. Workers ignore SIGINT, from their first instruction on: Ctrl-C reaches every
process of the terminal's group, and it is the parent's to act on (it stops the workers), so a
Ctrl-C while workers start prints no ``KeyboardInterrupt`` traceback from each. If a signal or an
error ends the start-up, the parent sends every worker SIGTERM (nothing is in flight yet). If one
worker exits on its own, the parent stops the others: :meth:`ServingWorkers.wait` then returns a
non-zero status, and whatever supervises the parent (systemd, Kubernetes) restarts the whole
group.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from potluck.auth.settings import AuthSettings
from potluck.errors import PotluckError, UnavailableError
from potluck.serving._listen import address, bound_socket
from potluck.serving.grpc import ExtraService
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
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


class ServingWorkers:
    """Running worker processes that share a gRPC and an HTTP port.

    Use :func:`start_workers` to create one.

    Attributes:
        host: The interface the workers listen on.
        tls: Whether both endpoints speak TLS (``auth.tls`` is set).
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
        services: Sequence[ExtraService] = (),
        auth: AuthSettings | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.host = host
        self.tls = auth is not None and auth.tls is not None
        self._grace = grace
        self._stopping = threading.Event()
        self._ending = threading.Lock()
        self._ended = False
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
                        tuple(services),
                        auth,
                        child_end,
                    ),
                    name="potluck-serve-worker",
                )
                with _signals_deferred():  # started, and so stopped if anything goes wrong
                    proc.start()
                    self._procs.append(proc)
                    self._conns.append(parent_end)
                child_end.close()
            for conn in self._conns:
                _await_ready(conn)
        except BaseException:  # a worker failed, or a signal came while they start
            self._end(terminate=True)
            raise

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return [int(proc.pid) for proc in self._procs]

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return address(self.host, self.grpc_port)

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP endpoint (``https://`` when it speaks TLS)."""
        return f"{'https' if self.tls else 'http'}://{address(self.host, self.http_port)}"

    def stop(self) -> None:
        """Ask every worker to stop (requests in flight get the grace period), then reap them."""
        self._end(terminate=False)

    def _end(self, *, terminate: bool) -> None:
        """Stop every worker and reap it, then release the ports; once, whoever calls first.

        A later or concurrent call (a signal's stop thread, and the ``with`` block that
        started the group) returns once the first has ended.

        Args:
            terminate: Send each worker SIGTERM instead of asking through its pipe, which a
                worker reads only once it serves: while workers start there is nothing in
                flight to wait for, and one still starting dies at once.
        """
        self._stopping.set()
        with self._ending:
            if self._ended:
                return
            self._ended = True
            for proc, conn in zip(self._procs, self._conns, strict=True):
                if terminate:
                    proc.terminate()
                else:
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
    """Check ``port`` is free and hold it with a non-listening ``SO_REUSEPORT`` socket.

    The check binds without ``SO_REUSEPORT``, so it fails while any server listens on the port
    (with ``SO_REUSEPORT`` or not), but not for the closed connections of a server that has just
    stopped (``SO_REUSEADDR``), so a group can be restarted at once on the same ports.
    """
    try:
        if port != 0:
            bound_socket(host, port).close()
        return bound_socket(host, port, reuse_port=True)
    except OSError as exc:
        where = address(host, port)
        raise UnavailableError(
            f"cannot listen for {what} on {where}: {exc.strerror}", address=where
        ) from None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends; workers started within ignore SIGINT.

    Within, a worker is started and put on the list of those to stop: a signal's exception
    raised halfway would leave it half started (it would print ``EOFError`` reading what the
    parent never sent) or unknown to :meth:`ServingWorkers.stop`. Blocking the signals in this
    thread is not enough, since the kernel may hand them to another thread (Arrow's, say) and
    Python then runs the handler here anyway, so the handlers themselves are swapped for ones
    that note the signal, which is raised again when the block ends. SIGINT is also blocked in
    this thread, so a worker inherits it blocked and :func:`_worker_signals` ignores it before
    it unblocks it: no Ctrl-C reaches a worker even while its Python starts. The first spawn
    starts multiprocessing's resource tracker, which *unblocks* SIGINT once that is started, so
    it is started before.
    """
    resource_tracker.ensure_running()
    held: list[int] = []
    saved: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():  # else handlers cannot run here
        for deferred in _DEFERRED:
            saved[deferred] = signal.signal(deferred, lambda signum, frame: held.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        for deferred, handler in saved.items():
            signal.signal(deferred, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum in held:
            signal.raise_signal(signum)


def _worker_signals() -> None:
    """Ignore SIGINT (the parent's to act on), then unblock it; SIGTERM's handler comes later."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


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
    services: Sequence[ExtraService],
    auth: AuthSettings | None,
    conn: Connection,
) -> None:
    """Run one worker: build the service, serve on the shared ports, stop when told."""
    _worker_signals()
    try:
        service = factory()
        server = start_serving(
            service,
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            reuse_port=True,
            max_request_bytes=max_request_bytes,
            services=services,
            auth=auth,
        )
    except PotluckError as exc:
        conn.send(exc)
        raise SystemExit(1) from None

    def _stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, args=(grace,), daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
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
    services: Sequence[ExtraService] = (),
    auth: AuthSettings | None = None,
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
        services: More gRPC services each worker serves (picklable: module-level functions).
        auth: Tokens and TLS each worker applies (see
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
        services=services,
        auth=auth,
    )


__all__ = ["STARTUP_TIMEOUT", "STOP_TIMEOUT", "ServiceFactory", "ServingWorkers", "start_workers"]
