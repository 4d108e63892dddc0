"""The Spark engine on the real cluster: spark-submit applications against Redis and Redis Cluster.

Five applications in all, three of them launched together when the module starts:

- A (Redis, cluster): four jobs in one application: a ranged load over date partitions with
  duplicate keys, event-time ties broken by created time and rows past ``max_age``; a first
  ``since_last`` load of a composite-key table with ``field_mapping`` and ties between
  ingestions; a plain Parquet folder with rows to reject; a folder with a bad file.
- B (Redis Cluster, cluster): the ranged load again; a load that interleaves with local jobs on
  one table; a load whose driver is killed (it reads lost).
- E (SQLite, ``local[2]``): the ranged load; a load whose driver hangs and is killed on cancel.
- C (Redis, cluster, through ``potluck ingest-online --since-last``): picks up only new versions.
- D (Redis, cluster): cancelled through ``potluck jobs cancel`` while it runs.

Every load is compared with the local engine's on the same data (same registry, another
project): job counts and fields, and the online store's contents key for key.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from _spark_support import SPARK_TEST_CONF
from typer.testing import CliRunner

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType, plugins
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import ConfigError, JobError
from potluck.ingestion.engines.base import JobContext
from potluck.ingestion.engines.local import LocalEngine, LocalEngineConfig
from potluck.ingestion.engines.spark import SparkEngine, SparkJob
from potluck.ingestion.jobs import Job, JobSpec, JobStats, JobStatus, list_jobs, lost_error
from potluck.ingestion.launchers.base import LaunchStatus
from potluck.online.base import OnlineStore
from potluck.online.codec import encode_entity_keys
from potluck.types import to_arrow_type

pytestmark = [pytest.mark.spark, pytest.mark.redis, pytest.mark.slow]

NOW = datetime.now(timezone.utc).replace(microsecond=0)
TODAY = NOW.replace(hour=0, minute=0, second=0)
D = [TODAY - timedelta(days=i) for i in range(7)]
"""Midnight of today (``D[0]``), yesterday (``D[1]``) ..."""
H = timedelta(hours=1)
WAIT = 600.0
"""Seconds a test waits for an application's job (the cluster is shared and may queue it)."""

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
CUSTOMER = Entity(name="customer_id", value_type=ValueType.STRING)
TYPES = {"driver_id": ValueType.INT64, "customer_id": ValueType.STRING}
KEYS: dict[str, list[dict[str, Any]]] = {
    "stats": [{"driver_id": i} for i in range(1, 9)],
    "pairs": [
        {"driver_id": d, "customer_id": c}
        for d, c in [(1, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "d")]
    ],
    "plain": [{"driver_id": i} for i in range(1, 5)],
    "mixed": [{"driver_id": i} for i in range(200)],
}
"""The entity keys whose stored values the tests compare."""


def _tables(root: Path) -> dict[str, FeatureTable]:
    def source(name: str, **options: Any) -> FileSource:
        return FileSource(
            path=str(root / "data" / name), event_timestamp_column="event_timestamp", **options
        )

    score = (Feature(name="score", value_type=ValueType.FLOAT),)
    number = (Feature(name="v", value_type=ValueType.INT64),)
    return {
        "stats": FeatureTable(
            name="stats",
            entities=("driver_id",),
            features=(
                Feature(name="conv", value_type=ValueType.DOUBLE),
                Feature(name="trips", value_type=ValueType.INT64),
                Feature(name="note", value_type=ValueType.STRING),
                Feature(name="tags", value_type=ValueType.STRING_LIST),
            ),
            max_age=timedelta(days=3),
            batch_source=source(
                "stats", created_timestamp_column="created", date_partition_column="day"
            ),
        ),
        "pairs": FeatureTable(
            name="pairs",
            entities=("driver_id", "customer_id"),
            features=(Feature(name="rides", value_type=ValueType.INT32),),
            batch_source=source("pairs", field_mapping={"rides_count": "rides"}),
        ),
        "plain": FeatureTable(
            name="plain", entities=("driver_id",), features=score, batch_source=source("plain")
        ),
        "bad": FeatureTable(
            name="bad", entities=("driver_id",), features=score, batch_source=source("bad")
        ),
        "mixed": FeatureTable(
            name="mixed", entities=("driver_id",), features=number, batch_source=source("mixed")
        ),
        "big": FeatureTable(
            name="big", entities=("driver_id",), features=number, batch_source=source("big")
        ),
    }


