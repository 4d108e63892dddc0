"""The service commands: ``potluck serve`` (Online Serving) and ``potluck core`` (the Core service).

Both check their address before starting: a port in use is one error line naming the option to
change (exit code 1), rather than a server library's log line and error, and a ``--host`` that is
not an address of this machine is a usage mistake (exit code 2). Both stop gracefully on SIGTERM
(exit code 0) and on Ctrl-C (``error: interrupted``, exit code 130), see
:mod:`potluck._stop_signals`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from potluck._stop_signals import StopSignals, Terminated
from potluck.auth.exposure import check_exposure
from potluck.auth.settings import resolved
from potluck.cli._stderr import command_output
from potluck.cli.main import EXIT_FAILURE, EXIT_INTERRUPTED, fail, load_cli_settings
from potluck.client import Client
from potluck.config import Settings
from potluck.errors import UnavailableError, ValidationError
from potluck.serving._listen import address, bound_socket

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
        host: The interface (``--host``).
        port: The port.
        what: What would listen there, for the message (``"gRPC"``).
        option: The command-line option that sets the port, for the message.

    Raises:
        ValidationError: If ``host`` is not an address of this machine (``EADDRNOTAVAIL``) or
            does not resolve: a usage mistake (exit code 2); the message names ``--host``.
        UnavailableError: If the port is in use (the message names ``option``), or cannot be
            listened on for another reason (exit code 1).
    """
    where = address(host, port)
    try:
        bound_socket(host, port).close()
    except socket.gaierror as exc:
        raise ValidationError(
            f"--host {host!r} is not an address of this machine: it does not resolve "
            f"({exc.strerror}); {_HOST_HINT}",
            field="host",
        ) from None
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ValidationError(
                f"--host {host!r} is not an address of this machine (EADDRNOTAVAIL: "
                f"{exc.strerror}); {_HOST_HINT}",
                field="host",
            ) from None
        hint = (
            f"choose a free port with {option} (0 picks one), or stop the program using it"
            if exc.errno == errno.EADDRINUSE
            else f"check {option} and --host"
        )
        raise UnavailableError(
            f"cannot listen for {what} on {where}: {exc.strerror}; {hint}", address=where
        ) from None


_HOST_HINT = (
    "pass one of its addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (all of its "
    "IPv4 addresses)"
)


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
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The address to listen on: one of this machine's (IPv4 or IPv6), or 0.0.0.0 "
            "for all.",
        ),
    ] = "127.0.0.1",
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
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Listen on an address other than this machine's loopback without "
            "authentication configured (a warning is printed); without it that is refused.",
        ),
    ] = False,
) -> None:
    """Run Online Serving (gRPC and HTTP) over the configured online store until stopped.

    SIGTERM stops it gracefully with exit code 0; Ctrl-C (SIGINT) the same way, with exit code
    130.

    gRPC speaks Feast's feast.serving.ServingService and grpc.health.v1.Health; HTTP serves
    POST /get-online-features, GET /health (ready: the online store answers), GET /health/live
    and GET /metrics.
    """
    settings = load_cli_settings(ctx)
    require_free_port(host, grpc_port, what="gRPC", option="--grpc-port")
    require_free_port(host, http_port, what="HTTP", option="--http-port")
    notice = check_exposure(
        host, settings.auth, allow_unauthenticated=allow_unauthenticated, what="potluck serve"
    )
    typer.echo(notice, err=True)
    with StopSignals() as signals:
        try:
            worker_died = _serve(
                settings,
                signals,
                host=host,
                grpc_port=grpc_port,
                http_port=http_port,
                refresh_interval=refresh_interval,
                max_entities=max_entities,
                max_request_bytes=max_request_bytes,
                workers=workers,
            )
        except Terminated:
            return  # SIGTERM while starting: everything started is stopped, a clean stop
    if worker_died:
        fail("a serving worker exited on its own; the others were stopped", EXIT_FAILURE)
    if signals.received == signal.SIGINT:
        fail("interrupted", EXIT_INTERRUPTED)


