"""Stream-to-online jobs on the local engine: the consume loop in a thread, with a job record.

The job is a :class:`~potluck.ingestion.engines.local.LocalJob` whose body (its ``_body``
seam) is :func:`potluck.ingestion.stream.kafka.run_stream_to_online` instead of an
offline-to-online copy, so its record, heartbeat, cancel requests and lost-job rule are those
of every local job. It runs until it is stopped (``cancel``, a cancel request from another
process, SIGTERM or Ctrl-C through the CLI) and then ends ``CANCELLED``, after its last
micro-batch is written and committed; it ends ``FAILED`` only on an error retrying cannot fix
(a topic that does not exist, a protobuf class that cannot be imported, a store that refuses
its settings).

A stream job owns the online store and the registry of its :class:`JobContext` (the client
gives it its own): it closes them when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import replace
from typing import Any

from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE
from potluck.errors import AlreadyExistsError, ValidationError
from potluck.ingestion.engines.base import JobContext
from potluck.ingestion.engines.local import LocalEngineConfig, LocalJob
from potluck.ingestion.jobs import (
    Job,
    JobSpec,
    JobStatus,
    cancel_requested,
    save_job,
    utc_now,
)
from potluck.ingestion.stream.batch import StreamTable
from potluck.ingestion.stream.brokers import (
    check_stream_settings,
    default_group_id,
    import_confluent_kafka,
)
from potluck.ingestion.stream.kafka import StreamProgress, StreamSettings, run_stream_to_online
from potluck.ingestion.stream.offline_sink import OfflineSink
from potluck.ingestion.stream.running import group_of, refuse_second_job

logger = logging.getLogger(__name__)

RECORD_WAIT = 1.0
"""Seconds the record-writing thread waits for a change before it looks whether the job ended."""


class LocalStreamJob(LocalJob):
    """A stream-to-online job consuming in a thread of this process.

    Args:
        job: Its record, as submitted.
        context: The registry and stores it uses (it closes the registry and online store).
        stream: The table it feeds.
        entities: The table's entities (for the offline sink).
        config: The local engine's config.
    """

    def __init__(
        self,
        job: Job,
        context: JobContext,
        stream: StreamTable,
        entities: dict[str, Entity],
        config: LocalEngineConfig,
    ) -> None:
        super().__init__(job, context, stream.table, dict(stream.entity_types), config)
        self._stream = stream
        self._entities = entities
        self._changed = threading.Event()
        self._recorder = threading.Thread(
            target=self._record, name=f"potluck-record-{job.id}", daemon=True
        )

    def start(self) -> None:
        """Start the job's thread, its heartbeat, and the thread that writes its record."""
        super().start()
        self._recorder.start()

    def _body(self) -> dict[str, Any]:
        """Consume until stopped; return the final record's changes (``CANCELLED`` and counts)."""
        spec = self._job.spec
        self._write(status=JobStatus.RUNNING, started_at=utc_now())
        settings = StreamSettings(
            group_id=spec.group_id or default_group_id(spec.project, spec.table),
            batch_size=spec.batch_size,
            batch_interval=spec.batch_interval,
            kafka_config=dict(self._context.kafka_config),
        )
        sink = None
        if self._stream.source.offline_sink:
            sink = OfflineSink(self._stream, self._entities, self._context.offline_store.root)
        progress = run_stream_to_online(
            self._stream,
            self._context.online_store,
            settings,
            sink=sink,
            on_progress=self._on_stream_progress,
            stopping=self._stopping,
        )
        return {"status": JobStatus.CANCELLED, **_fields(progress)}

    def _release(self) -> None:
        """Stop the record's threads and close the registry and the online store it owns."""
        self._heartbeat.join()
        self._recorder.join()
        _close(self._context)

    def _on_stream_progress(self, progress: StreamProgress) -> None:
        with self._lock:  # updated_at stays the last heartbeat written
            self._job = replace(self._job, **_fields(progress))
        self._changed.set()

    def _record(self) -> None:
        """Write the record when it changed, at most once per ``progress_interval``.

        On a thread of its own, so the consume loop never waits for the registry. While nothing
        changes (a quiet topic, a store it keeps retrying), it still looks for a cancel request
        every :data:`RECORD_WAIT` seconds.
        """
        while not self._done.is_set():
            changed = self._changed.wait(RECORD_WAIT)
            if self._done.is_set():
                return
            if not changed:
                self._look_for_cancel()
                continue
            self._changed.clear()
            self._check_and_write()
            self._done.wait(self._interval)

    def _look_for_cancel(self) -> None:
        spec = self._job.spec
        try:
            if cancel_requested(self._context.registry, spec.project, self.id):
                self._cancel.set()
        except Exception:
            logger.warning("checking job %s for a cancel request failed", self.id, exc_info=True)


