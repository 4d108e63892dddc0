"""Faults a second new-user trial of issue 8 found, through the real entry point: Ctrl-C pressed
once or several times quickly during ``ingest-online``; a program that ends while its job runs;
what a ``.py`` definitions file writes to file descriptor 1; a confirmation on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from potluck import Client
from potluck.cli.main import app
from potluck.config import Settings
from potluck.ingestion.jobs import Job, JobStatus

POTLUCK = Path(sys.executable).parent / "potluck"
ROWS = 600_000
"""Rows of the slow project's source: 10 batches, seconds of work for the local engine."""

runner = CliRunner()


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose offline-to-online job takes seconds (600,000 rows, 50,000 keys,
    in a plain Parquet folder)."""
    root = tmp_path_factory.mktemp("slow")
    (root / "potluck.yaml").write_text("offline_store: {type: duckdb, threads: 1}\n")
    (root / "definitions.yaml").write_text(
        "entities:\n  - {name: driver_id, value_type: INT64}\nfeature_tables:\n"
        "  - name: driver_stats\n    entities: [driver_id]\n"
        "    features: [{name: conv_rate, value_type: DOUBLE}]\n"
        "    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}\n"
    )
    rng = np.random.default_rng(0)
    start = np.datetime64("2024-01-01T00:00:00", "us").astype(np.int64)
    source = root / "data" / "driver_stats"
    source.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "driver_id": rng.integers(0, 50_000, ROWS),
                "event_timestamp": pa.array(
                    start + rng.integers(0, 30 * 86_400 * 10**6, ROWS), pa.timestamp("us", "UTC")
                ),
                "conv_rate": rng.random(ROWS),
            }
        ),
        source / "rows.parquet",
    )
    applied = subprocess.run(
        [str(POTLUCK), "apply", "-f", "definitions.yaml"],
        cwd=root,
        env=_environment(),
        capture_output=True,
    )
    assert applied.returncode == 0, applied.stderr
    return root


def _job(root: Path, job_id: str | None = None) -> Job | None:
    """The job ``job_id``, else the newest job of the project, as stored."""
    with Client(settings=Settings(root=root)) as client:
        jobs = client.list_jobs()
    if job_id is not None:
        return next(job for job in jobs if job.id == job_id)
    return jobs[0] if jobs else None


def _wait_until_it_writes(root: Path, process: subprocess.Popen[str], known: set[str]) -> str:
    """Wait until a new job of the project has written rows; return its id."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        job = _job(root)
        if job is not None and job.id not in known and job.stats.rows_written:
            return job.id
        time.sleep(0.05)


@pytest.mark.parametrize("presses", [1, 2, 3])
def test_ctrl_c_pressed_quickly_any_number_of_times_cancels_the_job(
    slow_project: Path, presses: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _job(slow_project)
    known = set() if before is None else {before.id}
    process = subprocess.Popen(
        [str(POTLUCK), "ingest-online", "driver_stats", "--full"],
        cwd=slow_project,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_id = _wait_until_it_writes(slow_project, process, known)
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
        time.sleep(0.02)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (
        130,
        f"error: interrupted: job {job_id} stopped with status CANCELLED; rows already written "
        f"stay; see `potluck jobs describe {job_id}`\n",
    )
    job = _job(slow_project, job_id)
    assert job is not None
    stats = job.stats
    assert (job.status, job.error, job.cancel_requested) == (JobStatus.CANCELLED, None, True)
    assert out == (
        f"job {job_id} CANCELLED: {stats.rows_read} rows read, {stats.rows_written} written, "
        f"{stats.rows_skipped} skipped, {stats.rows_rejected} rejected\n"
    )
    assert 0 < stats.rows_read < ROWS
    assert stats.rows_read == stats.rows_written + stats.rows_skipped + stats.rows_rejected
    monkeypatch.chdir(slow_project)  # the command the line names shows the job
    described = runner.invoke(app, ["jobs", "describe", job_id], env=_environment())
    assert described.exit_code == 0
    assert "status                  CANCELLED" in described.stdout.splitlines()


def test_a_job_runs_to_its_end_after_the_program_returns(slow_project: Path) -> None:
    program = (
        "from potluck import Client\n"
        "job = Client().start_offline_to_online_ingestion('driver_stats', full=True)\n"
        "print(job.id)\n"  # and return at once: neither wait() nor close()
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=slow_project,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, "")
    job = _job(slow_project, done.stdout.strip())
    assert job is not None
    assert (job.status, job.error) == (JobStatus.SUCCEEDED, None)
    assert job.stats.rows_read == ROWS
    assert job.stats.rows_rejected == 0
    assert job.stats.rows_written + job.stats.rows_skipped == ROWS


PRINTING_DEFINITIONS = """\
import ctypes
import os
import subprocess
import sys

from potluck import Entity, ValueType

print("from print")
sys.__stdout__.write("from sys.__stdout__\\n")
os.write(1, b"from os.write\\n")
subprocess.run(["echo", "from a child process"], check=True)
ctypes.CDLL(None).printf(b"from C printf\\n")

driver = Entity(name="driver_id", value_type=ValueType.INT64)
"""


def test_what_a_definitions_file_writes_to_stdout_goes_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "potluck.yaml").write_text("project: default\n")
    (tmp_path / "defs.py").write_text(PRINTING_DEFINITIONS)
    done = subprocess.run(
        [str(POTLUCK), "plan", "defs.py", "-o", "json"],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == [
        "from C printf",
        "from a child process",
        "from os.write",
        "from print",
        "from sys.__stdout__",
    ]
    assert json.loads(done.stdout) == [
        {"kind": "entity", "name": "driver_id", "action": "create", "revision": 0, "details": []}
    ]


def _read_until(fd: int, text: bytes, seconds: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while text not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            seen += os.read(fd, 1024)
    return seen


def test_on_a_terminal_the_question_is_asked_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "potluck.yaml").write_text("project: default\n")
    (tmp_path / "defs.yaml").write_text("entities:\n  - {name: spare_id, value_type: STRING}\n")
    monkeypatch.chdir(tmp_path)
    env = _environment()
    assert runner.invoke(app, ["apply", "defs.yaml"], env=env).exit_code == 0
    terminal, tty = pty.openpty()
    process = subprocess.Popen(
        [str(POTLUCK), "entities", "delete", "spare_id"],
        cwd=tmp_path,
        env=env,
        stdin=tty,
        stdout=subprocess.PIPE,
        stderr=tty,
        text=True,
    )
    os.close(tty)
    try:
        asked = _read_until(terminal, b"[y/N]: ")
        assert asked.endswith(b"Delete entity 'spare_id' from project 'default'? [y/N]: ")
        os.write(terminal, b"maybe\n")  # asked again, on stderr too
        asked = _read_until(terminal, b"[y/N]: ")
        assert asked.endswith(
            b"answer y or n\r\nDelete entity 'spare_id' from project 'default'? [y/N]: "
        )
        os.write(terminal, b"y\n")
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
        os.close(terminal)
    assert (process.returncode, out) == (0, "Deleted entity 'spare_id' from project 'default'.\n")
