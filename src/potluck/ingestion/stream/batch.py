"""One micro-batch of raw Kafka messages to a validated Arrow batch, plus its bad messages.

This is the engine-neutral heart of stream ingestion: the local engine's consume loop and a
Spark ``foreachBatch`` both call :func:`decode_batch` on the raw messages of a micro-batch and
:func:`online_rows` on its result, so both accept, reject and count exactly the same messages.

Raw messages come as an Arrow table with the columns of Spark's Kafka source
(:data:`RAW_SCHEMA`: ``key``, ``value``, ``topic``, ``partition``, ``offset``, ``timestamp``).
Each message is decoded by its format (:mod:`potluck.ingestion.stream.decoders`) and each column
is converted to its declared type by the rules ``ingest()`` uses
(:func:`potluck.offline.objects.objects_to_type`), message by message where a value does not fit.
A message is bad for the first of these reasons (:class:`BadReason`) that applies:

- ``undecodable``: the bytes are not a message of the format (or there are none);
- ``null_key`` / ``bad_key_type``: an entity value is missing or null / does not convert to the
  entity's type;
- ``missing_timestamp``: the event timestamp is missing or null;
- ``schema_violation``: another field does not convert to its type (a feature, the event or
  created timestamp);
- ``future_event_time``: its event time is more than :data:`FUTURE_TOLERANCE` after now (newer
  wins would keep it over every real value until that time);
- ``older_than_max_age``: its event time is older than the table's ``max_age`` (its value
  would be expired already).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.message_layout import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    MessageField,
    message_fields,
)
from potluck.definitions.sources import KafkaSource
from potluck.errors import ValidationError
from potluck.ingestion.stream.decoders import BadField, MessageDecoder, Undecodable, decoder_for
from potluck.offline.convert import BadValue
from potluck.offline.objects import objects_to_type
from potluck.online.base import CREATED_TIMESTAMP_COLUMN, ENTITY_KEY_COLUMN
from potluck.online.codec import encode_entity_keys
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

RAW_SCHEMA = pa.schema(
    [
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("topic", pa.string()),
        pa.field("partition", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("timestamp", TIMESTAMP_ARROW_TYPE),
    ]
)
"""The raw messages of a micro-batch: Spark's Kafka source columns (``timestamp`` is the
message's Kafka timestamp; any unit is accepted)."""

PARTITION = "partition"
OFFSET = "offset"
BLOCK = 256
"""Values converted together once a column holds a bad value (a bad one costs a block, not the
column)."""
FUTURE_TOLERANCE = timedelta(hours=1)
"""How far after now an event time may be (clock skew between producers and the job); a later
one is bad (``future_event_time``): written, it would win over every real value of its key
until that time, and make freshness negative."""


class BadReason(str, Enum):
    """Why a message was not written (the label of its count)."""

    UNDECODABLE = "undecodable"
    NULL_KEY = "null_key"
    BAD_KEY_TYPE = "bad_key_type"
    MISSING_TIMESTAMP = "missing_timestamp"
    SCHEMA_VIOLATION = "schema_violation"
    FUTURE_EVENT_TIME = "future_event_time"
    OLDER_THAN_MAX_AGE = "older_than_max_age"


@dataclass(frozen=True)
class StreamTable:
    """A feature table as its stream is read: its definition and what its messages carry.

    Picklable, so a Spark job can ship it to executors; the decoder is built where it is used.

    Attributes:
        project: The table's project.
        table: The feature table; it has a stream source.
        entity_types: The value type of each of its entities.
    """

    project: str
    table: FeatureTable
    entity_types: Mapping[str, ValueType]

    def __post_init__(self) -> None:
        if self.table.stream_source is None:
            raise ValidationError(
                f"feature table {self.table.name!r} has no stream_source; give it a "
                "KafkaSource to publish to and stream from",
                table=self.table.name,
            )

    @property
    def source(self) -> KafkaSource:
        """The table's stream source."""
        return cast(KafkaSource, self.table.stream_source)

    @functools.cached_property
    def fields(self) -> tuple[MessageField, ...]:
        """The message fields of the table's columns (entities, features, timestamps)."""
        types = {name: self.entity_types[name] for name in self.table.entities}
        return message_fields(self.source, types, self.table.features)

    @functools.cached_property
    def decoder(self) -> MessageDecoder:
        """The decoder of the source's message format."""
        return decoder_for(self.table.name, self.source, self.fields)

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in ("project", "table", "entity_types")}


@dataclass(frozen=True)
class DecodedBatch:
    """The outcome of :func:`decode_batch`.

    Attributes:
        rows: The good messages, in input order: one column per entity and feature (by its
            name, of its declared Arrow type), ``event_timestamp`` and ``created_timestamp``
            (the message's created field, else its Kafka timestamp), then ``partition`` and
            ``offset``.
        bad: The bad messages: ``key``, ``value`` (the original bytes), ``topic``,
            ``partition``, ``offset``, ``reason`` and ``detail``.
        counts: Bad messages per reason (``BadReason`` values); they add up to
            ``bad.num_rows``.
    """

    rows: pa.Table
    bad: pa.Table
    counts: dict[str, int] = field(default_factory=dict)


