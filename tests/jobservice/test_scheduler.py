"""Scheduled ingestion: ticks from cron on an injected clock, one claim per tick across two Job
Services on one registry (SQLite and PostgreSQL), the latest missed tick only, and a real-time
short cron."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _js_support import NOW, Clock, seeded_client, settings_for, stats_table

from potluck.ingestion.jobs import JobStatus
from potluck.jobservice.service import JobService


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture()
def replicas(tmp_path: Path, registry_url: str) -> Iterator[tuple[Clock, JobService, JobService]]:
    settings = settings_for(tmp_path, registry_url)
    seeded_client(settings, stats_table(tmp_path)).close()
    clock = Clock(NOW)
    a = JobService(settings, clock=clock)
    b = JobService(settings, clock=clock)
    yield clock, a, b
    a.close()
    b.close()


def test_each_tick_runs_once_across_replicas_and_missed_ticks_run_the_latest_only(
    replicas: tuple[Clock, JobService, JobService],
) -> None:
    clock, a, b = replicas
    project = a.settings.project
    a.schedule_offline_to_online(project, "driver_stats", "0 * * * *", timedelta(hours=3))
    assert a.scheduler.run_once() == []  # the hour's tick before the schedule existed is not run
    tick = (NOW + timedelta(hours=1)).replace(minute=0, second=0)
    clock.at = tick + timedelta(seconds=5)
    first = a.scheduler.run_once() + b.scheduler.run_once() + a.scheduler.run_once()
    assert [(j.spec.start, j.spec.end) for j in first] == [(tick - timedelta(hours=3), tick)]
    clock.at = tick + timedelta(hours=4, minutes=30)  # four ticks missed
    second = b.scheduler.run_once() + a.scheduler.run_once()
    latest = tick + timedelta(hours=4)
    assert [(j.spec.start, j.spec.end) for j in second] == [(latest - timedelta(hours=3), latest)]
    assert [s.last_tick for s in a.list_schedules(project)] == [latest]
    ended = [a.get_job(project, j.id) for j in first + second]
    while not all(j.status.is_terminal for j in ended):
        time.sleep(0.1)
        ended = [a.get_job(project, j.id) for j in ended]
    assert [j.status for j in ended] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert ended[0].stats.rows_read == 3  # [tick - 3h, tick) holds all three rows


def test_a_tick_of_a_deleted_table_is_recorded_failed(
    replicas: tuple[Clock, JobService, JobService],
) -> None:
    clock, a, _ = replicas
    project = a.settings.project
    a.schedule_offline_to_online(project, "driver_stats", "*/5 * * * *", timedelta(minutes=5))
    a.registry.delete(project, "feature_table", "driver_stats")
    clock.at = NOW + timedelta(minutes=5)
    [job] = a.scheduler.run_once()
    assert job.status is JobStatus.FAILED
    assert job.error == (
        f"the scheduled tick {job.spec.end.isoformat()} could not start its job: feature table "
        f"driver_stats not found in project {project}"
    )


def test_a_short_cron_fires_on_time(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    seeded_client(settings, stats_table(tmp_path)).close()
    service = JobService(settings, scheduler_interval=0.2)
    try:
        service.schedule_offline_to_online(
            settings.project, "driver_stats", "*/2 * * * * *", timedelta(hours=3)
        )
        service.start_background(control_loop=False)
        started = time.monotonic()
        while not service.list_jobs(settings.project) and time.monotonic() - started < 10:
            time.sleep(0.05)
        [job] = service.list_jobs(settings.project)[-1:]
        assert job.spec.end is not None and job.spec.end.second % 2 == 0
        assert job.created_at - job.spec.end < timedelta(seconds=1)  # started within a second
    finally:
        service.close()
