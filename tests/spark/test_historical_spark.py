"""Training sets on a real Spark cluster: exact values, equal to the DuckDB store row for row and
type for type, staged Parquet, range reads, bad input, and the Client and CLI with
``offline_store: {type: spark}``.

One Spark session serves the module (the store of ``spark_store``; the Client's store joins it);
each test that runs the join runs it once, with many cases batched into one request.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from _spark_support import SPARK_TEST_CONF
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F  # noqa: N812 - Spark's own convention

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings
from potluck.errors import ConfigError, DataValidationError, UnavailableError, ValidationError
from potluck.notices import NoDataWarning
from potluck.offline.duckdb import DuckDBConfig, DuckDBOfflineStore
from potluck.offline.pit import FeatureRequest, build_plan, resolve_refs
from potluck.offline.spark import entities as spark_entities
from potluck.offline.spark import reading
from potluck.offline.spark import store as spark_store_module
from potluck.offline.spark.entities import EntityFile
from potluck.offline.spark.order import range_key
from potluck.offline.spark.pit import ROW, key_column
from potluck.offline.spark.session import spark_errors
from potluck.offline.spark.store import APP_NAME, SparkOfflineConfig, SparkOfflineStore

pytestmark = pytest.mark.spark

UTC = timezone.utc
US = timedelta(microseconds=1)
POTLUCK = Path(sys.executable).parent / "potluck"
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
CUSTOMER = Entity(name="customer_id", value_type=ValueType.STRING)
DRIVER_STATS = FeatureTable(
    name="driver_stats",
    entities=["driver_id"],
    features=[
        Feature(name="conv_rate", value_type=ValueType.DOUBLE),
        Feature(name="trips", value_type=ValueType.INT64),
    ],
    max_age=timedelta(hours=2),
    batch_source=FileSource(
        path="data/driver_stats",
        event_timestamp_column="event_timestamp",
        created_timestamp_column="created",
    ),
)
CUSTOMER_DRIVER = FeatureTable(
    name="customer_driver",
    entities=["customer_id", "driver_id"],
    features=[Feature(name="rating", value_type=ValueType.FLOAT)],
    batch_source=FileSource(
        path="data/customer_driver",
        event_timestamp_column="ts",
        field_mapping={"cust": "customer_id", "stars": "rating"},
        date_partition_column="day",
    ),
)
DRIVER_FLAGS = FeatureTable(
    name="driver_flags",
    entities=["driver_id"],
    features=[Feature(name="flagged", value_type=ValueType.BOOL)],
    max_age=timedelta(days=1),
    batch_source=FileSource(path="data/driver_flags", event_timestamp_column="event_timestamp"),
)
REFS = ["driver_stats:*", "customer_driver:rating", "driver_flags:flagged"]


def at(hour: int, minute: int = 0, *, day: int = 1) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A project whose sources hold ties within and across ingestions, a superseded file and a
    partition no request reaches (both made unreadable: reading either would fail)."""
    root = tmp_path_factory.mktemp("project")
    settings = Settings(registry=f"sqlite:///{root}/registry.db", root=root)
    with Client(settings=settings) as client:
        client.apply([DRIVER, CUSTOMER, DRIVER_STATS, CUSTOMER_DRIVER, DRIVER_FLAGS])
        first = client.ingest(
            "driver_stats",
            pd.DataFrame(
                {
                    "driver_id": [1, 1, 1, 1, 2],
                    "event_timestamp": [at(10), at(10), at(12), at(12), at(9)],
                    "created": [at(10, 5), at(10, 6), None, at(11), at(9)],
                    "conv_rate": [0.1, 0.2, 0.3, 0.35, 0.5],
                    "trips": [1, 2, 3, 35, 5],
                }
            ),
        )
        superseded = [p for p in first.files if p.endswith("-superseded.parquet")]
        assert len(superseded) == 1
        Path(superseded[0]).write_bytes(b"not parquet: a superseded file is never read")
        client.ingest(
            "driver_stats",
            pd.DataFrame(
                {
                    "driver_id": [1, 1],
                    "event_timestamp": [at(8), at(10)],
                    "created": [at(8), at(10, 4)],
                    "conv_rate": [0.8, 0.9],
                    "trips": [8, 9],
                }
            ),
        )
        client.ingest(
            "customer_driver",
            pd.DataFrame(
                {
                    "cust": ["c1", "c1", "c2"],
                    "driver_id": [1, 1, 1],
                    "ts": [at(8), at(11), at(9, day=2)],
                    "stars": [4.5, 3.0, 5.0],
                }
            ),
        )
        client.ingest(  # ties at (c1, 1, 11:00) with the row above: the later ingestion wins
            "customer_driver",
            pd.DataFrame({"cust": ["c1"], "driver_id": [1], "ts": [at(11)], "stars": [3.5]}),
        )
        late = client.ingest(
            "customer_driver",
            pd.DataFrame({"cust": ["c9"], "driver_id": [9], "ts": [at(1, day=9)], "stars": [1.0]}),
        )
        Path(late.files[0]).write_bytes(b"not parquet: a day no entity row reaches is never read")
        client.ingest(
            "driver_flags",
            pd.DataFrame(
                {"driver_id": [1, 2], "event_timestamp": [at(0), at(0)], "flagged": [True, True]}
            ),
        )
        client.ingest(
            "driver_flags",
            pd.DataFrame({"driver_id": [1], "event_timestamp": [at(0)], "flagged": [False]}),
        )
        yield client


