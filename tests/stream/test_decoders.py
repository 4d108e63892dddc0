"""Decoding one micro-batch (the engine-neutral part): every format both ways, every bad reason.

No broker: raw messages are built as the consume loop (or Spark's Kafka source) hands them over.
"""

from __future__ import annotations

import io
import json
import pickle
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from potluck import AvroFormat, Entity, Feature, FeatureTable, KafkaSource, ProtoFormat, ValueType
from potluck.ingestion.ingest import check_rows
from potluck.ingestion.stream.batch import (
    BLOCK,
    StreamTable,
    decode_batch,
    newest_event_us,
    online_rows,
)
from potluck.ingestion.stream.encoders import encoder_for
from potluck.ingestion.stream.publish import message_keys
from potluck.online.codec import encode_entity_key
from potluck.types import TIMESTAMP_ARROW_TYPE

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
AVRO_SCHEMA = {
    "type": "record",
    "name": "DriverEvent",
    "fields": [
        {"name": "driver_id", "type": ["null", "long"]},
        {"name": "conv_rate", "type": ["null", "float"]},
        {"name": "trips", "type": ["null", {"type": "array", "items": "long"}]},
        {"name": "event_timestamp", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "note", "type": ["null", "string"]},
        {"name": "blob", "type": ["null", "bytes"]},
    ],
}


def events_table(message_format: Any, **source: Any) -> FeatureTable:
    return FeatureTable(
        name="events",
        entities=["driver_id"],
        features=[
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="trips", value_type=ValueType.INT64_LIST),
            Feature(name="note", value_type=ValueType.STRING),
            Feature(name="blob", value_type=ValueType.BYTES),
        ],
        max_age=timedelta(days=1),
        stream_source=KafkaSource(
            bootstrap_servers="127.0.0.1:1",
            topic="events",
            message_format=message_format,
            event_timestamp_column="event_timestamp",
            **source,
        ),
    )


def stream_of(table: FeatureTable) -> StreamTable:
    return StreamTable("p", table, {"driver_id": ValueType.INT64})


def raw(
    values: list[bytes | None], partition: int = 0, stamps: list[int] | None = None
) -> pa.Table:
    n = len(values)
    return pa.table(
        {
            "key": pa.nulls(n, pa.binary()),
            "value": pa.array(values, pa.binary()),
            "topic": pa.array(["events"] * n),
            "partition": pa.array([partition] * n, pa.int32()),
            "offset": pa.array(range(n), pa.int64()),
            "timestamp": pa.array(stamps or [1_000] * n, pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
        }
    )


FRAME = pa.table(
    {
        "driver_id": pa.array([1001, 1002, 1003], pa.int64()),
        "conv_rate": pa.array([0.5, None, -1.25], pa.float32()),
        "trips": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
        "event_timestamp": pa.array(
            [NOW - timedelta(hours=1), NOW - timedelta(microseconds=1), NOW], TIMESTAMP_ARROW_TYPE
        ),
        "note": pa.array(["a\nb", None, "é"]),
        "blob": pa.array([b"\x00\xff", None, b""], pa.binary()),
    }
)


@pytest.mark.parametrize(
    "fmt",
    [
        "json",
        AvroFormat(schema_json=json.dumps(AVRO_SCHEMA)),
        AvroFormat(schema_json=json.dumps(AVRO_SCHEMA), schema_id=7),
        "proto",
    ],
    ids=["json", "avro", "avro-confluent", "proto"],
)
def test_every_format_reads_back_what_publish_wrote(fmt: Any, proto_class: Any) -> None:
    if fmt == "proto":
        fmt = ProtoFormat(class_path="potluck_test_events_pb2.DriverEvent")
    stream = stream_of(events_table(fmt))
    rows = check_rows(stream.table, stream.source, {"driver_id": DRIVER}, FRAME)
    messages = encoder_for(stream).encode(rows)
    if isinstance(fmt, AvroFormat) and fmt.schema_id is not None:
        assert [m[:5] for m in messages] == [b"\x00\x00\x00\x00\x07"] * 3
    decoded = decode_batch(raw(messages), stream, now=NOW)
    assert (decoded.counts, decoded.bad.num_rows) == ({}, 0)
    expected = FRAME.to_pydict()
    if isinstance(fmt, ProtoFormat):  # proto3: a repeated field has no null, only empty
        expected["trips"] = [[1, 2], [], []]
    got = decoded.rows.to_pydict()
    for name in ("driver_id", "conv_rate", "trips", "event_timestamp", "note", "blob"):
        assert got[name] == expected[name], name
    assert got["created_timestamp"] == [datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc)] * 3
    assert (got["partition"], got["offset"]) == ([0, 0, 0], [0, 1, 2])


