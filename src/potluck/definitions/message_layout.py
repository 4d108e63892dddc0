"""What a stream source's messages carry for a feature table, and the check of a schema against it.

One job: name, for each column of a table, the message field that carries it
(:func:`message_fields`), and check at apply time that an Avro schema or a protobuf class has
those fields with types that convert to the table's (:func:`check_message_layout`). JSON has no
schema; its messages are checked one by one as they are decoded.

Types a message field may have, per value type (a nullable Avro union ``["null", T]`` counts as
``T``; a list value type wants an Avro ``array`` or a ``repeated`` protobuf field of the element):

======================  ==============================================  ===========================
value type              Avro                                            protobuf
======================  ==============================================  ===========================
INT32                   int                                             int32, sint32, sfixed32
INT64                   int, long                                       + int64, sint64, sfixed64,
                                                                        uint32, fixed32
FLOAT, DOUBLE           float, double, int, long                        float, double
BOOL                    boolean                                         bool
STRING                  string                                          string
BYTES                   bytes, string                                   bytes, string
UNIX_TIMESTAMP          long with logicalType timestamp-millis or       google.protobuf.Timestamp,
                        timestamp-micros, or string (ISO 8601)          string (ISO 8601)
======================  ==============================================  ===========================
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.descriptor import FieldDescriptor

from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import AvroFormat, KafkaSource, ProtoFormat
from potluck.errors import DefinitionError
from potluck.types import ValueType

Role = Literal["entity", "feature", "event_timestamp", "created_timestamp"]

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"


@dataclass(frozen=True)
class MessageField:
    """One column of a table and the message field that carries it.

    Attributes:
        field: The field's name in the message (after the source's ``field_mapping``).
        name: The entity or feature name, or ``event_timestamp`` / ``created_timestamp``.
        role: What the column is.
        value_type: The type its values are converted to.
    """

    field: str
    name: str
    role: Role
    value_type: ValueType

    @property
    def expected(self) -> str:
        """What the field holds, for messages (``"entity driver_id (INT64)"``)."""
        if self.role in ("entity", "feature"):
            return f"{self.role} {self.name} ({self.value_type.name})"
        return f"the {self.role.replace('_', ' ')} (UNIX_TIMESTAMP)"


def message_fields(
    source: KafkaSource,
    entity_types: Mapping[str, ValueType],
    features: Sequence[Feature],
) -> tuple[MessageField, ...]:
    """Return the fields a message of ``source`` carries: entities, features, then timestamps.

    Args:
        source: The stream source.
        entity_types: The table's entities, in the table's order, with their value types.
        features: The table's features.

    Raises:
        DefinitionError: If one message field would carry two columns.
    """
    field_of = {name: column for column, name in source.field_mapping.items()}
    out = [
        MessageField(field_of.get(name, name), name, "entity", ValueType(value_type))
        for name, value_type in entity_types.items()
    ]
    out += [
        MessageField(field_of.get(f.name, f.name), f.name, "feature", f.value_type)
        for f in features
    ]
    out.append(
        MessageField(
            source.event_timestamp_column,
            EVENT_TIMESTAMP,
            "event_timestamp",
            ValueType.UNIX_TIMESTAMP,
        )
    )
    if source.created_timestamp_column is not None:
        out.append(
            MessageField(
                source.created_timestamp_column,
                CREATED_TIMESTAMP,
                "created_timestamp",
                ValueType.UNIX_TIMESTAMP,
            )
        )
    seen: dict[str, MessageField] = {}
    for item in out:
        other = seen.setdefault(item.field, item)
        if other is not item:
            raise DefinitionError(
                f"stream_source: message field {item.field!r} would carry both {other.expected} "
                f"and {item.expected}; map one of them to another field with field_mapping",
                field="stream_source.field_mapping",
            )
    return tuple(out)


def check_message_layout(table: str, source: KafkaSource, fields: Sequence[MessageField]) -> None:
    """Check that ``source``'s message schema carries ``fields`` with convertible types.

    Avro schemas are always checked. A protobuf class is checked when it can be imported here
    (else when a job or ``publish`` imports it); JSON has no schema to check.

    Args:
        table: The feature table's name, for messages.
        source: Its stream source.
        fields: :func:`message_fields` of the table.

    Raises:
        DefinitionError: Naming the table, the topic and the field that is missing or has a type
            that does not convert; ``field`` is ``stream_source.message_format``.
    """
    fmt = source.message_format
    if isinstance(fmt, AvroFormat):
        found = avro_field_types(fmt, table, source.topic)
        for item in fields:
            _check_field(table, source, item, "Avro", found, _avro_fits)
    elif isinstance(fmt, ProtoFormat):
        try:
            importlib.import_module(fmt.class_path.rpartition(".")[0])
        except (ImportError, ValueError):
            return  # not importable here (a Core service); checked where messages are read
        message_class = import_message_class(fmt.class_path, table)  # a module without it: bad
        descriptors = message_class.DESCRIPTOR.fields_by_name
        for item in fields:
            _check_field(table, source, item, "protobuf", dict(descriptors), _proto_fits)


def check_stream_source(table: FeatureTable, entity_types: Mapping[str, ValueType]) -> None:
    """Check ``table``'s stream source against the table, as applying it does.

    Its messages must carry the table's columns (:func:`check_message_layout`), and an
    ``offline_sink`` needs a batch source to append to.

    Args:
        table: A feature table with a stream source.
        entity_types: The value type of each of its entities.

    Raises:
        DefinitionError: Naming the table, the topic and what is wrong.
    """
    source = table.stream_source
    if source is None:
        return
    if source.offline_sink and table.batch_source is None:
        raise DefinitionError(
            f"feature table {table.name}: its stream source has offline_sink set, so streamed "
            "rows are appended to the batch source, and the table has no batch_source; add "
            "one or drop offline_sink",
            field="stream_source.offline_sink",
        )
    types = {name: entity_types[name] for name in table.entities}
    check_message_layout(table.name, source, message_fields(source, types, table.features))


def avro_field_types(fmt: AvroFormat, table: str, topic: str) -> dict[str, Any]:
    """Return ``{field name: Avro type}`` of the record schema of ``fmt``.

    Raises:
        DefinitionError: If the schema is not an Avro record with named fields.
    """
    schema = json.loads(fmt.schema_json)
    fields = schema.get("fields") if isinstance(schema, dict) else None
    if (
        not isinstance(schema, dict)
        or schema.get("type") != "record"
        or not isinstance(fields, list)
        or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields)
    ):
        raise DefinitionError(
            f"feature table {table}: the Avro schema of topic {topic!r} must be a record with "
            'named fields ({"type": "record", "name": ..., "fields": [{"name": ..., "type": '
            "...}]})",
            field="stream_source.message_format",
        )
    return {f["name"]: f.get("type") for f in fields}


def import_message_class(class_path: str, table: str) -> Any:
    """Import the protobuf message class at ``class_path`` (``package.module_pb2.Message``).

    Raises:
        DefinitionError: If it cannot be imported or is not a message class.
    """
    module_name, _, class_name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as exc:
        raise DefinitionError(
            f"feature table {table}: cannot import the protobuf class {class_path!r} of its "
            f"stream source ({type(exc).__name__}: {exc}); install the module that defines it "
            "where messages are published and consumed",
            field="stream_source.message_format.class_path",
        ) from None
    found = getattr(module, class_name, None)
    if found is None:
        raise DefinitionError(
            f"feature table {table}: the protobuf module {module_name!r} has no class "
            f"{class_name!r} (the stream source's class_path {class_path!r}); name a message "
            "class the module defines",
            field="stream_source.message_format.class_path",
        )
    if not hasattr(found, "DESCRIPTOR") or not hasattr(found, "FromString"):
        raise DefinitionError(
            f"feature table {table}: {class_path!r} is not a protobuf message class",
            field="stream_source.message_format.class_path",
        )
    return found


def _check_field(
    table: str,
    source: KafkaSource,
    item: MessageField,
    kind: str,
    found: Mapping[str, Any],
    fits: Any,
) -> None:
    where = f"feature table {table}, topic {source.topic!r}"
    if item.field not in found:
        raise DefinitionError(
            f"{where}: the {kind} schema has no field {item.field!r} for {item.expected}; add "
            "it, or map another field to it with field_mapping",
            field="stream_source.message_format",
        )
    if not fits(found[item.field], item.value_type):
        raise DefinitionError(
            f"{where}: {kind} field {item.field!r} has type {_shown(found[item.field])}, which "
            f"does not convert to {item.expected}",
            field="stream_source.message_format",
        )


def _shown(value: Any) -> str:
    if hasattr(value, "type") and hasattr(value, "is_repeated"):  # a protobuf field
        name = value.message_type.full_name if value.message_type else _PROTO_NAMES[value.type]
        return f"repeated {name}" if value.is_repeated else name
    return json.dumps(value)


_AVRO_SCALARS: dict[ValueType, frozenset[str]] = {
    ValueType.INT32: frozenset({"int"}),
    ValueType.INT64: frozenset({"int", "long"}),
    ValueType.FLOAT: frozenset({"float", "double", "int", "long"}),
    ValueType.DOUBLE: frozenset({"float", "double", "int", "long"}),
    ValueType.BOOL: frozenset({"boolean"}),
    ValueType.STRING: frozenset({"string"}),
    ValueType.BYTES: frozenset({"bytes", "string"}),
    ValueType.UNIX_TIMESTAMP: frozenset({"string"}),
}
AVRO_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros"})
"""Avro logical types read as UNIX_TIMESTAMP (of a ``long``)."""


def _avro_fits(avro_type: Any, value_type: ValueType) -> bool:
    if isinstance(avro_type, list):  # a union: null plus one type
        branches = [t for t in avro_type if t != "null"]
        return len(branches) == 1 and _avro_fits(branches[0], value_type)
    if value_type.is_list:
        return (
            isinstance(avro_type, dict)
            and avro_type.get("type") == "array"
            and _avro_fits(avro_type.get("items"), value_type.element_type)
        )
    if isinstance(avro_type, dict):
        if value_type is ValueType.UNIX_TIMESTAMP and avro_type.get("type") == "long":
            return avro_type.get("logicalType") in AVRO_TIMESTAMPS
        if "logicalType" in avro_type:
            return False
        return _avro_fits(avro_type.get("type"), value_type)
    return isinstance(avro_type, str) and avro_type in _AVRO_SCALARS[value_type]


_P: dict[str, int] = {
    name: number for name, number in vars(FieldDescriptor).items() if name.startswith("TYPE_")
}
_PROTO_NAMES = {number: name[len("TYPE_") :].lower() for name, number in _P.items()}
_INT32S = frozenset({_P["TYPE_INT32"], _P["TYPE_SINT32"], _P["TYPE_SFIXED32"]})
_PROTO_SCALARS: dict[ValueType, frozenset[int]] = {
    ValueType.INT32: _INT32S,
    ValueType.INT64: _INT32S
    | {_P[t] for t in ("TYPE_INT64", "TYPE_SINT64", "TYPE_SFIXED64", "TYPE_UINT32")}
    | {_P["TYPE_FIXED32"]},
    ValueType.FLOAT: frozenset({_P["TYPE_FLOAT"], _P["TYPE_DOUBLE"]}),
    ValueType.DOUBLE: frozenset({_P["TYPE_FLOAT"], _P["TYPE_DOUBLE"]}),
    ValueType.BOOL: frozenset({_P["TYPE_BOOL"]}),
    ValueType.STRING: frozenset({_P["TYPE_STRING"]}),
    ValueType.BYTES: frozenset({_P["TYPE_BYTES"], _P["TYPE_STRING"]}),
    ValueType.UNIX_TIMESTAMP: frozenset({_P["TYPE_STRING"]}),
}
PROTO_TIMESTAMP = "google.protobuf.Timestamp"


def _proto_fits(descriptor: Any, value_type: ValueType) -> bool:
    if bool(descriptor.is_repeated) != value_type.is_list:
        return False
    scalar = value_type.element_type
    if descriptor.message_type is not None:
        return bool(
            scalar is ValueType.UNIX_TIMESTAMP
            and descriptor.message_type.full_name == PROTO_TIMESTAMP
            and not descriptor.message_type.GetOptions().map_entry
        )
    return descriptor.type in _PROTO_SCALARS[scalar]


__all__ = [
    "AVRO_TIMESTAMPS",
    "CREATED_TIMESTAMP",
    "EVENT_TIMESTAMP",
    "PROTO_TIMESTAMP",
    "MessageField",
    "Role",
    "avro_field_types",
    "check_message_layout",
    "check_stream_source",
    "import_message_class",
    "message_fields",
]
