"""Spark benchmark (issue 9): training sets on DuckDB and on 1 and 2 Spark workers; o2o jobs.

Data (generated once into ``--folder``, reused by later runs with the same sizes):

- 3 feature tables over one week, ``--feature-rows`` rows in all (half, 30% and 20%), each
  with about 2% of rows repeating another row's key and event time with a later created time:
  ``driver_stats`` (by ``driver_id``, max_age 2 h), ``customer_stats`` (by ``customer_id``,
  max_age 1 day) and ``driver_customer`` (by both, each driver has 5 customers, max_age 7 days);
  ingested with ``client.ingest`` (one call per table);
- ``--entity-rows`` entity rows (``driver_id``, ``customer_id``, ``event_timestamp``) in one
  Parquet file, the entity source of every training set.

Training sets, all 7 features of the 3 tables, each variant in a fresh child process (so its
peak memory is its own), a warm-up run of each first (not of ``floor+order``: the floor's
warms it), then ``--runs`` timed runs:

- DuckDB: ``client.get_historical_features(refs, "entities.parquet").to_parquet(...)``;
- Spark, 1 worker and 2 workers (each worker 1 core) of a standalone cluster the benchmark starts
  on free 127.0.0.1 ports (and stops at the end, also on Ctrl-C): the same call until its
  ``output_location`` is written; alternating in the same session with the floor, one
  hand-written Spark SQL as-of join over the same Parquet files (Spark's own reader; one window
  over the entity rows and all tables' rows, max_age applied, no checks, unordered) and the
  floor writing the rows in input order (``floor+order``);
- the 2-worker run again over ``--memory-rows`` feature rows, for the driver's memory at two
  data sizes.

Printed: median wall times, the driver's peak memory (its Python process and its JVM), the
ratios (Spark/DuckDB, potluck/floor, 2-worker speed-up, memory at two sizes), the session start
and each Spark stage of one run (from the application's event log). Then offline-to-online of
``--o2o-rows`` rows / ``--o2o-keys`` keys into Redis (``POTLUCK_TEST_REDIS_URL``, projects of
their own, purged at the end): the local engine, then the Spark engine on the 2-worker cluster.

Usage: python benchmarks/spark.py [--feature-rows 10000000] [--entity-rows 1000000]
       [--drivers 100000] [--o2o-rows 10000000] [--o2o-keys 1000000] [--runs 3] [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _spark_bench import (
    DRIVER,
    PIECE,
    SHARED_MASTER_PORT,
    StandaloneCluster,
    event_log,
    jvm_peak_mib,
    o2o_piece,
    o2o_table,
    peak_mib,
    run_job,
    sample,
    settings_file,
    stage_rows,
)

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings, load_settings

START_US = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()) * 10**6
WEEK_US = 7 * 86_400 * 10**6
DUPLICATE_SHARE = 0.02
PAIRS = 5
"""Customers per driver in ``driver_customer`` (and in the entity rows)."""
KEYS = ("driver_id", "customer_id")
_SQL_TYPES = {ValueType.FLOAT: "FLOAT", ValueType.DOUBLE: "DOUBLE", ValueType.INT64: "BIGINT"}
EXECUTOR_MEMORY = "2g"


@dataclass(frozen=True)
class TableSpec:
    """One feature table of the training-set data."""

    name: str
    keys: tuple[str, ...]
    features: tuple[tuple[str, ValueType], ...]
    max_age: timedelta
    share: float
    """Its part of ``--feature-rows``."""

    def definition(self) -> FeatureTable:
        return FeatureTable(
            name=self.name,
            entities=self.keys,
            features=tuple(Feature(name=n, value_type=t) for n, t in self.features),
            max_age=self.max_age,
            batch_source=FileSource(
                path=f"data/{self.name}",
                event_timestamp_column="event_timestamp",
                created_timestamp_column="created",
            ),
        )


TABLES = (
    TableSpec(
        "driver_stats",
        ("driver_id",),
        (
            ("conv_rate", ValueType.FLOAT),
            ("acc_rate", ValueType.FLOAT),
            ("avg_daily_trips", ValueType.INT64),
        ),
        timedelta(hours=2),
        0.5,
    ),
    TableSpec(
        "customer_stats",
        ("customer_id",),
        (("balance", ValueType.DOUBLE), ("lifetime_trips", ValueType.INT64)),
        timedelta(days=1),
        0.3,
    ),
    TableSpec(
        "driver_customer",
        ("driver_id", "customer_id"),
        (("trips_together", ValueType.INT64), ("rating", ValueType.FLOAT)),
        timedelta(days=7),
        0.2,
    ),
)
REFS = [f"{t.name}:{name}" for t in TABLES for name, _ in t.features]


# ---- data ----------------------------------------------------------------------------------------


def _customer(drivers: np.ndarray, pair: np.ndarray, customers: int) -> np.ndarray:
    """The ``pair``-th customer of each driver."""
    customer: np.ndarray = (drivers * 7_919 + pair * 104_729) % customers
    return customer


def _keys(
    rng: np.random.Generator, keys: tuple[str, ...], rows: int, drivers: int, customers: int
) -> dict[str, np.ndarray]:
    driver = rng.integers(0, drivers, rows)
    if keys == ("customer_id",):
        return {"customer_id": rng.integers(0, customers, rows)}
    if keys == ("driver_id",):
        return {"driver_id": driver}
    return {
        "driver_id": driver,
        "customer_id": _customer(driver, rng.integers(0, PAIRS, rows), customers),
    }


def _feature_rows(
    rng: np.random.Generator, spec: TableSpec, rows: int, drivers: int, customers: int
) -> pa.Table:
    keys = _keys(rng, spec.keys, rows, drivers, customers)
    events = START_US + rng.integers(0, WEEK_US, rows)
    # About 2% of rows repeat an earlier row's (key, event time) with a later created time.
    repeats = np.flatnonzero(rng.random(rows) < DUPLICATE_SHARE)
    originals = rng.integers(0, rows, repeats.size)
    for column in keys.values():
        column[repeats] = column[originals]
    events[repeats] = events[originals]
    created = events + rng.integers(0, 3_600 * 10**6, rows)
    created[repeats] = created[originals] + rng.integers(1, 600 * 10**6, repeats.size)
    stamp = pa.timestamp("us", tz="UTC")
    columns: dict[str, Any] = {
        **keys,
        "event_timestamp": pa.array(events, stamp),
        "created": pa.array(created, stamp),
    }
    for name, value_type in spec.features:
        columns[name] = (
            rng.integers(0, 1_000, rows)
            if value_type is ValueType.INT64
            else rng.random(rows, dtype=np.float32 if value_type is ValueType.FLOAT else np.float64)
        )
    return pa.table(columns)


def training_data(folder: Path, feature_rows: int, entity_rows: int, drivers: int) -> Path:
    """Return the folder of the training-set data of these sizes, generating it the first time."""
    sizes = {"feature_rows": feature_rows, "entity_rows": entity_rows, "drivers": drivers}
    root = folder / f"training-f{feature_rows}-e{entity_rows}-d{drivers}"
    marker = root / "ready.json"
    if marker.exists() and json.loads(marker.read_text()) == sizes:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    started = time.perf_counter()
    rng = np.random.default_rng(2024)
    customers = drivers
    entity_keys = _keys(rng, ("driver_id", "customer_id"), entity_rows, drivers, customers)
    entities = pa.table(
        {
            **entity_keys,
            "event_timestamp": pa.array(
                START_US + rng.integers(0, WEEK_US, entity_rows), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    pq.write_table(entities, root / "entities.parquet")
    with Client(settings=_settings(root)) as client:
        client.apply(
            [
                Entity(name="driver_id", value_type=ValueType.INT64),
                Entity(name="customer_id", value_type=ValueType.INT64),
                *(spec.definition() for spec in TABLES),
            ]
        )
        for spec in TABLES:
            rows = round(feature_rows * spec.share)
            client.ingest(spec.name, _feature_rows(rng, spec, rows, drivers, customers))
    marker.write_text(json.dumps(sizes))
    print(f"# generated {root} in {time.perf_counter() - started:.1f} s", flush=True)
    return root


def o2o_data(folder: Path, rows: int, keys: int) -> Path:
    """Return the folder of the offline-to-online source of these sizes, generating it once."""
    sizes = {"rows": rows, "keys": keys}
    root = folder / f"o2o-r{rows}-k{keys}"
    marker = root / "ready.json"
    if marker.exists() and json.loads(marker.read_text()) == sizes:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    settings = Settings(project="bench_source", registry=f"sqlite:///{root / 'registry.db'}")
    with Client(settings=settings) as client:
        client.apply([DRIVER, o2o_table(root)])
        for start in range(0, rows, PIECE):
            client.ingest("driver_stats", o2o_piece(start, min(PIECE, rows - start), keys, now))
    marker.write_text(json.dumps(sizes))
    print(f"# generated {root} in {time.perf_counter() - started:.1f} s", flush=True)
    return root


def _settings(root: Path, offline_store: dict[str, Any] | None = None) -> Settings:
    return Settings(
        registry=f"sqlite:///{root / 'registry.db'}",
        root=root,
        offline_store=offline_store or {"type": "duckdb"},
    )


# ---- the floor -----------------------------------------------------------------------------------


def floor_sql(ordered: bool) -> str:
    """A hand-written as-of join of the entity rows with the 3 tables, in Spark SQL.

    Views ``entities`` and ``features_<n>`` must exist. One window over the entity rows (one
    copy per table) and every table's rows, by (table, keys), ordered by (event time, created
    time), entity rows last; then one row per entity row, max_age applied to the winner.
    """
    winners = [
        "STRUCT<ev: BIGINT, "
        + ", ".join(f"{name}: {_SQL_TYPES[t]}" for name, t in spec.features)
        + ">"
        for spec in TABLES
    ]
    numbers = ", ".join(str(n) for n in range(len(TABLES)))

    def users(key: str) -> str:
        return ", ".join(str(n) for n, spec in enumerate(TABLES) if key in spec.keys)

    asks = (
        "SELECT t, "
        + "".join(f"CASE WHEN t IN ({users(k)}) THEN {k} END AS k_{k}, " for k in KEYS)
        + "ts AS o, 9223372036854775807 AS r, rid, ts, "
        + "".join(f"CASE WHEN t = 0 THEN {k} END AS {k}, " for k in KEYS)
        + "CASE WHEN t = 0 THEN event_timestamp END AS event_timestamp, "
        + ", ".join(f"CAST(NULL AS {w}) AS w{n}" for n, w in enumerate(winners))
        + " FROM (SELECT *, monotonically_increasing_id() AS rid, "
        "unix_micros(event_timestamp) AS ts FROM entities) "
        f"LATERAL VIEW explode(array({numbers})) copies AS t"
    )
    offers = []
    for n, spec in enumerate(TABLES):
        values = ", ".join(
            "struct(unix_micros(event_timestamp) AS ev, "
            + ", ".join(name for name, _ in spec.features)
            + f") AS w{m}"
            if m == n
            else f"CAST(NULL AS {w}) AS w{m}"
            for m, w in enumerate(winners)
        )
        offers.append(
            f"SELECT {n}, "
            + "".join(f"{k}, " if k in spec.keys else "CAST(NULL AS BIGINT), " for k in KEYS)
            + "unix_micros(event_timestamp), "
            "coalesce(unix_micros(created), -9223372036854775808), "
            "CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), "
            + "".join("CAST(NULL AS BIGINT), " for _ in KEYS)
            + f"CAST(NULL AS TIMESTAMP), {values} FROM features_{n}"
        )
    window = (
        "SELECT rid, ts, "
        + ", ".join(KEYS)
        + ", event_timestamp, "
        + ", ".join(f"last(w{n}, true) OVER win AS w{n}" for n in range(len(TABLES)))
        + " FROM ("
        + " UNION ALL ".join([asks, *offers])
        + ") WINDOW win AS (PARTITION BY t, "
        + ", ".join(f"k_{k}" for k in KEYS)
        + " ORDER BY o, r ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
    )
    outputs = [
        f"first(CASE WHEN w{n}.ev >= ts - {spec.max_age // timedelta(microseconds=1)} "
        f"THEN w{n}.{name} END, true) AS {spec.name}__{name}"
        for n, spec in enumerate(TABLES)
        for name, _ in spec.features
    ]
    return (
        "SELECT rid, "
        + ", ".join(f"first({c}, true) AS {c}" for c in (*KEYS, "event_timestamp"))
        + ", "
        + ", ".join(outputs)
        + f" FROM ({window}) WHERE rid IS NOT NULL GROUP BY rid"
        + (" ORDER BY rid" if ordered else "")
    )


# ---- a child process: one variant's runs ---------------------------------------------------------


def child(spec_path: Path) -> None:
    """Run the variant ``spec_path`` describes; write its figures next to it as JSON."""
    spec = json.loads(spec_path.read_text())
    root, scratch = Path(spec["root"]), Path(spec["scratch"])
    entities = str(root / "entities.parquet")
    windows: list[tuple[str, int, int]] = []
    times: dict[str, list[float]] = {}

    def timed(variant: str, work: Callable[[], None]) -> float:
        began_ms, began = int(time.time() * 1000), time.perf_counter()
        work()
        seconds = time.perf_counter() - began
        windows.append((variant, began_ms, int(time.time() * 1000)))
        times.setdefault(variant, []).append(seconds)
        return seconds

    figures: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec["kind"] == "duckdb":
            client = Client(settings=_settings(root))
            variants = {"potluck": lambda: _duckdb_run(client, entities, scratch)}
        else:
            client, variants, figures = _spark_variants(spec, root, entities, scratch)
        for variant, work in variants.items():
            if variant != "floor+order":  # the floor's warm-up warms it
                timed(f"warm-up {variant}", work)
        for _ in range(spec["runs"]):
            for variant, work in variants.items():
                timed(variant, work)
        figures.update(
            times=times,
            windows=windows,
            python_peak_mib=peak_mib(),
            jvm_peak_mib=jvm_peak_mib() if spec["kind"] == "spark" else 0.0,
        )
        client.close()
        if spec["kind"] == "spark":
            from pyspark.sql import SparkSession

            SparkSession.builder.getOrCreate().stop()
    spec_path.with_suffix(".out.json").write_text(json.dumps(figures))


def _duckdb_run(client: Client, entities: str, scratch: Path) -> None:
    target = scratch / "duckdb.parquet"
    client.get_historical_features(REFS, entities).to_parquet(target)
    target.unlink()


def _spark_variants(
    spec: dict[str, Any], root: Path, entities: str, scratch: Path
) -> tuple[Client, dict[str, Callable[[], None]], dict[str, Any]]:
    """Start the session (timed); return the client, the variants and the start's figures."""
    from potluck.offline.commits import read_source
    from potluck.offline.files import without_superseded
    from potluck.offline.spark.session import start_session
    from potluck.offline.spark.settings import SparkSettings
    from potluck.offline.spark.store import APP_NAME, SESSION_DEFAULTS

    staging = scratch / "staging"
    conf = spec["conf"]
    began_ms, began = int(time.time() * 1000), time.perf_counter()
    spark = start_session(
        SparkSettings(master=spec["master"], conf={**SESSION_DEFAULTS, **conf}),
        APP_NAME,
        log_file=str(scratch / "driver.log"),
    )
    figures = {
        "launched_ms": began_ms,
        "session_s": time.perf_counter() - began,
        "app_id": spark.sparkContext.applicationId,
    }
    client = Client(
        settings=_settings(
            root,
            {
                "type": "spark",
                "master": spec["master"],
                "conf": conf,
                "staging_location": str(staging),
            },
        )
    )
    spark.read.parquet(entities).createOrReplaceTempView("entities")
    for n, table in enumerate(TABLES):
        files = without_superseded(read_source(str(root / "data" / table.name)).files).paths
        spark.read.parquet(*files).createOrReplaceTempView(f"features_{n}")

    def potluck() -> None:
        job = client.get_historical_features(REFS, entities)
        location = job.output_location
        assert location is not None
        shutil.rmtree(location.removeprefix("file://"), ignore_errors=True)

    def floor(ordered: bool) -> None:
        target = scratch / "floor"
        spark.sql(floor_sql(ordered)).write.mode("overwrite").parquet(target.as_uri())

    return (
        client,
        {
            "potluck": potluck,
            "floor": lambda: floor(False),
            "floor+order": lambda: floor(True),
        },
        figures,
    )


