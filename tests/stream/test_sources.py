"""Stream source definitions: their fields, their wire forms, and the checks apply makes.

Also the offline sink's exactly-once rule on a real Delta table (no broker needed).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potluck import (
    AvroFormat,
    Client,
    Entity,
    Feature,
    FeatureTable,
    FileSource,
    KafkaSource,
    ProtoFormat,
    ValueType,
)
from potluck.definitions import serde
from potluck.errors import ConflictError, DefinitionError
from potluck.ingestion.stream.batch import StreamTable
from potluck.ingestion.stream.offline_sink import OfflineSink, app_id
from potluck.offline.commits import AppTransaction, IngestionCommit, transaction_versions
from potluck.types import TIMESTAMP_ARROW_TYPE

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
SCHEMA = {
    "type": "record",
    "name": "DriverStats",
    "fields": [
        {"name": "driver_id", "type": "long"},
        {"name": "rate", "type": ["null", "double"]},
        {"name": "trips", "type": {"type": "array", "items": "int"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def kafka(**overrides: Any) -> KafkaSource:
    spec: dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:9092",
        "topic": "driver_stats",
        "message_format": AvroFormat(schema_json=json.dumps(SCHEMA)),
        "event_timestamp_column": "ts",
        "field_mapping": {"rate": "conv_rate"},
    }
    return KafkaSource(**{**spec, **overrides})


def table(source: KafkaSource | None = None, **overrides: Any) -> FeatureTable:
    spec: dict[str, Any] = {
        "name": "driver_stats",
        "entities": ["driver_id"],
        "features": [
            Feature(name="conv_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64_LIST),
        ],
        "stream_source": source or kafka(),
    }
    return FeatureTable(**{**spec, **overrides})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: kafka(topic="bad topic"),
            "stream_source.topic: 'bad topic' is not a Kafka topic name (1-249 letters, "
            "digits, '.', '_' or '-', not '.' or '..')",
        ),
        (
            lambda: kafka(dead_letter_topic="driver_stats"),
            "stream_source.dead_letter_topic: 'driver_stats' is the stream's own topic; bad "
            "messages need a topic of their own",
        ),
        (
            lambda: kafka(dead_letter_topic=".."),
            "stream_source.dead_letter_topic: '..' is not a Kafka topic name (1-249 letters, "
            "digits, '.', '_' or '-', not '.' or '..')",
        ),
        (
            lambda: kafka(offline_sink="yes"),
            "stream_source.offline_sink: must be true or false, got 'yes'",
        ),
        (
            lambda: AvroFormat(schema_json="{record"),
            "stream_source.message_format.schema_json: not JSON (Expecting property name enclosed "
            "in double quotes: line 1 column 2 (char 1)); give the Avro schema of the messages as "
            "JSON text",
        ),
        (
            lambda: AvroFormat(schema_json="{}", schema_id=-1),
            "stream_source.message_format.schema_id: must be a schema registry id (a whole number "
            "from 0 to 2147483647) or None for plain Avro, got -1",
        ),
    ],
    ids=["topic", "dlq-same", "dlq-name", "sink", "avro-json", "schema-id"],
)
def test_a_bad_stream_source_field_is_refused_naming_it(build: Any, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        build()
    assert info.value.message == message


def test_new_fields_round_trip_and_old_stored_forms_stay_as_they_were() -> None:
    full = table(
        kafka(
            message_format=AvroFormat(schema_json=json.dumps(SCHEMA), schema_id=42),
            dead_letter_topic="driver_stats.dlq",
            offline_sink=True,
        ),
        batch_source=FileSource(path="/data/x", event_timestamp_column="ts"),
    )
    data = serde.to_dict(full)
    assert data["stream_source"]["message_format"] == {
        "avro": json.dumps(SCHEMA),
        "schema_id": 42,
    }
    assert (data["stream_source"]["dead_letter_topic"], data["stream_source"]["offline_sink"]) == (
        "driver_stats.dlq",
        True,
    )
    assert serde.feature_table_from_dict(data) == full
    assert serde.feature_table_from_proto(serde.feature_table_to_proto(full)) == full
    plain = table(kafka(message_format="json"))
    assert sorted(serde.to_dict(plain)["stream_source"]) == [
        "bootstrap_servers",
        "created_timestamp_column",
        "event_timestamp_column",
        "field_mapping",
        "message_format",
        "topic",
        "type",
    ]
    assert serde.feature_table_from_proto(serde.feature_table_to_proto(plain)) == plain


@pytest.fixture()
def client(tmp_path: Path) -> Client:
    (tmp_path / "potluck.yaml").write_text(
        f"project: p\nregistry: sqlite:///{tmp_path / 'registry.db'}\n"
        f"online_store: {{type: sqlite, path: {tmp_path / 'online.db'}}}\n"
    )
    return Client(tmp_path / "potluck.yaml")


def _schema(**changes: Any) -> str:
    fields = [f for f in SCHEMA["fields"] if f["name"] not in changes]
    fields += [{"name": k, "type": v} for k, v in changes.items() if v is not None]
    return json.dumps({**SCHEMA, "fields": fields})


WHERE = "feature table driver_stats, topic 'driver_stats'"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            kafka(message_format=AvroFormat(schema_json=_schema(driver_id=None))),
            f"{WHERE}: the Avro schema has no field 'driver_id' for entity driver_id (INT64); add "
            "it, or map another field to it with field_mapping",
        ),
        (
            kafka(message_format=AvroFormat(schema_json=_schema(rate="string"))),
            f"{WHERE}: Avro field 'rate' has type \"string\", which does not convert to feature "
            "conv_rate (DOUBLE)",
        ),
        (
            kafka(message_format=AvroFormat(schema_json=_schema(trips="long"))),
            f"{WHERE}: Avro field 'trips' has type \"long\", which does not convert to feature "
            "trips (INT64_LIST)",
        ),
        (
            kafka(message_format=AvroFormat(schema_json=_schema(ts="long"))),
            f"{WHERE}: Avro field 'ts' has type \"long\", which does not convert to the event "
            "timestamp (UNIX_TIMESTAMP)",
        ),
        (
            kafka(
                message_format=AvroFormat(schema_json=_schema(driver_id=["null", "int", "long"]))
            ),
            f'{WHERE}: Avro field \'driver_id\' has type ["null", "int", "long"], which does not '
            "convert to entity driver_id (INT64)",
        ),
        (
            kafka(message_format=AvroFormat(schema_json='{"type": "array", "items": "long"}')),
            "feature table driver_stats: the Avro schema of topic 'driver_stats' must be a record "
            'with named fields ({"type": "record", "name": ..., "fields": [{"name": ..., "type": '
            "...}]})",
        ),
        (
            kafka(created_timestamp_column="created"),
            f"{WHERE}: the Avro schema has no field 'created' for the created timestamp "
            "(UNIX_TIMESTAMP); add it, or map another field to it with field_mapping",
        ),
        (
            kafka(field_mapping={"trips": "conv_rate"}),
            "stream_source: message field 'trips' would carry both feature conv_rate (DOUBLE) and "
            "feature trips (INT64_LIST); map one of them to another field with field_mapping",
        ),
        (
            kafka(offline_sink=True),
            "feature table driver_stats: its stream source has offline_sink set, so streamed rows "
            "are appended to the batch source, and the table has no batch_source; add one or drop "
            "offline_sink",
        ),
    ],
    ids=[
        "missing-key",
        "wrong-type",
        "not-a-list",
        "not-a-time",
        "union",
        "not-a-record",
        "created",
        "collision",
        "sink",
    ],
)
def test_apply_checks_the_message_layout_against_the_table(
    client: Client, source: KafkaSource, message: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        client.apply([DRIVER, table(source)])
    assert info.value.message == message
    assert client.list_projects() == []  # nothing applied


def test_apply_accepts_a_layout_that_converts(client: Client) -> None:
    client.apply([DRIVER, table()])
    assert client.get_feature_table("driver_stats").stream_source == kafka()


def test_apply_checks_a_protobuf_class_it_can_import(client: Client, proto_class: Any) -> None:
    proto = ProtoFormat(class_path="potluck_test_events_pb2.DriverEvent")
    good = table(
        kafka(message_format=proto, event_timestamp_column="event_timestamp", field_mapping={}),
        features=[
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="trips", value_type=ValueType.INT64_LIST),
        ],
    )
    client.apply([DRIVER, good])
    bad = table(
        kafka(message_format=proto, event_timestamp_column="event_timestamp", field_mapping={}),
        features=[Feature(name="conv_rate", value_type=ValueType.BOOL)],
    )
    with pytest.raises(DefinitionError) as info:
        client.apply([bad])
    assert info.value.message == (
        f"{WHERE}: protobuf field 'conv_rate' has type float, which does not convert to feature "
        "conv_rate (BOOL)"
    )
    elsewhere = table(
        kafka(message_format=ProtoFormat(class_path="not_here_pb2.Event")),
        features=good.features,
    )
    client.apply([elsewhere])  # a class this process cannot import is checked where it runs


T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def decoded(partition: int, offsets: range) -> pa.Table:
    n = len(offsets)
    return pa.table(
        {
            "driver_id": pa.array([o % 3 for o in offsets], pa.int64()),
            "conv_rate": pa.array([float(o) for o in offsets]),
            "trips": pa.array([[o] for o in offsets], pa.list_(pa.int64())),
            "event_timestamp": pa.array(
                [T0 + timedelta(seconds=o) for o in offsets], TIMESTAMP_ARROW_TYPE
            ),
            "created_timestamp": pa.array([T0] * n, TIMESTAMP_ARROW_TYPE),
            "partition": pa.array([partition] * n, pa.int32()),
            "offset": pa.array(list(offsets), pa.int64()),
        }
    )


def test_the_offline_sink_appends_each_offset_once_whatever_is_replayed(tmp_path: Path) -> None:
    feature_table = table(
        kafka(offline_sink=True),
        batch_source=FileSource(
            path=str(tmp_path / "data"),
            event_timestamp_column="event_ts",
            field_mapping={"rate_col": "conv_rate"},
        ),
    )
    sink = OfflineSink(
        StreamTable("p", feature_table, {"driver_id": ValueType.INT64}),
        {"driver_id": DRIVER},
        tmp_path,
    )
    assert sink.append(pa.concat_tables([decoded(0, range(10)), decoded(1, range(3))])) == 13
    assert sink.append(decoded(0, range(5, 15))) == 5  # 5..9 were appended before
    assert sink.append(decoded(0, range(5, 15))) == 0
    location = str(tmp_path / "data")
    ids = [app_id("driver_stats", p) for p in (0, 1, 2)]
    assert transaction_versions(location, ids) == dict(zip(ids, [14, 2, None], strict=True))
    rows = pq.read_table(tmp_path / "data")
    assert sorted(rows.column_names) == [
        "driver_id",
        "event_ts",
        "ingestion_id",
        "rate_col",
        "trips",
    ]
    assert sorted(rows.column("rate_col").to_pylist()) == sorted(
        [float(o) for o in range(15)] + [0.0, 1.0, 2.0]
    )


def test_a_commit_whose_transaction_moved_meanwhile_fails_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    location = str(tmp_path / "src")
    schema = pa.schema([("x", pa.int64())])
    first = IngestionCommit(
        location, "20300101T000000000000Z-aaaaaaaa", schema, (AppTransaction("app", 5, None),)
    )
    first.begin()
    first.write("part-a.parquet", pa.table({"x": [1]}))
    assert first.commit() == 1
    stale = IngestionCommit(
        location, "20300101T000000000001Z-bbbbbbbb", schema, (AppTransaction("app", 9, None),)
    )
    stale.begin()
    stale.write("part-b.parquet", pa.table({"x": [2]}))
    with pytest.raises(ConflictError) as info:
        stale.commit()
    assert info.value.message == (
        f"ingestion 20300101T000000000001Z-bbbbbbbb into {location!r} expected app at version "
        "None, and another writer moved it to 5 first; nothing was committed"
    )
    assert not (tmp_path / "src" / "part-b.parquet").exists()
    assert transaction_versions(location, ["app"]) == {"app": 5}
