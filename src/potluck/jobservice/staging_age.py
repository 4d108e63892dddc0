"""The age limit of staging locations, for ``potluck gc --staging`` and a running Job Service.

Two settings name staging locations: ``staging_location`` (the folders of training sets built
through the Job Service, see :mod:`potluck.jobservice.staging`) and the offline store's own
``staging_location`` when it has one (the Spark store's training sets and driver logs). Both are
collected by :func:`~potluck.offline.staging_gc.collect_staging`, which this module feeds with
the folders still in use: a Job Service call's folder is in use while the registry holds a
record of a training-set job writing there that has not ended. The record, not a marker file,
is the robust test: it is kept by the job's runner (a heartbeat), and a runner that died is read
as ``FAILED`` once its heartbeat times out, so a crashed Job Service never pins a folder, while
a running one is seen from any process that reaches the registry, on any storage (an object
store has no locks).

:class:`StagingCollector` applies the ``staging_max_age`` setting in a running Job Service: it
collects every ``min(1 hour, staging_max_age / 10)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from potluck import plugins
from potluck.config import Settings, setting_error
from potluck.definitions.serde import format_duration
from potluck.errors import UnavailableError, ValidationError
from potluck.ingestion.jobs import HISTORICAL_RETRIEVAL, list_jobs, utc_now
from potluck.jobservice.periodic import Periodic
from potluck.offline.files import resolve_path
from potluck.offline.staging_gc import StagingReport, collect_staging
from potluck.registry.base import Registry

logger = logging.getLogger(__name__)

MAX_INTERVAL = timedelta(hours=1)
"""The longest time a Job Service waits between two collections."""

_NO_LOCATION_ADVICE = (
    "set staging_location (training sets through the Job Service) or use an offline store "
    "that stages (offline_store: {type: spark, staging_location: ...})"
)


@dataclass(frozen=True)
class StagingLocation:
    """A staging location and the setting that names it.

    Attributes:
        setting: ``staging_location`` or ``offline_store.staging_location``.
        value: The setting's value, as written.
        location: The value resolved against the settings' ``root`` (a path or a URL).
    """

    setting: str
    value: str
    location: str


@dataclass(frozen=True)
class CollectedLocation:
    """One staging location's collection: where, and what was found there."""

    where: StagingLocation
    report: StagingReport


def staging_locations(settings: Settings) -> tuple[StagingLocation, ...]:
    """Return the staging locations the settings name (one entry per distinct location).

    Raises:
        ConfigError: If neither ``staging_location`` nor the offline store's is set, or the
            offline store's section is invalid.
        PluginDependencyError: If the offline store needs an extra that is not installed.
    """
    found = _named_locations(settings)
    if not found:
        raise setting_error(
            "staging_location",
            "not set, and the offline store has no staging_location: there is no staging "
            f"location to collect; {_NO_LOCATION_ADVICE}",
        )
    return found


def _named_locations(settings: Settings) -> tuple[StagingLocation, ...]:
    found: list[StagingLocation] = []
    if settings.staging_location is not None:
        value = settings.staging_location
        found.append(StagingLocation("staging_location", value, resolve_path(value, settings.root)))
    offline = getattr(
        plugins.validate(plugins.OFFLINE_STORES, settings.offline_store), "staging_location", None
    )
    if isinstance(offline, str):
        location = resolve_path(offline, settings.root)
        if not any(_same(location, f.location) for f in found):
            found.append(StagingLocation("offline_store.staging_location", offline, location))
    return tuple(found)


def running_calls(registry: Registry) -> frozenset[str]:
    """Return the folder names of the training-set jobs that have not ended, in every project.

    A job writes to ``<staging_location>/<folder>/output``; a job whose heartbeat timed out
    counts as ended (see :func:`potluck.ingestion.jobs.observed`).
    """
    names: set[str] = set()
    for project in registry.list_projects(include_archived=True):
        for job in list_jobs(registry, project.name):
            output = job.spec.output_location
            if job.spec.kind == HISTORICAL_RETRIEVAL and output and not job.status.is_terminal:
                parts = output.rstrip("/").rsplit("/", 2)
                if len(parts) == 3:
                    names.add(parts[1])
    return frozenset(names)


