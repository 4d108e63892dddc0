"""Feast 0.9's own SDK (feast==0.9.5.2), unchanged, through potluck's Core, Serving and Job Service.

The SDK runs in its own venv as a subprocess (``_sdk_jobs_client.py``) against a real Core
server, a real Online Serving server and a real Job Service server started here with the Feast
0.9 services added, as ``potluck core``, ``potluck serve`` and ``potluck jobservice`` add them;
the stream job consumes a real Kafka topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pyarrow.parquet as pq
import pytest
from _describe import describe
from _run_feast import run_feast_script
from confluent_kafka.admin import AdminClient, NewTopic

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck._proto.feast.core import DataSource_pb2 as source_pb
from potluck._proto.feast.core import JobService_pb2 as pb
from potluck._proto.feast.core import JobService_pb2_grpc as pb_grpc
from potluck._proto.feast.serving import OnlineFeaturesV2_pb2 as v2_pb
from potluck._proto.feast.serving.ServingService_pb2 import NOT_FOUND, PRESENT
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES, SERVING_SERVICES
from potluck.config import load_settings
from potluck.ingestion.jobs import (
    STREAM_TO_ONLINE,
    JobStatus,
)
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import ServingServer, start_serving

SCRIPT = Path(__file__).with_name("_sdk_jobs_client.py")


@dataclass
class Services:
    data: Path
    client: Client
    core: CoreServer
    serving: ServingServer
    jobs: CoreServer
    job_service: JobService

    def sdk(self, python: Path, order: dict[str, Any]) -> dict[str, Any]:
        """Run ``_sdk_jobs_client.py`` with ``order`` plus the servers' addresses."""
        order = {
            **order,
            "core": self.core.address,
            "serving": self.serving.grpc_address,
            "jobservice": self.jobs.address,
            "data": str(self.data),
        }
        return run_feast_script(python, SCRIPT, order, home=self.data / "home")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("feast09_jobs")
    for folder in ("home", "staging", "output"):
        (data / folder).mkdir()
    config = data / "potluck.yaml"
    config.write_text(
        f"project: default\nregistry: sqlite:///{data}/registry.db\n"
        f"online_store: {{type: sqlite, path: {data}/online.db}}\n"
    )
    registry = SqlRegistry(f"sqlite:///{data}/registry.db")
    registry.list_projects()  # creates the database, as `potluck core` does at start
    core = start_core_server(registry, services=CORE_SERVICES)
    client = Client(config)
    serving = start_serving(
        client.serving_service(refresh_interval=3600), services=SERVING_SERVICES
    )
    job_service = JobService(load_settings(config))
    jobs = start_jobservice_server(job_service, services=JOB_SERVICES)
    try:
        yield Services(data, client, core, serving, jobs, job_service)
    finally:
        jobs.stop(None)
        job_service.close()
        serving.stop()
        core.stop()
        registry.close()


def _new_topic(bootstrap: str) -> str:
    name = f"potluck-feast09-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=20).values():
        future.result(timeout=30)
    return name


