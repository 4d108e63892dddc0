"""The faults a fresh tester found in the Job Service, each with its siblings (issue 11).

A real Job Service (gRPC on a free port, SQLite registry, local engine) and the real CLI: look-back
spans and cron expressions out of range are refused naming the option or field and echoing the
value; a tick that cannot start becomes a FAILED job once; a server that would start on a new empty
registry is refused; every required field of every RPC; the staging folder of a training set is
deleted; a lost Job Service names the job followed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
import yaml
from _js_support import DRIVER, NOW, Clock, seeded_client, settings_for, stats_table
from google.protobuf.duration_pb2 import Duration
from typer.testing import CliRunner

from potluck import Client, Feature, FeatureTable, KafkaSource, ValueType
from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as pb
from potluck._proto.potluck.jobservice.v1 import job_service_pb2_grpc as pb_grpc
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import ConfigError, FeatureRefError, UnavailableError, ValidationError
from potluck.ingestion.jobs import JobStatus
from potluck.jobservice.remote import RemoteJob, RemoteJobService
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.base import Schedule

POTLUCK = Path(sys.executable).parent / "potluck"
LOOK_BACK_TOO_LONG = (
    "is too long: at most 36500d (100 years); each run loads the span before its tick"
)
CRON_FORMS = (
    "use 5 fields 'minute hour day month weekday' such as '0 * * * *' (hourly), or 6 with "
    "seconds first such as '*/10 * * * * *' (every 10 seconds)"
)


class Remote:
    """A seeded project, its Job Service on a free port, and a client configuration using it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = settings_for(root, f"sqlite:///{root / 'registry.db'}")
        self.project = self.settings.project
        self.local = seeded_client(self.settings, stats_table(root))
        self.service = JobService(self.settings)
        self.server = start_jobservice_server(self.service)
        self.staging = root / "staging"
        values = yaml.safe_load((root / "potluck.yaml").read_text())
        values.update(job_service_url=self.server.address, staging_location=str(self.staging))
        self.config = root / "client.yaml"
        self.config.write_text(yaml.safe_dump(values))
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.JobServiceStub(self.channel)

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, ["-c", str(self.config), *args])
        return result.exit_code, result.stdout, result.stderr

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)
        self.service.close()
        self.local.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    r = Remote(tmp_path_factory.mktemp("faults"))
    yield r
    r.close()


# ---- 1 and 4: look-back spans and cron expressions -------------------------------------------


@pytest.mark.parametrize(
    ("look_back", "message"),
    [
        ("99999999d", f"--look-back 99999999d {LOOK_BACK_TOO_LONG}"),
        ("36501d", f"--look-back 36501d {LOOK_BACK_TOO_LONG}"),
        (
            "99999999999d",
            "--look-back: '99999999999d' is out of range; durations go up to 999999999d",
        ),
        ("-1h", "--look-back must be a positive duration such as 1h, got -1h"),
        ("0s", "--look-back must be a positive duration such as 1h, got 0s"),
        ("-0h30m", "--look-back must be a positive duration such as 1h, got -0h30m"),
    ],
)
def test_the_cli_refuses_a_look_back_out_of_range_naming_the_option_and_echoing_it(
    remote: Remote, look_back: str, message: str
) -> None:
    code, out, err = remote.cli(
        "jobs", "schedule", "driver_stats", "--cron", "*/5 * * * * *", f"--look-back={look_back}"
    )
    assert (code, out, err) == (2, "", f"error: {message}\n")
    assert remote.service.list_schedules(remote.project) == []


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("", f"--cron is empty; {CRON_FORMS}"),
        (" ", f"--cron is empty; {CRON_FORMS}"),
        (
            "* * *",
            f"--cron '* * *' is not a cron expression (Wrong number of fields); {CRON_FORMS}",
        ),
    ],
)
def test_the_cli_refuses_a_bad_cron_naming_the_option(
    remote: Remote, cron: str, message: str
) -> None:
    code, out, err = remote.cli(
        "jobs", "schedule", "driver_stats", "--cron", cron, "--look-back", "1h"
    )
    assert (code, out, err) == (2, "", f"error: {message}\n")


