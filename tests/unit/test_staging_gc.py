"""The age limit of staging locations: real folders with set mtimes, exact reports and listings.

Covers :mod:`potluck.offline.staging_gc` (what is old, what is in use, what is potluck's), the
locations and running jobs :mod:`potluck.jobservice.staging_age` reads from settings and a real
SQLite registry, and ``potluck gc --staging``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from potluck.cli.main import app
from potluck.config import Settings, load_settings
from potluck.errors import ConfigError, ValidationError
from potluck.ingestion.jobs import HISTORICAL_RETRIEVAL, Job, JobSpec, JobStatus, save_job
from potluck.jobservice.staging_age import (
    StagingLocation,
    collect,
    collection_interval,
    running_calls,
    staging_locations,
)
from potluck.offline.staging_gc import (
    ABANDONED_WRITE,
    StagedItem,
    StagingReport,
    collect_staging,
)
from potluck.registry.sql import SqlRegistry

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
SPARK_SET = "20300520T120000000000Z-1a2b3c4d"
CALL = "0123456789abcdef0123456789abcdef"


def put(path: Path, data: bytes, age: timedelta, now: datetime = NOW) -> None:
    """Write ``path`` (folders made) and set its mtime to ``age`` before ``now``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = (now - age).timestamp()
    os.utime(path, (when, when))


def aged_folder(path: Path, age: timedelta) -> None:
    path.mkdir(parents=True, exist_ok=True)
    when = (NOW - age).timestamp()
    os.utime(path, (when, when))


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture()
def staging(tmp_path: Path) -> Path:
    """A staging folder holding every kind of thing, at known ages."""
    root = tmp_path / "staging"
    put(root / SPARK_SET / "part-00000-x.parquet", b"12345", 12 * DAY)
    put(root / SPARK_SET / "_SUCCESS", b"", 12 * DAY)
    put(root / CALL / "entities.parquet", b"123", 9 * DAY)
    put(root / CALL / "output" / "part-00000.parquet", b"1234567", 8 * DAY)
    # Young: its newest file is a day old, though an older one is in it.
    young = "20300531T120000000000Z-00000000"
    put(root / young / "part-00000-x.parquet", b"1", 30 * DAY)
    put(root / young / "part-00001-x.parquet", b"22", DAY)
    # Not potluck's: other names, a file named like a folder of ours, other files in _logs.
    put(root / "models" / "m.bin", b"x", 50 * DAY)
    put(root / "0123456789ABCDEF0123456789ABCDEF" / "f", b"x", 50 * DAY)  # upper-case: not ours
    put(root / "fedcba9876543210fedcba9876543210", b"a file", 50 * DAY)
    put(root / "notes.txt", b"x", 50 * DAY)
    put(root / "_logs" / "other.log", b"x", 50 * DAY)
    return root


def test_old_finished_folders_go_young_running_and_foreign_ones_stay(staging: Path) -> None:
    report = collect_staging(str(staging), older_than=7 * DAY, now=NOW)

    assert report == StagingReport(
        str(staging),
        exists=True,
        deleted=(
            StagedItem(f"{staging}/{SPARK_SET}", "training_set", 12 * DAY, 5),
            StagedItem(f"{staging}/{CALL}", "staged_call", 8 * DAY, 10),
        ),
    )
    assert listing(staging) == [
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789ABCDEF0123456789ABCDEF/f",
        "20300531T120000000000Z-00000000",
        "20300531T120000000000Z-00000000/part-00000-x.parquet",
        "20300531T120000000000Z-00000000/part-00001-x.parquet",
        "_logs",
        "_logs/other.log",
        "fedcba9876543210fedcba9876543210",
        "models",
        "models/m.bin",
        "notes.txt",
    ]


