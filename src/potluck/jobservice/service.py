"""JobService: the one backend behind potluck's and Feast 0.9's Job Service servicers.

It starts jobs on the configured engine (the local engine runs them in threads of this process;
the Spark engine launches spark-submit) and historical retrievals in threads of this process,
and answers from the job records in the registry, so every process that reaches the registry
sees the same jobs. It also keeps the scheduled ingestion of feature tables (run by
:mod:`potluck.jobservice.scheduler`) and the one stream job per table with a stream source (kept
by :mod:`potluck.jobservice.control_loop`); :meth:`JobService.start_background` starts both.

Errors are :class:`~potluck.errors.PotluckError` subclasses, which the servicers map to gRPC
codes: a client's mistake is a :class:`~potluck.errors.ValidationError` or
:class:`~potluck.errors.NotFoundError` naming the field or the table.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from potluck.config import Settings
from potluck.definitions.serde import KIND_FEATURE_TABLE
from potluck.errors import NotFoundError, PotluckError
from potluck.ingestion.engines.base import IngestionJob, JobContext, RecordedJob
from potluck.ingestion.jobs import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    HISTORICAL_RETRIEVAL,
    STREAM_TO_ONLINE,
    Job,
    JobSpec,
    JobStatus,
    list_jobs,
    load_job,
    save_job,
    utc_now,
)
from potluck.ingestion.stream.brokers import default_group_id
from potluck.jobservice._parts import open_engine, open_offline_store, open_online_store
from potluck.jobservice.control_loop import ControlLoop
from potluck.jobservice.retrieval import RetrievalRunner, resolve_requests
from potluck.jobservice.scheduler import Scheduler, new_schedule
from potluck.jobservice.staging_age import StagingCollector
from potluck.registry.base import Schedule
from potluck.registry.sql import SqlRegistry

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
"""Returns the current time, UTC (injectable, so tests can drive the scheduler)."""

DEFAULT_CONTROL_LOOP_INTERVAL = 10.0
"""Seconds between two passes of the control loop."""

DEFAULT_SCHEDULER_INTERVAL = 1.0
"""Seconds between two looks of the scheduler for due ticks."""

STOP_WAIT = 30.0
"""Seconds :meth:`JobService.close` waits for the jobs it stops to end."""


class JobService:
    """Starts and tracks jobs for remote clients; see the module docstring.

    Args:
        settings: ``registry`` (a SQL registry: schedules and leases live there),
            ``online_store``, ``offline_store`` and ``engine`` are used.
        clock: Returns the current time, UTC (default: the system clock).
        control_loop_interval: Seconds between two passes of the control loop.
        scheduler_interval: Seconds between two looks for due ticks.
        staging_interval: Seconds between two collections of the staging locations with
            ``staging_max_age`` set (default: ``min(1 hour, staging_max_age / 10)``).

    Raises:
        ConfigError: If a setting is invalid, the registry URL is wrong, or ``core_url`` is
            set without a ``registry`` the service can open (see
            :meth:`~potluck.config.Settings.served_registry_url`).
        PluginDependencyError: If a store or engine needs a missing extra.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        control_loop_interval: float = DEFAULT_CONTROL_LOOP_INTERVAL,
        scheduler_interval: float = DEFAULT_SCHEDULER_INTERVAL,
        staging_interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.instance_id = uuid.uuid4().hex
        self._clock = clock
        self.registry = SqlRegistry(settings.served_registry_url("the Job Service"))
        self._offline = open_offline_store(settings)
        self._online = open_online_store(settings)
        self._engine = open_engine(settings)
        self._live: dict[str, IngestionJob | RetrievalRunner] = {}
        self._lock = threading.Lock()
        self.scheduler = Scheduler(
            self.registry, self._start_scheduled, clock=clock, interval=scheduler_interval
        )
        self.control_loop = ControlLoop(
            self.registry,
            start=self._start_owned_stream,
            cancel=self._cancel_quietly,
            holder=self.instance_id,
            interval=control_loop_interval,
        )
        self.staging_collector = (
            None
            if settings.staging_max_age is None
            else StagingCollector(
                settings,
                self.registry,
                max_age=settings.staging_max_age,
                clock=clock,
                interval=staging_interval,
            )
        )

    def now(self) -> datetime:
        """Return the current time by this service's clock (UTC)."""
        return self._clock()

    # ---- starting jobs -------------------------------------------------------------------------

    def start_offline_to_online(
        self,
        project: str,
        table: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        since_last: bool = False,
        full: bool = False,
    ) -> Job:
        """Start copying the latest row per key of ``table``'s batch source to the online store.

        Returns at once with the job's record (``PENDING`` or later).

        Args:
            project: The table's project.
            table: The feature table's name.
            start: Copy rows with event time ``>= start`` (naive means UTC).
            end: Copy rows with event time ``< end``.
            since_last: Copy the rows committed since the previous ``since_last`` job's
                version; not with ``start``, ``end`` or ``full``.
            full: Reload: rewrite values even when the rows are not newer.

        Raises:
            NotFoundError: If the table does not exist.
            ValidationError: If the range is empty, the table has no batch source, or
                ``since_last`` is combined with a range or ``full``.
        """
        spec = JobSpec(
            project=project, table=table, start=start, end=end, since_last=since_last, full=full
        )
        context = JobContext(self.registry, self._offline, self._online)
        return self._track(self._engine.submit(spec, context))

    def start_stream_to_online(self, project: str, table: str) -> Job:
        """Start consuming ``table``'s stream source into the online store; return its record.

        The job runs until it is cancelled. A table whose stream job the control loop keeps
        gets a second job this way (both share the consumer group's partitions); let the
        control loop run it instead.

        Raises:
            NotFoundError: If the table does not exist.
            ValidationError: If it has no stream source.
        """
        return self._start_stream(project, table, fingerprint=None)

    def _start_stream(self, project: str, table: str, *, fingerprint: str | None) -> Job:
        spec = JobSpec(
            kind=STREAM_TO_ONLINE,
            project=project,
            table=table,
            group_id=default_group_id(project, table),  # recorded as the job runs it
            fingerprint=fingerprint,
        )
        context = JobContext(  # the job's own: it closes them when it ends
            SqlRegistry(self.settings.registry_url),
            self._offline,
            open_online_store(self.settings),
        )
        return self._track(self._engine.submit(spec, context))

    def get_historical_features(
        self,
        project: str,
        feature_refs: Sequence[str],
        entity_source: str,
        output_location: str,
        *,
        full_feature_names: bool = True,
    ) -> Job:
        """Start writing a training set to ``output_location``; return the job's record at once.

        The training set is the point-in-time join of the entity rows with the features (see
        :meth:`potluck.client.Client.get_historical_features`), written as Parquet into the
        folder ``output_location`` (file ``part-00000.parquet``). The job's record ends
        ``SUCCEEDED`` (``rows_written``: the rows written) or ``FAILED`` with the error.

        Args:
            project: The project of references that name none.
            feature_refs: ``table:feature``, ``project/table:feature`` or ``table:*``.
            entity_source: A ``.parquet``/``.csv`` path or URL (a path without a suffix is
                read as Parquet) with ``event_timestamp`` and the entity columns.
            output_location: The folder to write; a relative path is relative to the Job
                Service's ``root``.
            full_feature_names: Name feature columns ``table__feature`` (else bare names).

        Raises:
            ValidationError: If ``feature_refs`` is empty or a location is missing.
            FeatureRefError: If a reference is malformed or names an unknown table or feature.
        """
        spec = JobSpec(
            kind=HISTORICAL_RETRIEVAL,
            project=project,
            table="",
            feature_refs=tuple(feature_refs),
            entity_source=entity_source,
            output_location=output_location,
            full_feature_names=full_feature_names,
        )
        resolve_requests(self.registry, project, spec.feature_refs)  # fail now, not in the job
        engine_config = getattr(self._engine, "config", None)
        timeout = getattr(engine_config, "heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT)
        job = Job.new(spec, str(self.settings.offline_store["type"]), heartbeat_timeout=timeout)
        save_job(self.registry, job)
        runner = RetrievalRunner(job, self.registry, self._offline, self.settings.root)
        runner.start()
        with self._lock:
            self._live[job.id] = runner
        return runner.record()

    def _track(self, handle: IngestionJob) -> Job:
        with self._lock:
            ended = [i for i, h in self._live.items() if h.record().status.is_terminal]
            for job_id in ended:
                del self._live[job_id]
            self._live[handle.id] = handle
        return handle.record()

    # ---- reading and cancelling jobs -----------------------------------------------------------

    def list_jobs(
        self,
        project: str | None = None,
        *,
        table: str | None = None,
        include_terminated: bool = True,
    ) -> list[Job]:
        """Return jobs, newest first, as readers see them (a lost job is ``FAILED``).

        Args:
            project: Only this project's jobs (``None``: every project's).
            table: Only this feature table's jobs.
            include_terminated: Also jobs that have ended.

        Raises:
            NotFoundError: If ``table`` has no jobs and is no feature table of ``project``.
        """
        projects = (
            [project]
            if project is not None
            else [p.name for p in self.registry.list_projects(include_archived=True)]
        )
        jobs = [j for p in projects for j in list_jobs(self.registry, p, table=table)]
        if table is not None and not jobs and project is not None:
            self.registry.get(project, KIND_FEATURE_TABLE, table)
        jobs.sort(key=lambda j: j.id, reverse=True)
        return [j for j in jobs if include_terminated or not j.status.is_terminal]

    def get_job(self, project: str, job_id: str) -> Job:
        """Return job ``job_id``'s record as readers see it.

        Raises:
            NotFoundError: If there is no such job in ``project``.
        """
        return load_job(self.registry, project, job_id)

    def cancel_job(self, project: str, job_id: str) -> Job:
        """Ask job ``job_id`` to stop (at its next batch); return its record.

        A job that has ended is returned as it is.

        Raises:
            NotFoundError: If there is no such job in ``project``.
        """
        job = self.get_job(project, job_id)
        if job.status.is_terminal:
            return job
        with self._lock:
            live = self._live.get(job_id)
        if live is not None:
            live.cancel()
        RecordedJob(self.registry, project, job_id).cancel()
        return replace(self.get_job(project, job_id), cancel_requested=True)

    def _cancel_quietly(self, job: Job) -> None:
        """Cancel ``job`` for the control loop; a job that vanished is left alone."""
        try:
            self.cancel_job(job.spec.project, job.id)
        except NotFoundError:
            logger.warning("job %s vanished before it could be stopped", job.id)

    # ---- scheduled ingestion -------------------------------------------------------------------

    def schedule_offline_to_online(
        self, project: str, table: str, cron: str, look_back: timedelta
    ) -> Schedule:
        """Run an offline-to-online job for ``table`` at each tick of ``cron`` (UTC).

        Each tick's job loads ``[tick - look_back, tick)``. Setting a table's schedule again
        replaces it. Ticks missed while no Job Service ran are not made up: the latest one
        runs, once, when one starts again.

        Args:
            project: The table's project.
            table: The feature table's name; it needs a batch source.
            cron: A cron expression: 5 fields (minute hour day month weekday) or 6 (seconds
                first: second minute hour day month weekday).
            look_back: The span each job loads, positive and at most
                :data:`~potluck.jobservice.scheduler.MAX_LOOK_BACK`.

        Raises:
            ValidationError: If ``cron`` or ``look_back`` is invalid, or the table has no batch
                source.
            NotFoundError: If the table does not exist.
        """
        schedule = new_schedule(self.registry, project, table, cron, look_back, self._clock())
        return self.registry.put_schedule(schedule)

    def unschedule(self, project: str, table: str) -> None:
        """Remove ``table``'s schedule (jobs it started go on).

        Raises:
            NotFoundError: If the table has no schedule.
        """
        self.registry.delete_schedule(project, table)

    def list_schedules(self, project: str | None = None) -> list[Schedule]:
        """Return the schedules of ``project`` (``None``: every project), by project and table."""
        return self.registry.list_schedules(project)

    def _start_scheduled(self, schedule: Schedule, tick: datetime) -> Job:
        """Start the job of a claimed tick; a job that cannot start is recorded ``FAILED``.

        Whatever keeps it from starting (the table was deleted or lost its batch source, the
        look-back reaches before year 1, the engine refused it) becomes the failed job's
        error, so the tick is never retried silently.
        """
        start: datetime | None = None
        try:
            start = tick - schedule.look_back
            return self.start_offline_to_online(
                schedule.project, schedule.table, start=start, end=tick
            )
        except Exception as exc:
            reason = (
                exc.message if isinstance(exc, PotluckError) else f"{type(exc).__name__}: {exc}"
            )
            logger.warning(
                "scheduled %s/%s tick %s cannot start: %s",
                schedule.project,
                schedule.table,
                tick.isoformat(),
                reason,
            )
            spec = JobSpec(project=schedule.project, table=schedule.table, start=start, end=tick)
            failed = Job.new(spec, str(self.settings.engine.get("type", "local"))).evolve(
                status=JobStatus.FAILED,
                error=f"the scheduled tick {tick.isoformat()} could not start its job: {reason}",
                finished_at=utc_now(),
            )
            save_job(self.registry, failed)
            return failed

    def _start_owned_stream(self, project: str, table: str, fingerprint: str) -> Job:
        return self._start_stream(project, table, fingerprint=fingerprint)

    # ---- lifecycle -----------------------------------------------------------------------------

    def start_background(self, *, scheduler: bool = True, control_loop: bool = True) -> None:
        """Start the background loops in threads (until :meth:`close`).

        The scheduler and the control loop as asked, and with ``staging_max_age`` set the
        collection of the staging locations.
        """
        if self.staging_collector is not None:
            self.staging_collector.start()
        if scheduler:
            self.scheduler.start()
        if control_loop:
            self.control_loop.start()

    def close(self) -> None:
        """Stop the background loops and the jobs running in this process, then disconnect.

        Jobs this process runs (local engine, retrievals) are cancelled and waited for, up to
        :data:`STOP_WAIT` seconds; their records end ``CANCELLED``. A control loop elsewhere
        starts the stream jobs again.
        """
        self.scheduler.stop()
        self.control_loop.stop()
        if self.staging_collector is not None:
            self.staging_collector.stop()
        with self._lock:
            live = list(self._live.values())
        for handle in live:
            if not handle.record().status.is_terminal:
                handle.cancel()
        for handle in live:
            try:
                handle.wait(STOP_WAIT)
            except Exception:  # its record says how it ended
                logger.debug("job %s did not end cleanly", handle.id, exc_info=True)
        self._online.close()
        self._offline.close()
        self.registry.close()


__all__ = [
    "DEFAULT_CONTROL_LOOP_INTERVAL",
    "DEFAULT_SCHEDULER_INTERVAL",
    "Clock",
    "JobService",
    "Schedule",
]
