"""``potluck audit``: read the registry's audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer

from potluck.cli import _render as render
from potluck.cli._render import OutputFormat, OutputOption
from potluck.cli.main import Needs, make_client
from potluck.definitions.serde import parse_duration
from potluck.errors import DefinitionError, ValidationError
from potluck.registry.audit import APPLY, PERMISSION_DENIED
from potluck.registry.base import AuditEntry


def register(app: typer.Typer) -> None:
    """Add ``audit`` to ``app``."""
    app.command("audit")(audit)


_BEFORE_YEAR_ONE = "--since {} reaches before year 1; give a shorter duration or an ISO 8601 time"


def since_time(value: str, now: datetime) -> datetime:
    """Return the time ``--since`` names: a duration before ``now`` (``1h``) or an ISO time.

    Raises:
        ValidationError: If it is neither, a negative duration, or one reaching before year 1;
            ``field`` is ``since``.
    """
    try:
        span = parse_duration(value, "--since")
    except DefinitionError as exc:
        if "out of range" in exc.message:  # a duration, longer than any date goes back
            raise ValidationError(_BEFORE_YEAR_ONE.format(value), field="since") from None
        span = None
    if span is not None:
        if span < timedelta(0):
            raise ValidationError(
                f"--since must be a positive duration such as 1h or an ISO 8601 time, got {value}",
                field="since",
            )
        try:
            return now - span
        except OverflowError:
            raise ValidationError(_BEFORE_YEAR_ONE.format(value), field="since") from None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            f"--since: expected a duration such as 1h, 30m or 7d, or an ISO 8601 time such as "
            f"2024-05-01T12:00:00Z, got {value!r}",
            field="since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


MAX_CELL_CHARS = 200
"""The most characters a cell of ``potluck audit``'s table shows; ``-o json`` shows everything."""


def cell(text: str) -> str:
    """Return ``text`` for one cell: at most :data:`MAX_CELL_CHARS`, saying how much was cut."""
    if len(text) <= MAX_CELL_CHARS:
        return text
    return f"{text[:MAX_CELL_CHARS]}... ({len(text) - MAX_CELL_CHARS} more characters)"


def change_text(entry: AuditEntry) -> str:
    """Return an entry's change in a line.

    An apply's changed objects; a denial's method, and who reported it when a server did
    (``reported by token:serving``); else the change as JSON.
    """
    if entry.action == APPLY:
        lines = [
            f"{c['action']} {c['kind']} {c['name']}"
            for c in entry.change.get("changes", [])
            if c.get("action") != "unchanged"
        ]
        return "; ".join(lines) or "nothing changed"
    if entry.action == PERMISSION_DENIED and set(entry.change) <= {"method", "reported_by"}:
        method = str(entry.change.get("method", ""))
        reporter = entry.change.get("reported_by")
        return method if reporter is None else f"{method}; reported by {reporter}"
    return json.dumps(dict(entry.change), sort_keys=True) if entry.change else ""


def audit(
    ctx: typer.Context,
    project: Annotated[
        str | None,
        typer.Option("--project", "-p", help="Only this project's entries (default: all)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only entries this recent: a duration (1h, 30m, 7d) or an ISO 8601 time.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many entries (1 to 10000).")
    ] = 100,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show the audit log, newest first.

    Who applied, deleted, archived, restored, allowed locations, started or cancelled jobs, and
    which calls were denied (and which server reported a denial); with when and what changed.
    A table cell shows at most 200 characters; -o json shows entries whole.
    """
    start = None if since is None else since_time(since, datetime.now(timezone.utc))
    entries = make_client(ctx, Needs.REGISTRY).audit_log(project=project, since=start, limit=limit)
    if output is OutputFormat.JSON:
        render.print_json(
            [
                {
                    "at": render.iso_utc(e.at),
                    "actor": e.actor,
                    "action": e.action,
                    "project": e.project,
                    "target": e.target,
                    "change": dict(e.change),
                }
                for e in entries
            ]
        )
        return
    render.show_table(
        ("at (UTC)", "actor", "action", "project", "target", "change"),
        [
            (
                render.iso_utc(e.at),
                cell(e.actor),
                e.action,
                cell(e.project),
                cell(e.target),
                cell(change_text(e)),
            )
            for e in entries
        ],
    )
