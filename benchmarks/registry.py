"""Registry benchmark: the SQL registry embedded vs. the same registry behind the Core service.

Measures, for each backend (embedded SQLite always; PostgreSQL when POTLUCK_TEST_POSTGRES_URL is
set):

- apply of N feature tables (each keyed by 1 entity, with 5 features) in one apply call, on a
  fresh registry (create), and the same apply again (idempotent: nothing changes);
- get_feature_table latency over G gets of random tables;
- list_feature_tables latency over the N tables, L times.

"embedded" calls SqlRegistry in-process; "core" calls RemoteRegistry -> gRPC on 127.0.0.1 ->
the Core service (``run_core``, as ``potluck core`` runs it, in a child process) -> its own
SqlRegistry on a separate, identical database. The floor is embedded
SQLite. Prints a Markdown table of medians (p99 for the latency rows) and the ratio core/embedded.

Usage: python benchmarks/registry.py [--tables 1000] [--gets 2000] [--lists 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import sqlalchemy as sa

from potluck import Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.registry.base import Registry
from potluck.registry.remote import RemoteRegistry
from potluck.registry.sql import SqlRegistry

PROJECT = "bench"
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
FEATURE_TYPES = (
    ValueType.DOUBLE,
    ValueType.INT64,
    ValueType.STRING,
    ValueType.FLOAT,
    ValueType.INT64_LIST,
)


def make_tables(count: int) -> list[FeatureTable]:
    return [
        FeatureTable(
            name=f"table_{i:05d}",
            entities=["driver_id"],
            features=[Feature(name=f"f{j}", value_type=FEATURE_TYPES[j]) for j in range(5)],
            max_age=timedelta(hours=1 + i % 24),
            batch_source=FileSource(path=f"/data/table_{i:05d}", event_timestamp_column="event_ts"),
            labels={"team": f"team_{i % 10}"},
        )
        for i in range(count)
    ]


@dataclass
class Samples:
    """Seconds per operation, per (operation, backend, mode)."""

    values: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def add(self, op: str, backend: str, mode: str, seconds: float) -> None:
        self.values.setdefault((op, backend, mode), []).append(seconds)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def embedded(url: str) -> Iterator[Registry]:
    with closing(SqlRegistry(url)) as registry:
        yield registry


@contextmanager
def through_core(url: str) -> Iterator[Registry]:
    """Run the Core service as `potluck core` does (run_core, in its own process) on ``url``."""
    with tempfile.TemporaryDirectory(prefix="potluck-core-") as folder:
        config = Path(folder) / "potluck.yaml"
        config.write_text(f"registry: {url}\n")
        code = (
            "from potluck.config import load_settings\n"
            "from potluck.registry.server import run_core\n"
            f"run_core(load_settings({str(config)!r}, environ={{}}), port=0)\n"
        )
        with subprocess.Popen(
            [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True
        ) as proc:
            try:
                address = core_address(proc)
                with closing(RemoteRegistry(address, timeout=600.0)) as remote:
                    yield remote
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


def core_address(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.match(r"potluck core listening on (\S+) ", line)
        if found:
            return found.group(1)
    raise SystemExit(f"potluck core exited with {proc.wait()} before listening")


def measure_apply(
    registry: Registry,
    objects: list[Entity | FeatureTable],
    backend: str,
    mode: str,
    samples: Samples,
) -> None:
    samples.add("apply (create)", backend, mode, timed(lambda: registry.apply(PROJECT, objects)))
    samples.add("apply (unchanged)", backend, mode, timed(lambda: registry.apply(PROJECT, objects)))


def measure_reads(
    registry: Registry,
    names: list[str],
    lists: int,
    expected: int,
    backend: str,
    mode: str,
    samples: Samples,
) -> None:
    for name in names:
        samples.add(
            "get_feature_table",
            backend,
            mode,
            timed(lambda n=name: registry.get(PROJECT, "feature_table", n)),
        )
    sizes: list[int] = []
    for _ in range(lists):
        samples.add(
            "list_feature_tables",
            backend,
            mode,
            timed(lambda: sizes.append(len(registry.list(PROJECT, "feature_table")))),
        )
    if sizes != [expected] * lists:
        raise SystemExit(f"{backend} {mode}: listed {sizes} tables, expected {expected}")


def run_backend(
    backend: str, new_url: Callable[[], str], args: argparse.Namespace, samples: Samples
) -> None:
    objects: list[Entity | FeatureTable] = [DRIVER, *make_tables(args.tables)]
    rng = random.Random(42)
    names = [f"table_{rng.randrange(args.tables):05d}" for _ in range(args.gets)]
    for mode, opener in (("embedded", embedded), ("core", through_core)):
        for repeat in range(args.repeats):
            with opener(new_url()) as registry:
                measure_apply(registry, objects, backend, mode, samples)
                if repeat == 0:
                    measure_reads(registry, names, args.lists, args.tables, backend, mode, samples)
        print(f"  {backend} {mode}: done", file=sys.stderr)


@contextmanager
def sqlite_urls() -> Iterator[Callable[[], str]]:
    with tempfile.TemporaryDirectory(prefix="potluck-bench-") as folder:
        counter = iter(range(1_000_000))
        yield lambda: f"sqlite:///{Path(folder) / f'registry_{next(counter)}.db'}"


@contextmanager
def postgres_urls(base_url: str) -> Iterator[Callable[[], str]]:
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def new_url() -> str:
        name = f"bench_{os.getpid()}_{len(created)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return f"{base_url.rsplit('/', 1)[0]}/{name}"

    try:
        yield new_url
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def report(samples: Samples, backends: list[str], args: argparse.Namespace) -> str:
    lines = [
        f"tables={args.tables} (1 entity, 5 features each), gets={args.gets}, "
        f"lists={args.lists}, apply repeats={args.repeats}; python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, SQLAlchemy {sa.__version__}, {os.cpu_count()} CPUs",
        "",
        "| operation | backend | stat | embedded | core | core/embedded |",
        "|---|---|---|---:|---:|---:|",
    ]
    ops = ["apply (create)", "apply (unchanged)", "get_feature_table", "list_feature_tables"]
    for backend in backends:
        for op in ops:
            emb = samples.values[(op, backend, "embedded")]
            core = samples.values[(op, backend, "core")]
            stats = [("median", statistics.median)]
            if op.startswith(("get", "list")):
                stats = [
                    ("p50", lambda v: percentile(v, 0.5)),
                    ("p99", lambda v: percentile(v, 0.99)),
                ]
            for stat, fn in stats:
                e, c = fn(emb), fn(core)
                lines.append(f"| {op} | {backend} | {stat} | {fmt(e)} | {fmt(c)} | {c / e:.2f}x |")
    floor = statistics.median(samples.values[("get_feature_table", "sqlite", "embedded")])
    lines += ["", f"floor (embedded SQLite get_feature_table p50): {fmt(floor)}"]
    return "\n".join(lines)


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    samples = Samples()
    backends = ["sqlite"]
    with sqlite_urls() as new_url:
        run_backend("sqlite", new_url, args, samples)
    pg = os.environ.get("POTLUCK_TEST_POSTGRES_URL")
    if pg:
        with postgres_urls(pg) as new_url:
            run_backend("postgres", new_url, args, samples)
        backends.append("postgres")
    else:
        print("POTLUCK_TEST_POSTGRES_URL not set: PostgreSQL skipped", file=sys.stderr)
    print(report(samples, backends, args))


if __name__ == "__main__":
    main()