@pytest.fixture(scope="module")
def spark_store(project: Client, spark_master: str) -> Iterator[SparkOfflineStore]:
    config = SparkOfflineConfig(
        master=spark_master,
        conf=SPARK_TEST_CONF,
        python=os.environ.get("POTLUCK_TEST_SPARK_PYTHON"),
        staging_location="staging",
    )
    store = SparkOfflineStore(config, root=project.settings.root)
    yield store
    store.close()


@pytest.fixture(scope="module")
def duckdb_store(project: Client) -> Iterator[DuckDBOfflineStore]:
    store = DuckDBOfflineStore(DuckDBConfig(), root=project.settings.root)
    yield store
    store.close()


def requests_for(client: Client, refs: Sequence[str]) -> tuple[FeatureRequest, ...]:
    return resolve_refs(
        refs,
        "default",
        lambda _, name: client.get_feature_table(name),
        lambda _, name: client.get_entity(name),
    )


def entity_rows() -> pa.Table:
    """Entity rows for every named case, with input columns of types Spark lacks."""
    ts = [
        at(10, 30),  # the 10:00 tie goes to the greatest created time, across ingestions
        at(10) - US,  # before the 10:00 rows: 08:00, within max_age
        at(11),  # exactly max_age after 09:00
        at(11) + US,  # max_age + 1 µs
        at(13),  # the 12:00 tie: a null created time sorts first
        at(12),  # an unknown driver
        at(10, 30),  # a duplicate of row 0
        at(14),
        at(14) + US,
        at(9, day=2) - US,  # just before the (c2, 1) row
        at(23, day=5),
        at(0),  # exactly at the flags' tie, broken by ingestion time
        at(0, day=2),  # exactly the flags' max_age
        at(0, day=2) + US,
    ]
    n = len(ts)
    return pa.table(
        {
            "driver_id": [1, 1, 2, 2, 1, 3, 1, 1, 1, 1, 1, 1, 2, 2],
            "customer_id": pa.array(["c1"] * 9 + ["c2", "c2", "c1", "c1", "c1"], pa.large_string()),
            "event_timestamp": pa.array([t.replace(tzinfo=None) for t in ts], pa.timestamp("ns")),
            "label": pa.array([f"row {i}" for i in range(n)], pa.large_string()),
            "weight": pa.array(range(n), pa.uint8()),
            "big": pa.array([2**64 - 1 - i for i in range(n)], pa.uint64()),
            "precise": pa.array(
                [1_700_000_000_123_456_789 + i for i in range(n)],
                pa.timestamp("ns", "Europe/Paris"),
            ),
            "when": pa.array([date(2024, 1, 1 + i) for i in range(n)], pa.date32()),
            "tags": pa.array([["a", str(i)] if i % 3 else None for i in range(n)]),
            "info": pa.array(
                [{"a": i, "b": f"b{i}"} for i in range(n)],
                pa.struct([("a", pa.int32()), ("b", pa.string())]),
            ),
            "price": pa.array([Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
            "kind": pa.array(["x", "y"] * (n // 2))
            .dictionary_encode()
            .cast(pa.dictionary(pa.int8(), pa.string())),
            "nothing": pa.nulls(n),
            "half": pa.array(np.arange(n, dtype=np.float16) / 4),
            "clock": pa.array([time(i, 1, 2, 3) for i in range(n)], pa.time64("ns")),
            "wait": pa.array([timedelta(seconds=i) for i in range(n)], pa.duration("s")),
            "fixed": pa.array([bytes([i, i + 1]) for i in range(n)], pa.binary(2)),
        }
    )


def test_point_in_time_semantics_are_exact_and_equal_duckdb(
    project: Client, spark_store: SparkOfflineStore, duckdb_store: DuckDBOfflineStore
) -> None:
    entities = entity_rows()
    requests = requests_for(project, REFS)
    job = spark_store.get_historical_features(entities, requests)
    result = job.to_arrow()

    assert result.column_names == [
        *entities.column_names,
        "driver_stats__conv_rate",
        "driver_stats__trips",
        "customer_driver__rating",
        "driver_flags__flagged",
    ]
    assert result.to_pydict() == {
        **entities.to_pydict(),
        "driver_stats__conv_rate": [0.2, 0.8, 0.5, None, 0.35, None, 0.2, 0.35] + [None] * 6,
        "driver_stats__trips": [2, 8, 5, None, 35, None, 2, 35] + [None] * 6,
        "customer_driver__rating": [4.5, 4.5, None, None, 3.5, None, 4.5, 3.5, 3.5, None, 5.0]
        + [None] * 3,
        "driver_flags__flagged": [False, False, True, True, False, None, False, False, False]
        + [None, None, False, True, None],
    }
    expected = duckdb_store.get_historical_features(entities, requests).to_arrow()
    assert result.schema == expected.schema
    assert result.equals(expected)

    # The job ran once: its files stay where output_location says, and reads stream them.
    location = job.output_location
    assert location is not None
    assert Path(location).parent == project.settings.root / "staging"
    assert sorted(p.name for p in Path(location).iterdir() if p.suffix == ".parquet")
    assert job.to_arrow().equals(expected) and job.output_location == location
    pd.testing.assert_frame_equal(job.to_pandas(), expected.to_pandas())
    job.to_parquet(project.settings.root / "out" / "training.parquet")
    assert pq.read_table(project.settings.root / "out" / "training.parquet").equals(expected)
    job.cleanup()
    assert not Path(location).exists()


def test_versions_rebuild_an_earlier_training_set_and_empty_sources_warn(
    project: Client, spark_store: SparkOfflineStore, duckdb_store: DuckDBOfflineStore
) -> None:
    project.apply(
        [
            FeatureTable(
                name="trips_log",
                entities=["driver_id"],
                features=[Feature(name="trips", value_type=ValueType.INT32)],
                batch_source=FileSource(path="data/trips_log", event_timestamp_column="ts"),
            ),
            FeatureTable(
                name="nothing_yet",
                entities=["driver_id"],
                features=[Feature(name="x", value_type=ValueType.STRING_LIST)],
                batch_source=FileSource(path="data/nothing_yet", event_timestamp_column="ts"),
            ),
        ]
    )
    rows = {"driver_id": [1, 2], "ts": [at(1), at(1)]}
    first = project.ingest("trips_log", pd.DataFrame({**rows, "trips": [1, 10]}))
    project.ingest("trips_log", pd.DataFrame({**rows, "trips": [2, 20]}))
    assert first.version is not None
    entities = pd.DataFrame({"driver_id": [2, 1, 3], "event_timestamp": [at(2), at(1), at(2)]})
    requests = requests_for(project, ["trips_log:trips", "nothing_yet:x"])

    with pytest.warns(NoDataWarning, match="^feature table 'nothing_yet' has no data yet"):
        job = spark_store.get_historical_features(
            entities, requests, versions={"trips_log": first.version}
        )
    result = job.to_arrow()
    assert result.column("trips_log__trips").to_pylist() == [10, 1, None]
    assert result.column("nothing_yet__x").type == pa.list_(pa.string())
    assert result.column("nothing_yet__x").to_pylist() == [None, None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDataWarning)
        expected = duckdb_store.get_historical_features(
            entities, requests, versions={"trips_log": first.version}
        )
    assert job.source_versions == expected.source_versions
    assert result.equals(expected.to_arrow())


def test_no_entity_rows_give_an_empty_typed_training_set(
    project: Client, spark_store: SparkOfflineStore, duckdb_store: DuckDBOfflineStore
) -> None:
    empty = pd.DataFrame(
        {
            "driver_id": pd.Series([], dtype="int64"),
            "event_timestamp": pd.Series([], dtype="M8[us]"),
        }
    )
    requests = requests_for(project, ["driver_stats:*"])
    job = spark_store.get_historical_features(empty, requests)
    result = job.to_arrow()
    assert result.num_rows == 0
    assert result.equals(duckdb_store.get_historical_features(empty, requests).to_arrow())
    assert job.output_location is not None
    assert [p.name for p in Path(job.output_location).iterdir()] == ["part-00000.parquet"]


def test_a_bad_source_file_fails_as_in_duckdb_and_no_task_is_retried(
    project: Client,
    spark_store: SparkOfflineStore,
    duckdb_store: DuckDBOfflineStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    pq.write_table(
        pa.table({"driver_id": [1, 2], "ts": [at(1), at(1)], "v": [1, 2]}), folder / "a.parquet"
    )
    # Four row groups, read by different tasks: the first bad row is reported, counted from
    # the file's start.
    pq.write_table(
        pa.table({"driver_id": [1, 2, 3, 4], "ts": [at(2)] * 4, "v": [1.0, 2.5, 3.0, 4.5]}),
        folder / "b.parquet",
        row_group_size=1,
    )
    monkeypatch.setattr(reading, "ROWS_PER_TASK", 1)
    table = FeatureTable(
        name="plain",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64)],
        batch_source=FileSource(path=str(folder), event_timestamp_column="ts"),
    )
    requests = (FeatureRequest(table, ("v",), {"driver_id": ValueType.INT64}),)
    entities = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(3)]})
    staging = project.settings.root / "staging"
    staged_before = {p for p in staging.iterdir() if not p.name.startswith("_")}

    with pytest.raises(DataValidationError) as spark_error:
        spark_store.get_historical_features(entities, requests).to_arrow()
    with pytest.raises(DataValidationError) as duckdb_error:
        duckdb_store.get_historical_features(entities, requests).to_arrow()

    path = str(folder / "b.parquet")
    assert spark_error.value.message == (
        f"file {path!r} column 'v' row 1: 2.5 cannot be stored as feature v (INT64) without loss"
    )
    assert spark_error.value.message == duckdb_error.value.message
    assert spark_error.value.attrs() == duckdb_error.value.attrs()
    # The executor reported the error instead of failing its task: nothing ran twice.
    tracker = spark_store._session().sparkContext.statusTracker()
    job_ids = tracker.getJobIdsForGroup(APP_NAME)
    failed = 0
    for job_id in job_ids:
        info = tracker.getJobInfo(job_id)
        assert info is not None
        for stage_id in info.stageIds:
            stage = tracker.getStageInfo(stage_id)
            failed += stage.numFailedTasks if stage is not None else 0
    assert job_ids and failed == 0
    # The failed job left no folder behind.
    assert {p for p in staging.iterdir() if not p.name.startswith("_")} == staged_before


