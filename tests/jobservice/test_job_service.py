"""The Job Service over gRPC on a real SQLite registry: jobs, training sets, schedules, errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pandas as pd
import pyarrow.parquet as pq
import pytest
from _js_support import NOW, Client, seeded_client, settings_for, stats_table

from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as pb
from potluck._proto.potluck.jobservice.v1 import job_service_pb2_grpc as pb_grpc
from potluck.errors import FeatureRefError, NotFoundError, ValidationError
from potluck.ingestion.jobs import JobStatus
from potluck.jobservice.remote import RemoteJob, RemoteJobService
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService


class Served:
    """A JobService served on a free port, a remote client of it, and a seeded project."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = settings_for(root, f"sqlite:///{root / 'registry.db'}")
        self.project = self.settings.project
        self.client: Client = seeded_client(self.settings, stats_table(root))
        self.service = JobService(self.settings)
        self.server = start_jobservice_server(self.service)
        self.remote = RemoteJobService(self.server.address)
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.JobServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.remote.close()
        self.server.stop(None)
        self.service.close()
        self.client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("jobservice"))
    yield s
    s.close()


def test_offline_to_online_runs_in_the_job_service_and_loads_the_online_store(
    served: Served,
) -> None:
    job = served.remote.start_offline_to_online(served.project, "driver_stats")
    assert job.spec.table == "driver_stats"
    done = RemoteJob(served.remote, job).wait(30)
    assert done.status is JobStatus.SUCCEEDED
    assert (done.stats.rows_read, done.stats.rows_written) == (3, 2)
    values = served.client.get_online_features(["driver_stats:trips"], [{"driver_id": 1}])
    assert values.to_dict()["driver_stats__trips"] == [11]
    listed = served.remote.list_jobs(served.project, table="driver_stats")
    assert done.id in [j.id for j in listed]
    assert served.client.list_jobs()[0].id == listed[0].id  # the same records, from anywhere


def test_historical_features_are_written_to_the_output_folder(served: Served) -> None:
    entities = served.root / "entities.parquet"
    pd.DataFrame(
        {
            "driver_id": [1, 2],
            "event_timestamp": pd.to_datetime([NOW, NOW - timedelta(minutes=90)], utc=True),
        }
    ).to_parquet(entities)
    output = served.root / "training"
    job = served.remote.get_historical_features(
        served.project, ["driver_stats:trips"], str(entities), str(output)
    )
    assert job.spec.output_location == str(output)
    done = RemoteJob(served.remote, job).wait(30)
    assert done.stats.rows_written == 2
    table = pq.read_table(output / "part-00000.parquet")
    assert table.column("driver_stats__trips").to_pylist() == [11, None]
    bare = served.remote.get_historical_features(
        served.project,
        ["driver_stats:trips"],
        str(entities),
        str(served.root / "bare"),
        full_feature_names=False,
    )
    RemoteJob(served.remote, bare).wait(30)
    names = pq.read_table(served.root / "bare" / "part-00000.parquet").column_names
    assert names == ["driver_id", "event_timestamp", "trips"]


def test_a_failed_retrieval_says_why_in_its_record(served: Served) -> None:
    job = served.remote.get_historical_features(
        served.project,
        ["driver_stats:trips"],
        str(served.root / "missing.parquet"),
        str(served.root / "out"),
    )
    done = served.remote.get_job(served.project, job.id)
    while not done.status.is_terminal:
        done = served.remote.get_job(served.project, job.id)
    assert done.status is JobStatus.FAILED
    assert "missing.parquet" in (done.error or "")


def test_client_mistakes_are_invalid_argument_or_not_found_naming_the_field(
    served: Served,
) -> None:
    cases = [
        (
            served.stub.StartOfflineToOnline,
            pb.StartOfflineToOnlineRequest(project=served.project, table="nope"),
            grpc.StatusCode.NOT_FOUND,
            f"feature table nope not found in project {served.project}",
        ),
        (
            served.stub.StartOfflineToOnline,
            pb.StartOfflineToOnlineRequest(project=served.project, table=""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "table is empty: name a feature table",
        ),
        (
            served.stub.GetJob,
            pb.JobRequest(project=served.project, job_id="x"),
            grpc.StatusCode.NOT_FOUND,
            f"job x not found in project {served.project}",
        ),
        (
            served.stub.Unschedule,
            pb.UnscheduleRequest(project=served.project, table="driver_stats"),
            grpc.StatusCode.NOT_FOUND,
            f"feature table driver_stats has no schedule in project {served.project}",
        ),
    ]
    for rpc, request, status, message in cases:
        with pytest.raises(grpc.RpcError) as caught:
            rpc(request)
        assert (caught.value.code(), caught.value.details()) == (status, message)  # type: ignore[attr-defined]
    with pytest.raises(
        ValidationError, match=r"^cron 'every hour' is not a cron expression"
    ) as bad:
        served.remote.schedule_offline_to_online(
            served.project, "driver_stats", "every hour", timedelta(hours=1)
        )
    assert bad.value.field == "cron"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="look_back must be a positive duration"):
        served.remote.schedule_offline_to_online(
            served.project, "driver_stats", "0 * * * *", timedelta(0)
        )
    with pytest.raises(FeatureRefError):
        served.remote.get_historical_features(
            served.project, ["driver_stats:nope"], "e.parquet", "out"
        )
    with pytest.raises(NotFoundError):
        served.remote.cancel_job(served.project, "nope")


def test_schedules_round_trip(served: Served) -> None:
    schedule = served.remote.schedule_offline_to_online(
        served.project, "driver_stats", "0 * * * *", timedelta(hours=2)
    )
    assert (schedule.cron, schedule.look_back, schedule.last_tick) == (
        "0 * * * *",
        timedelta(hours=2),
        None,
    )
    assert [s.table for s in served.remote.list_schedules(served.project)] == ["driver_stats"]
    served.remote.unschedule(served.project, "driver_stats")
    assert served.remote.list_schedules(served.project) == []
