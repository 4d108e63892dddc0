"""The PySpark entry point of stream-to-online jobs: ``spark-submit stream_to_online.py SPEC``.

The Spark engine launches it with the path of a job spec (:mod:`.spec`) holding one
:class:`~.spec.StreamLoad`. The driver claims the job's record (:class:`~.records.DriverRecords`),
starts the session and runs a Structured Streaming query: ``readStream.format("kafka")``
subscribed to the stream source's topic (``startingOffsets`` earliest for a new checkpoint, the
checkpoint's offsets after a restart), ``maxOffsetsPerTrigger`` messages per micro-batch, one
micro-batch every ``trigger_interval`` seconds, and a ``foreachBatch`` that handles each
micro-batch on the executors (no message reaches the driver), each Kafka partition in a task:

1. :func:`~potluck.ingestion.stream.batch.decode_batch` decodes and validates the messages, as
   the local engine's loop does (the same reasons for bad messages);
2. bad messages go to the source's dead-letter topic (when it names one), acknowledged before
   the task ends;
3. :func:`~potluck.ingestion.stream.batch.online_rows` encodes the keys and the online store's
   own newer-wins write stores them (the store is built on the executor from its config);
4. with ``offline_sink``, the good rows are appended to the batch source
   (:class:`~potluck.ingestion.stream.offline_sink.OfflineSink`, exactly once per offset);
5. the task returns one row of counts, which the driver adds to the job's record (read,
   written, skipped, rejected, bad messages per reason, newest event time written).

Spark commits the micro-batch's offsets to the checkpoint only after ``foreachBatch`` returned,
so every message is handled at least once; a replay writes nothing new (newer wins).

A cancel request stops the query at the driver's next check (``progress_interval``); the job
then ends ``CANCELLED`` and the process exits 0. A micro-batch that fails (a store that cannot
be reached once Spark's task retries are spent) fails the query, and the job ends ``FAILED`` with
a one-line error; restarting it resumes from the checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from potluck import plugins
from potluck.definitions.entity import Entity
from potluck.errors import AlreadyExistsError, ConflictError, PotluckError, UnavailableError
from potluck.ingestion.jobs import JobStats, JobStatus, utc_now
from potluck.ingestion.spark_jobs.records import DriverRecords, failure_text
from potluck.ingestion.spark_jobs.spec import ApplicationSpec, StreamLoad, read_spec
from potluck.ingestion.stream.batch import (
    RAW_SCHEMA,
    StreamTable,
    decode_batch,
    newest_event_us,
    online_rows,
)
from potluck.ingestion.stream.brokers import retrying
from potluck.ingestion.stream.dead_letter import DeadLetters
from potluck.ingestion.stream.offline_sink import OfflineSink
from potluck.ingestion.stream.running import refuse_second_job
from potluck.offline.spark.session import executor_errors, spark_errors, start_session
from potluck.online.base import OnlineStore, WriteResult

try:
    from pyspark.sql import DataFrame, SparkSession
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark engine needs pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

logger = logging.getLogger("potluck.spark_job")

_COUNTS = pa.schema(
    [
        ("rows_read", pa.int64()),
        ("rows_written", pa.int64()),
        ("rows_skipped", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("bad_messages", pa.string()),
        ("max_event_us", pa.int64()),
    ]
)
"""The one row each task returns (``bad_messages``: JSON, count per reason)."""
STORE_RETRY_SECONDS = 60.0
"""How long a task retries an online store, batch source or dead-letter topic it cannot reach
before it fails (a task cannot report a warning while it runs; see the module's docstring)."""
_COUNTS_DDL = (
    "rows_read long, rows_written long, rows_skipped long, rows_rejected long, "
    "bad_messages string, max_event_us long"
)


class StreamProgress:
    """What the query has done so far, added up on the driver micro-batch by micro-batch."""

    def __init__(self) -> None:
        self.stats = JobStats()
        self.bad_messages: Counter[str] = Counter()
        self.max_event_us: int | None = None

    def add(self, rows: Sequence[Any]) -> None:
        """Add the count rows of one micro-batch (one per task)."""
        for row in rows:
            self.stats = self.stats + JobStats(
                row["rows_read"], row["rows_written"], row["rows_skipped"], row["rows_rejected"]
            )
            self.bad_messages.update(json.loads(row["bad_messages"]))
            newest = row["max_event_us"]
            if newest is not None and (self.max_event_us is None or newest > self.max_event_us):
                self.max_event_us = newest

    def fields(self) -> dict[str, Any]:
        """The job record's fields this progress sets."""
        return {
            "stats": self.stats,
            "bad_messages": dict(self.bad_messages),
            "max_event_timestamp_us": self.max_event_us,
        }


def main(argv: Sequence[str]) -> int:
    """Run the streaming application whose spec file is ``argv[0]``; return the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec = read_spec(argv[0])
    stream = spec.stream
    if stream is None:
        raise SystemExit(f"{argv[0]} holds no stream-to-online job")
    registry = spec.registry.open()
    records = DriverRecords(
        registry,
        [(stream.project, stream.job_id)],
        spec.progress_interval,
        timedelta(seconds=spec.heartbeat_timeout),
    )
    try:
        records.claim()
        try:  # again here: of two jobs submitted at the same moment, the later one yields
            job_spec = records.job(stream.job_id).spec
            refuse_second_job(registry, job_spec, "spark", own_id=stream.job_id)
        except AlreadyExistsError as exc:
            records.fail_all(exc.message)
            return 1
        return _run(spec, stream, records)
    finally:
        records.close()
        registry.close()


def _run(spec: ApplicationSpec, load: StreamLoad, records: DriverRecords) -> int:
    job_id = load.job_id
    if not records.active(job_id):
        return 0
    try:
        spark = start_session(spec.settings, spec.name)
    except PotluckError as exc:
        records.fail_all(exc.message)
        return 1
    progress = StreamProgress()
    try:
        application = spark.sparkContext.applicationId
        records.update(
            job_id, status=JobStatus.RUNNING, started_at=utc_now(), application_id=application
        )
        if records.stopping(job_id):
            records.finish(job_id, status=JobStatus.CANCELLED)
            return 0
        with spark_errors(f"streaming feature table {load.table.name!r}"):
            store: OnlineStore = plugins.create(plugins.ONLINE_STORES, spec.online_store)
            try:
                store.ensure_table(load.project, load.table)
            finally:
                store.close()
            query = _start_query(spark, spec, load, records, progress)
            records.follow(job_id, progress=lambda: progress.stats, stop=_stopper(query))
            logger.info("job %s: streaming %s", job_id, load.table.name)
            query.awaitTermination()
    except Exception as exc:  # noqa: BLE001 - the record says why
        if records.stopping(job_id):
            records.finish(job_id, status=JobStatus.CANCELLED, **progress.fields())
            return 0
        records.finish(
            job_id, status=JobStatus.FAILED, error=failure_text(exc), **progress.fields()
        )
        logger.warning("job %s failed", job_id, exc_info=True)
        return 1
    finally:
        spark.stop()
    records.finish(job_id, status=JobStatus.CANCELLED, **progress.fields())
    logger.info("job %s: stopped after %s", job_id, progress.stats)
    return 0


def _start_query(
    spark: SparkSession,
    spec: ApplicationSpec,
    load: StreamLoad,
    records: DriverRecords,
    progress: StreamProgress,
) -> Any:
    """Start the streaming query (see the module's docstring); return it."""
    stream = StreamTable(load.project, load.table, dict(load.entity_types))
    source = stream.source
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", source.bootstrap_servers)
        .option("subscribe", source.topic)
        .option("kafka.isolation.level", "read_committed")
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(load.max_offsets_per_trigger))
    )
    for name, value in load.kafka_config.items():
        reader = reader.option(f"kafka.{name}", value)
    messages = reader.load().select(*RAW_SCHEMA.names)
    handle = functools.partial(
        _handle_partition,
        stream=stream,
        online_store=dict(spec.online_store),
        offline_root=load.offline_root,
        kafka_config=dict(load.kafka_config),
    )

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        rows = batch.mapInArrow(handle, _COUNTS_DDL).collect()  # one row per task
        progress.add(rows)
        records.update(load.job_id, **progress.fields())
        logger.info("job %s: micro-batch %d: %s", load.job_id, batch_id, progress.stats)

    return (
        messages.writeStream.foreachBatch(each_batch)
        .option("checkpointLocation", load.checkpoint_location)
        .trigger(processingTime=f"{load.trigger_interval} seconds")
        .queryName(f"potluck-{load.project}-{load.table.name}")
        .start()
    )


