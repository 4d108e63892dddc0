r"""How the CLI shows things: rich tables for people, JSON for scripts (``--output json``).

Everything a table or a line shows from user data (names, descriptions, labels, values, paths,
errors) goes through :func:`visible` first, so a control character in the data (an escape
sequence, a newline, a bidi override) is shown as its escape (``\x1b``, ``\n``, ``\u202e``)
and never acts on the terminal. JSON output escapes them as JSON does (``\u001b``).

A definition's sources (``batch_source.path``, a stream source's brokers) and a plan's details
are shown with the credentials of their URLs masked (:func:`masked_sources`), in tables and in
JSON alike: ``s3://KEY:***@bucket/path``, ``?secret_key=***``.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from pathlib import PurePath
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from potluck._redact import redact_text
from potluck.definitions import Entity, FeatureTable
from potluck.definitions.serde import format_duration, to_dict
from potluck.registry.base import Change, Project, Revision
from potluck.types import ValueType

# ---- text from user data ------------------------------------------------------------------------

_HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0 and C1 controls (ESC, CSI), DEL
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff]"  # lone surrogates (they cannot even be encoded)
)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    r"""Return ``text`` with each character that would act on a terminal shown as its escape.

    Control characters (C0, C1, DEL), lone surrogates, line and paragraph separators and bidi
    controls are written as Python's ``repr`` writes them: ``\n``, ``\r``, ``\t``, else
    ``\xNN`` or ``\uNNNN``. Other text, backslashes included, is unchanged, so the result is
    for reading, not for parsing (``--output json`` gives the exact text).

    Example:
        >>> visible("\x1b[2Jred\nline")
        '\\x1b[2Jred\\nline'
    """
    return _HIDDEN.sub(_escape, text)


# ---- the --output option ------------------------------------------------------------------------


class OutputFormat(str, Enum):
    """The shapes a listing or description can be printed in."""

    TABLE = "table"
    JSON = "json"


def _looks_like_a_path(value: str) -> bool:
    return "/" in value or "\\" in value or PurePath(value).suffix != ""


def output_option(help_text: str, *, file_option: str | None = None) -> Any:
    """Return the ``--output/-o`` option (``table`` or ``json``) of a command.

    A value that is not a format but looks like a path (it has a slash or a suffix, as in
    ``-o out.csv``) is refused with a hint: to give it to ``file_option`` (the command's output
    file option) when the command has one, else to redirect stdout.

    Args:
        help_text: The option's help.
        file_option: The command's option that names an output file, long and short name
            (``"--out/-O"``), or ``None``.

    Returns:
        A ``typer.Option`` whose values parse to :class:`OutputFormat`.
    """
    names = ", ".join(repr(f.value) for f in OutputFormat)

    def parse(value: str | OutputFormat) -> OutputFormat:
        if isinstance(value, OutputFormat):
            return value
        try:
            return OutputFormat(value)
        except ValueError:
            pass
        message = f"{value!r} is not one of {names}"
        if _looks_like_a_path(value):
            path = shlex.quote(value)
            if file_option is not None:
                long, _, short = file_option.partition("/")
                message += (
                    f": -o/--output is how the report is printed; to write to {path}, use "
                    f"{long} {path} ({short} {path})"
                )
            else:
                message += (
                    f": -o/--output is how the result is printed; to save it in {path}, "
                    f"redirect stdout: -o json > {path}"
                )
        raise typer.BadParameter(message)

    return typer.Option("--output", "-o", help=help_text, parser=parse, metavar="[table|json]")


OutputOption = Annotated[OutputFormat, output_option("Print a rich table or JSON.")]
"""The ``--output/-o`` option every listing and description command takes."""


def console() -> Console:
    """Return a console on stdout that never wraps a table row into the next line's cells.

    Text is printed as given: no markup, no emoji codes (``:smile:``), no highlighting.
    """
    return Console(soft_wrap=False, highlight=False, markup=False, emoji=False)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (control characters escaped, as JSON does)."""
    print(json.dumps(data, indent=2, default=str))


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


Cell = str | tuple[str, ...]
"""A table cell: text, or lines (each shown on its own line of the cell)."""


def _cell(value: Cell) -> str:
    lines = (value,) if isinstance(value, str) else value
    return "\n".join(visible(line) for line in lines)


def _table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Table:
    table = Table(title=None if title is None else visible(title), title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
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


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def masked_sources(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return a feature table's dict form with the credentials in its sources masked.

    Every text value of ``batch_source`` and ``stream_source`` goes through
    :func:`~potluck._redact.redact_text`; the other keys are returned as they are.
    """
    return {
        key: _masked(value) if key in ("batch_source", "stream_source") else value
        for key, value in data.items()
    }


def table_json(table: FeatureTable) -> dict[str, Any]:
    """Return a feature table's dict form with its registry revision (sources masked)."""
    return {**masked_sources(to_dict(table)), "revision": table.revision}


def change_json(change: Change) -> dict[str, Any]:
    """Return one plan line as a dict (credentials in its details masked)."""
    return {
        "kind": change.kind,
        "name": change.name,
        "action": change.action,
        "revision": change.revision,
        "details": [redact_text(d) for d in change.details],
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
        "spec": masked_sources(to_dict(revision.spec)),
    }


# ---- tables ------------------------------------------------------------------------------------


def show_changes(changes: Sequence[Change], title: str) -> None:
    """Print an apply plan: one row per definition with what applying does to it."""
    rows = [
        (
            c.kind,
            c.name,
            c.action,
            str(c.revision) if c.revision else "",
            tuple(redact_text(d) for d in c.details),
        )
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
    sources = masked_sources(to_dict(table))
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
    rows: list[tuple[Cell, ...]] = []
    for entry in history:
        spec = to_dict(entry.spec)
        features = tuple(f"{f['name']} {f['value_type']}" for f in spec.get("features", []))
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


def show_message(*lines: str) -> None:
    """Print each of ``lines`` on a line of stdout, unwrapped, through :func:`visible`."""
    for line in lines:
        print(visible(line))


def show_table(columns: Sequence[str], rows: Iterable[Sequence[Cell]]) -> None:
    """Print a table without a title: one row per item of ``rows``, a cell per column."""
    console().print(_table(None, columns, rows))
