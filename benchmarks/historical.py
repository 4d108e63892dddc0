"""Historical retrieval benchmark: potluck's point-in-time join against a hand-written ASOF floor.

Data (as issue 3 specifies): 1,000 drivers, 1,000,000 feature rows over 7 days of which about 2%
repeat another row's (driver, event time) with a later created time, 100,000 entity rows over the
same week, max_age 2 h. The rows are ingested with ``client.ingest`` (its throughput is printed),
then these variants read them:

- potluck: ``client.get_historical_features(["driver_stats:*"], "entities.parquet").to_arrow()``
  (exact semantics: created-time tie-break, max_age bound, input order);
- potluck-split: the same rows ingested as two calls that overlap in event time, so ties may
  span files and the join orders on the 128-bit (event, created) key (the slower, general path);
- floor: one hand-written DuckDB ``ASOF LEFT JOIN`` of the entity file and the files of
  ``driver_stats`` into Arrow (no tie-break, no max_age bound, no order).

Each measurement runs in a fresh child process that imports the same modules and makes the call
twice; the time is the second (steady-state) call, the first is printed too, and the memory is
the child's peak RSS (``os.wait4``). Variants alternate, and the medians over the runs are
printed with their ratios.

Usage: python benchmarks/historical.py [--runs 7] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DRIVERS = 1_000
FEATURE_ROWS = 1_000_000
ENTITY_ROWS = 100_000
DUPLICATE_SHARE = 0.02
WEEK_US = 7 * 86_400 * 10**6
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
FLOOR_SQL = """
SELECT e.*, f.conv_rate, f.acc_rate, f.avg_daily_trips
FROM read_parquet('{entities}') AS e
ASOF LEFT JOIN read_parquet('{features}/*.parquet') AS f
  ON e.driver_id = f.driver_id AND e.event_timestamp >= f.event_timestamp
"""


def _settings(folder: Path) -> Any:
    from potluck.config import Settings

    return Settings(registry=f"sqlite:///{folder}/registry.db", root=folder)


def _definitions() -> list[Any]:
    from potluck import Entity, Feature, FeatureTable, FileSource, ValueType

    return [
        Entity(name="driver_id", value_type=ValueType.INT64),
        *(
            FeatureTable(
                name=name,
                entities=["driver_id"],
                features=[
                    Feature(name="conv_rate", value_type=ValueType.FLOAT),
                    Feature(name="acc_rate", value_type=ValueType.FLOAT),
                    Feature(name="avg_daily_trips", value_type=ValueType.INT64),
                ],
                max_age=timedelta(hours=2),
                batch_source=FileSource(
                    path=f"data/{name}",
                    event_timestamp_column="event_timestamp",
                    created_timestamp_column="created",
                ),
            )
            for name in ("driver_stats", "driver_stats_split")
        ),
    ]


def generate(folder: Path) -> None:
    """Write the feature rows (staged, not yet ingested) and the entity rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2024)
    start_us = int(START.timestamp()) * 10**6
    drivers = rng.integers(1000, 1000 + DRIVERS, FEATURE_ROWS)
    events = start_us + rng.integers(0, WEEK_US, FEATURE_ROWS)
    # About 2% of rows repeat an earlier row's (driver, event time) with a later created time.
    repeats = np.flatnonzero(rng.random(FEATURE_ROWS) < DUPLICATE_SHARE)
    originals = rng.integers(0, FEATURE_ROWS, repeats.size)
    drivers[repeats], events[repeats] = drivers[originals], events[originals]
    created = events + rng.integers(0, 3_600 * 10**6, FEATURE_ROWS)
    created[repeats] = created[originals] + rng.integers(1, 600 * 10**6, repeats.size)
    stamp = pa.timestamp("us", tz="UTC")
    features = pa.table(
        {
            "driver_id": drivers,
            "event_timestamp": pa.array(events, stamp),
            "created": pa.array(created, stamp),
            "conv_rate": rng.random(FEATURE_ROWS, dtype=np.float32),
            "acc_rate": rng.random(FEATURE_ROWS, dtype=np.float32),
            "avg_daily_trips": rng.integers(0, 1000, FEATURE_ROWS),
        }
    )
    pq.write_table(features, folder / "staged_features.parquet")
    entities = pa.table(
        {
            "driver_id": rng.integers(1000, 1000 + DRIVERS, ENTITY_ROWS),
            "event_timestamp": pa.array(start_us + rng.integers(0, WEEK_US, ENTITY_ROWS), stamp),
        }
    )
    pq.write_table(entities, folder / "entities.parquet")


# ---- children: one measurement each -------------------------------------------------------------