def test_a_running_jobs_folder_is_kept_however_old_and_the_listing_comes_first(
    staging: Path,
) -> None:
    asked: list[list[str]] = []

    def running() -> set[str]:
        asked.append(listing(staging))  # called after the listing, before any deletion
        return {CALL}

    report = collect_staging(str(staging), older_than=DAY, running=running, now=NOW)

    assert len(asked) == 1 and f"{SPARK_SET}/_SUCCESS" in asked[0]
    assert [i.path.rsplit("/", 1)[1] for i in report.deleted] == [
        SPARK_SET,
        "20300531T120000000000Z-00000000",  # exactly a day old: at least older_than goes
    ]
    assert [i.path.rsplit("/", 1)[1] for i in report.kept_running] == [CALL]
    assert (staging / CALL / "output" / "part-00000.parquet").read_bytes() == b"1234567"


def test_dry_run_reports_the_same_and_deletes_nothing(staging: Path) -> None:
    before = listing(staging)
    dry = collect_staging(str(staging), older_than=7 * DAY, dry_run=True, now=NOW)

    assert listing(staging) == before
    real = collect_staging(str(staging), older_than=7 * DAY, now=NOW)
    assert (dry.deleted, dry.kept_running, dry.dry_run) == (real.deleted, real.kept_running, True)


def test_a_folder_without_files_is_as_old_as_its_newest_subfolder(tmp_path: Path) -> None:
    aged_folder(tmp_path / CALL / "output", 3 * DAY)
    aged_folder(tmp_path / CALL, 10 * DAY)

    assert collect_staging(str(tmp_path), older_than=4 * DAY, now=NOW).deleted == ()
    report = collect_staging(str(tmp_path), older_than=3 * DAY, now=NOW)
    assert report.deleted == (StagedItem(f"{tmp_path}/{CALL}", "staged_call", 3 * DAY, 0),)
    assert listing(tmp_path) == []


def test_driver_logs_go_by_age_unless_their_driver_runs(tmp_path: Path) -> None:
    dead = dead_pid()
    put(tmp_path / "_logs" / f"spark-driver-{dead}.log", b"old", 8 * DAY)
    put(tmp_path / "_logs" / f"spark-driver-{os.getpid()}.log", b"running", 8 * DAY)
    put(tmp_path / "_logs" / "spark-driver-1234567.log", b"young", DAY)
    put(tmp_path / "_logs" / "spark-driver-x.log", b"foreign", 8 * DAY)

    report = collect_staging(str(tmp_path), older_than=7 * DAY, now=NOW)

    assert report.deleted == (
        StagedItem(f"{tmp_path}/_logs/spark-driver-{dead}.log", "driver_log", 8 * DAY, 3),
    )
    assert report.kept_running == (
        StagedItem(f"{tmp_path}/_logs/spark-driver-{os.getpid()}.log", "driver_log", 8 * DAY, 7),
    )
    assert sorted(p.name for p in (tmp_path / "_logs").iterdir()) == sorted(
        [f"spark-driver-{os.getpid()}.log", "spark-driver-1234567.log", "spark-driver-x.log"]
    )


def test_a_file_url_is_collected_like_its_path(staging: Path) -> None:
    url = staging.as_uri()

    report = collect_staging(url, older_than=7 * DAY, now=NOW)

    assert [(i.path, i.kind, i.size) for i in report.deleted] == [
        (f"{url}/{SPARK_SET}", "training_set", 5),
        (f"{url}/{CALL}", "staged_call", 10),
    ]
    assert not (staging / SPARK_SET).exists() and (staging / "models" / "m.bin").exists()


def test_a_missing_location_is_empty_and_a_file_is_refused(tmp_path: Path) -> None:
    assert collect_staging(str(tmp_path / "none"), older_than=DAY) == StagingReport(
        str(tmp_path / "none"), exists=False
    )
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValidationError, match="afile"):
        collect_staging(str(tmp_path / "afile"), older_than=DAY)


