"""LocalEngine: runs ingestion jobs in threads of the current process.

Each job runs in its own (non-daemon) thread, so it completes even if the caller does not wait.
Its record in the registry is written when it starts, at most every ``progress_interval``
seconds while it runs (checking first for a cancel request from another process, which stops the
job at its next batch), and when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

from potluck.config import PluginConfig
from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE
from potluck.errors import ValidationError
from potluck.ingestion.engines.base import Engine, IngestionJob, JobContext, raise_if_failed
from potluck.ingestion.jobs import (
    Job,
    JobSpec,
    JobStatus,
    cancel_requested,
    save_job,
    utc_now,
    watermark,
)
from potluck.ingestion.offline_to_online import Progress, run_offline_to_online
from potluck.online.base import WriteMode
from potluck.types import ValueType

logger = logging.getLogger(__name__)


class LocalEngineConfig(PluginConfig):
    """Config of the local engine (``engine: {type: local}``)."""

    type: Literal["local"] = "local"
    """The plug-in's name."""

    progress_interval: float = 0.5
    """Seconds between two writes of a running job's record (and checks for a cancel)."""


class LocalJob(IngestionJob):
    """A job running in a thread of this process."""

    def __init__(
        self,
        job: Job,
        context: JobContext,
        table: FeatureTable,
        entity_types: dict[str, ValueType],
        progress_interval: float,
    ) -> None:
        self._job = job
        self._context = context
        self._table = table
        self._entity_types = entity_types
        self._interval = progress_interval
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._last_save = 0.0
        self._thread = threading.Thread(target=self._run, name=f"potluck-job-{job.id}")

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
        """Start the job's thread."""
        self._thread.start()

    def _run(self) -> None:
        spec = self._job.spec
        registry = self._context.registry
        try:
            since = watermark(registry, spec) if spec.since_last else None
            self._update(status=JobStatus.RUNNING, started_at=utc_now(), since_version=since)
            progress = run_offline_to_online(
                spec.project,
                self._table,
                self._entity_types,
                self._context.offline_store,
                self._context.online_store,
                start=spec.start,
                end=spec.end,
                since_version=since,
                mode=WriteMode.RELOAD if spec.full else WriteMode.NEWER,
                batch_size=spec.batch_size,
                on_progress=self._on_progress,
                cancelled=self._cancel.is_set,
            )
            status = JobStatus.CANCELLED if progress.cancelled else JobStatus.SUCCEEDED
            self._update(status=status, finished_at=utc_now(), **_fields(progress))
        except Exception as exc:
            logger.warning("job %s failed", self.id, exc_info=True)
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._update(status=JobStatus.FAILED, finished_at=utc_now(), error=message)
        finally:
            self._done.set()

    def _on_progress(self, progress: Progress) -> None:
        with self._lock:
            self._job = self._job.evolve(**_fields(progress))
        if time.monotonic() - self._last_save < self._interval:
            return
        try:
            if cancel_requested(self._context.registry, self._job.spec.project, self.id):
                self._cancel.set()
        except Exception:
            logger.warning("checking job %s for a cancel request failed", self.id, exc_info=True)
        self._update()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            if self._cancel.is_set():
                changes.setdefault("cancel_requested", True)
            self._job = self._job.evolve(**changes)
            job = self._job
        self._last_save = time.monotonic()
        try:
            save_job(self._context.registry, job)
        except Exception:
            logger.warning("writing the record of job %s failed", self.id, exc_info=True)


def _fields(progress: Progress) -> dict[str, Any]:
    return {
        "stats": progress.stats,
        "source_version": progress.source_version,
        "max_ingestion_id": progress.max_ingestion_id,
        "max_event_timestamp_us": progress.max_event_timestamp_us,
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
        """Record the job and start it in a thread; see :meth:`Engine.submit`."""
        table, entity_types = _resolve(context, spec)
        job = Job.new(spec, self.config.type)
        save_job(context.registry, job)
        handle = LocalJob(job, context, table, entity_types, self.config.progress_interval)
        handle.start()
        return handle


def _resolve(context: JobContext, spec: JobSpec) -> tuple[FeatureTable, dict[str, ValueType]]:
    table = context.registry.get(spec.project, KIND_FEATURE_TABLE, spec.table)
    if not isinstance(table, FeatureTable):
        raise ValidationError(f"{spec.table!r} is not a feature table", field="table")
    if table.batch_source is None:
        raise ValidationError(
            f"feature table {table.name!r} has no batch_source, so there is nothing to copy to "
            "the online store",
            field="table",
        )
    types: dict[str, ValueType] = {}
    for name in table.entities:
        entity = context.registry.get(spec.project, KIND_ENTITY, name)
        if isinstance(entity, Entity):
            types[name] = entity.value_type
    return table, types


__all__ = ["LocalEngine", "LocalEngineConfig", "LocalJob"]