def test_range_reads_and_source_versions_equal_duckdb(
    project: Client, spark_store: SparkOfflineStore, duckdb_store: DuckDBOfflineStore
) -> None:
    for name, start, end in [
        ("driver_stats", None, None),
        ("driver_stats", at(9), at(12)),
        ("driver_flags", datetime(2024, 1, 1), None),
        ("customer_driver", None, at(0, day=3)),
    ]:
        table = project.get_feature_table(name)
        got = pa.Table.from_batches(list(spark_store.read_range(table, start, end, batch_size=2)))
        want = pa.Table.from_batches(list(duckdb_store.read_range(table, start, end)))
        order = [(column, "ascending") for column in want.column_names]
        assert got.sort_by(order).equals(want.sort_by(order)), name
        assert spark_store.source_version(table) == duckdb_store.source_version(table)


def test_the_client_builds_training_sets_on_spark(
    project: Client, spark_master: str, tmp_path: Path
) -> None:
    entities = tmp_path / "entities.csv"
    entities.write_text(
        "driver_id,event_timestamp,note\n1,2024-01-01T10:30:00Z,x\n2,2024-01-01T11:00:00,\n"
    )
    offline = {
        "type": "spark",
        "master": spark_master,
        "conf": SPARK_TEST_CONF,
        "python": os.environ.get("POTLUCK_TEST_SPARK_PYTHON"),
        "staging_location": str(tmp_path / "client-staging"),
    }
    settings = project.settings.model_copy(update={"offline_store": offline})
    with Client(settings=settings) as client:
        job = client.get_historical_features(["driver_stats:*"], str(entities))
        result = job.to_arrow()
    assert job.output_location is not None
    assert Path(job.output_location).parent == tmp_path / "client-staging"
    expected = project.get_historical_features(["driver_stats:*"], str(entities)).to_arrow()
    assert result.equals(expected)
    assert result.column("driver_stats__trips").to_pylist() == [2, 5]


