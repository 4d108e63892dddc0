"""Reaching Kafka: client settings, topic checks, and librdkafka errors as potluck errors.

One job: everything about talking to the brokers that is not consuming or producing itself.
librdkafka's errors never reach the user as they are: :func:`unavailable` and
:func:`missing_topic` say which table, topic and brokers are concerned and what to do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from potluck._kafka_properties import property_secrets
from potluck._redact import redact_text
from potluck.errors import (
    DataValidationError,
    PluginDependencyError,
    UnavailableError,
    ValidationError,
)
from potluck.ingestion.stream.batch import StreamTable

METADATA_TIMEOUT = 5.0
"""Seconds one look-up of the topics may take before the brokers count as unreachable."""

CLIENT_LOGGER = logging.getLogger("potluck.kafka")
"""Where librdkafka's own log lines go (every client potluck builds logs here). They do not
propagate: the loop reports what matters itself (a job's ``warning``); attach a handler to this
logger, or set ``propagate``, to see them."""
CLIENT_LOGGER.addHandler(logging.NullHandler())
CLIENT_LOGGER.propagate = False

PRODUCER_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: the largest message a producer sends."""

MESSAGE_ERRORS = frozenset(
    {
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG",
        "INVALID_MSG_SIZE",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_TIMESTAMP",
        "INVALID_RECORD",
        "INVALID_REQUIRED_ACKS",
    }
)
"""Names of the librdkafka errors about a message itself, not about reaching the brokers:
sending it again cannot help, the row must change."""

RETRY_BACKOFF = (0.1, 5.0)
"""The first and the longest wait, in seconds, between two tries of something a broker or a
store refused for now; each wait doubles the one before."""


def import_confluent_kafka() -> Any:
    """Return the ``confluent_kafka`` module.

    Raises:
        PluginDependencyError: If it is not installed (the ``kafka`` extra).
    """
    try:
        import confluent_kafka
    except ImportError:
        raise PluginDependencyError(
            "stream ingestion needs confluent-kafka: pip install 'potluck[kafka]'"
        ) from None
    return confluent_kafka


def consumer_config(
    stream: StreamTable, group_id: str, overrides: Mapping[str, str]
) -> dict[str, Any]:
    """Return the consumer's settings: potluck's defaults, then ``overrides``.

    Offsets are committed only by the job (after the online write), a new group starts at the
    earliest offset, only committed transactions are read, and requests go out at once
    (``socket.nagle.disable``, as Kafka's Java clients always do: with Nagle's algorithm on, a
    fetch or commit request may wait for the acknowledgement of the one before).
    """
    return {
        "bootstrap.servers": stream.source.bootstrap_servers,
        "group.id": group_id,
        "client.id": f"potluck-stream-{stream.project}-{stream.table.name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "socket.nagle.disable": True,
        "logger": CLIENT_LOGGER,
        **overrides,
    }


def producer_config(bootstrap_servers: str, overrides: Mapping[str, str]) -> dict[str, Any]:
    """Return a producer's settings: potluck's, then ``overrides``.

    Idempotent, acknowledged by every replica, batched for 5 ms, and sent at once
    (``socket.nagle.disable``).
    """
    return {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "socket.nagle.disable": True,
        "logger": CLIENT_LOGGER,
        **overrides,
    }


def new_client(stream: StreamTable, kind: str, config: Mapping[str, Any]) -> Any:
    """Build a confluent-kafka client (``kind``: ``Consumer``, ``Producer``) from ``config``.

    Raises:
        ValidationError: If librdkafka refuses a property (unknown, or a value it does not
            take); the message names it and never shows a secret.
    """
    kafka = import_confluent_kafka()
    try:
        return getattr(kafka, kind)(config)
    except kafka.KafkaException as exc:
        problem = redact_text(_text(exc), property_secrets(config))
        raise ValidationError(
            f"feature table {stream.table.name!r}: the Kafka {kind.lower()} refused its settings: "
            f"{problem}; fix the kafka: settings or the call-time options (-k, kafka_config)",
            table=stream.table.name,
            field="kafka_config",
        ) from None


def check_stream_settings(stream: StreamTable, group_id: str, overrides: Mapping[str, str]) -> None:
    """Build (and close) the clients a stream job builds, so librdkafka judges their settings.

    A job checks them here before it is recorded, so a property librdkafka refuses is a
    :class:`ValidationError` (exit code 2), never a job that fails once started.

    Raises:
        ValidationError: If librdkafka refuses a property of the consumer (or of the dead-letter
            producer, when the source names a dead-letter topic); see :func:`new_client`.
    """
    consumer = new_client(stream, "Consumer", consumer_config(stream, group_id, overrides))
    consumer.close()
    if stream.source.dead_letter_topic is not None:
        new_client(stream, "Producer", producer_config(stream.source.bootstrap_servers, overrides))


def default_group_id(project: str, table: str) -> str:
    """Return the consumer group of a table's stream job when none is given."""
    return f"potluck.{project}.{table}"


def unavailable(stream: StreamTable, error: object, *, what: str = "") -> UnavailableError:
    """Return the error of brokers that cannot be reached (``what``: the topic read or written)."""
    source = stream.source
    topic = what or f"topic {source.topic!r}"
    return UnavailableError(
        f"cannot reach the Kafka brokers {source.bootstrap_servers} for feature table "
        f"{stream.table.name!r} ({topic}): {_text(error)}",
        address=source.bootstrap_servers,
    )


def message_refused(
    stream: StreamTable, error: object, row: int, size: int, limit: int
) -> DataValidationError | None:
    """Return the error of a message refused for what it is (too large, invalid), else ``None``.

    Args:
        stream: The table published to.
        error: The KafkaException (or KafkaError) librdkafka gave.
        row: The row of the refused message (0-based).
        size: The message's key and value, in bytes.
        limit: The producer's ``message.max.bytes``.
    """
    inner = error.args[0] if isinstance(error, Exception) and error.args else error
    name = getattr(inner, "name", None)
    code = str(name()) if callable(name) else ""
    if code not in MESSAGE_ERRORS:
        return None
    source = stream.source
    if code in ("MSG_SIZE_TOO_LARGE", "INVALID_MSG_SIZE", "RECORD_LIST_TOO_LARGE"):
        why = (
            f"its message is {size} bytes, larger than the Kafka limits allow (the producer's "
            f"message.max.bytes is {limit}; the topic's max.message.bytes, default 1048588, "
            "applies on the brokers); make the row smaller, or raise both limits "
            "(-k message.max.bytes=..., kafka-configs --alter --add-config max.message.bytes=...)"
        )
    else:
        why = f"the brokers refused its message: {_text(error)}"
    return DataValidationError(
        f"feature table {stream.table.name!r}, topic {source.topic!r}: row {row}: {why}; "
        "nothing was published",
        table=stream.table.name,
        topic=source.topic,
        column=None,
        row=row,
    )


def missing_topic(stream: StreamTable, topic: str, role: str) -> ValidationError:
    """Return the error of a topic that does not exist (``role``: ``stream``, ``dead-letter``)."""
    return ValidationError(
        f"feature table {stream.table.name!r}: its {role} topic {topic!r} does not exist on "
        f"{stream.source.bootstrap_servers}; create it (the brokers do not create topics for "
        "potluck) or fix the stream source",
        table=stream.table.name,
        topic=topic,
    )


def check_topics(
    client: Any,
    stream: StreamTable,
    *,
    dead_letter: bool = True,
    timeout: float = METADATA_TIMEOUT,
) -> None:
    """Check that the stream's topic (and dead-letter topic) exist, asking ``client``'s brokers.

    Args:
        client: A confluent-kafka consumer, producer or admin client (``list_topics``).
        stream: The table whose topics are checked.
        dead_letter: Check the dead-letter topic too, if the source names one.
        timeout: Seconds the look-up may take.

    Raises:
        ValidationError: If a topic does not exist.
        UnavailableError: If the brokers cannot be reached in time.
    """
    kafka = import_confluent_kafka()
    topics = [(stream.source.topic, "stream")]
    if dead_letter and stream.source.dead_letter_topic is not None:
        topics.append((stream.source.dead_letter_topic, "dead-letter"))
    try:
        found = client.list_topics(timeout=timeout).topics
    except kafka.KafkaException as exc:
        raise unavailable(stream, exc) from None
    for topic, role in topics:
        metadata = found.get(topic)
        if metadata is None or metadata.error is not None:
            raise missing_topic(stream, topic, role)


def retrying(
    action: Callable[[], Any],
    *,
    stopping: Callable[[], bool],
    on_retry: Callable[[Exception], None],
    retry_on: tuple[type[Exception], ...] = (UnavailableError,),
) -> bool:
    """Run ``action`` until it succeeds, waiting longer after each failure, unless stopped.

    Args:
        action: What to do; a failure of a kind in ``retry_on`` is retried.
        stopping: Checked before each retry; when true, give up.
        on_retry: Told each failure before the wait (to report it).
        retry_on: The exceptions worth retrying.

    Returns:
        Whether ``action`` succeeded (``False``: it was stopped first).
    """
    wait, longest = RETRY_BACKOFF
    while True:
        try:
            action()
            return True
        except retry_on as exc:
            on_retry(exc)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if stopping():
                return False
            time.sleep(min(0.05, wait))
        wait = min(wait * 2, longest)


def _text(error: object) -> str:
    """Return the message of ``error``: a KafkaException, a KafkaError, or anything else."""
    inner = error.args[0] if isinstance(error, Exception) and error.args else error
    describe = getattr(inner, "str", None)
    return str(describe()) if callable(describe) else str(inner)


__all__ = [
    "CLIENT_LOGGER",
    "MESSAGE_ERRORS",
    "METADATA_TIMEOUT",
    "PRODUCER_MESSAGE_MAX_BYTES",
    "RETRY_BACKOFF",
    "check_stream_settings",
    "check_topics",
    "consumer_config",
    "default_group_id",
    "import_confluent_kafka",
    "message_refused",
    "missing_topic",
    "new_client",
    "producer_config",
    "retrying",
    "unavailable",
]