# ---- the parent ----------------------------------------------------------------------------------

_running: subprocess.Popen[bytes] | None = None


def run_child(scratch: Path, name: str, spec: dict[str, Any], events: Path) -> dict[str, Any]:
    """Run one variant in a child process; print and return its figures."""
    global _running
    folder = scratch / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.json"
    path.write_text(json.dumps({**spec, "scratch": str(folder)}))
    print(f"# {name} ...", flush=True)
    _running = subprocess.Popen([sys.executable, __file__, "--child", str(path)])
    code = _running.wait()
    _running = None
    if code != 0:
        raise RuntimeError(f"the {name} run failed (exit {code}); see {folder}")
    figures: dict[str, Any] = json.loads(path.with_suffix(".out.json").read_text())
    print(
        f"{name}: "
        + ", ".join(
            f"{variant} {' '.join(f'{s:.1f}' for s in seconds)} s"
            for variant, seconds in figures["times"].items()
        )
        + f"; driver peak Python {figures['python_peak_mib']:.0f} MiB, "
        f"JVM {figures['jvm_peak_mib']:.0f} MiB; load average {os.getloadavg()}",
        flush=True,
    )
    if spec["kind"] == "spark":
        _where_time_goes(name, figures, events)
    return figures


def spark_conf(events: Path, cores: int, partitions: int) -> dict[str, str]:
    return {
        "spark.cores.max": str(cores),
        "spark.executor.cores": "1",
        "spark.executor.memory": EXECUTOR_MEMORY,
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }


