"""Helpers the Spark benchmarks share: a standalone cluster of their own, memory, event logs, jobs.

- :class:`StandaloneCluster`: a Spark master and workers on free 127.0.0.1 ports, started from
  the pyspark package with ``spark-class`` (as ``scripts/services.sh`` starts the shared one),
  each daemon in a process group of its own, stopped with its executors by :meth:`stop`.
- :func:`jvm_peak_mib`: the peak resident memory of this process's Spark driver JVM.
- :func:`event_log` and :func:`stage_rows`: what each Spark stage did and how long it took,
  from the application's event log (``spark.eventLog.enabled``).
- The offline-to-online pieces (:func:`o2o_table`, :func:`o2o_piece`, :func:`settings_file`,
  :func:`run_job`, :func:`sample`): one batch source of ``rows`` rows over ``keys`` drivers, and
  a job followed from submit to its end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.ingestion.jobs import Job, JobStatus

SHARED_MASTER_PORT = 57077
"""The shared cluster's master port (``scripts/services.sh``); benchmarks pick ports above it."""


# ---- a standalone cluster of the benchmark's own ------------------------------------------------


def free_ports(count: int, start: int) -> list[int]:
    """Return ``count`` ports from ``start`` up that nothing listens on at 127.0.0.1."""
    ports: list[int] = []
    port = start
    while len(ports) < count:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pass
            else:
                ports.append(port)
        port += 1
    return ports


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