BAD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("topic", pa.string()),
        pa.field(PARTITION, pa.int32()),
        pa.field(OFFSET, pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)


def decode_batch(
    raw: pa.Table | pa.RecordBatch, stream: StreamTable, *, now: datetime
) -> DecodedBatch:
    """Decode and validate the raw messages of one micro-batch.

    Args:
        raw: ``n`` raw messages with the columns of :data:`RAW_SCHEMA` (``key``, ``topic`` and
            ``timestamp`` may be missing).
        stream: The table the messages feed.
        now: The current time (aware); messages older than ``now - max_age`` or later than
            ``now + FUTURE_TOLERANCE`` are bad.

    Returns:
        The good rows, the bad messages with their reasons, and the count per reason; every
        message is in exactly one of the two.
    """
    count = raw.num_rows
    values = raw.column("value").to_pylist()
    reasons: list[tuple[BadReason, str] | None] = [None] * count
    messages: list[Mapping[str, Any]] = []
    empty: dict[str, Any] = {}
    decode = stream.decoder.decode
    for row, value in enumerate(values):
        try:
            if value is None:
                raise Undecodable("the message has no value")
            messages.append(decode(value))
        except Undecodable as exc:
            reasons[row] = (BadReason.UNDECODABLE, exc.detail)
            messages.append(empty)
        except BadField as exc:
            reasons[row] = (_reason(exc.field, missing=False), exc.detail)
            messages.append(empty)
    columns: dict[str, pa.Array] = {}
    for item in stream.fields:
        column = [message.get(item.field) for message in messages]
        columns[item.name] = _convert(column, item, reasons)
    if CREATED_TIMESTAMP not in columns:
        columns[CREATED_TIMESTAMP] = _kafka_timestamps(raw)
    _mark_future(columns[EVENT_TIMESTAMP], now, reasons)
    _mark_expired(columns[EVENT_TIMESTAMP], stream.table, now, reasons)
    good = pa.array([r is None for r in reasons], pa.bool_())
    rows = pa.table(
        {
            **{
                name: columns[name]
                for name in (*stream.table.entities, *stream.table.feature_names)
            },
            EVENT_TIMESTAMP: columns[EVENT_TIMESTAMP],
            CREATED_TIMESTAMP: columns[CREATED_TIMESTAMP],
            PARTITION: raw.column(PARTITION).cast(pa.int32()),
            OFFSET: raw.column(OFFSET).cast(pa.int64()),
        }
    ).filter(good)
    return DecodedBatch(rows, _bad_messages(raw, reasons), _counts(reasons))


def _reason(item: MessageField, *, missing: bool) -> BadReason:
    if item.role == "entity":
        return BadReason.NULL_KEY if missing else BadReason.BAD_KEY_TYPE
    if item.role == "event_timestamp" and missing:
        return BadReason.MISSING_TIMESTAMP
    return BadReason.SCHEMA_VIOLATION


def _convert(
    values: list[Any], item: MessageField, reasons: list[tuple[BadReason, str] | None]
) -> pa.Array:
    """Convert one column, marking the messages whose value is bad (or null where it may not be).

    The whole column is converted at once; if a value does not fit, it is converted again in
    blocks, and a block holding a bad value value by value from that value on.
    """
    target = to_arrow_type(item.value_type)
    try:
        array = objects_to_type(values, target, item.expected)
    except BadValue:
        array = pa.concat_arrays(
            [
                _convert_block(values[start : start + BLOCK], start, item, target, reasons)
                for start in range(0, len(values), BLOCK)
            ]
        )
    if item.role in ("entity", "event_timestamp") and array.null_count:
        for row in pc.indices_nonzero(array.is_null()).to_pylist():
            if reasons[row] is None:
                detail = (
                    f"field {item.field!r} is missing or null; every message needs {item.expected}"
                )
                reasons[row] = (_reason(item, missing=True), detail)
    return array


def _convert_block(
    block: list[Any],
    start: int,
    item: MessageField,
    target: pa.DataType,
    reasons: list[tuple[BadReason, str] | None],
) -> pa.Array:
    pieces: list[pa.Array] = []
    done = 0
    while done < len(block):
        try:
            pieces.append(objects_to_type(block[done:], target, item.expected))
            break
        except BadValue as bad:
            if bad.row:
                pieces.append(objects_to_type(block[done : done + bad.row], target, item.expected))
            row = start + done + bad.row
            if reasons[row] is None:
                reasons[row] = (_reason(item, missing=False), f"field {item.field!r}: {bad.detail}")
            pieces.append(pa.nulls(1, target))
            done += bad.row + 1
    return pa.concat_arrays(pieces) if pieces else pa.array([], target)


def _kafka_timestamps(raw: pa.Table | pa.RecordBatch) -> pa.Array:
    if "timestamp" not in raw.schema.names:
        return pa.nulls(raw.num_rows, TIMESTAMP_ARROW_TYPE)
    column = raw.column("timestamp")
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.type.tz is None:
        array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    return array.cast(TIMESTAMP_ARROW_TYPE)


