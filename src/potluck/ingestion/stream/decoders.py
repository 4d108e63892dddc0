"""Message formats: one Kafka message's bytes to the Python values of its fields.

One job per format: JSON, Avro (plain, or the Confluent wire format with a schema id) and
Protobuf. A decoder reads only the fields a table needs (:func:`~potluck.definitions.
message_layout.message_fields`) and returns them by field name; a missing field reads as
``None``. Bytes that are not a message of the format raise :class:`Undecodable`; a field that
the format cannot hold for its column (JSON ``BYTES`` that are not base64) raises
:class:`BadField`. Converting the values to the table's types is the caller's job
(:mod:`potluck.ingestion.stream.batch`), by the rules ``ingest()`` uses.

Decoders hold no connection and are built once per process (a Spark executor builds its own).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import struct
from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import Any, Protocol

from potluck.definitions.message_layout import (
    PROTO_TIMESTAMP,
    MessageField,
    import_message_class,
)
from potluck.definitions.sources import AvroFormat, KafkaSource, ProtoFormat
from potluck.errors import PluginDependencyError
from potluck.types import ValueType

CONFLUENT_MAGIC = 0
"""The first byte of a message in the Confluent wire format."""
CONFLUENT_HEADER = struct.Struct(">bI")
"""The Confluent wire format's header: the magic byte, then the schema id (big-endian)."""


