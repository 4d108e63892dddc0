"""Faults under a running stream job: the broker killed, the job killed, Redis gone for a while.

In each, no event is lost (every key ends at its newest value), no older value overwrites a newer
one (checked on every look while the stream runs), and the job recovers without a person. The
broker and the Redis killed here are the test's own, on free ports; the job-kill test uses the
shared broker and Redis with topics and keys of its own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _stream_support import (
    FAST_GROUP,
    Broker,
    RedisServer,
    client_for,
    committed,
    end_offsets,
    finish,
    new_topic,
    online_values,
    potluck_stream,
    stats_table,
    utc_now,
    wait_until,
)
from confluent_kafka import Producer

from potluck import Client
from potluck.ingestion.jobs import JobStatus

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

KEYS = list(range(50))
BASE = utc_now() - timedelta(hours=1)


def produce_round(producer: Producer, topic: str, version: int) -> None:
    """One message per key whose trips is ``version``, one second newer than the round before."""
    stamp = (BASE + timedelta(seconds=version)).isoformat()
    for key in KEYS:
        value = json.dumps({"driver_id": key, "trips": version, "event_timestamp": stamp})
        producer.produce(topic, value=value.encode(), key=str(key).encode())
    producer.poll(0)


class Watch:
    """Reads every key's value on each look and fails if one ever goes back to an older one."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen = dict.fromkeys(KEYS, -1)

    def look(self) -> dict[int, int]:
        values = {
            k: v if v is not None else -1 for k, (v, _) in online_values(self.client, KEYS).items()
        }
        for key, value in values.items():
            assert value >= self.seen[key], f"key {key} went back from {self.seen[key]} to {value}"
        self.seen = values
        return values

    def all_at(self, version: int) -> bool:
        return all(v == version for v in self.look().values())


@pytest.fixture()
def redis_store(redis_url: str) -> dict[str, Any]:
    return {"type": "redis", "url": redis_url}


@pytest.fixture()
def cleanup() -> Iterator[list[Any]]:
    """Things to stop after the test, whatever happens: clients, brokers, servers, processes."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, Client):
            finish(thing)
        elif isinstance(thing, subprocess.Popen):
            if thing.poll() is None:
                thing.kill()
            thing.communicate()
        else:
            thing.stop()


def test_a_broker_killed_and_restarted_mid_stream_loses_nothing(
    tmp_path: Path, redis_store: dict[str, Any], cleanup: list[Any]
) -> None:
    broker = Broker(tmp_path / "broker")
    cleanup.append(broker)
    broker.start()
    topic = new_topic(broker.bootstrap)
    client = client_for(tmp_path / "project", redis_store, stats_table(broker.bootstrap, topic))
    cleanup.append(client)
    job = client.start_stream_to_online_ingestion(
        "driver_stats", kafka_config=FAST_GROUP, batch_interval=0.05
    )
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
        }
    )
    watch = Watch(client)
    for version in range(10):
        produce_round(producer, topic, version)
    assert producer.flush(30) == 0
    wait_until(lambda: watch.all_at(9), 60, "round 9 online")

    broker.kill()
    for version in range(10, 15):  # queued in the producer while the broker is down
        produce_round(producer, topic, version)
    producer.poll(0.5)
    down = wait_until(lambda: (r := job.record()).warning and r, 30, "a warning")
    assert down.status is JobStatus.RUNNING
    assert down.warning.startswith(f"cannot reach the Kafka brokers {broker.bootstrap} ")

    broker.start()
    for version in range(15, 20):
        produce_round(producer, topic, version)
    assert producer.flush(60) == 0
    wait_until(lambda: watch.all_at(19), 90, "round 19 online")
    group = f"potluck.{client.project}.driver_stats"
    ends = end_offsets(broker.bootstrap, topic)
    assert sum(ends.values()) == 20 * len(KEYS)
    wait_until(lambda: committed(broker.bootstrap, group, topic) == ends, 60, "all committed")
    record = wait_until(lambda: (r := job.record()).warning is None and r, 30, "no warning")
    assert record.status is JobStatus.RUNNING
    assert record.stats.rows_read >= 20 * len(KEYS)
    assert record.stats.rows_rejected == 0


def test_a_job_killed_mid_stream_and_started_again_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, redis_store: dict[str, Any], cleanup: list[Any]
) -> None:
    topic = new_topic(kafka_bootstrap)
    client = client_for(tmp_path, redis_store, stats_table(kafka_bootstrap, topic))
    cleanup.append(client)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    watch = Watch(client)
    for version in range(5):
        produce_round(producer, topic, version)
    assert producer.flush(30) == 0
    first = potluck_stream(tmp_path)
    cleanup.append(first)
    wait_until(lambda: watch.all_at(4), 60, "round 4 online")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    for version in range(5, 10):
        produce_round(producer, topic, version)
    assert producer.flush(30) == 0
    second = potluck_stream(tmp_path, "-o", "json")
    cleanup.append(second)
    wait_until(lambda: watch.all_at(9), 60, "round 9 online")
    group = f"potluck.{client.project}.driver_stats"
    ends = end_offsets(kafka_bootstrap, topic)
    wait_until(lambda: committed(kafka_bootstrap, group, topic) == ends, 60, "all committed")
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=60)
    assert (second.returncode, err) == (0, "")
    assert json.loads(out)["rows_read"] >= 5 * len(KEYS)  # the rest, and replays if any


def test_redis_gone_for_a_while_mid_stream_holds_the_batch_until_it_is_back(
    kafka_bootstrap: str, tmp_path: Path, cleanup: list[Any]
) -> None:
    server = RedisServer(tmp_path)
    cleanup.append(server)
    server.start()
    topic = new_topic(kafka_bootstrap)
    store = {"type": "redis", "url": server.url}
    client = client_for(tmp_path / "project", store, stats_table(kafka_bootstrap, topic))
    cleanup.append(client)
    job = client.start_stream_to_online_ingestion(
        "driver_stats", kafka_config=FAST_GROUP, batch_interval=0.05
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    watch = Watch(client)
    produce_round(producer, topic, 0)
    assert producer.flush(30) == 0
    wait_until(lambda: watch.all_at(0), 60, "round 0 online")

    server.shutdown()
    for version in (1, 2):
        produce_round(producer, topic, version)
    assert producer.flush(30) == 0
    down = wait_until(lambda: (r := job.record()).warning and r, 30, "a warning")
    assert down.warning.startswith(f"online store Redis at 127.0.0.1:{server.port} is unavailable")
    assert down.warning.endswith("; retrying")
    group = f"potluck.{client.project}.driver_stats"
    wait_until(
        lambda: sum(committed(kafka_bootstrap, group, topic).values()) == len(KEYS),
        30,
        "round 0 committed",
    )
    time.sleep(1.5)  # three commit intervals: nothing of rounds 1 and 2 is committed while down
    assert sum(committed(kafka_bootstrap, group, topic).values()) == len(KEYS)

    server.start()  # the same port and folder: it loads what it saved
    wait_until(lambda: watch.all_at(2), 60, "round 2 online")
    ends = end_offsets(kafka_bootstrap, topic)
    wait_until(lambda: committed(kafka_bootstrap, group, topic) == ends, 60, "all committed")
    record = wait_until(lambda: (r := job.record()).warning is None and r, 30, "no warning")
    assert (record.status, record.stats.rows_read) == (JobStatus.RUNNING, 3 * len(KEYS))