def _stopper(query: Any) -> Callable[[], None]:
    """Return a call that stops ``query`` from a thread of its own, once, without waiting.

    ``query.stop()`` waits for the micro-batch in hand, whose end writes the record: called
    under the records' lock, it would wait for itself.
    """
    started = threading.Event()

    def stop() -> None:
        if not started.is_set():
            started.set()
            threading.Thread(target=query.stop, name="potluck-stop-query", daemon=True).start()

    return stop


def _handle_partition(
    batches: Iterator[pa.RecordBatch],
    *,
    stream: StreamTable,
    online_store: Mapping[str, Any],
    offline_root: str | None,
    kafka_config: Mapping[str, str],
) -> Iterator[pa.RecordBatch]:
    """Decode, dead-letter, write and sink one task's messages; yield its counts."""
    with executor_errors():
        chunks = list(batches)
        raw = pa.Table.from_batches(chunks) if chunks else RAW_SCHEMA.empty_table()
        yield _handle(raw, stream, online_store, offline_root, kafka_config)


def _handle(
    raw: pa.Table,
    stream: StreamTable,
    online_store: Mapping[str, Any],
    offline_root: str | None,
    kafka_config: Mapping[str, str],
    *,
    retry_seconds: float = STORE_RETRY_SECONDS,
) -> pa.RecordBatch:
    """Handle one task's messages (steps 1-4 of the module's docstring); return its counts.

    Args:
        raw: The task's messages (:data:`RAW_SCHEMA`).
        stream: The table they feed.
        online_store: The online store's config section.
        offline_root: The folder a relative batch source path is resolved against.
        kafka_config: librdkafka properties of the dead-letter producer.
        retry_seconds: How long an online store, batch source or dead-letter topic that
            cannot be reached is retried (with a growing wait) before the task fails.

    Raises:
        PotluckError: If the online store or the batch source fails for good, or is still
            unreachable after ``retry_seconds`` (the task fails, and Spark retries it up to
            ``spark.task.maxFailures`` times before the query fails).
    """
    decoded = decode_batch(raw, stream, now=utc_now())
    dead = None
    if stream.source.dead_letter_topic is not None and decoded.bad.num_rows:
        dead = DeadLetters(stream, kafka_config)
        dead.send(decoded.bad)
    result = WriteResult(0, 0)
    if decoded.rows.num_rows:
        store: OnlineStore = plugins.create(plugins.ONLINE_STORES, online_store)
        rows = online_rows(decoded.rows, stream)
        written: list[WriteResult] = []
        try:
            _retry_for(
                retry_seconds,
                lambda: written.append(store.write(stream.project, stream.table, rows)),
            )
        finally:
            store.close()
        result = written[-1]
        if stream.source.offline_sink:
            entities = {n: Entity(name=n, value_type=t) for n, t in stream.entity_types.items()}
            root = None if offline_root is None else Path(offline_root)
            sink = OfflineSink(stream, entities, root)
            _retry_for(
                retry_seconds,
                lambda: sink.append(decoded.rows),
                retry_on=(UnavailableError, ConflictError),
            )
    if dead is not None:
        try:
            _retry_for(retry_seconds, dead.flush)
        finally:
            dead.close()
    row = {
        "rows_read": raw.num_rows,
        "rows_written": result.written,
        "rows_skipped": result.skipped,
        "rows_rejected": decoded.bad.num_rows,
        "bad_messages": json.dumps(decoded.counts, sort_keys=True),
        "max_event_us": newest_event_us(decoded.rows),
    }
    return pa.RecordBatch.from_pylist([row], schema=_COUNTS)


def _retry_for(
    seconds: float,
    action: Callable[[], Any],
    retry_on: tuple[type[Exception], ...] = (UnavailableError,),
) -> None:
    """Run ``action``, retrying failures of ``retry_on`` for up to ``seconds``; then raise.

    Raises:
        Exception: The last failure, once ``seconds`` have passed without a success.
    """
    deadline = time.monotonic() + seconds
    failures: list[Exception] = []

    def note(exc: Exception) -> None:
        failures.append(exc)
        logger.warning("%s; retrying", getattr(exc, "message", None) or exc)

    if not retrying(
        action, stopping=lambda: time.monotonic() >= deadline, on_retry=note, retry_on=retry_on
    ):
        raise failures[-1]


if __name__ == "__main__":
    # Run as a script by spark-submit: import the package's module, so the functions shipped to
    # executors are pickled by reference to importable modules.
    from potluck.ingestion.spark_jobs.stream_to_online import main as _main

    sys.exit(_main(sys.argv[1:]))
