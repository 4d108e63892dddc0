"""SDK online reads from Redis, and the offline-to-online job of 1,000,000 source rows.

1. ``client.get_online_features`` (embedded: the ServingService in-process over the Redis store)
   for 1 entity x 3 features and 100 entities x 3 features: p50 and p99 over a fixed number of
   calls after a warm-up. Floors, on the same Redis: a raw redis-py ``MGET`` of the same keys
   (the bytes our store reads: the least any client of this layout does), and Feast's layout
   read the way Feast reads it, a redis-py pipeline of ``HMGET`` (one hash per key, one field
   per feature).
2. ``client.start_offline_to_online_ingestion`` over 1,000,000 source rows of 1,000 keys (the
   batch source written by ``client.ingest``), into Redis and into SQLite: wall time of the job
   (``job.wait()``), and rows read per second.

Usage: python benchmarks/online_reads.py [--reads 5000] [--rows 1000000] [--keys 1000]
Needs POTLUCK_TEST_REDIS_URL (``scripts/services.sh start``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import redis
import yaml

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import load_settings

REFS = ["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:trips"]


def _table(root: Path) -> FeatureTable:
    return FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="acc_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
        ),
        max_age=timedelta(days=7),
        batch_source=FileSource(path=str(root / "data"), event_timestamp_column="event_timestamp"),
    )


def _client(root: Path, online: dict[str, object]) -> Client:
    config = root / "potluck.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "project": f"bench_{uuid.uuid4().hex[:8]}",
                "registry": "sqlite:///registry.db",
                "online_store": online,
            }
        )
    )
    client = Client(settings=load_settings(config))
    client.apply([Entity(name="driver_id", value_type=ValueType.INT64), _table(root)])
    return client


def _source(rows: int, keys: int) -> pa.Table:
    rng = np.random.default_rng(7)
    now_us = int(datetime.now(timezone.utc).timestamp()) * 1_000_000
    ages_us = rng.integers(0, 6 * 24 * 3600, rows) * 1_000_000  # within the last six days
    return pa.table(
        {
            "driver_id": pa.array(np.arange(rows) % keys, pa.int64()),
            "event_timestamp": pa.array(now_us - ages_us, pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "conv_rate": pa.array(rng.random(rows).astype(np.float32)),
            "acc_rate": pa.array(rng.random(rows)),
            "trips": pa.array(rng.integers(0, 1000, rows), pa.int64()),
        }
    )


def _latency(call: Callable[[], object], reads: int) -> tuple[float, float]:
    for _ in range(min(500, reads)):
        call()
    samples = []
    for _ in range(reads):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def _reads(client: Client, redis_url: str, reads: int, keys: int) -> list[str]:
    raw = redis.Redis.from_url(redis_url)
    from potluck.online.codec import encode_entity_key

    prefix = f"floor:{uuid.uuid4().hex[:8]}:"
    pipe = raw.pipeline(transaction=False)
    for k in range(keys):
        pipe.hset(
            f"{prefix}{k}",
            mapping={"conv_rate": b"\x00" * 4, "acc_rate": b"\x00" * 8, "trips": b"\x00" * 8},
        )
    pipe.execute()
    lines = []
    for entities in (1, 100):
        rows = [{"driver_id": (k * 7) % keys} for k in range(entities)]
        sdk = _latency(lambda rows=rows: client.get_online_features(REFS, rows), reads)
        key_bytes = [
            encode_entity_key(client.project, "driver_stats", r, {"driver_id": ValueType.INT64})
            for r in rows
        ]
        assert all(raw.mget(key_bytes)), "the online store does not hold the benchmark keys"
        mget = _latency(lambda keys=key_bytes: raw.mget(keys), reads)

        def hmget(rows: list[dict[str, int]] = rows) -> object:
            p = raw.pipeline(transaction=False)
            for r in rows:
                p.hmget(f"{prefix}{r['driver_id']}", "conv_rate", "acc_rate", "trips")
            return p.execute()

        floor = _latency(hmget, reads)
        for name, (p50, p99) in (
            ("SDK get_online_features", sdk),
            ("floor: redis-py MGET (same keys)", mget),
            ("floor: redis-py pipeline HMGET (Feast layout)", floor),
        ):
            lines.append(f"| {entities} x 3 | {name} | {p50 * 1e3:.3f} ms | {p99 * 1e3:.3f} ms |")
    for k in range(0, keys, 500):
        raw.delete(*[f"{prefix}{i}" for i in range(k, min(k + 500, keys))])
    raw.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=5_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000)
    args = parser.parse_args()
    redis_url = os.environ.get("POTLUCK_TEST_REDIS_URL")
    if not redis_url:
        sys.exit("POTLUCK_TEST_REDIS_URL is not set (run scripts/services.sh start)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, Redis at {redis_url}")
    source = _source(args.rows, args.keys)
    jobs: list[str] = []
    reads: list[str] = []
    for kind, online in (
        ("redis", {"type": "redis", "url": redis_url}),
        ("sqlite", {"type": "sqlite", "path": "online.db"}),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            client = _client(Path(tmp), online)
            try:
                client.ingest("driver_stats", source)
                start = time.perf_counter()
                job = client.start_offline_to_online_ingestion("driver_stats").wait()
                wall = time.perf_counter() - start
                stats = job.stats
                # Rows an ingestion itself superseded (same key and event time) are not read.
                assert 0.99 * args.rows <= stats.rows_read <= args.rows, stats
                jobs.append(
                    f"| {kind} | {args.rows:,} | {args.keys:,} | {wall:.2f} s "
                    f"| {args.rows / wall:,.0f} | {stats.rows_written:,} |"
                )
                if kind == "redis":
                    reads = _reads(client, redis_url, args.reads, args.keys)
            finally:
                client.close()
    print()
    print("| entities x features | reader | p50 | p99 |")
    print("|---|---|---:|---:|")
    print("\n".join(reads))
    print()
    print("| online store | source rows | keys | job wall time | rows read/s | rows written |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(jobs))


if __name__ == "__main__":
    main()
