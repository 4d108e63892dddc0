"""Where a feature table's data lives: a batch source (files) and an optional stream (Kafka)."""

from __future__ import annotations

import json
import os
import re
import unicodedata
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


MAX_PATH_BYTES = 4095
"""The longest path or URL a batch source may name, in UTF-8 bytes (Linux's ``PATH_MAX`` less
its NUL)."""

MAX_PATH_PART_BYTES = 255
"""The longest file or folder name in a local path, in UTF-8 bytes (``NAME_MAX``)."""

_SHOWN = 80
"""How much of a refused path an error message quotes."""


def shown_path(path: str) -> str:
    """Return ``path`` quoted for an error message: its repr, cut to about 80 characters."""
    return repr(path) if len(path) <= _SHOWN else f"{path[:_SHOWN]!r}... ({len(path)} characters)"


def source_path_problem(path: str) -> str | None:
    """Return why ``path`` cannot name a batch source or data root, or ``None`` when it can.

    A ``file://`` URL must name this machine (no host, or ``localhost``). A path or URL must
    not hold control characters (a NUL byte, a newline ...: the file system and pyarrow refuse
    them, and they forge log lines), nor be longer than
    :data:`MAX_PATH_BYTES`; a local path (a ``file://`` URL after its percent-escapes are
    decoded) must not have a part longer than :data:`MAX_PATH_PART_BYTES`. Only the text is
    read, never the disk.
    """
    scheme, sep, rest = path.partition("://")
    host = rest.partition("/")[0]
    if sep and scheme.lower() == "file" and host.lower() not in LOCAL_FILE_HOSTS:
        return (
            f"names the host {host!r}; a file URL must name a folder on this machine "
            "(file:///absolute/folder); use the mounted folder's path or an object store URL"
        )
    for text in _local_forms(path):
        bad = next((c for c in text if unicodedata.category(c) in _CONTROL), None)
        if bad is not None:
            return (
                f"holds the control character {bad!r}; a path cannot hold control characters "
                "(NUL, newline, tab ...): name the folder without them"
            )
        size = _bytes(text)
        if size > MAX_PATH_BYTES:
            return (
                f"is {size} bytes long; a path may be at most {MAX_PATH_BYTES} bytes: use a "
                "shorter path"
            )
        if "://" in text:
            continue
        long = next((p for p in text.split("/") if _bytes(p) > MAX_PATH_PART_BYTES), None)
        if long is not None:
            return (
                f"has a part of {_bytes(long)} bytes "
                f"({shown_path(long)}); a file or folder name may be at most "
                f"{MAX_PATH_PART_BYTES} bytes: use shorter names"
            )
    return None


_CONTROL = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _local_forms(path: str) -> tuple[str, ...]:
    """The texts of ``path`` to check: itself and, for a ``file://`` URL, its decoded path."""
    scheme, sep, rest = path.partition("://")
    if sep and scheme.lower() == "file":
        return path, "/" + unquote(rest.partition("/")[2])
    return (path,)


def resolve_source_path(path: str, root: str | Path, *, field: str = "batch_source.path") -> str:
    """Return the one location a batch source ``path`` names, for every client of a registry.

    Every way a table reaches a registry (the SDK, ``potluck apply``, Core's ``Apply`` and
    ``Plan``, Feast 0.9's ``ApplyFeatureTable``) stores this instead of ``path``, so one folder has
    one spelling and a relative path means the same folder to every client, whatever its working
    folder:

    - a URL of any scheme but ``file`` (``s3://bucket/x``, ``gs://``, ``hdfs://``) is kept as given;
    - ``file:///abs/folder`` and ``file://localhost/abs/folder`` become the plain local path
      ``/abs/folder`` (percent-escapes decoded, as RFC 8089 reads them: ``%2e%2e`` is ``..``);
    - ``~`` and ``~user`` are expanded, then a relative path is joined to ``root``;
    - the result is normalised lexically (``a/./b/../c`` is ``a/c``, no trailing ``/``); symlinks
      are kept, and nothing is read from disk.

    The result of a local path is absolute, so resolving it again returns it unchanged.

    Args:
        path: The batch source's ``path`` as written in its definition.
        root: The folder a relative path is relative to: the project root (the folder of
            ``potluck.yaml``, else of the definitions file, else the working folder). A relative
            ``root`` is taken from the working folder.
        field: The field ``path`` came from, named in errors.

    Returns:
        An absolute local path, or the URL as given.

    Raises:
        DefinitionError: If ``path`` fails :func:`source_path_problem` (control characters, too
            long) or is a ``file://`` URL naming another host (``file://nas/data``); ``field``
            is ``field``.
    """
    problem = source_path_problem(path)
    if problem is not None:
        raise DefinitionError(f"{field}: {shown_path(path)} {problem}", field=field)
    if "://" in path:
        scheme, _, rest = path.partition("://")
        if scheme.lower() != "file":
            return path
        path = "/" + unquote(rest.partition("/")[2])
    try:
        folder = os.path.expanduser(os.fspath(root))
        resolved = os.path.abspath(os.path.join(folder, os.path.expanduser(path)))
    except (OSError, ValueError) as exc:  # the checks above leave none known; never INTERNAL
        raise DefinitionError(
            f"{field}: {shown_path(path)} cannot be resolved ({exc}); give an absolute folder",
            field=field,
        ) from None
    # normpath keeps a leading "//" (POSIX leaves its meaning to the system); on Linux and macOS
    # it is "/", so it gets that one spelling.
    return "/" + resolved.lstrip("/") if resolved.startswith("//") else resolved