@pytest.mark.kafka
def test_feast_sdk_job_flow(services: Services, feast09_python: Path, kafka_bootstrap: str) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
    topic = _new_topic(kafka_bootstrap)
    out = services.sdk(
        feast09_python, {"now": now.isoformat(), "kafka": kafka_bootstrap, "topic": topic}
    )

    # Offline-to-online: the call returns at once; the SDK waits for DONE through GetJob.
    assert out["batch_start_seconds"] < 5
    assert (out["batch_table"], out["batch_status"]) == ("driver_stats", "COMPLETED")
    assert out["online"] == {
        "driver_id": [1001, 1002, 1003],
        "driver_stats:conv_rate": [0.5, 0.25, None],
        "driver_stats:trips": [3, 4, None],
        "driver_stats:nope": [None, None, None],
    }
    found = {"driver_stats:conv_rate": "PRESENT", "driver_stats:trips": "PRESENT"}
    missing = {"driver_stats:conv_rate": "NOT_FOUND", "driver_stats:trips": "NOT_FOUND"}
    assert out["online_statuses"] == [
        {"driver_id": "PRESENT", **found, "driver_stats:nope": "NOT_FOUND"},
        {"driver_id": "PRESENT", **found, "driver_stats:nope": "NOT_FOUND"},
        {"driver_id": "PRESENT", **missing, "driver_stats:nope": "NOT_FOUND"},
    ]

    # Historical retrieval: a folder of part files, equal to potluck's own training set.
    ids = out["ids"]
    output = services.data / "output"
    assert out["retrieval_status"] == "COMPLETED"
    assert out["output_uri"].startswith(f"file://{output}/")
    folder = Path(out["output_uri"].removeprefix("file://"))
    assert [p.name for p in folder.iterdir()] == ["part-00000.parquet"]
    feast_set = pq.read_table(out["output_uri"])
    entity_rows = pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1003, 1001],
            "event_timestamp": [now, now, now, now - timedelta(minutes=5)],
        }
    )
    entity_rows["event_timestamp"] = entity_rows["event_timestamp"].dt.tz_localize("UTC")
    ours = services.client.get_historical_features(
        ["driver_stats:conv_rate", "driver_stats:trips"], entity_rows
    ).to_arrow()
    assert feast_set.column_names == [
        "driver_id",
        "event_timestamp",
        "driver_stats__conv_rate",
        "driver_stats__trips",
    ]
    assert feast_set.drop_columns(["event_timestamp"]).to_pylist() == (
        ours.drop_columns(["event_timestamp"]).to_pylist()
    )
    assert feast_set.drop_columns(["event_timestamp"]).to_pydict() == {
        "driver_id": [1001, 1002, 1003, 1001],
        "driver_stats__conv_rate": [0.5, 0.25, None, 0.5],
        "driver_stats__trips": [3, 4, None, 3],
    }
    stamps = [t.replace(tzinfo=None) for t in feast_set.column("event_timestamp").to_pylist()]
    assert stamps == [now, now, now, now - timedelta(minutes=5)]

    # A stream job runs on the Kafka topic until the SDK cancels it; cancelled reads as failed.
    assert (out["stream_table"], out["stream_running"]) == ("driver_stats", "IN_PROGRESS")
    stream = {"id": ids["stream"], "type": "RemoteStreamIngestionJob", "table": "driver_stats"}
    assert out["unterminated"] == [{**stream, "status": "IN_PROGRESS"}]
    assert out["stream_cancelled"] == "FAILED"
    assert out["unterminated_after_cancel"] == []
    batch = {"id": ids["batch"], "type": "RemoteBatchIngestionJob", "table": "driver_stats"}
    retrieval = {"id": ids["retrieval"], "type": "RemoteRetrievalJob"}
    assert out["jobs"] == [
        {**stream, "status": "FAILED"},
        {**retrieval, "status": "COMPLETED"},
        {**batch, "status": "COMPLETED"},
    ]
    assert out["jobs_of_table"] == [ids["stream"], ids["batch"]]
    assert out["by_id"] == {
        "batch": {**batch, "status": "COMPLETED"},
        "retrieval": {**retrieval, "status": "COMPLETED"},
        "retrieval_uri": out["output_uri"],
        "stream": {**stream, "status": "FAILED"},
    }
    cancelled = services.job_service.get_job("default", ids["stream"])
    assert (cancelled.status, cancelled.spec.kind) == (JobStatus.CANCELLED, STREAM_TO_ONLINE)

    # Errors: the SDK shows only the details, which name the table, job or feature.
    assert out["errors"] == {
        "unknown_table": "feature table missing not found in project default",
        "unknown_stream_table": "feature table missing not found in project default",
        "unknown_job": "job no-such-job not found in any project",
        "unknown_feature": (
            "feature table 'driver_stats' has no feature 'nope' (in feature reference "
            "'driver_stats:nope'); its features: conv_rate, trips"
        ),
    }


