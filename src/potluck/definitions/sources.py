"""Where a feature table's data lives: a batch source (files) and an optional stream (Kafka)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from potluck.definitions._checks import (
    check_column_name,
    check_partition_column,
    check_str,
    set_frozen,
)
from potluck.errors import DefinitionError

FileFormat = Literal["parquet"]
FILE_FORMATS: tuple[str, ...] = ("parquet",)
LOCAL_FILE_HOSTS = ("", "localhost")
"""The hosts a ``file://`` batch source URL may name: both mean this machine."""


def resolve_source_path(path: str, root: str | Path) -> str:
    """Return the one location a batch source ``path`` names, for every client of a registry.

    Applying a table stores this instead of ``path``, so a relative path means the same folder to
    every client, whatever its working folder:

    - a URL of any scheme but ``file`` (``s3://bucket/x``, ``gs://``, ``hdfs://``) is kept as given;
    - ``file:///abs/folder`` and ``file://localhost/abs/folder`` become the plain local path
      ``/abs/folder`` (percent-escapes decoded), so one folder has one spelling;
    - ``~`` and ``~user`` are expanded, then a relative path is joined to ``root``;
    - the result is normalised lexically (``a/./b/../c`` is ``a/c``, no trailing ``/``); symlinks
      are kept, and nothing is read from disk.

    The result of a local path is absolute, so resolving it again returns it unchanged.

    Args:
        path: The batch source's ``path`` as written in its definition.
        root: The folder a relative path is relative to: the project root (the folder of
            ``potluck.yaml``, else of the definitions file, else the working folder). A relative
            ``root`` is taken from the working folder.

    Returns:
        An absolute local path, or the URL as given.

    Raises:
        DefinitionError: If ``path`` is a ``file://`` URL naming another host
            (``file://nas/data``); ``field`` is ``batch_source.path``.
    """
    if "://" in path:
        scheme, _, rest = path.partition("://")
        if scheme.lower() != "file":
            return path
        host, _, local = rest.partition("/")
        if host.lower() not in LOCAL_FILE_HOSTS:
            raise DefinitionError(
                f"batch_source.path: {path!r} names the host {host!r}; a file URL must name a "
                "folder on this machine (file:///absolute/folder); use the mounted folder's "
                "path or an object store URL",
                field="batch_source.path",
            )
        path = "/" + unquote(local)
    folder = os.path.expanduser(os.fspath(root))
    resolved = os.path.abspath(os.path.join(folder, os.path.expanduser(path)))
    # normpath keeps a leading "//" (POSIX leaves its meaning to the system); on Linux and macOS
    # it is "/", so it gets that one spelling.
    return "/" + resolved.lstrip("/") if resolved.startswith("//") else resolved


