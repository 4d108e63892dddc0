"""The one mapping between definitions and their wire shapes.

The shapes are plain dicts (YAML, the registry's JSON) and protobuf messages (the Core service).

The registry stores exactly what :func:`to_dict` produces, and every shape round-trips: ``from_dict
(to_dict(x)) == x`` and ``from_proto(to_proto(x)) == x`` for every definition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from potluck._proto.potluck.core.v1 import definitions_pb2 as pb
from potluck.definitions.entity import Entity
from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import (
    AvroFormat,
    FileSource,
    KafkaSource,
    MessageFormat,
    ProtoFormat,
)
from potluck.errors import DefinitionError

Definition = Entity | FeatureTable
"""Every object kind the registry stores."""

KIND_ENTITY = "entity"
KIND_FEATURE_TABLE = "feature_table"

_DURATION_UNITS = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
_DURATION = re.compile(r"(\d+)(d|h|ms|m|s|us)")


def kind_of(obj: Definition) -> str:
    """Return the registry kind of ``obj`` (``"entity"`` or ``"feature_table"``)."""
    return KIND_ENTITY if isinstance(obj, Entity) else KIND_FEATURE_TABLE


def parse_duration(value: object, field: str) -> timedelta:
    """Read a duration.

    A duration is a ``timedelta``, a number of seconds, or text such as ``"2h"``, ``"1h30m"``,
    ``"1d"``, ``"1500ms"``, ``"100us"``.

    Raises:
        DefinitionError: If ``value`` is not a duration, or one too long for a ``timedelta``;
            ``field`` names where it came from.
    """
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str):
            text = value.strip().replace(" ", "")
            negative = text.startswith("-")
            body = text[1:] if negative else text
            parts = _DURATION.findall(body)
            if parts and "".join(n + u for n, u in parts) == body:
                micros = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
                return timedelta(microseconds=-micros if negative else micros)
    except OverflowError:  # beyond timedelta's 999999999 days
        raise DefinitionError(
            f"{field}: {value!r} is out of range; durations go up to 999999999d",
            field=field,
        ) from None
    except ValueError:  # NaN seconds
        pass
    raise DefinitionError(
        f"{field}: {value!r} is not a duration; use seconds or text such as '2h', '1h30m', "
        "'7d', '1500ms'",
        field=field,
    )


def format_duration(value: timedelta) -> str:
    """Format ``value`` canonically, largest unit first (``"1h30m"``).

    This is the inverse of :func:`parse_duration`.
    """
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    parts = []
    for unit in ("d", "h", "m", "s", "ms", "us"):
        count, micros = divmod(micros, _DURATION_UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + ("".join(parts) or "0s")


# ---- dicts -------------------------------------------------------------------------------------


def to_dict(obj: Definition) -> dict[str, Any]:
    """Return the plain-dict form of ``obj`` (JSON- and YAML-safe, keys in a fixed order)."""
    if isinstance(obj, Entity):
        return {
            "name": obj.name,
            "value_type": obj.value_type.name,
            "description": obj.description,
            "labels": dict(sorted(obj.labels.items())),
        }
    out: dict[str, Any] = {
        "name": obj.name,
        "entities": list(obj.entities),
        "features": [_feature_to_dict(f) for f in obj.features],
        "max_age": None if obj.max_age is None else format_duration(obj.max_age),
        "batch_source": None if obj.batch_source is None else _file_to_dict(obj.batch_source),
        "stream_source": None if obj.stream_source is None else _kafka_to_dict(obj.stream_source),
        "labels": dict(sorted(obj.labels.items())),
    }
    return out


def entity_from_dict(data: Mapping[str, Any]) -> Entity:
    """Build an :class:`Entity` from its dict form.

    Raises:
        DefinitionError: If a key is unknown, missing or invalid.
    """
    d = _mapping(
        data, "entity", {"name", "value_type", "description", "labels"}, {"name", "value_type"}
    )
    return Entity(
        name=d["name"],
        value_type=d["value_type"],
        description=d.get("description") or "",
        labels=d.get("labels") or {},
    )


def feature_table_from_dict(data: Mapping[str, Any], revision: int | None = None) -> FeatureTable:
    """Build a :class:`FeatureTable` from its dict form.

    Args:
        data: The dict form, as :func:`to_dict` writes it or a user writes it in YAML.
        revision: The registry revision to attach, if it came from the registry.

    Raises:
        DefinitionError: If a key is unknown, missing or invalid.
    """
    allowed = {"name", "entities", "features", "max_age", "batch_source", "stream_source", "labels"}
    d = _mapping(data, "feature_table", allowed, {"name", "entities", "features"})
    where = f"feature table {d['name']}"
    features = d["features"]
    if not isinstance(features, list):
        raise DefinitionError(f"{where}: features must be a list", field="feature_table.features")
    max_age = d.get("max_age")
    return FeatureTable(
        name=d["name"],
        entities=d["entities"],
        features=tuple(_feature_from_dict(f) for f in features),
        max_age=None if max_age is None else parse_duration(max_age, "feature_table.max_age"),
        batch_source=None if d.get("batch_source") is None else _file_from_dict(d["batch_source"]),
        stream_source=(
            None if d.get("stream_source") is None else _kafka_from_dict(d["stream_source"])
        ),
        labels=d.get("labels") or {},
        revision=revision,
    )


def from_dict(kind: str, data: Mapping[str, Any], revision: int | None = None) -> Definition:
    """Build a definition of ``kind`` from its dict form."""
    if kind == KIND_ENTITY:
        return entity_from_dict(data)
    if kind == KIND_FEATURE_TABLE:
        return feature_table_from_dict(data, revision)
    raise DefinitionError(f"unknown definition kind {kind!r}", field="kind")


def _mapping(data: object, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise DefinitionError(f"{where}: expected a mapping, got {data!r}", field=where)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise DefinitionError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys are {', '.join(sorted(allowed))}",
            field=f"{where}.{unknown[0]}",
        )
    for key in sorted(required):
        if key not in data or data[key] is None:
            raise DefinitionError(f"{where}: missing required key {key!r}", field=f"{where}.{key}")
    return dict(data)


def _feature_to_dict(feature: Feature) -> dict[str, Any]:
    return {
        "name": feature.name,
        "value_type": feature.value_type.name,
        "labels": dict(sorted(feature.labels.items())),
    }


def _feature_from_dict(data: object) -> Feature:
    d = _mapping(data, "feature", {"name", "value_type", "labels"}, {"name", "value_type"})
    return Feature(name=d["name"], value_type=d["value_type"], labels=d.get("labels") or {})


def _file_to_dict(source: FileSource) -> dict[str, Any]:
    return {
        "type": "file",
        "path": source.path,
        "event_timestamp_column": source.event_timestamp_column,
        "created_timestamp_column": source.created_timestamp_column,
        "file_format": source.file_format,
        "date_partition_column": source.date_partition_column,
        "field_mapping": dict(sorted(source.field_mapping.items())),
    }


def _file_from_dict(data: object) -> FileSource:
    allowed = {
        "type",
        "path",
        "event_timestamp_column",
        "created_timestamp_column",
        "file_format",
        "date_partition_column",
        "field_mapping",
    }
    d = _mapping(data, "batch_source", allowed, {"path"})
    if d.get("type", "file") != "file":
        raise DefinitionError(
            f"batch_source.type: only 'file' is supported, got {d['type']!r}",
            field="batch_source.type",
        )
    return FileSource(
        path=d["path"],
        event_timestamp_column=d.get("event_timestamp_column") or "",
        created_timestamp_column=d.get("created_timestamp_column"),
        file_format=d.get("file_format") or "parquet",
        date_partition_column=d.get("date_partition_column"),
        field_mapping=d.get("field_mapping") or {},
    )


def _format_to_dict(fmt: MessageFormat) -> Any:
    if isinstance(fmt, AvroFormat):
        if fmt.schema_id is None:
            return {"avro": fmt.schema_json}
        return {"avro": fmt.schema_json, "schema_id": fmt.schema_id}
    if isinstance(fmt, ProtoFormat):
        return {"proto": fmt.class_path}
    return "json"


def _format_from_dict(data: object) -> MessageFormat:
    if data == "json":
        return "json"
    if isinstance(data, Mapping) and set(data) in ({"avro"}, {"avro", "schema_id"}):
        return AvroFormat(schema_json=data["avro"], schema_id=data.get("schema_id"))
    if isinstance(data, Mapping) and set(data) == {"proto"}:
        return ProtoFormat(class_path=data["proto"])
    raise DefinitionError(
        "stream_source.message_format: expected 'json', {avro: <schema json>} or "
        f"{{proto: <module.Class>}}, got {data!r}",
        field="stream_source.message_format",
    )


def _kafka_to_dict(source: KafkaSource) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "kafka",
        "bootstrap_servers": source.bootstrap_servers,
        "topic": source.topic,
        "message_format": _format_to_dict(source.message_format),
        "event_timestamp_column": source.event_timestamp_column,
        "created_timestamp_column": source.created_timestamp_column,
        "field_mapping": dict(sorted(source.field_mapping.items())),
    }
    # Written only when set, so tables stored before these keys existed stay unchanged.
    if source.dead_letter_topic is not None:
        out["dead_letter_topic"] = source.dead_letter_topic
    if source.offline_sink:
        out["offline_sink"] = True
    return out


def _kafka_from_dict(data: object) -> KafkaSource:
    allowed = {
        "type",
        "bootstrap_servers",
        "topic",
        "message_format",
        "event_timestamp_column",
        "created_timestamp_column",
        "field_mapping",
        "dead_letter_topic",
        "offline_sink",
    }
    d = _mapping(
        data, "stream_source", allowed, {"bootstrap_servers", "topic", "event_timestamp_column"}
    )
    if d.get("type", "kafka") != "kafka":
        raise DefinitionError(
            f"stream_source.type: only 'kafka' is supported, got {d['type']!r}",
            field="stream_source.type",
        )
    return KafkaSource(
        bootstrap_servers=d["bootstrap_servers"],
        topic=d["topic"],
        message_format=_format_from_dict(d.get("message_format", "json")),
        event_timestamp_column=d["event_timestamp_column"],
        created_timestamp_column=d.get("created_timestamp_column"),
        field_mapping=d.get("field_mapping") or {},
        dead_letter_topic=d.get("dead_letter_topic"),
        offline_sink=d.get("offline_sink", False),
    )


# ---- protobuf ----------------------------------------------------------------------------------


def entity_to_proto(entity: Entity) -> pb.EntitySpec:
    """Return the protobuf form of ``entity``."""
    return pb.EntitySpec(
        name=entity.name,
        value_type=int(entity.value_type),
        description=entity.description,
        labels=entity.labels,
    )


def entity_from_proto(msg: pb.EntitySpec) -> Entity:
    """Build an :class:`Entity` from its protobuf form."""
    return Entity(
        name=msg.name,
        value_type=msg.value_type,  # type: ignore[arg-type]
        description=msg.description,
        labels=dict(msg.labels),
    )


def feature_table_to_proto(table: FeatureTable) -> pb.FeatureTableSpec:
    """Return the protobuf form of ``table``."""
    msg = pb.FeatureTableSpec(
        name=table.name,
        entities=list(table.entities),
        features=[
            pb.FeatureSpec(name=f.name, value_type=int(f.value_type), labels=f.labels)
            for f in table.features
        ],
        labels=table.labels,
        revision=table.revision or 0,
    )
    if table.max_age is not None:
        duration = Duration()
        duration.FromTimedelta(table.max_age)
        msg.max_age.CopyFrom(duration)
    if table.batch_source is not None:
        s = table.batch_source
        msg.batch_source.CopyFrom(
            pb.FileSourceSpec(
                path=s.path,
                event_timestamp_column=s.event_timestamp_column,
                created_timestamp_column=s.created_timestamp_column or "",
                file_format=s.file_format,
                date_partition_column=s.date_partition_column or "",
                field_mapping=s.field_mapping,
            )
        )
    if table.stream_source is not None:
        k = table.stream_source
        kafka = pb.KafkaSourceSpec(
            bootstrap_servers=k.bootstrap_servers,
            topic=k.topic,
            event_timestamp_column=k.event_timestamp_column,
            created_timestamp_column=k.created_timestamp_column or "",
            field_mapping=k.field_mapping,
            dead_letter_topic=k.dead_letter_topic or "",
            offline_sink=k.offline_sink,
        )
        if isinstance(k.message_format, AvroFormat):
            kafka.avro_format.schema_json = k.message_format.schema_json
            if k.message_format.schema_id is not None:
                kafka.avro_format.schema_id = k.message_format.schema_id
        elif isinstance(k.message_format, ProtoFormat):
            kafka.proto_format.class_path = k.message_format.class_path
        else:
            kafka.json_format.SetInParent()
        msg.stream_source.CopyFrom(kafka)
    return msg


def feature_table_from_proto(msg: pb.FeatureTableSpec) -> FeatureTable:
    """Build a :class:`FeatureTable` from its protobuf form."""
    batch = None
    if msg.HasField("batch_source"):
        b = msg.batch_source
        batch = FileSource(
            path=b.path,
            event_timestamp_column=b.event_timestamp_column,
            created_timestamp_column=b.created_timestamp_column or None,
            file_format=b.file_format or "parquet",  # type: ignore[arg-type]
            date_partition_column=b.date_partition_column or None,
            field_mapping=dict(b.field_mapping),
        )
    stream = None
    if msg.HasField("stream_source"):
        k = msg.stream_source
        fmt: MessageFormat = "json"
        which = k.WhichOneof("message_format")
        if which == "avro_format":
            avro = k.avro_format
            schema_id = avro.schema_id if avro.HasField("schema_id") else None
            fmt = AvroFormat(schema_json=avro.schema_json, schema_id=schema_id)
        elif which == "proto_format":
            fmt = ProtoFormat(class_path=k.proto_format.class_path)
        stream = KafkaSource(
            bootstrap_servers=k.bootstrap_servers,
            topic=k.topic,
            message_format=fmt,
            event_timestamp_column=k.event_timestamp_column,
            created_timestamp_column=k.created_timestamp_column or None,
            field_mapping=dict(k.field_mapping),
            dead_letter_topic=k.dead_letter_topic or None,
            offline_sink=k.offline_sink,
        )
    return FeatureTable(
        name=msg.name,
        entities=tuple(msg.entities),
        features=tuple(
            Feature(
                name=f.name,
                value_type=f.value_type,  # type: ignore[arg-type]
                labels=dict(f.labels),
            )
            for f in msg.features
        ),
        max_age=msg.max_age.ToTimedelta() if msg.HasField("max_age") else None,
        batch_source=batch,
        stream_source=stream,
        labels=dict(msg.labels),
        revision=msg.revision or None,
    )
