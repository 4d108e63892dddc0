"""Helpers of the stream tests: topics, projects, waiting, and private servers to kill.

Every test creates its own uniquely named topics on the shared broker and never deletes others'.
The fault tests start their own broker and redis-server on free ports (the same commands
``scripts/services.sh`` uses), so killing them never touches the shared services.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from potluck import Client, Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType

ROOT = Path(__file__).resolve().parents[2]
POTLUCK = Path(sys.executable).parent / "potluck"
FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
"""Consumer settings of every test job: a dead member's partitions move after 6 s (the broker's
minimum), not librdkafka's default 45 s."""

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_topic(bootstrap: str, partitions: int = 4, prefix: str = "potluck-test") -> str:
    """Create a uniquely named topic and return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=20)
    for future in futures.values():  # keep ``admin`` referenced until they resolve
        future.result(timeout=30)
    return name


def end_offsets(bootstrap: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """Return each partition's high watermark (the offset the next message gets)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """Return the offsets ``group`` committed per partition (0 where it committed none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 20)
        return {tp.partition: max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {found!r})")
        time.sleep(every)


def stats_table(
    bootstrap: str,
    topic: str,
    *,
    message_format: Any = "json",
    root: Path | None = None,
    **source: Any,
) -> FeatureTable:
    """driver_stats fed by ``topic``: conv_rate FLOAT, trips INT64, a day's max_age."""
    return FeatureTable(
        name="driver_stats",
        entities=["driver_id"],
        features=[
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="trips", value_type=ValueType.INT64),
        ],
        max_age=timedelta(days=1),
        batch_source=None
        if root is None
        else FileSource(path=str(root / "data"), event_timestamp_column="event_timestamp"),
        stream_source=KafkaSource(
            bootstrap_servers=bootstrap,
            topic=topic,
            message_format=message_format,
            event_timestamp_column="event_timestamp",
            **source,
        ),
    )


def project(root: Path, online_store: dict[str, Any], name: str | None = None) -> Path:
    """Write a potluck.yaml in ``root`` (SQLite registry there) and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "project": name or f"p{uuid.uuid4().hex[:10]}",
        "registry": f"sqlite:///{root / 'registry.db'}",
        "online_store": online_store,
    }
    path = root / "potluck.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def client_for(root: Path, online_store: dict[str, Any], *tables: FeatureTable) -> Client:
    """A client of a new project in ``root`` with DRIVER and ``tables`` applied."""
    client = Client(project(root, online_store))
    client.apply([DRIVER, *tables])
    return client


def online_values(client: Client, keys: list[int]) -> dict[int, tuple[Any, Any]]:
    """Return ``{key: (trips, status)}`` as get_online_features reads them."""
    response = client.get_online_features(["driver_stats:trips"], [{"driver_id": k} for k in keys])
    values = response.to_dict()["driver_stats__trips"]
    statuses = response.statuses()["driver_stats__trips"]
    return {k: (v, s) for k, v, s in zip(keys, values, statuses, strict=True)}


def stop_jobs(client: Client) -> None:
    """Cancel the project's jobs running in this process and wait until they have ended (a
    stream job runs until it is stopped, and its thread keeps the test process alive)."""
    here = {t.name.removeprefix("potluck-job-") for t in threading.enumerate()}
    running = [j.id for j in client.list_jobs() if j.id in here]
    for job_id in running:
        client.cancel_job(job_id)
    wait_until(
        lambda: all(client.get_job(i).record().status.is_terminal for i in running),
        60,
        "the test's jobs to stop",
    )


def finish(client: Client) -> None:
    """Stop the client's jobs, drop what they wrote to the online store, and close it."""
    stop_jobs(client)
    with contextlib.suppress(Exception):  # a store the test stopped itself
        client.purge_online("driver_stats")
    client.close()


def potluck_stream(root: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``potluck stream`` in ``root`` (a project folder) as a process of its own."""
    options = [f"-k{k}={v}" for k, v in FAST_GROUP.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    return subprocess.Popen(
        [str(POTLUCK), "stream", "driver_stats", *options, *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not listen on {port} within {timeout}s")
            time.sleep(0.1)


class Broker:
    """A Kafka broker of the test's own (KRaft, one node), started as ``scripts/services.sh``
    starts the shared one: same jars, same server.properties but for ports and folders."""

    def __init__(self, folder: Path) -> None:
        jars = Path(os.environ.get("POTLUCK_JARS_CACHE", Path.home() / ".cache/potluck/jars"))
        self.classpath = f"{jars / 'kafka'}/*"
        if shutil.which("java") is None or not (jars / "kafka").is_dir():
            message = f"no java or no Kafka jars in {jars / 'kafka'} (run scripts/services.sh)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.folder = folder
        self.port, self.controller = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.properties").write_text(self._properties())
        (folder / "log4j2.properties").write_text(
            "appender.file.type=File\nappender.file.name=file\n"
            f"appender.file.fileName={folder / 'server.log'}\n"
            "appender.file.layout.type=PatternLayout\n"
            "appender.file.layout.pattern=[%d] %p %m (%c)%n\n"
            "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=file\n"
        )
        # A cluster id as Kafka's `StorageTool random-uuid` prints one, without a JVM start.
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        subprocess.run(
            [
                "java",
                "-cp",
                self.classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster,
                "-c",
                str(folder / "server.properties"),
            ],
            capture_output=True,
            check=True,
        )

    def _properties(self) -> str:
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.folder / 'data'}",
            "auto.create.topics.enable=false",
            "num.partitions=4",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=2000",
            "log.cleaner.dedupe.buffer.size=16777216",
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the broker (again, after a kill) and wait until it takes connections."""
        self.process = subprocess.Popen(
            [
                "java",
                "-Xms256m",
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={self.folder / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.folder}",
                "-cp",
                self.classpath,
                "kafka.Kafka",
                str(self.folder / "server.properties"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, 60, "the test's Kafka broker")

    def kill(self) -> None:
        """kill -9 the broker and wait until it is gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


class RedisServer:
    """A redis-server of the test's own, saving to its folder on shutdown (so a restart keeps
    what was written before it)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port, 10, "the test's redis-server")

    def shutdown(self) -> None:
        """Save to disk and stop (``SHUTDOWN SAVE``); ``start`` loads what was saved."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "save"],
            capture_output=True,
            check=False,
        )
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
