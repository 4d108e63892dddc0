"""The service commands: ``potluck core`` runs the Core service (the registry over gRPC)."""

from __future__ import annotations

from typing import Annotated

import typer

from potluck.cli.main import load_cli_settings


def register(app: typer.Typer) -> None:
    """Add the service commands to ``app``."""
    app.command()(core)


def core(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option("--port", help="The port to listen on (0 picks a free one).", min=0)
    ] = 6565,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
) -> None:
    """Run the Core service (the registry over gRPC) until Ctrl-C or SIGTERM.

    It serves potluck.core.v1.CoreService from the configured registry.

    Clients reach it by setting core_url to HOST:PORT.
    """
    from potluck.registry.server import run_core

    run_core(load_cli_settings(ctx), port, host)
