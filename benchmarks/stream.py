"""Stream ingestion benchmark: the local engine's stream-to-online job, Kafka to Redis.

A producer in a process of its own publishes JSON messages at a fixed rate into a new
4-partition topic (keyed by the canonical entity key and with the producer settings of
``client.publish``: idempotent, ``acks=all``, ``linger.ms=5``, Nagle off); a
``potluck stream`` process (the local engine's job) writes them into Redis. Printed:

- drain: a backlog of ``--backlog`` messages, consumed from the start; events/s of the job,
  and of the floor beside it: confluent-kafka consuming the same topic and writing the same keys
  with a raw redis-py pipeline (``SET key value``, no decoding, no checks, no newer-wins);
- fixed rates (1,000, 10,000 and the highest the job keeps up with): whether the job keeps up
  (its lag a second after the producer ends under half a second of messages), the freshness
  latency from produce time to readable through ``get_online_features`` (p50, p99; each message
  carries its send time in a feature, read back by a probe polling 100 keys every 20 ms), the
  CPU of each process (the probe's too), and the stages of that latency: acknowledged by the
  broker (the producer's delivery reports), arrived at a consumer with the job's settings (a
  watcher process, with ``--stages``), readable; beside it the floor at the same rate on a
  topic of its own: latency from produce time (the message's Kafka timestamp) to written into
  Redis, and its CPU.

Uses the shared broker and Redis (``POTLUCK_TEST_KAFKA_BOOTSTRAP``, ``POTLUCK_TEST_REDIS_URL``,
from ``scripts/services.sh``), a topic and a project of its own.

Usage: python benchmarks/stream.py [--backlog 300000] [--seconds 10] [--keys 10000]
       [--rates 10000 ...] [--stages] [--batch-interval SECONDS]
"""

from __future__ import annotations

import argparse
import functools
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
from potluck.ingestion.stream.batch import StreamTable
from potluck.ingestion.stream.brokers import consumer_config, producer_config
from potluck.online.codec import encode_entity_key

PARTITIONS = 4
TABLE = "bench_stats"
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
TICK = 0.001
"""The producer's pacing step, seconds."""
SAMPLE_EVERY = 10
"""One message in this many is timed by the producer (acknowledged) and the watcher (arrived)."""
JOB_OPTIONS = {"session.timeout.ms": "6000"}
"""The ``-k`` options of the job (a dead benchmark's group member is gone after 6 s)."""
PROBE_KEYS = 100
"""Keys the probe reads each time: each changes about once a second, so a 10-second run gives
about 1,000 freshness samples (a p99 that is not one unlucky read), at a fraction of the CPU of
the job (the probe's CPU is printed)."""
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
    settings = producer_config(bootstrap, {"queue.buffering.max.messages": "1000000"})
    producer = Producer({k: v for k, v in settings.items() if k != "logger"})
    types = {"driver_id": ValueType.INT64}
    encoded = [encode_entity_key(project, TABLE, {"driver_id": k}, types) for k in range(keys)]
    acked: list[float] = []

    def delivered(error: object, message: object, sent: float) -> None:
        if error is None:
            acked.append(time.time() - sent)

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
        callback = None
        if i % SAMPLE_EVERY == 0:
            callback = functools.partial(delivered, sent=now)
        while True:
            try:
                producer.produce(topic, value=value, key=encoded[key], on_delivery=callback)
                break
            except BufferError:
                producer.poll(0.01)
        if i % SAMPLE_EVERY == 0:  # serves delivery reports: the acknowledgement times
            producer.poll(0)
    producer.flush(120)
    cpu = os.times()
    result = {"sent": count, "seconds": time.monotonic() - started, "cpu": cpu.user + cpu.system}
    print(json.dumps({**result, **percentiles("acked", acked)}), flush=True)


# ---- the watcher process: what a consumer with the job's settings receives, and when ----------


def watch(bootstrap: str, topic: str, count: int) -> None:
    """Read ``count`` messages with the job's consumer settings; time each sampled one's arrival.

    Arrival is receive time minus the message's send time (``sent_us``): the part of freshness
    before the job decodes and writes, so the job's own share is the rest.
    """
    stream = StreamTable("watch", table(bootstrap, topic), {"driver_id": ValueType.INT64})
    settings = consumer_config(stream, f"watch-{uuid.uuid4().hex}", JOB_OPTIONS)
    consumer = Consumer({k: v for k, v in settings.items() if k != "logger"})
    consumer.subscribe([topic])
    done = 0
    fetched: list[float] = []
    while done < count:
        messages = consumer.consume(65_536, 0) or consumer.consume(1, 0.1)
        messages = [m for m in messages if m.error() is None]
        received = time.time()
        for message in messages[::SAMPLE_EVERY]:
            fetched.append(received - json.loads(message.value())["sent_us"] / 1e6)
        done += len(messages)
    consumer.close()
    print(json.dumps(percentiles("fetched", fetched)), flush=True)


