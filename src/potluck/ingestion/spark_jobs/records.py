"""The job records of a Spark application, kept by its driver: claims, heartbeats, cancels.

The engine writes each job's record (``PENDING``) before it launches the application; from the
driver's first write on, the driver is the records' only writer. It rewrites every record that
has not ended at least every ``interval`` seconds and at least four times per the job's
``heartbeat_timeout`` (its heartbeat, with the live row counts of the running job), and checks
each job for a cancel request before each write. The lost rule is the local engine's: when the
driver finds a job's own last heartbeat older than its timeout (the driver was suspended, or the
registry unreachable, that long), readers may have read the job lost, so it is written
``FAILED`` (lost) and stopped, never brought back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from potluck.errors import PotluckError
from potluck.ingestion.jobs import (
    Job,
    JobStats,
    JobStatus,
    cancel_requested,
    last_heartbeat,
    lost_error,
    save_job,
    utc_now,
)
from potluck.registry.base import Registry

logger = logging.getLogger(__name__)

HEARTBEATS_PER_TIMEOUT = 4
"""A record is rewritten at least this many times per its job's ``heartbeat_timeout``."""


@dataclass
class _Tracked:
    """One job as the driver keeps it."""

    job: Job
    heartbeat: datetime
    ended: bool = False
    cancel: bool = False
    lost: bool = False
    progress: Callable[[], JobStats] | None = None
    stop: Callable[[], None] | None = None


class DriverRecords:
    """The records of the jobs one driver runs.

    Args:
        registry: Where the records are.
        jobs: ``(project, job id)`` of each job, as the engine recorded them.
        interval: Seconds between two rewrites of a record that has not ended.
        heartbeat_timeout: The jobs' heartbeat timeout from the claim on (the engine recorded
            a start timeout, which covers the application's start).
    """

    def __init__(
        self,
        registry: Registry,
        jobs: Sequence[tuple[str, str]],
        interval: float,
        heartbeat_timeout: timedelta,
    ) -> None:
        self._registry = registry
        self._ids = [job_id for _, job_id in jobs]
        self._projects = {job_id: project for project, job_id in jobs}
        self._beat_every = min(interval, heartbeat_timeout.total_seconds() / HEARTBEATS_PER_TIMEOUT)
        self._timeout = heartbeat_timeout
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.RLock()  # guards _tracked and orders the writes
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="potluck-heartbeat", daemon=True)

    def claim(self) -> None:
        """Take the records over (one write each, setting the heartbeat timeout); start beating.

        A record that has ended already is left alone; one whose heartbeat is older than its
        (start) timeout, as the engine recorded it, is written ``FAILED`` (lost).
        """
        with self._lock:
            for job_id in self._ids:
                record = self._registry.get_job(self._projects[job_id], job_id)
                job = Job.from_record(record)
                tracked = _Tracked(job, last_heartbeat(job), ended=job.status.is_terminal)
                self._tracked[job_id] = tracked
                self._write(job_id, {"heartbeat_timeout": self._timeout})
        self._thread.start()

    def job(self, job_id: str) -> Job:
        """Return the job's record as the driver last wrote it."""
        with self._lock:
            return self._tracked[job_id].job

    def active(self, job_id: str) -> bool:
        """Whether the job has not ended."""
        with self._lock:
            return not self._tracked[job_id].ended

    def stopping(self, job_id: str) -> bool:
        """Whether the job must stop: it was asked to, or it has been read as lost."""
        with self._lock:
            tracked = self._tracked[job_id]
            return tracked.cancel or tracked.lost

    def check(self, job_id: str) -> None:
        """Check for a cancel request now and write the record."""
        with self._lock:
            self._check_and_write(job_id)

    def follow(
        self, job_id: str, progress: Callable[[], JobStats], stop: Callable[[], None]
    ) -> None:
        """Write ``progress()`` with each heartbeat; call ``stop()`` while the job must stop.

        ``stop()`` is called at every heartbeat from the moment the job must stop until it
        ends: Spark cancels only the jobs that run when asked, and a query may start more.
        """
        with self._lock:
            tracked = self._tracked[job_id]
            tracked.progress, tracked.stop = progress, stop

    def update(self, job_id: str, **changes: Any) -> None:
        """Write the record with ``changes`` (ignored once it has ended)."""
        with self._lock:
            self._write(job_id, changes)

    def update_all(self, **changes: Any) -> None:
        """Write every record that has not ended with ``changes``."""
        with self._lock:
            for job_id in self._ids:
                self._write(job_id, dict(changes))

    def finish(self, job_id: str, **changes: Any) -> None:
        """Write the record's last write, with ``changes`` and ``finished_at``."""
        with self._lock:
            changes.setdefault("finished_at", utc_now())
            self._write(job_id, changes, final=True)

    def fail_all(self, error: str) -> None:
        """End every record that has not ended ``FAILED`` with ``error``."""
        with self._lock:
            for job_id in self._ids:
                self._write(job_id, {"status": JobStatus.FAILED, "error": error}, final=True)

    def close(self) -> None:
        """Stop the heartbeat."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._closed.wait(self._beat_every):
            with self._lock:
                for job_id in self._ids:
                    if not self._tracked[job_id].ended:
                        self._check_and_write(job_id)

    def _check_and_write(self, job_id: str) -> None:
        tracked = self._tracked[job_id]
        if tracked.ended:
            return
        try:
            if not tracked.cancel and cancel_requested(
                self._registry, self._projects[job_id], job_id
            ):
                tracked.cancel = True
        except Exception:  # noqa: BLE001 - the next beat checks again
            logger.warning("checking job %s for a cancel request failed", job_id, exc_info=True)
        self._stop(tracked)
        changes: dict[str, Any] = {}
        if tracked.progress is not None:
            changes["stats"] = tracked.progress()
        self._write(job_id, changes)

    def _stop(self, tracked: _Tracked) -> None:
        if (tracked.cancel or tracked.lost) and tracked.stop is not None:
            try:
                tracked.stop()
            except Exception:  # noqa: BLE001 - the next beat tries again
                logger.warning("stopping job %s failed", tracked.job.id, exc_info=True)

    def _write(self, job_id: str, changes: dict[str, Any], *, final: bool = False) -> None:
        tracked = self._tracked[job_id]
        if tracked.ended:
            return
        if not tracked.lost and utc_now() - tracked.heartbeat > tracked.job.heartbeat_timeout:
            logger.warning("job %s: %s", job_id, lost_error(tracked.heartbeat))
            tracked.lost = True
            self._stop(tracked)
        if tracked.lost:
            final = True
            changes = {
                "status": JobStatus.FAILED,
                "error": lost_error(tracked.heartbeat),
                "finished_at": changes.get("finished_at", utc_now()),
            }
        if tracked.cancel:
            changes.setdefault("cancel_requested", True)
        job = tracked.job.evolve(**changes)
        tracked.job = job
        tracked.ended = final
        try:
            save_job(self._registry, job)
        except Exception:  # noqa: BLE001 - the next write tries again (or the job reads lost)
            logger.warning("writing the record of job %s failed", job_id, exc_info=True)
            return
        if job.updated_at is not None:
            tracked.heartbeat = job.updated_at


def failure_text(exc: BaseException) -> str:
    """The error of a failed job: a potluck error's message, else the exception's first line."""
    if isinstance(exc, PotluckError):
        return exc.message
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


__all__ = ["HEARTBEATS_PER_TIMEOUT", "DriverRecords", "failure_text"]
