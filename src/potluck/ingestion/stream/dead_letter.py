"""Parking bad messages: the dead-letter topic of a stream source.

A bad message never stops a job: it is counted per reason (the job record, ``/metrics``) and,
when the stream source names a ``dead_letter_topic``, sent there before the job commits its
offset, so it is parked at least once. A parked message keeps the original key and bytes; its
headers say why and where it came from:

=====================  ===============================================================
header                 value (UTF-8 text)
=====================  ===============================================================
``potluck.reason``     the reason (``undecodable``, ``schema_violation``, ``null_key`` ...)
``potluck.detail``     what exactly was wrong, naming the field
``potluck.table``      the feature table (``project/table``)
``potluck.topic``      the topic it was read from
``potluck.partition``  its partition
``potluck.offset``     its offset
=====================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from potluck.ingestion.stream.batch import StreamTable
from potluck.ingestion.stream.brokers import new_client, producer_config, unavailable

FLUSH_TIMEOUT = 1.0
"""Seconds one wait for the dead-letter topic's acknowledgements may take."""


class DeadLetters:
    """Sends a stream's bad messages to its dead-letter topic.

    Args:
        stream: The table whose stream source names the topic.
        kafka_config: librdkafka properties over the producer's defaults.
    """

    def __init__(self, stream: StreamTable, kafka_config: Mapping[str, str]) -> None:
        topic = stream.source.dead_letter_topic
        if topic is None:
            raise ValueError("the stream source names no dead_letter_topic")
        self._stream = stream
        self._topic = topic
        self._failed: list[Any] = []
        self._producer = new_client(
            stream, "Producer", producer_config(stream.source.bootstrap_servers, kafka_config)
        )

    def send(self, bad: pa.Table) -> None:
        """Queue the bad messages of a decoded batch for the topic (:meth:`flush` waits for them).

        Args:
            bad: :attr:`~potluck.ingestion.stream.batch.DecodedBatch.bad`.
        """
        table = f"{self._stream.project}/{self._stream.table.name}".encode()
        for row in bad.to_pylist():
            headers = [
                ("potluck.reason", row["reason"].encode()),
                ("potluck.detail", row["detail"].encode()),
                ("potluck.table", table),
                ("potluck.topic", (row["topic"] or "").encode()),
                ("potluck.partition", str(row["partition"]).encode()),
                ("potluck.offset", str(row["offset"]).encode()),
            ]
            self._produce(row["key"], row["value"], headers)

    def flush(self) -> None:
        """Wait until the topic has acknowledged every message queued; call again on failure.

        A message the brokers refused (or that timed out) is queued again, so a message may be
        parked twice but never lost.

        Raises:
            UnavailableError: If some messages are not acknowledged yet.
        """
        left = self._producer.flush(FLUSH_TIMEOUT)
        failed, self._failed = self._failed, []
        for message in failed:
            self._produce(message.key(), message.value(), message.headers())
        if left or failed:
            error = failed[0].error() if failed else f"{left} message(s) not acknowledged yet"
            raise unavailable(self._stream, error, what=f"dead-letter topic {self._topic!r}")

    def _produce(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=key, headers=headers, on_delivery=self._delivered
                )
                return
            except BufferError:  # the local queue is full: let it drain
                self._producer.poll(0.1)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failed.append(message)

    def close(self) -> None:
        """Wait briefly for messages in flight, then let the producer go."""
        self._producer.flush(FLUSH_TIMEOUT)


__all__ = ["FLUSH_TIMEOUT", "DeadLetters"]