def median(figures: dict[str, Any], variant: str) -> float:
    seconds: list[float] = figures["times"][variant]
    return statistics.median(seconds)


def _where_time_goes(name: str, figures: dict[str, Any], events: Path) -> None:
    """Print the session start and the stages of the last timed run of each variant."""
    log = event_log(events, figures["app_id"])
    launched = figures["launched_ms"]
    executors = ", ".join(f"{(t - launched) / 1000:.1f} s" for t in log.executors_added)
    print(
        f"{name}: session start {figures['session_s']:.1f} s (application registered "
        f"{(log.started - launched) / 1000:.1f} s after launch; executors added at {executors}); "
        f"warm-up runs: "
        + ", ".join(
            f"{v.removeprefix('warm-up ')} {s[0]:.1f} s"
            for v, s in figures["times"].items()
            if v.startswith("warm-up")
        )
    )
    for variant in ("potluck", "floor", "floor+order"):
        _, start, end = [w for w in figures["windows"] if w[0] == variant][-1]
        first = min((s.submitted for s in log.stages if start <= s.submitted <= end), default=end)
        print(
            f"  {variant} (last run, {(end - start) / 1000:.1f} s; first stage after "
            f"{(first - start) / 1000:.1f} s):"
        )
        for row in stage_rows(log.stages, start, end):
            print(f"    {row}")
    sys.stdout.flush()


