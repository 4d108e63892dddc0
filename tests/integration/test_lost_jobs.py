"""Heartbeats and lost jobs: a job whose process is killed reads as FAILED (lost) everywhere.

A real process runs a real job (DuckDB offline store, SQLite online store and registry) and is
killed with SIGKILL in the middle of it; every reader (the SDK, ``RecordedJob.wait``, the
since-last watermark, and the ``jobs`` commands) then sees the job ``FAILED`` with the same
error, and ``jobs cancel`` changes nothing. A job whose one batch is slower than the heartbeat
timeout is not lost: its heartbeat thread writes the record while the batch runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest
import yaml
from _serving_support import DRIVER, new_project
from typer.testing import CliRunner

from potluck import Client, Feature, FeatureTable, FileSource, ValueType, plugins
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import JobError, NotFoundError
from potluck.ingestion.engines.base import JobContext, RecordedJob
from potluck.ingestion.jobs import (
    CANCEL_SUFFIX,
    Job,
    JobSpec,
    JobStatus,
    lost_error,
    observed,
    watermark,
)

WORKER = Path(__file__).with_name("_job_worker.py")
BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
TIMEOUT = 1.0
"""The heartbeat timeout of the killed job's engine, in seconds."""

_T = TypeVar("_T")


def _table(root: Path) -> FeatureTable:
    return FeatureTable(
        name="trips",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        batch_source=FileSource(
            path=str(root / "data" / "trips"), event_timestamp_column="event_timestamp"
        ),
    )


def _frame(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series(range(count), dtype="int64"),
            "event_timestamp": pd.to_datetime([BASE] * count, utc=True),
            "trips": pd.Series(range(count), dtype="int64"),
        }
    )


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "potluck.yaml"
    settings = {
        "project": new_project(),
        "registry": "sqlite:///registry.db",
        "online_store": {"type": "sqlite", "path": "online.db"},
        "engine": {
            "type": "local",
            "heartbeat_timeout": f"{TIMEOUT:g}s",
            "progress_interval": 0.05,
        },
    }
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture()
def client(config: Path) -> Iterator[Client]:
    c = Client(settings=load_settings(config))
    c.apply([DRIVER, _table(config.parent)])
    yield c
    c.close()


def _until(read: Callable[[], _T], done: Callable[[_T], bool], seconds: float = 30.0) -> _T:
    deadline = time.monotonic() + seconds
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def _stored(client: Client, job_id: str) -> Job:
    """The record as its runner last wrote it (no reader's view applied)."""
    return Job.from_record(client._registry.get_job(client.project, job_id))


