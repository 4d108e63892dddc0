"""Scheduled offline-to-online ingestion: a cron expression and a look-back span per table.

Schedules live in the registry (:meth:`~potluck.registry.base.Registry.put_schedule`). Every
``interval`` seconds the scheduler looks, per schedule, for the latest tick of its cron
expression at or before now (UTC) and later than both the schedule's creation and its
``last_tick``. It claims that tick in the registry (:meth:`~potluck.registry.base.Registry.
claim_tick`: one conditional update), and only the one Job Service replica whose claim wins
starts the job over ``[tick - look_back, tick)``. Ticks missed while no Job Service ran are not
made up: only the latest one runs.

Cron expressions have 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds
first, then the same five), as `cronsim <https://pypi.org/project/cronsim/>`_ reads them:
``'*/10 * * * * *'`` ticks every 10 seconds. A look-back is positive and at most
:data:`MAX_LOOK_BACK`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from cronsim import CronSim, CronSimError

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_FEATURE_TABLE, format_duration
from potluck.errors import ValidationError
from potluck.ingestion.jobs import Job
from potluck.jobservice.periodic import Periodic
from potluck.registry.base import Registry, Schedule

logger = logging.getLogger(__name__)

StartJob = Callable[[Schedule, datetime], Job]
"""Starts the job of a claimed tick of a schedule."""

MAX_LOOK_BACK = timedelta(days=36_500)
"""The longest look-back a schedule may have (100 years)."""

CRON_FORMS = (
    "use 5 fields 'minute hour day month weekday' such as '0 * * * *' (hourly), or 6 with "
    "seconds first such as '*/10 * * * * *' (every 10 seconds)"
)
"""How a cron expression is written, as error messages say it."""


def check_cron(cron: str, field: str = "cron") -> None:
    """Check a cron expression.

    Args:
        cron: The expression.
        field: Where it came from, for the message (``cron``, or ``--cron`` in the CLI).

    Raises:
        ValidationError: If it is not one, naming ``field`` and the expression.
    """
    if not cron.strip():
        raise ValidationError(f"{field} is empty; {CRON_FORMS}", field="cron")
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except (CronSimError, TypeError) as exc:
        raise ValidationError(
            f"{field} {cron!r} is not a cron expression ({exc}); {CRON_FORMS}", field="cron"
        ) from None


def check_look_back(
    look_back: timedelta, field: str = "look_back", given: str | None = None
) -> None:
    """Check a schedule's look-back: positive and at most :data:`MAX_LOOK_BACK`.

    Args:
        look_back: The span each tick's job loads.
        field: Where it came from, for the message (``look_back``, or ``--look-back``).
        given: The value as the user wrote it (default: ``look_back`` formatted, ``1h30m``).

    Raises:
        ValidationError: If it is zero, negative or longer, naming ``field`` and the value.
    """
    shown = format_duration(look_back) if given is None else given
    if look_back <= timedelta(0):
        raise ValidationError(
            f"{field} must be a positive duration such as 1h, got {shown}", field="look_back"
        )
    if look_back > MAX_LOOK_BACK:
        raise ValidationError(
            f"{field} {shown} is too long: at most {format_duration(MAX_LOOK_BACK)} (100 "
            "years); each run loads the span before its tick",
            field="look_back",
        )


def new_schedule(
    registry: Registry,
    project: str,
    table: str,
    cron: str,
    look_back: timedelta,
    created_at: datetime,
) -> Schedule:
    """Return a checked schedule for ``table`` (not stored yet).

    Args:
        registry: Where the table is looked up.
        project: The table's project.
        table: The feature table's name; it needs a batch source.
        cron: A cron expression: 5 fields (minute hour day month weekday) or 6 (seconds
            first).
        look_back: The span each tick's job loads, positive, at most :data:`MAX_LOOK_BACK`.
        created_at: When the schedule is set (UTC); ticks before it never run.

    Raises:
        ValidationError: If ``cron`` or ``look_back`` is invalid, or the table has no batch
            source.
        NotFoundError: If the table does not exist.
    """
    check_cron(cron)
    if not isinstance(look_back, timedelta):
        raise ValidationError(
            f"look_back must be a timedelta such as timedelta(hours=1), got "
            f"{type(look_back).__name__}",
            field="look_back",
        )
    check_look_back(look_back)
    found = registry.get(project, KIND_FEATURE_TABLE, table)
    if not isinstance(found, FeatureTable) or found.batch_source is None:
        raise ValidationError(
            f"feature table {table!r} has no batch_source, so there is nothing to schedule",
            field="table",
        )
    return Schedule(
        project=project, table=table, cron=cron, look_back=look_back, created_at=created_at
    )


def latest_tick(cron: str, now: datetime) -> datetime:
    """Return the latest tick of ``cron`` at or before ``now`` (UTC)."""
    return next(CronSim(cron, now, reverse=True))


def next_tick(cron: str, now: datetime) -> datetime:
    """Return the first tick of ``cron`` after ``now`` (UTC)."""
    return next(CronSim(cron, now))


class Scheduler(Periodic):
    """Starts the job of each due tick of each schedule; one replica per tick.

    Args:
        registry: Where schedules and tick claims live.
        start_job: Starts a claimed tick's job.
        clock: Returns the current time, UTC.
        interval: Seconds between two looks for due ticks (in :meth:`start`'s thread).
    """

    thread_name = "potluck-scheduler"
    failure = "the scheduler's pass failed; it tries again"

    def __init__(
        self,
        registry: Registry,
        start_job: StartJob,
        *,
        clock: Callable[[], datetime],
        interval: float,
    ) -> None:
        self._registry = registry
        self._start_job = start_job
        self._clock = clock
        super().__init__(interval)

    def run_once(self) -> list[Job]:
        """Start the jobs of the ticks due now that this replica claims; return them."""
        now = self._clock()
        started: list[Job] = []
        for schedule in self._registry.list_schedules():
            tick = latest_tick(schedule.cron, now)
            if tick <= schedule.created_at:
                continue
            if schedule.last_tick is not None and tick <= schedule.last_tick:
                continue
            if self._registry.claim_tick(schedule.project, schedule.table, tick):
                job = self._start_job(schedule, tick)
                logger.info(
                    "scheduled %s/%s tick %s: job %s %s",
                    schedule.project,
                    schedule.table,
                    tick.isoformat(),
                    job.id,
                    job.status.value,
                )
                started.append(job)
        return started


__all__ = [
    "CRON_FORMS",
    "MAX_LOOK_BACK",
    "Scheduler",
    "StartJob",
    "check_cron",
    "check_look_back",
    "latest_tick",
    "new_schedule",
    "next_tick",
]
