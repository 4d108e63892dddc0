"""The Spark engine before and around the cluster: settings, refusals at submit, the launcher.

No Spark cluster is needed: each test stops before an application runs, or runs the real
``spark-submit`` in a way that fails before any JVM starts.
"""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType, plugins
from potluck.config import load_settings
from potluck.errors import ConfigError, JobError, UnavailableError, ValidationError
from potluck.ingestion.engines.base import JobContext
from potluck.ingestion.engines.spark import SparkEngine, SparkEngineConfig, SparkTableConfig
from potluck.ingestion.jobs import JobSpec, JobStats, JobStatus, list_jobs
from potluck.ingestion.launchers.base import SparkApplication
from potluck.ingestion.launchers.standalone import StandaloneLauncher, default_spark_submit
from potluck.ingestion.offline_to_online import prepare_batch
from potluck.ingestion.spark_jobs.load import (
    NewestPerKey,
    prepare_rows,
    prepared_schema,
    write_rows,
)
from potluck.offline.spark.settings import SparkSettings
from potluck.online.base import WriteMode
from potluck.online.codec import encode_entity_key
from potluck.types import TIMESTAMP_ARROW_TYPE

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def _table(root: Path, name: str = "trips") -> FeatureTable:
    return FeatureTable(
        name=name,
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        batch_source=FileSource(
            path=str(root / "data" / name), event_timestamp_column="event_timestamp"
        ),
    )


def _write_config(root: Path, engine: dict[str, Any], online: dict[str, Any] | None = None) -> Path:
    path = root / "potluck.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "project": f"p_{uuid.uuid4().hex[:8]}",
                "registry": "sqlite:///registry.db",
                "online_store": online or {"type": "redis", "url": "redis://127.0.0.1:1/0"},
                "engine": {"type": "spark", "log_dir": str(root / "logs"), **engine},
            }
        )
    )
    return path


@pytest.fixture()
def client_for(tmp_path: Path) -> Iterator[Any]:
    made: list[Client] = []

    def make(engine: dict[str, Any], online: dict[str, Any] | None = None) -> Client:
        client = Client(settings=load_settings(_write_config(tmp_path, engine, online)))
        client.apply([DRIVER, _table(tmp_path), _table(tmp_path, "rides")])
        frame = pd.DataFrame(
            {
                "driver_id": pd.Series([1, 2], dtype="int64"),
                "event_timestamp": pd.to_datetime([datetime.now(timezone.utc)] * 2, utc=True),
                "trips": pd.Series([3, 4], dtype="int64"),
            }
        )
        client.ingest("trips", frame)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (
            {"master": "yarn"},
            "invalid setting 'engine.master' = 'yarn': the spark engine submits to "
            "spark://HOST:PORT (a standalone cluster) or local[N]; other masters have no "
            "launcher yet",
        ),
        (
            {"executor_memory": "2 GB"},
            "invalid setting 'engine.executor_memory' = '2 GB': expected a whole number and a "
            "unit k, m, g or t, as Spark reads spark.executor.memory (512m, 2g, 1536m, 1t)",
        ),
        (
            {"tables": {"trips": {"executor_cores": 0}}},
            "invalid setting 'engine.tables.trips.executor_cores' = 0: input should be greater "
            "than or equal to 1",
        ),
        (
            {"tables": {"Trips": {"partitions": 2}}},
            "invalid setting 'engine.tables' = {'Trips': {'partitions': 2}}: 'Trips' is not a "
            "feature table name ([a-z_][a-z0-9_]*)",
        ),
        (
            {"start_timeout": "soon"},
            "invalid setting 'engine.start_timeout' = 'soon': 'soon' is not a duration; use "
            "seconds or text such as 60s, 5m, 1h",
        ),
        (
            {"progress_interval": 0},
            "invalid setting 'engine.progress_interval' = 0: input should be greater than 0",
        ),
    ],
)
def test_engine_settings_are_checked_when_settings_load(
    tmp_path: Path, engine: dict[str, Any], message: str
) -> None:
    path = _write_config(tmp_path, engine)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.message == f"{message} (read from {path})"


