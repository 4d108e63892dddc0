"""Faults a third new-user trial of issue 8 found, through the real entry point: a closed stdout
(``| head -1``), SIGTERM during commands that run work, a ``.py`` definitions file that calls
``os._exit``, and ``potluck serve``'s readiness while its Redis is down and after it is back."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from potluck import Client
from potluck.config import Settings
from potluck.ingestion.jobs import Job, JobStatus

POTLUCK = Path(sys.executable).parent / "potluck"
ROWS = 2_000_000
"""Rows of the slow project's source and entity files: seconds of work for one DuckDB thread."""


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}


def _potluck(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(POTLUCK), *args],
        cwd=root,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``potluck init --with-sample-data``, applied and ingested."""
    root = tmp_path_factory.mktemp("sample")
    for args in (
        ["init", "--with-sample-data"],
        ["apply", "-f", "definitions.yaml"],
        ["ingest", "driver_stats", "sample_data/driver_stats.csv"],
    ):
        done = _potluck(root, *args)
        assert done.returncode == 0, done.stderr
    return root


# ---- a closed stdout ends a command quietly, with 141 --------------------------------------------

CLOSED_STDOUT_COMMANDS = [
    ["plan", "-f", "definitions.yaml", "-o", "json"],
    ["feature-tables", "describe", "driver_stats", "--history"],
    ["feature-tables", "describe", "driver_stats", "-o", "json"],
    ["entities", "list"],
    ["jobs", "list", "-o", "json"],
    [
        "historical",
        "-f",
        "driver_stats:conv_rate",
        "-e",
        "sample_data/entities.csv",
        "-O",
        "training.parquet",
    ],
    ["--help"],
    ["jobs", "--help"],
    ["--version"],
]


@pytest.mark.parametrize("args", CLOSED_STDOUT_COMMANDS, ids=" ".join)
def test_a_closed_stdout_ends_the_command_quietly_with_141(sample: Path, args: list[str]) -> None:
    """As ``potluck ... | head -1`` once head has gone: nothing on stderr, 128 + SIGPIPE."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before anything is written
    try:
        done = subprocess.run(
            [str(POTLUCK), *args],
            cwd=sample,
            env=_environment(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_reader_that_stops_after_one_line_is_the_same(sample: Path) -> None:
    """The trial's ``| head -1``, with an output larger than a pipe holds."""
    (sample / "many.yaml").write_text(
        "entities:\n" + "".join(f"- {{name: e{i}, value_type: INT64}}\n" for i in range(3000))
    )
    done = subprocess.run(
        [
            "bash",
            "-c",
            f"'{POTLUCK}' plan many.yaml -o json | head -1; echo \"${{PIPESTATUS[0]}}\" >&2",
        ],
        cwd=sample,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.stdout, done.stderr) == ("[\n", "141\n")


# ---- SIGTERM: cleaned up as for Ctrl-C, one line, exit 143 ---------------------------------------


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose training set, ingestion and offline-to-online job each take seconds."""
    root = tmp_path_factory.mktemp("slow")
    (root / "potluck.yaml").write_text("offline_store: {type: duckdb, threads: 1}\n")
    table = (
        "  - name: {name}\n    entities: [driver_id]\n"
        "    features: [{{name: conv_rate, value_type: DOUBLE}}]\n"
        "    batch_source: {{path: data/{name}, event_timestamp_column: event_timestamp}}\n"
    )
    (root / "definitions.yaml").write_text(
        "entities:\n  - {name: driver_id, value_type: INT64}\nfeature_tables:\n"
        + table.format(name="driver_stats")
        + table.format(name="loaded")
    )
    rng = np.random.default_rng(0)
    start = np.datetime64("2024-01-01T00:00:00", "us").astype(np.int64)

    def times() -> pa.Array:
        month = 30 * 86_400 * 10**6
        return pa.array(start + rng.integers(0, month, ROWS), pa.timestamp("us", "UTC"))

    source = root / "data" / "driver_stats"
    source.mkdir(parents=True)  # a plain Parquet folder: written fast, read whole
    keys = rng.integers(0, 50_000, ROWS)
    pq.write_table(
        pa.table({"driver_id": keys, "event_timestamp": times(), "conv_rate": rng.random(ROWS)}),
        source / "rows.parquet",
    )
    entities = pa.table({"driver_id": keys, "event_timestamp": times()})
    pq.write_table(entities, root / "entities.parquet")
    applied = _potluck(root, "apply", "-f", "definitions.yaml")
    assert applied.returncode == 0, applied.stderr
    return root


def _reading(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    try:
        return any(os.path.realpath(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process ended, or a descriptor closed while we looked
        return False


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(POTLUCK), *args],
        cwd=root,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _terminate_once_reading(process: subprocess.Popen[str], path: Path) -> tuple[str, str]:
    deadline = time.monotonic() + 60
    while not _reading(process.pid, path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=60)


def test_sigterm_during_historical_is_one_line_and_exit_143(slow_project: Path) -> None:
    process = _start(
        slow_project,
        "historical",
        "-f",
        "driver_stats:conv_rate",
        "-e",
        "entities.parquet",
        "-O",
        "training.parquet",
    )
    out, err = _terminate_once_reading(process, slow_project / "data/driver_stats/rows.parquet")
    assert (process.returncode, err, out) == (143, "error: terminated\n", "")
    assert not (slow_project / "training.parquet").exists()


def test_sigterm_during_ingest_is_one_line_exit_143_and_leaves_nothing(
    slow_project: Path,
) -> None:
    process = _start(slow_project, "ingest", "loaded", "data/driver_stats/rows.parquet")
    out, err = _terminate_once_reading(process, slow_project / "data/driver_stats/rows.parquet")
    assert (process.returncode, err, out) == (143, "error: terminated\n", "")
    left = _potluck(slow_project, "gc", "loaded", "--grace", "0", "--dry-run", "-o", "json")
    assert left.returncode == 0, left.stderr
    assert [report["deleted"] for report in json.loads(left.stdout)] == [[]]


def _job(root: Path, known: set[str]) -> Job | None:
    with Client(settings=Settings(root=root)) as client:
        jobs = [job for job in client.list_jobs() if job.id not in known]
    return jobs[0] if jobs else None


def test_sigterm_during_ingest_online_cancels_the_job_and_exits_143(slow_project: Path) -> None:
    with Client(settings=Settings(root=slow_project)) as client:
        known = {job.id for job in client.list_jobs()}
    process = _start(slow_project, "ingest-online", "driver_stats", "--full")
    deadline = time.monotonic() + 60
    while (job := _job(slow_project, known)) is None or not job.stats.rows_written:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (
        143,
        f"error: terminated: job {job.id} stopped with status CANCELLED; rows already written "
        f"stay; see `potluck jobs describe {job.id}`\n",
    )
    stored = _job(slow_project, known)
    assert stored is not None
    stats = stored.stats
    assert (stored.status, stored.error, stored.cancel_requested) == (
        JobStatus.CANCELLED,
        None,
        True,
    )
    assert out == (
        f"job {job.id} CANCELLED: {stats.rows_read} rows read, {stats.rows_written} written, "
        f"{stats.rows_skipped} skipped, {stats.rows_rejected} rejected\n"
    )
    assert 0 < stats.rows_read < ROWS


# ---- a .py definitions file that calls os._exit --------------------------------------------------


def test_os_exit_in_a_definitions_file_is_an_error_and_what_it_printed_stays(
    tmp_path: Path,
) -> None:
    (tmp_path / "potluck.yaml").write_text("project: default\n")
    (tmp_path / "defs.py").write_text(
        "import os\nfrom potluck import Entity, ValueType\n"
        "driver = Entity(name='driver_id', value_type=ValueType.INT64)\n"
        "print('defined')\nos._exit(0)\n"
    )
    for command in ("plan", "apply"):
        done = _potluck(tmp_path, command, "defs.py")
        assert (done.returncode, done.stdout, done.stderr) == (
            2,
            "",
            "defined\nerror: defs.py: ended the process while being loaded (it exited with "
            "status 0); a definitions file must only define objects: remove what exits or "
            "signals\n",
        )
    assert not (tmp_path / ".potluck").exists()  # apply wrote nothing


# ---- potluck serve: readiness follows the online store -------------------------------------------

BANNER = re.compile(
    r"potluck serving project 'default': gRPC on 127\.0\.0\.1:(\d+), HTTP on "
    r"http://127\.0\.0\.1:(\d+)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _redis_server(port: int, folder: Path) -> Iterator[None]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed (scripts/services.sh installs it)"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        yield
    finally:
        proc.kill()
        proc.wait()


def _grpc_status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def test_serve_is_ready_only_while_its_redis_answers(tmp_path: Path) -> None:
    redis_port = _free_port()
    (tmp_path / "potluck.yaml").write_text(
        "project: default\nregistry: sqlite:///registry.db\n"
        f"online_store: {{type: redis, url: 'redis://127.0.0.1:{redis_port}/0'}}\n"
    )
    (tmp_path / "defs.yaml").write_text("entities:\n  - {name: driver_id, value_type: INT64}\n")
    assert _potluck(tmp_path, "apply", "defs.yaml").returncode == 0
    with subprocess.Popen(
        [str(POTLUCK), "serve", "--grpc-port", "0", "--http-port", "0"],
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline().startswith("potluck serve: authentication is off")
            match = BANNER.fullmatch(proc.stderr.readline().rstrip("\n"))
            assert match, match
            grpc_port, http_port = match.groups()
            http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10)
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            down = http.get("/health")
            assert (down.status_code, down.json()) == (
                503,
                {
                    "error": {
                        "code": "unavailable",
                        "message": f"not ready: online store Redis at 127.0.0.1:{redis_port} is "
                        f"unavailable: Error 111 connecting to 127.0.0.1:{redis_port}. "
                        "Connection refused.",
                    }
                },
            )
            assert http.get("/health/live").status_code == 200
            assert _grpc_status(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert _grpc_status(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
            with _redis_server(redis_port, tmp_path):
                deadline = time.monotonic() + 10
                while http.get("/health").status_code != 200:  # within the ~1 s cache
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                assert http.get("/health").json()["status"] == "ok"
                serving = health_pb2.HealthCheckResponse.SERVING
                assert _grpc_status(channel, "feast.serving.ServingService") == serving
            channel.close()
            http.close()
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert rest.splitlines() == [
        f"warning: not ready: online store Redis at 127.0.0.1:{redis_port} is unavailable: "
        f"Error 111 connecting to 127.0.0.1:{redis_port}. Connection refused.",
        "ready again: the online store answers",
    ]
