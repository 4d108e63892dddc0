"""Batch ingestion: check rows against a feature table, then write them to its batch source.

Every column of the whole input is converted to its definition's type without loss before
anything is written; the rows then go to Parquet files that become visible together, in one
commit of the source's table (:mod:`potluck.offline.commits`). A bad row therefore leaves
nothing behind, readers never see part of an ingestion, and a crash leaves nothing visible.

Each ingestion resolves its own event-time ties as it writes: per partition folder, the rows
that win their (keys, event time) group go to ``part-<id>-NNNNN.parquet`` and the rows they beat
to ``part-<id>-NNNNN-superseded.parquet`` (see :func:`potluck.offline.files.part_file_name`), so a
point-in-time join over ingestions that do not overlap in event time needs no tie-break at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions._checks import check_inside_source
from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import FileSource, KafkaSource
from potluck.errors import DataValidationError, ValidationError
from potluck.offline.base import INGESTION_ID_COLUMN
from potluck.offline.commits import (
    AppTransaction,
    IngestionCommit,
    ensure_table,
    location_exists,
)
from potluck.offline.convert import convert
from potluck.offline.csv_text import read_csv_column
from potluck.offline.files import part_file_name, resolve_path
from potluck.offline.inputs import DeclaredColumn, InputBatches, InputData, open_input
from potluck.types import TIMESTAMP_ARROW_TYPE, to_arrow_type

ProgressCallback = Callable[[int, "int | None"], None]
"""Called after each batch with (rows done, total rows or ``None`` when unknown)."""


@dataclass(frozen=True)
class IngestionReport:
    """What one :func:`ingest` call wrote.

    Attributes:
        table: The feature table's name.
        rows: Rows written.
        files: The Parquet files written (paths within their filesystem).
        ingestion_id: The id every written row carries in its ``ingestion_id`` column.
        ingestion_time: When the ingestion started (UTC).
        version: The version of the batch source's table that made the rows visible (``None``
            when there were no rows, so nothing was committed).
    """

    table: str
    rows: int
    files: tuple[str, ...]
    ingestion_id: str
    ingestion_time: datetime
    version: int | None = None


@dataclass(frozen=True)
class _Column:
    """One column to write: where it comes from, what it must become, how errors name it."""

    source: str
    arrow_type: pa.DataType
    expected: str
    required: bool = True
    not_null: bool = False
    is_key: bool = False


def new_ingestion_id(now: datetime) -> str:
    """Return a new ingestion id for an ingestion at ``now``.

    Ids sort by time (``20240101T120000123456Z-1a2b3c4d``), so "everything ingested after the
    previous run" is ``ingestion_id > previous_max``.
    """
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def ingest(
    table: FeatureTable,
    entities: Mapping[str, Entity],
    data: InputData,
    *,
    root: Path | None = None,
    progress: ProgressCallback | None = None,
    app_transactions: Sequence[AppTransaction] = (),
) -> IngestionReport:
    """Validate ``data`` against ``table`` and append it to the table's batch source.

    The input's columns are the source's columns: each entity and feature under its
    ``field_mapping`` name, the event timestamp column, and optionally the created timestamp
    column (when the source has one and the input lacks it, every row gets the ingestion time,
    so rows ingested later win event-time ties). Other columns are ignored. Naive timestamps are
    read as UTC. Files go to ``<path>/part-<ingestion_id>-NNNNN.parquet`` (plus
    ``...-NNNNN-superseded.parquet`` for rows another row of the input beats on the same keys
    and event time), under ``<date_partition_column>=YYYY-MM-DD/`` folders (the UTC date of each
    row's event time) when the source is partitioned; each row also gets the ``ingestion_id``
    column. The whole input is held in memory while it is checked.

    Args:
        table: The feature table; it needs a batch source.
        entities: The table's entities by name (for their value types).
        data: A DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL.
        root: The folder a relative source path is resolved against.
        progress: Called after each batch with rows done and the total (if known).
        app_transactions: Application transactions the commit records with the rows,
            atomically, if each is still at the version it expects (see
            :class:`~potluck.offline.commits.IngestionCommit`): a stream job's offline sink
            records the last offset appended per partition here.

    Returns:
        What was written.

    Raises:
        ValidationError: If the table has no batch source, an entity is missing from
            ``entities``, or the input cannot be read.
        DataValidationError: If a column is missing, a value does not convert to its type
            without loss, an entity key or event timestamp is null, or a timestamp is outside
            years 1-9999; ``column`` and ``row`` name the first problem. Nothing is written.
        ConflictError: If one of ``app_transactions`` is no longer at its expected version;
            nothing is written.
    """
    source = table.batch_source
    if source is None:
        raise ValidationError(
            f"feature table {table.name!r} has no batch_source; give it a FileSource to ingest "
            "into",
            table=table.name,
        )
    now = datetime.now(timezone.utc)
    ingestion_id = new_ingestion_id(now)
    columns = _columns(table, source, entities)
    schema = _schema(columns)
    rows = _converted(table, columns, data, now, ingestion_id, progress)
    keys = [c.source for c in columns if c.is_key]
    winners = _winners(rows, keys, source)
    planned: list[tuple[str, pa.Table]] = []
    for number, (folder, part, won) in enumerate(_partitions(rows, winners, source)):
        prefix = f"{folder}/" if folder else ""
        for superseded, mask in ((False, won), (True, pc.invert(won))):
            selected = part.filter(mask)
            if selected.num_rows:
                name = prefix + part_file_name(ingestion_id, number, superseded=superseded)
                planned.append((check_inside_source(name, table.name), selected))
    commit = IngestionCommit(
        resolve_path(source.path, root), ingestion_id, schema, tuple(app_transactions)
    )
    commit.begin()
    try:
        for name, selected in planned:
            commit.write(name, selected)
        files = commit.files
        version = commit.commit()
    except BaseException:
        commit.abort()
        raise
    return IngestionReport(
        table=table.name,
        rows=rows.num_rows,
        files=files,
        ingestion_id=ingestion_id,
        ingestion_time=now,
        version=version,
    )


def check_rows(
    table: FeatureTable,
    source: FileSource | KafkaSource,
    entities: Mapping[str, Entity],
    data: InputData,
) -> pa.Table:
    """Validate ``data`` against ``table`` exactly as :func:`ingest` does; return it converted.

    ``client.publish`` checks a frame here before a message is sent, so a frame that
    ``ingest()`` refuses publishes nothing.

    Args:
        table: The feature table.
        source: The source whose column names the input uses (``field_mapping``, timestamp
            columns): the batch source, or the stream source for a publish.
        entities: The table's entities by name.
        data: A DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL.

    Returns:
        The entity, feature and timestamp columns under the source's names, each of its
        declared type (a created timestamp column the source names and the input lacks holds
        the current time).

    Raises:
        ValidationError: If an entity is missing from ``entities`` or the input cannot be read.
        DataValidationError: As :func:`ingest`; ``column`` and ``row`` name the first problem.
    """
    columns = _columns(table, source, entities)
    rows = _converted(table, columns, data, datetime.now(timezone.utc), "", None)
    return rows.drop_columns([INGESTION_ID_COLUMN])


def _converted(
    table: FeatureTable,
    columns: list[_Column],
    data: InputData,
    now: datetime,
    ingestion_id: str,
    progress: ProgressCallback | None,
) -> pa.Table:
    """Read ``data`` and convert every column to its type, or raise at the first bad value."""
    opened = open_input(data, _declared(columns))
    _check_present(opened, columns, table.name)
    schema = _schema(columns)
    converted: list[pa.Table] = []
    done = 0
    for batch in opened.batches:
        converted.append(
            _convert_batch(batch, columns, schema, opened.from_csv, done, now, ingestion_id)
        )
        done += batch.num_rows
        if progress is not None:
            progress(done, opened.num_rows)
    return pa.concat_tables(converted) if converted else schema.empty_table()


def provision_source(
    table: FeatureTable, entities: Mapping[str, Entity], *, root: Path | None = None
) -> bool:
    """Create ``table``'s batch source (an empty table) when nothing is at its location yet.

    ``apply`` calls this, so a table reads as "no data yet" (null features and a warning)
    until its first ingestion, while a location that vanished or was mistyped later is an
    error. A folder that already holds files (written by other tools) is left as it is.

    Returns:
        Whether a table was created.

    Raises:
        UnavailableError: If the location cannot be written.
    """
    source = table.batch_source
    if source is None:
        return False
    location = resolve_path(source.path, root)
    if location_exists(location):
        return False
    ensure_table(location, _schema(_columns(table, source, entities)))
    return True


def _schema(columns: list[_Column]) -> pa.Schema:
    return pa.schema(
        [pa.field(c.source, c.arrow_type) for c in columns]
        + [pa.field(INGESTION_ID_COLUMN, pa.string())]
    )


def _columns(
    table: FeatureTable, source: FileSource | KafkaSource, entities: Mapping[str, Entity]
) -> list[_Column]:
    names = {name: column for column, name in source.field_mapping.items()}
    columns: list[_Column] = []
    for name in table.entities:
        entity = entities.get(name)
        if entity is None:
            raise ValidationError(
                f"feature table {table.name!r} is keyed by entity {name!r}, which was not given",
                table=table.name,
            )
        columns.append(
            _Column(
                names.get(name, name),
                to_arrow_type(entity.value_type),
                f"entity {name} ({entity.value_type.name})",
                not_null=True,
                is_key=True,
            )
        )
    columns += [
        _Column(
            names.get(f.name, f.name),
            to_arrow_type(f.value_type),
            f"feature {f.name} ({f.value_type.name})",
        )
        for f in table.features
    ]
    columns.append(
        _Column(
            source.event_timestamp_column, TIMESTAMP_ARROW_TYPE, "an event timestamp", not_null=True
        )
    )
    if source.created_timestamp_column:
        columns.append(
            _Column(
                source.created_timestamp_column,
                TIMESTAMP_ARROW_TYPE,
                "a created timestamp",
                required=False,
            )
        )
    return columns


def _declared(columns: list[_Column]) -> list[DeclaredColumn]:
    return [DeclaredColumn(c.source, c.arrow_type, c.expected) for c in columns]


def _check_present(opened: InputBatches, columns: list[_Column], table: str) -> None:
    present = set(opened.columns)
    missing = [c.source for c in columns if c.required and c.source not in present]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        raise DataValidationError(
            f"the rows for feature table {table!r} lack column{'s' if len(missing) > 1 else ''} "
            f"{listed}; their columns: {', '.join(opened.columns) or '(none)'}",
            column=missing[0],
            row=None,
        )


def _convert_batch(
    batch: pa.RecordBatch,
    columns: list[_Column],
    schema: pa.Schema,
    from_csv: bool,
    offset: int,
    now: datetime,
    ingestion_id: str,
) -> pa.Table:
    arrays: list[pa.Array] = []
    read = read_csv_column if from_csv else convert
    for column in columns:
        if column.source not in batch.schema.names:
            arrays.append(pa.repeat(pa.scalar(now, TIMESTAMP_ARROW_TYPE), batch.num_rows))
            continue
        values = read(
            batch.column(column.source),
            column.arrow_type,
            column=column.source,
            expected=column.expected,
            row_offset=offset,
        )
        if column.not_null and values.null_count:
            row = offset + pc.index(pc.is_null(values), True).as_py()
            raise DataValidationError(
                f"column {column.source!r} row {row}: is null; every row needs {column.expected}",
                column=column.source,
                row=row,
            )
        arrays.append(values)
    arrays.append(pa.repeat(pa.scalar(ingestion_id, pa.string()), batch.num_rows))
    return pa.Table.from_arrays(arrays, schema=schema)


def _winners(rows: pa.Table, keys: list[str], source: FileSource) -> pa.Array:
    """Mark the row that wins each (keys, event time) group of this ingestion.

    The winner has the greatest created time (a null one sorts first); among equal created times
    the row that comes last in the input wins. Groups are found by one sort on (keys, event
    time); only the rows of groups with more than one row are then ranked by created time.
    """
    count = rows.num_rows
    if count == 0:
        return pa.array([], pa.bool_())
    group_columns = [*keys, source.event_timestamp_column]
    order = pc.sort_indices(
        rows.select(group_columns), sort_keys=[(c, "ascending") for c in group_columns]
    ).to_numpy()
    starts = np.zeros(count, dtype=bool)
    starts[0] = True
    for column in group_columns:
        ordered = rows.column(column).take(order).combine_chunks()
        starts[1:] |= pc.not_equal(ordered[:-1], ordered[1:]).to_numpy(zero_copy_only=False)
    group = np.cumsum(starts) - 1
    tied = np.bincount(group)[group] > 1
    won = np.zeros(count, dtype=bool)
    won[order[~tied]] = True
    if tied.any():
        positions = order[tied]
        created = (
            rows.column(source.created_timestamp_column).take(positions)
            if source.created_timestamp_column
            else pa.nulls(len(positions), TIMESTAMP_ARROW_TYPE)
        )
        ranked = pa.table({"group": group[tied], "created": created, "position": positions})
        rank = pc.sort_indices(
            ranked,
            sort_keys=[
                ("group", "ascending"),
                ("created", "ascending", "at_start"),
                ("position", "ascending"),
            ],
        ).to_numpy()
        ranked_groups = group[tied][rank]
        last = np.append(ranked_groups[1:] != ranked_groups[:-1], True)
        won[positions[rank][last]] = True
    return pa.array(won)


def _partitions(
    rows: pa.Table, winners: pa.Array, source: FileSource
) -> list[tuple[str, pa.Table, pa.Array]]:
    """Split ``rows`` and their winner marks by the UTC date of their event time.

    An unpartitioned source gets one part, in the folder ``""``.
    """
    if not source.date_partition_column or rows.num_rows == 0:
        return [("", rows, winners)]
    days = rows.column(source.event_timestamp_column).cast(pa.date32())
    order = pc.sort_indices(days)
    rows, days, winners = rows.take(order), days.take(order), winners.take(order)
    runs = pc.run_end_encode(days.combine_chunks())
    start = 0
    parts: list[tuple[str, pa.Table, pa.Array]] = []
    for end, day in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
        folder = f"{source.date_partition_column}={day.isoformat()}"
        parts.append((folder, rows.slice(start, end - start), winners.slice(start, end - start)))
        start = end
    return parts


__all__ = [
    "IngestionReport",
    "ProgressCallback",
    "check_rows",
    "ingest",
    "new_ingestion_id",
    "provision_source",
]
