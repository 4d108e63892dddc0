"""The README's quickstart, run as a user runs it: examples/quickstart/quickstart.py in a fresh
copy of the folder, with the venv's python, on embedded defaults.

Printed values are checked against the Parquet files the quickstart ingested: the training set
against a brute-force point-in-time lookup, the online features against the latest row per
driver."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from potluck import Client, FeatureTable
from potluck.config import Settings
from potluck.definitions.loader import load_definitions

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
POTLUCK = Path(sys.executable).parent / "potluck"
FEATURES = ("conv_rate", "acc_rate", "avg_daily_trips")
MAX_AGE = timedelta(days=1)


@pytest.fixture()
def quickstart(tmp_path: Path) -> Path:
    folder = tmp_path / "quickstart"
    ignore = shutil.ignore_patterns(".potluck", "data", "__pycache__")
    shutil.copytree(QUICKSTART, folder, ignore=ignore)
    return folder


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    env["COLUMNS"] = "160"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _rows(out: str, title: str) -> list[list[str]]:
    """Return the body rows of the rich table printed under ``title``, cell by cell."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            return rows
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    raise AssertionError(f"table {title!r} does not end")


def _history(folder: Path) -> pd.DataFrame:
    """Every row the quickstart ingested, read straight from its batch source."""
    return pq.read_table(folder / "data" / "driver_stats").to_pandas()


def _formatted(row: pd.Series | None) -> list[str]:
    if row is None:
        return ["null"] * 3
    return [f"{row.conv_rate:.3f}", f"{row.acc_rate:.3f}", str(row.avg_daily_trips)]


def _as_of(history: pd.DataFrame, driver_id: int, ts: datetime) -> pd.Series | None:
    """The row a point-in-time join must pick, found by brute force (DESIGN §3)."""
    rows = history[
        (history.driver_id == driver_id)
        & (history.event_timestamp <= ts)
        & (history.event_timestamp >= ts - MAX_AGE)
    ]
    if rows.empty:
        return None
    return rows.sort_values(["event_timestamp", "created"]).iloc[-1]


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def _check_training_set(out: str, history: pd.DataFrame) -> list[list[str]]:
    assert "Training set: 6 rows x 5 columns" in out
    rows = _rows(out, "Training set (first rows)")
    assert [r[0] for r in rows] == ["1001", "1002", "1001", "1003", "1004", "9999"]
    for driver_id, ts, *values in rows:
        assert values == _formatted(_as_of(history, int(driver_id), _utc(ts))), (driver_id, ts)
    assert rows[4][2:] == rows[5][2:] == ["null"] * 3
    last_hour = history.event_timestamp.max()
    assert _utc(rows[2][1]) == last_hour - timedelta(days=1)
    assert _utc(rows[3][1]) == last_hour - timedelta(minutes=30)
    return rows


def _check_online(out: str, history: pd.DataFrame) -> None:
    rows = _rows(out, "Online features of driver_stats")
    assert [(r[0], r[1]) for r in rows] == [
        (str(d), f) for d in (1001, 1002, 1003, 9999) for f in FEATURES
    ]
    last_hour = history.event_timestamp.max()
    for driver_id in (1001, 1002, 1003):
        latest = _as_of(history, driver_id, last_hour)
        mine = [r for r in rows if r[0] == str(driver_id)]
        assert [r[2] for r in mine] == _formatted(latest)
        assert {(r[3], r[4]) for r in mine} == {("PRESENT", f"{last_hour:%Y-%m-%d %H:%M:%S}")}
    assert [r[2:] for r in rows if r[0] == "9999"] == [["null", "NOT_FOUND", ""]] * 3


