"""A Job Service with ``staging_max_age`` keeps its staging locations bounded by itself: on its
injected clock, in its background thread, keeping the folders of jobs whose records still run."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from _js_support import NOW, Clock, settings_for

from potluck.errors import ConfigError
from potluck.ingestion.jobs import HISTORICAL_RETRIEVAL, Job, JobSpec, JobStatus, save_job
from potluck.jobservice.service import JobService

OLD = "0123456789abcdef0123456789abcdef"
RUNNING = "fedcba9876543210fedcba9876543210"
YOUNG = "20300101T000000000000Z-1a2b3c4d"


def put(path: Path, age: timedelta, at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (at - age.total_seconds(), at - age.total_seconds()))


def test_the_job_service_deletes_old_staging_folders_periodically(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    settings = settings_for(
        tmp_path,
        f"sqlite:///{tmp_path / 'registry.db'}",
        staging_location=str(staging),
        staging_max_age="7d",
    )
    clock = Clock(NOW + timedelta(days=30))  # the service's clock: a month from now
    service = JobService(settings, clock=clock, staging_interval=0.05)
    assert service.staging_collector is not None
    assert service.staging_collector.interval == 0.05
    service.registry.create_project(settings.project)
    spec = JobSpec(
        kind=HISTORICAL_RETRIEVAL,
        project=settings.project,
        table="",
        feature_refs=("driver_stats:trips",),
        entity_source=str(staging / RUNNING / "entities.parquet"),
        output_location=str(staging / RUNNING / "output"),
    )
    save_job(service.registry, Job.new(spec, "duckdb").evolve(status=JobStatus.RUNNING))
    at = clock().timestamp()
    put(staging / OLD / "entities.parquet", timedelta(days=8), at)
    put(staging / RUNNING / "entities.parquet", timedelta(days=20), at)
    put(staging / YOUNG / "part-00000.parquet", timedelta(days=6), at)
    put(staging / "notes.txt", timedelta(days=25), at)
    try:
        service.start_background(scheduler=False, control_loop=False)
        deadline = time.monotonic() + 10
        while (staging / OLD).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(p.name for p in staging.iterdir()) == [YOUNG, RUNNING, "notes.txt"]
        clock.at += timedelta(days=2)  # the young folder is 8 days old now
        while (staging / YOUNG).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(p.name for p in staging.iterdir()) == [RUNNING, "notes.txt"]
    finally:
        service.close()
    assert sorted(p.name for p in staging.iterdir()) == [RUNNING, "notes.txt"]


def test_without_the_setting_nothing_is_collected(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", staging_location="staging"
    )
    service = JobService(settings)
    try:
        assert service.staging_collector is None
    finally:
        service.close()


def test_the_setting_without_a_staging_location_is_refused_at_start(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path, f"sqlite:///{tmp_path / 'registry.db'}", staging_max_age="12h"
    )
    with pytest.raises(ConfigError) as caught:
        JobService(settings)
    assert caught.value.message == (
        "invalid setting 'staging_max_age' = '12h': there is no staging location to keep "
        "bounded; set staging_location (training sets through the Job Service) or use an "
        "offline store that stages (offline_store: {type: spark, staging_location: ...}), or "
        "unset staging_max_age"
    )