def test_a_six_field_cron_has_seconds_first(remote: Remote) -> None:
    code, out, _ = remote.cli(
        "jobs",
        "schedule",
        "driver_stats",
        "--cron",
        "*/10 * * * * *",
        "--look-back",
        "1h",
        "-o",
        "json",
    )
    assert code == 0
    schedule = remote.service.list_schedules(remote.project)[0]
    assert schedule.cron == "*/10 * * * * *"
    nxt = remote.stub.ListSchedules(pb.ListSchedulesRequest(project=remote.project)).schedules[0]
    assert nxt.next_tick.seconds % 10 == 0  # every 10 seconds, not weekday 10
    remote.service.unschedule(remote.project, "driver_stats")


@pytest.mark.parametrize(
    ("look_back", "message"),
    [
        (Duration(seconds=-3600), "look_back must be a positive duration such as 1h, got -1h"),
        (Duration(seconds=0), "look_back must be a positive duration such as 1h, got 0s"),
        (Duration(seconds=99_999_999 * 86_400), f"look_back 99999999d {LOOK_BACK_TOO_LONG}"),
        (
            Duration(seconds=10**15),
            "look_back 1000000000000000s is too long: at most 36500d (100 years)",
        ),
    ],
)
def test_grpc_refuses_a_look_back_out_of_range_with_invalid_argument(
    remote: Remote, look_back: Duration, message: str
) -> None:
    request = pb.ScheduleRequest(
        project=remote.project, table="driver_stats", cron="0 * * * *", look_back=look_back
    )
    with pytest.raises(grpc.RpcError) as err:
        remote.stub.ScheduleOfflineToOnline(request, timeout=10)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_the_sdk_names_the_look_back_field_and_echoes_it(remote: Remote) -> None:
    client = Client(settings=load_settings(remote.config, environ={}))
    try:
        with pytest.raises(ValidationError) as err:
            client.schedule_offline_to_online_ingestion(
                "driver_stats", "0 * * * *", -timedelta(hours=1, minutes=30)
            )
        assert err.value.message == "look_back must be a positive duration such as 1h, got -1h30m"
        assert err.value.field == "look_back"
    finally:
        client.close()


