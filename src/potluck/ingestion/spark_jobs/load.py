"""One offline-to-online load as a Spark DataFrame pipeline, with the local engine's semantics.

1. Each read task (:func:`potluck.offline.spark.scan.scan_files`) reads whole files with pyarrow,
   every column as its declared type (``field_mapping`` applied, the created time from
   ingestion ids when the source has no created column), exactly as the local engine's reads,
   and in the same Python pass (:func:`prepare_rows`) drops rows outside ``[start, end)``,
   then, in chunks of about :data:`PREPARE_ROWS` rows, rejects the rows with a null entity value
   or event time, keeps the newest row per key and encodes the keys
   (:func:`potluck.ingestion.offline_to_online.prepare_batch`, the local engine's own step).
   Only those rows cross into the JVM, with one row of counts per task (rows read, rejected,
   superseded; the greatest ingestion id read).
2. The prepared rows are kept (memory, then disk) while the driver checks for data errors: a
   file that does not fit, or a key that cannot be encoded, ends its read task without error
   (Spark does not retry it) and fails the load with the first file's error before anything is
   written.
3. The rows are repartitioned by key, so all rows of a key, from every task, meet in one
   partition, and sorted within each partition by (key, event time, created time), nulls first.
4. Each partition keeps the last row of each key, the newest by (event time, created time) as
   the local engine keeps it, and writes them with the online store's own newer-wins write
   (``OnlineStore.write``; the store is built on the executor from its config), in batches.
   Local and Spark jobs therefore interleave safely on one table.
5. Each partition returns one row of counts (read, written, skipped, rejected, greatest
   ingestion id, newest event time written); the driver adds them up. No feature row reaches
   the driver. The same counts go into an accumulator as each partition ends: the running job's
   progress.

Counting is the local engine's, over the whole range as one batch: ``rows_skipped`` holds the
rows superseded by a newer row of their key (in step 1 or 4) and those the store did not take.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from potluck import plugins
from potluck.definitions.feature_table import FeatureTable
from potluck.ingestion.jobs import JobSpec, JobStats
from potluck.ingestion.offline_to_online import prepare_batch
from potluck.ingestion.spark_jobs.spec import TableLoad
from potluck.offline.base import CREATED_TIMESTAMP_COLUMN, EVENT_TIMESTAMP_COLUMN
from potluck.offline.base import INGESTION_ID_COLUMN as INGESTION
from potluck.offline.snapshots import batch_source_of
from potluck.offline.spark.reading import Gathered
from potluck.offline.spark.scan import (
    FileError,
    IngestionCreated,
    ScanColumn,
    ScanStep,
    first_error,
    scan_files,
    spark_type,
)
from potluck.offline.spark.session import executor_errors
from potluck.online.base import ENTITY_KEY_COLUMN, OnlineStore, WriteMode
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

try:
    from pyspark import Accumulator, AccumulatorParam, StorageLevel
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import types as st
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark engine needs pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

KEY = ENTITY_KEY_COLUMN
EVENT = EVENT_TIMESTAMP_COLUMN
CREATED = CREATED_TIMESTAMP_COLUMN
READ = "potluck_read_counts"
"""The prepared rows' column of counts: null on a row to write; set on a read task's last row
(its key null), which carries the task's counts through the shuffle."""

PREPARE_ROWS = 1_048_576
"""Rows a read task keeps the newest row per key of at once: it holds about this many rows (a
chunk ends with the first batch read that reaches it)."""