def child(variant: str, folder: Path) -> dict[str, Any]:
    """Run one measurement in this process and return its figures.

    The retrieval variants run twice: ``first`` includes what the first call in a process pays
    once (potluck creates its DuckDB store and warms the registry connection), ``seconds`` is
    the second, steady-state call. Both variants do the same, so their peaks compare.
    """
    import duckdb
    import pandas  # noqa: F401 - imported by every variant, so their baselines match
    import pyarrow.parquet as pq

    from potluck import Client

    timings: list[float] = []
    count = 0
    with Client(settings=_settings(folder)) as client:
        staged = folder / "staged_features.parquet"
        if variant == "ingest":
            frame = pq.read_table(staged).to_pandas()
            started = time.perf_counter()
            report = client.ingest("driver_stats", frame)
            return {"seconds": time.perf_counter() - started, "rows": report.rows}
        if variant == "ingest-split":
            # The same rows as two ingestions that overlap in event time: ties may span files.
            rows = pq.read_table(staged)
            for half in (0, 1):
                client.ingest("driver_stats_split", rows.take(list(range(half, rows.num_rows, 2))))
            return {"rows": rows.num_rows}
        if variant in ("potluck", "potluck-split"):
            table = "driver_stats" if variant == "potluck" else "driver_stats_split"
            for _ in range(2):
                started = time.perf_counter()
                job = client.get_historical_features(
                    [f"{table}:*"], str(folder / "entities.parquet")
                )
                count = job.to_arrow().num_rows
                timings.append(time.perf_counter() - started)
    if variant == "floor":
        connection = duckdb.connect()
        sql = FLOOR_SQL.format(
            entities=folder / "entities.parquet", features=folder / "data" / "driver_stats"
        )
        for _ in range(2):
            started = time.perf_counter()
            count = connection.sql(sql).to_arrow_table().num_rows
            timings.append(time.perf_counter() - started)
    return {"first": timings[0], "seconds": timings[1], "rows": count}


def measure(variant: str, folder: Path) -> dict[str, Any]:
    """Run ``variant`` in a fresh child process; add its peak RSS in MiB."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", variant, "--folder", str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{variant} child failed with exit code {process.returncode}")
    figures: dict[str, Any] = json.loads(output)
    figures["peak_mib"] = usage.ru_maxrss / 1024
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument(
        "--child",
        choices=["ingest", "ingest-split", "potluck", "potluck-split", "floor"],
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        run(folder, args.runs)


def run(folder: Path, runs: int) -> None:
    """Generate, ingest, then alternate the variants ``runs`` times and print the figures."""
    from potluck import Client

    generate(folder)
    with Client(settings=_settings(folder)) as client:
        client.apply(_definitions())
    ingested = measure("ingest", folder)
    measure("ingest-split", folder)
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f}")
    print(
        f"ingest: {ingested['rows']:,} rows in {ingested['seconds']:.2f} s = "
        f"{ingested['rows'] / ingested['seconds']:,.0f} rows/s, peak RSS "
        f"{ingested['peak_mib']:.0f} MiB"
    )
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "potluck": [], "potluck-split": []}
    for _ in range(runs):
        for variant in results:
            results[variant].append(measure(variant, folder))
    print(f"get_historical_features, {ENTITY_ROWS:,} entity rows, median of {runs} runs:")
    medians: dict[str, tuple[float, float]] = {}
    fastest: dict[str, float] = {}
    for variant, figures in results.items():
        seconds = [f["seconds"] for f in figures]
        peaks = [f["peak_mib"] for f in figures]
        assert {f["rows"] for f in figures} == {ENTITY_ROWS}
        first = statistics.median(f["first"] for f in figures)
        medians[variant] = (statistics.median(seconds), statistics.median(peaks))
        fastest[variant] = min(seconds)
        print(
            f"  {variant:13} time {medians[variant][0]:.3f} s (min {min(seconds):.3f}, max "
            f"{max(seconds):.3f}; first call in the process {first:.3f} s)   peak RSS "
            f"{medians[variant][1]:.0f} MiB (min {min(peaks):.0f}, max {max(peaks):.0f})"
        )
    for variant in ("potluck", "potluck-split"):
        time_ratio = medians[variant][0] / medians["floor"][0]
        memory_ratio = medians[variant][1] / medians["floor"][1]
        print(
            f"  {variant} / floor: time {time_ratio:.2f}x (target <= 1.2x; fastest runs "
            f"{fastest[variant] / fastest['floor']:.2f}x), memory {memory_ratio:.2f}x "
            "(target <= 1.5x)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
