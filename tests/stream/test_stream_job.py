"""Stream-to-online jobs on the local engine against the real broker and Redis.

Each test creates its own topics and its own project (so its own Redis keys).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _stream_support import (
    FAST_GROUP,
    committed,
    end_offsets,
    finish,
    free_port,
    new_topic,
    online_values,
    potluck_stream,
    stats_table,
    utc_now,
    wait_until,
)
from _stream_support import (
    client_for as _client_for,
)
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

from potluck import Client
from potluck.errors import DataValidationError, UnavailableError, ValidationError
from potluck.ingestion.jobs import JobStatus
from potluck.ingestion.stream.metrics import serve_metrics

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture()
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        finish(client)


@pytest.fixture()
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """``potluck stream`` processes of the test; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture()
def client_for(clients: list[Client], redis_url: str) -> Any:
    def make(root: Path, *tables: Any) -> Client:
        client = _client_for(root, {"type": "redis", "url": redis_url}, *tables)
        clients.append(client)
        return client

    return make


def frame(keys: list[int], trips: list[int], minutes_ago: list[int]) -> pd.DataFrame:
    now = utc_now()
    return pd.DataFrame(
        {
            "driver_id": keys,
            "conv_rate": [t / 8 for t in trips],
            "trips": trips,
            "event_timestamp": [now - timedelta(minutes=m) for m in minutes_ago],
        }
    )


def raw_producer(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value=value, key=b"k")
    assert producer.flush(20) == 0


def test_a_stream_job_writes_the_newest_value_per_key_and_parks_bad_messages(
    kafka_bootstrap: str, tmp_path: Path, client_for: Any
) -> None:
    topic = new_topic(kafka_bootstrap)
    dead = new_topic(kafka_bootstrap, partitions=1)
    client = client_for(tmp_path, stats_table(kafka_bootstrap, topic, dead_letter_topic=dead))
    keys = list(range(1, 41))
    # Three versions per key; the newest (10 minutes ago) goes out first, so older ones follow.
    newest = frame(keys, [k * 100 for k in keys], [10] * 40)
    older = frame(keys * 2, [k * 100 + 1 for k in keys] * 2, [20] * 40 + [30] * 40)
    assert client.publish("driver_stats", newest).messages == 40
    assert client.publish("driver_stats", older).messages == 80
    now = utc_now()
    bad = [
        b"\x00garbage",
        json.dumps({"driver_id": None, "event_timestamp": now.isoformat()}).encode(),
        json.dumps({"driver_id": "x", "event_timestamp": now.isoformat()}).encode(),
        json.dumps({"driver_id": 1}).encode(),
        json.dumps({"driver_id": 1, "event_timestamp": "2000-01-01T00:00:00Z"}).encode(),
        json.dumps({"driver_id": 1, "trips": 1.5, "event_timestamp": now.isoformat()}).encode(),
    ]
    raw_producer(kafka_bootstrap, topic, bad)
    job = client.start_stream_to_online_ingestion(
        "driver_stats", kafka_config=FAST_GROUP, batch_interval=0.05
    )
    server = serve_metrics(job, 0)
    try:
        record = wait_until(
            lambda: (r := job.record()).stats.rows_read == 126 and r, 60, "126 messages read"
        )
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=10
        ) as response:
            metrics = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert online_values(client, [1, 2, 40, 41]) == {
        1: (100, "PRESENT"),
        2: (200, "PRESENT"),
        40: (4000, "PRESENT"),
        41: (None, "NOT_FOUND"),
    }
    assert all(online_values(client, keys)[k] == (k * 100, "PRESENT") for k in keys)
    stats = record.stats
    assert (stats.rows_read, stats.rows_rejected) == (126, 6)
    assert stats.rows_written + stats.rows_skipped == 120
    assert record.bad_messages == {
        "bad_key_type": 1,
        "missing_timestamp": 1,
        "null_key": 1,
        "older_than_max_age": 1,
        "schema_violation": 1,
        "undecodable": 1,
    }
    assert (record.status, record.warning, record.partitions) == (
        JobStatus.RUNNING,
        None,
        (0, 1, 2, 3),
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    ours = (("job", job.id), ("project", client.project), ("table", "driver_stats"))
    assert (
        samples[("potluck_stream_bad_messages_total", (*ours[:2], ("reason", "null_key"), ours[2]))]
        == 1.0
    )
    assert (
        samples[("potluck_stream_messages_total", (*ours[:1], ("outcome", "bad"), *ours[1:]))]
        == 6.0
    )
    assert samples[("potluck_stream_up", ours)] == 1.0
    assert samples[("potluck_stream_partitions", ours)] == 4.0
    freshness = samples[("potluck_feature_freshness_seconds", (ours[1], ours[2]))]
    assert 590 < freshness < 700  # the newest event is 10 minutes old
    parked = _read_all(kafka_bootstrap, dead, 6)
    assert [m.value() for m in parked] == bad
    headers = [dict(m.headers()) for m in parked]
    assert [h["potluck.reason"] for h in headers] == [
        b"undecodable",
        b"null_key",
        b"bad_key_type",
        b"missing_timestamp",
        b"older_than_max_age",
        b"schema_violation",
    ]
    assert {h["potluck.table"] for h in headers} == {f"{client.project}/driver_stats".encode()}
    assert headers[5]["potluck.detail"] == (
        b"field 'trips': 1.5 cannot be stored as feature trips (INT64) without loss"
    )
    job.cancel()
    final = job.wait(30)
    assert final.status is JobStatus.CANCELLED
    group = f"potluck.{client.project}.driver_stats"
    assert committed(kafka_bootstrap, group, topic) == end_offsets(kafka_bootstrap, topic)
    listed = client.list_jobs("driver_stats")
    assert [(j.id, j.spec.kind, j.status) for j in listed] == [
        (job.id, "stream_to_online", JobStatus.CANCELLED)
    ]
    assert listed[0].bad_messages == record.bad_messages


def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}",
            **FAST_GROUP,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while len(found) < count and time.monotonic() < deadline:
        found += [m for m in consumer.consume(count, 0.5) if m.error() is None]
    consumer.close()
    return found


