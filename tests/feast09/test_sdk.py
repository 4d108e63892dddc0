"""Feast 0.9's own Python SDK (feast==0.9.5.2), unchanged, against potluck's Core and Serving.

The SDK runs in its own venv as a subprocess (``_sdk_client.py``) against a real Core server
and a real Online Serving server started here with the Feast 0.9 services added, as ``potluck
core`` and ``potluck serve`` add them. The flow is Feast 0.9's documented one: projects, apply an
entity and feature tables, read them back, ``ingest()`` dataframes (plain and date-partitioned
layouts), then potluck's own ``get_historical_features`` and offline-to-online load over the
files the SDK wrote, and the SDK's ``get_online_features`` with every status.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
from _run_feast import run_feast_script

from potluck import Client
from potluck._proto.feast.serving import OnlineFeaturesV2_pb2 as v2_pb
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.compat.feast09 import CORE_SERVICES, SERVING_SERVICES
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import ServingServer, start_serving
from potluck.serving.service import ServingService

SCRIPT = Path(__file__).with_name("_sdk_client.py")


@dataclass
class Services:
    data: Path
    client: Client
    service: ServingService
    core: CoreServer
    serving: ServingServer

    def sdk(self, python: Path, step: str, now: datetime | None = None) -> dict[str, Any]:
        """Run one step of ``_sdk_client.py``; ``now`` is naive UTC, as Feast 0.9 users write."""
        order = {
            "step": step,
            "core": self.core.address,
            "serving": self.serving.grpc_address,
            "data": str(self.data),
            "now": None if now is None else now.isoformat(),
        }
        return run_feast_script(python, SCRIPT, order, home=self.data / "home", timeout=120)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("feast09")
    (data / "home").mkdir()
    config = data / "potluck.yaml"
    config.write_text(
        f"project: default\nregistry: sqlite:///{data}/registry.db\n"
        f"online_store: {{type: sqlite, path: {data}/online.db}}\n"
    )
    registry = SqlRegistry(f"sqlite:///{data}/registry.db")
    registry.list_projects()  # creates the database, as `potluck core` does at start
    core = start_core_server(registry, services=CORE_SERVICES)
    client = Client(config)
    service = client.serving_service(refresh_interval=3600)
    serving = start_serving(service, services=SERVING_SERVICES)
    try:
        yield Services(data, client, service, core, serving)
    finally:
        serving.stop()
        core.stop()
        registry.close()


def test_feast_sdk_flow(services: Services, feast09_python: Path) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0, tzinfo=None)
    defined = services.sdk(feast09_python, "define", now)

    assert defined["version"]["core"]["version"] == defined["version"]["serving"]["version"]
    assert defined["projects"] == [[], ["feast_side"], []]
    assert defined["duplicate_project"] == "project feast_side already exists"
    assert defined["entity"] == {
        "name": "driver_id",
        "valueType": "INT64",
        "description": "a driver",
        "labels": {"team": "rides"},
    }
    avro = defined["avro"]
    assert defined["driver_stats"] == {
        "name": "driver_stats",
        "entities": ["driver_id"],
        "features": [
            {"name": "conv_rate", "valueType": "FLOAT", "labels": {"unit": "ratio"}},
            {"name": "trips", "valueType": "INT64"},
            {"name": "note", "valueType": "STRING"},
        ],
        "labels": {"owner": "rides"},
        "maxAge": "86400s",
        "batchSource": {
            "type": "BATCH_FILE",
            "eventTimestampColumn": "event_timestamp",
            "createdTimestampColumn": "created",
            "fileOptions": {
                "fileFormat": {"parquetFormat": {}},
                "fileUrl": f"file://{services.data}/driver_stats",
            },
        },
        "streamSource": {
            "type": "STREAM_KAFKA",
            "eventTimestampColumn": "event_timestamp",
            "kafkaOptions": {
                "bootstrapServers": "127.0.0.1:9092",
                "topic": "driver_trips",
                "messageFormat": {"avroFormat": {"schemaJson": avro}},
            },
        },
    }
    assert defined["driver_daily"]["batchSource"] == {
        "type": "BATCH_FILE",
        "eventTimestampColumn": "day",
        "datePartitionColumn": "date",
        "fileOptions": {
            "fileFormat": {"parquetFormat": {}},
            "fileUrl": f"file://{services.data}/driver_daily",
        },
    }
    assert defined["entities"] == ["driver_id"]
    assert defined["tables"] == ["driver_daily", "driver_stats"]
    assert defined["tables_by_label"] == ["driver_stats"]
    assert defined["features"] == [
        "driver_daily:avg_trips",
        "driver_stats:conv_rate",
        "driver_stats:note",
        "driver_stats:trips",
    ]
    assert defined["features_by_label"] == ["driver_stats:conv_rate"]
    assert defined["bigquery"] == (
        "feature table warehouse: batch_source.bigquery_options: BigQuery sources are not "
        "supported; a batch source is a file source: set file_options with a file_url and "
        "parquet_format"
    )
    assert defined["upper_entity"].startswith(
        "entity DriverId: entity.name: invalid name 'DriverId'; names match [a-z_][a-z0-9_]*"
    )
    assert defined["missing_table"] == "feature table missing not found in project default"

    # The SDK wrote its own layouts: <path>/<int(time)>.parquet and date=YYYY-MM-DD/<uuid>.parquet
    stats_files = sorted(p.name for p in (services.data / "driver_stats").iterdir())
    assert len(stats_files) == 1 and stats_files[0].endswith(".parquet")
    day = datetime(now.year, now.month, now.day)
    partitions = sorted(p.name for p in (services.data / "driver_daily").iterdir())
    assert partitions == [f"date={(day - timedelta(days=1)).date()}", f"date={day.date()}"]

    # potluck reads those files as its own: a training set ...
    client = services.client
    aware = now.replace(tzinfo=timezone.utc)
    earlier = aware - timedelta(minutes=30)
    midnight = day.replace(tzinfo=timezone.utc)
    training = client.get_historical_features(
        [
            "driver_stats:conv_rate",
            "driver_stats:trips",
            "driver_stats:note",
            "driver_daily:avg_trips",
        ],
        pd.DataFrame(
            {"driver_id": [1001, 1002, 1003, 1001], "event_timestamp": [aware] * 3 + [earlier]}
        ),
    ).to_arrow()
    assert training.drop_columns(["event_timestamp"]).to_pydict() == {
        "driver_id": [1001, 1002, 1003, 1001],
        "driver_stats__conv_rate": [0.5, 0.25, None, None],
        "driver_stats__trips": [3, 4, None, None],
        "driver_stats__note": ["slow", None, None, None],
        "driver_daily__avg_trips": [2.5, 7.0, None, 2.5 if earlier >= midnight else 1.5],
    }

    # ... and an offline-to-online load, read back through the SDK's get_online_features.
    for table in ("driver_stats", "driver_daily"):
        job = client.start_offline_to_online_ingestion(
            table, aware - timedelta(days=3), aware + timedelta(minutes=1)
        )
        job.wait()
        assert (job.status.name, job.stats.rows_written) == ("SUCCEEDED", 2)
    # A lower max_age makes the 10-minute-old row OUTSIDE_MAX_AGE (the store still holds it).
    lowered = replace(client.get_feature_table("driver_stats"), max_age=timedelta(minutes=5))
    client.apply([lowered])
    services.service.refresh()

    read = services.sdk(feast09_python, "online")

    assert read["values"] == {
        "driver_id": [1001, 1002, 1003],
        "driver_stats:conv_rate": [None, 0.25, None],
        "driver_stats:trips": [None, 4, None],
        "driver_stats:note": [None, None, None],
    }
    outside = {
        "driver_id": "PRESENT",
        "driver_stats:conv_rate": "OUTSIDE_MAX_AGE",
        "driver_stats:trips": "OUTSIDE_MAX_AGE",
        "driver_stats:note": "OUTSIDE_MAX_AGE",
    }
    present = {
        "driver_id": "PRESENT",
        "driver_stats:conv_rate": "PRESENT",
        "driver_stats:trips": "PRESENT",
        "driver_stats:note": "NULL_VALUE",
    }
    missing = {
        "driver_id": "PRESENT",
        "driver_stats:conv_rate": "NOT_FOUND",
        "driver_stats:trips": "NOT_FOUND",
        "driver_stats:note": "NOT_FOUND",
    }
    assert read["statuses"] == [outside, present, missing]
    assert read["daily"] == {"driver_id": [1001], "driver_daily:avg_trips": [2.5]}
    assert read["unknown_feature"] == {
        "values": {"driver_id": [1002], "driver_stats:trips": [4], "driver_stats:nope": [None]},
        "statuses": [
            {
                "driver_id": "PRESENT",
                "driver_stats:trips": "PRESENT",
                "driver_stats:nope": "NOT_FOUND",
            }
        ],
    }
    assert read["unknown_table"] == (
        "unknown feature 'default/nope:x': there is no feature table 'nope'"
    )
    assert read["tables_after_delete"] == ["driver_stats"]


def _v2(services: Services, request: v2_pb.GetOnlineFeaturesRequestV2) -> grpc.RpcError:
    with grpc.insecure_channel(services.serving.grpc_address) as channel:
        call = channel.unary_unary(
            "/feast.serving.ServingService/GetOnlineFeaturesV2",
            request_serializer=v2_pb.GetOnlineFeaturesRequestV2.SerializeToString,
            response_deserializer=v2_pb.GetOnlineFeaturesResponseV2.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
    return caught.value


def _row(**fields: int) -> v2_pb.GetOnlineFeaturesRequestV2.EntityRow:
    return v2_pb.GetOnlineFeaturesRequestV2.EntityRow(
        fields={k: value_pb.Value(int64_val=v) for k, v in fields.items()}
    )


def test_v2_requests_potluck_cannot_answer_are_invalid_argument(services: Services) -> None:
    ref = v2_pb.FeatureReferenceV2
    no_table = _v2(
        services,
        v2_pb.GetOnlineFeaturesRequestV2(
            features=[ref(name="conv_rate")], entity_rows=[_row(driver_id=1)]
        ),
    )
    assert (no_table.code(), no_table.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "features[0]: ':conv_rate' is not a feature reference; Feast 0.9 references name a "
        "feature table and one of its features (feature_table:feature)",
    )
    ragged = _v2(
        services,
        v2_pb.GetOnlineFeaturesRequestV2(
            features=[ref(feature_table="driver_stats", name="trips")],
            entity_rows=[_row(driver_id=1), _row(customer_id=2)],
        ),
    )
    assert (ragged.code(), ragged.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "entity row 1 must be a mapping with the keys of row 0 (driver_id), got {'customer_id': 2}",
    )
    empty = _v2(
        services,
        v2_pb.GetOnlineFeaturesRequestV2(
            features=[ref(feature_table="driver_stats", name="trips")],
            entity_rows=[v2_pb.GetOnlineFeaturesRequestV2.EntityRow()],
        ),
    )
    assert (empty.code(), empty.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "entity row 0 has no fields; give each row its entities' values, such as "
        "{'driver_id': 1001}",
    )
    metrics = services.serving.metrics.render().decode()
    counted = 'potluck_serving_errors_total{code="invalid_argument",endpoint="grpc:%s"} 3.0'
    assert counted % "GetOnlineFeaturesV2" in metrics


V2_RESPONSE = "feast.serving.GetOnlineFeaturesResponse"
"""Feast 0.9's name of the V2 response; potluck's is ``...ResponseV2`` (same wire)."""

NOT_SERVED = {
    "feast.core.ListStoresRequest",
    "feast.core.ListStoresRequest.Filter",
    "feast.core.ListStoresResponse",
    "feast.core.UpdateStoreRequest",
    "feast.core.UpdateStoreResponse",
    "feast.core.UpdateFeatureSetStatusResponse",
}
"""Feast 0.9 messages of the store RPCs, which potluck does not serve."""


def _potluck_messages() -> dict[str, dict[str, list[Any]]]:
    from potluck._proto.feast.core import (
        CoreService_pb2,
        DataFormat_pb2,
        DataSource_pb2,
        Entity_pb2,
        Feature_pb2,
        FeatureTable_pb2,
    )
    from potluck._proto.feast.serving import ServingService_pb2

    found: dict[str, dict[str, list[Any]]] = {}

    def walk(message: Any) -> None:
        found[message.full_name] = {
            f.name: [f.number, f.type, f.is_repeated] for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)

    modules = (
        CoreService_pb2,
        DataFormat_pb2,
        DataSource_pb2,
        Entity_pb2,
        Feature_pb2,
        FeatureTable_pb2,
        ServingService_pb2,
        v2_pb,
    )
    for module in modules:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            walk(message)
    return found


def test_the_protos_carry_feast_09s_field_names_and_numbers(
    services: Services, feast09_python: Path
) -> None:
    feast = services.sdk(feast09_python, "descriptors")
    ours = _potluck_messages()
    differences = {}
    for name, fields in feast["messages"].items():
        if name in NOT_SERVED:
            continue
        mine = ours.get(name.replace(V2_RESPONSE, V2_RESPONSE + "V2"), {})
        if name == "feast.core.StreamFormat":
            mine = {k: v for k, v in mine.items() if k != "json_format"}  # potluck's addition
        if name == "feast.serving.GetFeastServingInfoResponse":
            fields = {"version": fields["version"]}  # potluck answers the version only
        if mine != fields:
            differences[name] = (fields, mine)
    assert differences == {}
    from potluck._proto.feast.core import CoreService_pb2

    core = CoreService_pb2.DESCRIPTOR.services_by_name["CoreService"]
    expected = {
        k: v
        for k, v in feast["services"]["feast.core.CoreService"].items()
        if k not in ("ListStores", "UpdateStore")
    }
    assert {m.name: [m.input_type.full_name, m.output_type.full_name] for m in core.methods} == (
        expected
    )