_READ_TYPE = pa.struct(
    [
        ("rows_read", pa.int64()),
        ("rows_skipped", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("max_ingestion_id", pa.string()),
    ]
)
_READ_SPARK_TYPE = st.StructType(
    [
        st.StructField("rows_read", st.LongType()),
        st.StructField("rows_skipped", st.LongType()),
        st.StructField("rows_rejected", st.LongType()),
        st.StructField("max_ingestion_id", st.StringType()),
    ]
)

_STATS = [f.name for f in dataclasses.fields(JobStats)]
_COUNTS = pa.schema(
    [
        *((name, pa.int64()) for name in _STATS),
        ("max_ingestion_id", pa.string()),
        ("max_event_us", pa.int64()),
    ]
)
"""The one row each writing partition returns."""
_COUNTS_DDL = (
    "rows_read long, rows_written long, rows_skipped long, rows_rejected long, "
    "max_ingestion_id string, max_event_us long"
)


@dataclass(frozen=True)
class Outcome:
    """What a load did.

    Attributes:
        stats: Rows read, written, skipped and rejected.
        max_ingestion_id: The greatest ``ingestion_id`` read.
        max_event_timestamp_us: The newest event time sent to the store (microseconds).
    """

    stats: JobStats
    max_ingestion_id: str | None
    max_event_timestamp_us: int | None


class StatsParam(AccumulatorParam[JobStats]):
    """Adds :class:`JobStats` in an accumulator (the progress of a running load)."""

    def zero(self, value: JobStats) -> JobStats:
        """Return no rows."""
        return JobStats()

    def addInPlace(self, value1: JobStats, value2: JobStats) -> JobStats:  # noqa: N802 - pyspark's
        """Return the sum."""
        return value1 + value2


def load_table(
    spark: SparkSession,
    load: TableLoad,
    spec: JobSpec,
    online_store: Mapping[str, Any],
    progress: Accumulator[JobStats],
) -> Outcome:
    """Run one load (see the module's docstring) and return what it did.

    Args:
        spark: The session.
        load: The table, its entity types and the files to read.
        spec: What the job was asked (range, ``full``, ``batch_size``: rows per store write).
        online_store: The online store's config section, built on each executor.
        progress: Receives each partition's counts as it ends.

    Raises:
        ValidationError: A data error, raised on the driver before anything is written: a
            :class:`~potluck.errors.DataValidationError` naming the file, column and row of
            the first file (in the load's order) that does not fit, or a key that cannot be
            encoded (a NaN float key), as the local engine raises it.
        Exception: What Spark raises; run it under
            :func:`potluck.offline.spark.session.spark_errors`, which turns an executor's
            :class:`~potluck.errors.PotluckError` (a store that cannot be reached) back into
            itself.
    """
    table = load.table
    errors: Accumulator[list[FileError]] = spark.sparkContext.accumulator([], Gathered())
    prepare = functools.partial(
        prepare_rows,
        project=load.project,
        table=table,
        entity_types=dict(load.entity_types),
        start=spec.start,
        end=spec.end,
    )
    prepared = _scan(spark, load, errors, ScanStep(prepare, prepared_schema(table)))
    prepared.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        prepared.count()  # reads every file; writes nothing
        error = first_error(errors.value)
        if error is not None:
            raise error
        spread = (
            prepared.repartition(load.partitions, KEY)
            if load.partitions
            else prepared.repartition(KEY)
        )
        write = functools.partial(
            _write_partition,
            project=load.project,
            table=table,
            online_store=dict(online_store),
            mode=WriteMode.RELOAD if spec.full else WriteMode.NEWER,
            batch_size=spec.batch_size,
            progress=progress,
        )
        ordered = spread.sortWithinPartitions(KEY, EVENT, CREATED)
        parts = ordered.mapInArrow(write, _COUNTS_DDL).collect()  # one row per partition
    finally:
        prepared.unpersist()
    stats = sum((JobStats(*(row[name] for name in _STATS)) for row in parts), JobStats())
    ingestion = [row["max_ingestion_id"] for row in parts if row["max_ingestion_id"] is not None]
    events = [row["max_event_us"] for row in parts if row["max_event_us"] is not None]
    return Outcome(stats, max(ingestion, default=None), max(events, default=None))


def prepared_schema(table: FeatureTable) -> st.StructType:
    """The Spark schema of :func:`prepare_rows`'s output for ``table``."""
    return st.StructType(
        [
            st.StructField(KEY, st.BinaryType()),
            st.StructField(EVENT, st.TimestampType()),
            st.StructField(CREATED, st.TimestampType()),
            *(st.StructField(f.name, spark_type(f.value_type)) for f in table.features),
            st.StructField(READ, _READ_SPARK_TYPE),
        ]
    )


def _scan(
    spark: SparkSession,
    load: TableLoad,
    errors: Accumulator[list[FileError]],
    step: ScanStep,
) -> DataFrame:
    """Read the load's files as the local engine's range reads do, through ``step``."""
    table = load.table
    source = batch_source_of(table)
    names = {name: column for column, name in source.field_mapping.items()}
    columns = [
        ScanColumn(
            e,
            names.get(e, e),
            load.entity_types[e],
            f"entity {e} ({load.entity_types[e].name})",
            required=True,
        )
        for e in table.entities
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
            EVENT,
            source.event_timestamp_column,
            ValueType.UNIX_TIMESTAMP,
            "an event timestamp",
            required=True,
        ),
        ScanColumn(
            CREATED,
            source.created_timestamp_column,
            ValueType.UNIX_TIMESTAMP,
            "a created timestamp",
        ),
        ScanColumn(INGESTION, INGESTION, ValueType.STRING, "an ingestion id"),
    ]
    created = None if source.created_timestamp_column else IngestionCreated(CREATED, INGESTION)
    return scan_files(
        spark,
        load.files(),
        columns,
        table=table.name,
        errors=errors,
        ingestion_created=created,
        step=step,
    )