def future_event_time_detail(event: object, now: datetime) -> str:
    """Return why event time ``event`` is refused at ``now`` (it is after now + tolerance)."""
    return (
        f"event time {event} is more than {FUTURE_TOLERANCE} after now ({now.isoformat()}); "
        "newer wins would keep it over every later value of its key: fix the producer's clock "
        "or the timestamp"
    )


def future_rows(event: pa.Array, now: datetime) -> list[int]:
    """Return the rows of ``event`` (timestamps) later than ``now + FUTURE_TOLERANCE``."""
    if len(event) == 0:
        return []
    latest = pa.scalar(now + FUTURE_TOLERANCE, TIMESTAMP_ARROW_TYPE)
    later = pc.fill_null(pc.greater(event.cast(TIMESTAMP_ARROW_TYPE), latest), False)
    return cast(list[int], pc.indices_nonzero(later).to_pylist())


def _mark_future(
    event: pa.Array, now: datetime, reasons: list[tuple[BadReason, str] | None]
) -> None:
    for row in future_rows(event, now):
        if reasons[row] is None:
            reasons[row] = (BadReason.FUTURE_EVENT_TIME, future_event_time_detail(event[row], now))


def _mark_expired(
    event: pa.Array, table: FeatureTable, now: datetime, reasons: list[tuple[BadReason, str] | None]
) -> None:
    if table.max_age is None or len(event) == 0:
        return
    oldest = pa.scalar(now - table.max_age, TIMESTAMP_ARROW_TYPE)
    expired = pc.fill_null(pc.less(event, oldest), False)
    for row in pc.indices_nonzero(expired).to_pylist():
        if reasons[row] is None:
            reasons[row] = (
                BadReason.OLDER_THAN_MAX_AGE,
                f"event time {event[row]} is older than the table's max_age "
                f"({table.max_age}) allows at {now.isoformat()}",
            )


def _bad_messages(
    raw: pa.Table | pa.RecordBatch, reasons: list[tuple[BadReason, str] | None]
) -> pa.Table:
    rows = [row for row, reason in enumerate(reasons) if reason is not None]
    if not rows:
        return BAD_SCHEMA.empty_table()
    picked = pa.array(rows, pa.int64())
    names = raw.schema.names

    def column(name: str, arrow_type: pa.DataType) -> pa.Array:
        if name not in names:
            return pa.nulls(len(rows), arrow_type)
        return pc.take(raw.column(name), picked).cast(arrow_type)

    listed = [reasons[row] for row in rows]
    return pa.table(
        {
            "key": column("key", pa.binary()),
            "value": column("value", pa.binary()),
            "topic": column("topic", pa.string()),
            PARTITION: column(PARTITION, pa.int32()),
            OFFSET: column(OFFSET, pa.int64()),
            "reason": pa.array([r[0].value for r in listed if r is not None], pa.string()),
            "detail": pa.array([r[1] for r in listed if r is not None], pa.string()),
        },
        schema=BAD_SCHEMA,
    )


def _counts(reasons: Sequence[tuple[BadReason, str] | None]) -> dict[str, int]:
    return dict(Counter(r[0].value for r in reasons if r is not None))


def online_rows(rows: pa.Table, stream: StreamTable) -> pa.RecordBatch:
    """Return decoded rows as the online store takes them (``OnlineStore.write``'s ``rows``).

    Keys are encoded with :mod:`potluck.online.codec`; keys may repeat (the store keeps the
    newest row per key).

    Args:
        rows: :attr:`DecodedBatch.rows`.
        stream: The table.
    """
    table = stream.table
    keys = encode_entity_keys(
        stream.project,
        table.name,
        {name: rows.column(name).combine_chunks() for name in table.entities},
        stream.entity_types,
    )
    columns: dict[str, pa.Array] = {
        ENTITY_KEY_COLUMN: keys,
        EVENT_TIMESTAMP: rows.column(EVENT_TIMESTAMP).combine_chunks(),
        CREATED_TIMESTAMP_COLUMN: rows.column(CREATED_TIMESTAMP).combine_chunks(),
    }
    for name in table.feature_names:
        columns[name] = rows.column(name).combine_chunks()
    return pa.RecordBatch.from_pydict(columns)


def newest_event_us(rows: pa.Table) -> int | None:
    """Return the newest event time of decoded rows in microseconds (``None`` for no rows)."""
    if rows.num_rows == 0:
        return None
    newest = pc.max(rows.column(EVENT_TIMESTAMP).cast(pa.int64())).as_py()
    return None if newest is None else int(newest)


__all__ = [
    "BAD_SCHEMA",
    "BLOCK",
    "FUTURE_TOLERANCE",
    "OFFSET",
    "PARTITION",
    "RAW_SCHEMA",
    "BadReason",
    "DecodedBatch",
    "StreamTable",
    "decode_batch",
    "future_event_time_detail",
    "future_rows",
    "newest_event_us",
    "online_rows",
]