def test_quickstart_applies_ingests_trains_and_serves(quickstart: Path) -> None:
    first = _run([sys.executable, "quickstart.py"], quickstart)
    assert (first.returncode, first.stderr) == (0, "")
    out = first.stdout
    assert out.startswith("potluck quickstart, project 'default'\n")
    assert "Step 1: Apply the definitions" in out
    assert re.search(r"│ entity\s+│ driver_id\s+│ create\s+│\s+│", out)
    assert re.search(r"│ feature_table\s+│ driver_stats\s+│ create\s+│ 1\s+│", out)
    assert "Step 2: List the registry" in out
    assert re.search(r"│ driver_id\s+│ INT64\s+│ A driver's id\.\s+│", out)
    assert re.search(
        r"│ driver_stats\s+│ driver_id\s+│ conv_rate, acc_rate, avg_daily_trips\s+│ 1d\s+│ 1\s+│",
        out,
    )

    history = _history(quickstart)
    assert len(history) == 50 * 72
    assert sorted(history.driver_id.unique()) == list(range(1001, 1051))
    last_hour = history.event_timestamp.max()
    now = datetime.now(timezone.utc)
    assert timedelta(0) <= now - last_hour < timedelta(hours=1, minutes=5)
    assert history.event_timestamp.min() == last_hour - timedelta(hours=71)

    assert "Step 3: Ingest the drivers' history" in out
    assert "Generated 3600 rows: 50 drivers x 72 hours" in out
    report = dict(_rows(out, "IngestionReport"))
    ingestion_id = history.ingestion_id.unique().tolist()
    assert len(ingestion_id) == 1
    assert report["table"] == "driver_stats"
    assert report["rows"] == "3600"
    assert report["ingestion id"] == ingestion_id[0]
    assert report["files"] == f"data/driver_stats/part-{ingestion_id[0]}-00000.parquet"

    assert "Step 4: Build a training set" in out
    _check_training_set(out, history)

    assert "Step 5: Load the online store" in out
    assert _rows(out, "Offline-to-online job")[0][1:] == ["SUCCEEDED", "1250", "50", "1200", "0"]

    assert "Step 6: Read online features" in out
    _check_online(out, history)
    assert out.endswith(
        "Done. Try:\n"
        "  potluck feature-tables describe driver_stats --history\n"
        "  potluck online get driver_stats:conv_rate --entity driver_id=1001\n"
        "  potluck jobs list\n"
    )

    with Client(settings=Settings(root=quickstart)) as client:
        stored = [*client.list_entities(), *client.list_feature_tables()]
    defined = [
        replace(d, batch_source=replace(d.batch_source, path=f"{quickstart}/{d.batch_source.path}"))
        if isinstance(d, FeatureTable) and d.batch_source is not None
        else d
        for d in load_definitions(quickstart / "definitions.py")
    ]
    assert stored == defined  # batch source paths are stored absolute, resolved at apply
    assert (quickstart / ".potluck" / "registry.db").is_file()
    assert (quickstart / ".potluck" / "online.db").is_file()
    assert sorted(p.name for p in quickstart.iterdir()) == [
        ".gitignore",
        ".potluck",
        "data",
        "definitions.py",
        "definitions.yaml",
        "quickstart.py",
    ]


def test_quickstart_runs_again_and_its_hints_work(quickstart: Path) -> None:
    first = _run([sys.executable, "quickstart.py"], quickstart)
    assert (first.returncode, first.stderr) == (0, "")
    second = _run([sys.executable, "quickstart.py"], quickstart)
    assert (second.returncode, second.stderr) == (0, "")
    out = second.stdout
    assert re.search(r"│ entity\s+│ driver_id\s+│ unchanged\s+│", out)
    assert re.search(r"│ feature_table\s+│ driver_stats\s+│ unchanged\s+│ 1\s+│", out)
    assert " create " not in out

    history = _history(quickstart)
    assert len(history) == 2 * 50 * 72
    assert history.ingestion_id.nunique() == 2
    assert _rows(out, "IngestionReport")[1] == ["rows", "3600"]
    _check_training_set(out, history)
    # The second job reads both ingestions' rows in its range (fewer from the first one if the
    # hour turned between the runs); either way each driver's newest row replaces the stored one.
    job = _rows(out, "Offline-to-online job")[0]
    read, written, skipped, rejected = map(int, job[2:])
    assert (job[1], written, rejected, read) == ("SUCCEEDED", 50, 0, written + skipped)
    assert read in (2450, 2500)
    _check_online(out, history)

    described = _run(
        [str(POTLUCK), "feature-tables", "describe", "driver_stats", "--history", "-o", "json"],
        quickstart,
    )
    assert (described.returncode, described.stderr) == (0, "")
    table = json.loads(described.stdout)
    assert (table["revision"], [h["revision"] for h in table["history"]]) == (1, [1])

    online = _run(
        [
            str(POTLUCK),
            "online",
            "get",
            "driver_stats:conv_rate",
            "--entity",
            "driver_id=1001",
            "--output",
            "json",
        ],
        quickstart,
    )
    assert (online.returncode, online.stderr) == (0, "")
    latest = _as_of(history, 1001, history.event_timestamp.max())
    assert latest is not None
    got = json.loads(online.stdout)
    assert got["values"] == {
        "driver_id": [1001],
        "driver_stats__conv_rate": [float(latest.conv_rate)],
    }
    assert got["statuses"] == {"driver_id": ["PRESENT"], "driver_stats__conv_rate": ["PRESENT"]}

    jobs = _run([str(POTLUCK), "jobs", "list", "--output", "json"], quickstart)
    assert (jobs.returncode, jobs.stderr) == (0, "")
    assert [(j["table"], j["status"]) for j in json.loads(jobs.stdout)] == [
        ("driver_stats", "SUCCEEDED")
    ] * 2
