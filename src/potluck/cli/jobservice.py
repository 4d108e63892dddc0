"""``potluck jobservice``: the Job Service (jobs for remote clients, schedules, the control loop).

It checks its address as ``potluck core`` does (a port in use: exit code 1 naming ``--port``; a
``--host`` that is not this machine's: exit code 2), refuses ``core_url`` without a SQL
``registry`` (exit code 2: it would start on a new empty registry), and stops gracefully on
SIGTERM (exit code 0) and Ctrl-C (``error: interrupted``, exit code 130).
"""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from potluck.auth.exposure import check_exposure
from potluck.cli.main import EXIT_INTERRUPTED, fail, load_cli_settings
from potluck.cli.serve import require_free_port


def register(app: typer.Typer) -> None:
    """Add ``potluck jobservice`` to ``app``."""
    app.command()(jobservice)


def jobservice(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="The port to listen on (0 picks a free one).", min=0, max=65535
        ),
    ] = 6568,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="The address to listen on: one of this machine's (IPv4 or IPv6), or 0.0.0.0 "
            "for all.",
        ),
    ] = "127.0.0.1",
    control_loop_interval: Annotated[
        float,
        typer.Option(
            "--control-loop-interval",
            help="Seconds between two passes of the control loop that keeps one stream job "
            "per table with a stream source (0.1 to 86400).",
            min=0.1,
            max=86_400.0,
        ),
    ] = 10.0,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Listen on an address other than this machine's loopback without "
            "authentication configured (a warning is printed); without it that is refused.",
        ),
    ] = False,
) -> None:
    """Run the Job Service until Ctrl-C or SIGTERM.

    It serves potluck.jobservice.v1.JobService (and Feast 0.9's feast.core.JobService):
    ingestion jobs and training sets for remote clients, scheduled ingestion, and a control
    loop that keeps one stream job running per feature table with a stream source. Jobs of the
    local engine run in this process. SIGTERM stops it with exit code 0, Ctrl-C with 130.

    Clients reach it by setting job_service_url to HOST:PORT.
    """
    from potluck.compat.feast09 import JOB_SERVICES
    from potluck.jobservice.server import run_jobservice

    settings = load_cli_settings(ctx)
    settings.served_registry_url("potluck jobservice")
    require_free_port(host, port, what="the Job Service", option="--port")
    notice = check_exposure(
        host, settings.auth, allow_unauthenticated=allow_unauthenticated, what="potluck jobservice"
    )
    typer.echo(notice, err=True)
    stopped = run_jobservice(
        settings, port, host, services=JOB_SERVICES, control_loop_interval=control_loop_interval
    )
    if stopped == signal.SIGINT:
        fail("interrupted", EXIT_INTERRUPTED)
