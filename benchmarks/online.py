"""Online benchmarks: the online stores on their own (store level).

Store level, on the standalone Redis (``POTLUCK_TEST_REDIS_URL`` or ``--redis-url``):

- bulk write: 100,000 distinct keys x 3 features (DOUBLE, INT64, STRING) in one
  ``RedisOnlineStore.write`` call (validation, encoding, the newer-wins Lua script); rows/s,
  median of ``--repeats`` runs on an empty table.
- the floor: the same bytes (same keys and values, already encoded) written with a plain
  redis-py pipeline of ``SET key value PXAT ms`` (no newer-wins check), 10,000 commands per
  ``execute()``; and the same commands packed by hiredis and streamed the way the store sends
  its script calls (all sent, then all replies read): about what Redis itself can absorb.
- the key codec alone: ``encode_entity_keys`` for the 100,000 keys.
- reads: ``RedisOnlineStore.read`` of 1 key x 3 features and 100 keys x 3 features, p50 and p99.

The same write and reads on SQLite (a file in a temporary folder) and the write on the Redis
Cluster (``POTLUCK_TEST_REDIS_CLUSTER_NODES``) are printed for comparison. Everything runs on
127.0.0.1; each run writes under a project of its own and drops its table afterwards.

Usage: python benchmarks/online.py [--keys 100000] [--reads 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import hiredis
import numpy as np
import pyarrow as pa
import redis

from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.online._values import now_micros
from potluck.online.base import OnlineStore
from potluck.online.codec import encode_entity_key, encode_entity_keys
from potluck.online.redis import (
    RedisClusterConfig,
    RedisClusterOnlineStore,
    RedisConfig,
    RedisOnlineStore,
)
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType

TABLE = FeatureTable(
    name="driver_stats",
    entities=("driver_id",),
    features=(
        Feature(name="conv_rate", value_type=ValueType.DOUBLE),
        Feature(name="acc_rate", value_type=ValueType.INT64),
        Feature(name="city", value_type=ValueType.STRING),
    ),
    max_age=timedelta(days=1),
)
DRIVER = {"driver_id": ValueType.INT64}


def batch(project: str, keys: int, age_seconds: int = 60) -> pa.RecordBatch:
    """``keys`` distinct drivers, all with event time ``age_seconds`` ago."""
    now = datetime.now(timezone.utc)
    ids = pa.array(np.arange(1_000_000, 1_000_000 + keys, dtype=np.int64))
    events = pa.array(np.full(keys, now_micros(now) - age_seconds * 1_000_000), pa.int64())
    return pa.record_batch(
        {
            "entity_key": encode_entity_keys(project, TABLE.name, {"driver_id": ids}, DRIVER),
            "event_timestamp": events.cast(TIMESTAMP_ARROW_TYPE),
            "created_timestamp": pa.nulls(keys, TIMESTAMP_ARROW_TYPE),
            "conv_rate": pa.array(np.random.default_rng(1).random(keys)),
            "acc_rate": pa.array(np.arange(keys, dtype=np.int64)),
            "city": pa.array([f"city_{i % 1000}" for i in range(keys)]),
        }
    )


WRITE_KINDS = ("new keys", "every key newer", "replay: every key skipped")


def store_write(store: OnlineStore, keys: int, repeats: int) -> dict[str, float]:
    """Median seconds of one write of ``keys`` rows: new keys, newer rows, a replay."""
    runs: dict[str, list[float]] = {kind: [] for kind in WRITE_KINDS}
    for _ in range(repeats):
        project = f"bench_{uuid.uuid4().hex[:8]}"
        store.ensure_table(project, TABLE)
        older, newer = batch(project, keys, 120), batch(project, keys, 60)
        for kind, rows in zip(WRITE_KINDS, (older, newer, older), strict=True):
            start = time.perf_counter()
            store.write(project, TABLE, rows)
            runs[kind].append(time.perf_counter() - start)
        store.drop_table(project, TABLE)
    return {kind: statistics.median(seconds) for kind, seconds in runs.items()}


Arguments = tuple[list[bytes], list[bytes], list[str]]


def pipeline_floor(client: redis.Redis, arguments: Arguments) -> None:
    """The floor: a plain redis-py pipeline of SET PXAT, 10,000 commands per execute()."""
    pipe = client.pipeline(transaction=False)
    for i, (key, value, at) in enumerate(zip(*arguments, strict=True)):
        pipe.execute_command("SET", key, value, "PXAT", at)
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def packed_floor(client: redis.Redis, arguments: Arguments) -> None:
    """The same SET PXAT packed by hiredis, sent 1,000 at a time, replies read at the end."""
    connection = client.connection_pool.get_connection()
    try:
        commands = [
            hiredis.pack_command((b"SET", key, value, b"PXAT", at))
            for key, value, at in zip(*arguments, strict=True)
        ]
        for start in range(0, len(commands), 1000):
            connection.send_packed_command(
                [b"".join(commands[start : start + 1000])], check_health=False
            )
        for _ in commands:
            connection.read_response()
    finally:
        client.connection_pool.release(connection)


def stored_bytes(client: redis.Redis, keys: list[bytes]) -> Arguments:
    """What the store wrote for ``keys``: the values and their expiry (PXAT milliseconds)."""
    values: list[bytes] = []
    expire_at: list[str] = []
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        values.extend(client.mget(chunk))
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.pexpiretime(key)
        expire_at.extend(str(ms) for ms in pipe.execute())
    return keys, values, expire_at


def floors(store: RedisOnlineStore, url: str, keys: int, repeats: int) -> tuple[float, float]:
    """Median seconds of the pipeline floor and of the packed floor, writing the bytes the
    store writes for the same batch (captured from Redis after a store write)."""
    plain, packed = [], []
    client = redis.Redis.from_url(url)
    for _ in range(repeats):
        project = f"bench_{uuid.uuid4().hex[:8]}"
        rows = batch(project, keys)
        store.write(project, TABLE, rows)
        arguments = stored_bytes(client, rows.column("entity_key").to_pylist())
        store.drop_table(project, TABLE)
        for floor, runs in ((pipeline_floor, plain), (packed_floor, packed)):
            start = time.perf_counter()
            floor(client, arguments)
            runs.append(time.perf_counter() - start)
            _unlink(client, arguments[0])
    client.close()
    return statistics.median(plain), statistics.median(packed)


def _unlink(client: redis.Redis, keys: list[bytes]) -> None:
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])


def reads(store: OnlineStore, count: int, iterations: int) -> tuple[float, float]:
    """p50 and p99 seconds of reading ``count`` keys x 3 features."""
    project = f"bench_{uuid.uuid4().hex[:8]}"
    store.ensure_table(project, TABLE)
    store.write(project, TABLE, batch(project, 1_000))
    ids = np.random.default_rng(2).integers(1_000_000, 1_001_000, (iterations + 100, count))
    features = list(TABLE.feature_names)
    samples = []
    for i, row in enumerate(ids):
        keys = [encode_entity_key(project, TABLE.name, {"driver_id": int(d)}, DRIVER) for d in row]
        start = time.perf_counter()
        store.read(project, TABLE, keys, features)
        if i >= 100:
            samples.append(time.perf_counter() - start)
    store.drop_table(project, TABLE)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def round_trip(url: str, iterations: int) -> tuple[float, float]:
    """p50 and p99 seconds of a plain redis-py GET: the network round trip reads pay."""
    client = redis.Redis.from_url(url)
    samples = []
    for i in range(iterations + 100):
        start = time.perf_counter()
        client.get(b"potluck-benchmark-absent-key")
        if i >= 100:
            samples.append(time.perf_counter() - start)
    client.close()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("POTLUCK_TEST_REDIS_URL"))
    parser.add_argument(
        "--cluster-nodes", default=os.environ.get("POTLUCK_TEST_REDIS_CLUSTER_NODES")
    )
    args = parser.parse_args()
    if not args.redis_url:
        parser.error("set POTLUCK_TEST_REDIS_URL or pass --redis-url (scripts/services.sh)")
    print(
        f"python {platform.python_version()}, redis-py {redis.__version__}, "
        f"pyarrow {pa.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    n = args.keys

    ids = pa.array(np.arange(n, dtype=np.int64))
    codec_runs = []
    for _ in range(5):
        start = time.perf_counter()
        encode_entity_keys("p", TABLE.name, {"driver_id": ids}, DRIVER)
        codec_runs.append(time.perf_counter() - start)
    codec = statistics.median(codec_runs)
    print(f"\nencode_entity_keys, {n:,} INT64 keys: {codec * 1000:.1f} ms")

    store = RedisOnlineStore(RedisConfig(url=args.redis_url))
    writes = {"RedisOnlineStore": store_write(store, n, args.repeats)}
    plain, packed = floors(store, args.redis_url, n, args.repeats)
    if args.cluster_nodes:
        nodes = args.cluster_nodes.split(",")
        cluster = RedisClusterOnlineStore(RedisClusterConfig(startup_nodes=nodes))
        writes["RedisClusterOnlineStore (3 masters)"] = store_write(cluster, n, args.repeats)
        cluster.close()
    with tempfile.TemporaryDirectory() as folder:
        sqlite = SqliteOnlineStore(SqliteConfig(path=str(Path(folder) / "online.db")))
        writes["SqliteOnlineStore"] = store_write(sqlite, n, args.repeats)
        sqlite_reads = {c: reads(sqlite, c, args.reads) for c in (1, 100)}
        sqlite.close()

    print(f"\nbulk write, {n:,} distinct keys x 3 features (median of {args.repeats}):")
    print("| writer | rows | seconds | rows/s | floor seconds / seconds |")
    print("|---|---|---:|---:|---:|")
    for name, seconds in writes.items():
        for kind, value in seconds.items():
            print(
                f"| {name}.write | {kind} | {value:.3f} | {n / value:,.0f} | {plain / value:.2f}x |"
            )
    print(
        f"| floor: redis-py pipeline, SET PXAT | new keys | {plain:.3f} | {n / plain:,.0f} "
        "| 1.00x |"
    )
    print(
        f"| SET PXAT packed by hiredis, streamed | new keys | {packed:.3f} "
        f"| {n / packed:,.0f} | {plain / packed:.2f}x |"
    )

    print(f"\nstore reads, 3 features, {args.reads:,} reads each (µs):")
    print("| store | keys | p50 | p99 |")
    print("|---|---:|---:|---:|")
    p50, p99 = round_trip(args.redis_url, args.reads)
    print(f"| floor: redis-py GET of one key | 1 | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} |")
    for count in (1, 100):
        p50, p99 = reads(store, count, args.reads)
        print(f"| RedisOnlineStore.read | {count} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} |")
    for count, (p50, p99) in sqlite_reads.items():
        print(f"| SqliteOnlineStore.read | {count} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} |")
    store.close()


if __name__ == "__main__":
    main()
