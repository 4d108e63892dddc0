"""Following the jobs of one Spark application from the process that submitted it.

Once launched, the application's driver is the only writer of its jobs' records, with two
exceptions, both taken by the submitting process when the driver can no longer write:

- The application ended before its driver took a job (its record is still exactly as the engine
  wrote it: spark-submit could not start the JVM, the driver's interpreter lacks potluck...):
  the job is written ``FAILED`` with the launcher's status and the last line of the log. A job
  the driver took and left unfinished (the driver was killed) is not touched: it reads
  ``FAILED`` (lost) once its heartbeat is older than its timeout.
- A cancel through a :class:`SparkJob` handle writes the cancel request, which the driver acts
  on at once; if every job of the application has been cancelled (or has ended) and the driver
  has not stopped within ``cancel_timeout`` seconds (it hangs), the launcher kills the
  application and the jobs left are written ``CANCELLED``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence

from potluck.errors import NotFoundError
from potluck.ingestion.engines.base import POLL_INTERVAL, RecordedJob
from potluck.ingestion.jobs import Job, JobStatus, load_job, save_job, utc_now
from potluck.ingestion.launchers.base import Launcher, LaunchHandle, LaunchStatus
from potluck.offline.spark.logs import last_error_line
from potluck.registry.base import Registry

logger = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5
"""Seconds between two checks of whether the application's process still runs."""


class SparkApplicationJobs:
    """The jobs of one launched application, followed from the submitting process.

    Args:
        launcher: The launcher that started the application.
        handle: Its handle.
        registry: Where the jobs' records are.
        jobs: The records as the engine wrote them before the launch.
        cancel_timeout: Seconds the driver gets to stop after its jobs were cancelled before
            the launcher kills the application.
        spec_path: The job spec file (the driver deletes it when it starts; deleted here if the
            application ended before).
    """

    def __init__(
        self,
        launcher: Launcher,
        handle: LaunchHandle,
        registry: Registry,
        jobs: Sequence[Job],
        cancel_timeout: float,
        spec_path: str,
    ) -> None:
        self.launcher = launcher
        self.handle = handle
        self._registry = registry
        self._submitted = {job.id: job for job in jobs}
        self._cancel_timeout = cancel_timeout
        self._spec_path = spec_path
        self._lock = threading.Lock()  # one of the two fallback writers at a time
        self._cancelled: set[str] = set()
        self._killing = False
        self._watcher = threading.Thread(
            target=self._watch, name=f"potluck-spark-{handle.submission_id}", daemon=True
        )

    def start(self) -> None:
        """Start following the application's process."""
        self._watcher.start()

    def status(self) -> LaunchStatus:
        """Return where the application's process is."""
        return self.launcher.status(self.handle)

    def cancelled(self, job_id: str) -> None:
        """Note that ``job_id`` was asked to stop; kill the application if it hangs.

        Once every job of the application was asked to stop or has ended, a timer gives the
        driver ``cancel_timeout`` seconds to end them before the launcher kills it.
        """
        with self._lock:
            self._cancelled.add(job_id)
            others = [j for j in self._submitted.values() if j.id not in self._cancelled]
            if self._killing or any(not self._ended(job) for job in others):
                return
            self._killing = True
        threading.Thread(
            target=self._kill_if_hung, name=f"potluck-spark-cancel-{job_id}", daemon=True
        ).start()

    def _ended(self, job: Job) -> bool:
        try:
            return load_job(self._registry, job.spec.project, job.id).status.is_terminal
        except NotFoundError:
            return True

    def _kill_if_hung(self) -> None:
        deadline = time.monotonic() + self._cancel_timeout
        while time.monotonic() < deadline:
            if all(self._ended(job) for job in self._submitted.values()):
                return
            time.sleep(POLL_INTERVAL)
        if self.status().has_ended:
            return  # the watcher settles what is left
        logger.warning(
            "the driver of application %s did not stop within %ss: killing it",
            self.handle.submission_id,
            self._cancel_timeout,
        )
        self.launcher.cancel(self.handle)
        with self._lock:
            for job in self._submitted.values():
                current = load_job(self._registry, job.spec.project, job.id)
                if not current.status.is_terminal:
                    save_job(
                        self._registry,
                        current.evolve(
                            status=JobStatus.CANCELLED,
                            cancel_requested=True,
                            finished_at=utc_now(),
                        ),
                    )

    def _watch(self) -> None:
        while True:
            try:
                status = self.status()
            except Exception:  # noqa: BLE001 - a watcher must not die silently mid-way
                logger.warning("following application %s failed", self.handle, exc_info=True)
                return
            if status.has_ended:
                break
            time.sleep(WATCH_INTERVAL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._spec_path)
        with self._lock:
            for job in self._submitted.values():
                self._settle(job, status)

    def _settle(self, submitted: Job, status: LaunchStatus) -> None:
        """Write ``FAILED`` if the driver never took the job (its record is untouched)."""
        try:
            current = Job.from_record(self._registry.get_job(submitted.spec.project, submitted.id))
        except NotFoundError:
            return
        untouched = current.updated_at == submitted.updated_at
        if current.status is not JobStatus.PENDING or not untouched:
            return
        if submitted.id in self._cancelled:
            save_job(
                self._registry,
                current.evolve(
                    status=JobStatus.CANCELLED, cancel_requested=True, finished_at=utc_now()
                ),
            )
            return
        error = (
            f"the Spark application ended ({status.value}) before its driver took the job; "
            f"see its log {self.handle.log_location}"
        )
        line = last_error_line(self.handle.log_location)
        if line:
            error += f": {line}"
        save_job(
            self._registry,
            current.evolve(status=JobStatus.FAILED, error=error, finished_at=utc_now()),
        )


class SparkJob(RecordedJob):
    """A job of a Spark application: followed through its record, cancelled through it too.

    Args:
        registry: Where the job's record is.
        project: The job's project.
        job_id: The job's id.
        application: The application that runs it.
    """

    def __init__(
        self, registry: Registry, project: str, job_id: str, application: SparkApplicationJobs
    ) -> None:
        super().__init__(registry, project, job_id)
        self._application = application

    @property
    def application(self) -> SparkApplicationJobs:
        """The application that runs the job (its launcher, handle and process status)."""
        return self._application

    @property
    def launch_handle(self) -> LaunchHandle:
        """The application's handle, with the Spark application id once the driver has it."""
        return self._application.handle.with_application_id(self.record().application_id)

    @property
    def log_location(self) -> str:
        """Where the application's output goes (spark-submit's log file)."""
        return self._application.handle.log_location

    def cancel(self) -> None:
        """Ask the driver to stop the job; the launcher kills the application if it hangs.

        The driver cancels the job's Spark work at its next check (``progress_interval``) and
        writes it ``CANCELLED``. See :meth:`SparkApplicationJobs.cancelled` for the kill.
        """
        super().cancel()
        self._application.cancelled(self.id)


__all__ = ["SparkApplicationJobs", "SparkJob", "WATCH_INTERVAL"]