class Undecodable(Exception):
    """The bytes are not a message of the format; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadField(Exception):
    """A field holds a value its format cannot give the column; ``detail`` says why."""

    def __init__(self, field: MessageField, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


class MessageDecoder(Protocol):
    """Reads the fields of one message."""

    def decode(self, value: bytes) -> Mapping[str, Any]:
        """Return the message's fields by name (missing fields may be absent).

        Raises:
            Undecodable: If ``value`` is not a message of the format.
            BadField: If a field's value cannot be given to its column.
        """


def decoder_for(table: str, source: KafkaSource, fields: Sequence[MessageField]) -> MessageDecoder:
    """Return the decoder of ``source``'s message format, for the columns ``fields`` name.

    Raises:
        DefinitionError: If the protobuf class cannot be imported.
        PluginDependencyError: If Avro is used and ``fastavro`` is missing.
    """
    fmt = source.message_format
    if isinstance(fmt, AvroFormat):
        return AvroDecoder(fmt)
    if isinstance(fmt, ProtoFormat):
        return ProtoDecoder(import_message_class(fmt.class_path, table), fields)
    return JsonDecoder(fields)


class JsonDecoder:
    """One UTF-8 JSON object per message; ``BYTES`` values are base64 text.

    Args:
        fields: The columns read (their ``BYTES`` fields are base64-decoded).
    """

    def __init__(self, fields: Sequence[MessageField]) -> None:
        self._binary = [f for f in fields if f.value_type.element_type is ValueType.BYTES]
        self._scan: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

    def decode(self, value: bytes) -> Mapping[str, Any]:
        """Parse one JSON object; see :meth:`MessageDecoder.decode`."""
        try:
            # The C scanner on the text, as json.loads does after its checks; anything unusual
            # (leading spaces, trailing data, bad bytes) goes through json.loads for its message.
            text = value.decode()
            message, end = self._scan(text, 0)
            if end != len(text):
                raise ValueError
        except (ValueError, StopIteration):
            message = self._loads(value)
        if not isinstance(message, dict):
            raise Undecodable(f"not a JSON object but a {type(message).__name__}")
        for field in self._binary:
            found = message.get(field.field)
            if found is not None:
                message[field.field] = _unbase64(found, field)
        return message

    @staticmethod
    def _loads(value: bytes) -> Any:
        try:
            return json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Undecodable(f"not JSON: {exc}") from None


def _unbase64(value: Any, field: MessageField) -> Any:
    if isinstance(value, list):
        return [None if v is None else _unbase64(v, field) for v in value]
    if not isinstance(value, str):
        return value  # a wrong kind: the type conversion names it
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadField(
            field,
            f"field {field.field!r}: {value[:40]!r} is not base64 text, which JSON messages use "
            f"for {field.expected}",
        ) from None


class AvroDecoder:
    """Avro records of one writer's schema: plain, or in the Confluent wire format.

    Args:
        fmt: The source's Avro format (its schema, and its schema id for the wire format).

    Raises:
        PluginDependencyError: If ``fastavro`` is not installed.
    """

    def __init__(self, fmt: AvroFormat) -> None:
        fastavro = import_fastavro()
        self._schema = fastavro.parse_schema(json.loads(fmt.schema_json))
        self._read = fastavro.schemaless_reader
        self._schema_id = fmt.schema_id

    def decode(self, value: bytes) -> Mapping[str, Any]:
        """Read one record; see :meth:`MessageDecoder.decode`."""
        start = 0
        if self._schema_id is not None:
            if len(value) < CONFLUENT_HEADER.size:
                raise Undecodable(
                    f"{len(value)} bytes: too short for the Confluent wire format's header"
                )
            magic, schema_id = CONFLUENT_HEADER.unpack_from(value)
            if magic != CONFLUENT_MAGIC:
                raise Undecodable(
                    f"starts with byte {magic}, not the Confluent wire format's magic byte 0"
                )
            if schema_id != self._schema_id:
                raise Undecodable(
                    f"written with schema id {schema_id}; the stream source reads schema id "
                    f"{self._schema_id}"
                )
            start = CONFLUENT_HEADER.size
        buffer = io.BytesIO(value)
        buffer.seek(start)
        try:
            record = self._read(buffer, self._schema)
        except Exception as exc:  # fastavro raises many kinds on bad bytes
            detail = f"not an Avro record of the schema: {type(exc).__name__}: {exc}"
            raise Undecodable(detail) from None
        if buffer.tell() != len(value):
            raise Undecodable(
                f"not an Avro record of the schema: {len(value) - buffer.tell()} bytes left over"
            )
        if not isinstance(record, dict):
            raise Undecodable("not an Avro record")
        return record


def import_fastavro() -> Any:
    """Return the ``fastavro`` module.

    Raises:
        PluginDependencyError: If it is not installed (the ``kafka`` extra).
    """
    try:
        import fastavro
    except ImportError:
        raise PluginDependencyError(
            "Avro messages need fastavro: pip install 'potluck[kafka]'"
        ) from None
    return fastavro


class ProtoDecoder:
    """Protobuf messages of one class.

    A field with presence (a message field, or ``optional``) that is not set reads as null;
    ``google.protobuf.Timestamp`` fields read as UTC datetimes.

    Args:
        message_class: The generated message class.
        fields: The columns read.
    """

    def __init__(self, message_class: Any, fields: Sequence[MessageField]) -> None:
        self._parse = message_class.FromString
        descriptors = message_class.DESCRIPTOR.fields_by_name
        self._fields = [(f.field, descriptors[f.field]) for f in fields if f.field in descriptors]

    def decode(self, value: bytes) -> Mapping[str, Any]:
        """Parse one message; see :meth:`MessageDecoder.decode`."""
        try:
            message = self._parse(value)
        except Exception as exc:  # google.protobuf.message.DecodeError, among others
            raise Undecodable(f"not a protobuf message of the class: {exc}") from None
        out: dict[str, Any] = {}
        for name, descriptor in self._fields:
            if descriptor.has_presence and not message.HasField(name):
                out[name] = None
                continue
            found = getattr(message, name)
            timestamp = (
                descriptor.message_type is not None
                and descriptor.message_type.full_name == PROTO_TIMESTAMP
            )
            if descriptor.is_repeated:
                out[name] = [_timestamp(v) for v in found] if timestamp else list(found)
            else:
                out[name] = _timestamp(found) if timestamp else found
        return out


def _timestamp(value: Any) -> Any:
    return value.ToDatetime(tzinfo=timezone.utc)


__all__ = [
    "CONFLUENT_HEADER",
    "CONFLUENT_MAGIC",
    "AvroDecoder",
    "BadField",
    "JsonDecoder",
    "MessageDecoder",
    "ProtoDecoder",
    "Undecodable",
    "decoder_for",
    "import_fastavro",
]
