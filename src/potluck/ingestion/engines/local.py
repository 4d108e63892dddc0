"""LocalEngine: runs ingestion jobs in threads of the current process.

Each job runs in its own (non-daemon) thread, so it completes even if the caller does not wait.
Its record in the registry is written when it starts, at most every ``progress_interval``
seconds while batches complete, and when it ends. A timer thread beside it writes the record
(its heartbeat, ``updated_at``) whenever a quarter of ``heartbeat_timeout`` has passed without a
write, also while a batch is slow; every write is preceded by a check for a cancel request from
another process, which stops the job at its next batch. Readers call a job whose heartbeat is
older than ``heartbeat_timeout`` lost (see :func:`potluck.ingestion.jobs.observed`); a runner that
finds its own heartbeat that old (its process was suspended, or the registry unreachable, that
long) stops the job and records it ``FAILED`` as lost too, so a job read as lost never comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from potluck.config import PluginConfig
from potluck.definitions.feature_table import FeatureTable
from potluck.ingestion.engines.base import (
    Engine,
    IngestionJob,
    JobContext,
    positive_duration,
    raise_if_failed,
    resolve_table,
)
from potluck.ingestion.jobs import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    STREAM_TO_ONLINE,
    Job,
    JobSpec,
    JobStatus,
    cancel_requested,
    lost_error,
    save_job,
    utc_now,
    watermark,
)
from potluck.ingestion.offline_to_online import Progress, run_offline_to_online
from potluck.online.base import WriteMode
from potluck.types import ValueType

logger = logging.getLogger(__name__)

HEARTBEATS_PER_TIMEOUT = 4
"""A running job's record is written at least this many times per ``heartbeat_timeout``."""


