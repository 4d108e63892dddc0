"""serde is the one mapping between definitions and their wire shapes: the dict form (YAML and the
registry's JSON) and protobuf. Every field of every definition survives both round trips."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import yaml

from potluck import (
    AvroFormat,
    Entity,
    Feature,
    FeatureTable,
    FileSource,
    KafkaSource,
    ProtoFormat,
    ValueType,
)
from potluck.definitions import serde
from potluck.definitions.serde import Definition
from potluck.errors import DefinitionError


def full_table(message_format: Any = "json", **overrides: Any) -> FeatureTable:
    spec: dict[str, Any] = {
        "name": "driver_stats",
        "entities": ["driver_id", "city"],
        "features": [
            Feature(name=f"f_{vt.name.lower()}", value_type=vt, labels={"kind": vt.name})
            for vt in ValueType
        ],
        "max_age": timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5, microseconds=6),
        "batch_source": FileSource(
            path="s3://bucket/driver_stats",
            event_timestamp_column="event_ts",
            created_timestamp_column="created_ts",
            file_format="parquet",
            date_partition_column="day",
            field_mapping={"rate": "f_double", "driver": "driver_id"},
        ),
        "stream_source": KafkaSource(
            bootstrap_servers="b1:9092,b2:9092",
            topic="driver_events",
            message_format=message_format,
            event_timestamp_column="ts",
            created_timestamp_column="created",
            field_mapping={"d": "driver_id"},
        ),
        "labels": {"team": "rides", "tier": "gold"},
    }
    spec.update(overrides)
    return FeatureTable(**spec)


TABLES = [
    pytest.param(full_table(), id="json format"),
    pytest.param(
        full_table(AvroFormat(schema_json='{"type": "record", "name": "E"}')), id="avro format"
    ),
    pytest.param(full_table(ProtoFormat(class_path="events_pb2.DriverEvent")), id="proto format"),
    pytest.param(
        FeatureTable(
            name="bare",
            entities=["driver_id"],
            features=[Feature(name="x", value_type=ValueType.BOOL)],
        ),
        id="no sources, no max_age, no labels",
    ),
    pytest.param(
        full_table(
            max_age=None,
            batch_source=FileSource(path="/data/x", event_timestamp_column="ts"),
            stream_source=None,
            labels={},
        ),
        id="batch source with defaults",
    ),
]
ENTITIES = [
    Entity(
        name="driver_id",
        value_type=ValueType.INT64,
        description="a driver",
        labels={"team": "rides", "pii": "no"},
    ),
    Entity(name="city", value_type=ValueType.STRING),
    Entity(name="raw", value_type=ValueType.BYTES),
    Entity(name="at", value_type=ValueType.UNIX_TIMESTAMP),
]


def fields_of(obj: Definition) -> dict[str, Any]:
    """Every field, compared one by one so a failure names the field."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


@pytest.mark.parametrize("table", TABLES)
def test_feature_tables_round_trip_through_the_dict_form(table: FeatureTable) -> None:
    data = serde.to_dict(table)
    back = serde.from_dict("feature_table", data)
    assert fields_of(back) == fields_of(table)
    # JSON (the registry) and YAML (definition files) carry the dict unchanged.
    assert serde.from_dict("feature_table", json.loads(json.dumps(data))) == table
    assert serde.from_dict("feature_table", yaml.safe_load(yaml.safe_dump(data))) == table


@pytest.mark.parametrize("table", TABLES)
def test_feature_tables_round_trip_through_protobuf(table: FeatureTable) -> None:
    message = serde.feature_table_to_proto(table)
    wire = type(message).FromString(message.SerializeToString())
    back = serde.feature_table_from_proto(wire)
    assert fields_of(back) == fields_of(table)


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_entities_round_trip_through_both_forms(entity: Entity) -> None:
    assert fields_of(serde.from_dict("entity", serde.to_dict(entity))) == fields_of(entity)
    message = serde.entity_to_proto(entity)
    wire = type(message).FromString(message.SerializeToString())
    assert fields_of(serde.entity_from_proto(wire)) == fields_of(entity)


def test_the_revision_travels_in_protobuf_and_is_attached_from_the_registry() -> None:
    table = full_table(revision=7)
    assert serde.feature_table_from_proto(serde.feature_table_to_proto(table)).revision == 7
    assert (
        serde.feature_table_from_proto(serde.feature_table_to_proto(full_table())).revision is None
    )
    assert "revision" not in serde.to_dict(table)
    assert serde.from_dict("feature_table", serde.to_dict(table), 3).revision == 3
    assert serde.from_dict("feature_table", serde.to_dict(table)).revision is None