def test_json_messages_are_objects_with_iso_times_and_base64_bytes() -> None:
    stream = stream_of(events_table("json"))
    rows = check_rows(stream.table, stream.source, {"driver_id": DRIVER}, FRAME.slice(0, 1))
    assert json.loads(encoder_for(stream).encode(rows)[0]) == {
        "driver_id": 1001,
        "conv_rate": 0.5,
        "trips": [1, 2],
        "event_timestamp": "2030-05-01T11:00:00+00:00",
        "note": "a\nb",
        "blob": "AP8=",
    }


def test_message_keys_are_the_canonical_entity_keys() -> None:
    stream = stream_of(events_table("json"))
    rows = check_rows(stream.table, stream.source, {"driver_id": DRIVER}, FRAME)
    assert message_keys(rows, stream) == [
        encode_entity_key("p", "events", {"driver_id": k}, {"driver_id": ValueType.INT64})
        for k in (1001, 1002, 1003)
    ]


def _json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


GOOD = {"driver_id": 1, "event_timestamp": "2030-05-01T11:00:00Z"}
BAD_JSON = [
    (
        b"{not json",
        "undecodable",
        "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    (
        b"\xff\xfe",
        "undecodable",
        "not JSON: Expecting value: line 1 column 1 (char 0)",
    ),
    (b"[1, 2]", "undecodable", "not a JSON object but a list"),
    (b"{}{}", "undecodable", "not JSON: Extra data: line 1 column 3 (char 2)"),
    (None, "undecodable", "the message has no value"),
    (
        _json(event_timestamp="2030-05-01T11:00:00Z"),
        "null_key",
        "field 'driver_id' is missing or null; every message needs entity driver_id (INT64)",
    ),
    (
        _json(driver_id=None, event_timestamp="2030-05-01T11:00:00Z"),
        "null_key",
        "field 'driver_id' is missing or null; every message needs entity driver_id (INT64)",
    ),
    (
        _json(driver_id="1", event_timestamp="2030-05-01T11:00:00Z"),
        "bad_key_type",
        "field 'driver_id': '1' (str) cannot be stored as entity driver_id (INT64)",
    ),
    (
        _json(driver_id=1.5, event_timestamp="2030-05-01T11:00:00Z"),
        "bad_key_type",
        "field 'driver_id': 1.5 cannot be stored as entity driver_id (INT64) without loss",
    ),
    (
        _json(driver_id=1),
        "missing_timestamp",
        "field 'event_timestamp' is missing or null; every message needs the event timestamp "
        "(UNIX_TIMESTAMP)",
    ),
    (
        _json(driver_id=1, event_timestamp=1714564800),
        "schema_violation",
        "field 'event_timestamp': 1714564800 (int) cannot be stored as the event timestamp "
        "(UNIX_TIMESTAMP): a number has no unit; give datetimes or ISO 8601 text, or convert epoch "
        "numbers first, e.g. pandas.to_datetime(values, unit='s')",
    ),
    (
        _json(**GOOD, conv_rate="fast"),
        "schema_violation",
        "field 'conv_rate': 'fast' (str) cannot be stored as feature conv_rate (FLOAT)",
    ),
    (
        _json(**GOOD, trips=[1, "x"]),
        "schema_violation",
        "field 'trips': element 1 of the list: 'x' (str) cannot be stored as feature trips "
        "(INT64_LIST)",
    ),
    (
        _json(**GOOD, blob="not base64!"),
        "schema_violation",
        "field 'blob': 'not base64!' is not base64 text, which JSON messages use for feature blob "
        "(BYTES)",
    ),
    (
        _json(driver_id=1, event_timestamp="2030-04-30T11:59:59.999999Z"),
        "older_than_max_age",
        "event time 2030-04-30 11:59:59.999999+00:00 is older than the table's max_age (1 day, "
        "0:00:00) allows at 2030-05-01T12:00:00+00:00",
    ),
]


