"""Which files a read sees: each batch source pinned to one committed version, engine-neutral.

Every offline engine resolves its sources here before it reads, so they agree on what "the
table's data" is: the files of one version of its commit log (see
:mod:`potluck.offline.commits`), a missing location is an error, an empty source a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import FileSource
from potluck.errors import ValidationError
from potluck.notices import NoDataWarning
from potluck.offline.base import SourceVersion
from potluck.offline.commits import SourceState, read_source
from potluck.offline.files import resolve_path
from potluck.offline.pit import PitPlan


def pin_sources(plan: PitPlan, versions: Mapping[str, int]) -> dict[str, SourceState]:
    """Return, per joined table, the committed files of its source at one version.

    A table whose source holds no rows yet gives a :class:`~potluck.notices.NoDataWarning` (its
    features come back null).

    Raises:
        ValidationError: If a source location does not exist, or a version does not exist or
            is named for a table that is not joined.
    """
    unknown = sorted(set(versions) - {join.table for join in plan.joins})
    if unknown:
        raise ValidationError(
            f"versions name feature table {unknown[0]!r}, which the features requested do not "
            f"use; tables joined: {', '.join(join.table for join in plan.joins)}",
            table=unknown[0],
        )
    states: dict[str, SourceState] = {}
    for join in plan.joins:
        state = read_source(join.path, version=versions.get(join.table))
        states[join.table] = require_existing(join.table, state)
        if not state.files.paths:
            warnings.warn(
                f"feature table {join.table!r} has no data yet (no rows committed at "
                f"{join.path!r}); its features are null",
                NoDataWarning,
                stacklevel=4,
            )
    return states


def require_existing(table: FeatureTable | str, state: SourceState) -> SourceState:
    """Return ``state`` if something is at its location.

    Raises:
        ValidationError: Naming the table and the location, if nothing is there.
    """
    if not state.exists:
        name = table if isinstance(table, str) else table.name
        raise ValidationError(
            f"the batch source of feature table {name!r} does not exist: nothing at "
            f"{state.location!r}; ingest rows into it (potluck ingest {name} FILE) or fix its "
            "batch_source.path",
            table=name,
            path=state.location,
        )
    return state


def current_version(table: FeatureTable, root: Path | None) -> SourceVersion:
    """Return which batch source ``table`` reads now, and its latest committed version.

    The source is identified by its location and its table's id (``plain`` for a folder
    without a log), so a moved or recreated table starts a new since-last sequence.

    Raises:
        ValidationError: If the table has no batch source or its location does not exist.
    """
    location = resolve_path(batch_source_of(table).path, root)
    state = require_existing(table, read_source(location))
    return SourceVersion(f"{location}#{state.table_id or 'plain'}", state.version)


def batch_source_of(table: FeatureTable) -> FileSource:
    """Return ``table``'s batch source.

    Raises:
        ValidationError: If it has none.
    """
    if table.batch_source is None:
        raise ValidationError(
            f"feature table {table.name!r} has no batch_source to read", table=table.name
        )
    return table.batch_source


__all__ = ["batch_source_of", "current_version", "pin_sources", "require_existing"]