def _stats_rows(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series([r[0] for r in rows], dtype="int64"),
            "event_timestamp": pd.to_datetime([r[1] for r in rows], utc=True),
            "created": pd.to_datetime([r[2] for r in rows], utc=True),
            "conv": pd.Series([r[3] for r in rows], dtype="float64"),
            "trips": pd.Series([r[4] for r in rows], dtype="Int64"),
            "note": pd.Series([r[5] for r in rows], dtype="object"),
            "tags": pd.Series([r[6] for r in rows], dtype="object"),
        }
    )


STATS_1 = [
    (1, D[1] + 10 * H, D[1] + 10 * H, 0.1, 10, "a", ["x"]),
    (1, D[1] + 12 * H, D[1] + 12 * H, 0.2, 12, "b", ["y", "z"]),  # newer: wins
    (2, D[1] + 11 * H, D[1] + 12 * H, 0.3, 20, None, None),  # ties with STATS_2, created later
    (3, D[4] + 1 * H, D[4] + 1 * H, 0.4, 30, "old", []),  # past max_age: not stored
    (4, D[6] + 1 * H, D[6] + 1 * H, 0.5, 40, "early", None),  # a day before the range
    (5, NOW - timedelta(minutes=30), NOW, 0.6, 50, "late", None),  # after the range's end
    (6, D[2] + 1 * H, None, 0.6, None, "null created", None),
]
STATS_2 = [
    (2, D[1] + 11 * H, D[1] + 11 * H, 0.35, 21, "loser", ["l"]),  # same event, created earlier
    (6, D[2] + 1 * H, D[2] + 2 * H, 0.65, 61, "created", ["c"]),  # beats a null created time
    (7, D[2] + 5 * H, D[2] + 5 * H, 0.7, 70, "seven", ["s"]),
    (1, D[1] + 9 * H, D[1] + 9 * H, 0.05, 9, "older", None),  # superseded
    (8, D[1] + 3 * H, D[1] + 3 * H, float("nan"), 80, "", ["", "b"]),
]
STATS_RANGE = (D[4], NOW - H)


def _pairs(rows: list[tuple[int, str, datetime, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series([r[0] for r in rows], dtype="int64"),
            "customer_id": [r[1] for r in rows],
            "event_timestamp": pd.to_datetime([r[2] for r in rows], utc=True),
            "rides_count": pd.Series([r[3] for r in rows], dtype="int32"),
        }
    )


PAIRS_1 = [(1, "a", D[1] + H, 1), (1, "b", D[1] + H, 2), (2, "a", D[1] + 2 * H, 3)]
PAIRS_2 = [(1, "a", D[1] + H, 10), (2, "a", D[1] + H, 4), (3, "c", D[1] + 3 * H, 5)]
"""(1, a) ties with PAIRS_1 on event time: the later ingestion wins; (2, a) is older."""
PAIRS_3 = [(1, "b", D[1] + 5 * H, 20), (2, "a", D[1], 30), (4, "d", D[1], 40)]
"""Ingested after application A: newer, older than stored, new."""


def _numbers(keys: range, event: datetime, value: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series(list(keys), dtype="int64"),
            "event_timestamp": pd.to_datetime([event] * len(keys), utc=True),
            "v": pd.Series([value] * len(keys), dtype="int64"),
        }
    )


MIXED_OLD = D[1] + H
MIXED_NEW = D[1] + 2 * H
MIXED_SPLIT = D[1] + 90 * timedelta(minutes=1)
BIG_ROWS = 300_000


def _write_plain(folder: Path) -> None:
    """Parquet files written by another tool: no ingestion ids, null keys and event times."""
    folder.mkdir(parents=True)
    t = [D[1] + i * H for i in range(5)]
    first = pa.table(
        {
            "driver_id": pa.array([1, None, 2, 2, 3], pa.int64()),
            "event_timestamp": pa.array([t[0], t[0], None, t[1], t[2]], pa.timestamp("us", "UTC")),
            "score": pa.array([1.5, 2.5, 3.5, 4.5, 5.5], pa.float32()),
        }
    )
    second = pa.table(
        {
            "driver_id": pa.array([1, 3, 4], pa.int64()),
            "event_timestamp": pa.array([t[3], t[1], t[4]], pa.timestamp("ns", "UTC")),
            "score": pa.array([6.5, None, 7.5], pa.float32()),
        }
    )
    pq.write_table(first, folder / "part-a.parquet")
    pq.write_table(second, folder / "part-b.parquet")


