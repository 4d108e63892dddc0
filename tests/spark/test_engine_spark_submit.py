"""The Spark engine before and around the cluster: settings, refusals at submit, the launcher.

No Spark cluster is needed: each test stops before an application runs, or runs the real
``spark-submit`` in a way that fails before any JVM starts.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import load_settings
from potluck.errors import ConfigError, JobError, UnavailableError, ValidationError
from potluck.ingestion.engines.base import JobContext
from potluck.ingestion.engines.spark import SparkEngine, SparkEngineConfig, SparkTableConfig
from potluck.ingestion.jobs import JobSpec, JobStatus, list_jobs
from potluck.ingestion.launchers.base import SparkApplication
from potluck.ingestion.launchers.standalone import StandaloneLauncher, default_spark_submit
from potluck.ingestion.spark_jobs.load import NewestPerKey, keyed_batch
from potluck.offline.spark.settings import SparkSettings
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


def test_rows_with_a_null_key_or_time_get_a_null_key(tmp_path: Path) -> None:
    table = _table(tmp_path)
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    rows = pa.RecordBatch.from_pydict(
        {
            "driver_id": pa.array([1, None, 3], pa.int64()),
            "event_timestamp": pa.array([when, when, None], TIMESTAMP_ARROW_TYPE),
            "created_timestamp": pa.array([None, None, None], TIMESTAMP_ARROW_TYPE),
            "ingestion_id": pa.array(["i", "i", "i"]),
            "trips": pa.array([1, 2, 3], pa.int64()),
        }
    )
    keyed = keyed_batch(rows, "p", table, {"driver_id": ValueType.INT64})
    assert keyed.schema.names == [
        "entity_key",
        "event_timestamp",
        "created_timestamp",
        "ingestion_id",
        "trips",
    ]
    assert keyed.column(0).to_pylist() == [
        encode_entity_key("p", "trips", {"driver_id": 1}, {"driver_id": ValueType.INT64}),
        None,
        None,
    ]
    assert keyed.column(4).to_pylist() == [1, 2, 3]


def test_timeouts_are_seconds_or_durations_as_text() -> None:
    config = SparkEngineConfig.model_validate({"heartbeat_timeout": 2.5, "start_timeout": "10m"})
    assert (config.heartbeat_timeout, config.start_timeout) == (
        timedelta(seconds=2.5),
        timedelta(minutes=10),
    )