def test_the_cli_writes_the_same_training_set_as_with_duckdb(
    project: Client, spark_master: str, tmp_path: Path
) -> None:
    root = project.settings.root
    pq.write_table(
        entity_rows().select(["driver_id", "customer_id", "event_timestamp"]),
        tmp_path / "e.parquet",
    )
    config = {"registry": project.settings.registry}
    (tmp_path / "duckdb.yaml").write_text(yaml.safe_dump(config))
    spark = {
        "type": "spark",
        "master": spark_master,
        "conf": SPARK_TEST_CONF,
        "python": os.environ.get("POTLUCK_TEST_SPARK_PYTHON") or sys.executable,
        "staging_location": str(tmp_path / "cli-staging"),
    }
    (tmp_path / "spark.yaml").write_text(yaml.safe_dump({**config, "offline_store": spark}))
    outputs = {}
    for name in ("duckdb", "spark"):
        out = tmp_path / f"{name}.parquet"
        done = _run(
            [str(POTLUCK), "-c", str(tmp_path / f"{name}.yaml"), "historical", "-f", ",".join(REFS)]
            + ["-e", str(tmp_path / "e.parquet"), "-O", str(out)],
            cwd=root,
        )
        assert (done.returncode, done.stderr) == (0, ""), name
        outputs[name] = out.read_bytes()
    assert outputs["spark"] == outputs["duckdb"]
    # Spark's own output (its log lines, the JVM's warnings) went to the driver log instead.
    logs = list((tmp_path / "cli-staging" / "_logs").glob("spark-driver-*.log"))
    assert len(logs) == 1 and "WARN" in logs[0].read_text()