def percentiles(name: str, seconds: list[float]) -> dict[str, float]:
    """``{name}_p50`` and ``{name}_p99`` of ``seconds``, in milliseconds."""
    if not seconds:
        return {f"{name}_p50": float("nan"), f"{name}_p99": float("nan")}
    ordered = sorted(seconds)
    return {
        f"{name}_p50": ordered[len(ordered) // 2] * 1000,
        f"{name}_p99": ordered[int(len(ordered) * 0.99)] * 1000,
    }


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
        self.job_options = []
        if args.batch_interval is not None:
            self.job_options = ["--batch-interval", str(args.batch_interval)]
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
                *(f"-k{k}={v}" for k, v in JOB_OPTIONS.items()),
                *self.job_options,
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
        watcher = None
        if self.args.stages:
            watcher = self.subprocess("--watch", self.bootstrap, topic, str(count))
        pids = {"job": job.pid, "redis": self.redis_pid}
        if self.broker_pid:
            pids["broker"] = self.broker_pid
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        probe0 = sum(os.times()[:2])
        t0 = time.monotonic()
        latencies, reads = self.probe(producer, keys)
        window = time.monotonic() - t0
        cpu = {name: (cpu_seconds(pid) - cpu0[name]) / window for name, pid in pids.items()}
        cpu["probe"] = (sum(os.times()[:2]) - probe0) / window
        sent = json.loads(producer.communicate()[0])
        arrived = {}
        if watcher is not None:
            arrived = json.loads(watcher.communicate(timeout=120)[0])
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
            "acked_p50": sent["acked_p50"],
            "acked_p99": sent["acked_p99"],
            **arrived,
            **percentiles("probe_read", reads),
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

    def probe(self, producer: subprocess.Popen[str], count: int) -> tuple[list[float], list[float]]:
        """Poll ``PROBE_KEYS`` of ``count`` keys until the producer ends; a new value is a sample.

        Returns:
            The latencies, and how long each read took (the probe's own share of them), seconds.
        """
        keys = [{"driver_id": k} for k in range(0, count, max(1, count // PROBE_KEYS))]
        seen: dict[int, int] = {}
        latencies: list[float] = []
        reads: list[float] = []
        while producer.poll() is None:
            asked = time.time()
            response = self.client.get_online_features([f"{TABLE}:sent_us"], keys).to_dict()
            now_us = time.time() * 1_000_000
            reads.append(now_us / 1e6 - asked)
            for key, sent in zip(response["driver_id"], response[f"{TABLE}__sent_us"], strict=True):
                if sent is not None and seen.get(key) != sent:
                    if key in seen:
                        latencies.append((now_us - sent) / 1e6)
                    seen[key] = sent
            time.sleep(PROBE_EVERY)
        return latencies, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument(
        "--rates",
        type=int,
        nargs="+",
        help="only these fixed rates (events/s), without the drain and the search for the "
        "highest rate: for repeated freshness runs",
    )
    parser.add_argument(
        "--batch-interval", type=float, help="the job's --batch-interval (default: its own)"
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time arrival at a consumer with the job's settings (a watcher process: "
        "more load on the machine)",
    )
    parser.add_argument("--produce", nargs=6, metavar="X", help=argparse.SUPPRESS)
    parser.add_argument("--floor", nargs=5, metavar="X", help=argparse.SUPPRESS)
    parser.add_argument("--watch", nargs=3, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        bootstrap, topic, project, rate, count, keys = args.produce
        produce(bootstrap, topic, project, float(rate), int(count), int(keys))
        return
    if args.floor:
        bootstrap, topic, redis_url, count, prefix = args.floor
        floor(bootstrap, topic, redis_url, int(count), prefix)
        return
    if args.watch:
        bootstrap, topic, count = args.watch
        watch(bootstrap, topic, int(count))
        return
    bench = Bench(args)
    print(
        f"stream ingestion, local engine, {os.cpu_count()} cores; broker {bench.bootstrap}, "
        f"Redis {bench.redis_url}; {args.keys} keys, JSON messages of ~110 bytes; job options "
        f"{' '.join(bench.job_options) or 'default'}; load average {os.getloadavg()[0]:.2f}"
    )
    results = [bench.fixed_rate(rate) for rate in args.rates] if args.rates else search(bench)
    for r in results:
        report(bench, r)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    bench.clean()


def search(bench: Bench) -> list[dict[str, float]]:
    """The drain, then 1,000 and 10,000 events/s and the highest fixed rate the job sustains."""
    job_rate, floor_rate, job_cpu = bench.drain()
    print(
        f"drain {bench.args.backlog} messages: job {job_rate:,.0f} events/s (CPU {job_cpu:.2f} "
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
    return results


def report(bench: Bench, r: dict[str, float]) -> None:
    """Print one fixed rate's line, its stages, and the floor at that rate (if the job kept up)."""
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
    arrived = ""
    if "fetched_p50" in r:
        arrived = (
            f", arrived at a consumer with the job's settings "
            f"{r['fetched_p50']:.0f}/{r['fetched_p99']:.0f}"
        )
    print(
        "         stages p50/p99 ms from send: acknowledged "
        f"{r['acked_p50']:.0f}/{r['acked_p99']:.0f}{arrived}, readable "
        f"{r['p50_ms']:.0f}/{r['p99_ms']:.0f}; one probe read "
        f"{r['probe_read_p50']:.0f}/{r['probe_read_p99']:.0f}"
    )


if __name__ == "__main__":
    main()