def test_the_dict_form_is_exactly_what_the_registry_stores() -> None:
    table = FeatureTable(
        name="driver_stats",
        entities=["driver_id"],
        features=[
            Feature(name="conv_rate", value_type=ValueType.DOUBLE, labels={"z": "1", "a": "2"})
        ],
        max_age=timedelta(hours=1, minutes=30),
        batch_source=FileSource(
            path="/data",
            event_timestamp_column="ts",
            field_mapping={"b": "conv_rate", "a": "driver_id"},
        ),
        stream_source=KafkaSource(
            bootstrap_servers="h:9092",
            topic="t",
            message_format=AvroFormat(schema_json="{}"),
            event_timestamp_column="ts",
        ),
        labels={"team": "rides"},
    )
    data = serde.to_dict(table)
    assert data == {
        "name": "driver_stats",
        "entities": ["driver_id"],
        "features": [{"name": "conv_rate", "value_type": "DOUBLE", "labels": {"a": "2", "z": "1"}}],
        "max_age": "1h30m",
        "batch_source": {
            "type": "file",
            "path": "/data",
            "event_timestamp_column": "ts",
            "created_timestamp_column": None,
            "file_format": "parquet",
            "date_partition_column": None,
            "field_mapping": {"a": "driver_id", "b": "conv_rate"},
        },
        "stream_source": {
            "type": "kafka",
            "bootstrap_servers": "h:9092",
            "topic": "t",
            "message_format": {"avro": "{}"},
            "event_timestamp_column": "ts",
            "created_timestamp_column": None,
            "field_mapping": {},
        },
        "labels": {"team": "rides"},
    }
    assert list(data) == [
        "name",
        "entities",
        "features",
        "max_age",
        "batch_source",
        "stream_source",
        "labels",
    ]
    assert list(data["features"][0]["labels"]) == ["a", "z"]
    assert serde.to_dict(ENTITIES[0]) == {
        "name": "driver_id",
        "value_type": "INT64",
        "description": "a driver",
        "labels": {"pii": "no", "team": "rides"},
    }
    message_formats = [
        serde.to_dict(full_table(fmt))["stream_source"]["message_format"]
        for fmt in ("json", ProtoFormat(class_path="m.E"))
    ]
    assert message_formats == ["json", {"proto": "m.E"}]


