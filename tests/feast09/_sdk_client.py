"""Feast 0.9's own SDK (feast==0.9.5.2) as a client of potluck's services.

Run by tests/feast09/test_sdk.py with the Python of the separate Feast venv
(scripts/feast09_venv.sh), never imported by pytest: it reads one JSON instruction from stdin
({"step": ..., "core": host:port, "serving": host:port, "data": folder, "now": iso time}), runs
that step of Feast 0.9's documented flow with the SDK's public API only, and prints what the SDK
returned as one JSON document on stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime, timedelta
from typing import Any

import grpc
import pandas as pd
from feast import Client, Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType
from feast.data_format import AvroFormat, ParquetFormat
from feast.data_source import BigQuerySource
from google.protobuf.duration_pb2 import Duration

AVRO = json.dumps(
    {
        "type": "record",
        "name": "DriverStats",
        "fields": [
            {"name": "driver_id", "type": "long"},
            {
                "name": "event_timestamp",
                "type": {"type": "long", "logicalType": "timestamp-micros"},
            },
            {"name": "conv_rate", "type": "float"},
            {"name": "trips", "type": "long"},
            {"name": "note", "type": ["null", "string"]},
        ],
    }
)


def _details(call: Any) -> str:
    """Run ``call``; return the text of the error the SDK raises (all a Feast user sees)."""
    try:
        call()
    except grpc.RpcError as exc:
        # Most calls re-raise grpc.RpcError(details); a few let the call's own error through.
        details = getattr(exc, "details", None)
        return str(details() if callable(details) else exc)
    raise AssertionError("the call did not fail")


def define(client: Client, data: str, now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {"version": client.version(), "projects": [client.list_projects()]}
    client.create_project("feast_side")
    out["projects"].append(client.list_projects())
    out["duplicate_project"] = _details(lambda: client.create_project("feast_side"))
    # feast 0.9.5.2's archive_project reads a missing self._project after a successful call
    with contextlib.suppress(AttributeError):
        client.archive_project("feast_side")
    out["projects"].append(client.list_projects())

    driver = Entity(
        name="driver_id",
        value_type=ValueType.INT64,
        description="a driver",
        labels={"team": "rides"},
    )
    stats = FeatureTable(
        name="driver_stats",
        entities=["driver_id"],
        features=[
            Feature("conv_rate", ValueType.FLOAT, labels={"unit": "ratio"}),
            Feature("trips", ValueType.INT64),
            Feature("note", ValueType.STRING),
        ],
        batch_source=FileSource(
            file_format=ParquetFormat(),
            file_url=f"file://{data}/driver_stats",
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created",
        ),
        stream_source=KafkaSource(
            event_timestamp_column="event_timestamp",
            bootstrap_servers="127.0.0.1:9092",
            message_format=AvroFormat(AVRO),
            topic="driver_trips",
        ),
        max_age=Duration(seconds=86400),
        labels={"owner": "rides"},
    )
    daily = FeatureTable(
        name="driver_daily",
        entities=["driver_id"],
        features=[Feature("avg_trips", ValueType.DOUBLE)],
        batch_source=FileSource(
            file_format=ParquetFormat(),
            file_url=f"file://{data}/driver_daily",
            event_timestamp_column="day",
            date_partition_column="date",
        ),
    )
    client.apply([driver, stats, daily])
    out["entity"] = client.get_entity("driver_id").to_dict()["spec"]
    out["driver_stats"] = client.get_feature_table("driver_stats").to_dict()["spec"]
    out["driver_daily"] = client.get_feature_table("driver_daily").to_dict()["spec"]
    out["entities"] = [e.name for e in client.list_entities()]
    out["tables"] = [t.name for t in client.list_feature_tables()]
    out["tables_by_label"] = [t.name for t in client.list_feature_tables(labels={"owner": "rides"})]
    features = client.list_features_by_ref(entities=["driver_id"])
    out["features"] = sorted(repr(ref) for ref in features)
    out["avro"] = AVRO
    out["features_by_label"] = sorted(
        repr(ref) for ref in client.list_features_by_ref(labels={"unit": "ratio"})
    )

    client.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [1001, 1002],
                "event_timestamp": [now - timedelta(minutes=10), now - timedelta(minutes=1)],
                "created": [now, now],
                "conv_rate": [0.5, 0.25],
                "trips": [3, 4],
                "note": ["slow", None],
            }
        ),
    )
    day = datetime(now.year, now.month, now.day)
    client.ingest(
        "driver_daily",
        pd.DataFrame(
            {
                "driver_id": [1001, 1001, 1002],
                "day": [day - timedelta(days=1), day, day - timedelta(days=1)],
                "avg_trips": [1.5, 2.5, 7.0],
            }
        ),
    )

    warehouse = FeatureTable(
        name="warehouse",
        entities=["driver_id"],
        features=[Feature("x", ValueType.INT64)],
        batch_source=BigQuerySource(event_timestamp_column="ts", table_ref="project:dataset.table"),
    )
    out["bigquery"] = _details(lambda: client.apply(warehouse))
    upper = Entity(name="DriverId", description="", value_type=ValueType.INT64)
    out["upper_entity"] = _details(lambda: client.apply(upper))
    out["missing_table"] = _details(lambda: client.get_feature_table("missing"))
    return out


def online(client: Client) -> dict[str, Any]:
    response = client.get_online_features(
        ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:note"],
        [{"driver_id": 1001}, {"driver_id": 1002}, {"driver_id": 1003}],
    )
    statuses = [
        {name: grpc_status_name(status) for name, status in row.statuses.items()}
        for row in response.field_values
    ]
    out: dict[str, Any] = {"values": response.to_dict(), "statuses": statuses}
    daily = client.get_online_features(["driver_daily:avg_trips"], [{"driver_id": 1001}])
    out["daily"] = daily.to_dict()
    # Feast 0.9 answers an unknown feature of a known table with a NOT_FOUND field, no error.
    unknown = client.get_online_features(
        ["driver_stats:trips", "driver_stats:nope"], [{"driver_id": 1002}]
    )
    out["unknown_feature"] = {
        "values": unknown.to_dict(),
        "statuses": [
            {name: grpc_status_name(status) for name, status in row.statuses.items()}
            for row in unknown.field_values
        ],
    }
    out["unknown_table"] = _details(
        lambda: client.get_online_features(["nope:x"], [{"driver_id": 1001}])
    )
    client.delete_feature_table("driver_daily")
    out["tables_after_delete"] = [t.name for t in client.list_feature_tables()]
    return out


def descriptors() -> dict[str, Any]:
    """Every message's fields (name: [number, type, repeated]) and every service's methods."""
    from feast.core import (
        CoreService_pb2,
        DataFormat_pb2,
        DataSource_pb2,
        Entity_pb2,
        Feature_pb2,
        FeatureTable_pb2,
    )
    from feast.serving import ServingService_pb2

    messages: dict[str, Any] = {}
    services: dict[str, Any] = {}

    def walk(message: Any) -> None:
        messages[message.full_name] = {
            f.name: [f.number, f.type, f.label == f.LABEL_REPEATED] for f in message.fields
        }
        for nested in message.nested_types:
            walk(nested)

    for module in (
        CoreService_pb2,
        DataFormat_pb2,
        DataSource_pb2,
        Entity_pb2,
        Feature_pb2,
        FeatureTable_pb2,
        ServingService_pb2,
    ):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            walk(message)
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = {
                m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods
            }
    return {"messages": messages, "services": services}


def grpc_status_name(number: int) -> str:
    from feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse

    return str(GetOnlineFeaturesResponse.FieldStatus.Name(number))


def main() -> None:
    order = json.load(sys.stdin)
    if order["step"] == "descriptors":
        json.dump(descriptors(), sys.stdout)
        return
    client = Client(core_url=order["core"], serving_url=order["serving"], telemetry=False)
    if order["step"] == "define":
        result = define(client, order["data"], datetime.fromisoformat(order["now"]))
    else:
        result = online(client)
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    main()
