"""The offline-to-online job body: copy the latest row per key of a source range to the store.

It reads the table's batch source at one version over ``[start, end)`` (optionally only rows
committed after an earlier version) in Arrow batches (small ones joined up to the batch size),
keeps the newest row per entity key within each batch (the store's newer-wins makes the order
across batches irrelevant), encodes keys with ``online.codec`` and writes each batch while the
next one is read and prepared. Memory is bounded by the batch size, not by the range.

A batch is counted (:class:`Progress`) once its write has ended, all of its rows at once, so
every count reported, also of a job that stops early, adds up:
``rows_read == rows_written + rows_skipped + rows_rejected``. A key is written at most once per
batch, so ``rows_written`` never exceeds the sum over batches of the distinct keys each batch
holds; a key whose rows fall in several batches may be written once in each (when each is newer
than what the store holds by then), so ``rows_written`` may exceed the number of distinct keys
in the range.
Cancellation is checked between batches. Before it reads, it counts the rows of the files it will
read from their metadata (the total of its progress; see
:func:`potluck.offline.commits.count_rows`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.feature_table import FeatureTable
from potluck.errors import PotluckError
from potluck.ingestion.jobs import JobStats
from potluck.offline.base import OfflineStore, SourceVersion
from potluck.offline.commits import count_rows
from potluck.offline.files import resolve_path
from potluck.online.base import (
    CREATED_TIMESTAMP_COLUMN,
    ENTITY_KEY_COLUMN,
    EVENT_TIMESTAMP_COLUMN,
    OnlineStore,
    WriteMode,
    WriteResult,
)
from potluck.online.codec import encode_entity_keys
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

INGESTION_ID_COLUMN = "ingestion_id"

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the job has done so far.

    Attributes:
        stats: Rows read, written, skipped and rejected, of the batches whose write has ended.
        source_id: Which batch source was read (see :class:`~potluck.offline.base.SourceVersion`).
        source_version: The version of the batch source read (``None``: a plain folder).
        max_ingestion_id: The greatest ``ingestion_id`` of those batches.
        max_event_timestamp_us: The newest event time they sent to the store (microseconds).
        cancelled: Whether the job stopped early because it was asked to.
        rows_total: How many rows the files read hold within the range, counted from their
            metadata before reading (an upper bound where the range cuts through a row group);
            ``None`` until counted, or if they could not be counted.
    """

    stats: JobStats = field(default_factory=JobStats)
    source_id: str | None = None
    source_version: int | None = None
    max_ingestion_id: str | None = None
    max_event_timestamp_us: int | None = None
    cancelled: bool = False
    rows_total: int | None = None


@dataclass(frozen=True)
class PreparedBatch:
    """One source batch made ready for the store.

    Attributes:
        rows: The rows to write (one per key), or ``None`` if no row survived.
        stats: Rows read, rejected, and skipped as superseded within the batch.
        max_ingestion_id: The greatest ``ingestion_id`` in the batch.
        max_event_timestamp_us: The newest event time among ``rows``.
    """

    rows: pa.RecordBatch | None
    stats: JobStats
    max_ingestion_id: str | None
    max_event_timestamp_us: int | None