def test_hand_written_yaml_may_omit_defaults_and_use_friendly_forms() -> None:
    data = yaml.safe_load(
        """
        name: driver_stats
        entities: [driver_id]
        features:
          - {name: conv_rate, value_type: double}
          - {name: trips, value_type: 4, labels: null}
        max_age: 7200
        batch_source: {path: /data/driver_stats, event_timestamp_column: ts}
        stream_source:
          bootstrap_servers: h:9092
          topic: driver_stats
          event_timestamp_column: ts
        """
    )
    table = serde.feature_table_from_dict(data)
    assert table == FeatureTable(
        name="driver_stats",
        entities=["driver_id"],
        features=[
            Feature(name="conv_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
        ],
        max_age=timedelta(hours=2),
        batch_source=FileSource(path="/data/driver_stats", event_timestamp_column="ts"),
        stream_source=KafkaSource(
            bootstrap_servers="h:9092",
            topic="driver_stats",
            message_format="json",
            event_timestamp_column="ts",
        ),
    )
    entity = serde.entity_from_dict({"name": "driver_id", "value_type": "int64"})
    assert entity == Entity(name="driver_id", value_type=ValueType.INT64)


BASE: dict[str, Any] = {
    "name": "t",
    "entities": ["d"],
    "features": [{"name": "x", "value_type": "INT64"}],
}
STREAM: dict[str, Any] = {"bootstrap_servers": "h:1", "topic": "t", "event_timestamp_column": "ts"}


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        pytest.param(
            {**BASE, "maxage": "2h"},
            "feature_table.maxage",
            "feature_table: unknown key 'maxage'; allowed keys are batch_source, "
            "entities, features, labels, max_age, name, stream_source",
            id="unknown key",
        ),
        pytest.param(
            {"name": "t", "entities": ["d"]},
            "feature_table.features",
            "feature_table: missing required key 'features'",
            id="missing features",
        ),
        pytest.param(
            {**BASE, "features": {"x": "INT64"}},
            "feature_table.features",
            "feature table t: features must be a list",
            id="features as a mapping",
        ),
        pytest.param(
            {**BASE, "features": [{"name": "x"}]},
            "feature.value_type",
            "feature: missing required key 'value_type'",
            id="feature without type",
        ),
        pytest.param(
            {**BASE, "features": [{"name": "x", "value_type": "INT64", "type": "a"}]},
            "feature.type",
            "feature: unknown key 'type'; allowed keys are labels, name, value_type",
            id="feature unknown key",
        ),
        pytest.param(
            {**BASE, "max_age": "2 hours"},
            "feature_table.max_age",
            "feature_table.max_age: '2 hours' is not a duration; use seconds or text "
            "such as '2h', '1h30m', '7d', '1500ms'",
            id="max_age text",
        ),
        pytest.param(
            {**BASE, "batch_source": {"type": "bigquery", "path": "x"}},
            "batch_source.type",
            "batch_source.type: only 'file' is supported, got 'bigquery'",
            id="batch source type",
        ),
        pytest.param(
            {**BASE, "batch_source": {"path": "x"}},
            "batch_source.event_timestamp_column",
            "batch_source.event_timestamp_column: a batch source needs the name of its "
            "event timestamp column",
            id="batch source without event timestamp",
        ),
        pytest.param(
            {**BASE, "stream_source": {**STREAM, "type": "kinesis"}},
            "stream_source.type",
            "stream_source.type: only 'kafka' is supported, got 'kinesis'",
            id="stream source type",
        ),
        pytest.param(
            {**BASE, "stream_source": {"bootstrap_servers": "h:1", "topic": "t"}},
            "stream_source.event_timestamp_column",
            "stream_source: missing required key 'event_timestamp_column'",
            id="stream source without event timestamp",
        ),
        pytest.param(
            {**BASE, "stream_source": {**STREAM, "message_format": {"avro": "{}", "proto": "a.b"}}},
            "stream_source.message_format",
            "stream_source.message_format: expected 'json', {avro: <schema json>} or "
            "{proto: <module.Class>}, got {'avro': '{}', 'proto': 'a.b'}",
            id="two message formats",
        ),
        pytest.param(
            [BASE],
            "feature_table",
            "feature_table: expected a mapping, got "
            "[{'name': 't', 'entities': ['d'], 'features': [{'name': 'x', "
            "'value_type': 'INT64'}]}]",
            id="not a mapping",
        ),
    ],
)
def test_malformed_dicts_name_the_key(data: Any, field: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        serde.feature_table_from_dict(data)
    assert (info.value.message, info.value.field) == (message, field)


def test_an_unknown_kind_and_an_incomplete_entity_are_rejected() -> None:
    with pytest.raises(DefinitionError) as info:
        serde.from_dict("view", {})
    assert (info.value.message, info.value.field) == ("unknown definition kind 'view'", "kind")
    with pytest.raises(DefinitionError) as info:
        serde.entity_from_dict({"name": "d"})
    assert (info.value.message, info.value.field) == (
        "entity: missing required key 'value_type'",
        "entity.value_type",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("1500ms", timedelta(milliseconds=1500)),
        ("100us", timedelta(microseconds=100)),
        ("-2h", timedelta(hours=-2)),
        (" 1d 2h ", timedelta(days=1, hours=2)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=3), timedelta(minutes=3)),
    ],
)
def test_durations_parse(text: object, value: timedelta) -> None:
    assert serde.parse_duration(text, "max_age") == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=-2), "-2h"),
        (timedelta(days=1, microseconds=1), "1d1us"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(hours=26), "1d2h"),
    ],
)
def test_durations_format_canonically_and_parse_back(value: timedelta, text: str) -> None:
    assert serde.format_duration(value) == text
    assert serde.parse_duration(text, "max_age") == value


@pytest.mark.parametrize("bad", [True, "", "2hh", "2 hours", "h", None, [1]])
def test_bad_durations_name_the_field(bad: object) -> None:
    with pytest.raises(DefinitionError) as info:
        serde.parse_duration(bad, "feature_table.max_age")
    assert info.value.field == "feature_table.max_age"
    assert info.value.message == (
        f"feature_table.max_age: {bad!r} is not a duration; use seconds or text such as '2h', "
        "'1h30m', '7d', '1500ms'"
    )


def test_kind_of_names_the_registry_kind() -> None:
    assert serde.kind_of(ENTITIES[0]) == "entity"
    assert serde.kind_of(full_table()) == "feature_table"
