"""Range reads of the Spark store, on the driver: a table's pinned files, by potluck's rules.

Offline-to-online jobs of the local engine read a batch source through
:meth:`~potluck.offline.base.OfflineStore.read_range`; the Spark engine runs those jobs on the
cluster instead. So the Spark store reads ranges here, file after file with pyarrow
(:func:`potluck.offline.spark.scan.read_file`, the conversion rules of ``ingest()`` and DuckDB),
with the same rows and columns as the DuckDB store.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import FileSource
from potluck.errors import DataValidationError
from potluck.offline.base import (
    CREATED_TIMESTAMP_COLUMN,
    EVENT_TIMESTAMP_COLUMN,
    INGESTION_ID_COLUMN,
)
from potluck.offline.files import SourceFiles
from potluck.offline.spark.scan import IngestionCreated, ScanColumn, read_file
from potluck.types import ValueType, from_arrow_type, is_lossless_widening


def read_files_in_range(
    table: FeatureTable,
    source: FileSource,
    files: SourceFiles,
    start: datetime | None,
    end: datetime | None,
    batch_size: int,
) -> Iterator[pa.RecordBatch]:
    """Yield the rows of ``files`` with ``start <= event time < end``, file after file.

    Args:
        table: The feature table.
        source: Its batch source.
        files: The files to read (pinned, pruned, without superseded rows).
        start: Inclusive lower bound (UTC), or ``None``.
        end: Exclusive upper bound (UTC), or ``None``.
        batch_size: The most rows per batch.

    Returns:
        Batches as :meth:`~potluck.offline.base.OfflineStore.read_range` describes them; an
        entity column is of the type the files' types all widen to.

    Raises:
        DataValidationError: If a file lacks a key or event-time column, or a value does not
            fit its declared type (naming the file, the column and the row).
    """
    if not files.paths:
        return
    names = {name: column for column, name in source.field_mapping.items()}
    keys = [names.get(e, e) for e in table.entities]
    key_types = _key_types(table.name, files, keys)
    columns = [
        ScanColumn(entity, column, key_types[column], f"entity {entity}", required=True)
        for entity, column in zip(table.entities, keys, strict=True)
    ]
    columns += [
        ScanColumn(
            f.name,
            names.get(f.name, f.name),
            f.value_type,
            f"feature {f.name} ({f.value_type.name})",
        )
        for f in table.features
    ]
    columns += [
        ScanColumn(
            EVENT_TIMESTAMP_COLUMN,
            source.event_timestamp_column,
            ValueType.UNIX_TIMESTAMP,
            "an event timestamp",
            required=True,
        ),
        ScanColumn(
            CREATED_TIMESTAMP_COLUMN,
            source.created_timestamp_column,
            ValueType.UNIX_TIMESTAMP,
            "a created timestamp",
        ),
        ScanColumn(INGESTION_ID_COLUMN, INGESTION_ID_COLUMN, ValueType.STRING, "an ingestion id"),
    ]
    created = (
        None
        if source.created_timestamp_column is not None
        else IngestionCreated(CREATED_TIMESTAMP_COLUMN, INGESTION_ID_COLUMN)
    )
    for path in files.paths:
        for batch in read_file(
            files.filesystem,
            path,
            columns,
            table=table.name,
            ingestion_created=created,
            batch_rows=batch_size,
        ):
            kept = _in_range(batch, start, end)
            if kept.num_rows:
                yield kept


def _in_range(
    batch: pa.RecordBatch, start: datetime | None, end: datetime | None
) -> pa.RecordBatch:
    event = batch.column(EVENT_TIMESTAMP_COLUMN)
    masks = []
    if start is not None:
        masks.append(pc.greater_equal(event, pa.scalar(start, event.type)))
    if end is not None:
        masks.append(pc.less(event, pa.scalar(end, event.type)))
    if not masks:
        return batch
    return batch.filter(functools.reduce(pc.and_, masks))


def _key_types(table: str, files: SourceFiles, columns: Sequence[str]) -> dict[str, ValueType]:
    """Return the type each key column is read as: the one the files' types all widen to.

    Raises:
        DataValidationError: If a key column holds values potluck has no type for, or files
            hold it as types no one of which the others widen to.
    """
    held: dict[str, set[ValueType]] = {column: set() for column in columns}
    for path in files.paths:
        schema = pq.read_schema(path, filesystem=files.filesystem)
        for column in columns:
            held_as = schema.field(column).type if column in schema.names else pa.null()
            if not pa.types.is_null(held_as):  # a column of nulls fits any type
                held[column].add(_key_type(table, column, held_as))
    types: dict[str, ValueType] = {}
    for column, found in held.items():
        widest = [
            candidate
            for candidate in found
            if all(t == candidate or is_lossless_widening(t, candidate) for t in found)
        ]
        if found and not widest:
            raise DataValidationError(
                f"the batch source of feature table {table!r} holds its key column {column!r} "
                f"as {' and '.join(sorted(t.name for t in found))} in different files; rewrite "
                "the files with the entity's type",
                column=column,
                row=None,
            )
        types[column] = widest[0] if widest else ValueType.STRING  # nulls only: any type
    return types


def _key_type(table: str, column: str, arrow_type: pa.DataType) -> ValueType:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_integer(arrow_type) and arrow_type.bit_width < 32:
        return ValueType.INT32
    if pa.types.is_integer(arrow_type) and not pa.types.is_int32(arrow_type):
        return ValueType.INT64
    try:
        return from_arrow_type(arrow_type)
    except ValueError:
        raise DataValidationError(
            f"the batch source of feature table {table!r} holds its key column {column!r} as "
            f"{arrow_type} values, which no entity type holds; rewrite the files with the "
            "entity's type",
            column=column,
            row=None,
        ) from None


__all__ = ["read_files_in_range"]
