"""Stream ingestion benchmark: the local engine's stream-to-online job, Kafka to Redis.

A producer in a process of its own publishes JSON messages at a fixed rate into a new
4-partition topic (keyed by the canonical entity key, as ``client.publish`` keys them); a
``potluck stream`` process (the local engine's job) writes them into Redis. Printed:

- drain: a backlog of ``--backlog`` messages, consumed from the start; events/s of the job,
  and of the floor beside it: confluent-kafka consuming the same topic and writing the same keys
  with a raw redis-py pipeline (``SET key value``, no decoding, no checks, no newer-wins);
- fixed rates (1,000, 10,000 and the highest the job keeps up with): whether the job keeps up
  (its lag a second after the producer ends under half a second of messages), the freshness
  latency from produce time to readable through ``get_online_features`` (p50, p99; each message
  carries its send time in
  a feature, read back by a probe polling 20 keys), and the CPU of each process; beside it the
  floor at the same rate on a topic of its own: latency from produce time (the message's Kafka
  timestamp) to written into Redis, and its CPU.

Uses the shared broker and Redis (``POTLUCK_TEST_KAFKA_BOOTSTRAP``, ``POTLUCK_TEST_REDIS_URL``,
from ``scripts/services.sh``), a topic and a project of its own.

Usage: python benchmarks/stream.py [--backlog 300000] [--seconds 10] [--keys 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import redis
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from potluck import Client, Entity, Feature, FeatureTable, KafkaSource, ValueType
from potluck.ingestion.jobs import JobStatus
from potluck.online.codec import encode_entity_key

PARTITIONS = 4
TABLE = "bench_stats"
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
TICK = 0.001
"""The producer's pacing step, seconds."""
PROBE_EVERY = 0.02
"""Seconds between two reads of the probe: often enough to time freshness to about 20 ms, rarely
enough not to take the CPU the job needs."""


def table(bootstrap: str, topic: str) -> FeatureTable:
    return FeatureTable(
        name=TABLE,
        entities=["driver_id"],
        features=[
            Feature(name="trips", value_type=ValueType.INT64),
            Feature(name="sent_us", value_type=ValueType.INT64),
        ],
        stream_source=KafkaSource(
            bootstrap_servers=bootstrap,
            topic=topic,
            message_format="json",
            event_timestamp_column="event_timestamp",
        ),
    )


# ---- the producer process ----------------------------------------------------------------------


def produce(bootstrap: str, topic: str, project: str, rate: float, count: int, keys: int) -> None:
    """Send ``count`` messages at ``rate`` per second (0: as fast as possible), then flush."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    types = {"driver_id": ValueType.INT64}
    encoded = [encode_entity_key(project, TABLE, {"driver_id": k}, types) for k in range(keys)]
    started = time.monotonic()
    for i in range(count):
        if rate and i % max(1, int(rate * TICK)) == 0:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        now = time.time()
        key = i % keys
        value = json.dumps(
            {
                "driver_id": key,
                "trips": i,
                "sent_us": int(now * 1_000_000),
                "event_timestamp": datetime.fromtimestamp(now, timezone.utc).isoformat(),
            }
        ).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=encoded[key])
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    cpu = os.times()
    print(
        json.dumps(
            {"sent": count, "seconds": time.monotonic() - started, "cpu": cpu.user + cpu.system}
        ),
        flush=True,
    )


# ---- the floor process ---------------------------------------------------------------------------


def floor(bootstrap: str, topic: str, redis_url: str, count: int, prefix: str) -> None:
    """Consume ``count`` messages and SET each message's key to its value, pipelined."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"floor-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    client = redis.Redis.from_url(redis_url)
    done, started = 0, None
    latencies: list[float] = []
    while done < count:
        messages = consumer.consume(65_536, 0)  # what has arrived; else wait for one
        if not messages:
            messages = consumer.consume(1, 0.1) + consumer.consume(65_535, 0)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            continue
        started = started or time.monotonic()
        pipe = client.pipeline(transaction=False)
        for message in messages:
            pipe.set(prefix.encode() + message.key(), message.value())
        pipe.execute()
        written_ms = time.time() * 1000
        latencies += [(written_ms - m.timestamp()[1]) / 1000 for m in messages[::100]]
        consumer.commit(asynchronous=True)
        done += len(messages)
    seconds = time.monotonic() - (started or time.monotonic())
    consumer.close()
    latencies.sort()
    cpu = os.times()
    result = {
        "read": done,
        "seconds": seconds,
        "cpu": cpu.user + cpu.system,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
    }
    print(json.dumps(result), flush=True)