def _write_bad(folder: Path) -> Path:
    folder.mkdir(parents=True)
    good = pa.table(
        {
            "driver_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([D[1]], pa.timestamp("us", "UTC")),
            "score": pa.array([1.0], pa.float32()),
        }
    )
    bad = good.set_column(2, "score", pa.array(["abc"]))
    pq.write_table(good, folder / "good.parquet")
    pq.write_table(bad, folder / "bad.parquet")
    return folder / "bad.parquet"


@dataclass
class Workspace:
    root: Path
    registry_url: str
    spark: str
    """The project the Spark jobs run in."""
    local: str
    """The project of the local engine's twin jobs (same definitions, same sources)."""
    tables: dict[str, FeatureTable]
    redis: Client
    """A client on project ``spark`` with the standalone Redis store and the DuckDB store."""
    bad_file: Path


def _settings_file(
    root: Path,
    name: str,
    project: str,
    registry: str,
    online: Mapping[str, Any],
    engine: Mapping[str, Any],
) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "registry": registry,
                "online_store": dict(online),
                "offline_store": {"type": "duckdb"},
                "engine": dict(engine),
            }
        )
    )
    return path


def _engine_config(master: str, root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "type": "spark",
        "master": master,
        "conf": dict(SPARK_TEST_CONF),
        "python": os.environ.get("POTLUCK_TEST_SPARK_PYTHON") or sys.executable,
        "progress_interval": 0.5,
        "log_dir": str(root / "logs"),
        **extra,
    }


def _client(path: Path) -> Client:
    return Client(settings=load_settings(path))


def _context(client: Client) -> JobContext:
    return JobContext(client._registry, client._offline(), client._online())


class Actor(threading.Thread):
    """Runs ``action`` once ``job`` is RUNNING; keeps what went wrong for the test to raise."""

    def __init__(self, job: SparkJob, action: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.job, self.action = job, action
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + WAIT
            while self.job.record().status is not JobStatus.RUNNING:
                assert not self.job.record().status.is_terminal, self.job.record()
                assert time.monotonic() < deadline, "the job never ran"
                time.sleep(0.1)
            self.action()
        except BaseException as exc:  # noqa: BLE001 - raised again by the test
            self.error = exc

    def result(self) -> None:
        self.join(WAIT)
        if self.error is not None:
            raise self.error


@dataclass
class Launched:
    a: list[SparkJob]
    b: list[SparkJob]
    e: list[SparkJob]
    b_cluster: Client
    e_sqlite: Client
    actors: dict[str, Actor]
    local_mixed_new: list[Job]


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, spark_master: str, redis_url: str
) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("spark_engine")
    registry = f"sqlite:///{root / 'registry.db'}"
    spark_project, local_project = f"s_{uuid.uuid4().hex[:8]}", f"l_{uuid.uuid4().hex[:8]}"
    tables = _tables(root)
    online = {"type": "redis", "url": redis_url}
    engine = _engine_config(spark_master, root)
    redis = _client(_settings_file(root, "redis", spark_project, registry, online, engine))
    local = _client(
        _settings_file(root, "local", local_project, registry, online, {"type": "local"})
    )
    # Written before apply: apply makes these folders tables whose first version holds them.
    _write_plain(root / "data" / "plain")
    bad = _write_bad(root / "data" / "bad")
    for client in (redis, local):
        client.apply([DRIVER, CUSTOMER, *tables.values()])
    redis.ingest("stats", _stats_rows(STATS_1))
    redis.ingest("stats", _stats_rows(STATS_2))
    redis.ingest("pairs", _pairs(PAIRS_1))
    redis.ingest("pairs", _pairs(PAIRS_2))
    redis.ingest("mixed", _numbers(range(200), MIXED_OLD, 1))
    redis.ingest("mixed", _numbers(range(100), MIXED_NEW, 2))
    redis.ingest("big", _numbers(range(BIG_ROWS), D[1], 7))
    local.close()
    yield Workspace(root, registry, spark_project, local_project, tables, redis, bad)
    redis.close()