def prepare_rows(
    batches: Iterator[pa.RecordBatch],
    *,
    project: str,
    table: FeatureTable,
    entity_types: Mapping[str, ValueType],
    start: datetime | None,
    end: datetime | None,
    chunk_rows: int = PREPARE_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Make one read task's rows ready to shuffle: in range, one per key, keys encoded.

    Args:
        batches: The task's rows as read (entity columns, event and created times, ingestion
            id, features).
        project: The table's project.
        table: The feature table.
        entity_types: The value type of each of its entities.
        start: Keep rows with ``event_timestamp >= start`` (a null event time is then dropped,
            not read, as the local engine's range read drops it).
        end: Keep rows with ``event_timestamp < end``.
        chunk_rows: How many rows are kept newest-per-key at once (a chunk ends with the first
            batch that reaches it).

    Yields:
        Batches of :func:`prepared_schema`: the newest row of each key of each chunk
        (:func:`~potluck.ingestion.offline_to_online.prepare_batch`), :data:`READ` null; last,
        one row with a null key whose :data:`READ` holds the task's counts (rows read, rows
        superseded within its chunks, rows rejected, the greatest ingestion id).

    Raises:
        ValidationError: If a key cannot be encoded (a NaN float key), as locally.
    """
    stats = JobStats()
    ingestion: str | None = None
    for chunk in _chunks(_in_range(batches, start, end), chunk_rows):
        prepared = prepare_batch(project, table, entity_types, chunk)
        stats += prepared.stats
        if prepared.max_ingestion_id is not None:
            ingestion = max(ingestion or prepared.max_ingestion_id, prepared.max_ingestion_id)
        if prepared.rows is not None:
            rows = prepared.rows
            yield rows.append_column(READ, pa.nulls(rows.num_rows, _READ_TYPE))
    counts = {
        "rows_read": stats.rows_read,
        "rows_skipped": stats.rows_skipped,
        "rows_rejected": stats.rows_rejected,
        "max_ingestion_id": ingestion,
    }
    arrays = [
        pa.nulls(1, pa.binary()),
        pa.nulls(1, TIMESTAMP_ARROW_TYPE),
        pa.nulls(1, TIMESTAMP_ARROW_TYPE),
        *(pa.nulls(1, to_arrow_type(f.value_type)) for f in table.features),
        pa.array([counts], _READ_TYPE),
    ]
    names = [KEY, EVENT, CREATED, *(f.name for f in table.features), READ]
    yield pa.RecordBatch.from_arrays(arrays, names=names)


def _in_range(
    batches: Iterator[pa.RecordBatch], start: datetime | None, end: datetime | None
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        event = batch.column(EVENT)
        if start is not None:
            batch = batch.filter(pc.greater_equal(event, pa.scalar(start, TIMESTAMP_ARROW_TYPE)))
            event = batch.column(EVENT)
        if end is not None:
            batch = batch.filter(pc.less(event, pa.scalar(end, TIMESTAMP_ARROW_TYPE)))
        yield batch


def _chunks(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Join consecutive batches into batches of at least ``rows`` rows (the last may be less)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pa.concat_batches(pending)
            pending, held = [], 0
    if held:
        yield pa.concat_batches(pending)


class NewestPerKey:
    """The last row of each run of equal keys, from batches sorted by key.

    Rows of one key may span batches: the last row of each batch is held back until the next
    batch shows whether its key goes on.
    """

    def __init__(self) -> None:
        self._held: pa.RecordBatch | None = None

    def push(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Return the last rows of the keys that end within ``batch`` (or before it)."""
        if self._held is not None:
            batch = pa.concat_batches([self._held, batch])
        if batch.num_rows == 0:
            return batch
        keys = batch.column(KEY)
        ends = pc.not_equal(keys.slice(0, batch.num_rows - 1), keys.slice(1))
        self._held = batch.slice(batch.num_rows - 1, 1)
        return batch.filter(pa.concat_arrays([ends, pa.array([False])]))

    def flush(self) -> pa.RecordBatch | None:
        """Return the last row held back (the end of the last key), if any."""
        held, self._held = self._held, None
        return held


