"""The service commands: ``potluck serve`` (Online Serving) and ``potluck core`` (the Core service).

Both check their ports before starting: a port in use is one error line naming the option to
change, rather than a server library's log line and error.
"""

from __future__ import annotations

import errno
import functools
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from potluck.cli.main import EXIT_FAILURE, fail, load_cli_settings
from potluck.client import Client
from potluck.config import Settings
from potluck.errors import UnavailableError

if TYPE_CHECKING:
    from potluck.serving.server import ServingServer
    from potluck.serving.service import ServingService
    from potluck.serving.workers import ServingWorkers


def register(app: typer.Typer) -> None:
    """Add the service commands to ``app``."""
    app.command()(serve)
    app.command()(core)


def require_free_port(host: str, port: int, *, what: str, option: str) -> None:
    """Check that ``port`` (0: any free one) can be listened on at ``host``.

    The check binds and closes a socket, as the servers bind theirs (``SO_REUSEADDR``, no
    ``SO_REUSEPORT``), so another program on the port, or an address that is not this
    machine's, is found here, before any server starts.

    Args:
        host: The interface.
        port: The port.
        what: What would listen there, for the message (``"gRPC"``).
        option: The command-line option that sets the port, for the message.

    Raises:
        UnavailableError: If the port is in use (the message names ``option``), or ``host``
            cannot be listened on (not an address of this machine: the message names
            ``--host``).
    """
    address = f"{host}:{port}"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = (
            f"choose a free port with {option} (0 picks one), or stop the program using it"
            if exc.errno == errno.EADDRINUSE
            else "choose an address of this machine with --host"
        )
        raise UnavailableError(
            f"cannot listen for {what} on {address}: {reason}; {hint}", address=address
        ) from None


def serve(
    ctx: typer.Context,
    grpc_port: Annotated[
        int,
        typer.Option("--grpc-port", help="The gRPC port (0 picks a free one).", min=0, max=65535),
    ] = 6566,
    http_port: Annotated[
        int,
        typer.Option("--http-port", help="The HTTP port (0 picks a free one).", min=0, max=65535),
    ] = 6567,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
    refresh_interval: Annotated[
        float,
        typer.Option(
            "--refresh-interval", help="Seconds between refreshes of cached definitions.", min=0.1
        ),
    ] = 10.0,
    max_entities: Annotated[
        int,
        typer.Option(
            "--max-entities-per-request", help="The most entity rows one request may carry.", min=1
        ),
    ] = 10_000,
    max_request_bytes: Annotated[
        int,
        typer.Option(
            "--max-request-bytes",
            help="The largest request accepted, in bytes: an HTTP body (larger gets 413 before "
            "it is read) or a gRPC message (larger gets RESOURCE_EXHAUSTED).",
            min=1,
        ),
    ] = 1_048_576,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Serving processes sharing the two ports (SO_REUSEPORT), each with its own "
            "store connections; about one per core.",
            min=1,
        ),
    ] = 1,
) -> None:
    """Run Online Serving (gRPC and HTTP) over the configured online store until Ctrl-C.

    gRPC speaks Feast's feast.serving.ServingService; HTTP serves POST /get-online-features,
    GET /health and GET /metrics.
    """
    settings = load_cli_settings(ctx)
    require_free_port(host, grpc_port, what="gRPC", option="--grpc-port")
    require_free_port(host, http_port, what="HTTP", option="--http-port")
    factory = functools.partial(_serving_service, settings, refresh_interval, max_entities)
    single: ServingServer | None = None
    group: ServingWorkers | None = None
    server: ServingServer | ServingWorkers
    if workers == 1:
        from potluck.serving.server import freeze_heap, start_serving

        server = single = start_serving(
            factory(),
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            max_request_bytes=max_request_bytes,
        )
        freeze_heap()
    else:
        from potluck.serving.workers import start_workers

        server = group = start_workers(
            factory,
            workers=workers,
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            max_request_bytes=max_request_bytes,
        )

    def _stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    processes = "" if group is None else f" ({workers} processes)"
    typer.echo(
        f"potluck serving project {settings.project!r}{processes}: gRPC on "
        f"{server.grpc_address}, HTTP on {server.http_url}",
        err=True,
    )
    if single is not None:
        single.wait()
    elif group is not None and group.wait():
        fail("a serving worker exited on its own; the others were stopped", EXIT_FAILURE)


def _serving_service(
    settings: Settings, refresh_interval: float, max_entities: int
) -> ServingService:
    """Build a serving process's service from ``settings`` (also run in each worker)."""
    return Client(settings=settings).serving_service(
        refresh_interval=refresh_interval, max_entities_per_request=max_entities
    )


def core(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="The port to listen on (0 picks a free one).", min=0, max=65535
        ),
    ] = 6565,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
) -> None:
    """Run the Core service (the registry over gRPC) until Ctrl-C or SIGTERM.

    It serves potluck.core.v1.CoreService from the configured registry.

    Clients reach it by setting core_url to HOST:PORT.
    """
    from potluck.registry.server import run_core

    settings = load_cli_settings(ctx)
    require_free_port(host, port, what="the Core service", option="--port")
    run_core(settings, port, host)