A_SPECS = [
    ("stats", {"start": STATS_RANGE[0], "end": STATS_RANGE[1]}),
    ("pairs", {"since_last": True}),
    ("plain", {}),
    ("bad", {}),
]
A_CONF = SPARK_TEST_CONF | {"spark.task.maxFailures": "4"}
"""Application A lets Spark retry a failed task, as on a real cluster: a data error must not."""


def _event_log(root: Path) -> dict[str, str]:
    folder = root / "events"
    folder.mkdir(exist_ok=True)
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": folder.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }


def _task_attempts(root: Path, application_id: str) -> list[tuple[int, str]]:
    """(attempt number, end reason) of each task the application ran, from its event log."""
    (log,) = (root / "events").glob(f"{application_id}*")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return [
        (e["Task Info"]["Attempt"], e["Task End Reason"]["Reason"])
        for e in events
        if e["Event"] == "SparkListenerTaskEnd"
    ]


@pytest.fixture(scope="module")
def launched(
    workspace: Workspace, spark_master: str, redis_cluster_nodes: list[str]
) -> Iterator[Launched]:
    """Launch applications A, B and E at once, with the actors that act on their jobs."""
    w = workspace
    a_engine = plugins.create(
        plugins.ENGINES, _engine_config(spark_master, w.root, conf=A_CONF | _event_log(w.root))
    )
    a = a_engine.submit_many(
        [JobSpec(project=w.spark, table=t, **kw) for t, kw in A_SPECS], _context(w.redis)
    )
    cluster = _client(
        _settings_file(
            w.root,
            "cluster",
            w.spark,
            w.registry_url,
            {"type": "redis_cluster", "startup_nodes": redis_cluster_nodes},
            {"type": "local"},
        )
    )
    # Mixed: the local engine loads the old rows first; the Spark job loads all of them while a
    # second local job loads the new ones.
    local_engine = LocalEngine(LocalEngineConfig())
    old = JobSpec(project=w.spark, table="mixed", start=D[2], end=MIXED_SPLIT)
    local_engine.submit(old, _context(cluster)).wait(60)
    b_engine = SparkEngine.config_class.model_validate(
        _engine_config(spark_master, w.root, heartbeat_timeout="30s")
    )
    b = SparkEngine(b_engine).submit_many(
        [
            JobSpec(project=w.spark, table="stats", start=STATS_RANGE[0], end=STATS_RANGE[1]),
            JobSpec(project=w.spark, table="mixed"),
            JobSpec(project=w.spark, table="big"),
        ],
        _context(cluster),
    )
    local_mixed_new: list[Job] = []
    new = JobSpec(project=w.spark, table="mixed", start=MIXED_SPLIT, end=NOW)
    sqlite = _client(
        _settings_file(
            w.root,
            "sqlite",
            w.spark,
            w.registry_url,
            {"type": "sqlite", "path": str(w.root / "online.db")},
            {"type": "local"},
        )
    )
    e_config = SparkEngine.config_class.model_validate(
        _engine_config("local[2]", w.root, cancel_timeout=2.0)
    )
    e = SparkEngine(e_config).submit_many(
        [
            JobSpec(project=w.spark, table="stats", start=STATS_RANGE[0], end=STATS_RANGE[1]),
            JobSpec(project=w.spark, table="big"),
        ],
        _context(sqlite),
    )
    actors = {
        "mixed": Actor(
            b[1],
            lambda: local_mixed_new.append(local_engine.submit(new, _context(cluster)).wait(60)),
        ),
        "kill": Actor(
            b[2], lambda: os.killpg(int(b[2].launch_handle.submission_id), signal.SIGKILL)
        ),
        "hang": Actor(e[1], lambda: _hang_and_cancel(e[1])),
    }
    for actor in actors.values():
        actor.start()
    yield Launched(a, b, e, cluster, sqlite, actors, local_mixed_new)
    for jobs in (a, b, e):
        for job in jobs:
            if job.application.status() is LaunchStatus.RUNNING:
                job.application.launcher.cancel(job.application.handle)
    cluster.close()
    sqlite.close()


def _hang_and_cancel(job: SparkJob) -> None:
    os.killpg(int(job.launch_handle.submission_id), signal.SIGSTOP)
    job.cancel()


