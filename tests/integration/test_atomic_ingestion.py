"""Ingestion is all-or-nothing: kills at every commit step and at random moments, live readers,
concurrent writers, leftovers cleaned, plain Parquet folders adopted, training sets rebuilt.

Every ingestion runs in its own process (``_ingest_worker.py``) against one SQLite registry and
one local batch source; the test process reads through the real DuckDB offline store.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import ValidationError
from potluck.offline.commits import LOCK_FOLDER, read_source

WORKER = Path(__file__).with_name("_ingest_worker.py")
BASE = pd.Timestamp("2024-05-01", tz="UTC")


def _definitions(source: Path) -> list[Entity | FeatureTable]:
    return [
        Entity(name="driver_id", value_type=ValueType.INT64),
        FeatureTable(
            name="driver_stats",
            entities=["driver_id"],
            features=[Feature(name="trips", value_type=ValueType.INT64)],
            batch_source=FileSource(
                path=str(source),
                event_timestamp_column="event_timestamp",
                date_partition_column="day",
            ),
        ),
    ]


@pytest.fixture()
def config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "potluck.yaml"
    path.write_text(yaml.safe_dump({"registry": f"sqlite:///{tmp_path}/registry.db"}))
    with Client(settings=load_settings(path)) as client:
        client.apply(_definitions(tmp_path / "source"))
    yield path


def _source(config: Path) -> Path:
    return config.parent / "source"


def _worker(
    config: Path, mode: str, start: int, count: int, repeat: int = 1
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(config), mode, str(start), str(count), str(repeat)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ingest(config: Path, start: int, count: int) -> None:
    done = _worker(config, "run", start, count)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err


def _visible_ids(config: Path) -> list[int]:
    """The driver ids a reader sees (the offline store, as retrieval and jobs read)."""
    with Client(settings=load_settings(config)) as client:
        table = client.get_feature_table("driver_stats")
        batches = client._offline().read_range(table, None, None)
        return sorted(i for batch in batches for i in batch.column("driver_id").to_pylist())


def _on_disk(source: Path) -> set[str]:
    return {
        str(p) for p in source.rglob("*.parquet") if not str(p.relative_to(source)).startswith("_")
    }


def _committed(source: Path) -> set[str]:
    return set(read_source(str(source)).files.paths)


@pytest.mark.parametrize(
    "mode", ["create", "first-write", "mid-write", "before-commit", "after-commit"]
)
def test_a_kill_at_each_commit_step_shows_all_or_nothing_and_is_cleaned_up(
    config: Path, mode: str
) -> None:
    source = _source(config)
    if mode == "create":
        shutil.rmtree(source)  # the table does not exist yet: the kill hits its creation
        before: list[int] = []
    else:
        _ingest(config, 0, 20)
        before = list(range(20))
    killed = _worker(config, mode, 1000, 100)
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    expected = before + (list(range(1000, 1100)) if mode == "after-commit" else [])
    assert _visible_ids(config) == expected
    if mode in ("mid-write", "before-commit"):
        assert _on_disk(source) - _committed(source)  # the dead ingestion's files are there...
    _ingest(config, 5000, 10)  # ...until the next ingestion cleans them up
    assert _visible_ids(config) == expected + list(range(5000, 5010))
    assert _on_disk(source) == _committed(source)
    assert [p.name for p in (source / LOCK_FOLDER).iterdir()] == []


def test_kills_at_random_moments_never_leave_part_of_an_ingestion(config: Path) -> None:
    source = _source(config)
    rows = 20_000
    started = time.monotonic()
    _ingest(config, 0, rows)
    took = time.monotonic() - started
    expected = list(range(rows))
    rng = random.Random(7)
    outcomes = set()
    for attempt in range(1, 7):
        start = attempt * rows
        worker = _worker(config, "run", start, rows)
        time.sleep(rng.uniform(0.3, took))
        worker.kill()
        worker.communicate(timeout=60)
        seen = _visible_ids(config)
        if worker.returncode == 0 or seen != expected:
            expected = expected + list(range(start, start + rows))
            outcomes.add("committed")
        else:
            outcomes.add("killed")
        assert seen == expected
    _ingest(config, 10**6, 5)
    assert _visible_ids(config) == expected + list(range(10**6, 10**6 + 5))
    assert _on_disk(source) == _committed(source)
    assert "killed" in outcomes


def test_live_readers_see_whole_ingestions_only(config: Path) -> None:
    rows, rounds = 500, 8
    _ingest(config, 0, rows)
    writer = _worker(config, "run", rows, rows, repeat=rounds)
    counts = []
    while writer.poll() is None:
        counts.append(len(_visible_ids(config)))
    writer.communicate(timeout=60)
    assert writer.returncode == 0
    counts.append(len(_visible_ids(config)))
    assert all(count % rows == 0 for count in counts), counts
    assert counts == sorted(counts)
    assert counts[-1] == rows * (rounds + 1)


def test_concurrent_ingests_from_many_processes_lose_no_row(config: Path) -> None:
    processes, rounds, rows = 6, 4, 50
    workers = [_worker(config, "run", p * 10_000, rows, repeat=rounds) for p in range(processes)]
    versions = []
    for worker in workers:
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        versions += [int(v) for v in out.split()]
    assert _visible_ids(config) == sorted(
        p * 10_000 + i for p in range(processes) for i in range(rows * rounds)
    )
    assert sorted(versions) == list(range(1, processes * rounds + 1))  # one version each


def test_gc_command_finds_leftovers_and_spares_other_files(config: Path) -> None:
    source = _source(config)
    _ingest(config, 0, 10)
    killed = _worker(config, "before-commit", 100, 50)
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    leftovers = _on_disk(source) - _committed(source)
    assert leftovers
    (source / "notes.txt").write_text("another tool's file")
    runner = CliRunner()
    env = {"POTLUCK_CONFIG": str(config)}
    dry = runner.invoke(app, ["gc", "--dry-run", "--output", "json"], env=env)
    assert dry.exit_code == 0, dry.output
    (report,) = json.loads(dry.output)
    assert (set(report["deleted"]), report["dry_run"]) == (leftovers, True)
    assert _on_disk(source) - _committed(source) == leftovers
    done = runner.invoke(app, ["gc", "driver_stats"], env=env)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] == f"{source}: deleted {len(leftovers)} file(s)"
    assert _on_disk(source) == _committed(source)
    assert (source / "notes.txt").read_text() == "another tool's file"
    assert _visible_ids(config) == list(range(10))


def test_a_plain_parquet_folder_stays_readable_and_is_adopted_by_the_first_ingest(
    tmp_path: Path,
) -> None:
    source = tmp_path / "plain"
    (source / "day=2024-05-01").mkdir(parents=True)
    foreign = pa.table(
        {
            "driver_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([BASE, BASE], pa.timestamp("us", tz="UTC")),
            "trips": pa.array([10, 20], pa.int64()),
        }
    )
    pq.write_table(foreign, source / "day=2024-05-01" / "from-spark.parquet")
    settings = load_settings(overrides={"registry": f"sqlite:///{tmp_path}/r.db", "root": tmp_path})
    with Client(settings=settings) as client:
        client.apply(_definitions(source))
        assert not (source / "_delta_log").exists()  # apply leaves other tools' folders alone
        table = client.get_feature_table("driver_stats")
        store = client._offline()
        assert store.source_version(table).version is None
        entities = pd.DataFrame({"driver_id": [1, 2, 3], "event_timestamp": [BASE] * 3})
        training = client.get_historical_features(["driver_stats:trips"], entities)
        assert training.source_versions == {"driver_stats": None}
        assert training.to_pandas()["driver_stats__trips"].tolist()[:2] == [10, 20]
        report = client.ingest(
            "driver_stats",
            pd.DataFrame({"driver_id": [3], "event_timestamp": [BASE], "trips": [30]}),
        )
        assert report.version == 1  # version 0 holds the files that were there
        assert (source / "day=2024-05-01" / "from-spark.parquet").exists()
        after = client.get_historical_features(["driver_stats:trips"], entities)
        assert after.to_pandas()["driver_stats__trips"].tolist() == [10, 20, 30]
        first = client.get_historical_features(
            ["driver_stats:trips"], entities, versions={"driver_stats": 0}
        )
        assert first.to_pandas()["driver_stats__trips"].tolist()[:2] == [10, 20]
        assert pd.isna(first.to_pandas()["driver_stats__trips"].tolist()[2])


def test_a_training_set_names_its_versions_and_is_rebuilt_exactly(config: Path) -> None:
    _ingest(config, 0, 5)
    with Client(settings=load_settings(config)) as client:
        entities = pd.DataFrame(
            {"driver_id": [0, 1, 2], "event_timestamp": [BASE + timedelta(days=30)] * 3}
        )
        job = client.get_historical_features(["driver_stats:trips"], entities)
        assert job.source_versions == {"driver_stats": 1}
        first = job.to_pandas()
        client.ingest(
            "driver_stats",
            pd.DataFrame(
                {
                    "driver_id": [0, 1],
                    "event_timestamp": [BASE + timedelta(days=20)] * 2,
                    "trips": [100, 101],
                }
            ),
        )
        assert job.to_pandas().equals(first)  # the job stays pinned to what it read
        latest = client.get_historical_features(["driver_stats:trips"], entities).to_pandas()
        assert latest["driver_stats__trips"].tolist() == [100, 101, 2]
        again = client.get_historical_features(
            ["driver_stats:trips"], entities, versions=job.source_versions
        )
        assert again.to_pandas().equals(first)
        location = _source(config)
        for bad, message in [
            (99, f"the table at '{location}' has no version 99 yet: its latest is 2"),
            (10**23, f"the table at '{location}' has no version {10**23} yet: its latest is 2"),
            (-1, "a table version is a whole number from 0, got -1"),
            (True, "a table version is a whole number from 0, got True"),
            ("3", "a table version is a whole number from 0, got '3'"),
            (1.5, "a table version is a whole number from 0, got 1.5"),
        ]:
            with pytest.raises(ValidationError) as refused:
                client.get_historical_features(
                    ["driver_stats:trips"], entities, versions={"driver_stats": bad}
                )
            assert refused.value.message == message
        with pytest.raises(ValidationError) as unknown:
            client.get_historical_features(["driver_stats:trips"], entities, versions={"x": 1})
        assert unknown.value.message == (
            "versions name feature table 'x', which the features requested do not use; tables "
            "joined: driver_stats"
        )


def test_gc_leaves_plain_folders_and_other_tools_temp_files_alone(
    config: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    old_named = plain / "part-20240101T000000000000Z-0123abcd-00000.parquet"
    pq.write_table(pa.table({"x": [1]}), old_named)  # an earlier potluck's file: data here
    source = _source(config)
    _ingest(config, 0, 5)
    other_temp = source / "_tmp-notes.txt"
    other_temp.write_text("another tool's")
    own_temp = source / f"_tmp-{'a' * 32}.parquet"  # how potluck before 0.2 staged a file
    pq.write_table(pa.table({"x": [1]}), own_temp)
    week_ago = time.time() - 7 * 86_400
    for path in (old_named, other_temp, own_temp):
        os.utime(path, (week_ago, week_ago))
    from potluck.offline.commits import collect_garbage

    assert collect_garbage(str(plain), grace=timedelta(0)).deleted == ()
    assert old_named.exists()
    assert collect_garbage(str(source), grace=timedelta(hours=1)).deleted == (str(own_temp),)
    assert other_temp.exists() and not own_temp.exists()


def test_a_lock_left_before_its_rename_is_cleaned(config: Path) -> None:
    source = _source(config)
    _ingest(config, 0, 5)
    hidden = source / LOCK_FOLDER / ".20240101T000000000000Z-0123abcd.lock"
    hidden.write_bytes(b"")  # its owner died between taking the lock and renaming it
    _ingest(config, 10, 5)
    assert sorted(p.name for p in (source / LOCK_FOLDER).iterdir()) == []