def test_a_bad_frame_publishes_nothing_and_a_missing_topic_is_named(
    kafka_bootstrap: str, tmp_path: Path, client_for: Any
) -> None:
    topic = new_topic(kafka_bootstrap)
    client = client_for(tmp_path, stats_table(kafka_bootstrap, topic))
    bad = frame([1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]).astype({"trips": object})
    bad.loc[3, "trips"] = "many"
    with pytest.raises(DataValidationError) as info:
        client.publish("driver_stats", bad)
    assert info.value.message == (
        "column 'trips' row 3: 'many' (str) cannot be stored as feature trips (INT64)"
    )
    assert end_offsets(kafka_bootstrap, topic) == {0: 0, 1: 0, 2: 0, 3: 0}

    gone = f"{topic}-missing"
    client.apply(stats_table(kafka_bootstrap, gone))
    expected = (
        f"feature table 'driver_stats': its stream topic {gone!r} does not exist on "
        f"{kafka_bootstrap}; create it (the brokers do not create topics for potluck) or fix "
        "the stream source"
    )
    with pytest.raises(ValidationError) as missing:
        client.publish("driver_stats", frame([1], [1], [1]))
    assert missing.value.message == expected
    job = client.start_stream_to_online_ingestion("driver_stats", kafka_config=FAST_GROUP)
    with pytest.raises(Exception) as failed:
        job.wait(30)
    assert str(failed.value) == f"job {job.id} failed: {expected}"


