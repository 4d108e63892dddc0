"""Training sets on Spark: potluck's Spark offline store against a hand-written Spark SQL floor.

Data: 10,000 drivers, 1,000,000 feature rows over 7 days of which about 2% repeat another row's
(driver, event time) with a later created time, 100,000 entity rows over the same week, max_age
2 h; the sizes are options. The rows are ingested with ``client.ingest``. Both variants then run
in one Spark application (the same session, so the same executors), alternating:

- potluck: ``SparkOfflineStore.get_historical_features(refs, "entities.parquet")`` until its
  ``output_location`` is written (exact semantics: the entity file read and checked on the
  driver, source files read on executors with potluck's type rules, the created-time tie-break,
  the max_age bound, output in input order with the input's types); ``to_arrow()``, which reads
  that output back into the driver, is timed apart;
- floor: one hand-written Spark SQL as-of join of the same files (the table's pinned files,
  read by Spark's own Parquet reader), written as Parquet: the entity rows and the feature rows in
  one ``UNION ALL``, ``last(features) IGNORE NULLS`` over a window by driver ordered by (event
  time, created time) - the same shuffle potluck's plan makes - with no max_age, no order and no
  checks; ``floor+order`` also writes the rows in input order (``ORDER BY`` an id).

One unmeasured warm-up run of each comes first (the executors' Python workers start in potluck's).
The medians of the runs and their ratio are printed, with the driver's peak memory (its Python
process and its JVM).

Usage: python benchmarks/historical_spark.py [--runs 5] [--master spark://127.0.0.1:7077]
[--conf spark.executor.memory=2g ...] [--feature-rows N] [--entity-rows N] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _spark_bench import jvm_peak_mib

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
WEEK_US = 7 * 86_400 * 10**6
DUPLICATE_SHARE = 0.02
FLOOR_SQL = """
SELECT driver_id, event_timestamp, w.conv_rate, w.acc_rate, w.avg_daily_trips FROM (
  SELECT driver_id, event_timestamp, rid,
         last(w, true) OVER (PARTITION BY driver_id ORDER BY o, r
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS w
  FROM (
    SELECT driver_id, event_timestamp, monotonically_increasing_id() AS rid,
           unix_micros(event_timestamp) AS o, 9223372036854775807 AS r,
           CAST(NULL AS STRUCT<conv_rate: FLOAT, acc_rate: FLOAT, avg_daily_trips: BIGINT>) AS w
    FROM entities
    UNION ALL
    SELECT driver_id, NULL, NULL, unix_micros(event_timestamp),
           coalesce(unix_micros(created), -9223372036854775808),
           struct(conv_rate, acc_rate, avg_daily_trips)
    FROM features))
WHERE rid IS NOT NULL
"""
ORDERED = "\nORDER BY rid"
"""Appended for the floor that also writes the rows in input order."""


def _definitions() -> list[Any]:
    from potluck import Entity, Feature, FeatureTable, FileSource, ValueType

    return [
        Entity(name="driver_id", value_type=ValueType.INT64),
        FeatureTable(
            name="driver_stats",
            entities=["driver_id"],
            features=[
                Feature(name="conv_rate", value_type=ValueType.FLOAT),
                Feature(name="acc_rate", value_type=ValueType.FLOAT),
                Feature(name="avg_daily_trips", value_type=ValueType.INT64),
            ],
            max_age=timedelta(hours=2),
            batch_source=FileSource(
                path="data/driver_stats",
                event_timestamp_column="event_timestamp",
                created_timestamp_column="created",
            ),
        ),
    ]


def generate(folder: Path, drivers: int, feature_rows: int, entity_rows: int) -> Any:
    """Write the entity rows to ``entities.parquet``; return the feature rows as Arrow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2024)
    start_us = int(START.timestamp()) * 10**6
    ids = rng.integers(1000, 1000 + drivers, feature_rows)
    events = start_us + rng.integers(0, WEEK_US, feature_rows)
    # About 2% of rows repeat an earlier row's (driver, event time) with a later created time.
    repeats = np.flatnonzero(rng.random(feature_rows) < DUPLICATE_SHARE)
    originals = rng.integers(0, feature_rows, repeats.size)
    ids[repeats], events[repeats] = ids[originals], events[originals]
    created = events + rng.integers(0, 3_600 * 10**6, feature_rows)
    created[repeats] = created[originals] + rng.integers(1, 600 * 10**6, repeats.size)
    stamp = pa.timestamp("us", tz="UTC")
    entities = pa.table(
        {
            "driver_id": rng.integers(1000, 1000 + drivers, entity_rows),
            "event_timestamp": pa.array(start_us + rng.integers(0, WEEK_US, entity_rows), stamp),
        }
    )
    pq.write_table(entities, folder / "entities.parquet")
    return pa.table(
        {
            "driver_id": ids,
            "event_timestamp": pa.array(events, stamp),
            "created": pa.array(created, stamp),
            "conv_rate": rng.random(feature_rows, dtype=np.float32),
            "acc_rate": rng.random(feature_rows, dtype=np.float32),
            "avg_daily_trips": rng.integers(0, 1000, feature_rows),
        }
    )