def collect(
    settings: Settings,
    registry: Registry,
    *,
    older_than: timedelta,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[CollectedLocation]:
    """Collect every staging location the settings name; see :mod:`potluck.offline.staging_gc`.

    Args:
        settings: Where ``staging_location`` and ``offline_store`` are read.
        registry: Where the records of running training-set jobs are read.
        older_than: How old a folder or log must be to go.
        dry_run: Report what would go; delete nothing.
        now: The time ages are measured at (default: now).

    Returns:
        One report per location, in the order of :func:`staging_locations`.

    Raises:
        ConfigError: If no staging location is set, or one is no folder or cannot be read; the
            message names the setting.
        UnavailableError: If a location's storage cannot be reached (naming the setting).
    """
    collected: list[CollectedLocation] = []
    for where in staging_locations(settings):
        try:
            report = collect_staging(
                where.location,
                older_than=older_than,
                running=lambda: running_calls(registry),
                dry_run=dry_run,
                now=now,
            )
        except ValidationError as exc:
            raise setting_error(where.setting, exc.message, value=where.value) from None
        except UnavailableError as exc:
            raise UnavailableError(
                f"{exc.message} (the setting {where.setting})",
                key=where.setting,
                address=where.location,
            ) from None
        collected.append(CollectedLocation(where, report))
    return collected


def collection_interval(max_age: timedelta) -> timedelta:
    """How often a Job Service collects: every ``max_age / 10``, at least once an hour."""
    return min(MAX_INTERVAL, max_age / 10)


class StagingCollector(Periodic):
    """Applies ``staging_max_age`` in a running Job Service: collects on a timer, in a thread.

    Args:
        settings: The Job Service's settings.
        registry: Where the records of running training-set jobs are read.
        max_age: How old a folder or log must be to go.
        clock: Returns the current time, UTC.
        interval: Seconds between two collections (default: :func:`collection_interval`).

    Raises:
        ConfigError: If the settings name no staging location (the message names
            ``staging_max_age``).
    """

    thread_name = "potluck-staging-collector"
    failure = "collecting the staging locations failed; it tries again"

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        max_age: timedelta,
        clock: Callable[[], datetime] = utc_now,
        interval: float | None = None,
    ) -> None:
        if not _named_locations(settings):
            raise setting_error(
                "staging_max_age",
                f"there is no staging location to keep bounded; {_NO_LOCATION_ADVICE}, or unset "
                "staging_max_age",
                value=format_duration(max_age),
            )
        self._settings = settings
        self._registry = registry
        self.max_age = max_age
        self._clock = clock
        super().__init__(
            collection_interval(max_age).total_seconds() if interval is None else interval
        )

    def run_once(self) -> list[CollectedLocation]:
        """Delete what is older than ``max_age`` in every staging location; return the reports.

        Raises:
            ConfigError: If no staging location is set, or one is no readable folder.
            UnavailableError: If a location's storage cannot be reached.
        """
        collected = collect(
            self._settings, self._registry, older_than=self.max_age, now=self._clock()
        )
        for entry in collected:
            report = entry.report
            if report.deleted or report.failed:
                logger.info(
                    "staging_max_age: deleted %d item(s), %d bytes, from %s (%s)%s",
                    len(report.deleted),
                    sum(item.size for item in report.deleted),
                    entry.where.location,
                    entry.where.setting,
                    "".join(f"; cannot delete {i.path}: {why}" for i, why in report.failed),
                )
        return collected


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


__all__ = [
    "MAX_INTERVAL",
    "CollectedLocation",
    "StagingCollector",
    "StagingLocation",
    "collect",
    "collection_interval",
    "running_calls",
    "staging_locations",
]