# ---- the benchmark -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 20)
        return sum(max(tp.offset, 0) for tp in found)
    finally:
        consumer.close()


def end_total(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
            for p in range(PARTITIONS)
        )
    finally:
        consumer.close()


def new_topic(bootstrap: str) -> str:
    name = f"bench-stream-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(30)
    return name


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bootstrap = os.environ["POTLUCK_TEST_KAFKA_BOOTSTRAP"]
        self.redis_url = os.environ["POTLUCK_TEST_REDIS_URL"]
        self.folder = Path(tempfile.mkdtemp(prefix="potluck-bench-stream-"))
        self.project = f"bench{uuid.uuid4().hex[:8]}"
        (self.folder / "potluck.yaml").write_text(
            yaml.safe_dump(
                {
                    "project": self.project,
                    "registry": f"sqlite:///{self.folder / 'registry.db'}",
                    "online_store": {"type": "redis", "url": self.redis_url},
                }
            )
        )
        self.client = Client(self.folder / "potluck.yaml")
        self.group = f"potluck.{self.project}.{TABLE}"
        info = redis.Redis.from_url(self.redis_url).info("server")
        self.redis_pid = int(info["process_id"])
        pid_file = Path(__file__).resolve().parents[1] / ".services/kafka/pid"
        self.broker_pid = int(pid_file.read_text()) if pid_file.exists() else None

    def clean(self) -> None:
        """Delete what the runs wrote to the shared Redis, and the run's folder."""
        self.client.purge_online(TABLE)
        self.client.close()
        server = redis.Redis.from_url(self.redis_url)
        for key in server.scan_iter(match=f"floor:{self.project}:*".encode(), count=10_000):
            server.unlink(key)
        shutil.rmtree(self.folder, ignore_errors=True)

    def subprocess(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True
        )

    def start_job(self, topic: str) -> subprocess.Popen[str]:
        self.client.apply([DRIVER, table(self.bootstrap, topic)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
        job = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "potluck"),
                "stream",
                TABLE,
                "-k",
                "session.timeout.ms=6000",
            ],
            cwd=self.folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not any(
            j.partitions and j.status is JobStatus.RUNNING for j in self.client.list_jobs(TABLE)
        ):
            if time.monotonic() > deadline:
                raise SystemExit("the stream job did not get its partitions within 60 s")
            time.sleep(0.1)
        return job

    def stop_job(self, job: subprocess.Popen[str]) -> None:
        job.terminate()
        job.wait(60)

    def drain(self) -> tuple[float, float, float]:
        """Return the job's and the floor's drain rates (events/s) and the job's CPU share."""
        count = self.args.backlog
        topic = new_topic(self.bootstrap)
        producer = self.subprocess(
            "--produce", self.bootstrap, topic, self.project, "0", str(count), str(self.args.keys)
        )
        producer.communicate()
        job = self.start_job(topic)
        first: tuple[float, int, float] | None = None
        while True:
            done = committed_total(self.bootstrap, self.group, topic)
            if done and first is None:
                first = (time.monotonic(), done, cpu_seconds(job.pid))
            if done >= count:
                break
            time.sleep(0.05)
        assert first is not None
        elapsed = time.monotonic() - first[0]
        rate = (count - first[1]) / elapsed
        cpu = (cpu_seconds(job.pid) - first[2]) / elapsed
        self.stop_job(job)
        floor_run = self.subprocess(
            "--floor", self.bootstrap, topic, self.redis_url, str(count), f"floor:{self.project}:"
        )
        result = json.loads(floor_run.communicate()[0])
        return rate, result["read"] / result["seconds"], cpu

    def fixed_rate(self, rate: int) -> dict[str, float]:
        topic = new_topic(self.bootstrap)
        job = self.start_job(topic)
        count = int(rate * self.args.seconds)
        keys = min(self.args.keys, rate)  # each key changes about once a second
        producer = self.subprocess(
            "--produce",
            self.bootstrap,
            topic,
            self.project,
            str(rate),
            str(count),
            str(keys),
        )
        pids = {"job": job.pid, "redis": self.redis_pid}
        if self.broker_pid:
            pids["broker"] = self.broker_pid
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        latencies = self.probe(producer, keys)
        window = time.monotonic() - t0
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / window for name, pid in pids.items()}
        sent = json.loads(producer.communicate()[0])
        cpu["producer"] = sent["cpu"] / sent["seconds"]
        time.sleep(1.0)  # offsets are committed every half second
        lag = end_total(self.bootstrap, topic) - committed_total(self.bootstrap, self.group, topic)
        self.stop_job(job)
        latencies.sort()
        return {
            "rate": rate,
            "achieved": sent["sent"] / sent["seconds"],
            "keeps_up": lag <= rate * 0.5,
            "lag": lag,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan"),
            "samples": len(latencies),
            **{f"cpu_{name}": share for name, share in cpu.items()},
        }

    def floor_rate(self, rate: int) -> dict[str, float]:
        """The floor at a fixed rate: latency from produce to written into Redis, and CPU."""
        topic = new_topic(self.bootstrap)
        count = int(rate * self.args.seconds)
        floor_run = self.subprocess(
            "--floor", self.bootstrap, topic, self.redis_url, str(count), f"floor:{self.project}:"
        )
        time.sleep(5)  # the consumer joins its group
        producer = self.subprocess(
            "--produce",
            self.bootstrap,
            topic,
            self.project,
            str(rate),
            str(count),
            str(self.args.keys),
        )
        producer.communicate()
        result = json.loads(floor_run.communicate()[0])
        return {
            "p50_ms": result["p50"] * 1000,
            "p99_ms": result["p99"] * 1000,
            "cpu": result["cpu"] / max(result["seconds"], self.args.seconds),
        }

    def probe(self, producer: subprocess.Popen[str], count: int) -> list[float]:
        """Poll 20 of ``count`` keys until the producer ends; each new value gives a latency."""
        keys = [{"driver_id": k} for k in range(0, count, max(1, count // 20))]
        seen: dict[int, int] = {}
        latencies: list[float] = []
        while producer.poll() is None:
            response = self.client.get_online_features([f"{TABLE}:sent_us"], keys).to_dict()
            now_us = time.time() * 1_000_000
            for key, sent in zip(response["driver_id"], response[f"{TABLE}__sent_us"], strict=True):
                if sent is not None and seen.get(key) != sent:
                    if key in seen:
                        latencies.append((now_us - sent) / 1e6)
                    seen[key] = sent
            time.sleep(PROBE_EVERY)
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--produce", nargs=6, metavar="X", help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs=5, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        bootstrap, topic, project, rate, count, keys = args.produce
        produce(bootstrap, topic, project, float(rate), int(count), int(keys))
        return
    if args.floor:
        bootstrap, topic, redis_url, count, prefix = args.floor
        floor(bootstrap, topic, redis_url, int(count), prefix)
        return
    bench = Bench(args)
    print(
        f"stream ingestion, local engine, {os.cpu_count()} cores; broker {bench.bootstrap}, "
        f"Redis {bench.redis_url}; {args.keys} keys, JSON messages of ~110 bytes"
    )
    job_rate, floor_rate, job_cpu = bench.drain()
    print(
        f"drain {args.backlog} messages: job {job_rate:,.0f} events/s (CPU {job_cpu:.2f} "
        f"cores), floor (confluent-kafka + redis-py pipeline) {floor_rate:,.0f} events/s, "
        f"ratio {job_rate / floor_rate:.2f}"
    )
    results = [bench.fixed_rate(rate) for rate in (1_000, 10_000)]
    # The highest fixed rate it keeps up with: from 80% of the drain rate down, by fifths.
    for share in (0.8, 0.6, 0.4):
        found = bench.fixed_rate(int(job_rate * share // 1000 * 1000))
        results.append(found)
        if found["keeps_up"]:
            break
    for r in results:
        cpus = ", ".join(f"{k[4:]} {v:.2f}" for k, v in r.items() if k.startswith("cpu_"))
        floor_line = ""
        if r["keeps_up"]:
            base = bench.floor_rate(int(r["rate"]))
            floor_line = (
                f"; floor: written p50 {base['p50_ms']:.0f} ms, p99 {base['p99_ms']:.0f} ms, "
                f"CPU {base['cpu']:.2f}"
            )
        print(
            f"{r['rate']:>7,} events/s (sent {r['achieved']:,.0f}/s): keeps up {r['keeps_up']} "
            f"(lag {r['lag']:,}); freshness p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms "
            f"({r['samples']} samples); CPU (cores) {cpus}{floor_line}"
        )
    bench.clean()


if __name__ == "__main__":
    main()