def test_every_bad_json_message_is_set_aside_with_its_reason_and_the_rest_go_through() -> None:
    stream = stream_of(events_table("json"))
    values = (
        [_json(**GOOD)]
        + [v for v, _, _ in BAD_JSON]
        + [
            _json(driver_id=2, event_timestamp="2030-04-30T12:00:00Z"),  # exactly max_age old
            ' {"driver_id": 3, "event_timestamp": "2030-05-01T11:00:00Z", "note": "é"}\n'.encode(),
        ]
    )
    decoded = decode_batch(raw(values), stream, now=NOW)
    assert decoded.rows.column("driver_id").to_pylist() == [1, 2, 3]
    assert decoded.rows.column("note").to_pylist() == [None, None, "é"]
    assert decoded.rows.column("offset").to_pylist() == [0, len(values) - 2, len(values) - 1]
    bad = decoded.bad.to_pylist()
    assert [(b["offset"], b["reason"], b["detail"]) for b in bad] == [
        (i + 1, reason, detail) for i, (_, reason, detail) in enumerate(BAD_JSON)
    ]
    assert [b["value"] for b in bad] == [v for v, _, _ in BAD_JSON]
    assert decoded.counts == {
        "undecodable": 5,
        "null_key": 2,
        "bad_key_type": 2,
        "missing_timestamp": 1,
        "schema_violation": 4,
        "older_than_max_age": 1,
    }


def test_a_bad_value_costs_only_its_own_message_in_a_large_batch() -> None:
    stream = stream_of(events_table("json"))
    count = 3 * BLOCK + 7
    bad_rows = {5, BLOCK, BLOCK + 1, 2 * BLOCK + 100, count - 1}
    values = [
        _json(
            driver_id=i,
            event_timestamp="2030-05-01T11:00:00Z",
            conv_rate="x" if i in bad_rows else i / 4,
        )
        for i in range(count)
    ]
    decoded = decode_batch(raw(values), stream, now=NOW)
    assert decoded.counts == {"schema_violation": len(bad_rows)}
    assert decoded.bad.column("offset").to_pylist() == sorted(bad_rows)
    kept = [i for i in range(count) if i not in bad_rows]
    assert decoded.rows.column("driver_id").to_pylist() == kept
    assert decoded.rows.column("conv_rate").to_pylist() == [i / 4 for i in kept]


def test_the_created_time_is_the_message_field_when_the_source_names_one() -> None:
    stream = stream_of(events_table("json", created_timestamp_column="created"))
    values = [
        _json(**GOOD, created="2030-05-01T11:30:00Z"),
        _json(**GOOD),
        _json(**GOOD, created="yesterday"),
    ]
    decoded = decode_batch(raw(values), stream, now=NOW)
    assert decoded.rows.column("created_timestamp").to_pylist() == [
        datetime(2030, 5, 1, 11, 30, tzinfo=timezone.utc),
        None,
    ]
    assert decoded.bad.to_pylist()[0]["detail"] == (
        "field 'created': 'yesterday' cannot be read as the created timestamp (UNIX_TIMESTAMP): "
        "expected ISO 8601 text such as 2024-05-01T12:00:00Z"
    )


AVRO_BAD = [
    (b"", "0 bytes: too short for the Confluent wire format's header"),
    (
        b"\x01\x00\x00\x00\x07\x02",
        "starts with byte 1, not the Confluent wire format's magic byte 0",
    ),
    (b"\x00\x00\x00\x00\x08\x02", "written with schema id 8; the stream source reads schema id 7"),
]


def test_avro_in_the_confluent_wire_format_checks_its_header_and_its_bytes() -> None:
    stream = stream_of(events_table(AvroFormat(schema_json=json.dumps(AVRO_SCHEMA), schema_id=7)))
    good = encoder_for(stream).encode(
        check_rows(stream.table, stream.source, {"driver_id": DRIVER}, FRAME.slice(0, 1))
    )[0]
    values = [v for v, _ in AVRO_BAD] + [good + b"\x00", good[:-3], good]
    decoded = decode_batch(raw(values), stream, now=NOW)
    details = decoded.bad.column("detail").to_pylist()
    assert details[:3] == [d for _, d in AVRO_BAD]
    assert details[3] == "not an Avro record of the schema: 1 bytes left over"
    assert details[4].startswith("not an Avro record of the schema: ")
    assert decoded.counts == {"undecodable": 5}
    assert decoded.rows.column("driver_id").to_pylist() == [1001]


