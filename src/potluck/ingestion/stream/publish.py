"""Publishing rows to a table's stream source: validated like ``ingest()``, sent atomically.

One job: ``client.publish`` and ``potluck publish``. The whole frame is checked by the rules of
:func:`potluck.ingestion.ingest.check_rows` (under the stream source's column names) before
anything is sent, so a bad frame publishes nothing. Each row becomes one message in the source's
format (:mod:`potluck.ingestion.stream.encoders`), keyed by its canonical entity key
(:mod:`potluck.online.codec`), so one key always goes to one partition and its messages stay in
order. The messages are sent in one Kafka transaction: consumers that read committed messages
(every stream job does) see all of them or, if publishing fails part way, none.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from potluck.definitions.entity import Entity
from potluck.errors import DataValidationError
from potluck.ingestion.ingest import check_rows
from potluck.ingestion.stream.batch import StreamTable, future_event_time_detail, future_rows
from potluck.ingestion.stream.brokers import (
    METADATA_TIMEOUT,
    PRODUCER_MESSAGE_MAX_BYTES,
    check_topics,
    import_confluent_kafka,
    message_refused,
    new_client,
    producer_config,
    unavailable,
)
from potluck.ingestion.stream.encoders import encoder_for
from potluck.offline.inputs import InputData
from potluck.online.codec import encode_entity_keys

DEFAULT_TIMEOUT = 30.0
"""Seconds a publish may wait for the brokers at each step before it gives up."""


@dataclass(frozen=True)
class PublishReport:
    """What one publish sent.

    Attributes:
        table: The feature table's name.
        topic: The topic written.
        messages: Messages sent (one per row), all in one committed transaction.
    """

    table: str
    topic: str
    messages: int


def message_keys(rows: pa.Table, stream: StreamTable) -> list[bytes]:
    """Return each row's canonical entity key (the Kafka message key).

    Args:
        rows: Validated rows, columns named by message field.
        stream: The table.
    """
    by_name = {f.name: f.field for f in stream.fields if f.role == "entity"}
    keys = encode_entity_keys(
        stream.project,
        stream.table.name,
        {name: rows.column(by_name[name]).combine_chunks() for name in stream.table.entities},
        stream.entity_types,
    )
    return [bytes(k) for k in keys.to_pylist()]


def publish(
    stream: StreamTable,
    entities: Mapping[str, Entity],
    data: InputData,
    *,
    kafka_config: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PublishReport:
    """Validate ``data`` against the table and send it to its topic in one transaction.

    Args:
        stream: The table and its stream source.
        entities: The table's entities by name.
        data: A DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL, with the
            stream source's columns (its ``field_mapping`` names and timestamp columns).
        kafka_config: librdkafka properties over the producer's defaults.
        timeout: Seconds each step (metadata, transaction start and commit) may wait.

    Returns:
        What was sent.

    Raises:
        DataValidationError: If a row does not fit, or its event time is more than
            ``FUTURE_TOLERANCE`` after now (nothing is sent); ``column`` and ``row`` name the
            first problem.
        ValidationError: If the topic does not exist, or librdkafka refuses a property.
        DataValidationError: If the brokers refuse a message itself (too large, invalid);
            ``row`` names it (nothing is visible to readers of committed messages).
        UnavailableError: If the brokers cannot be reached or the transaction fails (nothing
            is visible to readers of committed messages).
    """
    rows = check_rows(stream.table, stream.source, entities, data)
    _refuse_future_event_times(rows, stream)
    values = encoder_for(stream).encode(rows)
    keys = message_keys(rows, stream)
    kafka = import_confluent_kafka()
    settings = {
        "transactional.id": f"potluck-publish-{uuid.uuid4().hex}",
        **(kafka_config or {}),
    }
    producer = new_client(
        stream, "Producer", producer_config(stream.source.bootstrap_servers, settings)
    )
    check_topics(producer, stream, dead_letter=False, timeout=min(timeout, METADATA_TIMEOUT))
    if not values:
        return PublishReport(stream.table.name, stream.source.topic, 0)
    failures: list[tuple[int, Any]] = []
    limit = int(settings.get("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES))
    row = 0
    try:
        producer.init_transactions(timeout)
        producer.begin_transaction()
        for row, (key, value) in enumerate(zip(keys, values, strict=True)):
            _produce(producer, stream.source.topic, key, value, row, failures)
        producer.flush(timeout)
        if failures:
            row, error = failures[0]
            raise kafka.KafkaException(error)
        producer.commit_transaction(timeout)
    except kafka.KafkaException as exc:
        _abort(producer, kafka, timeout)
        refused = message_refused(stream, exc, row, len(keys[row]) + len(values[row]), limit)
        raise (refused or unavailable(stream, exc)) from None
    return PublishReport(stream.table.name, stream.source.topic, len(values))


def _refuse_future_event_times(rows: pa.Table, stream: StreamTable) -> None:
    """Refuse the first row whose event time a stream job would refuse (``future_event_time``)."""
    column = stream.source.event_timestamp_column
    now = datetime.now(timezone.utc)
    event = rows.column(column).combine_chunks()
    later = future_rows(event, now)
    if later:
        row = later[0]
        raise DataValidationError(
            f"column {column!r} row {row}: {future_event_time_detail(event[row], now)}",
            column=column,
            row=row,
        )


def _produce(
    producer: Any, topic: str, key: bytes, value: bytes, row: int, failures: list[tuple[int, Any]]
) -> None:
    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append((row, error))

    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=delivered)
            return
        except BufferError:  # the local queue is full: let it drain
            producer.poll(0.1)


def _abort(producer: Any, kafka: Any, timeout: float) -> None:
    # If the abort fails too, the transaction times out on the brokers: never committed.
    with contextlib.suppress(kafka.KafkaException):
        producer.abort_transaction(timeout)


__all__ = ["DEFAULT_TIMEOUT", "PublishReport", "message_keys", "publish"]
