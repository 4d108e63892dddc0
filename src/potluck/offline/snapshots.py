"""Which files a read sees: each batch source pinned to one committed version, engine-neutral.

Every offline engine resolves its sources here before it reads, so they agree on what "the
table's data" is: the files of one version of its commit log (see
:mod:`potluck.offline.commits`), a missing location is an error, an empty source a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import FileSource
from potluck.errors import ValidationError
from potluck.notices import NoDataWarning
from potluck.offline.base import SourceVersion
from potluck.offline.commits import SourceState, read_source
from potluck.offline.files import (
    SourceFiles,
    filesystem_for,
    resolve_path,
    select_days,
    without_superseded,
)
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


@dataclass(frozen=True)
class RangeRead:
    """What a range read of one batch source sees (see :func:`range_files`).

    Attributes:
        source: The table's batch source.
        files: The committed files that can hold rows of the range, superseded ones left out.
        start: The range's inclusive start in UTC, or ``None``.
        end: The range's exclusive end in UTC, or ``None``.
    """

    source: FileSource
    files: SourceFiles
    start: datetime | None
    end: datetime | None


def range_files(
    table: FeatureTable,
    root: Path | None,
    start: datetime | None,
    end: datetime | None,
    *,
    version: int | None = None,
    since_version: int | None = None,
) -> RangeRead:
    """Return the files a read of ``table``'s rows with ``start <= event time < end`` sees.

    Every offline store's ``read_range`` starts here, so they agree on the files: one committed
    version (or what came after ``since_version``), pruned by date partition, without the
    ``-superseded`` files (their rows lose to a row of their own ingestion: reading them could
    only let a tie go the wrong way). Naive bounds are UTC.

    Raises:
        ValidationError: If the table has no batch source, its location does not exist,
            ``start`` is not before ``end``, or ``version`` does not exist.
    """
    source = batch_source_of(table)
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start >= end:
        raise ValidationError(
            f"start ({start.isoformat()}) must be before end ({end.isoformat()})",
            table=table.name,
        )
    location = resolve_path(source.path, root)
    state = read_source(location, version=version, since_version=since_version)
    state = require_existing(table, state)
    files = select_days(
        state.files,
        filesystem_for(location)[1],
        source.date_partition_column,
        start.date() if start else None,
        end.date() if end else None,
    )
    return RangeRead(source, without_superseded(files), start, end)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


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


__all__ = [
    "RangeRead",
    "batch_source_of",
    "current_version",
    "pin_sources",
    "range_files",
    "require_existing",
]
