"""The offline-to-online job on the local engine: real DuckDB offline store, SQLite and Redis
online stores, records in a SQLite registry, and the CLI commands around it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from _serving_support import (  # noqa: F401 - fixtures used by name
    DRIVER,
    micros,
    new_project,
    store_config,
    store_kind_fixture,
    utc_now,
)
from typer.testing import CliRunner

from potluck import Client, Feature, FeatureTable, FileSource, ValueType, plugins
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import JobError, ValidationError
from potluck.ingestion.engines.base import JobContext, RecordedJob
from potluck.ingestion.jobs import JobSpec, JobStats, JobStatus
from potluck.ingestion.offline_to_online import prepare_batch, run_offline_to_online
from potluck.serving.service import ServingService
from potluck.types import TIMESTAMP_ARROW_TYPE

NOW = utc_now()
T = [NOW - timedelta(hours=10 - i) for i in range(10)]
"""Ten event times an hour apart, the newest an hour ago."""


def _table(root: Path) -> FeatureTable:
    return FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
        ),
        max_age=timedelta(days=1),
        batch_source=FileSource(
            path=str(root / "data" / "driver_stats"),
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created",
        ),
    )


def _config(root: Path, online: dict[str, Any], project: str) -> Path:
    path = root / "potluck.yaml"
    settings = {
        "project": project,
        "registry": "sqlite:///registry.db",
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "engine": {"type": "local"},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def _frame(rows: list[tuple[int, datetime, datetime | None, float | None, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series([r[0] for r in rows], dtype="int64"),
            "event_timestamp": pd.to_datetime([r[1] for r in rows], utc=True),
            "created": pd.to_datetime([r[2] for r in rows], utc=True),
            "conv_rate": pd.Series([r[3] for r in rows], dtype="float64"),
            "trips": pd.Series([r[4] for r in rows], dtype="int64"),
        }
    )


@pytest.fixture()
def client(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Client]:
    redis_url = request.getfixturevalue("redis_url") if store_kind == "redis" else None
    config = _config(tmp_path, store_config(store_kind, tmp_path, redis_url), new_project())
    c = Client(settings=load_settings(config))
    c.apply([DRIVER, _table(tmp_path)])
    yield c
    c.close()


ROWS = [
    (1, T[1], None, 0.1, 1),
    (1, T[2], None, 0.2, 2),
    (1, T[8], None, 0.8, 8),  # outside [T1, T5)
    (2, T[3], T[3], 0.3, 3),
    (2, T[3], T[4], 0.4, 4),  # same event time, created later: wins
    (3, T[0], None, 0.0, 0),  # before the range
]
REFS = ["driver_stats:conv_rate", "driver_stats:trips"]


def _online(client: Client, ids: list[int]) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    resp = client.get_online_features(REFS, [{"driver_id": i} for i in ids])
    return resp.to_dict(), resp.statuses()


def test_range_keeps_the_newest_row_per_key(client: Client) -> None:
    client.ingest("driver_stats", _frame(ROWS))
    job = client.start_offline_to_online_ingestion("driver_stats", T[1], T[5])
    done = job.wait(timeout=60)
    assert done.status is JobStatus.SUCCEEDED
    # Driver 2's row created at T3 is superseded within its ingestion (never read).
    assert done.stats == JobStats(rows_read=3, rows_written=2, rows_skipped=1, rows_rejected=0)
    assert done.max_event_timestamp_us == micros(T[3])
    values, statuses = _online(client, [1, 2, 3])
    assert values == {
        "driver_id": [1, 2, 3],
        "driver_stats__conv_rate": [0.2, 0.4, None],
        "driver_stats__trips": [2, 4, None],
    }
    assert statuses["driver_stats__trips"] == ["PRESENT", "PRESENT", "NOT_FOUND"]

    later = client.start_offline_to_online_ingestion("driver_stats", T[5], T[9]).wait(timeout=60)
    assert later.stats == JobStats(rows_read=1, rows_written=1, rows_skipped=0, rows_rejected=0)
    again = client.start_offline_to_online_ingestion("driver_stats", T[1], T[5]).wait(timeout=60)
    assert again.stats == JobStats(rows_read=3, rows_written=0, rows_skipped=3, rows_rejected=0)
    assert _online(client, [1])[0]["driver_stats__trips"] == [8]


def test_since_last_picks_up_late_rows(client: Client) -> None:
    first_version = client.ingest("driver_stats", _frame(ROWS)).version
    first = client.start_offline_to_online_ingestion("driver_stats", since_last=True).wait(60)
    assert (first.since_version, first.source_version) == (None, first_version)
    assert first.stats.rows_read == len(ROWS) - 1  # less the row its own ingestion superseded
    late = [(3, T[6], None, 0.6, 6), (1, T[7], None, 0.7, 7)]  # 1's T7 is older than its T8
    late_version = client.ingest("driver_stats", _frame(late)).version
    second = client.start_offline_to_online_ingestion("driver_stats", since_last=True).wait(60)
    assert (second.since_version, second.source_version) == (first_version, late_version)
    assert second.stats == JobStats(rows_read=2, rows_written=1, rows_skipped=1, rows_rejected=0)
    assert _online(client, [1, 3])[0]["driver_stats__trips"] == [8, 6]
    third = client.start_offline_to_online_ingestion("driver_stats", since_last=True).wait(60)
    assert third.stats == JobStats()
    assert (third.since_version, third.source_version) == (late_version, late_version)


def test_job_records(client: Client, tmp_path: Path) -> None:
    client.ingest("driver_stats", _frame(ROWS))
    job = client.start_offline_to_online_ingestion("driver_stats", T[1], T[5])
    job.wait(60)
    jobs = client.list_jobs()
    assert [j.id for j in jobs] == [job.id]
    record = jobs[0]
    assert (record.spec.table, record.spec.start, record.spec.end) == ("driver_stats", T[1], T[5])
    assert record.status is JobStatus.SUCCEEDED
    assert record.started_at is not None and record.finished_at is not None
    assert record.created_at <= record.started_at <= record.finished_at
    other = Client(settings=client.settings)  # another process would see the same
    try:
        seen = other.get_job(job.id)
        assert isinstance(seen, RecordedJob)
        assert seen.record() == record
        assert seen.wait(1).stats == job.stats
    finally:
        other.close()
    service = ServingService(client._registry, client._online(), client.project)
    service.refresh()
    expected = (utc_now() - T[3]).total_seconds()  # T was fixed when the module loaded
    assert abs(service.freshness()[(client.project, "driver_stats")] - expected) < 60


def test_close_waits_for_the_clients_jobs(client: Client) -> None:
    client.ingest("driver_stats", _frame(ROWS))
    other = Client(settings=client.settings)
    job = other.start_offline_to_online_ingestion("driver_stats")
    other.close()
    assert client.get_job(job.id).record().status is JobStatus.SUCCEEDED


def test_cancel_stops_between_batches(client: Client) -> None:
    rows = [(i, T[1], None, 0.5, i) for i in range(400)]
    client.ingest("driver_stats", _frame(rows))
    engine = plugins.create(plugins.ENGINES, {"type": "local", "progress_interval": 0})
    context = JobContext(client._registry, client._offline(), client._online())
    spec = JobSpec(project=client.project, table="driver_stats", batch_size=1)
    job = engine.submit(spec, context)
    RecordedJob(client._registry, client.project, job.id).cancel()  # as `potluck jobs cancel`
    done = job.wait(60)
    assert done.status is JobStatus.CANCELLED
    assert done.cancel_requested
    assert done.stats.rows_read < 400  # seen before the first batch or between two
    assert client.get_job(job.id).record().status is JobStatus.CANCELLED


def test_failures_are_recorded(tmp_path: Path) -> None:
    config = _config(tmp_path, {"type": "redis", "url": "redis://127.0.0.1:1/0"}, new_project())
    with Client(settings=load_settings(config)) as client:
        table = _table(tmp_path)
        client.apply([DRIVER, table])
        client.ingest("driver_stats", _frame(ROWS))
        job = client.start_offline_to_online_ingestion("driver_stats")
        with pytest.raises(JobError) as err:
            job.wait(60)
        assert err.value.message.startswith(f"job {job.id} failed: online store Redis at ")
        assert job.status is JobStatus.FAILED
        assert client.get_job(job.id).record().error == job.record().error
        client.apply(
            [FeatureTable(name="no_source", entities=("driver_id",), features=table.features)]
        )
        with pytest.raises(ValidationError) as verr:
            client.start_offline_to_online_ingestion("no_source")
        assert verr.value.message == (
            "feature table 'no_source' has no batch_source, so there is nothing to copy to the "
            "online store"
        )
        with pytest.raises(ValidationError):
            client.start_offline_to_online_ingestion("driver_stats", T[5], T[1])


def test_prepare_batch_rejects_and_breaks_ties(tmp_path: Path) -> None:
    table = _table(tmp_path)
    ts = pa.array([T[1], T[1], T[1], None, T[2]], TIMESTAMP_ARROW_TYPE)
    batch = pa.RecordBatch.from_pydict(
        {
            "driver_id": pa.array([1, 1, 2, None, 2], pa.int64()),
            "conv_rate": pa.array([0.1, 0.2, 0.3, 0.4, 0.5]),
            "trips": pa.array([1, 2, 3, 4, 5]),
            "event_timestamp": ts,
            "created_timestamp": pa.array([T[0], None, None, None, None], TIMESTAMP_ARROW_TYPE),
            "ingestion_id": pa.array(["b", "a", "c", "a", "a"]),
        }
    )
    prepared = prepare_batch("p", table, {"driver_id": ValueType.INT64}, batch)
    assert prepared.stats == JobStats(rows_read=5, rows_written=0, rows_skipped=2, rows_rejected=1)
    assert prepared.max_ingestion_id == "c"
    assert prepared.max_event_timestamp_us == micros(T[2])
    assert prepared.rows is not None
    rows = prepared.rows.to_pydict()
    got = sorted(zip(rows["trips"], rows["conv_rate"], strict=True))
    assert got == [(1, 0.1), (5, 0.5)]  # a created time beats a null one; T2 beats T1


def test_run_checks_cancellation_before_each_batch(client: Client) -> None:
    client.ingest("driver_stats", _frame([(i, T[1], None, 0.5, i) for i in range(10)]))
    calls = iter([False, False, True])
    progress = run_offline_to_online(
        client.project,
        client.get_feature_table("driver_stats"),
        {"driver_id": ValueType.INT64},
        client._offline(),
        client._online(),
        start=None,
        end=None,
        batch_size=3,
        cancelled=lambda: next(calls),
    )
    assert progress.cancelled
    assert progress.stats == JobStats(rows_read=6, rows_written=6, rows_skipped=0, rows_rejected=0)


runner = CliRunner()


def test_cli(client: Client, tmp_path: Path) -> None:
    client.ingest("driver_stats", _frame(ROWS))
    config = str(tmp_path / "potluck.yaml")
    result = runner.invoke(
        app,
        [
            "--config",
            config,
            "ingest-online",
            "driver_stats",
            "--start",
            T[1].isoformat(),
            "--end",
            T[5].isoformat(),
        ],
    )
    assert result.exit_code == 0, result.output
    job_id = client.list_jobs()[0].id
    assert result.stdout.strip().splitlines()[-1] == (
        f"job {job_id} SUCCEEDED: 3 rows read, 2 written, 1 skipped, 0 rejected"
    )
    listed = runner.invoke(app, ["--config", config, "jobs", "list", "--output", "json"])
    assert listed.exit_code == 0
    assert [(j["id"], j["status"], j["rows_written"]) for j in json.loads(listed.stdout)] == [
        (job_id, "SUCCEEDED", 2)
    ]
    described = runner.invoke(app, ["--config", config, "jobs", "describe", job_id])
    assert described.exit_code == 0
    assert f"id                      {job_id}" in described.stdout.splitlines()
    got = runner.invoke(
        app,
        [
            "--config",
            config,
            "online",
            "get",
            "driver_stats:trips",
            "-e",
            "driver_id=2",
            "-e",
            "driver_id=3",
            "--output",
            "json",
        ],
    )
    assert got.exit_code == 0, got.output
    data = json.loads(got.stdout)
    assert data["values"] == {"driver_id": [2, 3], "driver_stats__trips": [4, None]}
    assert data["statuses"]["driver_stats__trips"] == ["PRESENT", "NOT_FOUND"]
    bad = runner.invoke(
        app, ["--config", config, "online", "get", "driver_stats:trips", "-e", "driver_id=x"]
    )
    assert bad.exit_code == 2
    assert bad.stderr == "error: entity 'driver_id' has type INT64; 'x' is not such a value\n"
    missing = runner.invoke(app, ["--config", config, "jobs", "cancel", "nope"])
    assert missing.exit_code == 2