def test_a_table_overrides_the_engine_settings_it_sets() -> None:
    config = SparkEngineConfig(
        master="spark://127.0.0.1:7077",
        conf={"spark.executor.memory": "512m", "spark.eventLog.enabled": "false"},
        executor_memory="1g",
        partitions=8,
        tables={
            "trips": SparkTableConfig(executor_memory="3g", executor_cores=2),
            "rides": SparkTableConfig(partitions=2),
        },
    )
    assert config.table_settings("trips") == SparkTableConfig(
        executor_memory="3g", executor_cores=2, partitions=8
    )
    assert config.table_settings("rides") == SparkTableConfig(executor_memory="1g", partitions=2)
    assert config.table_settings("other") == SparkTableConfig(executor_memory="1g", partitions=8)
    engine = SparkEngine(config)
    assert engine.application_settings(["trips"]) == SparkSettings(
        master="spark://127.0.0.1:7077",
        conf={
            "spark.executor.memory": "3g",
            "spark.eventLog.enabled": "false",
            "spark.executor.cores": "2",
        },
    )
    assert engine.application_settings(["rides", "other"]).conf == {
        "spark.executor.memory": "1g",
        "spark.eventLog.enabled": "false",
    }
    with pytest.raises(ValidationError) as caught:
        engine.application_settings(["rides", "trips"])
    assert caught.value.message == (
        "feature tables 'rides' and 'trips' differ in executor_memory (1g and 3g), a setting "
        "of the whole application; submit them separately"
    )


def test_spark_submit_gets_the_master_the_name_and_every_property(tmp_path: Path) -> None:
    launcher = StandaloneLauncher()
    settings = SparkSettings(
        master="spark://10.0.0.5:7077", conf={"spark.executor.memory": "3g"}, python="/opt/py"
    )
    command = launcher.command(
        SparkApplication("potluck x", "/app.py", ("/spec.json",), settings, str(tmp_path / "l"))
    )
    assert command[:8] == [
        default_spark_submit(),
        "--master",
        "spark://10.0.0.5:7077",
        "--deploy-mode",
        "client",
        "--name",
        "potluck x",
        "--conf",
    ]
    assert command[-2:] == ["/app.py", "/spec.json"]
    confs = [command[i + 1] for i, part in enumerate(command) if part == "--conf"]
    assert "spark.executor.memory=3g" in confs
    assert "spark.sql.session.timeZone=UTC" in confs
    assert not any(c.startswith("spark.driver.host=") for c in confs)  # not a loopback master


# ---- refused at submit, before any record or process ------------------------------------------


def test_an_unreachable_master_fails_at_submit(client_for: Any) -> None:
    port = _closed_port()
    client = client_for({"master": f"spark://127.0.0.1:{port}"})
    with pytest.raises(UnavailableError) as caught:
        client.start_offline_to_online_ingestion("trips")
    assert caught.value.message == (
        f"the Spark master spark://127.0.0.1:{port} cannot be reached (127.0.0.1:{port}: "
        "Connection refused); start it, or fix engine.master"
    )
    assert list_jobs(client._registry, client.project) == []