def _serve(
    settings: Settings,
    signals: StopSignals,
    *,
    host: str,
    grpc_port: int,
    http_port: int,
    refresh_interval: float,
    max_entities: int,
    max_request_bytes: int,
    workers: int,
) -> bool:
    """Start serving, print the banner, and serve until a signal; return whether a worker died."""
    from potluck.compat.feast09 import SERVING_SERVICES
    from potluck.serving.server import freeze_heap, start_serving
    from potluck.serving.workers import start_workers

    group: ServingWorkers | None = None
    server: ServingServer | ServingWorkers
    auth = resolved(settings.auth, settings.root) if settings.auth is not None else None
    if workers == 1:
        server = start_serving(
            _serving_service(settings, refresh_interval, max_entities),
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            max_request_bytes=max_request_bytes,
            services=SERVING_SERVICES,
            auth=auth,
        )
    else:
        server = group = start_workers(
            functools.partial(_worker_service, settings, refresh_interval, max_entities),
            workers=workers,
            host=host,
            grpc_port=grpc_port,
            http_port=http_port,
            max_request_bytes=max_request_bytes,
            services=SERVING_SERVICES,
            auth=auth,
        )
    with server:  # stopped on the way out, whatever ends the wait
        signals.serving(server.stop)
        if group is None:
            freeze_heap()  # each worker freezes its own
        processes = "" if group is None else f" ({workers} processes)"
        typer.echo(
            f"potluck serving project {settings.project!r}{processes}: gRPC on "
            f"{server.grpc_address}, HTTP on {server.http_url}",
            err=True,
        )
        if group is not None:
            return group.wait() != 0
        server.wait()
        return False


def _serving_service(
    settings: Settings, refresh_interval: float, max_entities: int
) -> ServingService:
    """Build the service of a serving process from ``settings``."""
    return Client(settings=settings).serving_service(
        refresh_interval=refresh_interval, max_entities_per_request=max_entities
    )


_WORKER_OUTPUT = contextlib.ExitStack()
"""Holds a worker process's :func:`command_output` open for the life of the process."""


def _worker_service(
    settings: Settings, refresh_interval: float, max_entities: int
) -> ServingService:
    """Build a worker's service (run in the worker), its log records printed as the CLI does.

    A worker is a fresh interpreter, outside the command's :func:`command_output`: without its
    own, its records (a rejected request, uvicorn's) would print in Python's bare default form.
    """
    _WORKER_OUTPUT.enter_context(command_output())
    return _serving_service(settings, refresh_interval, max_entities)


def core(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="The port to listen on (0 picks a free one).", min=0, max=65535
        ),
    ] = 6565,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The address to listen on: one of this machine's (IPv4 or IPv6), or 0.0.0.0 "
            "for all.",
        ),
    ] = "127.0.0.1",
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Listen on an address other than this machine's loopback without "
            "authentication configured (a warning is printed); without it that is refused.",
        ),
    ] = False,
    job_service: Annotated[
        bool,
        typer.Option(
            "--job-service",
            help="Also serve the Job Service on the same port, with its scheduler and control "
            "loop (as potluck jobservice does); clients set job_service_url to HOST:PORT too.",
        ),
    ] = False,
) -> None:
    """Run the Core service (the registry over gRPC) until Ctrl-C or SIGTERM.

    SIGTERM stops it gracefully with exit code 0; Ctrl-C (SIGINT) the same way, with exit code
    130. It serves potluck.core.v1.CoreService from the configured registry, and with
    --job-service the Job Service too.

    Clients reach it by setting core_url to HOST:PORT.
    """
    from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES
    from potluck.jobservice.server import beside_core
    from potluck.registry.server import run_core

    settings = load_cli_settings(ctx)
    settings.served_registry_url("potluck core")
    require_free_port(host, port, what="the Core service", option="--port")
    notice = check_exposure(
        host, settings.auth, allow_unauthenticated=allow_unauthenticated, what="potluck core"
    )
    typer.echo(notice, err=True)
    companion = functools.partial(beside_core, settings, JOB_SERVICES) if job_service else None
    if run_core(settings, port, host, services=CORE_SERVICES, companion=companion) == signal.SIGINT:
        fail("interrupted", EXIT_INTERRUPTED)
