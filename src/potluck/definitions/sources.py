"""Where a feature table's data lives: a batch source (files) and an optional stream (Kafka)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from potluck.definitions._checks import check_column_name, check_str, set_frozen
from potluck.errors import DefinitionError

FileFormat = Literal["parquet"]
FILE_FORMATS: tuple[str, ...] = ("parquet",)


def _check_mapping(value: object, field_name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise DefinitionError(
            f"{field_name}: must map source column names to feature or entity names, "
            f"got {value!r}",
            field=field_name,
        )
    return dict(value)


@dataclass(frozen=True, kw_only=True)
class FileSource:
    """A batch source: a folder of Parquet files, local or on any pyarrow filesystem.

    Args:
        path: A local folder or a URL pyarrow understands (``file://``, ``s3://``, ``gs://``,
            ``hdfs://``).
        event_timestamp_column: The column holding each row's event time.
        created_timestamp_column: An optional column that breaks ties between rows with the same
            event time (the greatest wins).
        file_format: Only ``"parquet"``.
        date_partition_column: When set, ingested files are partitioned by this column's date.
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
            check_column_name(self.date_partition_column, "batch_source.date_partition_column")
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
    """Stream messages are Avro records written with ``schema_json``."""

    schema_json: str

    def __post_init__(self) -> None:
        check_str(self.schema_json, "stream_source.message_format.schema_json")
        if not self.schema_json.strip():
            raise DefinitionError(
                "stream_source.message_format.schema_json: an Avro format needs its schema",
                field="stream_source.message_format.schema_json",
            )


@dataclass(frozen=True, kw_only=True)
class ProtoFormat:
    """Stream messages are protobuf messages of the class at ``class_path`` (``module.Class``)."""

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


@dataclass(frozen=True, kw_only=True)
class KafkaSource:
    """A stream source: a Kafka topic whose messages carry feature rows.

    Args:
        bootstrap_servers: Comma-separated ``host:port`` list of brokers.
        topic: The topic name.
        message_format: ``"json"``, :class:`AvroFormat` or :class:`ProtoFormat`.
        event_timestamp_column: The message field holding each row's event time.
        created_timestamp_column: An optional field that breaks event-time ties.
        field_mapping: Message field name to feature or entity name.

    Raises:
        DefinitionError: If a field is invalid; ``field`` names it.
    """

    bootstrap_servers: str
    topic: str
    message_format: MessageFormat
    event_timestamp_column: str
    created_timestamp_column: str | None = None
    field_mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers:
            raise DefinitionError(
                "stream_source.bootstrap_servers: must list at least one host:port",
                field="stream_source.bootstrap_servers",
            )
        if not isinstance(self.topic, str) or not self.topic:
            raise DefinitionError(
                "stream_source.topic: must be a non-empty topic name",
                field="stream_source.topic",
            )
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