def _fields(progress: StreamProgress) -> dict[str, Any]:
    return {
        "stats": progress.stats,
        "bad_messages": dict(progress.bad_messages),
        "max_event_timestamp_us": progress.max_event_timestamp_us,
        "warning": progress.warning,
        "partitions": progress.partitions,
    }


def submit_stream_job(
    spec: JobSpec, context: JobContext, config: LocalEngineConfig
) -> LocalStreamJob:
    """Record a stream-to-online job and start it in a thread; return its handle.

    Args:
        spec: A ``stream_to_online`` spec.
        context: Its registry and stores; the job owns (and closes) the registry and the online
            store.
        config: The local engine's config (heartbeat timeout, record interval).

    Raises:
        NotFoundError: If the table or one of its entities does not exist.
        ValidationError: If the table has no stream source.
        AlreadyExistsError: If a Spark stream job of the table and group is running (local
            jobs of one group share its partitions; see
            :mod:`potluck.ingestion.stream.running`).
        DefinitionError: If its protobuf class cannot be imported.
        ValidationError: If librdkafka refuses a Kafka property (nothing is recorded).
        PluginDependencyError: If confluent-kafka (or fastavro, for Avro) is missing.
    """
    try:
        job, stream, entities = _record(spec, context, config)
    except BaseException:
        _close(context)  # no job owns them
        raise
    handle = LocalStreamJob(job, context, stream, entities, config)
    handle.start()
    return handle


def _record(
    spec: JobSpec, context: JobContext, config: LocalEngineConfig
) -> tuple[Job, StreamTable, dict[str, Entity]]:
    """Check the job can run, and record it ``PENDING``; see :func:`submit_stream_job`."""
    registry = context.registry
    table = registry.get(spec.project, KIND_FEATURE_TABLE, spec.table)
    if not isinstance(table, FeatureTable):
        raise ValidationError(f"{spec.table!r} is not a feature table", field="table")
    entities: dict[str, Entity] = {}
    for name in table.entities:
        entity = registry.get(spec.project, KIND_ENTITY, name)
        if isinstance(entity, Entity):
            entities[name] = entity
    stream = StreamTable(spec.project, table, {n: e.value_type for n, e in entities.items()})
    stream.decoder  # noqa: B018 - fails now, not in the job, if the format cannot be read here
    import_confluent_kafka()
    check_stream_settings(stream, group_of(spec), context.kafka_config)
    refuse_second_job(registry, spec, config.type)
    job = Job.new(spec, config.type, heartbeat_timeout=config.heartbeat_timeout)
    save_job(registry, job)
    try:  # again: of two jobs submitted at the same moment, the later one yields
        refuse_second_job(registry, spec, config.type, own_id=job.id)
    except AlreadyExistsError as exc:
        save_job(
            registry, job.evolve(status=JobStatus.FAILED, error=exc.message, finished_at=utc_now())
        )
        raise
    return job, stream, entities


def _close(context: JobContext) -> None:
    for part in (context.online_store, context.registry):
        with contextlib.suppress(Exception):
            part.close()


__all__ = ["RECORD_WAIT", "LocalStreamJob", "submit_stream_job"]