def o2o(
    args: argparse.Namespace,
    root: Path,
    scratch: Path,
    master: str,
    events: Path,
    clients: list[Client],
) -> None:
    """Run the local, then the Spark offline-to-online job; print their figures.

    Each job's client is appended to ``clients`` (the caller purges their Redis keys).
    """
    engines: dict[str, dict[str, Any]] = {
        "local": {"type": "local"},
        "spark": {
            "type": "spark",
            "master": master,
            "conf": {**spark_conf(events, 2, args.o2o_partitions), "spark.driver.memory": "1g"},
            "partitions": args.o2o_partitions,
            "log_dir": str(scratch / "o2o-logs"),
        },
    }
    figures = {}
    for name, engine in engines.items():
        path = settings_file(scratch, name, args.redis_url, engine, registry=root / "registry.db")
        client = Client(settings=load_settings(path))
        clients.append(client)
        client.apply([DRIVER, o2o_table(root)])
        record, to_running, total = run_job(client)
        figures[name] = total
        print(
            f"{name:>5}: {total:7.1f} s ({args.o2o_rows / total:,.0f} rows/s); start "
            f"{to_running:.1f} s, load {total - to_running:.1f} s; {record.stats}",
            flush=True,
        )
        if record.application_id is not None:
            log = event_log(events, record.application_id)
            for row in stage_rows(log.stages, 0, 2**62):
                print(f"    {row}")
    print(f"ratio spark/local: {figures['spark'] / figures['local']:.2f}")
    same = sample(clients[0], args.o2o_keys) == sample(clients[1], args.o2o_keys)
    print(f"same values for 1,000 sampled keys: {same}")


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n## training sets: {args.feature_rows:,} feature rows, {args.entity_rows:,} entity rows"
    )
    print(f"median of {args.runs} runs after a warm-up; driver peak memory = Python + its JVM\n")
    print(f"| variant | {' | '.join(results)} |")
    print(f"|---|{'---:|' * len(results)}")
    for variant in ("potluck", "floor", "floor+order"):
        cells = [
            f"{median(r, variant):.1f} s" if variant in r["times"] else "-"
            for r in results.values()
        ]
        print(f"| {variant} | {' | '.join(cells)} |")
    print(
        "| driver peak memory | "
        + " | ".join(
            f"{r['python_peak_mib']:.0f} + {r['jvm_peak_mib']:.0f} MiB" for r in results.values()
        )
        + " |\n"
    )
    duck = median(results["duckdb"], "potluck")
    one, two = results["spark 1 worker"], results["spark 2 workers"]
    for name, r in (("1 worker", one), ("2 workers", two)):
        print(
            f"spark {name}: Spark/DuckDB {median(r, 'potluck') / duck:.2f}x; potluck/floor "
            f"{median(r, 'potluck') / median(r, 'floor'):.2f}x, potluck/floor+order "
            f"{median(r, 'potluck') / median(r, 'floor+order'):.2f}x (target <= 1.3x)"
        )
    for variant in ("potluck", "floor"):
        print(
            f"2-worker speed-up, {variant}: {median(one, variant) / median(two, variant):.2f}x "
            "(target >= 1.5x)"
        )
    small = results.get(f"spark 2 workers, {args.memory_rows:,} rows")
    if small is not None:
        print(
            f"driver memory {args.feature_rows:,} / {args.memory_rows:,} feature rows: Python "
            f"{two['python_peak_mib'] / small['python_peak_mib']:.2f}x, JVM "
            f"{two['jvm_peak_mib'] / small['jvm_peak_mib']:.2f}x (target <= 1.2x)"
        )


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature-rows", type=int, default=10_000_000)
    parser.add_argument("--entity-rows", type=int, default=1_000_000)
    parser.add_argument("--drivers", type=int, default=100_000)
    parser.add_argument(
        "--memory-rows",
        type=int,
        default=1_000_000,
        help="feature rows of the memory check (0: none)",
    )
    parser.add_argument("--o2o-rows", type=int, default=10_000_000)
    parser.add_argument("--o2o-keys", type=int, default=1_000_000)
    parser.add_argument("--o2o-partitions", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--worker-memory", default="3g")
    parser.add_argument("--skip", action="append", default=[], choices=["training", "o2o"])
    parser.add_argument(
        "--folder", type=Path, default=Path(tempfile.gettempdir()) / "potluck-spark-bench"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("POTLUCK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return
    signal.signal(signal.SIGTERM, _stop)
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()}",
        flush=True,
    )
    args.folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="potluck-spark-bench-"))
    events = scratch / "events"
    events.mkdir()
    cluster = StandaloneCluster(scratch / "cluster", SHARED_MASTER_PORT + 300)
    clients: list[Client] = []
    try:
        main_data = small_data = o2o_root = None
        if "training" not in args.skip:
            main_data = training_data(
                args.folder, args.feature_rows, args.entity_rows, args.drivers
            )
            if args.memory_rows:
                small_data = training_data(
                    args.folder, args.memory_rows, args.entity_rows, args.drivers
                )
        if "o2o" not in args.skip:
            o2o_root = o2o_data(args.folder, args.o2o_rows, args.o2o_keys)
        master = cluster.start()
        cluster.add_worker(1, args.worker_memory)
        results: dict[str, dict[str, Any]] = {}
        if main_data is not None:
            base = {"root": str(main_data), "runs": args.runs, "master": master}
            results["duckdb"] = run_child(scratch, "duckdb", {**base, "kind": "duckdb"}, events)
            one = spark_conf(events, 1, args.shuffle_partitions)
            results["spark 1 worker"] = run_child(
                scratch, "spark-1", {**base, "kind": "spark", "conf": one}, events
            )
        cluster.add_worker(1, args.worker_memory)
        if main_data is not None:
            two = spark_conf(events, 2, args.shuffle_partitions)
            results["spark 2 workers"] = run_child(
                scratch, "spark-2", {**base, "kind": "spark", "conf": two}, events
            )
            if small_data is not None:
                results[f"spark 2 workers, {args.memory_rows:,} rows"] = run_child(
                    scratch,
                    "spark-2-small",
                    {**base, "root": str(small_data), "kind": "spark", "conf": two},
                    events,
                )
            report(args, results)
        if o2o_root is not None:
            print(f"\n## offline-to-online: {args.o2o_rows:,} rows, {args.o2o_keys:,} keys")
            o2o(args, o2o_root, scratch, master, events, clients)
    finally:
        if _running is not None:
            _running.terminate()
            _running.wait()
        for client in clients:
            client.purge_online("driver_stats")
            client.close()
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"# load average at the end {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