def test_unreachable_brokers_keep_the_job_alive_and_reported(
    tmp_path: Path, client_for: Any
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    client = client_for(tmp_path, stats_table(closed, "driver_stats"))
    job = client.start_stream_to_online_ingestion("driver_stats", kafka_config=FAST_GROUP)
    with pytest.raises(UnavailableError) as info:
        client.publish("driver_stats", frame([1], [1], [1]))
    assert info.value.message.startswith(
        f"cannot reach the Kafka brokers {closed} for feature table 'driver_stats' (topic "
        "'driver_stats'): "
    )
    record = wait_until(lambda: (r := job.record()).warning and r, 30, "a warning")
    assert record.status is JobStatus.RUNNING
    assert record.warning.startswith(
        f"cannot reach the Kafka brokers {closed} for feature table 'driver_stats' (topic "
        "'driver_stats'): "
    )
    assert record.warning.endswith("; retrying")
    job.cancel()
    assert job.wait(30).status is JobStatus.CANCELLED


def test_the_offline_sink_appends_every_streamed_row_once_even_when_replayed(
    kafka_bootstrap: str, tmp_path: Path, client_for: Any
) -> None:
    topic = new_topic(kafka_bootstrap)
    table = stats_table(kafka_bootstrap, topic, root=tmp_path, offline_sink=True)
    client = client_for(tmp_path, table)
    client.publish("driver_stats", frame(list(range(20)), list(range(20)), [5] * 20))
    first = client.start_stream_to_online_ingestion(
        "driver_stats", group_id=f"first-{topic}", kafka_config=FAST_GROUP
    )
    wait_until(lambda: first.record().stats.rows_read == 20, 60, "20 rows read")
    first.cancel()
    first.wait(30)
    # Another group reads the topic from the start again: every row is replayed.
    client.publish("driver_stats", frame(list(range(20, 30)), list(range(20, 30)), [4] * 10))
    again = client.start_stream_to_online_ingestion(
        "driver_stats", group_id=f"again-{topic}", kafka_config=FAST_GROUP
    )
    wait_until(lambda: again.record().stats.rows_read == 30, 60, "30 rows read")
    again.cancel()
    again.wait(30)
    entities = pd.DataFrame({"driver_id": list(range(30)), "event_timestamp": [utc_now()] * 30})
    training = client.get_historical_features(["driver_stats:trips"], entities).to_pandas()
    assert training["driver_stats__trips"].tolist() == list(range(30))
    files = pd.read_parquet(tmp_path / "data")
    assert sorted(files["trips"].tolist()) == list(range(30))  # each row once


def test_sigterm_drains_the_batch_and_a_restart_resumes_from_the_committed_offsets(
    kafka_bootstrap: str, tmp_path: Path, client_for: Any, processes: list[Any]
) -> None:
    topic = new_topic(kafka_bootstrap)
    client = client_for(tmp_path, stats_table(kafka_bootstrap, topic))
    keys = list(range(500))
    minutes = [9] * 500 + [8] * 500 + [7] * 500 + [6] * 500  # the last version is the newest
    client.publish("driver_stats", frame(keys * 4, list(range(2000)), minutes))
    group = f"potluck.{client.project}.driver_stats"
    reads = []
    for _ in range(2):
        process = potluck_stream(tmp_path, "--batch-size", "50", "-o", "json")
        processes.append(process)
        wait_until(lambda: _running(client), 60, "a running job")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert (process.returncode, err) == (0, "")
        record = json.loads(out)
        assert record["status"] == "CANCELLED"
        reads.append(record["rows_read"])
    assert sum(reads) <= 2000
    process = potluck_stream(tmp_path, "-o", "json")
    processes.append(process)
    ends = end_offsets(kafka_bootstrap, topic)
    wait_until(lambda: _running(client), 60, "a running job")
    wait_until(lambda: committed(kafka_bootstrap, group, topic) == ends, 60, "all committed")
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert (process.returncode, json.loads(out)["rows_read"]) == (0, 2000 - sum(reads))
    assert online_values(client, [0, 499]) == {0: (1500, "PRESENT"), 499: (1999, "PRESENT")}


def _running(client: Client) -> bool:
    return any(j.status is JobStatus.RUNNING and j.partitions for j in client.list_jobs())


def test_processes_of_one_group_share_the_partitions(
    kafka_bootstrap: str, tmp_path: Path, client_for: Any, processes: list[Any]
) -> None:
    topic = new_topic(kafka_bootstrap)
    client = client_for(tmp_path, stats_table(kafka_bootstrap, topic))
    processes += [potluck_stream(tmp_path) for _ in range(2)]

    def shared() -> bool:
        held = [j.partitions for j in client.list_jobs() if j.status is JobStatus.RUNNING]
        return len(held) == 2 and all(held) and sorted(held[0] + held[1]) == [0, 1, 2, 3]

    wait_until(shared, 60, "two jobs sharing the four partitions")
    keys = list(range(200))
    client.publish("driver_stats", frame(keys, keys, [3] * 200))

    def read() -> int:
        return sum(j.stats.rows_read for j in client.list_jobs())

    wait_until(lambda: read() == 200, 60, "200 messages read between them")
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.communicate(timeout=60)
        assert process.returncode == 0
    jobs = client.list_jobs()
    assert sorted(j.stats.rows_read > 0 for j in jobs) == [True, True]
    assert sum(j.stats.rows_read for j in jobs) == 200
    assert all(online_values(client, keys)[k] == (k, "PRESENT") for k in keys)
