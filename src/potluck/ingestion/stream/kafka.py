"""The local engine's stream-to-online loop: a confluent-kafka consumer in micro-batches.

Each turn takes up to ``batch_size`` messages: what queued meanwhile, plus what arrives within
``batch_interval`` seconds once there is a first one; it decodes them
(:func:`potluck.ingestion.stream.batch.decode_batch`), queues the bad ones for the
dead-letter topic, writes the good ones to the online store (newer wins), appends them to the
batch source when the stream source has ``offline_sink``, waits for the dead-letter topic, and
only then marks the batch's offsets for commit (committed every ``COMMIT_INTERVAL``, when the job
stops, and before partitions move). So every message is handled at least once; a replay writes
nothing new (newer wins; the offline sink skips offsets it has), and each key ends at its newest
value.

Failures that retrying can fix (brokers, the online store or the batch source unreachable) are
retried with a growing wait, reported through ``warning``, and never skip a message: the batch is
handled again until it goes through. Stopping (``stopping()`` turns true: a cancel, SIGTERM,
Ctrl-C) ends the loop after the batch in hand is written and committed; if the batch cannot be
written, the loop ends without committing it, so a restart reads it again.

Several processes with one ``group_id`` share the topic's partitions; when partitions move, the
offsets of the batches written are committed before they go.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from potluck.errors import ConflictError, UnavailableError
from potluck.ingestion.jobs import JobStats, utc_now
from potluck.ingestion.stream.batch import (
    StreamTable,
    decode_batch,
    newest_event_us,
    online_rows,
)
from potluck.ingestion.stream.brokers import (
    check_topics,
    consumer_config,
    import_confluent_kafka,
    new_client,
    retrying,
    unavailable,
)
from potluck.ingestion.stream.dead_letter import DeadLetters
from potluck.ingestion.stream.offline_sink import OfflineSink
from potluck.online.base import OnlineStore, WriteResult

logger = logging.getLogger(__name__)

IDLE_WAIT = 0.5
"""Seconds a turn waits for a first message before it looks again whether to stop."""
PROBE_INTERVAL = 2.0
"""Seconds between two checks that unreachable brokers are back, while no message comes."""
COMMIT_INTERVAL = 0.5
"""Seconds between two commits of offsets while the job runs (it also commits when it stops and
before partitions move)."""
KAFKA_TIMESTAMP = pa.timestamp("ms", tz="UTC")
"""Kafka timestamps: milliseconds since the epoch."""


@dataclass(frozen=True)
class StreamSettings:
    """How a stream job consumes.

    Attributes:
        group_id: The consumer group.
        batch_size: The most messages in one micro-batch.
        batch_interval: How long, in seconds, a micro-batch gathers messages once it has a
            first one (unless it fills first).
        kafka_config: librdkafka properties over the defaults (security, timeouts).
    """

    group_id: str
    batch_size: int
    batch_interval: float
    kafka_config: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StreamProgress:
    """What a stream job has done so far (batches whose offsets are committed or pending).

    Attributes:
        stats: Messages read, written, skipped (not newer than the stored value) and rejected
            (bad); ``rows_read == rows_written + rows_skipped + rows_rejected``.
        bad_messages: Bad messages per reason.
        max_event_timestamp_us: The newest event time written, microseconds since the epoch.
        partitions: The partitions the consumer holds.
        warning: Why the job is stuck right now (it keeps retrying), else ``None``.
        appended: Rows the offline sink appended to the batch source.
    """

    stats: JobStats = field(default_factory=JobStats)
    bad_messages: Counter[str] = field(default_factory=Counter)
    max_event_timestamp_us: int | None = None
    partitions: tuple[int, ...] = ()
    warning: str | None = None
    appended: int = 0


def run_stream_to_online(
    stream: StreamTable,
    online_store: OnlineStore,
    settings: StreamSettings,
    *,
    sink: OfflineSink | None = None,
    on_progress: Callable[[StreamProgress], None] = lambda _: None,
    stopping: Callable[[], bool] = lambda: False,
) -> StreamProgress:
    """Consume ``stream``'s topic into ``online_store`` until ``stopping()`` is true.

    Args:
        stream: The table and its stream source.
        online_store: Receives the rows (newer wins).
        settings: The consumer group, the micro-batch bounds and librdkafka properties.
        sink: Appends each micro-batch to the batch source (``offline_sink``), or ``None``.
        on_progress: Called after each micro-batch and whenever ``warning`` changes.
        stopping: Checked between micro-batches and while retrying.

    Returns:
        What the job did.

    Raises:
        ValidationError: If the topic or the dead-letter topic does not exist.
        PluginDependencyError: If confluent-kafka (or fastavro, for Avro) is missing.
        PotluckError: If the online store or the batch source fails for good.
    """
    loop = _Loop(stream, online_store, settings, sink, on_progress, stopping)
    try:
        loop.run()
    finally:
        loop.close()
    return loop.progress


class _Loop:
    def __init__(
        self,
        stream: StreamTable,
        online_store: OnlineStore,
        settings: StreamSettings,
        sink: OfflineSink | None,
        on_progress: Callable[[StreamProgress], None],
        stopping: Callable[[], bool],
    ) -> None:
        self._kafka = import_confluent_kafka()
        self._stream = stream
        self._store = online_store
        self._settings = settings
        self._sink = sink
        self._on_progress = on_progress
        self._stopping = stopping
        self.progress = StreamProgress()
        self._pending: dict[int, int] = {}  # partition -> next offset to commit
        self._sent: dict[int, int] = {}  # the pending offsets of the commit in flight
        self._next_commit = 0.0
        self._next_probe = 0.0
        config = consumer_config(stream, settings.group_id, settings.kafka_config)
        self._consumer = new_client(
            stream,
            "Consumer",
            {**config, "error_cb": self._client_error, "on_commit": self._committed},
        )
        self._dead: DeadLetters | None = None
        if stream.source.dead_letter_topic is not None:
            self._dead = DeadLetters(stream, settings.kafka_config)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        stream = self._stream
        if not self._retry(lambda: check_topics(self._consumer, stream)):
            return
        if not self._retry(lambda: self._store.ensure_table(stream.project, stream.table)):
            return
        self._warn(None)
        self._consumer.subscribe(
            [stream.source.topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        while not self._stopping():
            raw = self._raw(self._next_batch())
            if raw.num_rows:
                if not self._handle(raw):
                    return  # stopped before the batch was written: it stays uncommitted
                self._warn(None)
            elif self.progress.warning is not None:
                self._probe()
            self._handled_up_to_position()
            self._commit()
            self._on_progress(self.progress)

    def _next_batch(self) -> list[Any]:
        """The next micro-batch: up to ``batch_size`` messages, gathered for ``batch_interval``.

        It waits up to :data:`IDLE_WAIT` for a first message, then up to ``batch_interval``
        for the batch to fill; messages that queued while the previous batch was written go in
        at once, so a busy stream is never held back and a quiet one costs few turns.
        """
        size, consumer = self._settings.batch_size, self._consumer
        messages: list[Any] = consumer.consume(size, 0)
        if not messages:
            messages = consumer.consume(1, IDLE_WAIT)
        if messages and len(messages) < size:
            messages += consumer.consume(size - len(messages), self._settings.batch_interval)
        return messages

    def _handle(self, raw: pa.Table) -> bool:
        """Write one micro-batch everywhere it goes; ``False`` if stopped before it was."""
        decoded = decode_batch(raw, self._stream, now=utc_now())
        if self._dead is not None and decoded.bad.num_rows:
            self._dead.send(decoded.bad)
        result = WriteResult(0, 0)
        if decoded.rows.num_rows:
            rows = online_rows(decoded.rows, self._stream)
            written: list[WriteResult] = []

            def write() -> None:
                written.append(self._store.write(self._stream.project, self._stream.table, rows))

            if not self._retry(write):
                return False
            result = written[-1]
            sink = self._sink
            if sink is not None:
                appended: list[int] = []
                if not self._retry(
                    lambda: appended.append(sink.append(decoded.rows)),
                    retry_on=(UnavailableError, ConflictError),
                ):
                    return False
                self.progress.appended += appended[-1]
        dead = self._dead
        if dead is not None and decoded.bad.num_rows and not self._retry(dead.flush):
            return False
        progress = self.progress
        read, bad = raw.num_rows, decoded.bad.num_rows
        progress.stats = progress.stats + JobStats(read, result.written, result.skipped, bad)
        progress.bad_messages.update(decoded.counts)
        newest = newest_event_us(decoded.rows)
        if newest is not None:
            progress.max_event_timestamp_us = max(newest, progress.max_event_timestamp_us or newest)
        return True

    def _handled_up_to_position(self) -> None:
        """Mark every message consumed so far handled: the consumer's position is to commit.

        The position, not the last offset + 1: it is past transaction markers too, which come
        after a transaction's last message (and may come in a turn without messages).
        """
        for position in self._consumer.position(self._consumer.assignment()):
            if position.offset >= 0 and position.offset != self._pending.get(position.partition):
                self._pending[position.partition] = position.offset

    def _raw(self, messages: list[Any]) -> pa.Table:
        """The messages of one ``consume`` as a raw table; error events are handled here."""
        if any(m.error() is not None for m in messages):
            for message in messages:
                if message.error() is not None:
                    self._consume_error(message.error())
            messages = [m for m in messages if m.error() is None]
        stamps = [m.timestamp() for m in messages]
        missing = self._kafka.TIMESTAMP_NOT_AVAILABLE
        return pa.table(
            {
                "key": pa.array([m.key() for m in messages], pa.binary()),
                "value": pa.array([m.value() for m in messages], pa.binary()),
                "topic": pa.array([m.topic() for m in messages], pa.string()),
                "partition": pa.array([m.partition() for m in messages], pa.int32()),
                "offset": pa.array([m.offset() for m in messages], pa.int64()),
                "timestamp": pa.array(
                    [None if kind == missing else stamp for kind, stamp in stamps], pa.int64()
                ).cast(KAFKA_TIMESTAMP),
            }
        )

    # ---- offsets -------------------------------------------------------------------------------

    def _commit(self) -> None:
        """Commit the pending offsets in the background (``_committed`` hears how it went).

        At most once per :data:`COMMIT_INTERVAL`: a commit is a request to the brokers, and
        committing later only means a restart may read a little more again.
        """
        now = time.monotonic()
        if not self._pending or self._pending == self._sent or now < self._next_commit:
            return
        self._next_commit = now + COMMIT_INTERVAL
        self._sent = dict(self._pending)
        try:
            self._consumer.commit(offsets=self._offsets(self._sent), asynchronous=True)
        except self._kafka.KafkaException as exc:
            self._sent = {}
            self._warn(unavailable(self._stream, exc).message + "; committing again later")

    def _commit_now(self, partitions: list[int] | None = None) -> None:
        """Commit the pending offsets (of ``partitions`` only) and wait; keep them on failure."""
        chosen = {p: o for p, o in self._pending.items() if partitions is None or p in partitions}
        if not chosen:
            return
        try:
            done = self._consumer.commit(offsets=self._offsets(chosen), asynchronous=False)
        except self._kafka.KafkaException as exc:
            logger.warning("%s", unavailable(self._stream, exc).message)
            return
        self._committed(None, done or [])

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        if error is not None:
            self._sent = {}
            self._warn(unavailable(self._stream, error).message + "; committing again later")
            return
        for item in partitions:
            if item.error is None and self._pending.get(item.partition) == item.offset:
                del self._pending[item.partition]

    def _offsets(self, chosen: Mapping[int, int]) -> list[Any]:
        topic = self._stream.source.topic
        return [self._kafka.TopicPartition(topic, p, o) for p, o in sorted(chosen.items())]

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        held = set(self.progress.partitions) | {p.partition for p in partitions}
        self.progress.partitions = tuple(sorted(held))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        gone = [p.partition for p in partitions]
        self._commit_now(gone)  # the batches written are committed before the partitions move
        self._drop(gone)

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._drop([p.partition for p in partitions])

    def _drop(self, gone: list[int]) -> None:
        for partition in gone:
            self._pending.pop(partition, None)
        self.progress.partitions = tuple(p for p in self.progress.partitions if p not in gone)

    # ---- problems ------------------------------------------------------------------------------

    def _consume_error(self, error: Any) -> None:
        codes = (
            self._kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
            self._kafka.KafkaError._UNKNOWN_TOPIC,
        )
        if error.code() in codes:
            # A broker that restarts may say so for a moment: ask again (raises if it is gone).
            with contextlib.suppress(UnavailableError):
                check_topics(self._consumer, self._stream)
        if error.fatal():
            raise unavailable(self._stream, error)
        self._client_error(error)

    def _client_error(self, error: Any) -> None:
        logger.debug("kafka: %s", error)
        self._warn(unavailable(self._stream, error).message + "; retrying")

    def _probe(self) -> None:
        """Clear a warning once the brokers answer again (no message may come to say so)."""
        now = time.monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + PROBE_INTERVAL
        try:
            self._consumer.list_topics(self._stream.source.topic, timeout=1.0)
        except self._kafka.KafkaException:
            return
        self._warn(None)

    def _retry(
        self,
        action: Callable[[], Any],
        retry_on: tuple[type[Exception], ...] = (UnavailableError,),
    ) -> bool:
        def report(exc: Exception) -> None:
            message = getattr(exc, "message", None) or str(exc)
            self._warn(f"{message}; retrying")
            self._commit()  # what earlier batches wrote, while this one waits

        return retrying(action, stopping=self._stopping, on_retry=report, retry_on=retry_on)

    def _warn(self, warning: str | None) -> None:
        if warning == self.progress.warning:
            return
        if warning is not None:
            logger.warning("stream job of %s: %s", self._stream.table.name, warning)
        self.progress.warning = warning
        self._on_progress(self.progress)

    def close(self) -> None:
        """Commit what was written, leave the group, and let the clients go."""
        try:
            self._commit_now()
        finally:
            self._consumer.close()
            if self._dead is not None:
                self._dead.close()


__all__ = [
    "COMMIT_INTERVAL",
    "IDLE_WAIT",
    "PROBE_INTERVAL",
    "StreamProgress",
    "StreamSettings",
    "run_stream_to_online",
]
