"""Faults a fresh tester found in the Spark offline store that need a cluster (issue 9).

One Spark session (the training sets of relative entity paths); the other cases fail before a
session starts (a missing file) or in a JVM that exits at once (a refused property).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from _spark_support import SPARK_TEST_CONF

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import load_settings
from potluck.errors import ValidationError

pytestmark = [pytest.mark.spark]

POTLUCK = Path(sys.executable).parent / "potluck"
T = datetime(2024, 5, 2, 12, tzinfo=timezone.utc)
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
STATS = FeatureTable(
    name="driver_stats",
    entities=["driver_id"],
    features=[Feature(name="trips", value_type=ValueType.INT64)],
    batch_source=FileSource(path="data/driver_stats", event_timestamp_column="event_timestamp"),
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, spark_master: str) -> Path:
    """A repository whose potluck.yaml builds training sets on the test cluster."""
    root = tmp_path_factory.mktemp("repo")
    offline = {
        "type": "spark",
        "master": spark_master,
        "conf": SPARK_TEST_CONF,
        "python": os.environ.get("POTLUCK_TEST_SPARK_PYTHON") or sys.executable,
        "staging_location": "staging",
    }
    config = {"project": "trial", "registry": f"sqlite:///{root}/registry.db"}
    (root / "potluck.yaml").write_text(yaml.safe_dump({**config, "offline_store": offline}))
    with Client(settings=load_settings(root / "potluck.yaml")) as client:
        client.apply([DRIVER, STATS])
        client.ingest(
            "driver_stats",
            pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T, T], "trips": [7, 8]}),
        )
    return root


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[Client]:
    with Client(settings=load_settings(repo / "potluck.yaml")) as client:
        yield client


def test_relative_entity_files_are_the_callers_and_missing_ones_fail_first(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pq.write_table(
        pa.table({"driver_id": [2, 1, 3], "event_timestamp": pa.array([T, T, T])}),
        "entities.parquet",
    )
    Path("entities.csv").write_text(
        "driver_id,event_timestamp\n1,2024-05-02T12:00:00Z\n2,2024-05-01T12:00:00Z\n"
    )
    for missing in ("missing.parquet", "no/such/folder/e.csv"):
        with pytest.raises(ValidationError) as err:
            client.get_historical_features(["driver_stats:trips"], missing)
        assert err.value.message == f"cannot read {missing!r}: no such file"
    assert client._offline_store._spark is None  # type: ignore[attr-defined]  # none started
    parquet = client.get_historical_features(["driver_stats:trips"], "entities.parquet")
    assert parquet.to_arrow().column("driver_stats__trips").to_pylist() == [8, 7, None]
    csv = client.get_historical_features(["driver_stats:trips"], "./entities.csv")
    assert csv.to_arrow().column("driver_stats__trips").to_pylist() == [7, None]
    # A file gone by the time executors read it is named as the caller named it.
    pq.write_table(pa.table({"driver_id": [1], "event_timestamp": pa.array([T])}), "gone.parquet")
    gone = client.get_historical_features(["driver_stats:trips"], "gone.parquet")
    Path("gone.parquet").unlink()
    with pytest.raises(ValidationError) as err:
        gone.to_arrow()
    assert (err.value.message, err.value.attrs()["path"]) == (
        "cannot read 'gone.parquet': no such file or folder",
        "gone.parquet",
    )


def _cli(repo: Path, conf: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    config = yaml.safe_load((repo / "potluck.yaml").read_text())
    config["offline_store"]["conf"] = {**config["offline_store"]["conf"], **conf}
    config["offline_store"]["staging_location"] = str(cwd / "staging")
    (cwd / "potluck.yaml").write_text(yaml.safe_dump(config))
    pq.write_table(
        pa.table({"driver_id": [1], "event_timestamp": pa.array([T])}), cwd / "e.parquet"
    )
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    args = [str(POTLUCK), "historical", "-f", "driver_stats:trips", "-e", "e.parquet"]
    return subprocess.run(
        [*args, "-O", "out.parquet"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("conf", "refusal"),
    [
        (
            {"spark.executor.memory": "lots"},
            "Executor memory must be a positive number (SparkException)",
        ),
        (
            {"spark.executor.cores": "0"},
            "Executor cores must be a positive number (SparkException)",
        ),
        (
            {"spark.driver.memory": "lots"},
            "Could not create the Java Virtual Machine: Invalid maximum heap size: -Xmxlots",
        ),
    ],
)
def test_a_property_spark_refuses_names_offline_store_conf(
    repo: Path, spark_master: str, tmp_path: Path, conf: dict[str, str], refusal: str
) -> None:
    done = _cli(repo, conf, tmp_path)
    logs = list((tmp_path / "staging" / "_logs").glob("spark-driver-*.log"))
    assert len(logs) == 1
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.replace("\n", "") == (
        f"error: invalid setting 'offline_store.conf': Spark refused to start on {spark_master}: "
        f"{refusal}; correct the Spark property this is about; its log: {logs[0]}"
    )