def test_an_undeletable_folder_is_reported_and_the_rest_still_goes(tmp_path: Path) -> None:
    """A folder this process may not empty: read-only for a user, immutable for root (CI)."""
    put(tmp_path / SPARK_SET / "part-00000.parquet", b"x", 9 * DAY)
    put(tmp_path / CALL / "entities.parquet", b"y", 8 * DAY)
    locked = tmp_path / SPARK_SET
    as_root = os.geteuid() == 0
    if as_root:  # root may delete from a read-only folder, not from an immutable one
        subprocess.run(["chattr", "+i", str(locked)], check=True)
    else:
        locked.chmod(0o500)
    try:
        report = collect_staging(str(tmp_path), older_than=7 * DAY, now=NOW)
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        else:
            locked.chmod(0o700)
    reason = "operation not permitted" if as_root else "permission denied"
    assert [i.path for i in report.deleted] == [f"{tmp_path}/{CALL}"]
    assert [(i.path, why) for i, why in report.failed] == [
        (f"{tmp_path}/{SPARK_SET}", f"cannot delete '{tmp_path}/{SPARK_SET}': {reason}")
    ]


@settings(max_examples=40, deadline=None)
@given(
    folders=st.lists(
        st.tuples(st.integers(0, 20 * 24), st.booleans(), st.booleans()), min_size=1, max_size=6
    ),
    older_than=st.integers(0, 20 * 24),
)
def test_exactly_the_old_unused_folders_go(
    folders: list[tuple[int, bool, bool]], older_than: int
) -> None:
    """Folder ``i`` is ``hours`` old, maybe running, maybe holding a Spark write: in progress
    while younger than a day, abandoned after."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = [f"{i:032x}" for i in range(len(folders))]
        for name, (hours, _, writing) in zip(names, folders, strict=True):
            put(root / name / "f", b"x", timedelta(hours=hours))
            if writing:
                aged_folder(root / name / "_temporary", timedelta(hours=hours))
        running = {n for n, (_, run, _) in zip(names, folders, strict=True) if run}

        report = collect_staging(
            tmp, older_than=timedelta(hours=older_than), running=lambda: running, now=NOW
        )

        old = {n for n, (hours, _, _) in zip(names, folders, strict=True) if hours >= older_than}
        writing = {n for n, (h, _, w) in zip(names, folders, strict=True) if w and h < 24}
        busy = running | writing
        assert {i.path.rsplit("/", 1)[1] for i in report.deleted} == old - busy
        assert {i.path.rsplit("/", 1)[1] for i in report.kept_running} == old & busy
        assert {p.name for p in root.iterdir()} == set(names) - (old - busy)


# ---- the locations and running jobs, from settings and a registry ------------------------------


def _settings(tmp_path: Path, **values: object) -> Settings:
    import yaml

    path = tmp_path / "potluck.yaml"
    path.write_text(yaml.safe_dump({"registry": f"sqlite:///{tmp_path / 'registry.db'}", **values}))
    return load_settings(path, environ={})


def test_the_locations_are_both_settings_relative_to_the_config_folder(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")  # the Spark store's section is checked by its config class
    both = _settings(
        tmp_path,
        staging_location="jobs",
        offline_store={"type": "spark", "master": "local[1]", "staging_location": "sets"},
    )
    assert staging_locations(both) == (
        StagingLocation("staging_location", "jobs", str(tmp_path / "jobs")),
        StagingLocation("offline_store.staging_location", "sets", str(tmp_path / "sets")),
    )
    same = _settings(
        tmp_path,
        staging_location=str(tmp_path / "s"),
        offline_store={"type": "spark", "master": "local[1]", "staging_location": "s"},
    )
    assert [w.setting for w in staging_locations(same)] == ["staging_location"]
    with pytest.raises(ConfigError, match=r"^invalid setting 'staging_location': not set, and"):
        staging_locations(_settings(tmp_path))


def _retrieval(project: str, output: str, **changes: object) -> Job:
    spec = JobSpec(
        kind=HISTORICAL_RETRIEVAL,
        project=project,
        table="",
        feature_refs=("t:f",),
        entity_source="/e.parquet",
        output_location=output,
    )
    job = Job.new(spec, "duckdb")
    return job.evolve(**changes) if changes else job


def test_running_calls_are_the_unended_retrievals_of_every_project(tmp_path: Path) -> None:
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        for project in ("alpha", "beta"):
            registry.create_project(project)
        stale = datetime.now(timezone.utc) - timedelta(hours=1)
        jobs = [
            _retrieval("alpha", f"{tmp_path}/{'a' * 32}/output", status=JobStatus.RUNNING),
            _retrieval("beta", f"s3://b/stage/{'b' * 32}/output/"),  # PENDING
            _retrieval("alpha", f"{tmp_path}/{'c' * 32}/output", status=JobStatus.SUCCEEDED),
            _retrieval("beta", f"{tmp_path}/{'d' * 32}/output", status=JobStatus.FAILED),
        ]
        lost = _retrieval("alpha", f"{tmp_path}/{'e' * 32}/output", status=JobStatus.RUNNING)
        for job in [*jobs, replace(lost, updated_at=stale)]:  # its heartbeat stopped an hour ago
            save_job(registry, job)
        assert running_calls(registry) == frozenset({"a" * 32, "b" * 32})
    finally:
        registry.close()


def test_collect_names_the_setting_of_a_bad_location(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    bad = _settings(tmp_path, staging_location="afile")
    registry = SqlRegistry("sqlite:///:memory:")
    with pytest.raises(ConfigError, match=r"^invalid setting 'staging_location' = 'afile': "):
        collect(bad, registry, older_than=DAY)


def test_the_job_service_collects_every_tenth_of_the_age_and_at_least_hourly() -> None:
    assert collection_interval(timedelta(hours=2)) == timedelta(minutes=12)
    assert collection_interval(timedelta(days=7)) == timedelta(hours=1)


def test_the_setting_is_a_duration_of_at_least_a_minute(tmp_path: Path) -> None:
    assert _settings(tmp_path, staging_max_age="7d").staging_max_age == 7 * DAY
    assert _settings(tmp_path).staging_max_age is None
    with pytest.raises(ConfigError, match=r"'staging_max_age' = '30s': must be at least 1m"):
        _settings(tmp_path, staging_max_age="30s")
    with pytest.raises(ConfigError, match=r"'staging_max_age' = 'soon': 'soon' is not a dur"):
        _settings(tmp_path, staging_max_age="soon")


# ---- potluck gc --staging ----------------------------------------------------------------------


def test_gc_staging_prints_exact_json_and_deletes(
    staging: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "potluck.yaml").write_text(f"staging_location: {staging.name}\n")
    monkeypatch.chdir(tmp_path)
    real_now = datetime.now(timezone.utc)
    for path in staging.rglob("*"):  # the fixture's ages, measured from now
        mtime = path.stat().st_mtime
        shifted = mtime + (real_now - NOW).total_seconds()
        os.utime(path, (shifted, shifted))
    started = time.time()
    result = CliRunner().invoke(app, ["gc", "--staging", "--older-than", "7d", "-o", "json"])
    waited = time.time() - started

    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    ages = [item.pop("age_seconds") for item in printed[0]["deleted"]]
    ages += [item.pop("age_seconds") for item in printed[0]["kept_running"]]
    for age, days in zip(ages, (12, 8), strict=True):
        assert days * 86_400 <= age <= days * 86_400 + waited + 1
    assert printed == [
        {
            "setting": "staging_location",
            "location": str(staging),
            "exists": True,
            "older_than": "7d",
            "dry_run": False,
            "deleted": [
                {"path": f"{staging}/{SPARK_SET}", "kind": "training_set", "size_bytes": 5},
                {"path": f"{staging}/{CALL}", "kind": "staged_call", "size_bytes": 10},
            ],
            "kept_running": [],
            "failed": [],
        }
    ]
    assert not (staging / SPARK_SET).exists() and not (staging / CALL).exists()


def test_gc_staging_dry_run_text_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(timezone.utc)
    put(tmp_path / "st" / CALL / "entities.parquet", b"x" * 2048, 3 * DAY, now)
    (tmp_path / "potluck.yaml").write_text("staging_location: st\n")
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["gc", "--staging", "--older-than", "2d", "--dry-run"])

    assert result.exit_code == 0, result.output
    head, line = result.stdout.splitlines()
    assert head == f"{tmp_path / 'st'} (staging_location): would delete 1 item(s), 2.0 KiB"
    assert line.startswith(f"  {tmp_path / 'st'}/{CALL}  Job Service call, 3d")
    assert line.endswith(" old, 2.0 KiB")
    assert (tmp_path / "st" / CALL / "entities.parquet").exists()


def test_a_spark_write_is_kept_for_a_day_then_judged_by_its_age(tmp_path: Path) -> None:
    running_write = "20300601T000000000000Z-0000000a"
    dead_write = "20300601T000000000000Z-0000000b"
    for name, age in ((running_write, timedelta(hours=23)), (dead_write, timedelta(hours=25))):
        for folder in ("_temporary/0", "_temporary", ""):
            aged_folder(tmp_path / name / folder, age)

    report = collect_staging(str(tmp_path), older_than=timedelta(hours=1), now=NOW)

    assert report == StagingReport(
        str(tmp_path),
        exists=True,
        deleted=(StagedItem(f"{tmp_path}/{dead_write}", "training_set", timedelta(hours=25), 0),),
        kept_running=(
            StagedItem(f"{tmp_path}/{running_write}", "training_set", timedelta(hours=23), 0),
        ),
    )
    assert timedelta(hours=24) == ABANDONED_WRITE


def _aged_link(link: Path, target: Path, age: timedelta) -> None:
    link.symlink_to(target)
    when = (NOW - age).timestamp()
    os.utime(link, (when, when), follow_symlinks=False)


def test_links_are_judged_as_themselves_and_never_followed(tmp_path: Path) -> None:
    """A loop, a link out of the location and a potluck-named link: no walk through any."""
    root = tmp_path / "staging"
    outside = tmp_path / "outside"
    put(outside / "data.bin", b"x" * 1000, timedelta(seconds=1))  # young: would keep a folder
    put(root / CALL / "entities.parquet", b"123", 9 * DAY)
    _aged_link(root / CALL / "up", Path(".."), 9 * DAY)  # a loop
    _aged_link(root / CALL / "self", Path("."), 9 * DAY)
    _aged_link(root / CALL / "out", outside, 9 * DAY)
    _aged_link(root / SPARK_SET, outside, 9 * DAY)  # named as ours, but a link: not ours
    put(root / "foreign" / "f", b"x", 9 * DAY)
    _aged_link(root / "foreign" / "loop", Path(".."), 9 * DAY)  # not ours: never walked

    size = 3 + sum(len(os.readlink(root / CALL / n)) for n in ("up", "self", "out"))

    report = collect_staging(str(root), older_than=7 * DAY, now=NOW)

    assert report.deleted == (StagedItem(f"{root}/{CALL}", "staged_call", 9 * DAY, size),)
    assert listing(outside) == ["data.bin"]
    assert (root / SPARK_SET).is_symlink() and (root / "foreign" / "f").exists()


@pytest.mark.parametrize("pid", ["0", "99999999999999999999", str(2**31)])
def test_a_driver_log_no_process_can_write_is_judged_by_its_age(tmp_path: Path, pid: str) -> None:
    put(tmp_path / "_logs" / f"spark-driver-{pid}.log", b"log", 9 * DAY)

    report = collect_staging(str(tmp_path), older_than=7 * DAY, now=NOW)

    assert report.deleted == (
        StagedItem(f"{tmp_path}/_logs/spark-driver-{pid}.log", "driver_log", 9 * DAY, 3),
    )