class StandaloneCluster:
    """A Spark standalone master and its workers on 127.0.0.1, under ``folder``.

    Args:
        folder: Where the daemons' logs, work and local folders go.
        first_port: The lowest port to try; each daemon takes two (RPC and web UI).
    """

    def __init__(self, folder: Path, first_port: int) -> None:
        self.folder = folder
        self._next_port = first_port
        self._daemons: list[subprocess.Popen[bytes]] = []
        self.url = ""
        """``spark://127.0.0.1:PORT`` once :meth:`start` has run."""
        self.workers = 0
        self._env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOCAL_DIRS": str(folder / "local"),
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_LOG_DIR": str(folder / "logs"),
            "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
            "SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=false",
        }

    def _ports(self) -> tuple[int, int]:
        rpc, ui = free_ports(2, self._next_port)
        self._next_port = ui + 1
        return rpc, ui

    def _daemon(self, name: str, *args: str) -> Path:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as out:
            self._daemons.append(
                subprocess.Popen(
                    [str(spark_home() / "bin" / "spark-class"), *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them
                )
            )
        return log

    def start(self) -> str:
        """Start the master; return its URL."""
        for sub in ("local", "logs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        rpc, ui = self._ports()
        log = self._daemon(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(rpc),
            "--webui-port",
            str(ui),
        )
        self.url = f"spark://127.0.0.1:{rpc}"
        _wait_for(log, "I have been elected leader", self._daemons[-1])
        return self.url

    def add_worker(self, cores: int, memory: str) -> None:
        """Start one more worker with ``cores`` cores and ``memory``; wait until it registers."""
        self.workers += 1
        rpc, ui = self._ports()
        work = self.folder / f"work-{self.workers}"
        work.mkdir(parents=True, exist_ok=True)
        log = self._daemon(
            f"worker-{self.workers}",
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(rpc),
            "--webui-port",
            str(ui),
            "--cores",
            str(cores),
            "--memory",
            memory,
            "--work-dir",
            str(work),
            self.url,
        )
        _wait_for(log, "Successfully registered with master", self._daemons[-1])

    def stop(self) -> None:
        """Stop every daemon (and the executors a worker started), workers first."""
        for daemon in reversed(self._daemons):
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
        for daemon in reversed(self._daemons):
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        self._daemons.clear()


def _wait_for(log: Path, line: str, daemon: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while line not in log.read_text(errors="replace"):
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Spark daemon did not start; see {log}")
        time.sleep(0.2)


# ---- the driver's memory ----------------------------------------------------------------------


def peak_mib(pid: int | str = "self") -> float:
    """A process's peak resident memory (``VmHWM``), in MiB; 0 if it cannot be read.

    Unlike ``getrusage``'s ``ru_maxrss``, which a child inherits from its parent's fork and keeps
    across ``exec``, ``VmHWM`` is the peak of the process's own memory since its ``exec``.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def jvm_peak_mib() -> float:
    """The driver JVM's peak resident memory (VmHWM), in MiB; 0 if it cannot be read.

    PySpark starts the JVM with ``spark-submit``, which ``exec``s ``java``, so the gateway's
    process is the JVM itself.
    """
    from pyspark import SparkContext

    process = getattr(SparkContext._gateway, "proc", None)
    return 0.0 if process is None else peak_mib(process.pid)


# ---- Spark event logs -------------------------------------------------------------------------

_METRICS = {
    "internal.metrics.executorRunTime": "run",
    "internal.metrics.jvmGCTime": "gc",
    "internal.metrics.input.recordsRead": "read",
    "internal.metrics.shuffle.read.recordsRead": "shuffle_in",
    "internal.metrics.shuffle.write.recordsWritten": "shuffle_out",
    "internal.metrics.shuffle.write.bytesWritten": "shuffle_bytes",
    "internal.metrics.output.recordsWritten": "written",
}


@dataclass(frozen=True)
class Stage:
    """One completed Spark stage, from the event log; times in epoch milliseconds."""

    id: int
    tasks: int
    submitted: int
    completed: int
    metrics: dict[str, int]

    @property
    def seconds(self) -> float:
        return (self.completed - self.submitted) / 1000

    def does(self) -> str:
        """What the stage did, from its record counts."""
        m = self.metrics
        source = (
            "read files"
            if m.get("read")
            else "shuffle in"
            if m.get("shuffle_in")
            else "driver rows"
        )
        sink = (
            "write Parquet"
            if m.get("written")
            else "shuffle out"
            if m.get("shuffle_out")
            else "to driver"
        )
        return f"{source} -> {sink}"


@dataclass(frozen=True)
class EventLog:
    """What an application's event log says: its start, its executors, its stages."""

    started: int
    executors_added: list[int]
    stages: list[Stage]


def event_log(folder: Path, app_id: str) -> EventLog:
    """Read the (uncompressed) event log of application ``app_id`` under ``folder``.

    A rolling log (``eventlog_v2_<id>/events_<n>_<id>``, Spark 4's default) is read in order.

    Raises:
        FileNotFoundError: If ``folder`` has no log of ``app_id``.
    """
    paths = sorted(
        (p for p in folder.rglob(f"*{app_id}*") if p.is_file()),
        key=lambda p: (len(p.name), p.name),
    )
    if not paths:
        raise FileNotFoundError(f"no event log of {app_id} in {folder}")
    started, added, stages = 0, [], []
    lines = [line for p in paths for line in p.read_text(errors="replace").splitlines()]
    for line in lines:
        event = json.loads(line)
        kind = event.get("Event")
        if kind == "SparkListenerApplicationStart":
            started = int(event["Timestamp"])
        elif kind == "SparkListenerExecutorAdded":
            added.append(int(event["Timestamp"]))
        elif kind == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            metrics = {
                _METRICS[a["Name"]]: int(a["Value"])
                for a in info.get("Accumulables", [])
                if a.get("Name") in _METRICS
            }
            stages.append(
                Stage(
                    int(info["Stage ID"]),
                    int(info["Number of Tasks"]),
                    int(info["Submission Time"]),
                    int(info["Completion Time"]),
                    metrics,
                )
            )
    return EventLog(started, sorted(added), sorted(stages, key=lambda s: s.submitted))


def stage_rows(stages: Iterable[Stage], start_ms: int, end_ms: int) -> list[str]:
    """One printable line per stage submitted within ``[start_ms, end_ms]``."""
    rows = []
    for s in stages:
        if not start_ms <= s.submitted <= end_ms:
            continue
        m = s.metrics
        records = max(m.get("read", 0), m.get("shuffle_in", 0))
        rows.append(
            f"stage {s.id:3}: {s.seconds:6.1f} s, {s.tasks:3} tasks, executors "
            f"{m.get('run', 0) / 1000:6.1f} s (GC {m.get('gc', 0) / 1000:.1f} s), "
            f"{records:,} rows in, {m.get('shuffle_out', 0):,} shuffled out "
            f"({m.get('shuffle_bytes', 0) / 2**20:,.0f} MiB), {m.get('written', 0):,} written: "
            f"{s.does()}"
        )
    return rows


# ---- offline-to-online -------------------------------------------------------------------------

PIECE = 1_000_000
"""Rows per ingestion of the offline-to-online source."""
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def o2o_table(root: Path) -> FeatureTable:
    """The offline-to-online benchmarks' table: 3 features (DOUBLE, INT64, STRING), 7 days."""
    return FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
            Feature(name="city", value_type=ValueType.STRING),
        ),
        max_age=timedelta(days=7),
        batch_source=FileSource(
            path=str(root / "data" / "driver_stats"), event_timestamp_column="event_timestamp"
        ),
    )


def o2o_piece(start: int, count: int, keys: int, now: datetime) -> pa.Table:
    """Rows ``start`` to ``start + count`` of the source: event times over the day to ``now``."""
    rng = np.random.default_rng(start)
    ids = rng.integers(0, keys, count, dtype=np.int64)
    seconds = rng.integers(0, 86_400, count, dtype=np.int64)
    events = (np.int64(now.timestamp() * 1e6) - seconds * 1_000_000).astype("datetime64[us]")
    return pa.table(
        {
            "driver_id": ids,
            "event_timestamp": pa.array(events).cast(pa.timestamp("us", "UTC")),
            "conv_rate": rng.random(count),
            "trips": np.arange(start, start + count, dtype=np.int64),
            "city": pa.array([f"city_{i % 977}" for i in range(start, start + count)]),
        }
    )


def settings_file(
    root: Path, name: str, redis_url: str, engine: dict[str, Any], registry: Path | None = None
) -> Path:
    """Write a settings file of a project of its own (a fresh name: its own Redis keys)."""
    path = root / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "project": f"bench_{name}_{uuid.uuid4().hex[:6]}",
                "registry": f"sqlite:///{registry or root / 'registry.db'}",
                "online_store": {"type": "redis", "url": redis_url},
                "engine": engine,
            }
        )
    )
    return path


def run_job(client: Client, table: str = "driver_stats") -> tuple[Job, float, float]:
    """Run one offline-to-online job; return its record, seconds to RUNNING and in all."""
    started = time.perf_counter()
    job = client.start_offline_to_online_ingestion(table)
    running_at = None
    while not (record := job.record()).status.is_terminal:
        if running_at is None and record.status is JobStatus.RUNNING:
            running_at = time.perf_counter() - started
        time.sleep(0.05)
    total = time.perf_counter() - started
    if record.status is not JobStatus.SUCCEEDED:
        sys.exit(f"job {record.id} ended {record.status.value}: {record.error}")
    return record, running_at or 0.0, total


def sample(client: Client, keys: int) -> dict[str, list[Any]]:
    """The online values of 1,000 random keys (the same keys on every call)."""
    ids = np.random.default_rng(7).choice(keys, size=min(1_000, keys), replace=False)
    resp = client.get_online_features(
        ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"],
        {"driver_id": [int(i) for i in ids]},
    )
    return resp.to_dict()
