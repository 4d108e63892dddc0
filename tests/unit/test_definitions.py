"""Definitions validate themselves: every bad input raises DefinitionError with an exact message
and the dotted ``field`` it concerns; good input is normalised (value types, entity names)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest

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
from potluck.definitions import FeatureRef
from potluck.errors import DefinitionError, FeatureRefError

NAME_RULE = (
    "names match [a-z_][a-z0-9_]* (lower-case letters, digits and underscores, not starting "
    "with a digit)"
)
RESERVED = (
    "is reserved for potluck's own columns (created_timestamp, event_timestamp, ingestion_id); "
    "choose another name"
)
TYPES = (
    "BYTES, STRING, INT32, INT64, DOUBLE, FLOAT, BOOL, UNIX_TIMESTAMP, BYTES_LIST, STRING_LIST, "
    "INT32_LIST, INT64_LIST, DOUBLE_LIST, FLOAT_LIST, BOOL_LIST, UNIX_TIMESTAMP_LIST"
)


def feature(name: str = "conv_rate", value_type: ValueType = ValueType.DOUBLE) -> Feature:
    return Feature(name=name, value_type=value_type)


def table(**overrides: object) -> FeatureTable:
    spec: dict[str, object] = {
        "name": "driver_stats",
        "entities": ["driver_id"],
        "features": [feature()],
    }
    spec.update(overrides)
    return FeatureTable(**spec)


def file_source(**overrides: object) -> FileSource:
    spec: dict[str, object] = {"path": "/data/x", "event_timestamp_column": "ts"}
    spec.update(overrides)
    return FileSource(**spec)


def kafka_source(**overrides: object) -> KafkaSource:
    spec: dict[str, object] = {
        "bootstrap_servers": "127.0.0.1:9092",
        "topic": "t",
        "message_format": "json",
        "event_timestamp_column": "ts",
    }
    spec.update(overrides)
    return KafkaSource(**spec)


BAD_INPUTS: list[tuple[str, Callable[[], object], str, str]] = [
    # (id, construct, field, message)
    (
        "entity name upper case",
        lambda: Entity(name="Driver", value_type=ValueType.INT64),
        "entity.name",
        f"entity.name: invalid name 'Driver'; {NAME_RULE}",
    ),
    (
        "entity name leading digit",
        lambda: Entity(name="1driver", value_type=ValueType.INT64),
        "entity.name",
        f"entity.name: invalid name '1driver'; {NAME_RULE}",
    ),
    (
        "entity name with dash",
        lambda: Entity(name="driver-id", value_type=ValueType.INT64),
        "entity.name",
        f"entity.name: invalid name 'driver-id'; {NAME_RULE}",
    ),
    (
        "entity name empty",
        lambda: Entity(name="", value_type=ValueType.INT64),
        "entity.name",
        f"entity.name: invalid name ''; {NAME_RULE}",
    ),
    (
        "entity name not a string",
        lambda: Entity(name=None, value_type=ValueType.INT64),
        "entity.name",
        f"entity.name: invalid name None; {NAME_RULE}",
    ),
    (
        "entity name too long",
        lambda: Entity(name="a" * 65, value_type=ValueType.INT64),
        "entity.name",
        "entity.name: name 'aaaaaaaaaaaaaaaaaaaa'... is 65 characters; the limit is 64",
    ),
    (
        "entity name reserved",
        lambda: Entity(name="event_timestamp", value_type=ValueType.INT64),
        "entity.name",
        f"entity.name: 'event_timestamp' {RESERVED}",
    ),
    (
        "entity unknown type name",
        lambda: Entity(name="d", value_type="int"),
        "entity.value_type",
        f"entity d: value_type: unknown value type 'int'; expected one of {TYPES}",
    ),
    (
        "entity unknown type number",
        lambda: Entity(name="d", value_type=9),
        "entity.value_type",
        f"entity d: value_type: unknown value type 9; expected one of {TYPES}",
    ),
    (
        "entity bool type",
        lambda: Entity(name="d", value_type=True),
        "entity.value_type",
        "entity d: value_type: not a value type: True",
    ),
    (
        "entity list type",
        lambda: Entity(name="d", value_type=ValueType.INT64_LIST),
        "entity.value_type",
        "entity d: value_type INT64_LIST is a list; entity keys must be scalar",
    ),
    (
        "entity description",
        lambda: Entity(name="d", value_type=ValueType.INT64, description=5),
        "entity.description",
        "entity.description: must be a string, got 5",
    ),
    (
        "entity labels not a mapping",
        lambda: Entity(name="d", value_type=ValueType.INT64, labels=["a"]),
        "entity.labels",
        "entity d: labels: must be a mapping of strings, got ['a']",
    ),
    (
        "entity label value",
        lambda: Entity(name="d", value_type=ValueType.INT64, labels={"a": 1}),
        "entity.labels",
        "entity d: labels: labels map non-empty strings to strings, got 'a': 1",
    ),
    (
        "feature name reserved",
        lambda: feature("ingestion_id"),
        "feature.name",
        f"feature.name: 'ingestion_id' {RESERVED}",
    ),
    (
        "feature name created_timestamp",
        lambda: feature("created_timestamp"),
        "feature.name",
        f"feature.name: 'created_timestamp' {RESERVED}",
    ),
    (
        "feature name invalid",
        lambda: feature("Conv Rate"),
        "feature.name",
        f"feature.name: invalid name 'Conv Rate'; {NAME_RULE}",
    ),
    (
        "feature type",
        lambda: Feature(name="x", value_type="decimal"),
        "feature.value_type",
        f"feature x: value_type: unknown value type 'decimal'; expected one of {TYPES}",
    ),
    (
        "feature labels",
        lambda: Feature(name="x", value_type=ValueType.INT64, labels={"": "v"}),
        "feature.labels",
        "feature x: labels: labels map non-empty strings to strings, got '': 'v'",
    ),
    (
        "table name",
        lambda: table(name="Driver Stats"),
        "feature_table.name",
        f"feature_table.name: invalid name 'Driver Stats'; {NAME_RULE}",
    ),
    (
        "entities as a string",
        lambda: table(entities="driver_id"),
        "feature_table.entities",
        "feature table driver_stats: entities must be a list of entity names, got 'driver_id'",
    ),
    (
        "no entities",
        lambda: table(entities=[]),
        "feature_table.entities",
        "feature table driver_stats: needs at least one entity",
    ),
    (
        "entity listed twice",
        lambda: table(entities=["driver_id", "driver_id"]),
        "feature_table.entities",
        "feature table driver_stats: entity 'driver_id' is listed twice",
    ),
    (
        "entity name invalid",
        lambda: table(entities=["Driver"]),
        "feature_table.entities",
        f"feature_table.entities: invalid name 'Driver'; {NAME_RULE}",
    ),
    (
        "duplicate features",
        lambda: table(features=[feature(), feature()]),
        "feature_table.features",
        "feature table driver_stats: feature 'conv_rate' is defined twice",
    ),
    (
        "feature named like an entity",
        lambda: table(features=[feature("driver_id")]),
        "feature_table.features",
        "feature table driver_stats: feature 'driver_id' has the name of one of the table's "
        "entities; rename the feature",
    ),
    (
        "no features",
        lambda: table(features=[]),
        "feature_table.features",
        "feature table driver_stats: needs at least one feature",
    ),
    (
        "feature not a Feature",
        lambda: table(features=["conv_rate"]),
        "feature_table.features",
        "feature table driver_stats: features must be Feature objects, got 'conv_rate'",
    ),
    (
        "features not a list",
        lambda: table(features=feature()),
        "feature_table.features",
        "feature table driver_stats: features must be a list of Feature, got "
        "Feature(name='conv_rate', value_type=<ValueType.DOUBLE: 5>, labels={})",
    ),
    (
        "negative max_age",
        lambda: table(max_age=timedelta(hours=-1)),
        "feature_table.max_age",
        "feature table driver_stats: max_age must be positive, got -1:00:00; use None for values "
        "that never age out",
    ),
    (
        "zero max_age",
        lambda: table(max_age=timedelta(0)),
        "feature_table.max_age",
        "feature table driver_stats: max_age must be positive, got 0:00:00; use None for values "
        "that never age out",
    ),
    (
        "max_age in seconds",
        lambda: table(max_age=3600),
        "feature_table.max_age",
        "feature table driver_stats: max_age must be a datetime.timedelta or None, got 3600",
    ),
    (
        "batch source not a FileSource",
        lambda: table(batch_source="s3://bucket/x"),
        "feature_table.batch_source",
        "feature table driver_stats: batch_source must be a FileSource, got 's3://bucket/x'",
    ),
    (
        "stream source not a KafkaSource",
        lambda: table(stream_source="kafka"),
        "feature_table.stream_source",
        "feature table driver_stats: stream_source must be a KafkaSource, got 'kafka'",
    ),
    (
        "table labels",
        lambda: table(labels="team=rides"),
        "feature_table.labels",
        "feature table driver_stats: labels: must be a mapping of strings, got 'team=rides'",
    ),
    (
        "batch source without path",
        lambda: file_source(path=""),
        "batch_source.path",
        "batch_source.path: must be a non-empty folder or URL, got ''",
    ),
    (
        "batch source without event timestamp column",
        lambda: file_source(event_timestamp_column=""),
        "batch_source.event_timestamp_column",
        "batch_source.event_timestamp_column: a batch source needs the name of its event "
        "timestamp column",
    ),
    (
        "batch source event timestamp column None",
        lambda: file_source(event_timestamp_column=None),
        "batch_source.event_timestamp_column",
        "batch_source.event_timestamp_column: a batch source needs the name of its event "
        "timestamp column",
    ),
    (
        "batch source created column empty",
        lambda: file_source(created_timestamp_column=""),
        "batch_source.created_timestamp_column",
        "batch_source.created_timestamp_column: must be a non-empty column name, got ''",
    ),
    (
        "batch source partition column empty",
        lambda: file_source(date_partition_column=""),
        "batch_source.date_partition_column",
        "batch_source.date_partition_column: must be a non-empty column name, got ''",
    ),
    (
        "batch source csv",
        lambda: file_source(file_format="csv"),
        "batch_source.file_format",
        "batch_source.file_format: 'csv' is not supported; use one of parquet",
    ),
    (
        "batch source field mapping",
        lambda: file_source(field_mapping={"rate": ""}),
        "batch_source.field_mapping",
        "batch_source.field_mapping: must map source column names to feature or entity names, "
        "got {'rate': ''}",
    ),
    (
        "stream without brokers",
        lambda: kafka_source(bootstrap_servers=""),
        "stream_source.bootstrap_servers",
        "stream_source.bootstrap_servers: must list at least one host:port",
    ),
    (
        "stream without topic",
        lambda: kafka_source(topic=""),
        "stream_source.topic",
        "stream_source.topic: must be a non-empty topic name",
    ),
    (
        "stream format unknown",
        lambda: kafka_source(message_format="xml"),
        "stream_source.message_format",
        "stream_source.message_format: must be 'json', AvroFormat(schema_json=...) or "
        "ProtoFormat(class_path=...), got 'xml'",
    ),
    (
        "stream without event timestamp column",
        lambda: kafka_source(event_timestamp_column=""),
        "stream_source.event_timestamp_column",
        "stream_source.event_timestamp_column: must be a non-empty column name, got ''",
    ),
    (
        "stream created column empty",
        lambda: kafka_source(created_timestamp_column=""),
        "stream_source.created_timestamp_column",
        "stream_source.created_timestamp_column: must be a non-empty column name, got ''",
    ),
    (
        "stream field mapping",
        lambda: kafka_source(field_mapping=[("a", "b")]),
        "stream_source.field_mapping",
        "stream_source.field_mapping: must map source column names to feature or entity names, "
        "got [('a', 'b')]",
    ),
    (
        "avro without schema",
        lambda: AvroFormat(schema_json="  "),
        "stream_source.message_format.schema_json",
        "stream_source.message_format.schema_json: an Avro format needs its schema",
    ),
    (
        "avro schema not text",
        lambda: AvroFormat(schema_json={"type": "record"}),
        "stream_source.message_format.schema_json",
        "stream_source.message_format.schema_json: must be a string, got {'type': 'record'}",
    ),
    (
        "proto class without module",
        lambda: ProtoFormat(class_path="DriverEvent"),
        "stream_source.message_format.class_path",
        "stream_source.message_format.class_path: must be a dotted path such as "
        "'mypkg.events_pb2.DriverEvent', got 'DriverEvent'",
    ),
]


@pytest.mark.parametrize(
    ("build", "field", "message"),
    [pytest.param(build, field, message, id=name) for name, build, field, message in BAD_INPUTS],
)
def test_bad_input_names_the_field(build: Callable[[], object], field: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        build()
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.field == field


def test_a_name_of_exactly_64_characters_is_fine() -> None:
    assert Entity(name="a" * 64, value_type=ValueType.INT64).name == "a" * 64


@pytest.mark.parametrize("given", [ValueType.INT64, "INT64", "int64", 4])
def test_value_types_are_read_from_enum_name_or_number(given: object) -> None:
    entity = Entity(name="driver_id", value_type=given)
    assert entity.value_type is ValueType.INT64
    assert Feature(name="x", value_type=given).value_type is ValueType.INT64


def test_a_table_stores_entity_names_in_order_and_accepts_entity_objects() -> None:
    driver = Entity(name="driver_id", value_type=ValueType.INT64)
    built = table(entities=[driver, "city"], features=[feature("demand", ValueType.FLOAT)])
    assert built.entities == ("driver_id", "city")
    assert isinstance(built.features, tuple)
    assert built.feature_names == ("demand",)
    assert built.feature("demand") == feature("demand", ValueType.FLOAT)
    with pytest.raises(KeyError):
        built.feature("nope")


def test_definitions_are_frozen_and_labels_are_copied() -> None:
    labels = {"team": "rides"}
    entity = Entity(name="driver_id", value_type=ValueType.INT64, labels=labels)
    labels["team"] = "maps"
    assert entity.labels == {"team": "rides"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        entity.name = "other"
    with pytest.raises(TypeError):
        Entity("driver_id", ValueType.INT64)


def test_the_revision_does_not_take_part_in_equality() -> None:
    assert table(revision=3) == table()
    assert table(revision=3).revision == 3
    assert table().revision is None


def test_sources_accept_every_documented_form() -> None:
    source = file_source(
        path="s3://bucket/driver_stats",
        created_timestamp_column="created",
        date_partition_column="day",
        field_mapping={"rate": "conv_rate"},
    )
    assert (source.file_format, source.field_mapping) == ("parquet", {"rate": "conv_rate"})
    for fmt in (
        "json",
        AvroFormat(schema_json='{"type": "record"}'),
        ProtoFormat(class_path="events_pb2.DriverEvent"),
    ):
        assert kafka_source(message_format=fmt).message_format == fmt


@pytest.mark.parametrize(
    ("ref", "parsed", "text"),
    [
        (
            "driver_stats:conv_rate",
            FeatureRef("driver_stats", "conv_rate"),
            "driver_stats__conv_rate",
        ),
        (
            "other/driver_stats:conv_rate",
            FeatureRef("driver_stats", "conv_rate", "other"),
            "driver_stats__conv_rate",
        ),
        ("driver_stats:*", FeatureRef("driver_stats", "*"), "driver_stats__*"),
    ],
)
def test_feature_refs_parse_and_print_back(ref: str, parsed: FeatureRef, text: str) -> None:
    assert FeatureRef.parse(ref) == parsed
    assert str(parsed) == ref
    assert parsed.column_name == text
    assert parsed.is_wildcard == (parsed.feature == "*")


@pytest.mark.parametrize(
    "ref", ["driver_stats", "driver_stats:", ":conv_rate", "Driver:x", "p/t/x:f", "t:f:g", "t:a*"]
)
def test_malformed_feature_refs_are_rejected(ref: str) -> None:
    with pytest.raises(FeatureRefError) as info:
        FeatureRef.parse(ref)
    assert info.value.message == (
        f"invalid feature reference {ref!r}; expected 'table:feature', 'project/table:feature' "
        "or 'table:*'"
    )
    assert info.value.ref == ref


def test_a_feature_ref_must_be_text() -> None:
    with pytest.raises(FeatureRefError) as info:
        FeatureRef.parse(5)
    assert info.value.message == "feature reference must be a string 'table:feature', got 5"