def _ended(job: SparkJob) -> LaunchStatus:
    """Wait for the job's application to end; return how it ended."""
    deadline = time.monotonic() + 120
    while (status := job.application.status()) is LaunchStatus.RUNNING:
        assert time.monotonic() < deadline, "the application did not end"
        time.sleep(0.5)
    return status


def _finished(job: SparkJob) -> Job:
    try:
        return job.wait(WAIT)
    except JobError:
        return job.record()


@pytest.fixture(scope="module")
def local_twins(workspace: Workspace) -> dict[str, Job]:
    """The local engine's runs of application A's jobs, in the local project."""
    w = workspace
    client = _client(w.root / "local.yaml")
    engine = LocalEngine(LocalEngineConfig())
    twins = {}
    for table, options in A_SPECS:
        job = engine.submit(JobSpec(project=w.local, table=table, **options), _context(client))
        twins[table] = _finished_local(job)
    client.close()
    return twins


def _finished_local(job: Any) -> Job:
    try:
        return job.wait(120)
    except JobError:
        return job.record()


def _outcome(job: Job) -> tuple[Any, ...]:
    return (
        job.status,
        job.stats,
        job.max_event_timestamp_us,
        job.max_ingestion_id,
        job.rows_total,
        job.source_version,
        job.since_version,
    )


def _contents(store: OnlineStore, project: str, table: FeatureTable) -> list[dict[str, Any]]:
    rows = KEYS[table.name]
    keys = encode_entity_keys(
        project,
        table.name,
        {e: pa.array([r[e] for r in rows], to_arrow_type(TYPES[e])) for e in table.entities},
        {e: TYPES[e] for e in table.entities},
    )
    features = [f.name for f in table.features]
    return store.read(project, table, keys.to_pylist(), features).to_pylist()


def _local_contents(workspace: Workspace, table: str) -> list[dict[str, Any]]:
    return _contents(workspace.redis._online(), workspace.local, workspace.tables[table])


# ---- application A: one application, four jobs, equal to the local engine -------------------


def test_a_ranged_load_equals_the_local_engine(
    workspace: Workspace, launched: Launched, local_twins: dict[str, Job]
) -> None:
    done = _finished(launched.a[0])
    assert _outcome(done) == _outcome(local_twins["stats"])
    # 10 rows in range (driver 4's partition day is not read, driver 5 is after the end): 4
    # superseded (drivers 1, 1, 2, 6), 1 past max_age (driver 3), 5 written.
    assert done.stats == JobStats(rows_read=10, rows_written=5, rows_skipped=5, rows_rejected=0)
    assert (done.engine, done.application_id, done.log_location) == (
        "spark",
        launched.a[0].launch_handle.application_id,
        launched.a[0].log_location,
    )
    assert done.application_id is not None and done.application_id.startswith("app-")
    spark_rows = _contents(workspace.redis._online(), workspace.spark, workspace.tables["stats"])
    assert spark_rows == _local_contents(workspace, "stats")
    assert [r["trips"] for r in spark_rows] == [12, 20, None, None, None, 61, 70, 80]
    assert [r["tags"] for r in spark_rows][:2] == [["y", "z"], None]


def test_a_since_last_composite_keys_and_ingestion_ties_equal_the_local_engine(
    workspace: Workspace, launched: Launched, local_twins: dict[str, Job]
) -> None:
    done = _finished(launched.a[1])
    assert _outcome(done) == _outcome(local_twins["pairs"])
    assert done.stats == JobStats(rows_read=6, rows_written=4, rows_skipped=2, rows_rejected=0)
    rows = _contents(workspace.redis._online(), workspace.spark, workspace.tables["pairs"])
    assert rows == _local_contents(workspace, "pairs")
    assert [r["rides"] for r in rows] == [10, 2, 3, 5, None]


def test_a_plain_folder_rejects_null_keys_and_times_like_the_local_engine(
    workspace: Workspace, launched: Launched, local_twins: dict[str, Job]
) -> None:
    done = _finished(launched.a[2])
    assert _outcome(done) == _outcome(local_twins["plain"])
    assert done.stats == JobStats(rows_read=8, rows_written=4, rows_skipped=2, rows_rejected=2)
    rows = _contents(workspace.redis._online(), workspace.spark, workspace.tables["plain"])
    assert rows == _local_contents(workspace, "plain")
    assert [r["score"] for r in rows] == [6.5, 4.5, 5.5, 7.5]