@contextlib.contextmanager
def _worker(config: Path) -> Iterator[subprocess.Popen[str]]:
    """A process running a since-last job of ``trips``, one row per batch (slow); killed at
    the end if it is still there."""
    command = [sys.executable, str(WORKER), str(config), "trips", "1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as worker:
        try:
            yield worker
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
                worker.kill()
                worker.wait(30)


runner = CliRunner()


def test_a_job_killed_mid_run_reads_as_lost_everywhere(client: Client, config: Path) -> None:
    rows = 2_000
    client.ingest("trips", _frame(rows))
    with _worker(config) as worker:
        assert worker.stdout is not None
        job_id = worker.stdout.readline().strip()
        running = _until(lambda: _stored(client, job_id), lambda j: j.stats.rows_read > 0)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
    assert running.status is JobStatus.RUNNING
    assert running.heartbeat_timeout == timedelta(seconds=TIMEOUT)
    assert running.rows_total == rows
    assert running.source_version == 1  # it read version 1 before it died
    stored = _stored(client, job_id)
    assert stored.status is JobStatus.RUNNING and 0 < stored.stats.rows_read < rows
    assert stored.updated_at is not None
    when = stored.updated_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    lost = f"lost: no heartbeat since {when} UTC (its process died or hung)"

    seen = _until(lambda: client.get_job(job_id).record(), lambda j: j.status.is_terminal)
    assert (seen.status, seen.error) == (JobStatus.FAILED, lost)
    assert (seen.stats, seen.updated_at, seen.finished_at) == (
        stored.stats,
        stored.updated_at,
        stored.updated_at,  # a lost job ended at its last heartbeat
    )
    assert [(j.id, j.status, j.error, j.finished_at) for j in client.list_jobs()] == [
        (job_id, JobStatus.FAILED, lost, stored.updated_at)
    ]
    with pytest.raises(JobError) as err:
        RecordedJob(client._registry, client.project, job_id).wait(5)
    assert err.value.message == f"job {job_id} failed: {lost}"
    spec = JobSpec(project=client.project, table="trips", since_last=True)
    source = client._offline().source_version(client.get_feature_table("trips"))
    assert watermark(client._registry, spec, source) is None

    base = ["--config", str(config), "jobs"]
    listed = runner.invoke(app, [*base, "list"], env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    started = stored.started_at
    assert started is not None
    assert listed.stdout.splitlines()[2].split() == [
        job_id[:8],
        "trips",
        "FAILED",
        f"{stored.stats.rows_read:,}",
        f"{stored.stats.rows_written:,}",
        *started.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M").split(),
    ]
    described = runner.invoke(app, [*base, "describe", job_id[:8]])
    assert described.exit_code == 0, described.output
    lines = described.stdout.splitlines()
    assert f"{'status':<22}  FAILED" in lines
    assert f"{'error':<22}  {lost}" in lines
    cancelled = runner.invoke(app, [*base, "cancel", job_id[:8]])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout == (
        f"job {job_id} has already ended with status FAILED ({lost}); nothing to cancel\n"
    )
    with pytest.raises(NotFoundError):
        client._registry.get_job(client.project, job_id + CANCEL_SUFFIX)
    assert _stored(client, job_id) == stored  # no reader wrote to the record

    again = client.start_offline_to_online_ingestion("trips", since_last=True).wait(60)
    assert (again.since_version, again.source_version) == (None, 1)
    assert again.stats.rows_read == rows  # the lost job's partial load does not count
    assert watermark(client._registry, spec, source) == 1


def test_a_hung_job_that_resumes_stays_lost(client: Client, config: Path) -> None:
    rows = 2_000
    client.ingest("trips", _frame(rows))
    with _worker(config) as worker:
        assert worker.stdout is not None
        job_id = worker.stdout.readline().strip()
        _until(lambda: _stored(client, job_id), lambda j: j.stats.rows_read > 0)
        os.kill(worker.pid, signal.SIGSTOP)
        seen = _until(lambda: client.get_job(job_id).record(), lambda j: j.status.is_terminal)
        heartbeat = _stored(client, job_id).updated_at
        os.kill(worker.pid, signal.SIGCONT)
        ended = worker.stdout.readline().strip()
        assert worker.wait(30) == 0
    assert ended == "FAILED"
    assert seen.status is JobStatus.FAILED and heartbeat is not None
    final = _stored(client, job_id)  # written by the resumed runner itself
    assert (final.status, final.cancel_requested) == (JobStatus.FAILED, False)
    assert final.finished_at is not None and final.stats.rows_read < rows
    assert final.error is not None
    # The time is of the last heartbeat the runner wrote: the one readers saw while it was
    # stopped, unless SIGSTOP caught a write in flight (then that write's, a moment later).
    since = datetime.strptime(final.error[25:44], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert final.error == lost_error(since)
    assert timedelta(0) <= since - heartbeat.replace(microsecond=0) <= timedelta(seconds=1)
    assert client.get_job(job_id).record() == final


def test_a_slow_batch_keeps_the_job_alive(client: Client) -> None:
    rows = 100_000
    client.ingest("trips", _frame(rows))
    timeout = 0.5
    engine = plugins.create(
        plugins.ENGINES,
        {"type": "local", "heartbeat_timeout": timeout, "progress_interval": 3600},
    )
    context = JobContext(client._registry, client._offline(), client._online())
    job = engine.submit(JobSpec(project=client.project, table="trips", batch_size=rows), context)
    beats: set[datetime] = set()
    views: set[JobStatus] = set()
    try:
        record = _stored(client, job.id)
        while not record.status.is_terminal:
            if record.status is JobStatus.RUNNING and record.stats.rows_read == 0:
                assert record.updated_at is not None
                beats.add(record.updated_at)
            views.add(observed(record).status)  # as every reader sees it now
            time.sleep(0.05)
            record = _stored(client, job.id)
    finally:
        done = job.wait(60)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.stats.rows_read == rows
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at - done.started_at > timedelta(seconds=timeout)  # one slow batch
    assert len(beats) >= 3  # heartbeats written while it ran
    assert JobStatus.FAILED not in views  # never read as lost