def test_an_unreachable_master_or_another_master_is_named(
    spark_store: SparkOfflineStore, project: Client, tmp_path: Path
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    entities = pd.DataFrame({"driver_id": [1], "event_timestamp": [at(3)]})
    requests = requests_for(project, ["driver_stats:trips"])
    spark_store._session()  # this process's session runs on the test cluster
    for master, error, message in [
        (
            f"spark://127.0.0.1:{port}",
            UnavailableError,
            f"cannot reach the Spark master spark://127.0.0.1:{port} (offline_store.master): "
            "Connection refused; start the cluster, or set offline_store.master to a running one",
        ),
        (
            "local[1]",
            ConfigError,
            "invalid setting 'offline_store.master' = 'local[1]': this process runs a Spark "
            f"session on {spark_store.config.master} already, and a process has one; set "
            f"offline_store.master to {spark_store.config.master}, or build training sets in "
            "another process",
        ),
    ]:
        store = SparkOfflineStore(
            SparkOfflineConfig(master=master, staging_location=str(tmp_path / "s"))
        )
        job = store.get_historical_features(entities, requests)
        with pytest.raises(error) as caught:
            job.to_arrow()
        assert caught.value.message == message  # type: ignore[attr-defined]
        store.close()


def test_a_staging_location_that_cannot_be_made_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    config = SparkOfflineConfig(master="local[1]", staging_location="file/staging")
    with pytest.raises(ConfigError) as caught:
        SparkOfflineStore(config, root=tmp_path)
    assert caught.value.message == (
        "invalid setting 'offline_store.staging_location' = 'file/staging': cannot make "
        f"{str(tmp_path / 'file' / 'staging')!r}: {str(tmp_path / 'file')!r} is a file, so no "
        "folder can be made there; choose another path (a relative folder is relative to the "
        "config file's folder; set it in potluck.yaml or POTLUCK_OFFLINE_STORE__STAGING_LOCATION)"
    )


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---- entity rows in a file: read and checked on executors ----------------------------------------


def test_an_entity_file_is_read_on_executors_in_order_and_equals_duckdb(
    project: Client,
    spark_store: SparkOfflineStore,
    duckdb_store: DuckDBOfflineStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entities = entity_rows()
    # Row groups of 3 rows, read by several tasks: the rows come back in the file's order.
    pq.write_table(entities, tmp_path / "e.parquet", row_group_size=3)
    entities.select(["driver_id", "customer_id", "event_timestamp", "label"]).to_pandas().to_csv(
        tmp_path / "e.csv", index=False
    )
    monkeypatch.setattr(spark_entities, "ROWS_PER_TASK", 1)

    def not_on_the_driver(*args: object, **kwargs: object) -> None:
        raise AssertionError("the entity rows were read on the driver")

    monkeypatch.setattr(spark_store_module, "prepare", not_on_the_driver)
    requests = requests_for(project, REFS)
    for name in ("e.parquet", "e.csv"):
        path = str(tmp_path / name)
        result = spark_store.get_historical_features(path, requests).to_arrow()
        expected = duckdb_store.get_historical_features(path, requests).to_arrow()
        assert result.schema == expected.schema, name
        assert result.equals(expected), name
        assert result.column("driver_stats__trips").to_pylist() == (
            [2, 8, 5, None, 35, None, 2, 35] + [None] * 6
        ), name


def _bad_entity_files(folder: Path) -> dict[str, Path]:
    """One file per way prepare refuses entity rows, each in several row groups."""
    n = 10
    ts = pa.array([at(10)] * n, pa.timestamp("us", "UTC"))
    ids = pa.array(range(n), pa.int64())

    def parquet(name: str, columns: dict[str, Any]) -> Path:
        path = folder / f"{name}.parquet"
        pq.write_table(pa.table(columns), path, row_group_size=3)
        return path

    def csv(name: str, text: str) -> Path:
        path = folder / f"{name}.csv"
        path.write_text(text)
        return path

    header = "driver_id,event_timestamp\n"
    good = "1,2024-01-01T10:00:00Z\n"
    nulls = [None] * 4
    return {
        "no timestamp": parquet("no_ts", {"driver_id": ids}),
        "no key": parquet("no_key", {"event_timestamp": ts}),
        "null timestamp": parquet(
            "null_ts",
            {"driver_id": ids, "event_timestamp": ts[:7].to_pylist() + [None] + ts[8:].to_pylist()},
        ),
        "lossy key": parquet(
            "lossy",
            {"driver_id": [float(i) for i in range(7)] + [7.5, 8.0, 9.5], "event_timestamp": ts},
        ),
        "key of another type": parquet(
            "bool_key", {"driver_id": pa.array(nulls + [True] * 6), "event_timestamp": ts}
        ),
        "key of another type, all null": parquet(
            "null_bool_key", {"driver_id": pa.nulls(n, pa.bool_()), "event_timestamp": ts}
        ),
        "a later column's error waits for an earlier one's": parquet(
            "two_errors",
            {
                "driver_id": pa.array([0.5] + list(range(1, n)), pa.float64()),
                "event_timestamp": ts.to_pylist()[:8] + [None, None],
            },
        ),
        "null key": parquet(
            "null_key", {"driver_id": list(range(5)) + [None] * 5, "event_timestamp": ts}
        ),
        "taken output name": parquet(
            "taken", {"driver_id": ids, "event_timestamp": ts, "driver_stats__trips": ids}
        ),
        "csv: bad number": csv("bad_int", header + good * 4 + "x,2024-01-01T10:00:00Z\n" + good),
        "csv: empty key": csv("empty_key", header + good * 2 + ",2024-01-01T10:00:00Z\n" + good),
        "csv: bad timestamp, then a bad key": csv(
            "bad_ts", header + "y,2024-01-01T10:00:00Z\n" + good + "1,yesterday\n"
        ),
        "csv: missing key, then a bad timestamp": csv(
            "no_key", "event_timestamp,x\n2024-01-01T10:00:00Z,1\nnever,2\n"
        ),
        "csv: taken output name": csv(
            "taken", "driver_id,event_timestamp,driver_stats__trips\n1,2024-01-01T10:00:00Z,1\n"
        ),
        "csv: taken name and a bad value": csv(
            "taken_bad", "driver_id,event_timestamp,driver_stats__trips\nz,2024-01-01T10:00:00Z,1\n"
        ),
        "not parquet": folder / "garbage.parquet",
        "no such file": folder / "missing.csv",
        "empty, without a timestamp": parquet("empty", {"driver_id": pa.array([], pa.int64())}),
    }


def test_bad_entity_files_fail_on_executors_exactly_as_in_duckdb(
    project: Client,
    spark_store: SparkOfflineStore,
    duckdb_store: DuckDBOfflineStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spark_entities, "ROWS_PER_TASK", 1)
    files = _bad_entity_files(tmp_path)
    files["not parquet"].write_bytes(b"not parquet")
    requests = requests_for(project, ["driver_stats:*"])
    tracker = spark_store._session().sparkContext.statusTracker()
    failed_before = _failed_tasks(tracker)

    def outcome(store: SparkOfflineStore | DuckDBOfflineStore, path: Path) -> object:
        try:
            return store.get_historical_features(str(path), requests).to_arrow()
        except (DataValidationError, ValidationError) as exc:
            return (type(exc).__name__, exc.message, exc.attrs())

    seen = {name: outcome(spark_store, path) for name, path in files.items()}
    expected = {name: outcome(duckdb_store, path) for name, path in files.items()}
    for name in files:
        if isinstance(expected[name], pa.Table):
            assert isinstance(seen[name], pa.Table) and seen[name].equals(expected[name]), name
        else:
            assert seen[name] == expected[name], name
    refused = {name: got for name, got in seen.items() if isinstance(got, tuple)}
    assert refused["null timestamp"] == (
        "DataValidationError",
        "column 'event_timestamp' row 7: is null; every entity row needs a timestamp",
        {"column": "event_timestamp", "row": 7},
    )
    assert refused["lossy key"][1] == (
        "column 'driver_id' row 7: 7.5 cannot be stored as entity driver_id (INT64) without loss"
    )
    assert refused["key of another type"][2] == {"column": "driver_id", "row": 4}
    assert refused["key of another type, all null"][2] == {"column": "driver_id", "row": 10}
    assert refused["a later column's error waits for an earlier one's"][2] == {
        "column": "event_timestamp",
        "row": 8,
    }
    assert set(seen) - set(refused) == {"empty, without a timestamp"}
    # Executors reported what they found: no task failed, so none was retried.
    assert _failed_tasks(tracker) == failed_before


def _failed_tasks(tracker: Any) -> int:
    failed = 0
    for job_id in tracker.getJobIdsForGroup(APP_NAME):
        info = tracker.getJobInfo(job_id)
        for stage_id in info.stageIds if info is not None else []:
            stage = tracker.getStageInfo(stage_id)
            failed += stage.numFailedTasks if stage is not None else 0
    return failed


# ---- one row group read in slices; rows written in order without sampling -----------------------


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.integers(0, 9), min_size=0, max_size=6),
    cuts=st.lists(st.integers(0, 60), min_size=2, max_size=2),
)
def test_a_slice_of_a_parquet_file_is_exactly_its_rows(
    tmp_path_factory: pytest.TempPathFactory, groups: list[int], cuts: list[int]
) -> None:
    path = tmp_path_factory.mktemp("sliced") / "rows.parquet"
    total = sum(groups)
    values = pa.array(range(total), pa.int64())
    with pq.ParquetWriter(path, pa.schema([("n", pa.int64())])) as writer:
        start = 0
        for size in groups:
            writer.write_table(pa.table({"n": values[start : start + size]}))
            start += size
    assert [g.num_rows for g in _row_groups(path)] == groups
    low, high = sorted(min(cut, total) for cut in cuts)
    read = spark_entities._sliced(pq.ParquetFile(path), groups, range(low, high))
    assert [n for batch in read for n in batch.column(0).to_pylist()] == list(range(low, high))