def prepare_batch(
    project: str,
    table: FeatureTable,
    entity_types: Mapping[str, ValueType],
    batch: pa.RecordBatch,
) -> PreparedBatch:
    """Reject unwritable rows, keep the newest row per key, and encode the keys.

    Rows with a null entity value or a null event time are rejected. Of the rows sharing a key,
    the one with the greatest ``(event_timestamp, created_timestamp)`` is kept (a null created
    time sorts first).
    """
    read = batch.num_rows
    ingestion_ids = batch.column(INGESTION_ID_COLUMN)
    max_ingestion = pc.max(ingestion_ids).as_py() if read else None
    checked = (*table.entities, EVENT_TIMESTAMP_COLUMN)
    if any(batch.column(name).null_count for name in checked):
        batch = batch.filter(
            functools.reduce(pc.and_, [pc.is_valid(batch.column(name)) for name in checked])
        )
    rejected = read - batch.num_rows
    if batch.num_rows == 0:
        return PreparedBatch(None, JobStats(read, 0, 0, rejected), max_ingestion, None)
    keys = encode_entity_keys(
        project,
        table.name,
        {e: batch.column(e).cast(to_arrow_type(entity_types[e])) for e in table.entities},
        entity_types,
    )
    columns: dict[str, pa.Array] = {
        ENTITY_KEY_COLUMN: keys,
        EVENT_TIMESTAMP_COLUMN: batch.column(EVENT_TIMESTAMP_COLUMN).cast(TIMESTAMP_ARROW_TYPE),
        CREATED_TIMESTAMP_COLUMN: batch.column(CREATED_TIMESTAMP_COLUMN).cast(TIMESTAMP_ARROW_TYPE),
    }
    for feature in table.features:
        columns[feature.name] = batch.column(feature.name).cast(to_arrow_type(feature.value_type))
    rows = pa.table(columns)
    order = pc.sort_indices(
        rows,
        sort_keys=[
            (ENTITY_KEY_COLUMN, "ascending", "at_start"),
            (EVENT_TIMESTAMP_COLUMN, "ascending", "at_start"),
            (CREATED_TIMESTAMP_COLUMN, "ascending", "at_start"),
        ],
    )
    rows = rows.take(order)
    sorted_keys = rows.column(ENTITY_KEY_COLUMN).combine_chunks()
    last_of_key = pa.concat_arrays(
        [pc.not_equal(sorted_keys[:-1], sorted_keys[1:]), pa.array([True])]
    )
    newest = rows.filter(last_of_key).combine_chunks()
    out = newest.to_batches()[0]
    max_event = pc.max(out.column(EVENT_TIMESTAMP_COLUMN).cast(pa.int64())).as_py()
    skipped = batch.num_rows - out.num_rows
    return PreparedBatch(out, JobStats(read, 0, skipped, rejected), max_ingestion, max_event)


