"""The faults a fresh tester found in the Feast 0.9 layer, each with its siblings (issue 11).

Real Core and Job Service servers with the Feast 0.9 services, as ``potluck core`` and ``potluck
jobservice`` add them: a table without a batch source is refused through Feast's Core and kept out
of Feast's sight when potluck holds one (checked with Feast 0.9's own SDK), and every empty
required field of every Feast RPC is ``INVALID_ARGUMENT`` naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from potluck import Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType
from potluck._proto.feast.core import CoreService_pb2 as core_pb
from potluck._proto.feast.core import CoreService_pb2_grpc as core_grpc
from potluck._proto.feast.core import DataSource_pb2 as source_pb
from potluck._proto.feast.core import Entity_pb2 as entity_pb
from potluck._proto.feast.core import FeatureTable_pb2 as table_pb
from potluck._proto.feast.core import JobService_pb2 as jobs_pb
from potluck._proto.feast.core import JobService_pb2_grpc as jobs_grpc
from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES
from potluck.config import load_settings
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
TRIPS = Feature(name="trips", value_type=ValueType.INT64)


class Servers:
    """A registry with a batch table and a stream-only table, Core and the Job Service on it."""

    def __init__(self, root: Path) -> None:
        (root / "potluck.yaml").write_text(
            f"registry: sqlite:///{root / 'registry.db'}\n"
            f"online_store: {{type: sqlite, path: {root / 'online.db'}}}\n"
        )
        self.root = root
        self.registry = SqlRegistry(f"sqlite:///{root / 'registry.db'}")
        self.registry.apply(
            "default",
            [
                DRIVER,
                FeatureTable(
                    name="driver_stats",
                    entities=("driver_id",),
                    features=(TRIPS,),
                    max_age=timedelta(days=1),
                    batch_source=FileSource(
                        path=str(root / "data"),
                        event_timestamp_column="event_timestamp",
                        created_timestamp_column="created",
                    ),
                ),
                FeatureTable(
                    name="events",
                    entities=("driver_id",),
                    features=(TRIPS,),
                    stream_source=KafkaSource(
                        bootstrap_servers="127.0.0.1:9092",
                        topic="default.events",
                        message_format="json",
                        event_timestamp_column="event_timestamp",
                    ),
                ),
            ],
        )
        self.core = start_core_server(self.registry, services=CORE_SERVICES)
        self.service = JobService(load_settings(root / "potluck.yaml", environ={}))
        self.jobs = start_jobservice_server(self.service, services=JOB_SERVICES)
        self._channels = [grpc.insecure_channel(a) for a in (self.core.address, self.jobs.address)]
        self.core_stub = core_grpc.CoreServiceStub(self._channels[0])
        self.jobs_stub = jobs_grpc.JobServiceStub(self._channels[1])

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.jobs.stop(None)
        self.core.stop(None)
        self.service.close()
        self.registry.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory.mktemp("feast-faults"))
    yield s
    s.close()


def _error(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    return err.value.code(), err.value.details()


# ---- 5: feature tables without a batch source --------------------------------------------------


def _spec(name: str) -> table_pb.FeatureTableSpec:
    spec = table_pb.FeatureTableSpec(name=name, entities=["driver_id"])
    spec.features.add(name="trips", value_type=4)  # INT64
    return spec


def test_apply_without_a_batch_source_is_refused_naming_it(servers: Servers) -> None:
    spec = _spec("no_batch")
    spec.stream_source.CopyFrom(
        source_pb.DataSource(
            type=source_pb.DataSource.STREAM_KAFKA,
            event_timestamp_column="event_timestamp",
            kafka_options=source_pb.DataSource.KafkaOptions(
                bootstrap_servers="127.0.0.1:9092", topic="t"
            ),
        )
    )
    spec.stream_source.kafka_options.message_format.json_format.SetInParent()
    for table in (_spec("no_source"), spec):
        request = core_pb.ApplyFeatureTableRequest(project="default", table_spec=table)
        assert _error(servers.core_stub.ApplyFeatureTable, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"feature table {table.name}: batch_source is not set; Feast 0.9 requires one: a "
            "BATCH_FILE source with file_options (file_url, parquet_format) and "
            "event_timestamp_column (a stream-only table can be applied with potluck's own SDK "
            "or CLI, but Feast clients do not see it)",
        )
    stored = servers.registry.list("default", "feature_table")
    assert sorted(t.name for t in stored) == ["driver_stats", "events"]


def test_a_stream_only_table_is_left_out_of_feasts_view(servers: Servers) -> None:
    listed = servers.core_stub.ListFeatureTables(
        core_pb.ListFeatureTablesRequest(filter=core_pb.ListFeatureTablesRequest.Filter())
    )
    assert [t.spec.name for t in listed.tables] == ["driver_stats"]
    request = core_pb.GetFeatureTableRequest(project="default", name="events")
    assert _error(servers.core_stub.GetFeatureTable, request) == (
        grpc.StatusCode.NOT_FOUND,
        "feature table events has no batch_source, which Feast 0.9 requires, so Feast clients "
        "do not see it (it is stream-only in potluck project default); read it with potluck's "
        "SDK or CLI",
    )
    features = servers.core_stub.ListFeatures(
        core_pb.ListFeaturesRequest(filter=core_pb.ListFeaturesRequest.Filter())
    )
    assert sorted(features.features) == ["driver_stats:trips", "events:trips"]


SDK_SCRIPT = """
import json, sys
import grpc
from feast import Client
client = Client(core_url=sys.argv[1], telemetry=False)
out = {"listed": [t.name for t in client.list_feature_tables()]}
out["batch"] = client.get_feature_table("driver_stats").batch_source.file_options.file_url
try:
    client.get_feature_table("events")
