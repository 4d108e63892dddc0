"""``potluck auth token create``: make a static bearer token and store its hash.

The token is printed once, on stdout (so ``TOKEN=$(potluck auth token create ci ...)`` works);
only its SHA-256 is appended to the tokens file (``auth.tokens_file``, or ``--tokens-file``).
Servers read the file when they start: restart them to accept a new token or drop a removed one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from potluck.auth.identity import subject_problem
from potluck.auth.settings import TokenEntry
from potluck.auth.tokens import append_token, hash_token, new_token, parse_permissions
from potluck.cli.main import load_cli_settings
from potluck.definitions._checks import check_name
from potluck.errors import ValidationError

auth_app = typer.Typer(help="Manage authentication: static bearer tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Create static bearer tokens.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the auth commands to ``app``."""
    token_app.command("create")(create)
    auth_app.add_typer(token_app, name="token")
    app.add_typer(auth_app, name="auth")


def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who holds the token (its subject in logs).")],
    permission: Annotated[
        list[str],
        typer.Option(
            "--permission",
            help="A permission it grants, repeatable: read_online, read_definitions, apply, "
            "run_jobs, record_denials (a server's token for reporting denials to Core), admin.",
        ),
    ],
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            help="A project it is limited to, repeatable; none given: every project.",
        ),
    ] = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            help="The tokens file to append the hash to (default: the auth.tokens_file setting).",
        ),
    ] = None,
) -> None:
    """Create a bearer token: print it once and append its hash to the tokens file.

    Exit code 2 if a permission or project is not valid, the name is taken, or no tokens file
    is given.
    """
    settings = load_cli_settings(ctx)
    problem = subject_problem(name)
    if problem is not None:
        raise ValidationError(
            f"the token's NAME {name!r} cannot be used: {problem}; choose a plain name such as "
            "'ci' or 'dashboard'",
            field="name",
        )
    try:
        permissions = parse_permissions(permission)
    except ValueError as exc:
        raise ValidationError(f"--permission {exc}", field="permission") from None
    projects = tuple(check_name(p, "project") for p in project) if project else None
    if tokens_file is None:
        configured = settings.auth.tokens_file if settings.auth is not None else None
        if configured is None:
            raise ValidationError(
                "no tokens file to store the token's hash in: pass --tokens-file, or set "
                "auth.tokens_file in potluck.yaml",
                field="tokens_file",
            )
        tokens_file = settings.resolve_path(configured)
    token = new_token()
    entry = TokenEntry(
        name=name, hash=hash_token(token), permissions=permissions, projects=projects
    )
    append_token(tokens_file, entry)
    granted = ", ".join(p.value for p in permissions)
    if projects is not None:
        granted += f"; only on project{'s' * (len(projects) > 1)} {', '.join(projects)}"
    typer.echo(
        f"created token {name!r} ({granted}); its hash is in {tokens_file}. It is shown once, "
        "below; restart the servers to accept it.",
        err=True,
    )
    typer.echo(token)