def test_a_bad_file_fails_its_job_naming_the_file(
    workspace: Workspace, launched: Launched, local_twins: dict[str, Job]
) -> None:
    done = _finished(launched.a[3])
    assert done.status is JobStatus.FAILED
    assert done.error == (
        f"file {str(workspace.bad_file)!r} column 'score' holds string values, which cannot "
        "be read as feature score (FLOAT); rewrite the file with that type or change the "
        "definition"
    )
    assert local_twins["bad"].status is JobStatus.FAILED
    assert str(workspace.bad_file) in str(local_twins["bad"].error)
    with pytest.raises(JobError, match="^job .* failed: file "):
        launched.a[3].wait(1)
    # The last job failed: the application ends with an error status.
    assert _ended(launched.a[3]) is LaunchStatus.FAILED
    # The error was found before the write: the good file's row was not written either.
    bad = workspace.tables["bad"]
    key = encode_entity_keys(
        workspace.spark,
        "bad",
        {"driver_id": pa.array([1], pa.int64())},
        {"driver_id": TYPES["driver_id"]},
    ).to_pylist()
    stored = workspace.redis._online().read(workspace.spark, bad, key, ["score"]).to_pylist()
    assert stored == [{"score": None, "event_timestamp": None}]
    # No task of the application failed, so none was retried (it may be, 4 times): each ran once.
    attempts = _task_attempts(workspace.root, str(done.application_id))
    assert len(attempts) >= 8  # each load reads, then writes
    assert set(attempts) == {(0, "Success")}


# ---- application C: potluck ingest-online --since-last, after A ---------------------------------


def test_c_since_last_after_a_spark_job_reads_only_new_versions(
    workspace: Workspace, launched: Launched
) -> None:
    w = workspace
    first = _finished(launched.a[1])
    assert first.status is JobStatus.SUCCEEDED
    # Application E's hung driver is killed with a logged warning, which this command's
    # captured stderr would also get if the kill happened while it runs.
    launched.actors["hang"].result()
    _ended(launched.e[1])
    w.redis.ingest("pairs", _pairs(PAIRS_3))
    result = CliRunner().invoke(
        app,
        [
            "--config",
            str(w.root / "redis.yaml"),
            "ingest-online",
            "pairs",
            "--since-last",
            "-o",
            "json",
        ],
    )
    assert (result.exit_code, result.stderr) == (0, "")
    record = json.loads(result.stdout)
    assert {k: record[k] for k in ("engine", "status", "since_version", "source_version")} == {
        "engine": "spark",
        "status": "SUCCEEDED",
        "since_version": first.source_version,
        "source_version": (first.source_version or 0) + 1,
    }
    assert [record[k] for k in ("rows_read", "rows_written", "rows_skipped", "rows_rejected")] == [
        3,
        2,
        1,
        0,
    ]
    assert record["application_id"].startswith("app-")
    assert Path(record["log_location"]).is_file()
    rows = _contents(w.redis._online(), w.spark, w.tables["pairs"])
    assert [r["rides"] for r in rows] == [10, 20, 3, 5, 40]
    # The Spark job moved the watermark for the local engine too: nothing new is left.
    spec = JobSpec(project=w.spark, table="pairs", since_last=True)
    after = LocalEngine(LocalEngineConfig()).submit(spec, _context(w.redis)).wait(60)
    assert (after.since_version, after.stats) == (record["source_version"], JobStats())


# ---- application B: Redis Cluster, interleaving, a killed driver -------------------------------


def test_b_ranged_load_into_redis_cluster_equals_the_local_engine(
    workspace: Workspace, launched: Launched, local_twins: dict[str, Job]
) -> None:
    done = _finished(launched.b[0])
    assert _outcome(done) == _outcome(local_twins["stats"])
    cluster = _contents(launched.b_cluster._online(), workspace.spark, workspace.tables["stats"])
    assert cluster == _local_contents(workspace, "stats")


