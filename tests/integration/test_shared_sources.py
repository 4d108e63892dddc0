"""Two clients of one registry in different folders read the same batch source.

Client 1 applies ``FileSource(path="data/x")`` in folder A and ingests; client 2, in folder B with
its own potluck.yaml, builds a training set and gets the real values, not nulls. The registry is
a shared PostgreSQL database, or the Core service run from a third folder over it (so Core's own
working folder is never used to resolve a path).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.registry.base import Change

pytestmark = pytest.mark.postgres

UTC = timezone.utc
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
STATS = FeatureTable(
    name="driver_stats",
    entities=("driver_id",),
    features=(
        Feature(name="conv_rate", value_type=ValueType.DOUBLE),
        Feature(name="trips", value_type=ValueType.INT64),
    ),
    max_age=timedelta(days=1),
    batch_source=FileSource(path="data/x", event_timestamp_column="event_timestamp"),
)


def at(hour: int) -> datetime:
    return datetime(2024, 5, 1, hour, tzinfo=UTC)


@pytest.fixture()
def core_address(fresh_postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """``host:port`` of a Core service run in its own process and folder over the database."""
    folder = tmp_path / "core"
    folder.mkdir()
    (folder / "potluck.yaml").write_text(f"registry: {fresh_postgres_url}\n")
    code = (
        "from potluck.config import load_settings\n"
        "from potluck.registry.server import run_core\n"
        "run_core(load_settings('potluck.yaml', environ={}), port=0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    with subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env, cwd=folder
    ) as proc:
        try:
            assert proc.stderr is not None
            seen: list[str] = []
            for raw in proc.stderr:  # gRPC may log its own lines first
                seen.append(raw.strip())
                match = re.match(r"potluck core listening on (\S+) ", seen[-1])
                if match:
                    break
            else:
                pytest.fail(f"the Core service exited with {proc.wait()}: {seen}")
            yield match.group(1)
        finally:
            proc.kill()


@pytest.fixture(params=["postgres", "core"])
def shared_settings(
    request: pytest.FixtureRequest, fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The potluck.yaml line that points a client at the shared registry."""
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    if request.param == "postgres":
        return f"registry: {fresh_postgres_url}\n"
    return f"core_url: {request.getfixturevalue('core_address')}\n"


def test_a_relative_source_applied_in_one_folder_is_read_from_another(
    shared_settings: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "potluck.yaml").write_text(shared_settings)

    monkeypatch.chdir(a)
    with Client() as one:
        one.apply([DRIVER, STATS])
        report = one.ingest(
            "driver_stats",
            pd.DataFrame(
                {
                    "driver_id": [1, 1, 2],
                    "event_timestamp": [at(8), at(10), at(9)],
                    "conv_rate": [0.25, 0.5, 0.75],
                    "trips": [3, 5, 7],
                }
            ),
        )
        assert report.rows == 3

    monkeypatch.chdir(b)
    with Client() as two:
        source = two.get_feature_table("driver_stats").batch_source
        assert source is not None
        assert source.path == f"{a}/data/x"
        training = two.get_historical_features(
            ["driver_stats:conv_rate", "driver_stats:trips"],
            pd.DataFrame(
                {
                    "driver_id": [1, 1, 2, 3],
                    "event_timestamp": [at(9), at(11), at(12), at(12)],
                }
            ),
        ).to_pandas()
        assert training["driver_stats__conv_rate"].tolist()[:3] == [0.25, 0.5, 0.75]
        assert training["driver_stats__trips"].tolist()[:3] == [3, 5, 7]
        assert training["driver_stats__conv_rate"].isna().tolist() == [False, False, False, True]
        # The same definitions applied from folder B name B's folder: plan says so.
        assert two.apply(STATS, dry_run=True) == [
            Change(
                "feature_table",
                "driver_stats",
                "update",
                2,
                (f"batch_source.path '{a}/data/x' -> '{b}/data/x'",),
            )
        ]
    assert not (b / "data").exists()
