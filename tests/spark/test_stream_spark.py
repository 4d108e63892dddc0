"""Stream-to-online jobs on the Spark engine: one spark-submit against the real broker and Redis.

The module publishes good messages (three versions per key, the newest first) and bad ones of
every reason, starts the job through the client, waits until Redis holds each key's newest
value, checks the record's counts and bad reasons, the dead-letter topic and the offline sink,
then cancels it (``CANCELLED``). A second job of the table then resumes from the checkpoint
(a second spark-submit): it reads only what was published since. While the first runs, a second
job of its table and group is refused on either engine. The project's ``kafka:`` settings reach
the application (the Kafka source's ``kafka.<property>`` options, the dead-letter producer).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from _spark_support import SPARK_TEST_CONF
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from potluck import Client, Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType
from potluck.config import load_settings
from potluck.errors import AlreadyExistsError
from potluck.ingestion.engines.base import IngestionJob
from potluck.ingestion.engines.spark import SparkJob
from potluck.ingestion.jobs import Job, JobStatus

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

WAIT = 240.0
"""Seconds to wait for the application (it may queue behind another test's on the worker)."""
KEYS = list(range(1, 31))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _topic(bootstrap: str, partitions: int) -> str:
    name = f"potluck-spark-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=30)
    return name


def _wait(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {found!r})")
        time.sleep(0.5)


def _frame(trips: list[int], minutes_ago: int) -> pd.DataFrame:
    event = _now() - timedelta(minutes=minutes_ago)
    return pd.DataFrame(
        {
            "driver_id": KEYS,
            "conv_rate": [t / 8 for t in trips],
            "trips": trips,
            "event_timestamp": [event] * len(KEYS),
        }
    )


def _values(client: Client) -> dict[int, tuple[Any, str]]:
    response = client.get_online_features(
        ["driver_stats:trips"], [{"driver_id": k} for k in [*KEYS, 99]]
    )
    values = response.to_dict()["driver_stats__trips"]
    statuses = response.statuses()["driver_stats__trips"]
    return dict(zip([*KEYS, 99], zip(values, statuses, strict=True), strict=True))


def _parked(bootstrap: str, topic: str, count: int) -> list[tuple[str, int]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"probe-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    found: list[tuple[str, int]] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            headers = dict(message.headers() or [])
            found.append(
                (headers["potluck.reason"].decode(), int(headers["potluck.offset"].decode()))
            )
    finally:
        consumer.close()
    return sorted(found)


@dataclass
class Streamed:
    client: Client
    job: IngestionJob
    running: Job
    values: dict[int, tuple[Any, str]]
    parked: list[tuple[str, int]]
    cancelled: Job
    root: Path
    bad_offsets: dict[str, int]
    restarted: Job
    restarted_values: dict[int, tuple[Any, str]]
    refused: tuple[str, str]


@pytest.fixture(scope="module")
def streamed(
    tmp_path_factory: pytest.TempPathFactory,
    spark_master: str,
    kafka_bootstrap: str,
    redis_url: str,
) -> Iterator[Streamed]:
    jars = os.environ.get("POTLUCK_TEST_SPARK_KAFKA_JARS", "")
    if not jars:
        problem = "POTLUCK_TEST_SPARK_KAFKA_JARS is not set (run `make test`, which fetches them)"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("spark_stream")
    topic, dead = _topic(kafka_bootstrap, 2), _topic(kafka_bootstrap, 1)
    table = FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="trips", value_type=ValueType.INT64),
        ),
        max_age=timedelta(days=1),
        batch_source=FileSource(path=str(root / "data"), event_timestamp_column="event_timestamp"),
        stream_source=KafkaSource(
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            message_format="json",
            event_timestamp_column="event_timestamp",
            dead_letter_topic=dead,
            offline_sink=True,
        ),
    )
    settings = root / "potluck.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "project": f"p{uuid.uuid4().hex[:10]}",
                "registry": f"sqlite:///{root / 'registry.db'}",
                "online_store": {"type": "redis", "url": redis_url},
                "engine": {
                    "type": "spark",
                    "master": spark_master,
                    "conf": dict(SPARK_TEST_CONF),
                    "python": os.environ.get("POTLUCK_TEST_SPARK_PYTHON") or sys.executable,
                    "progress_interval": 0.5,
                    "log_dir": str(root / "logs"),
                    "jars": jars.split(","),
                },
                "kafka": {"client.id": "potluck-spark-test"},
            }
        )
    )
    client = Client(settings=load_settings(settings))
    client.apply([Entity(name="driver_id", value_type=ValueType.INT64), table])
    # Three versions per key, the newest (10 minutes ago) published first.
    client.publish("driver_stats", _frame([k * 100 for k in KEYS], 10))
    client.publish("driver_stats", _frame([k * 100 + 1 for k in KEYS], 20))
    client.publish("driver_stats", _frame([k * 100 + 2 for k in KEYS], 30))
    stamp = _now().isoformat()
    bad = {
        "undecodable": b"\x00garbage",
        "null_key": json.dumps({"driver_id": None, "event_timestamp": stamp}).encode(),
        "bad_key_type": json.dumps({"driver_id": "x", "event_timestamp": stamp}).encode(),
        "missing_timestamp": json.dumps({"driver_id": 1}).encode(),
        "older_than_max_age": json.dumps(
            {"driver_id": 1, "event_timestamp": "2000-01-01T00:00:00Z"}
        ).encode(),
        "schema_violation": json.dumps(
            {"driver_id": 1, "trips": 1.5, "event_timestamp": stamp}
        ).encode(),
    }
    offsets: dict[str, int] = {}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for reason, value in bad.items():
        producer.produce(
            topic,
            value=value,
            key=b"bad",
            partition=0,
            on_delivery=lambda _e, m, r=reason: offsets.__setitem__(r, m.offset()),
        )
    assert producer.flush(20) == 0
    job = client.start_stream_to_online_ingestion("driver_stats", batch_size=1000)
    jobs = [job]
    try:
        running = _wait(
            lambda: (r := job.record()).stats.rows_read == 96 and r,
            "96 messages read",
        )
        values = _wait(
            lambda: (v := _values(client))[KEYS[-1]][0] == KEYS[-1] * 100 and v,
            "the newest values in Redis",
        )
        refused = _refused(client, load_settings(settings, overrides={"engine": {"type": "local"}}))
        parked = _parked(kafka_bootstrap, dead, len(bad))
        job.cancel()
        cancelled = job.wait(WAIT)
        # A newer version of each key, then a second job of the table: it resumes from the
        # checkpoint, so it reads only these.
        client.publish("driver_stats", _frame([k * 100 + 5 for k in KEYS], 1))
        again = client.start_stream_to_online_ingestion("driver_stats", batch_size=1000)
        jobs.append(again)
        _wait(lambda: again.record().stats.rows_read >= len(KEYS), "the restarted job's reads")
        newer = _wait(
            lambda: (v := _values(client))[KEYS[-1]][0] == KEYS[-1] * 100 + 5 and v,
            "the newer values in Redis",
        )
        again.cancel()
        restarted = again.wait(WAIT)
        yield Streamed(
            client,
            job,
            running,
            values,
            parked,
            cancelled,
            root,
            offsets,
            restarted,
            newer,
            refused,
        )
    finally:
        for started in jobs:
            if not started.record().status.is_terminal:
                started.cancel()
                started.wait(WAIT)
        client.purge_online("driver_stats")
        client.close()