class LocalEngineConfig(PluginConfig):
    """Config of the local engine (``engine: {type: local}``)."""

    type: Literal["local"] = "local"
    """The plug-in's name."""

    progress_interval: float = Field(default=0.5, ge=0)
    """Seconds between two writes of a running job's record (its row counts) while batches
    complete, and between two checks for a cancel request; ``0`` writes after every batch."""

    heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT
    """How old a running job's heartbeat may get before every reader calls the job lost
    (``FAILED``); seconds, or text such as ``60s``, ``5m``. The record is rewritten at least
    four times per timeout."""

    @field_validator("heartbeat_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return positive_duration(value)


class LocalJob(IngestionJob):
    """A job running in a thread of this process, with a heartbeat thread beside it."""

    def __init__(
        self,
        job: Job,
        context: JobContext,
        table: FeatureTable,
        entity_types: dict[str, ValueType],
        config: LocalEngineConfig,
    ) -> None:
        self._job = job
        self._context = context
        self._table = table
        self._entity_types = entity_types
        self._interval = config.progress_interval
        self._beat_every = job.heartbeat_timeout.total_seconds() / HEARTBEATS_PER_TIMEOUT
        self._lock = threading.Lock()  # guards _job
        self._write_lock = threading.Lock()  # one registry write at a time, in order
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._ended = False  # the final record is written: no more writes
        self._last_write = time.monotonic()  # the record was written at submission
        self._last_heartbeat: datetime = job.updated_at or job.created_at
        self._lost_since: datetime | None = None
        self._thread = threading.Thread(target=self._run, name=f"potluck-job-{job.id}")
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"potluck-heartbeat-{job.id}", daemon=True
        )

    @property
    def id(self) -> str:
        """The job's id."""
        return self._job.id

    def record(self) -> Job:
        """Return the job's current record (live, without a registry round trip)."""
        with self._lock:
            return self._job

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job ends; see :meth:`IngestionJob.wait`."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} is still {self.record().status.value}")
        return raise_if_failed(self.record())

    def cancel(self) -> None:
        """Stop the job at its next batch."""
        self._cancel.set()

    def start(self) -> None:
        """Start the job's thread and its heartbeat."""
        self._thread.start()
        self._heartbeat.start()

    def _run(self) -> None:
        outcome: dict[str, Any]
        try:
            outcome = self._body()
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            logger.debug("job %s failed", self.id, exc_info=True)  # the record keeps the message
            outcome = {"status": JobStatus.FAILED, "error": message}
        try:
            self._write(final=True, finished_at=utc_now(), **outcome)
        finally:
            self._done.set()
            self._release()

    def _body(self) -> dict[str, Any]:
        """Do the job's work in its thread; return the final record's changes.

        The seam for other kinds of local jobs: a subclass overrides it (and
        :meth:`_release`) and keeps the record, heartbeat, cancel and lost-job handling of
        this class. This one copies the offline rows to the online store.

        Returns:
            The final ``status`` and the counts to record.

        Raises:
            Exception: Anything; the job then ends ``FAILED`` with its message.
        """
        spec = self._job.spec
        registry = self._context.registry
        source = self._context.offline_store.source_version(self._table)
        since = watermark(registry, spec, source) if spec.since_last else None
        self._write(
            status=JobStatus.RUNNING,
            started_at=utc_now(),
            since_version=since,
            source_id=source.source_id,
        )
        progress = run_offline_to_online(
            spec.project,
            self._table,
            self._entity_types,
            self._context.offline_store,
            self._context.online_store,
            start=spec.start,
            end=spec.end,
            source=source,
            since_version=since,
            mode=WriteMode.RELOAD if spec.full else WriteMode.NEWER,
            batch_size=spec.batch_size,
            on_progress=self._on_progress,
            cancelled=self._stopping,
        )
        status = JobStatus.CANCELLED if progress.cancelled else JobStatus.SUCCEEDED
        return {"status": status, **_fields(progress)}

    def _release(self) -> None:
        """Release what the job held, once its final record is written (nothing here)."""

    def _stopping(self) -> bool:
        return self._cancel.is_set() or self._lost_since is not None

    def _beat(self) -> None:
        while not self._done.wait(self._beat_every):
            if time.monotonic() - self._last_write >= self._beat_every:
                self._check_and_write()

    def _on_progress(self, progress: Progress) -> None:
        with self._lock:  # updated_at stays the last heartbeat written
            self._job = replace(self._job, **_fields(progress))
        if time.monotonic() - self._last_write >= self._interval:
            self._check_and_write()

    def _check_and_write(self) -> None:
        try:
            if cancel_requested(self._context.registry, self._job.spec.project, self.id):
                self._cancel.set()
        except Exception:
            logger.warning("checking job %s for a cancel request failed", self.id, exc_info=True)
        self._write()

    def _write(self, *, final: bool = False, **changes: Any) -> None:
        """Write the record with ``changes`` (``final``: the last write, the job has ended).

        If the last heartbeat written is older than the timeout, readers may have seen the job
        lost: the record is written ``FAILED`` (lost) instead, as the last write, and the job
        stops at its next batch, so it never comes back.
        """
        with self._write_lock:
            if self._ended:
                return
            silent = utc_now() - self._last_heartbeat
            if self._lost_since is None and silent > self._job.heartbeat_timeout:
                self._lost_since = self._last_heartbeat
                logger.warning("job %s: %s", self.id, lost_error(self._last_heartbeat))
            if self._lost_since is not None:
                final = True
                changes.update(status=JobStatus.FAILED, error=lost_error(self._lost_since))
                changes.setdefault("finished_at", utc_now())
            with self._lock:
                if self._cancel.is_set():
                    changes.setdefault("cancel_requested", True)
                self._job = self._job.evolve(**changes)
                job = self._job
            self._last_write = time.monotonic()
            self._ended = final
            try:
                save_job(self._context.registry, job)
            except Exception:
                logger.warning("writing the record of job %s failed", self.id, exc_info=True)
                return
            if job.updated_at is not None:
                self._last_heartbeat = job.updated_at


def _fields(progress: Progress) -> dict[str, Any]:
    return {
        "stats": progress.stats,
        "source_version": progress.source_version,
        "max_ingestion_id": progress.max_ingestion_id,
        "max_event_timestamp_us": progress.max_event_timestamp_us,
        "rows_total": progress.rows_total,
    }


class LocalEngine(Engine):
    """Runs jobs in threads of this process.

    Args:
        config: A :class:`LocalEngineConfig`.
    """

    config_class = LocalEngineConfig

    def __init__(self, config: LocalEngineConfig) -> None:
        super().__init__(config)

    def submit(self, spec: JobSpec, context: JobContext) -> LocalJob:
        """Record the job and start it in a thread; see :meth:`Engine.submit`.

        A ``stream_to_online`` job runs :mod:`potluck.ingestion.stream.job`'s consume loop and
        owns its context's registry and online store.
        """
        if spec.kind == STREAM_TO_ONLINE:
            from potluck.ingestion.stream.job import submit_stream_job

            return submit_stream_job(spec, context, self.config)
        table, entity_types = resolve_table(context, spec)
        job = Job.new(spec, self.config.type, heartbeat_timeout=self.config.heartbeat_timeout)
        save_job(context.registry, job)
        handle = LocalJob(job, context, table, entity_types, self.config)
        handle.start()
        return handle


__all__ = ["LocalEngine", "LocalEngineConfig", "LocalJob"]