def _row_groups(path: Path) -> list[Any]:
    metadata = pq.read_metadata(path)
    return [metadata.row_group(i) for i in range(metadata.num_row_groups)]


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10_000), units=st.integers(1, 64))
def test_slices_cover_every_row_once_in_order_and_evenly(total: int, units: int) -> None:
    parts = spark_entities.slices(total, units)
    assert len(parts) == units
    assert [n for part in parts for n in part] == list(range(total))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _one_group_files(folder: Path) -> dict[str, Path]:
    """Files of 40 rows in ONE row group (read as 4 slices of 10 rows), each bad in its way."""
    n = 40
    ts = [at(10)] * n
    ids = [float(i) for i in range(n)]

    def file(name: str, driver_id: list[Any], event_timestamp: list[Any]) -> Path:
        path = folder / f"{name}.parquet"
        table = pa.table(
            {
                "driver_id": pa.array(driver_id, pa.float64()),
                "event_timestamp": pa.array(event_timestamp, pa.timestamp("us", "UTC")),
            }
        )
        pq.write_table(table, path)
        assert pq.read_metadata(path).num_row_groups == 1
        return path

    def put(values: list[Any], at_rows: dict[int, Any]) -> list[Any]:
        return [at_rows.get(i, v) for i, v in enumerate(values)]

    return {
        "good": file("good", ids, ts),
        # The timestamp column is checked before the key: its null in the last slice comes
        # before the key's lossy value in the first.
        "timestamp in slice 4, key in slice 1": file(
            "ts_late_key_early", put(ids, {2: 2.5}), put(ts, {35: None})
        ),
        # In one column, a value that does not convert comes before a null, wherever it is.
        "key: lossy in slice 4, null in slice 1": file(
            "lossy_late_null_early", put(ids, {3: None, 33: 33.5}), ts
        ),
        "key: lossy in slices 2 and 4": file("lossy_twice", put(ids, {12: 12.5, 31: 31.5}), ts),
        "timestamp: null at the first row of slice 3": file(
            "null_ts_edge", ids, put(ts, {20: None, 29: None})
        ),
        "timestamp: null at the last row of slice 2": file(
            "null_ts_last", put(ids, {0: 0.5}), put(ts, {19: None})
        ),
    }


