"""Feast 0.9's ``DataSource`` and potluck's :class:`FileSource` / :class:`KafkaSource`, both ways.

A Feast batch source is ``BATCH_FILE`` with ``file_options`` (``file_url``, ``parquet_format``);
a stream source is ``STREAM_KAFKA`` with ``kafka_options``. BigQuery and Kinesis sources, and
fields potluck has no place for, are refused with a :class:`DefinitionError` whose message names
the Feast field (``batch_source.bigquery_options``).

``file_url`` is stored as every route stores a batch source path
(:func:`potluck.definitions.sources.received_source_path`): a ``file://`` URL (host empty or
``localhost``) names the local folder of its decoded path (``%20`` is a space, ``%2e%2e`` is
``..``); an absolute path is that folder; any other scheme (``s3://``, ``gs://``, ``hdfs://``) is
kept as given; a relative path is refused. A local folder goes back out as ``file://`` plus its
path, the only local form Feast's ``ingest()`` accepts (it writes to that text literally, so it
writes to the stored folder). So a folder whose name holds ``%`` and two hex digits cannot be
named through Feast's API: its ``file_url`` would be decoded.
"""

from __future__ import annotations

from potluck._proto.feast.core import DataFormat_pb2 as format_pb
from potluck._proto.feast.core import DataSource_pb2 as source_pb
from potluck.definitions.sources import (
    AvroFormat,
    FileSource,
    KafkaSource,
    MessageFormat,
    ProtoFormat,
    received_source_path,
)
from potluck.errors import DefinitionError

DataSource = source_pb.DataSource

_BATCH = "batch_source"
_STREAM = "stream_source"


def file_url_of(path: str) -> str:
    """Return the Feast ``file_url`` of a batch source ``path``.

    A URL is kept as given; an absolute local path becomes ``file://`` + path. A relative path
    (never stored by a registry, which resolves paths at apply time) is kept as given.
    """
    if "://" not in path and path.startswith("/"):
        return "file://" + path
    return path


def path_of(file_url: str, field: str = f"{_BATCH}.file_options.file_url") -> str:
    """Return the path (folder or file) a Feast ``file_url`` names, stored as every route stores it.

    The one rule of :func:`potluck.definitions.sources.received_source_path`: a ``file://`` URL
    is decoded and normalised (``%2e%2e`` is ``..``), an absolute path normalised, another
    scheme kept as given.

    Args:
        file_url: The URL or absolute path.
        field: The request field it came from, named in the error.

    Raises:
        DefinitionError: If ``file_url`` is relative, holds control characters, is too long, or
            is a ``file://`` URL naming another host; its ``field`` is ``field``.
    """
    return received_source_path(file_url, field=field)


def batch_source_to_feast(source: FileSource) -> source_pb.DataSource:
    """Return the Feast ``DataSource`` (``BATCH_FILE``) of a batch source."""
    return DataSource(
        type=DataSource.BATCH_FILE,
        field_mapping=source.field_mapping,
        event_timestamp_column=source.event_timestamp_column,
        date_partition_column=source.date_partition_column or "",
        created_timestamp_column=source.created_timestamp_column or "",
        file_options=DataSource.FileOptions(
            file_format=format_pb.FileFormat(parquet_format=format_pb.FileFormat.ParquetFormat()),
            file_url=file_url_of(source.path),
        ),
    )


def stream_source_to_feast(source: KafkaSource) -> source_pb.DataSource:
    """Return the Feast ``DataSource`` (``STREAM_KAFKA``) of a stream source.

    potluck's ``"json"`` format travels as ``json_format`` (field 3, as later Feast releases
    number it); Feast 0.9's SDK knows only Avro and Proto and cannot read it.
    """
    fmt = format_pb.StreamFormat()
    if isinstance(source.message_format, AvroFormat):
        fmt.avro_format.schema_json = source.message_format.schema_json
    elif isinstance(source.message_format, ProtoFormat):
        fmt.proto_format.class_path = source.message_format.class_path
    else:
        fmt.json_format.SetInParent()
    return DataSource(
        type=DataSource.STREAM_KAFKA,
        field_mapping=source.field_mapping,
        event_timestamp_column=source.event_timestamp_column,
        created_timestamp_column=source.created_timestamp_column or "",
        kafka_options=DataSource.KafkaOptions(
            bootstrap_servers=source.bootstrap_servers, topic=source.topic, message_format=fmt
        ),
    )


