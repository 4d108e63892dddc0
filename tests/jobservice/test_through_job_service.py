"""The SDK and the CLI with ``job_service_url``: jobs, training sets and schedules go through a
real Job Service (gRPC on a free port, SQLite registry, local engine).

The client's own online store is another file than the Job Service's, so values that show up in
the Job Service's store were loaded by a job that ran there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from _js_support import NOW, seeded_client, settings_for, stats_table
from typer.testing import CliRunner

from potluck import Client
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import JobError, ValidationError
from potluck.ingestion.jobs import JobStatus
from potluck.jobservice.remote import RemoteJob
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService

ENTITIES = pd.DataFrame(
    {
        "driver_id": [1, 2],
        "event_timestamp": pd.to_datetime([NOW, NOW - timedelta(minutes=90)], utc=True),
    }
)


class Remote:
    """A seeded project, its Job Service on a free port, and a client configured to use it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = settings_for(root, f"sqlite:///{root / 'registry.db'}")
        self.project = self.settings.project
        self.local = seeded_client(self.settings, stats_table(root))
        self.service = JobService(self.settings)
        self.server = start_jobservice_server(self.service)
        values = yaml.safe_load((root / "potluck.yaml").read_text())
        values.update(
            job_service_url=self.server.address,
            staging_location="staging",
            online_store={"type": "sqlite", "path": str(root / "client-online.db")},
        )
        self.config = root / "client.yaml"
        self.config.write_text(yaml.safe_dump(values))
        self.client = Client(settings=load_settings(self.config, environ={}))

    def cli(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["-c", str(self.config), *args])
        return result.exit_code, result.stdout + result.stderr

    def close(self) -> None:
        self.client.close()
        self.server.stop(None)
        self.service.close()
        self.local.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    r = Remote(tmp_path_factory.mktemp("through"))
    yield r
    r.close()


def test_offline_to_online_runs_in_the_job_service_and_is_followed_from_the_client(
    remote: Remote,
) -> None:
    job = remote.client.start_offline_to_online_ingestion("driver_stats")
    assert isinstance(job, RemoteJob)
    done = job.wait(30)
    assert (done.status, done.stats.rows_read, done.stats.rows_written) == (
        JobStatus.SUCCEEDED,
        3,
        2,
    )
    values = remote.local.get_online_features(["driver_stats:trips"], [{"driver_id": 1}])
    assert values.to_dict()["driver_stats__trips"] == [11]
    assert not (remote.root / "client-online.db").exists()
    assert remote.client.list_jobs("driver_stats")[0].id == done.id
    assert remote.client.get_job(done.id).record().status is JobStatus.SUCCEEDED
    assert remote.client.cancel_job(done.id).record().status is JobStatus.SUCCEEDED


def test_a_training_set_from_an_in_memory_frame_is_staged_and_read_back(remote: Remote) -> None:
    job = remote.client.get_historical_features(["driver_stats:trips"], ENTITIES)
    table = job.to_arrow()
    assert table.column_names == ["driver_id", "event_timestamp", "driver_stats__trips"]
    assert table.column("driver_stats__trips").to_pylist() == [11, None]
    location = job.output_location
    assert location is not None and location.startswith(str(remote.root / "staging") + "/")
    folder = Path(location).parent
    assert sorted(p.name for p in folder.iterdir()) == ["entities.parquet", "output"]
    assert job.to_pandas()["driver_id"].tolist() == [1, 2]
    job.cleanup()
    assert not folder.exists()
    arrow = pa.Table.from_pandas(ENTITIES, preserve_index=False)
    again = remote.client.get_historical_features(["driver_stats:*"], arrow)
    assert again.to_arrow().column("driver_stats__trips").to_pylist() == [11, None]
    again.cleanup()


