"""Offline-to-online benchmark: the Spark engine against the local engine, same data, same run.

One batch source of ``--rows`` rows over ``--keys`` drivers (3 features: DOUBLE, INT64, STRING;
event times spread over a day, so each key has about rows/keys rows and one newest), ingested
in pieces of 1,000,000 rows (one commit each). Then, into the standalone Redis
(``POTLUCK_TEST_REDIS_URL`` or ``--redis-url``), each under a project of its own:

- the floor: the local engine (``engine: {type: local}``, DuckDB reads, one process);
- the Spark engine on ``--master`` (``POTLUCK_TEST_SPARK_MASTER``, else ``local[2]``), with
  ``--cores`` cores and ``--partitions`` writing tasks: wall time from submit to the end, split
  into the application's start (submit to ``RUNNING``) and the load itself, with the time of
  each Spark stage (from the application's log).

Printed: wall times, rows/s, the ratio Spark/local, and a check that both left the same values
for 1,000 sampled keys. The issue's figure is 10,000,000 rows / 1,000,000 keys (the defaults);
smaller runs show the same split between start-up and work.

Usage: python benchmarks/offline_to_online_spark.py [--rows 10000000] [--keys 1000000]
       [--master spark://127.0.0.1:57077] [--cores 2] [--partitions 8] [--conf KEY=VALUE]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _spark_bench import DRIVER, PIECE, o2o_piece, o2o_table, run_job, sample, settings_file

from potluck import Client
from potluck.config import load_settings

STAGE = re.compile(r"INFO DAGScheduler: (\w+Stage \d+) \(.*\) finished in (\d+) ms")


def stages(log: str) -> list[tuple[str, float]]:
    """The Spark stages of the application's log and how long each took."""
    text = Path(log).read_text(errors="replace")
    return [(m.group(1), int(m.group(2)) / 1000) for m in STAGE.finditer(text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument(
        "--master", default=os.environ.get("POTLUCK_TEST_SPARK_MASTER") or "local[2]"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--conf", action="append", default=[], help="KEY=VALUE: a Spark property (repeatable)"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("POTLUCK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    print(f"# {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# {args.rows:,} rows, {args.keys:,} keys into {args.redis_url}")
    with tempfile.TemporaryDirectory(prefix="potluck-bench-") as folder:
        root = Path(folder)
        spark_engine = {
            "type": "spark",
            "master": args.master,
            "conf": {
                "spark.cores.max": str(args.cores),
                "spark.executor.memory": "1g",
                "spark.driver.memory": "1g",
                **dict(item.split("=", 1) for item in args.conf),
            },
            "partitions": args.partitions,
            "log_dir": str(root / "logs"),
        }
        local_file = settings_file(root, "local", args.redis_url, {"type": "local"})
        local = Client(settings=load_settings(local_file))
        spark = Client(
            settings=load_settings(settings_file(root, "spark", args.redis_url, spark_engine))
        )
        definition = o2o_table(root)
        for client in (local, spark):
            client.apply([DRIVER, definition])
        now = datetime.now(timezone.utc)
        began = time.perf_counter()
        for start in range(0, args.rows, PIECE):
            rows = o2o_piece(start, min(PIECE, args.rows - start), args.keys, now)
            local.ingest("driver_stats", rows)
        print(f"ingest: {time.perf_counter() - began:.1f} s")
        figures = {}
        for name, client in (("local", local), ("spark", spark)):
            record, to_running, total = run_job(client)
            figures[name] = total
            print(
                f"{name:>5}: {total:7.1f} s ({args.rows / total:,.0f} rows/s); start "
                f"{to_running:.1f} s, load {total - to_running:.1f} s; {record.stats}"
            )
            if record.log_location:
                for stage, seconds in stages(record.log_location):
                    print(f"       {stage}: {seconds:.1f} s")
        print(f"ratio spark/local: {figures['spark'] / figures['local']:.2f}")
        same = sample(local, args.keys) == sample(spark, args.keys)
        print(f"same values for sampled keys: {same}")
        for client in (local, spark):
            client.purge_online("driver_stats")
            client.close()


if __name__ == "__main__":
    main()