except grpc.RpcError as exc:
    out["events"] = str(exc)
print(json.dumps(out))
"""


def test_feasts_own_sdk_lists_a_project_holding_a_stream_only_table(
    servers: Servers, feast09_python: Path
) -> None:
    env = {
        **os.environ,
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        "FEAST_TELEMETRY": "False",
    }
    done = subprocess.run(
        [str(feast09_python), "-c", SDK_SCRIPT, servers.core.address],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "listed": ["driver_stats"],
        "batch": f"file://{servers.root / 'data'}",
        "events": "feature table events has no batch_source, which Feast 0.9 requires, so "
        "Feast clients do not see it (it is stream-only in potluck project default); read it "
        "with potluck's SDK or CLI",
    }


# ---- 6: every empty required field of every Feast RPC ------------------------------------------


def _entity_file() -> source_pb.DataSource:
    return source_pb.DataSource(
        type=source_pb.DataSource.BATCH_FILE,
        file_options=source_pb.DataSource.FileOptions(file_url="file:///tmp/entities"),
    )


EMPTY_FIELDS: list[tuple[str, str, Any, str]] = [
    ("core", "GetEntity", core_pb.GetEntityRequest(), "name is not set: name an entity"),
    (
        "core",
        "GetFeatureTable",
        core_pb.GetFeatureTableRequest(),
        "name is not set: name a feature table",
    ),
    (
        "core",
        "DeleteFeatureTable",
        core_pb.DeleteFeatureTableRequest(),
        "name is not set: name the feature table to delete",
    ),
    (
        "core",
        "CreateProject",
        core_pb.CreateProjectRequest(),
        "name is not set: name the project",
    ),
    (
        "core",
        "ArchiveProject",
        core_pb.ArchiveProjectRequest(),
        "name is not set: name the project",
    ),
    (
        "core",
        "ApplyEntity",
        core_pb.ApplyEntityRequest(spec=entity_pb.EntitySpecV2(value_type=4)),
        "spec.name is not set: name the entity",
    ),
    (
        "core",
        "ApplyFeatureTable",
        core_pb.ApplyFeatureTableRequest(table_spec=_spec("")),
        "table_spec.name is not set: name the feature table",
    ),
    (
        "jobs",
        "StartOfflineToOnlineIngestionJob",
        jobs_pb.StartOfflineToOnlineIngestionJobRequest(project="default"),
        "table_name is not set: name the feature table whose job to start",
    ),
    (
        "jobs",
        "StartStreamToOnlineIngestionJob",
        jobs_pb.StartStreamToOnlineIngestionJobRequest(project="default"),
        "table_name is not set: name the feature table whose job to start",
    ),
    (
        "jobs",
        "GetHistoricalFeatures",
        jobs_pb.GetHistoricalFeaturesRequest(
            feature_refs=["driver_stats:trips"], entity_source=_entity_file()
        ),
        "output_location is not set: name the folder the training set is written to (Feast's "
        "SDK: the historical_feature_output_location option)",
    ),
    (
        "jobs",
        "GetHistoricalFeatures",
        jobs_pb.GetHistoricalFeaturesRequest(
            feature_refs=["driver_stats:trips"], output_location="file:///tmp/out"
        ),
        "entity_source.file_options.file_url is not set: the entity rows must be a Parquet file "
        "source (Feast's SDK stages a dataframe as one when spark_staging_location is set)",
    ),
    (
        "jobs",
        "GetHistoricalFeatures",
        jobs_pb.GetHistoricalFeaturesRequest(
            entity_source=_entity_file(), output_location="file:///tmp/out"
        ),
        "feature_refs is empty: name at least one feature, such as driver_stats:trips",
    ),
    (
        "jobs",
        "GetJob",
        jobs_pb.GetJobRequest(),
        "job_id is not set: give the id the start call returned",
    ),
    (
        "jobs",
        "CancelJob",
        jobs_pb.CancelJobRequest(),
        "job_id is not set: give the id the start call returned",
    ),
]


@pytest.mark.parametrize(
    ("service", "method", "request_", "message"),
    EMPTY_FIELDS,
    ids=[f"{m}-{msg.split(' ')[0]}" for _, m, _, msg in EMPTY_FIELDS],
)
def test_an_empty_required_field_is_invalid_argument_naming_it(
    servers: Servers, service: str, method: str, request_: Any, message: str
) -> None:
    stub = servers.core_stub if service == "core" else servers.jobs_stub
    assert _error(getattr(stub, method), request_) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert servers.service.list_jobs(None) == []