def run(args: argparse.Namespace, folder: Path) -> None:
    """Generate, ingest, then alternate the variants and print their medians and ratio."""
    from pyspark.sql import SparkSession

    from potluck import Client
    from potluck.config import Settings
    from potluck.offline.commits import read_source
    from potluck.offline.files import without_superseded
    from potluck.offline.pit import FeatureRequest
    from potluck.offline.spark.store import SparkOfflineConfig, SparkOfflineStore
    from potluck.types import ValueType

    settings = Settings(registry=f"sqlite:///{folder}/registry.db", root=folder)
    rows = generate(folder, args.drivers, args.feature_rows, args.entity_rows)
    with Client(settings=settings) as client:
        client.apply(_definitions())
        started = time.perf_counter()
        client.ingest("driver_stats", rows)
        ingested = time.perf_counter() - started
        table = client.get_feature_table("driver_stats")
    conf = dict(item.split("=", 1) for item in args.conf)
    store = SparkOfflineStore(
        SparkOfflineConfig(master=args.master, conf=conf, staging_location=str(folder / "out")),
        root=folder,
    )
    request = FeatureRequest(
        table, ("conv_rate", "acc_rate", "avg_daily_trips"), {"driver_id": ValueType.INT64}
    )
    entities = str(folder / "entities.parquet")
    files = without_superseded(read_source(str(folder / "data" / "driver_stats")).files).paths

    def potluck() -> tuple[float, float]:
        started = time.perf_counter()
        job = store.get_historical_features(entities, [request])
        assert job.output_location is not None
        joined = time.perf_counter() - started
        count = job.to_arrow().num_rows
        assert count == args.entity_rows, count
        return joined, time.perf_counter() - started - joined

    def floor(sql: str) -> float:
        spark = SparkSession.builder.getOrCreate()
        spark.read.parquet(entities).createOrReplaceTempView("entities")
        spark.read.parquet(*files).createOrReplaceTempView("features")
        started = time.perf_counter()
        target = folder / "floor" / f"{time.time_ns()}"
        spark.sql(sql).write.parquet(target.as_uri())
        return time.perf_counter() - started

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        potluck(), floor(FLOOR_SQL)  # warm-up: session start, Python workers, JIT
        results: dict[str, list[float]] = {
            "potluck": [],
            "read back": [],
            "floor": [],
            "floor+order": [],
        }
        for _ in range(args.runs):
            joined, read = potluck()
            results["potluck"].append(joined)
            results["read back"].append(read)
            results["floor"].append(floor(FLOOR_SQL))
            results["floor+order"].append(floor(FLOOR_SQL + ORDERED))
    store.close()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, master {args.master}")
    print(
        f"data: {args.feature_rows:,} feature rows ({args.drivers:,} drivers, ingested in "
        f"{ingested:.1f} s, {len(files)} files), {args.entity_rows:,} entity rows"
    )
    print(f"training set on Spark, median of {args.runs} runs:")
    for variant, seconds in results.items():
        print(
            f"  {variant:12} {statistics.median(seconds):7.2f} s "
            f"(min {min(seconds):.2f}, max {max(seconds):.2f})"
        )
    for floor_variant in ("floor", "floor+order"):
        ratio = statistics.median(results["potluck"]) / statistics.median(results[floor_variant])
        fastest = min(results["potluck"]) / min(results[floor_variant])
        print(
            f"  potluck / {floor_variant}: {ratio:.2f}x (target <= 1.3x; fastest runs "
            f"{fastest:.2f}x)"
        )
    python_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"driver peak memory: Python {python_peak:.0f} MiB, JVM {jvm_peak_mib():.0f} MiB; "
        f"load average after: {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--master", default=os.environ.get("POTLUCK_TEST_SPARK_MASTER", "local[2]"))
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--drivers", type=int, default=10_000)
    parser.add_argument("--feature-rows", type=int, default=1_000_000)
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        run(args, folder)


if __name__ == "__main__":
    main()