def test_b_spark_and_local_jobs_interleave_on_one_table_newer_wins(
    workspace: Workspace, launched: Launched
) -> None:
    done = _finished(launched.b[1])
    launched.actors["mixed"].result()
    (local_new,) = launched.local_mixed_new
    assert done.status is local_new.status is JobStatus.SUCCEEDED
    # Spark read 300 rows (200 old, 100 new), kept the newest per key; the old rows equal what
    # the first local job stored. Whoever wrote the new rows first, they were written once.
    assert (done.stats.rows_read, done.stats.rows_rejected) == (300, 0)
    assert done.stats.rows_written + local_new.stats.rows_written == 100
    assert done.stats.rows_skipped == 300 - done.stats.rows_written
    rows = _contents(launched.b_cluster._online(), workspace.spark, workspace.tables["mixed"])
    assert [r["v"] for r in rows] == [2] * 100 + [1] * 100
    micros = int((MIXED_NEW - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * 1e6)
    assert done.max_event_timestamp_us == micros


# ---- application E: SQLite with local[2]; a hung driver killed on cancel -----------------------


def test_e_local_master_loads_the_embedded_sqlite_store(
    workspace: Workspace, launched: Launched, local_twins: dict[str, Job]
) -> None:
    done = _finished(launched.e[0])
    assert _outcome(done) == _outcome(local_twins["stats"])
    assert done.application_id is not None and done.application_id.startswith("local-")
    rows = _contents(launched.e_sqlite._online(), workspace.spark, workspace.tables["stats"])
    assert rows == _local_contents(workspace, "stats")


def test_e_cancelling_a_hung_driver_kills_the_application(launched: Launched) -> None:
    launched.actors["hang"].result()
    job = launched.e[1]
    done = job.wait(120)
    assert (done.status, done.cancel_requested, done.error) == (JobStatus.CANCELLED, True, None)
    assert _ended(job) is LaunchStatus.KILLED


# ---- application D: potluck jobs cancel from another client ------------------------------------


def test_d_jobs_cancel_stops_the_application(workspace: Workspace, launched: Launched) -> None:
    w = workspace
    for job in launched.a:
        _finished(job)  # a core of the cluster is free again
    job = w.redis.start_offline_to_online_ingestion("big")
    assert isinstance(job, SparkJob)
    deadline = time.monotonic() + WAIT
    while job.record().status is not JobStatus.RUNNING:
        assert time.monotonic() < deadline and not job.record().status.is_terminal
        time.sleep(0.1)
    result = CliRunner().invoke(
        app, ["--config", str(w.root / "redis.yaml"), "jobs", "cancel", job.id]
    )
    assert result.exit_code == 0, result.stderr
    done = job.wait(120)
    assert (done.status, done.cancel_requested, done.error) == (JobStatus.CANCELLED, True, None)
    stats = done.stats
    assert stats.rows_read == stats.rows_written + stats.rows_skipped + stats.rows_rejected
    assert _ended(job) is LaunchStatus.SUCCEEDED


# ---- refused at submit ------------------------------------------------------------------------


def test_sqlite_online_store_with_a_cluster_master_is_refused_at_submit(
    workspace: Workspace, spark_master: str
) -> None:
    w = workspace
    path = _settings_file(
        w.root,
        "refused",
        f"r_{uuid.uuid4().hex[:8]}",
        w.registry_url,
        {"type": "sqlite", "path": str(w.root / "refused.db")},
        _engine_config(spark_master, w.root),
    )
    client = _client(path)
    client.apply([DRIVER, w.tables["stats"]])
    with pytest.raises(ConfigError) as caught:
        client.start_offline_to_online_ingestion("stats")
    assert caught.value.message == (
        f"engine.master {spark_master!r} cannot load the embedded SQLite online store "
        f"({w.root / 'refused.db'}): executors on a cluster cannot write a file of this machine; "
        "use a Redis online store (online_store: {type: redis, url: ...}) or engine.master: "
        "local[N]"
    )
    assert list_jobs(client._registry, client.project) == []
    client.close()


# ---- last: the lost rule takes the heartbeat timeout to act ---------------------------------


def test_b_a_killed_driver_reads_lost(launched: Launched) -> None:
    launched.actors["kill"].result()
    job = launched.b[2]
    running = job.record()
    deadline = time.monotonic() + 120
    while not job.record().status.is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    seen = job.record()
    assert seen.status is JobStatus.FAILED
    assert seen.error == lost_error(running.updated_at or running.created_at)
    with pytest.raises(JobError, match="lost: no heartbeat since"):
        job.wait(1)
    assert _ended(job) is LaunchStatus.KILLED