def test_a_missing_spark_submit_fails_at_submit(client_for: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-spark" / "spark-submit")
    client = client_for({"master": "local[1]", "spark_submit": missing})
    with pytest.raises(ConfigError) as caught:
        client.start_offline_to_online_ingestion("trips")
    assert caught.value.message == (
        f"engine.spark_submit {missing!r} is not an executable file; set engine.spark_submit "
        "to the path of spark-submit (by default the one of the pyspark package is used)"
    )
    assert list_jobs(client._registry, client.project) == []


def test_an_in_memory_registry_cannot_be_shared_with_the_driver(tmp_path: Path) -> None:
    settings = load_settings(_write_config(tmp_path, {"master": "local[1]"}))
    settings = settings.model_copy(update={"registry": "sqlite:///:memory:"})
    client = Client(settings=settings)
    client.apply([DRIVER, _table(tmp_path)])
    with pytest.raises(ConfigError) as caught:
        client.start_offline_to_online_ingestion("trips")
    assert caught.value.message == (
        "the spark engine's driver runs in a process of its own and must open the registry "
        "itself: use a SQLite file or PostgreSQL (registry), or a Core service (core_url)"
    )
    client.close()


def test_tables_with_different_executor_settings_cannot_share_an_application(
    client_for: Any,
) -> None:
    client = client_for({"master": "local[1]", "tables": {"rides": {"executor_cores": 2}}})
    engine = client._job_engine()
    assert isinstance(engine, SparkEngine)
    context = JobContext(client._registry, client._offline(), client._online())
    specs = [JobSpec(project=client.project, table=t) for t in ("trips", "rides")]
    with pytest.raises(ValidationError, match="differ in executor_cores"):
        engine.submit_many(specs, context)
    with pytest.raises(ValidationError, match="at least one job"):
        engine.submit_many([], context)
    assert list_jobs(client._registry, client.project) == []


# ---- an application that cannot start ----------------------------------------------------------


def test_an_application_that_cannot_start_fails_its_job_with_the_log_line(
    client_for: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = client_for({"master": "local[1]"})
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))  # spark-submit fails at once
    job = client.start_offline_to_online_ingestion("trips")
    with pytest.raises(JobError) as caught:
        job.wait(60)
    record = job.record()
    spark_class = Path(default_spark_submit()).with_name("spark-class")
    assert (record.status, record.engine, record.application_id) == (
        JobStatus.FAILED,
        "spark",
        None,
    )
    assert record.error is not None
    assert record.error.startswith(
        "the Spark application ended (FAILED) before its driver took the job; see its log "
        f"{record.log_location}: {spark_class}: line "
    )
    assert record.error.endswith(f"{tmp_path / 'no-java'}/bin/java: No such file or directory")
    assert caught.value.message == f"job {job.id} failed: {record.error}"
    assert (record.source_version, record.rows_total) == (1, 2)
    # The driver never read its job spec: it is deleted with the application's end.
    assert sorted(p.suffix for p in (tmp_path / "logs").iterdir()) == [".log"]


# ---- the partition steps, on Arrow batches ------------------------------------------------------


