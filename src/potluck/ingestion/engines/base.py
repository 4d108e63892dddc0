"""The Engine interface: where ingestion jobs run, and the handle a submitted job returns.

An engine takes a :class:`~potluck.ingestion.jobs.JobSpec` and the parts the job needs
(:class:`JobContext`) and returns an :class:`IngestionJob`. Every engine keeps the job's record
in the registry up to date, so :class:`RecordedJob` can follow any job from any process, and
rewrites it while the job runs (its heartbeat, ``updated_at``) well within the record's
``heartbeat_timeout``: readers call a job whose heartbeat is older lost and read it ``FAILED``
(see :func:`potluck.ingestion.jobs.observed`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from pydantic_core import PydanticCustomError

from potluck.config import PluginConfig
from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, parse_duration
from potluck.errors import DefinitionError, JobError, ValidationError
from potluck.ingestion.jobs import Job, JobSpec, JobStats, JobStatus, load_job, request_cancel
from potluck.offline.base import OfflineStore
from potluck.online.base import OnlineStore
from potluck.registry.base import Registry
from potluck.types import ValueType

POLL_INTERVAL = 0.2
"""Seconds between two reads of a job's record while waiting on it from another process."""


@dataclass(frozen=True)
class JobContext:
    """What a job works with.

    Attributes:
        registry: Where the table's definition is read and the job's record is kept.
        offline_store: Reads the table's batch source.
        online_store: Receives the latest values.
        kafka_config: Stream jobs: librdkafka properties for their Kafka clients (security
            settings, ``session.timeout.ms`` ...), over potluck's defaults; never recorded.
    """

    registry: Registry
    offline_store: OfflineStore
    online_store: OnlineStore
    kafka_config: Mapping[str, str] = field(default_factory=dict)


class IngestionJob(ABC):
    """A submitted job: its id, live status and row counts, and ways to wait or cancel."""

    @property
    @abstractmethod
    def id(self) -> str:
        """The job's id."""

    @abstractmethod
    def record(self) -> Job:
        """Return the job's current record."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job ends (or ``timeout`` seconds pass) and return its record.

        Raises:
            JobError: If the job failed; the message carries its error.
            TimeoutError: If it is still running after ``timeout`` seconds.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Ask the job to stop; it stops at its next batch and ends ``CANCELLED``."""

    @property
    def status(self) -> JobStatus:
        """Where the job is now."""
        return self.record().status

    @property
    def stats(self) -> JobStats:
        """Rows read, written, skipped and rejected so far."""
        return self.record().stats

    def __repr__(self) -> str:
        job = self.record()
        name = type(self).__name__
        return f"{name}(id={job.id!r}, table={job.spec.table!r}, status={job.status.value})"


def raise_if_failed(job: Job) -> Job:
    """Return ``job``, or raise :class:`JobError` if it failed.

    Raises:
        JobError: If the job's status is ``FAILED``; the message carries its error.
    """
    if job.status is JobStatus.FAILED:
        raise JobError(f"job {job.id} failed: {job.error}", job_id=job.id)
    return job


class RecordedJob(IngestionJob):
    """A job followed through its record in the registry (it may run in another process).

    Args:
        registry: Where the job's record is.
        project: The job's project.
        job_id: The job's id.
    """

    def __init__(self, registry: Registry, project: str, job_id: str) -> None:
        self._registry = registry
        self._project = project
        self._id = job_id

    @property
    def id(self) -> str:
        """The job's id."""
        return self._id

    def record(self) -> Job:
        """Return the job's record as stored now."""
        return load_job(self._registry, self._project, self._id)

    def wait(self, timeout: float | None = None) -> Job:
        """Poll the record until the job ends; see :meth:`IngestionJob.wait`.

        A lost job (its heartbeat is older than its timeout) has ended ``FAILED``: this raises
        :class:`JobError` with the ``lost: ...`` error.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.record()
            if job.status.is_terminal:
                return raise_if_failed(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self._id} is still {job.status.value}")
            time.sleep(POLL_INTERVAL)

    def cancel(self) -> None:
        """Write a cancel request; the process running the job stops it at its next batch.

        A job that has ended (or is lost) is left as it is: nothing is written, but the caller
        must still be allowed to cancel the project's jobs (``run_jobs`` through Core).

        Raises:
            PermissionDeniedError: If the caller may not cancel the project's jobs, whatever
                the job's state.
        """
        if self.record().status.is_terminal:
            self._registry.authorize_job_control(self._project)
        else:
            request_cancel(self._registry, self._project, self._id)


def positive_duration(value: object) -> timedelta:
    """Read an engine setting that is a positive duration (``60``, ``"60s"``, ``"5m"``, ``"1h"``).

    Engines' config classes call it from a ``mode="before"`` field validator.

    Raises:
        PydanticCustomError: If ``value`` is not a duration or is not positive; settings turn
            it into the one-line error that names the setting.
    """
    try:
        duration = parse_duration(value, "timeout")
    except DefinitionError:
        raise PydanticCustomError(
            "duration",
            f"{value!r} is not a duration; use seconds or text such as 60s, 5m, 1h",
        ) from None
    if duration <= timedelta(0):
        raise PydanticCustomError(
            "duration", f"must be a positive duration such as 60s, got {value!r}"
        )
    return duration


def resolve_table(
    context: JobContext, spec: JobSpec, *, batch_source: bool = True
) -> tuple[FeatureTable, dict[str, ValueType]]:
    """Return the feature table ``spec`` names and the value type of each of its entities.

    Args:
        context: Where the registry is.
        spec: The job.
        batch_source: Whether the job reads the table's batch source (offline-to-online jobs),
            so a table without one is refused.

    Raises:
        NotFoundError: If the table does not exist.
        ValidationError: If it is not a feature table, or has no batch source when one is needed.
    """
    table = context.registry.get(spec.project, KIND_FEATURE_TABLE, spec.table)
    if not isinstance(table, FeatureTable):
        raise ValidationError(f"{spec.table!r} is not a feature table", field="table")
    if batch_source and table.batch_source is None:
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


class Engine(ABC):
    """Runs ingestion jobs. Built from its config by ``potluck.plugins.create(ENGINES, ...)``."""

    config_class: ClassVar[type[PluginConfig]]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def submit(self, spec: JobSpec, context: JobContext) -> IngestionJob:
        """Record and start a job; return at once with its handle.

        Raises:
            NotFoundError: If the spec's feature table does not exist.
            ValidationError: If the table has no batch source.
        """


__all__ = [
    "POLL_INTERVAL",
    "Engine",
    "IngestionJob",
    "JobContext",
    "RecordedJob",
    "raise_if_failed",
    "resolve_table",
]
