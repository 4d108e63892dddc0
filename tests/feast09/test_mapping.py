"""Feast 0.9's definition messages and potluck's definitions: lossless both ways where both can
say the same thing, and one clear refusal naming the object and the Feast field where potluck
cannot."""

from __future__ import annotations

import json
import re
import string
from datetime import timedelta
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck._proto.feast.core import DataSource_pb2 as source_pb
from potluck._proto.feast.core import Entity_pb2 as entity_pb
from potluck._proto.feast.core import FeatureTable_pb2 as table_pb
from potluck.compat.feast09.definitions import (
    entity_from_feast,
    entity_spec_to_feast,
    feature_table_from_feast,
    feature_table_spec_to_feast,
    feature_table_to_feast,
)
from potluck.compat.feast09.sources import file_url_of, path_of
from potluck.definitions import (
    AvroFormat,
    Entity,
    Feature,
    FeatureTable,
    FileSource,
    KafkaSource,
    ProtoFormat,
)
from potluck.definitions._checks import RESERVED_NAMES
from potluck.errors import DefinitionError
from potluck.types import ValueType

# ---- strategies: every definition both potluck and Feast 0.9's messages can express ----------

names = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True).filter(
    lambda n: n not in RESERVED_NAMES
)
text = st.text(max_size=20)
labels = st.dictionaries(st.text(min_size=1, max_size=8), text, max_size=3)
columns = st.text(string.ascii_letters + string.digits + "_ -", min_size=1, max_size=12).filter(
    lambda c: c == c.strip()
)
partition_columns = columns.filter(lambda c: not c.startswith("_"))
mappings = st.dictionaries(columns, columns, max_size=3)
folders = st.lists(
    st.text(string.ascii_letters + string.digits + "_-%=.", min_size=1, max_size=8).filter(
        # a percent escape in a folder's name is decoded on the way in, as on every route
        lambda p: p not in (".", "..") and not re.search("%[0-9A-Fa-f]{2}", p)
    ),
    max_size=3,
)
paths = st.one_of(
    folders.map(lambda parts: "/" + "/".join(parts)),
    st.tuples(st.sampled_from(["s3", "gs", "hdfs"]), folders).map(
        lambda t: f"{t[0]}://bucket/{'/'.join(t[1])}"
    ),
)
max_ages = st.one_of(st.none(), st.integers(1, 10**15).map(lambda us: timedelta(microseconds=us)))
scalar_types = st.sampled_from([t for t in ValueType if not t.is_list])


@st.composite
def entities(draw: Any) -> Entity:
    return Entity(
        name=draw(names),
        value_type=draw(scalar_types),
        description=draw(text),
        labels=draw(labels),
    )


@st.composite
def file_sources(draw: Any) -> FileSource:
    return FileSource(
        path=draw(paths),
        event_timestamp_column=draw(columns),
        created_timestamp_column=draw(st.none() | columns),
        date_partition_column=draw(st.none() | partition_columns),
        field_mapping=draw(mappings),
    )


formats = st.one_of(
    st.just("json"),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2).map(
        lambda d: AvroFormat(schema_json=json.dumps({"type": "record", "fields": d}))
    ),
    st.from_regex(r"[a-z]{1,8}\.[A-Z][a-z]{0,8}", fullmatch=True).map(
        lambda p: ProtoFormat(class_path=p)
    ),
)


@st.composite
def kafka_sources(draw: Any) -> KafkaSource:
    return KafkaSource(
        bootstrap_servers=draw(st.from_regex(r"[a-z0-9.]{1,10}:[0-9]{2,5}", fullmatch=True)),
        topic=draw(
            st.from_regex(r"[a-zA-Z0-9._-]{1,20}", fullmatch=True).filter(
                lambda topic: topic not in (".", "..")  # Kafka's two reserved names
            )
        ),
        message_format=draw(formats),
        event_timestamp_column=draw(columns),
        created_timestamp_column=draw(st.none() | columns),
        field_mapping=draw(mappings),
    )