@dataclass
class PartitionCounts:
    """What one writing partition did.

    Attributes:
        read: Rows read, rejected and superseded by the read tasks whose counts came to this
            partition (:data:`READ`).
        arrived: Prepared rows that came to it.
        kept: Of those, the newest of each key, sent to the store.
        written: Of those, the rows the store took.
        not_taken: Of those, the rows the store did not take (it held newer, or they expired).
        max_ingestion_id: The greatest ingestion id the read tasks saw.
        max_event_us: The newest event time sent to the store (microseconds).
    """

    read: JobStats = dataclasses.field(default_factory=JobStats)
    arrived: int = 0
    kept: int = 0
    written: int = 0
    not_taken: int = 0
    max_ingestion_id: str | None = None
    max_event_us: int | None = None

    def add_read(self, counts: Mapping[str, Any]) -> None:
        """Add one read task's counts (a :data:`READ` value)."""
        self.read += JobStats(
            rows_read=counts["rows_read"],
            rows_skipped=counts["rows_skipped"],
            rows_rejected=counts["rows_rejected"],
        )
        ingestion = counts["max_ingestion_id"]
        if ingestion is not None and (
            self.max_ingestion_id is None or ingestion > self.max_ingestion_id
        ):
            self.max_ingestion_id = ingestion

    def stats(self) -> JobStats:
        """Return the partition's share of the job's counts."""
        superseded = self.arrived - self.kept
        return self.read + JobStats(0, self.written, superseded + self.not_taken, 0)


def _write_partition(
    batches: Iterator[pa.RecordBatch],
    *,
    project: str,
    table: FeatureTable,
    online_store: Mapping[str, Any],
    mode: WriteMode,
    batch_size: int,
    progress: Accumulator[JobStats],
) -> Iterator[pa.RecordBatch]:
    """Keep the newest row of each key of one sorted partition, write them, yield the counts."""
    with executor_errors():
        store: OnlineStore = plugins.create(plugins.ONLINE_STORES, online_store)
        try:
            counts = write_rows(batches, store, project, table, mode, batch_size)
        finally:
            store.close()
    stats = counts.stats()
    progress.add(stats)
    row = {
        **dataclasses.asdict(stats),
        "max_ingestion_id": counts.max_ingestion_id,
        "max_event_us": counts.max_event_us,
    }
    yield pa.RecordBatch.from_pylist([row], schema=_COUNTS)


def write_rows(
    batches: Iterator[pa.RecordBatch],
    store: OnlineStore,
    project: str,
    table: FeatureTable,
    mode: WriteMode,
    batch_size: int,
) -> PartitionCounts:
    """Write the newest row of each key of one partition's prepared rows into ``store``.

    Args:
        batches: Rows of :func:`prepared_schema`, sorted by (key, event time, created time),
            null keys (the read tasks' counts) first.
        store: The online store (its newer-wins write).
        project: The table's project.
        table: The feature table.
        mode: How the store treats rows equal to what it holds.
        batch_size: Rows per store write.

    Returns:
        The partition's counts, with those of the read tasks that came to it.

    Raises:
        UnavailableError: If the store cannot be reached.
    """
    counts = PartitionCounts()
    newest = NewestPerKey()
    pending: list[pa.RecordBatch] = []
    columns = [KEY, EVENT, CREATED, *(f.name for f in table.features)]

    def write(rows: list[pa.RecordBatch]) -> None:
        batch = pa.concat_batches(rows).select(columns)
        counts.kept += batch.num_rows
        event = pc.max(batch.column(EVENT).cast(pa.int64())).as_py()
        if counts.max_event_us is None or event > counts.max_event_us:
            counts.max_event_us = event
        result = store.write(project, table, batch, mode=mode)
        counts.written += result.written
        counts.not_taken += result.skipped

    for batch in batches:
        keys = batch.column(KEY)
        if keys.null_count:  # the read tasks' counts
            for read in batch.filter(pc.is_null(keys)).column(READ).to_pylist():
                counts.add_read(read)
            batch = batch.filter(pc.is_valid(keys))
        counts.arrived += batch.num_rows
        winners = newest.push(batch)
        if winners.num_rows:
            pending.append(winners)
        if sum(b.num_rows for b in pending) >= batch_size:
            write(pending)
            pending = []
    last = newest.flush()
    if last is not None:
        pending.append(last)
    if pending:
        write(pending)
    return counts


__all__ = [
    "PREPARE_ROWS",
    "READ",
    "NewestPerKey",
    "Outcome",
    "PartitionCounts",
    "StatsParam",
    "load_table",
    "prepare_rows",
    "prepared_schema",
    "write_rows",
]