def test_a_tick_that_cannot_start_is_one_failed_job_with_the_reason(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    client = seeded_client(settings, stats_table(tmp_path))
    base = NOW - timedelta(seconds=NOW.second % 5)  # on a tick of */5 seconds
    clock = Clock(base)
    service = JobService(settings, clock=clock)
    try:
        # A schedule stored before look-backs were bounded: its range reaches before year 1.
        service.registry.put_schedule(
            Schedule(
                project=settings.project,
                table="driver_stats",
                cron="*/5 * * * * *",
                look_back=timedelta(days=99_999_999),
                created_at=base,
            )
        )
        clock.at = base + timedelta(seconds=7)
        tick = base + timedelta(seconds=5)
        first = service.scheduler.run_once()
        assert [(j.status, j.error) for j in first] == [
            (
                JobStatus.FAILED,
                f"the scheduled tick {tick.isoformat()} could not start its job: OverflowError: "
                "date value out of range",
            )
        ]
        assert service.scheduler.run_once() == []  # the same tick is never retried
        recorded = service.list_jobs(settings.project)
        assert [(j.id, j.status, j.spec.end) for j in recorded] == [
            (first[0].id, JobStatus.FAILED, tick)
        ]
    finally:
        service.close()
        client.close()


# ---- 2: a server that would start on a new empty registry ------------------------------------


CORE_URL_ONLY = (
    "needs a SQL registry (it does not read definitions through core_url 127.0.0.1:6565), but "
    "registry is not set: set registry to the registry's database, the one the Core service "
    "serves (a SQLite file or postgresql://...)"
)


@pytest.mark.parametrize(
    ("args", "server"),
    [
        (["jobservice", "--port", "0"], "potluck jobservice"),
        (["core", "--port", "0"], "potluck core"),
        (["core", "--job-service", "--port", "0"], "potluck core"),
    ],
)
def test_servers_refuse_core_url_without_a_sql_registry(
    tmp_path: Path, args: list[str], server: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("core_url: 127.0.0.1:6565\n")
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {server} {CORE_URL_ONLY} (read from {config})\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no new registry


def test_a_sqlite_registry_that_does_not_exist_beside_core_url_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("core_url: 127.0.0.1:6565\nregistry: sqlite:///gone/registry.db\n")
    settings = load_settings(config, environ={})
    with pytest.raises(ConfigError) as err:
        JobService(settings)
    assert err.value.message == (
        "the Job Service needs a SQL registry (it does not read definitions through core_url "
        f"127.0.0.1:6565), but registry names {tmp_path}/gone/registry.db, which does not "
        "exist: set registry to the registry's database, the one the Core service serves (a "
        f"SQLite file or postgresql://...) (read from {config})"
    )
    assert err.value.key == "registry"


def test_core_url_beside_an_existing_registry_is_served(remote: Remote) -> None:
    settings = remote.settings.model_copy(update={"core_url": "127.0.0.1:6565"})
    assert settings.served_registry_url("potluck core") == remote.settings.registry_url


# ---- 6: every required field of every RPC ----------------------------------------------------


def _requests(project: str) -> list[tuple[str, Any, str]]:
    hour = Duration(seconds=3600)
    refs = ["driver_stats:trips"]
    return [
        ("StartOfflineToOnline", pb.StartOfflineToOnlineRequest(table="driver_stats"), "project"),
        ("StartOfflineToOnline", pb.StartOfflineToOnlineRequest(project=project), "table"),
        ("StartStreamToOnline", pb.StartStreamToOnlineRequest(table="driver_stats"), "project"),
        ("StartStreamToOnline", pb.StartStreamToOnlineRequest(project=project), "table"),
        (
            "GetHistoricalFeatures",
            pb.GetHistoricalFeaturesRequest(
                feature_refs=refs, entity_source="/e.parquet", output_location="/o"
            ),
            "project",
        ),
        (
            "GetHistoricalFeatures",
            pb.GetHistoricalFeaturesRequest(
                project=project, entity_source="/e.parquet", output_location="/o"
            ),
            "feature_refs",
        ),
        (
            "GetHistoricalFeatures",
            pb.GetHistoricalFeaturesRequest(
                project=project, feature_refs=refs, output_location="/o"
            ),
            "entity_source",
        ),
        (
            "GetHistoricalFeatures",
            pb.GetHistoricalFeaturesRequest(
                project=project, feature_refs=refs, entity_source="/e.parquet"
            ),
            "output_location",
        ),
        ("GetJob", pb.JobRequest(job_id="x"), "project"),
        ("GetJob", pb.JobRequest(project=project), "job_id"),
        ("CancelJob", pb.JobRequest(job_id="x"), "project"),
        ("CancelJob", pb.JobRequest(project=project), "job_id"),
        (
            "ScheduleOfflineToOnline",
            pb.ScheduleRequest(table="driver_stats", cron="0 * * * *", look_back=hour),
            "project",
        ),
        (
            "ScheduleOfflineToOnline",
            pb.ScheduleRequest(project=project, cron="0 * * * *", look_back=hour),
            "table",
        ),
        (
            "ScheduleOfflineToOnline",
            pb.ScheduleRequest(project=project, table="driver_stats", look_back=hour),
            "cron",
        ),
        (
            "ScheduleOfflineToOnline",
            pb.ScheduleRequest(project=project, table="driver_stats", cron="0 * * * *"),
            "look_back",
        ),
        ("Unschedule", pb.UnscheduleRequest(table="driver_stats"), "project"),
        ("Unschedule", pb.UnscheduleRequest(project=project), "table"),
    ]


EMPTY_MESSAGES = {
    "project": "project: invalid name ''; names match [a-z_][a-z0-9_]* (lower-case letters, "
    "digits and underscores, not starting with a digit)",
    "table": "table is empty: name a feature table",
    "feature_refs": "feature_refs is empty: name at least one feature, such as driver_stats:trips",
    "entity_source": "entity_source must be a path or URL, got ''",
    "output_location": "output_location must be a path or URL, got ''",
    "job_id": "job_id is empty: name a job (see ListJobs)",
    "cron": f"cron is empty; {CRON_FORMS}",
    "look_back": "look_back is missing: give the span each run loads, such as 1h",
}


def test_every_empty_required_field_is_invalid_argument_naming_it(remote: Remote) -> None:
    seen = []
    for method, request, field in _requests(remote.project):
        with pytest.raises(grpc.RpcError) as err:
            getattr(remote.stub, method)(request, timeout=10)
        seen.append((method, field, err.value.code(), err.value.details()))
    assert seen == [
        (m, f, grpc.StatusCode.INVALID_ARGUMENT, EMPTY_MESSAGES[f])
        for m, _, f in _requests(remote.project)
    ]


# ---- 7 and 9: training sets through the Job Service ------------------------------------------


def test_historical_through_the_job_service_leaves_no_staging_folder(remote: Remote) -> None:
    entities = remote.root / "entities.parquet"
    pd.DataFrame(
        {"driver_id": [1, 2], "event_timestamp": pd.to_datetime([NOW, NOW], utc=True)}
    ).to_parquet(entities)
    out = remote.root / "training.parquet"
    code, stdout, err = remote.cli(
        "historical", "-f", "driver_stats:trips", "-e", str(entities), "--out", str(out)
    )
    assert (code, stdout, err) == (0, f"wrote 2 rows x 3 columns to {out}\n", "")
    assert pd.read_parquet(out)["driver_stats__trips"].tolist() == [11, 20]
    assert list(remote.staging.iterdir()) == []


def test_a_missing_entity_file_fails_as_in_process_and_leaves_no_staging_folder(
    remote: Remote,
) -> None:
    missing = remote.root / "does-not-exist"  # no suffix: read as Parquet, as Feast stages it
    code, stdout, err = remote.cli(
        "historical", "-f", "driver_stats:trips", "-e", str(missing), "--out", "t.parquet"
    )
    assert (code, stdout) == (1, "")
    assert err.startswith("error: job ") and err.endswith(
        f" failed: cannot read '{missing}': no such file\n"
    )
    assert list(remote.staging.iterdir()) == []


def test_a_refused_training_set_leaves_no_staged_entity_rows(remote: Remote) -> None:
    client = Client(settings=load_settings(remote.config, environ={}))
    frame = pd.DataFrame({"driver_id": [1], "event_timestamp": pd.to_datetime([NOW], utc=True)})
    try:
        with pytest.raises(FeatureRefError):
            client.get_historical_features(["driver_stats:nope"], frame)
        assert list(remote.staging.iterdir()) == []
    finally:
        client.close()


# ---- 8: losing the Job Service while following a job -----------------------------------------


def _lost(address: str, job_id: str) -> str:
    return (
        f"lost contact with the Job Service at {address} while following job {job_id}; the job "
        f"keeps running there (or is marked FAILED once its heartbeat times out): potluck jobs "
        f"describe {job_id}"
    )


def test_a_job_followed_through_a_stopped_job_service_names_the_job(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    client = seeded_client(settings, stats_table(tmp_path))
    service = JobService(settings)
    server = start_jobservice_server(service)
    remote = RemoteJobService(server.address, timeout=5)
    try:
        job = RemoteJob(remote, remote.start_offline_to_online(settings.project, "driver_stats"))
        job.wait(30)
        server.stop(None)
        for call in (job.record, job.cancel, lambda: job.wait(5)):
            with pytest.raises(UnavailableError) as err:
                call()
            assert err.value.message == _lost(server.address, job.id)
    finally:
        remote.close()
        server.stop(None)
        service.close()
        client.close()


def test_the_cli_names_the_job_when_the_job_service_is_killed(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"potluck-faults-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=20).values():
        future.result(timeout=30)
    events = FeatureTable(
        name="events",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        stream_source=KafkaSource(
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            message_format="json",
            event_timestamp_column="event_timestamp",
        ),
    )
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    client = Client(settings=settings)
    client.apply([DRIVER, events])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    job_service = subprocess.Popen(
        [str(POTLUCK), "jobservice", "--port", address.rpartition(":")[2]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    follower: subprocess.Popen[str] | None = None
    try:
        assert job_service.stderr is not None
        while "listening on" not in job_service.stderr.readline():
            assert job_service.poll() is None
        follower = subprocess.Popen(
            [str(POTLUCK), "stream", "events"],
            cwd=tmp_path,
            env={**env, "POTLUCK_JOB_SERVICE_URL": address},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not (jobs := [j for j in client.list_jobs() if j.spec.fingerprint is None]) or (
            jobs[0].status is not JobStatus.RUNNING  # the CLI's, not the control loop's
        ):
            assert time.monotonic() < deadline and follower.poll() is None
            time.sleep(0.1)
        job_service.kill()  # SIGKILL, mid-job
        out, err = follower.communicate(timeout=60)
        assert (follower.returncode, out, err) == (1, "", f"error: {_lost(address, jobs[0].id)}\n")
    finally:
        for process in (follower, job_service):
            if process is not None:
                if process.poll() is None:
                    process.kill()
                process.communicate()  # closes its pipes
        client.close()