def test_an_entity_file_is_passed_by_absolute_path_and_a_failed_job_raises_its_error(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    ENTITIES.to_parquet(remote.root / "entities.parquet")
    monkeypatch.chdir(remote.root)
    job = remote.client.get_historical_features(["driver_stats:trips"], "entities.parquet")
    assert job.to_arrow().num_rows == 2
    record = remote.client.list_jobs()[0]
    assert record.spec.entity_source == str(remote.root / "entities.parquet")
    job.cleanup()
    failing = remote.client.get_historical_features(["driver_stats:trips"], "missing.parquet")
    with pytest.raises(JobError, match="missing.parquet"):
        failing.to_arrow()
    failing.cleanup()


def test_what_the_job_service_cannot_do_is_refused_naming_the_setting_or_argument(
    remote: Remote,
) -> None:
    unstaged = Client(settings=remote.client.settings.model_copy(update={"staging_location": None}))
    with pytest.raises(ValidationError) as missing:
        unstaged.get_historical_features(["driver_stats:trips"], ENTITIES)
    assert missing.value.field == "staging_location"  # type: ignore[attr-defined]
    assert missing.value.message == (
        "get_historical_features through the Job Service (job_service_url is set) needs the "
        "staging_location setting: a folder this client and the Job Service both read and "
        "write, such as s3://bucket/staging or a shared path; set staging_location (or "
        "POTLUCK_STAGING_LOCATION)"
    )
    unstaged.close()
    with pytest.raises(ValidationError, match=r"^versions cannot be given") as versions:
        remote.client.get_historical_features(
            ["driver_stats:trips"], ENTITIES, versions={"driver_stats": 1}
        )
    assert versions.value.field == "versions"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match=r"^group_id cannot be given") as group:
        remote.client.start_stream_to_online_ingestion("driver_stats", group_id="mine")
    assert group.value.field == "group_id"  # type: ignore[attr-defined]


def test_the_cli_follows_the_job_service(remote: Remote) -> None:
    code, out = remote.cli("ingest-online", "driver_stats", "--full", "-o", "json")
    assert code == 0, out
    ran = json.loads(out)
    assert (ran["status"], ran["rows_read"], ran["rows_written"]) == ("SUCCEEDED", 3, 2)
    code, out = remote.cli("jobs", "list", "-o", "json")
    assert code == 0 and json.loads(out)[0]["id"] == ran["id"]
    assert [j.id for j in remote.service.list_jobs(remote.project)][0] == ran["id"]
    code, out = remote.cli("jobs", "describe", ran["id"], "-o", "json")
    assert code == 0 and json.loads(out)["status"] == "SUCCEEDED"
    code, out = remote.cli("jobs", "cancel", ran["id"])
    assert (code, out.strip()) == (
        0,
        f"job {ran['id']} has already ended with status SUCCEEDED; nothing to cancel",
    )
    ENTITIES.to_parquet(remote.root / "cli-entities.parquet")
    out_file = remote.root / "cli-training.parquet"
    code, out = remote.cli(
        "historical",
        "-f",
        "driver_stats:trips",
        "-e",
        str(remote.root / "cli-entities.parquet"),
        "-O",
        str(out_file),
        "-o",
        "json",
    )
    assert code == 0, out
    assert json.loads(out)["rows"] == 2
    assert pd.read_parquet(out_file)["driver_stats__trips"].tolist()[0] == 11
    code, out = remote.cli("stream", "driver_stats")
    assert (code, out.strip()) == (
        2,
        "error: feature table 'driver_stats' has no stream_source; give it a KafkaSource to "
        "publish to and stream from",
    )


def test_schedules_through_the_job_service_and_directly_on_the_registry(remote: Remote) -> None:
    code, out = remote.cli(
        "jobs", "schedule", "driver_stats", "--cron", "0 * * * *", "--look-back", "1h", "-o", "json"
    )
    assert code == 0, out
    made = json.loads(out)
    assert (made["table"], made["cron"], made["look_back"], made["last_tick"]) == (
        "driver_stats",
        "0 * * * *",
        "1h",
        None,
    )
    assert [s.cron for s in remote.service.list_schedules(remote.project)] == ["0 * * * *"]
    code, out = remote.cli("jobs", "schedules", "-o", "json")
    assert code == 0 and json.loads(out) == [made]
    code, out = remote.cli("jobs", "schedules")
    assert code == 0 and "driver_stats" in out
    assert out.strip().endswith(
        "note: schedules run only while a Job Service (potluck jobservice, or potluck core "
        "--job-service) runs on this registry"
    )
    code, out = remote.cli("jobs", "unschedule", "driver_stats")
    assert (code, out.strip()) == (0, "unscheduled driver_stats; jobs it already started go on")
    assert remote.service.list_schedules(remote.project) == []
    direct = remote.local.schedule_offline_to_online_ingestion(
        "driver_stats", "*/5 * * * *", timedelta(minutes=5)
    )
    assert [s.cron for s in remote.client.list_schedules()] == [direct.cron]
    remote.local.unschedule_offline_to_online_ingestion("driver_stats")
    code, out = remote.cli("jobs", "unschedule", "driver_stats")
    assert (code, out.strip()) == (
        2,
        f"error: feature table driver_stats has no schedule in project {remote.project}",
    )
    code, out = remote.cli(
        "jobs", "schedule", "driver_stats", "--cron", "hourly", "--look-back", "1h"
    )
    assert code == 2 and out.startswith("error: --cron 'hourly' is not a cron expression")