def batch_source_from_feast(msg: source_pb.DataSource) -> FileSource | None:
    """Return the batch source a Feast ``DataSource`` describes (``None`` for an empty one).

    Raises:
        DefinitionError: If it is not a Parquet file source, or a field is invalid; the message
            names the Feast field.
    """
    if msg.ByteSize() == 0:
        return None
    which = msg.WhichOneof("options")
    if which != "file_options":
        raise DefinitionError(
            f"{_BATCH}{'.' + which if which else ''}: {_OPTIONS_PROBLEM[which]}; a batch source "
            "is a file source: set file_options with a file_url and parquet_format",
            field=f"{_BATCH}.{which or 'file_options'}",
        )
    _check_type(msg, _BATCH, DataSource.BATCH_FILE)
    options = msg.file_options
    file_format = options.file_format.WhichOneof("format")
    if options.HasField("file_format") and file_format != "parquet_format":
        raise DefinitionError(
            f"{_BATCH}.file_options.file_format: only parquet_format is supported",
            field=f"{_BATCH}.file_options.file_format",
        )
    return FileSource(
        path=path_of(options.file_url),
        event_timestamp_column=msg.event_timestamp_column,
        created_timestamp_column=msg.created_timestamp_column or None,
        date_partition_column=msg.date_partition_column or None,
        field_mapping=dict(msg.field_mapping),
    )


def stream_source_from_feast(msg: source_pb.DataSource) -> KafkaSource | None:
    """Return the stream source a Feast ``DataSource`` describes (``None`` for an empty one).

    Raises:
        DefinitionError: If it is not a Kafka source, has a date partition column, or a field
            is invalid; the message names the Feast field.
    """
    if msg.ByteSize() == 0:
        return None
    which = msg.WhichOneof("options")
    if which != "kafka_options":
        raise DefinitionError(
            f"{_STREAM}{'.' + which if which else ''}: {_OPTIONS_PROBLEM[which]}; a stream "
            "source is a Kafka source: set kafka_options",
            field=f"{_STREAM}.{which or 'kafka_options'}",
        )
    _check_type(msg, _STREAM, DataSource.STREAM_KAFKA)
    if msg.date_partition_column:
        raise DefinitionError(
            f"{_STREAM}.date_partition_column: a Kafka source has no partition column, got "
            f"{msg.date_partition_column!r}; leave it empty",
            field=f"{_STREAM}.date_partition_column",
        )
    kafka = msg.kafka_options
    return KafkaSource(
        bootstrap_servers=kafka.bootstrap_servers,
        topic=kafka.topic,
        message_format=_message_format(kafka.message_format),
        event_timestamp_column=msg.event_timestamp_column,
        created_timestamp_column=msg.created_timestamp_column or None,
        field_mapping=dict(msg.field_mapping),
    )


_OPTIONS_PROBLEM: dict[str | None, str] = {
    None: "no source options are set",
    "file_options": "a file source cannot be a stream source",
    "bigquery_options": "BigQuery sources are not supported",
    "kafka_options": "a Kafka source cannot be a batch source",
    "kinesis_options": "Kinesis sources are not supported",
}


def _check_type(msg: source_pb.DataSource, where: str, expected: int) -> None:
    """Refuse a ``type`` that contradicts the options (``INVALID``, unset, is accepted)."""
    if msg.type not in (DataSource.INVALID, expected):
        raise DefinitionError(
            f"{where}.type: {_type_name(msg.type)} does not match its "
            f"{msg.WhichOneof('options')}; use {_type_name(expected)}",
            field=f"{where}.type",
        )


def _type_name(number: int) -> str:
    try:
        return str(DataSource.SourceType.Name(DataSource.SourceType.ValueType(number)))
    except ValueError:
        return str(number)


def _message_format(fmt: format_pb.StreamFormat) -> MessageFormat:
    field = f"{_STREAM}.kafka_options.message_format"
    which = fmt.WhichOneof("format")
    if which == "avro_format":
        return AvroFormat(schema_json=fmt.avro_format.schema_json)
    if which == "proto_format":
        return ProtoFormat(class_path=fmt.proto_format.class_path)
    if which == "json_format":
        if fmt.json_format.schema_json:
            raise DefinitionError(
                f"{field}.json_format.schema_json: potluck reads JSON messages without a "
                "schema; leave it empty",
                field=f"{field}.json_format.schema_json",
            )
        return "json"
    raise DefinitionError(
        f"{field}: no format is set; set avro_format (schema_json) or proto_format (class_path)",
        field=field,
    )


__all__ = [
    "batch_source_from_feast",
    "batch_source_to_feast",
    "file_url_of",
    "path_of",
    "stream_source_from_feast",
    "stream_source_to_feast",
]