@st.composite
def feature_tables(draw: Any) -> FeatureTable:
    keys = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    feature_names = draw(
        st.lists(names.filter(lambda n: n not in keys), min_size=1, max_size=4, unique=True)
    )
    return FeatureTable(
        name=draw(names),
        entities=tuple(keys),
        features=tuple(
            Feature(name=n, value_type=draw(st.sampled_from(list(ValueType))), labels=draw(labels))
            for n in feature_names
        ),
        max_age=draw(max_ages),
        batch_source=draw(st.none() | file_sources()),
        stream_source=draw(st.none() | kafka_sources()),
        labels=draw(labels),
        revision=draw(st.none() | st.integers(1, 10**6)),
    )


@settings(max_examples=200, deadline=None)
@given(entities())
def test_entity_round_trips(entity: Entity) -> None:
    wire = entity_pb.EntitySpecV2.FromString(entity_spec_to_feast(entity).SerializeToString())
    assert entity_from_feast(wire) == entity


@settings(max_examples=150, deadline=None)
@given(feature_tables())
def test_feature_table_round_trips(table: FeatureTable) -> None:
    wire = table_pb.FeatureTable.FromString(feature_table_to_feast(table).SerializeToString())
    back = feature_table_from_feast(wire.spec, wire.meta.revision or None)
    assert back == table
    assert back.revision == table.revision


@settings(max_examples=200, deadline=None)
@given(paths)
def test_paths_and_file_urls_round_trip(path: str) -> None:
    assert path_of(file_url_of(path)) == path


def test_local_folders_travel_as_file_urls_and_come_back_decoded() -> None:
    assert file_url_of("/data/driver stats") == "file:///data/driver stats"
    assert path_of("file:///data/a%20b/") == "/data/a b"  # as the CLI and Core store it
    assert path_of("file:///data/a/%2e%2e/b") == "/data/b"
    assert path_of("file://localhost/data/x") == "/data/x"
    assert path_of("/data/./x/../y") == "/data/y"
    assert path_of("s3://bucket/x/") == "s3://bucket/x/"


# ---- refusals: one message naming the object and the Feast field ------------------------------


def _spec(**changes: Any) -> table_pb.FeatureTableSpec:
    spec = feature_table_spec_to_feast(
        FeatureTable(
            name="driver_stats",
            entities=("driver_id",),
            features=(Feature(name="trips", value_type=ValueType.INT64),),
            batch_source=FileSource(path="/data/driver_stats", event_timestamp_column="ts"),
        )
    )
    for name, value in changes.items():
        getattr(spec, name).CopyFrom(value)
    return spec


def _kafka(**options: Any) -> source_pb.DataSource:
    source = source_pb.DataSource(
        type=source_pb.DataSource.STREAM_KAFKA,
        event_timestamp_column="ts",
        kafka_options=source_pb.DataSource.KafkaOptions(bootstrap_servers="b:9092", topic="t"),
    )
    source.kafka_options.message_format.avro_format.schema_json = "{}"
    for name, value in options.items():
        setattr(source, name, value)
    return source