def received_source_path(path: str, *, field: str = "batch_source.path") -> str:
    """Return the stored form of a batch source path a server received from a client.

    As :func:`resolve_source_path`, except that a relative path (or ``~``) is refused: a server
    (Core, Feast 0.9's Core API) cannot know the client's project root, and would otherwise
    resolve it against its own working folder. ``potluck apply`` and the SDK resolve relative
    paths before they send them.

    Raises:
        DefinitionError: If ``path`` is relative, or :func:`resolve_source_path` refuses it;
            ``field`` is ``field``.
    """
    if "://" not in path and not path.startswith("/") and source_path_problem(path) is None:
        raise DefinitionError(
            f"{field}: {shown_path(path)} is a relative path; Core and the other servers do not "
            "accept relative paths (they cannot know the client's project root): send an "
            "absolute folder or a URL (potluck apply and the SDK resolve relative paths against "
            "the project root)",
            field=field,
        )
    return resolve_source_path(path, "/", field=field)


def data_location(location: str, root: str | Path | None, *, field: str) -> str:
    """Return the one spelling of a folder or URL prefix that bounds a project's data.

    For the ``data_roots`` setting and for the locations an administrator allows outside a
    project's roots (``potluck projects allow-location``): both give a project every location
    under them, so both follow this one rule. The location is normalised as a batch source path
    is (:func:`resolve_source_path`); it must name something narrower than everything: not
    ``/`` (the whole file system), not a URL without a bucket or host (``s3://``, ``s3:///x``).

    Args:
        location: An absolute folder, a ``file://`` URL or a URL prefix (``s3://bucket/x``).
        root: The folder a relative location is relative to; ``None``: a relative location is
            refused (an allowed location is stored and holds for every client).
        field: The setting or argument it came from, named in errors.

    Raises:
        DefinitionError: If it is empty, relative while ``root`` is ``None``, fails
            :func:`source_path_problem`, is ``/`` or names no bucket or host; ``field`` is
            ``field``.
    """
    text = location.strip() if isinstance(location, str) else ""
    if not text:
        raise DefinitionError(
            f"{field}: {location!r} names nothing; give an absolute folder or a URL such as "
            "s3://bucket/prefix",
            field=field,
        )
    if root is None and "://" not in text and not text.startswith("/"):
        raise DefinitionError(
            f"{field}: {shown_path(location)} is relative; an allowed location is stored in the "
            "registry and holds for every client, so give an absolute folder (such as "
            "/srv/shared/stats) or a URL such as s3://bucket/prefix",
            field=field,
        )
    resolved = resolve_source_path(text, root or "/", field=field)
    if resolved == "/":
        raise DefinitionError(
            f"{field}: {shown_path(location)} is the whole file system; allowing it would let "
            "the project's tables read and overwrite every project's data; allow the narrowest "
            "folder they need",
            field=field,
        )
    scheme, sep, rest = resolved.partition("://")
    if sep and not rest.partition("/")[0]:
        raise DefinitionError(
            f"{field}: {shown_path(location)} names no bucket or host, so it would cover every "
            f"bucket: give {scheme}://BUCKET or {scheme}://BUCKET/PREFIX",
            field=field,
        )
    return resolved


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
