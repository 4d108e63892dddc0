"""How the CLI shows things: rich tables for people, JSON for scripts (``--output json``)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from potluck.definitions import Entity, FeatureTable
from potluck.definitions.serde import format_duration, to_dict
from potluck.registry.base import Change, Project, Revision
from potluck.types import ValueType


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
    return Console(soft_wrap=False, highlight=False, markup=False)


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


# ---- values -------------------------------------------------------------------------------------


def iso_utc(moment: datetime) -> str:
    """Return ``moment`` in ISO 8601 UTC as HTTP serving writes it: ``2024-05-01T23:00:00Z``.

    Microseconds are shown only when there are any; a naive time is taken as UTC.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    text = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z").replace(".000000Z", "Z")


def _non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def json_value(value: Any) -> Any:
    """Return one online value in the JSON form of HTTP serving.

    Bytes as base64, timestamps as :func:`iso_utc`, NaN and infinities as the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, lists element by element; the rest as is.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return _non_finite(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def _float32_text(value: float) -> str:
    """The fewest digits that read back as the same float32, in the notation ``repr`` would use.

    Positional from 1e-4 up to 1e16 (``0.1894713``, ``1000001.0``), scientific outside
    (``1e-08``, ``3.4028235e+38``), as Python writes floats.
    """
    single = np.float32(value)
    widened = abs(float(single))  # compared as a double, as repr compares the widened value
    if widened == 0 or 1e-4 <= widened < 1e16:
        return str(np.format_float_positional(single, unique=True, trim="0"))
    return str(np.format_float_scientific(single, unique=True, trim="-", exp_digits=2))


def _display_scalar(value: Any, value_type: ValueType | None) -> str:
    """One value as :func:`display_value` shows it; inside a list, as JSON (strings quoted)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return _non_finite(value)
        return _float32_text(value) if value_type is ValueType.FLOAT else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    shown = json_value(value)
    return shown if isinstance(shown, str) else str(shown)


def display_value(value: Any, value_type: ValueType | None) -> str:
    """Return how a table cell shows one online value of ``value_type``: text, not a repr.

    Null is an empty cell; booleans ``true``/``false``; FLOAT values at float32 precision (the
    shortest text that reads back as the same float32: ``0.1894713``), DOUBLE values as the
    shortest text of the double; NaN and infinities as ``NaN``, ``Infinity``, ``-Infinity``;
    bytes as base64; timestamps in ISO 8601 UTC (``2024-05-01T23:00:00Z``); lists as JSON
    arrays of the same forms (``[0.5, 1.25]``, ``["AAE="]``, ``[1.5, "NaN"]``).
    """
    if value is None:
        return ""
    if isinstance(value, list):
        element = value_type.element_type if value_type is not None else None
        items = []
        for item in value:
            text = "null" if item is None else _display_scalar(item, element)
            numeric = isinstance(item, (int, float)) and text not in _NON_FINITE
            items.append(text if numeric or item is None else json.dumps(text))
        return "[" + ", ".join(items) + "]"
    return _display_scalar(value, value_type)


_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})


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