def _check_mapping(value: object, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise DefinitionError(
            f"{field_name}: must map source column names to feature or entity names, got {value!r}",
            field=field_name,
        )
    for column, name in value.items():
        check_column_name(column, field_name, f"{field_name} key")
        check_column_name(name, field_name, f"{field_name}[{column!r}]")
    return dict(value)


@dataclass(frozen=True, kw_only=True)
class FileSource:
    """A batch source: a folder of Parquet files, local or on any pyarrow filesystem.

    Args:
        path: A local folder or a URL pyarrow understands (``file://``, ``s3://``, ``gs://``,
            ``hdfs://``). Applying the table stores a relative folder absolute, resolved
            against the project root (:func:`resolve_source_path`).
        event_timestamp_column: The column holding each row's event time.
        created_timestamp_column: An optional column that breaks ties between rows with the same
            event time (the greatest wins).
        file_format: Only ``"parquet"``.
        date_partition_column: When set, ingested files are partitioned by this column's date,
            in ``<column>=YYYY-MM-DD/`` folders; so it must be a safe folder name
            (:func:`~potluck.definitions._checks.check_partition_column`).
        field_mapping: Source column name to feature or entity name.

    Raises:
        DefinitionError: If a field is invalid; ``field`` names it.
    """

    path: str
    event_timestamp_column: str
    created_timestamp_column: str | None = None
    file_format: FileFormat = "parquet"
    date_partition_column: str | None = None
    field_mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise DefinitionError(
                f"batch_source.path: must be a non-empty folder or URL, got {self.path!r}",
                field="batch_source.path",
            )
        if not self.event_timestamp_column:
            raise DefinitionError(
                "batch_source.event_timestamp_column: a batch source needs the name of its "
                "event timestamp column",
                field="batch_source.event_timestamp_column",
            )
        check_column_name(self.event_timestamp_column, "batch_source.event_timestamp_column")
        if self.created_timestamp_column is not None:
            check_column_name(
                self.created_timestamp_column, "batch_source.created_timestamp_column"
            )
        if self.date_partition_column is not None:
            check_partition_column(self.date_partition_column, "batch_source.date_partition_column")
        if self.file_format not in FILE_FORMATS:
            raise DefinitionError(
                f"batch_source.file_format: {self.file_format!r} is not supported; "
                f"use one of {', '.join(FILE_FORMATS)}",
                field="batch_source.file_format",
            )
        set_frozen(
            self,
            "field_mapping",
            _check_mapping(self.field_mapping, "batch_source.field_mapping"),
        )


@dataclass(frozen=True, kw_only=True)
class AvroFormat:
    """Stream messages are Avro records written with ``schema_json``.

    Example message (schema ``{"type": "record", "name": "DriverStats", "fields": [{"name":
    "driver_id", "type": "long"}, {"name": "conv_rate", "type": ["null", "float"]}, {"name":
    "event_timestamp", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}``): the
    record ``{"driver_id": 1001, "conv_rate": 0.5, "event_timestamp": 1714564800000000}`` in
    Avro's binary encoding, alone (plain Avro) or after the 5-byte Confluent header.

    Args:
        schema_json: The writer's schema: an Avro ``record`` whose fields carry the table's
            entities, features and timestamps (checked against the table at apply).
        schema_id: ``None``: each message is the bare binary record (plain Avro). A number:
            each message is in the Confluent wire format, a zero byte, this schema id as a
            4-byte big-endian integer, then the record; a message with another id is bad
            (``undecodable``). Publishing writes this id.

    Raises:
        DefinitionError: If the schema is not JSON, or the id is not a whole number from 0 to
            2**31 - 1. (Its fields are checked against the table when the table is applied.)
    """

    schema_json: str
    schema_id: int | None = None

    def __post_init__(self) -> None:
        check_str(self.schema_json, "stream_source.message_format.schema_json")
        if not self.schema_json.strip():
            raise DefinitionError(
                "stream_source.message_format.schema_json: an Avro format needs its schema",
                field="stream_source.message_format.schema_json",
            )
        try:
            json.loads(self.schema_json)
        except ValueError as exc:
            raise DefinitionError(
                f"stream_source.message_format.schema_json: not JSON ({exc}); give the Avro "
                "schema of the messages as JSON text",
                field="stream_source.message_format.schema_json",
            ) from None
        if self.schema_id is not None and (
            isinstance(self.schema_id, bool)
            or not isinstance(self.schema_id, int)
            or not 0 <= self.schema_id < 2**31
        ):
            raise DefinitionError(
                "stream_source.message_format.schema_id: must be a schema registry id (a whole "
                f"number from 0 to 2147483647) or None for plain Avro, got {self.schema_id!r}",
                field="stream_source.message_format.schema_id",
            )


@dataclass(frozen=True, kw_only=True)
class ProtoFormat:
    """Stream messages are protobuf messages of the class at ``class_path`` (``module.Class``).

    Example message: ``DriverStats(driver_id=1001, conv_rate=0.5,
    event_timestamp=Timestamp(seconds=1714564800))`` serialized with ``SerializeToString()``.
    Event and created times are ``google.protobuf.Timestamp`` fields (or ISO 8601 strings); a
    field with presence (a message field, or ``optional``) that is not set is null.

    Args:
        class_path: The generated message class, ``package.module_pb2.Message``; it must be
            importable wherever messages are published or consumed.

    Raises:
        DefinitionError: If the path is not dotted.
    """

    class_path: str

    def __post_init__(self) -> None:
        check_str(self.class_path, "stream_source.message_format.class_path")
        if "." not in self.class_path:
            raise DefinitionError(
                "stream_source.message_format.class_path: must be a dotted path such as "
                f"'mypkg.events_pb2.DriverEvent', got {self.class_path!r}",
                field="stream_source.message_format.class_path",
            )


MessageFormat = Literal["json"] | AvroFormat | ProtoFormat
"""How a stream's messages are encoded. ``"json"``: each message is one UTF-8 JSON object, such as
``{"driver_id": 1001, "conv_rate": 0.5, "event_timestamp": "2024-05-01T12:00:00Z"}``
(timestamps as ISO 8601 text, ``BYTES`` values as base64 text)."""


@dataclass(frozen=True, kw_only=True)
class KafkaSource:
    """A stream source: a Kafka topic whose messages carry feature rows.

    Args:
        bootstrap_servers: Comma-separated ``host:port`` list of brokers.
        topic: The topic name.
        message_format: ``"json"``, :class:`AvroFormat` or :class:`ProtoFormat`.
        event_timestamp_column: The message field holding each row's event time.
        created_timestamp_column: An optional field that breaks event-time ties; without it,
            the message's Kafka timestamp does.
        field_mapping: Message field name to feature or entity name.
        dead_letter_topic: A topic that receives every bad message (its original key and
            bytes, with the reason, detail, topic, partition and offset as headers); ``None``
            only counts them.
        offline_sink: Also append each micro-batch to the table's batch source (exactly once),
            so training sets see the values that were served; needs a ``batch_source``.

    Raises:
        DefinitionError: If a field is invalid; ``field`` names it.
    """

    bootstrap_servers: str
    topic: str
    message_format: MessageFormat
    event_timestamp_column: str
    created_timestamp_column: str | None = None
    field_mapping: dict[str, str] = field(default_factory=dict)
    dead_letter_topic: str | None = None
    offline_sink: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers:
            raise DefinitionError(
                "stream_source.bootstrap_servers: must list at least one host:port",
                field="stream_source.bootstrap_servers",
            )
        _check_topic(self.topic, "stream_source.topic")
        if not isinstance(self.message_format, (AvroFormat, ProtoFormat)) and (
            self.message_format != "json"
        ):
            raise DefinitionError(
                "stream_source.message_format: must be 'json', AvroFormat(schema_json=...) or "
                f"ProtoFormat(class_path=...), got {self.message_format!r}",
                field="stream_source.message_format",
            )
        check_column_name(self.event_timestamp_column, "stream_source.event_timestamp_column")
        if self.created_timestamp_column is not None:
            check_column_name(
                self.created_timestamp_column, "stream_source.created_timestamp_column"
            )
        set_frozen(
            self,
            "field_mapping",
            _check_mapping(self.field_mapping, "stream_source.field_mapping"),
        )
        if self.dead_letter_topic is not None:
            _check_topic(self.dead_letter_topic, "stream_source.dead_letter_topic")
            if self.dead_letter_topic == self.topic:
                raise DefinitionError(
                    f"stream_source.dead_letter_topic: {self.topic!r} is the stream's own topic; "
                    "bad messages need a topic of their own",
                    field="stream_source.dead_letter_topic",
                )
        if not isinstance(self.offline_sink, bool):
            raise DefinitionError(
                f"stream_source.offline_sink: must be true or false, got {self.offline_sink!r}",
                field="stream_source.offline_sink",
            )


TOPIC_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""What Kafka accepts as a topic name."""


def _check_topic(value: object, field_name: str) -> None:
    if not isinstance(value, str) or not value:
        raise DefinitionError(f"{field_name}: must be a non-empty topic name", field=field_name)
    if not TOPIC_PATTERN.fullmatch(value) or value in (".", ".."):
        raise DefinitionError(
            f"{field_name}: {value!r} is not a Kafka topic name (1-249 letters, digits, '.', "
            "'_' or '-', not '.' or '..')",
            field=field_name,
        )