def _refused(spark: Client, local_settings: Any) -> tuple[str, str]:
    """The errors of a second Spark job and of a local job of the running job's group."""
    with pytest.raises(AlreadyExistsError) as second:
        spark.start_stream_to_online_ingestion("driver_stats")
    local = Client(settings=local_settings)
    try:
        with pytest.raises(AlreadyExistsError) as beside:
            local.start_stream_to_online_ingestion("driver_stats")
    finally:
        local.close()
    return second.value.message, beside.value.message


def test_each_key_ends_at_its_newest_value(streamed: Streamed) -> None:
    assert streamed.values == {
        **{k: (k * 100, "PRESENT") for k in KEYS},
        99: (None, "NOT_FOUND"),
    }


def test_the_record_counts_messages_and_bad_reasons_per_micro_batch(streamed: Streamed) -> None:
    record = streamed.running
    assert (record.status, record.engine, record.error) == (JobStatus.RUNNING, "spark", None)
    assert record.application_id is not None and record.application_id.startswith("app-")
    stats = record.stats
    assert (stats.rows_read, stats.rows_rejected) == (96, 6)
    # One micro-batch; a key's messages share a partition, so one task keeps its newest.
    assert (stats.rows_written, stats.rows_skipped) == (30, 60)
    assert record.bad_messages == {
        "bad_key_type": 1,
        "missing_timestamp": 1,
        "null_key": 1,
        "older_than_max_age": 1,
        "schema_violation": 1,
        "undecodable": 1,
    }
    assert record.max_event_timestamp_us is not None


