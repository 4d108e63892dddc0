"""The job commands and the ingest commands' JSON output, in-process (CliRunner) on embedded
stores: ``jobs list`` at 80 columns with short id prefixes, ``jobs describe`` and ``jobs cancel``
by prefix, ``ingest`` and ``ingest-online --output json``, and the progress bar (on a terminal
only)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import NotFoundError
from potluck.ingestion.jobs import CANCEL_SUFFIX, Job, JobSpec, JobStats, JobStatus, save_job

runner = CliRunner()
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
T = datetime(2024, 5, 2, tzinfo=timezone.utc)


def _table(root: Path) -> FeatureTable:
    return FeatureTable(
        name="trips",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        batch_source=FileSource(
            path=str(root / "data" / "trips"), event_timestamp_column="event_timestamp"
        ),
    )


@pytest.fixture()
def config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "potluck.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "project": "jobs",
                "registry": "sqlite:///registry.db",
                "online_store": {"type": "sqlite", "path": "online.db"},
            }
        )
    )
    with Client(settings=load_settings(path)) as client:
        client.apply([DRIVER, _table(tmp_path)])
    yield path


def _job(job_id: str, table: str, status: JobStatus, started: datetime, **fields: object) -> Job:
    values: dict[str, object] = {
        "id": job_id,
        "spec": JobSpec(project="jobs", table=table),
        "engine": "local",
        "status": status,
        "created_at": started,
        "started_at": started,
        "updated_at": started,
        **fields,
    }
    return Job(**values)  # type: ignore[arg-type]


def _jobs(config: Path) -> list[Job]:
    """Five jobs, one running now, one lost, as ``jobs list`` sorts them (newest first)."""
    now = datetime.now(timezone.utc)
    minute = timedelta(minutes=1)
    jobs = [
        _job(
            "20240503T090000000000Z-eeeeeeee",
            "trips",
            JobStatus.RUNNING,
            T + 33 * 60 * minute,
            updated_at=now,
            stats=JobStats(65_536, 65_536, 0, 0),
            rows_total=250_000,
        ),
        _job(
            "20240502T001000123456Z-aaaaaaaa",
            "trips",
            JobStatus.SUCCEEDED,
            T + 10 * minute,
            finished_at=T + 12 * minute,
            stats=JobStats(1_250_000, 50_000, 1_199_000, 1_000),
            source_version=4,
            rows_total=1_250_000,
        ),
        _job(
            "20240502T000500654321Z-cccccccc",
            "trips",
            JobStatus.RUNNING,
            T + 5 * minute,
            stats=JobStats(300, 300, 0, 0),
        ),
        _job(
            "20240502T000500123456Z-bbbbbbbb",
            "driver_hourly_stats_v2",
            JobStatus.FAILED,
            T + 5 * minute,
            finished_at=T + 6 * minute,
            error="cannot reach the online store",
        ),
        _job(
            "20240501T130000000000Z-dddddddd",
            "trips",
            JobStatus.CANCELLED,
            T - 11 * 60 * minute,
            finished_at=T - 10 * 60 * minute,
            stats=JobStats(10, 5, 5, 0),
            cancel_requested=True,
        ),
    ]
    with Client(settings=load_settings(config)) as client:
        for job in jobs:
            save_job(client._registry, job)
    return jobs


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(config), *args], env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


def test_jobs_list_fits_80_columns_with_short_unique_ids(config: Path) -> None:
    _jobs(config)
    code, out, err = _cli(config, "jobs", "list")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "id                table          status          read  written  started (UTC)   ",
        "────────────────────────────────────────────────────────────────────────────────",
        "20240503          trips          RUNNING       65,536   65,536  2024-05-03 09:00",
        "20240502T001      trips          SUCCEEDED  1,250,000   50,000  2024-05-02 00:10",
        "20240502T0005006  trips          FAILED           300      300  2024-05-02 00:05",
        "20240502T0005001  driver_hourly  FAILED             0        0  2024-05-02 00:05",
        "                  _stats_v2                                                     ",
        "20240501          trips          CANCELLED         10        5  2024-05-01 13:00",
    ]
    assert max(len(line) for line in out.splitlines()) <= 80


def test_jobs_list_table_filter_keeps_prefixes_unique_in_the_project(config: Path) -> None:
    _jobs(config)
    code, out, _ = _cli(config, "jobs", "list", "--table", "driver_hourly_stats_v2")
    assert code == 0
    assert out.splitlines()[2].split()[:3] == [
        "20240502T0005001",
        "driver_hourly_stats_v",
        "FAILED",
    ]


def test_jobs_list_json_has_every_field_and_the_lost_view(config: Path) -> None:
    jobs = _jobs(config)
    code, out, _ = _cli(config, "jobs", "list", "--output", "json")
    assert code == 0
    listed = json.loads(out)
    assert [(j["id"], j["status"]) for j in listed] == [
        (jobs[0].id, "RUNNING"),
        (jobs[1].id, "SUCCEEDED"),
        (jobs[2].id, "FAILED"),
        (jobs[3].id, "FAILED"),
        (jobs[4].id, "CANCELLED"),
    ]
    assert listed[2]["error"] == (
        "lost: no heartbeat since 2024-05-02 00:05:00 UTC (its process died or hung)"
    )
    assert (listed[1]["rows_total"], listed[1]["heartbeat_timeout"]) == (1_250_000, 60.0)


def test_jobs_describe_takes_a_prefix(config: Path) -> None:
    jobs = _jobs(config)
    code, out, err = _cli(config, "jobs", "describe", "20240502T001")
    assert (code, err) == (0, "")
    assert out == (
        f"id                      {jobs[1].id}\n"
        "project                 jobs\n"
        "kind                    offline_to_online\n"
        "table                   trips\n"
        "start                   \n"
        "end                     \n"
        "since_last              False\n"
        "full                    False\n"
        "batch_size              65536\n"
        "engine                  local\n"
        "status                  SUCCEEDED\n"
        "rows_read               1250000\n"
        "rows_written            50000\n"
        "rows_skipped            1199000\n"
        "rows_rejected           1000\n"
        "created_at              2024-05-02T00:10:00+00:00\n"
        "started_at              2024-05-02T00:10:00+00:00\n"
        "finished_at             2024-05-02T00:12:00+00:00\n"
        "updated_at              2024-05-02T00:10:00+00:00\n"
        "heartbeat_timeout       60.0\n"
        "error                   \n"
        "since_version           \n"
        "source_id               \n"
        "source_version          4\n"
        "max_ingestion_id        \n"
        "max_event_timestamp_us  \n"
        "cancel_requested        False\n"
        "rows_total              1250000\n"
    )
    code, out, _ = _cli(config, "jobs", "describe", jobs[1].id, "--output", "json")
    assert (code, json.loads(out)["id"]) == (0, jobs[1].id)


def test_an_ambiguous_prefix_exits_2_listing_the_candidates(config: Path) -> None:
    _jobs(config)
    for command in ("describe", "cancel"):
        assert _cli(config, "jobs", command, "20240502T0005") == (
            2,
            "",
            "error: job id prefix '20240502T0005' is ambiguous in project 'jobs': it matches "
            "20240502T000500654321Z-cccccccc, 20240502T000500123456Z-bbbbbbbb; give more "
            "characters of the id\n",
        )


def test_an_unknown_prefix_exits_2(config: Path) -> None:
    _jobs(config)
    for command in ("describe", "cancel"):
        assert _cli(config, "jobs", command, "20240504") == (
            2,
            "",
            "error: no job with id or id prefix '20240504' in project 'jobs'; `potluck jobs "
            "list` shows the project's jobs\n",
        )


@pytest.mark.parametrize(
    ("prefix", "ended"),
    [
        ("20240502T001", "with status SUCCEEDED"),
        ("20240501", "with status CANCELLED"),
        ("20240502T0005001", "with status FAILED (cannot reach the online store)"),
        (
            "20240502T0005006",
            "with status FAILED (lost: no heartbeat since 2024-05-02 00:05:00 UTC (its "
            "process died or hung))",
        ),
    ],
)
def test_cancelling_an_ended_job_says_so_and_changes_nothing(
    config: Path, prefix: str, ended: str
) -> None:
    jobs = {job.id: job for job in _jobs(config)}
    [job_id] = [i for i in jobs if i.startswith(prefix)]
    assert _cli(config, "jobs", "cancel", prefix) == (
        0,
        f"job {job_id} has already ended {ended}; nothing to cancel\n",
        "",
    )
    with Client(settings=load_settings(config)) as client:
        with pytest.raises(NotFoundError):
            client._registry.get_job("jobs", job_id + CANCEL_SUFFIX)
        assert Job.from_record(client._registry.get_job("jobs", job_id)) == jobs[job_id]


def test_cancelling_a_running_job_writes_a_cancel_request(config: Path) -> None:
    running = _jobs(config)[0]
    assert _cli(config, "jobs", "cancel", "20240503") == (
        0,
        f"cancel requested for job {running.id} (status RUNNING)\n",
        "",
    )
    with Client(settings=load_settings(config)) as client:
        request = client._registry.get_job("jobs", running.id + CANCEL_SUFFIX)
    assert request.body["cancel_for"] == running.id


def _rows(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series(range(count), dtype="int64"),
            "event_timestamp": pd.to_datetime([datetime.now(timezone.utc)] * count, utc=True),
            "trips": pd.Series(range(count), dtype="int64"),
        }
    )


def test_ingest_and_ingest_online_print_json(config: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    _rows(1_000).to_parquet(source)
    code, out, err = _cli(config, "ingest", "trips", str(source), "--output", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert sorted(report) == ["files", "ingestion_id", "ingestion_time", "rows", "table", "version"]
    assert (report["table"], report["rows"], report["version"]) == ("trips", 1_000, 1)
    [written] = report["files"]
    assert Path(written).name == f"part-{report['ingestion_id']}-00000.parquet"
    assert datetime.fromisoformat(report["ingestion_time"]).tzinfo is not None

    code, out, err = _cli(config, "ingest-online", "trips", "-o", "json")
    assert (code, err) == (0, "")  # no progress bar: stderr is not a terminal
    record = json.loads(out)
    assert (record["status"], record["rows_total"], record["rows_read"]) == (
        "SUCCEEDED",
        1_000,
        1_000,
    )
    assert (record["table"], record["source_version"], record["error"]) == ("trips", 1, None)
    with Client(settings=load_settings(config)) as client:
        assert [j.id for j in client.list_jobs()] == [record["id"]]


def test_ingest_online_draws_a_bar_with_the_total_on_a_terminal_only(
    config: Path, tmp_path: Path
) -> None:
    source = tmp_path / "rows.parquet"
    _rows(3_000).to_parquet(source)
    assert _cli(config, "ingest", "trips", str(source))[0] == 0
    plain = runner.invoke(
        app, ["--config", str(config), "ingest-online", "trips"], env={"COLUMNS": "80"}
    )
    assert (plain.exit_code, plain.stderr) == (0, "")
    terminal = runner.invoke(
        app,
        ["--config", str(config), "ingest-online", "trips"],
        env={"COLUMNS": "80", "FORCE_COLOR": "1"},
    )
    assert terminal.exit_code == 0, terminal.output
    assert "3,000/3,000 rows" in terminal.stderr  # its last frame: every row read
    assert "100%" in terminal.stderr and "eta" in terminal.stderr
    assert terminal.stdout.startswith("job ")


def test_a_failed_job_prints_its_record_then_one_error_line(config: Path) -> None:
    shutil.rmtree(config.parent / "data" / "trips")  # apply created it; now nothing is there
    code, out, err = _cli(config, "ingest-online", "trips", "--output", "json")
    record = json.loads(out)
    message = (
        "the batch source of feature table 'trips' does not exist: nothing at "
        f"'{config.parent / 'data' / 'trips'}'; ingest rows into it (potluck ingest trips FILE) "
        "or fix its batch_source.path"
    )
    assert (record["status"], record["error"], record["rows_total"]) == ("FAILED", message, None)
    assert (code, err) == (1, f"error: job {record['id']} failed: {message}\n")