def run_offline_to_online(
    project: str,
    table: FeatureTable,
    entity_types: Mapping[str, ValueType],
    offline_store: OfflineStore,
    online_store: OnlineStore,
    *,
    start: datetime | None,
    end: datetime | None,
    source: SourceVersion | None = None,
    since_version: int | None = None,
    mode: WriteMode = WriteMode.NEWER,
    batch_size: int = 65_536,
    on_progress: Callable[[Progress], None] = lambda _: None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Progress:
    """Copy the newest row per key of ``table``'s source range into ``online_store``.

    Args:
        project: The table's project.
        table: The feature table.
        entity_types: The value type of each of the table's entities.
        offline_store: Reads the batch source.
        online_store: Receives the rows (newer wins).
        start: Lower bound on event time (inclusive), or ``None``.
        end: Upper bound on event time (exclusive), or ``None``.
        source: The source and version to read (from ``offline_store.source_version``, which
            is asked when ``None``).
        since_version: Read only rows committed after this source version.
        mode: How the online store treats rows equal to what it holds (``WriteMode.RELOAD``
            rewrites them: ``ingest-online --full``).
        batch_size: Rows per batch read.
        on_progress: Called once the rows to read are counted (``rows_total``), then after each
            batch is written, with the progress so far.
        cancelled: Checked before each batch; when it returns true the job stops.

    Returns:
        What the job did; ``cancelled`` says whether it stopped early, ``source_version``
        which version of the source it read (pinned when it started).

    Raises:
        UnavailableError: If a store cannot be reached.
    """
    source = offline_store.source_version(table) if source is None else source
    progress = Progress(source_id=source.source_id, source_version=source.version)
    progress.rows_total = rows_to_read(
        table, offline_store, progress.source_version, since_version, start, end
    )
    on_progress(progress)
    online_store.ensure_table(project, table)
    batches = offline_store.read_range(
        table,
        start,
        end,
        version=progress.source_version,
        since_version=since_version,
        batch_size=batch_size,
    )
    writing: _BatchWrite | None = None  # the previous batch, written while this one is read
    with _closing(batches):
        try:
            for batch in _rebatch(batches, batch_size):
                if cancelled():
                    progress.cancelled = True
                    break
                prepared = prepare_batch(project, table, entity_types, batch)
                if writing is not None:
                    _add(progress, writing.batch, writing.result())
                    on_progress(progress)
                    writing = None
                if prepared.rows is None:
                    _add(progress, prepared, WriteResult(written=0, skipped=0))
                else:
                    write = functools.partial(online_store.write, project, table, mode=mode)
                    writing = _BatchWrite(prepared, prepared.rows, write)
            if writing is not None:
                _add(progress, writing.batch, writing.result())
        finally:
            if writing is not None:  # also when an error ends the job: the write ends first
                writing.join()
    on_progress(progress)
    return progress


def rows_to_read(
    table: FeatureTable,
    offline_store: OfflineStore,
    version: int | None,
    since_version: int | None,
    start: datetime | None,
    end: datetime | None,
) -> int | None:
    """Count the rows a job reads from ``table``'s batch source, from file metadata only.

    Args:
        table: The feature table (its batch source is read).
        offline_store: The store that reads it (relative source paths resolve against its root).
        version: The pinned source version.
        since_version: Only files committed after this version.
        start: Inclusive lower bound on event time, or ``None``.
        end: Exclusive upper bound on event time, or ``None``.

    Returns:
        The count (see :func:`potluck.offline.commits.count_rows`), or ``None`` if the source
        cannot be counted (the read itself then reports what is wrong).
    """
    source = table.batch_source
    if source is None:
        return None
    try:
        return count_rows(
            resolve_path(source.path, offline_store.root),
            version=version,
            since_version=since_version,
            partition_column=source.date_partition_column,
            event_column=source.event_timestamp_column,
            start=start,
            end=end,
        )
    except (PotluckError, OSError, pa.ArrowException) as exc:
        logger.warning("cannot count the rows of %s's batch source: %s", table.name, exc)
        return None


def _add(progress: Progress, prepared: PreparedBatch, result: WriteResult) -> None:
    """Count one batch whose write has ended: rows read, rejected, skipped, written."""
    written = JobStats(0, result.written, result.skipped, 0)
    progress.stats = progress.stats + prepared.stats + written
    if prepared.max_ingestion_id is not None and (
        progress.max_ingestion_id is None or prepared.max_ingestion_id > progress.max_ingestion_id
    ):
        progress.max_ingestion_id = prepared.max_ingestion_id
    if prepared.max_event_timestamp_us is not None:
        progress.max_event_timestamp_us = max(
            prepared.max_event_timestamp_us, progress.max_event_timestamp_us or -1
        )


class _BatchWrite:
    """One prepared batch being written to the online store on its own thread.

    The job reads and prepares the next batch meanwhile. A plain thread, not a
    ``concurrent.futures`` pool: a pool refuses new work once the interpreter starts to exit,
    and a job must run to its end after the program's main thread has returned (the job's own
    thread is not a daemon, so the interpreter waits for it).

    Args:
        batch: The prepared batch, counted once its write has ended.
        rows: Its rows (``batch.rows``), the ones written.
        write: Writes rows to the store and says what it did.
    """

    def __init__(
        self,
        batch: PreparedBatch,
        rows: pa.RecordBatch,
        write: Callable[[pa.RecordBatch], WriteResult],
    ) -> None:
        self.batch = batch
        self._outcome: Future[WriteResult] = Future()
        self._thread = threading.Thread(target=self._run, args=(write, rows), name="potluck-write")
        self._thread.start()

    def _run(self, write: Callable[[pa.RecordBatch], WriteResult], rows: pa.RecordBatch) -> None:
        try:
            self._outcome.set_result(write(rows))
        except BaseException as exc:  # raised in the job's thread by result()
            self._outcome.set_exception(exc)

    def join(self) -> None:
        """Wait until the write has ended (done or failed)."""
        self._thread.join()

    def result(self) -> WriteResult:
        """Wait until the write has ended and return what the store did.

        Raises:
            Exception: Whatever the store's ``write`` raised.
        """
        return self._outcome.result()


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Cut the reader's batches, whatever their sizes, into batches of exactly ``size`` rows.

    The last batch may be smaller. Readers may yield many small batches; joined, the
    newest-row-per-key step sees as many rows of a key at once as memory allows.
    """
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= size:
            joined = pa.Table.from_batches(pending)
            yield _one_batch(joined.slice(0, size))
            rest = joined.slice(size)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield _one_batch(pa.Table.from_batches(pending))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return table.combine_chunks().to_batches()[0]


@contextlib.contextmanager
def _closing(batches: Iterator[pa.RecordBatch]) -> Iterator[None]:
    try:
        yield
    finally:
        close = getattr(batches, "close", None)
        if callable(close):
            close()


__all__ = [
    "PreparedBatch",
    "Progress",
    "prepare_batch",
    "rows_to_read",
    "run_offline_to_online",
]