def test_bad_messages_are_parked_with_reason_and_offset(streamed: Streamed) -> None:
    assert streamed.parked == sorted(streamed.bad_offsets.items())


def test_the_offline_sink_appends_each_good_message_once(streamed: Streamed) -> None:
    files = pd.read_parquet(streamed.root / "data")
    expected = sorted(k * 100 + v for k in KEYS for v in (0, 1, 2, 5))
    assert sorted(files["trips"].tolist()) == expected


def test_cancel_stops_the_query_and_the_application(streamed: Streamed) -> None:
    record = streamed.cancelled
    assert (record.status, record.error) == (JobStatus.CANCELLED, None)
    assert record.stats.rows_read == 96
    job = streamed.job
    assert isinstance(job, SparkJob)
    _wait(lambda: job.application.status().has_ended, "the application to end")
    project = streamed.client.project
    group = f"potluck.{project}.driver_stats"
    checkpoint = streamed.root / "logs" / project / "driver_stats" / group
    assert (checkpoint / "offsets").is_dir()


def test_a_second_job_of_the_table_and_group_is_refused_on_either_engine(
    streamed: Streamed,
) -> None:
    running = streamed.running.id
    group = f"potluck.{streamed.client.project}.driver_stats"
    head = (
        f"feature table 'driver_stats' already has a running stream job {running} (engine "
        f"spark) in consumer group '{group}'; "
    )
    tail = (
        f". Cancel it (potluck jobs cancel {running}) or pick another group (--group-id, group_id=)"
    )
    assert streamed.refused == (
        f"{head}a Spark stream job keeps its offsets in the group's checkpoint, which two jobs "
        f"must not share{tail}",
        f"{head}a Spark stream job does not share the group's partitions with another job, so "
        f"both would read every message{tail}",
    )


def test_a_restart_resumes_from_the_checkpoint(streamed: Streamed) -> None:
    record = streamed.restarted
    assert (record.status, record.error, record.bad_messages) == (JobStatus.CANCELLED, None, {})
    assert (record.stats.rows_read, record.stats.rows_written) == (30, 30)
    assert streamed.restarted_values == {
        **{k: (k * 100 + 5, "PRESENT") for k in KEYS},
        99: (None, "NOT_FOUND"),
    }


def test_the_kafka_settings_reach_the_kafka_source(streamed: Streamed) -> None:
    log_location = streamed.running.log_location
    assert log_location is not None
    # The Kafka source's admin client on the driver logs its configuration.
    assert "\tclient.id = potluck-spark-test\n" in Path(log_location).read_text()