def test_plain_avro_reads_records_written_by_another_tool() -> None:
    stream = stream_of(events_table(AvroFormat(schema_json=json.dumps(AVRO_SCHEMA))))
    record = {
        "driver_id": 7,
        "conv_rate": 2.5,
        "trips": [3],
        "note": None,
        "blob": b"x",
        "event_timestamp": NOW - timedelta(minutes=1),
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(AVRO_SCHEMA), record)
    decoded = decode_batch(raw([buffer.getvalue()]), stream, now=NOW)
    assert decoded.rows.to_pylist()[0] | {"created_timestamp": None} == {
        "driver_id": 7,
        "conv_rate": 2.5,
        "trips": [3],
        "note": None,
        "blob": b"x",
        "event_timestamp": NOW - timedelta(minutes=1),
        "created_timestamp": None,
        "partition": 0,
        "offset": 0,
    }


def test_protobuf_bytes_that_do_not_parse_are_undecodable(proto_class: Any) -> None:
    stream = stream_of(events_table(ProtoFormat(class_path="potluck_test_events_pb2.DriverEvent")))
    unset = proto_class(driver_id=1).SerializeToString()  # no event_timestamp set
    decoded = decode_batch(raw([b"\xff\xff\xff", unset]), stream, now=NOW)
    assert [(b["reason"], b["detail"]) for b in decoded.bad.to_pylist()] == [
        (
            "undecodable",
            "not a protobuf message of the class: Error parsing message with type "
            "'potluck.test.DriverEvent': Wire format was corrupt",
        ),
        (
            "missing_timestamp",
            "field 'event_timestamp' is missing or null; every message needs the event "
            "timestamp (UNIX_TIMESTAMP)",
        ),
    ]


def test_online_rows_are_what_the_store_takes_and_the_newest_event_is_known() -> None:
    stream = stream_of(events_table("json"))
    values = [_json(driver_id=k, event_timestamp=f"2030-05-01T11:0{k}:00Z") for k in (1, 2, 1)]
    decoded = decode_batch(raw(values), stream, now=NOW)
    rows = online_rows(decoded.rows, stream)
    assert rows.schema.names == [
        "entity_key",
        "event_timestamp",
        "created_timestamp",
        "conv_rate",
        "trips",
        "note",
        "blob",
    ]
    key = encode_entity_key("p", "events", {"driver_id": 1}, {"driver_id": ValueType.INT64})
    assert rows.column("entity_key").to_pylist()[0] == key
    assert newest_event_us(decoded.rows) == int(
        datetime(2030, 5, 1, 11, 2, tzinfo=timezone.utc).timestamp() * 1_000_000
    )


def test_a_stream_table_pickles_without_its_decoder(proto_class: Any) -> None:
    stream = stream_of(events_table(ProtoFormat(class_path="potluck_test_events_pb2.DriverEvent")))
    stream.decoder  # noqa: B018 - built, then left behind by pickle
    copy = pickle.loads(pickle.dumps(stream))
    assert copy == stream and "decoder" not in copy.__dict__
    message = proto_class(driver_id=3, event_timestamp={"seconds": int(NOW.timestamp()) - 60})
    decoded = decode_batch(raw([message.SerializeToString()]), copy, now=NOW)
    assert decoded.rows.column("driver_id").to_pylist() == [3]


def test_the_kafka_timestamp_may_come_in_any_unit_or_be_missing() -> None:
    stream = stream_of(events_table("json"))
    spark_like = (
        raw([_json(**GOOD)])
        .drop_columns(["timestamp"])
        .append_column("timestamp", pa.array([NOW], pa.timestamp("us", tz="UTC")))
    )
    assert decode_batch(spark_like, stream, now=NOW).rows["created_timestamp"].to_pylist() == [NOW]
    bare = raw([_json(**GOOD)]).select(["value", "partition", "offset"])
    assert decode_batch(bare, stream, now=NOW).rows["created_timestamp"].to_pylist() == [None]
