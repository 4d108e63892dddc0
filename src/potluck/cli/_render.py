"""How the CLI shows things: rich tables for people, JSON for scripts (``--output json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from potluck.definitions import Entity, FeatureTable
from potluck.definitions.serde import format_duration, to_dict
from potluck.registry.base import Change, Project, Revision


class OutputFormat(str, Enum):
    """The shapes a listing or description can be printed in."""

    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="Print a rich table or JSON.")
]
"""The ``--output/-o`` option every listing and description command takes."""


def console() -> Console:
    """Return a console on stdout that never wraps a table row into the next line's cells."""
    return Console(soft_wrap=False, highlight=False)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, default=str))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


# ---- JSON shapes -------------------------------------------------------------------------------


def table_json(table: FeatureTable) -> dict[str, Any]:
    """Return a feature table's dict form with its registry revision."""
    return {**to_dict(table), "revision": table.revision}


def change_json(change: Change) -> dict[str, Any]:
    """Return one plan line as a dict."""
    return {
        "kind": change.kind,
        "name": change.name,
        "action": change.action,
        "revision": change.revision,
        "details": list(change.details),
    }


def project_json(project: Project) -> dict[str, Any]:
    """Return a project as a dict."""
    created = project.created_at.isoformat() if project.created_at else None
    return {"name": project.name, "archived": project.archived, "created_at": created}


def revision_json(revision: Revision) -> dict[str, Any]:
    """Return one history entry as a dict."""
    return {
        "revision": revision.revision,
        "applied_at": revision.applied_at.isoformat(),
        "spec": to_dict(revision.spec),
    }


# ---- tables ------------------------------------------------------------------------------------


def show_changes(changes: Sequence[Change], title: str) -> None:
    """Print an apply plan: one row per definition with what applying does to it."""
    rows = [
        (c.kind, c.name, c.action, str(c.revision) if c.revision else "", "\n".join(c.details))
        for c in changes
    ]
    console().print(_table(title, ("kind", "name", "action", "revision", "details"), rows))


def show_entities(entities: Sequence[Entity]) -> None:
    """Print entities, one row each."""
    rows = [(e.name, e.value_type.name, e.description, _labels(e.labels)) for e in entities]
    console().print(_table("Entities", ("name", "value type", "description", "labels"), rows))


def show_entity(entity: Entity) -> None:
    """Print one entity's fields."""
    rows = [
        ("name", entity.name),
        ("value type", entity.value_type.name),
        ("description", entity.description),
        ("labels", _labels(entity.labels)),
    ]
    console().print(_table(f"Entity {entity.name}", ("field", "value"), rows))


def _max_age(table: FeatureTable) -> str:
    return "-" if table.max_age is None else format_duration(table.max_age)


def show_feature_tables(tables: Sequence[FeatureTable]) -> None:
    """Print feature tables, one row each."""
    rows = [
        (
            t.name,
            ", ".join(t.entities),
            ", ".join(t.feature_names),
            _max_age(t),
            str(t.revision or ""),
            _labels(t.labels),
        )
        for t in tables
    ]
    columns = ("name", "entities", "features", "max age", "revision", "labels")
    console().print(_table("Feature tables", columns, rows))


def show_feature_table(table: FeatureTable) -> None:
    """Print one feature table: its fields, its features and its sources."""
    out = console()
    fields = [
        ("name", table.name),
        ("entities", ", ".join(table.entities)),
        ("max age", _max_age(table)),
        ("revision", str(table.revision or "")),
        ("labels", _labels(table.labels)),
    ]
    out.print(_table(f"Feature table {table.name}", ("field", "value"), fields))
    features = [(f.name, f.value_type.name, _labels(f.labels)) for f in table.features]
    out.print(_table("Features", ("name", "value type", "labels"), features))
    sources = to_dict(table)
    for key in ("batch_source", "stream_source"):
        source = sources[key]
        if source is not None:
            rows = [(k, _text(v)) for k, v in source.items() if v not in (None, {}, "")]
            out.print(_table(key.replace("_", " ").capitalize(), ("field", "value"), rows))


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)


def show_history(history: Sequence[Revision]) -> None:
    """Print a feature table's stored revisions, oldest first."""
    rows = []
    for entry in history:
        spec = to_dict(entry.spec)
        features = "\n".join(f"{f['name']} {f['value_type']}" for f in spec.get("features", []))
        rows.append(
            (
                str(entry.revision),
                _when(entry.applied_at),
                ", ".join(spec.get("entities", [])),
                features,
                spec.get("max_age") or "-",
            )
        )
    columns = ("revision", "applied at (UTC)", "entities", "features", "max age")
    console().print(_table("History", columns, rows))


def show_projects(projects: Sequence[Project]) -> None:
    """Print projects, one row each."""
    rows = [
        (
            p.name,
            "yes" if p.archived else "no",
            _when(p.created_at),
        )
        for p in projects
    ]
    console().print(_table("Projects", ("name", "archived", "created at (UTC)"), rows))


def show_message(text: str) -> None:
    """Print one plain line on stdout, unwrapped."""
    print(text)