def test_newest_per_key_follows_keys_across_batches() -> None:
    def batch(keys: list[bytes], events: list[int]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(
            {
                "entity_key": pa.array(keys, pa.binary()),
                "event_timestamp": pa.array(events, pa.int64()),
            }
        )

    newest = NewestPerKey()
    out = [
        newest.push(batch([b"a", b"a", b"b"], [1, 2, 1])),
        newest.push(batch([b"b", b"b"], [2, 3])),
        newest.push(batch([], [])),
        newest.push(batch([b"c"], [1])),
    ]
    last = newest.flush()
    assert [b.to_pydict()["event_timestamp"] for b in out] == [[2], [], [], [3]]
    assert last is not None and last.to_pydict() == {"entity_key": [b"c"], "event_timestamp": [1]}
    assert newest.flush() is None


WHEN = datetime(2024, 5, 1, tzinfo=timezone.utc)
INT64_KEY = {"driver_id": ValueType.INT64}


def _read_rows(rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    """Rows as a read task reads them: (driver_id, event hour, created hour, trips)."""

    def hours(values: list[int | None]) -> pa.Array:
        return pa.array(
            [None if v is None else WHEN + timedelta(hours=v) for v in values],
            TIMESTAMP_ARROW_TYPE,
        )

    return pa.RecordBatch.from_pydict(
        {
            "driver_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": hours([r[1] for r in rows]),
            "created_timestamp": hours([r[2] for r in rows]),
            "ingestion_id": pa.array([f"i{r[3]}" for r in rows], pa.string()),
            "trips": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


def _key(driver: int) -> bytes:
    return encode_entity_key("p", "trips", {"driver_id": driver}, INT64_KEY)


def test_a_read_task_keeps_the_newest_row_per_key_of_each_chunk_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    table = _table(tmp_path)
    batches = [
        _read_rows([(1, 1, None, 10), (1, 2, None, 11), (None, 2, None, 12), (2, None, 0, 13)]),
        _read_rows([(2, 3, 1, 20), (2, 3, 2, 21), (3, 9, None, 30), (1, 0, None, 14)]),
        _read_rows([(1, 4, None, 15)]),
    ]
    out = list(
        prepare_rows(
            iter(batches),
            project="p",
            table=table,
            entity_types=INT64_KEY,
            start=None,
            end=WHEN + timedelta(hours=5),
            chunk_rows=5,
        )
    )
    assert [b.schema.names for b in out] == [[*prepared_schema(table).names]] * 3
    rows = pa.Table.from_batches(out).to_pylist()
    # Out of range, not read: driver 3 (after the end) and driver 2's null event time. Chunk 1
    # (the first two batches, 6 rows read, 1 rejected): drivers 1 and 2, the newest by event
    # then created time. Chunk 2: driver 1 again (the write step keeps the newer of the two).
    # The last row holds the task's counts.
    assert [(r["entity_key"], r["trips"], r["potluck_read_counts"]) for r in rows] == [
        (_key(1), 11, None),
        (_key(2), 21, None),
        (_key(1), 15, None),
        (
            None,
            None,
            {"rows_read": 7, "rows_skipped": 3, "rows_rejected": 1, "max_ingestion_id": "i21"},
        ),
    ]


KEYS_DOMAIN = st.integers(0, 4)
HOURS = st.one_of(st.none(), st.integers(0, 3))


@given(
    rows=st.lists(st.tuples(st.one_of(st.none(), KEYS_DOMAIN), HOURS, HOURS), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    chunk_rows=st.integers(1, 12),
    batch_size=st.integers(1, 6),
    start=st.one_of(st.none(), st.integers(0, 2)),
)
@settings(max_examples=60, deadline=None)
def test_newest_per_key_in_read_tasks_then_after_the_shuffle_equals_one_batch(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int | None, int | None, int | None]],
    cuts: list[int],
    chunk_rows: int,
    batch_size: int,
    start: int | None,
) -> None:
    # A row's value is a function of (key, event, created): rows tied on all three are equal.
    read = [(k, e, c, (k or 0) * 100 + (e or 0) * 10 + (c or 0)) for k, e, c in rows]
    folder = tmp_path_factory.mktemp("staged")
    table = _table(folder)
    since = None if start is None else WHEN + timedelta(hours=start)
    edges = sorted({0, len(read), *(min(c, len(read)) for c in cuts)})
    tasks = [read[a:b] for a, b in itertools.pairwise(edges)] or [read]
    prepared = [
        batch
        for task in tasks
        for batch in prepare_rows(
            iter([_read_rows(task[:2]), _read_rows(task[2:])]),
            project="p",
            table=table,
            entity_types=INT64_KEY,
            start=since,
            end=None,
            chunk_rows=chunk_rows,
        )
    ]
    # The shuffle and sortWithinPartitions(key, event, created), nulls first; one partition.
    union = pa.Table.from_batches(prepared)
    order = [
        (c, "ascending", "at_start") for c in ("entity_key", "event_timestamp", "created_timestamp")
    ]
    shuffled = union.take(pc.sort_indices(union, sort_keys=order))
    store = plugins.create(plugins.ONLINE_STORES, {"type": "sqlite", "path": str(folder / "o.db")})
    store.ensure_table("p", table)
    counts = write_rows(
        iter(shuffled.to_batches(max_chunksize=3)), store, "p", table, WriteMode.NEWER, batch_size
    )
    # The local engine, all rows in range as one batch.
    in_range = [r for r in read if start is None or (r[1] is not None and r[1] >= start)]
    expected = prepare_batch("p", table, INT64_KEY, _read_rows(in_range))
    kept = 0 if expected.rows is None else expected.rows.num_rows
    assert counts.stats() == expected.stats + JobStats(0, kept, 0, 0)
    assert counts.max_ingestion_id == expected.max_ingestion_id
    assert counts.max_event_us == expected.max_event_timestamp_us
    stored = store.read("p", table, [_key(k) for k in range(5)], ["trips"]).to_pylist()
    winners = (
        {}
        if expected.rows is None
        else {r["entity_key"]: r["trips"] for r in expected.rows.to_pylist()}
    )
    assert [r["trips"] for r in stored] == [winners.get(_key(k)) for k in range(5)]
    store.close()


def test_timeouts_are_seconds_or_durations_as_text() -> None:
    config = SparkEngineConfig.model_validate({"heartbeat_timeout": 2.5, "start_timeout": "10m"})
    assert (config.heartbeat_timeout, config.start_timeout) == (
        timedelta(seconds=2.5),
        timedelta(minutes=10),
    )