REFUSED = [
    (
        {
            "batch_source": source_pb.DataSource(
                type=source_pb.DataSource.BATCH_BIGQUERY,
                event_timestamp_column="ts",
                bigquery_options=source_pb.DataSource.BigQueryOptions(table_ref="p:d.t"),
            )
        },
        "feature table driver_stats: batch_source.bigquery_options: BigQuery sources are not "
        "supported; a batch source is a file source: set file_options with a file_url and "
        "parquet_format",
    ),
    (
        {"batch_source": _kafka()},
        "feature table driver_stats: batch_source.kafka_options: a Kafka source cannot be a "
        "batch source; a batch source is a file source: set file_options with a file_url and "
        "parquet_format",
    ),
    (
        {
            "stream_source": source_pb.DataSource(
                type=source_pb.DataSource.STREAM_KINESIS,
                event_timestamp_column="ts",
                kinesis_options=source_pb.DataSource.KinesisOptions(region="eu", stream_name="s"),
            )
        },
        "feature table driver_stats: stream_source.kinesis_options: Kinesis sources are not "
        "supported; a stream source is a Kafka source: set kafka_options",
    ),
    (
        {"stream_source": _kafka(date_partition_column="day")},
        "feature table driver_stats: stream_source.date_partition_column: a Kafka source has no "
        "partition column, got 'day'; leave it empty",
    ),
    (
        {"stream_source": _kafka(type=source_pb.DataSource.BATCH_FILE)},
        "feature table driver_stats: stream_source.type: BATCH_FILE does not match its "
        "kafka_options; use STREAM_KAFKA",
    ),
    (
        {
            "batch_source": source_pb.DataSource(
                event_timestamp_column="ts",
                file_options=source_pb.DataSource.FileOptions(file_url="data/driver_stats"),
            )
        },
        "feature table driver_stats: batch_source.file_options.file_url: 'data/driver_stats' is "
        "a relative path; Core and the other servers do not accept relative paths (they cannot "
        "know the client's project root): send an absolute folder or a URL (potluck apply and "
        "the SDK resolve relative paths against the project root)",
    ),
    (
        {
            "batch_source": source_pb.DataSource(
                event_timestamp_column="ts",
                file_options=source_pb.DataSource.FileOptions(file_url="file://nas/data"),
            )
        },
        "feature table driver_stats: batch_source.file_options.file_url: 'file://nas/data' "
        "names the host 'nas'; a file URL must name a folder on this machine "
        "(file:///absolute/folder); use the mounted folder's path or an object store URL",
    ),
    (
        {"max_age": Duration(seconds=1, nanos=500)},
        "feature table driver_stats: max_age: 1s 500ns is finer than a microsecond, which "
        "potluck cannot hold; round it to whole microseconds",
    ),
    (
        {"max_age": Duration(seconds=-60)},
        "feature table driver_stats: max_age must be positive, got -0:01:00; use None for "
        "values that never age out",
    ),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED)
def test_what_potluck_cannot_express_is_refused_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        feature_table_from_feast(_spec(**changes))
    assert caught.value.message == message


def test_json_format_with_a_schema_and_no_format_are_refused() -> None:
    with_schema = _kafka()
    with_schema.kafka_options.message_format.json_format.schema_json = "{}"
    with pytest.raises(DefinitionError) as caught:
        feature_table_from_feast(_spec(stream_source=with_schema))
    assert caught.value.message == (
        "feature table driver_stats: stream_source.kafka_options.message_format.json_format."
        "schema_json: potluck reads JSON messages without a schema; leave it empty"
    )
    no_format = _kafka()
    no_format.kafka_options.ClearField("message_format")
    with pytest.raises(DefinitionError) as caught:
        feature_table_from_feast(_spec(stream_source=no_format))
    assert caught.value.message == (
        "feature table driver_stats: stream_source.kafka_options.message_format: no format is "
        "set; set avro_format (schema_json) or proto_format (class_path)"
    )


def test_potluck_rules_are_named_with_feasts_fields() -> None:
    spec = _spec()
    spec.features.add(name="Trips", value_type=ValueType.INT64)
    with pytest.raises(DefinitionError) as caught:
        feature_table_from_feast(spec)
    assert caught.value.message.startswith(
        "feature table driver_stats: feature.name: invalid name 'Trips'"
    )
    empty_topic = _kafka()
    empty_topic.kafka_options.topic = ""
    with pytest.raises(DefinitionError) as caught:
        feature_table_from_feast(_spec(stream_source=empty_topic))
    assert caught.value.message.startswith(
        "feature table driver_stats: stream_source.kafka_options.topic: "
    )
    with pytest.raises(DefinitionError) as caught:
        entity_from_feast(entity_pb.EntitySpecV2(name="driver_id", value_type=14))
    assert caught.value.message == (
        "entity driver_id: value_type INT64_LIST is a list; entity keys must be scalar"
    )


def test_empty_sources_and_zero_max_age_mean_none() -> None:
    spec = _spec()
    spec.ClearField("batch_source")
    spec.max_age.CopyFrom(Duration())
    table = feature_table_from_feast(spec)
    assert (table.batch_source, table.stream_source, table.max_age) == (None, None, None)
