"""One offline-to-online load as a Spark DataFrame pipeline, with the local engine's semantics.

1. Executors read the pinned files with :func:`potluck.offline.spark.scan.scan_files`: every
   column as its declared type (``field_mapping`` applied), the created time from ingestion ids
   when the source has no created column, exactly as the local engine's reads.
2. Rows outside ``[start, end)`` are dropped.
3. Each row's entity key is encoded with :func:`potluck.online.codec.encode_entity_keys`; a row
   with a null entity value or event time gets a null key (it is rejected, as locally).
4. The rows are repartitioned by that key, so all rows of a key meet in one partition, and
   sorted within each partition by (key, event time, created time), nulls first.
5. Each partition keeps the last row of each key, the newest by (event time, created time) as
   the local engine keeps it, and writes them with the online store's own newer-wins write
   (``OnlineStore.write``; the store is built on the executor from its config), in batches.
   Local and Spark jobs therefore interleave safely on one table.
6. Each partition returns one row of counts (read, written, skipped, rejected, greatest
   ingestion id, newest event time written); the driver adds them up. No feature row reaches
   the driver. The same counts go into an accumulator as each partition ends: the running job's
   progress.

Counting is the local engine's, over the whole range as one batch: ``rows_skipped`` holds the
rows superseded by a newer row of their key and those the store did not take.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from potluck import plugins
from potluck.definitions.feature_table import FeatureTable
from potluck.ingestion.jobs import JobSpec, JobStats
from potluck.ingestion.spark_jobs.spec import TableLoad
from potluck.offline.base import CREATED_TIMESTAMP_COLUMN, EVENT_TIMESTAMP_COLUMN
from potluck.offline.base import INGESTION_ID_COLUMN as INGESTION
from potluck.offline.snapshots import batch_source_of
from potluck.offline.spark.scan import IngestionCreated, ScanColumn, scan_files, spark_type
from potluck.offline.spark.session import executor_errors
from potluck.online.base import ENTITY_KEY_COLUMN, OnlineStore, WriteMode
from potluck.online.codec import encode_entity_keys
from potluck.types import ValueType

try:
    from pyspark import Accumulator, AccumulatorParam
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as sf
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

_STATS = [f.name for f in dataclasses.fields(JobStats)]
_COUNTS = pa.schema(
    [
        *((name, pa.int64()) for name in _STATS),
        ("max_ingestion_id", pa.string()),
        ("max_event_us", pa.int64()),
    ]
)
"""The one row each partition returns."""
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
        Exception: What Spark raises; run it under
            :func:`potluck.offline.spark.session.spark_errors`, which turns an executor's
            :class:`~potluck.errors.PotluckError` (a file that does not fit, a store that cannot
            be reached) back into itself.
    """
    table = load.table
    rows = _scan(spark, load)
    if spec.start is not None:
        rows = rows.where(sf.col(EVENT) >= sf.lit(spec.start))
    if spec.end is not None:
        rows = rows.where(sf.col(EVENT) < sf.lit(spec.end))
    keyed_schema = st.StructType(
        [
            st.StructField(KEY, st.BinaryType()),
            st.StructField(EVENT, st.TimestampType()),
            st.StructField(CREATED, st.TimestampType()),
            st.StructField(INGESTION, st.StringType()),
            *(st.StructField(f.name, spark_type(f.value_type)) for f in table.features),
        ]
    )
    keyed = rows.mapInArrow(
        functools.partial(
            _with_keys, project=load.project, table=table, entity_types=dict(load.entity_types)
        ),
        keyed_schema,
    )
    spread = keyed.repartition(load.partitions, KEY) if load.partitions else keyed.repartition(KEY)
    write = functools.partial(
        _write_partition,
        project=load.project,
        table=table,
        online_store=dict(online_store),
        mode=WriteMode.RELOAD if spec.full else WriteMode.NEWER,
        batch_size=spec.batch_size,
        progress=progress,
    )
    counts = spread.sortWithinPartitions(KEY, EVENT, CREATED).mapInArrow(write, _COUNTS_DDL)
    parts = counts.collect()  # one row per partition
    stats = sum((JobStats(*(row[name] for name in _STATS)) for row in parts), JobStats())
    ingestion = [row["max_ingestion_id"] for row in parts if row["max_ingestion_id"] is not None]
    events = [row["max_event_us"] for row in parts if row["max_event_us"] is not None]
    return Outcome(stats, max(ingestion, default=None), max(events, default=None))


def _scan(spark: SparkSession, load: TableLoad) -> DataFrame:
    """Read the load's files as the local engine's range reads do (see the module)."""
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
    return scan_files(spark, load.files(), columns, table=table.name, ingestion_created=created)


def _with_keys(
    batches: Iterator[pa.RecordBatch],
    *,
    project: str,
    table: FeatureTable,
    entity_types: Mapping[str, ValueType],
) -> Iterator[pa.RecordBatch]:
    """Replace each batch's entity columns by the encoded key (null where it is rejected)."""
    with executor_errors():
        for batch in batches:
            yield keyed_batch(batch, project, table, entity_types)


def keyed_batch(
    batch: pa.RecordBatch,
    project: str,
    table: FeatureTable,
    entity_types: Mapping[str, ValueType],
) -> pa.RecordBatch:
    """Return ``batch`` with its entity columns replaced by ``entity_key``.

    Rows with a null entity value or a null event time get a null key: they are rejected, as
    :func:`potluck.ingestion.offline_to_online.prepare_batch` rejects them.

    Raises:
        ValidationError: If a key cannot be encoded (a NaN float key), as locally.
    """
    checked = [batch.column(name) for name in (*table.entities, EVENT)]
    valid = functools.reduce(pc.and_, [pc.is_valid(column) for column in checked])
    kept = batch if all(c.null_count == 0 for c in checked) else batch.filter(valid)
    keys = encode_entity_keys(
        project, table.name, {e: kept.column(e) for e in table.entities}, entity_types
    )
    if kept is not batch:
        keys = pc.replace_with_mask(pa.nulls(batch.num_rows, pa.binary()), valid, keys)
    names = [EVENT, CREATED, INGESTION, *(f.name for f in table.features)]
    return pa.RecordBatch.from_arrays(
        [keys, *(batch.column(name) for name in names)], names=[KEY, *names]
    )


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
class _Counts:
    """One partition's counts."""

    read: int = 0
    rejected: int = 0
    kept: int = 0
    written: int = 0
    not_taken: int = 0
    max_ingestion_id: str | None = None
    max_event_us: int | None = None

    def stats(self) -> JobStats:
        valid = self.read - self.rejected
        skipped = valid - self.kept + self.not_taken
        return JobStats(self.read, self.written, skipped, self.rejected)


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
            counts = _write_rows(batches, store, project, table, mode, batch_size)
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


def _write_rows(
    batches: Iterator[pa.RecordBatch],
    store: OnlineStore,
    project: str,
    table: FeatureTable,
    mode: WriteMode,
    batch_size: int,
) -> _Counts:
    counts = _Counts()
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
        counts.read += batch.num_rows
        ingestion = pc.max(batch.column(INGESTION)).as_py()
        if ingestion is not None and (
            counts.max_ingestion_id is None or ingestion > counts.max_ingestion_id
        ):
            counts.max_ingestion_id = ingestion
        keys = batch.column(KEY)
        if keys.null_count:
            counts.rejected += keys.null_count
            batch = batch.filter(pc.is_valid(keys))
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


__all__ = ["NewestPerKey", "Outcome", "StatsParam", "keyed_batch", "load_table"]