def test_one_row_group_is_checked_in_slices_with_the_error_prepare_meets_first(
    project: Client,
    spark_store: SparkOfflineStore,
    duckdb_store: DuckDBOfflineStore,
    tmp_path: Path,
) -> None:
    files = _one_group_files(tmp_path)
    requests = requests_for(project, ["driver_stats:*"])
    plan = build_plan(requests, project.settings.root)
    spark = spark_store._session()
    assert spark.sparkContext.defaultParallelism == 2  # so 2 x 2 = 4 slices of 10 rows

    good = EntityFile(str(files["good"]), plan, rows_per_task=10).load(spark)
    placed = good.rows.select(F.spark_partition_id(), ROW, key_column("driver_id"))
    assert sorted(tuple(r) for r in placed.collect()) == [(i // 10, i, i) for i in range(40)]
    assert (good.count, good.plan.earliest, good.plan.latest) == (40, at(10), at(10))

    def refusal(load: Any) -> tuple[str, str, dict[str, Any]]:
        with pytest.raises((DataValidationError, ValidationError)) as caught:
            load()
        return type(caught.value).__name__, caught.value.message, caught.value.attrs()

    seen = {
        name: refusal(functools.partial(EntityFile(str(path), plan, rows_per_task=10).load, spark))
        for name, path in files.items()
        if name != "good"
    }

    def on_duckdb(path: Path) -> pa.Table:
        return duckdb_store.get_historical_features(str(path), requests).to_arrow()

    expected = {
        name: refusal(functools.partial(on_duckdb, path))
        for name, path in files.items()
        if name != "good"
    }
    assert seen == expected
    assert seen["timestamp in slice 4, key in slice 1"] == (
        "DataValidationError",
        "column 'event_timestamp' row 35: is null; every entity row needs a timestamp",
        {"column": "event_timestamp", "row": 35},
    )
    assert {name: got[2] for name, got in seen.items()} == {
        "timestamp in slice 4, key in slice 1": {"column": "event_timestamp", "row": 35},
        "key: lossy in slice 4, null in slice 1": {"column": "driver_id", "row": 33},
        "key: lossy in slices 2 and 4": {"column": "driver_id", "row": 12},
        "timestamp: null at the first row of slice 3": {"column": "event_timestamp", "row": 20},
        "timestamp: null at the last row of slice 2": {"column": "event_timestamp", "row": 19},
    }


def test_an_entity_file_changed_after_its_check_fails_the_join_naming_it(
    project: Client, spark_store: SparkOfflineStore, tmp_path: Path
) -> None:
    path = tmp_path / "changing.parquet"
    ts: list[datetime | None] = [at(10)] * 40
    pq.write_table(pa.table({"driver_id": list(range(40)), "event_timestamp": ts}), path)
    plan = build_plan(requests_for(project, ["driver_stats:*"]), project.settings.root)
    loaded = EntityFile(str(path), plan, rows_per_task=10).load(spark_store._session())
    # The check passed; the join reads the file again, and it no longer passes.
    ts[25] = None
    pq.write_table(pa.table({"driver_id": list(range(40)), "event_timestamp": ts}), path)
    with pytest.raises(ValidationError) as caught, spark_errors("reading the entity rows"):
        loaded.rows.collect()
    assert caught.value.message == (
        f"the entity file {str(path)!r} changed while the training set was built (column "
        "'event_timestamp' row 25: is null; every entity row needs a timestamp); build it again"
    )
    assert caught.value.attrs() == {"path": str(path)}


@pytest.mark.parametrize(("rows", "partitions"), [(1, 1), (7, 4), (100, 4), (16, 16), (999, 7)])
def test_each_range_of_row_numbers_lands_in_its_own_partition_with_no_job(
    spark_store: SparkOfflineStore, rows: int, partitions: int
) -> None:
    spark = spark_store._session()
    group = f"range-key-{rows}-{partitions}"
    spark.sparkContext.setJobGroup(group, "range_key")
    key = range_key(spark, F.col("id"), rows, partitions)
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(group) == []
    placed = spark.range(rows).repartition(partitions, key)
    got = placed.select(F.spark_partition_id(), "id").collect()
    assert sorted((p, i) for p, i in got) == [(i * partitions // rows, i) for i in range(rows)]


def test_an_entity_file_in_slices_gives_part_files_in_row_order_equal_to_duckdb(
    project: Client,
    spark_store: SparkOfflineStore,
    duckdb_store: DuckDBOfflineStore,
    tmp_path: Path,
) -> None:
    # One row group of 14 rows; 4 rows a task: 4 slices read, 4 ranges written.
    pq.write_table(entity_rows().drop_columns(["kind"]), tmp_path / "e.parquet")
    assert pq.read_metadata(tmp_path / "e.parquet").num_row_groups == 1
    spark_store._session()
    store = SparkOfflineStore(spark_store.config, root=project.settings.root, rows_per_task=4)
    requests = requests_for(project, REFS)
    path = str(tmp_path / "e.parquet")
    expected = duckdb_store.get_historical_features(path, requests).to_arrow()
    with store.get_historical_features(path, requests) as job:
        assert job.to_arrow().equals(expected)
        location = Path(job.output_location or "")
        parts = sorted(p for p in location.iterdir() if p.name.startswith("part-"))
        labels = [pq.read_table(p).column("label").to_pylist() for p in parts]
        # Row r is in range r * 4 div 14.
        assert [len(chunk) for chunk in labels] == [4, 3, 4, 3]
        assert sum(labels, []) == [f"row {i}" for i in range(14)]
        frame = pd.read_parquet(location)
        assert list(frame.columns) == expected.column_names
        assert frame["label"].tolist() == [f"row {i}" for i in range(14)]
    store.close()
    assert spark_store._session().sparkContext._jsc is not None  # the joined session runs on
