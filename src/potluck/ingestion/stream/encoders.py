"""Rows to messages in a stream source's format: what ``publish`` sends.

The inverse of :mod:`potluck.ingestion.stream.decoders`: each row of a validated table (the
message fields as columns, each of its declared type) becomes one message that the decoder reads
back to the same values. JSON writes timestamps as ISO 8601 text and ``BYTES`` as base64; Avro
writes the record with the source's schema (plain, or after the Confluent header); Protobuf sets
the fields of the source's class (an unset field is null).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from potluck.definitions.message_layout import (
    PROTO_TIMESTAMP,
    MessageField,
    avro_field_types,
    import_message_class,
)
from potluck.definitions.sources import AvroFormat, ProtoFormat
from potluck.errors import DataValidationError
from potluck.ingestion.stream.batch import StreamTable
from potluck.ingestion.stream.decoders import CONFLUENT_HEADER, CONFLUENT_MAGIC, import_fastavro
from potluck.types import ValueType


class MessageEncoder(Protocol):
    """Writes rows as messages."""

    def encode(self, rows: pa.Table) -> list[bytes]:
        """Return one message per row of ``rows`` (columns named by message field).

        Raises:
            DataValidationError: If a value cannot be written in the format; ``row`` and
                ``column`` name it.
        """


def encoder_for(stream: StreamTable) -> MessageEncoder:
    """Return the encoder of ``stream``'s message format.

    Raises:
        DefinitionError: If the protobuf class cannot be imported.
        PluginDependencyError: If Avro is used and ``fastavro`` is missing.
    """
    fmt = stream.source.message_format
    if isinstance(fmt, AvroFormat):
        return AvroEncoder(stream, fmt)
    if isinstance(fmt, ProtoFormat):
        return ProtoEncoder(import_message_class(fmt.class_path, stream.table.name), stream.fields)
    return JsonEncoder(stream.fields)


def _records(rows: pa.Table, fields: Sequence[MessageField]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = rows.select([f.field for f in fields]).to_pylist()
    return records


def _each(value: Any, change: Any) -> Any:
    """Apply ``change`` to a value, or to each element of a list; nulls stay null."""
    if value is None:
        return None
    if isinstance(value, list):
        return [None if v is None else change(v) for v in value]
    return change(value)


def _iso(value: datetime) -> str:
    return value.isoformat()


class JsonEncoder:
    """One JSON object per row: timestamps as ISO 8601 text, ``BYTES`` as base64 text.

    Args:
        fields: The message fields written.
    """

    def __init__(self, fields: Sequence[MessageField]) -> None:
        self._fields = list(fields)
        self._changes = [
            (f.field, _iso if f.value_type.element_type is ValueType.UNIX_TIMESTAMP else _b64)
            for f in fields
            if f.value_type.element_type in (ValueType.UNIX_TIMESTAMP, ValueType.BYTES)
        ]

    def encode(self, rows: pa.Table) -> list[bytes]:
        """Write each row as a JSON object; see :meth:`MessageEncoder.encode`."""
        records = _records(rows, self._fields)
        for record in records:
            for name, change in self._changes:
                record[name] = _each(record[name], change)
        return [json.dumps(r, separators=(",", ":")).encode() for r in records]


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


class AvroEncoder:
    """Avro records of the source's schema, plain or in the Confluent wire format.

    Args:
        stream: The table (its stream source's schema and fields).
        fmt: The source's Avro format.
    """

    def __init__(self, stream: StreamTable, fmt: AvroFormat) -> None:
        fastavro = import_fastavro()
        self._schema = fastavro.parse_schema(json.loads(fmt.schema_json))
        self._write = fastavro.schemaless_writer
        self._fields = stream.fields
        self._header = (
            b"" if fmt.schema_id is None else CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, fmt.schema_id)
        )
        types = avro_field_types(fmt, stream.table.name, stream.source.topic)
        self._changes: list[tuple[str, Callable[[Any], str]]] = []
        for field in stream.fields:
            written = _unnullable(types.get(field.field))
            if isinstance(written, dict) and written.get("type") == "array":
                written = _unnullable(written.get("items"))
            if written == "string" and field.value_type.element_type is ValueType.UNIX_TIMESTAMP:
                self._changes.append((field.field, _iso))
            elif written == "string" and field.value_type.element_type is ValueType.BYTES:
                self._changes.append((field.field, _utf8))

    def encode(self, rows: pa.Table) -> list[bytes]:
        """Write each row as one Avro record; see :meth:`MessageEncoder.encode`."""
        out = []
        for row, record in enumerate(_records(rows, self._fields)):
            buffer = io.BytesIO()
            buffer.write(self._header)
            try:
                for name, change in self._changes:
                    record[name] = _each(record[name], change)
                self._write(buffer, self._schema, record)
            except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:
                raise DataValidationError(
                    f"row {row}: cannot be written with the stream source's Avro schema: {exc}",
                    column=None,
                    row=row,
                ) from None
            out.append(buffer.getvalue())
        return out


def _unnullable(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        return branches[0] if len(branches) == 1 else avro_type
    return avro_type


def _utf8(value: bytes) -> str:
    return value.decode("utf-8")


class ProtoEncoder:
    """Messages of the source's protobuf class; a null value leaves its field unset.

    Args:
        message_class: The generated message class.
        fields: The message fields written.
    """

    def __init__(self, message_class: Any, fields: Sequence[MessageField]) -> None:
        self._class = message_class
        self._fields = list(fields)
        descriptors = message_class.DESCRIPTOR.fields_by_name
        self._kinds = {}
        for field in fields:
            descriptor = descriptors[field.field]
            message = descriptor.message_type
            if message is not None and message.full_name == PROTO_TIMESTAMP:
                self._kinds[field.field] = "timestamp"
            elif descriptor.type == descriptor.TYPE_STRING and field.value_type.element_type in (
                ValueType.BYTES,
            ):
                self._kinds[field.field] = "utf8"
            elif descriptor.type == descriptor.TYPE_STRING and (
                field.value_type.element_type is ValueType.UNIX_TIMESTAMP
            ):
                self._kinds[field.field] = "iso"
            else:
                self._kinds[field.field] = "plain"

    def encode(self, rows: pa.Table) -> list[bytes]:
        """Write each row as one message; see :meth:`MessageEncoder.encode`."""
        out = []
        for row, record in enumerate(_records(rows, self._fields)):
            message = self._class()
            try:
                for name, value in record.items():
                    if value is not None:
                        self._set(message, name, value)
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                raise DataValidationError(
                    f"row {row}: cannot be written as {self._class.DESCRIPTOR.full_name}: {exc}",
                    column=None,
                    row=row,
                ) from None
            out.append(message.SerializeToString())
        return out

    def _set(self, message: Any, name: str, value: Any) -> None:
        kind = self._kinds[name]
        if kind == "timestamp":
            if isinstance(value, list):
                target = getattr(message, name)
                for item in value:
                    target.add().FromDatetime(item)
            else:
                getattr(message, name).FromDatetime(value)
            return
        if kind != "plain":
            value = _each(value, _utf8 if kind == "utf8" else _iso)
        if isinstance(value, list):
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)


__all__ = ["AvroEncoder", "JsonEncoder", "MessageEncoder", "ProtoEncoder", "encoder_for"]