def _refused(call: Any, request: Any) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request)
    return caught.value.code(), caught.value.details()


def test_job_service_requests_it_cannot_answer_are_invalid_argument(services: Services) -> None:
    with grpc.insecure_channel(services.jobs.address) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        file_source = source_pb.DataSource(
            type=source_pb.DataSource.BATCH_FILE,
            file_options=source_pb.DataSource.FileOptions(file_url="file:///tmp/entities"),
        )
        request = pb.GetHistoricalFeaturesRequest(
            feature_refs=["driver_stats:trips"],
            entity_source=file_source,
            output_location="file:///tmp/out",
            output_format="avro",
        )
        assert _refused(stub.GetHistoricalFeatures, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "output_format 'avro' is not supported; training sets are written as 'parquet'",
        )
        request.output_format = "parquet"
        request.ClearField("entity_source")
        assert _refused(stub.GetHistoricalFeatures, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "entity_source.file_options.file_url is not set: the entity rows must be a Parquet "
            "file source (Feast's SDK stages a dataframe as one when spark_staging_location is "
            "set)",
        )
        request.entity_source.CopyFrom(file_source)
        request.output_location = "out/relative"
        assert _refused(stub.GetHistoricalFeatures, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "output_location: 'out/relative' is a relative path; Core and the other servers do "
            "not accept relative paths (they cannot know the client's project root): send an "
            "absolute folder or a URL (potluck apply and the SDK resolve relative paths against "
            "the project root)",
        )
        assert _refused(stub.GetJob, pb.GetJobRequest()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "job_id is not set: give the id the start call returned",
        )
        assert _refused(stub.CancelJob, pb.CancelJobRequest(job_id="nope")) == (
            grpc.StatusCode.NOT_FOUND,
            "job nope not found in any project",
        )


def test_v2_read_of_only_unknown_features_of_a_known_table_is_all_not_found(
    services: Services,
) -> None:
    services.client.apply(
        [
            Entity(name="rider_id", value_type=ValueType.INT64),
            FeatureTable(
                name="rider_stats",
                entities=("rider_id",),
                features=(Feature(name="rides", value_type=ValueType.INT64),),
                batch_source=FileSource(
                    path=str(services.data / "rider_stats"), event_timestamp_column="ts"
                ),
            ),
        ]
    )
    request = v2_pb.GetOnlineFeaturesRequestV2(
        features=[v2_pb.FeatureReferenceV2(feature_table="rider_stats", name="nope")],
        entity_rows=[
            v2_pb.GetOnlineFeaturesRequestV2.EntityRow(
                fields={"rider_id": value_pb.Value(int64_val=7)}
            )
        ],
    )
    with grpc.insecure_channel(services.serving.grpc_address) as channel:
        call = channel.unary_unary(
            "/feast.serving.ServingService/GetOnlineFeaturesV2",
            request_serializer=v2_pb.GetOnlineFeaturesRequestV2.SerializeToString,
            response_deserializer=v2_pb.GetOnlineFeaturesResponseV2.FromString,
        )
        response = call(request)
    (row,) = response.field_values
    assert dict(row.fields) == {
        "rider_id": value_pb.Value(int64_val=7),
        "rider_stats:nope": value_pb.Value(),
    }
    assert dict(row.statuses) == {"rider_id": PRESENT, "rider_stats:nope": NOT_FOUND}


def test_job_service_proto_has_feast_09s_names_and_numbers(feast09_python: Path) -> None:
    run = subprocess.run(
        [str(feast09_python), str(SCRIPT)],
        input=json.dumps({"step": "descriptors"}),
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        },
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert json.loads(run.stdout) == json.loads(json.dumps(describe(pb.DESCRIPTOR)))
