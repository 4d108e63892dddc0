"""Each bad input issue 8 names, with its exact message and exit code: Arrow, OS, DuckDB, driver
and interrupt errors become potluck errors at the boundary, and the CLI never shows a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner, Result

from potluck import Client
from potluck.cli._stderr import command_output
from potluck.cli.main import _PotluckGroup, app
from potluck.config import Settings
from potluck.errors import (
    ConfigError,
    DataValidationError,
    PotluckError,
    UnavailableError,
    ValidationError,
)
from potluck.ingestion.jobs import JobStatus
from potluck.notices import NoDataWarning
from potluck.offline.duckdb import DuckDBConfig, DuckDBOfflineStore
from potluck.offline.files import os_error
from potluck.online.redis import (
    RedisClusterConfig,
    RedisClusterOnlineStore,
    RedisConfig,
    RedisOnlineStore,
)
from potluck.registry.sql import SqlRegistry

POTLUCK = Path(sys.executable).parent / "potluck"

DEFINITIONS = """\
entities:
  - {name: driver_id, value_type: INT64}
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features:
      - {name: conv_rate, value_type: FLOAT}
      - {name: hist, value_type: FLOAT_LIST}
      - {name: blob, value_type: BYTES}
    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}
"""

runner = CliRunner()


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with driver_stats applied and two rows ingested."""
    monkeypatch.chdir(tmp_path)
    _clean_environment(monkeypatch)
    (tmp_path / "potluck.yaml").write_text("project: default\n")
    (tmp_path / "definitions.yaml").write_text(DEFINITIONS)
    (tmp_path / "entities.csv").write_text("driver_id,event_timestamp\n1001,2030-01-01T00:00:00Z\n")
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    rows = pa.table(
        {
            "driver_id": pa.array([1001, 1002], pa.int64()),
            "event_timestamp": pa.array(
                [datetime(2029, 12, 31, tzinfo=timezone.utc)] * 2, pa.timestamp("us", "UTC")
            ),
            "conv_rate": pa.array([0.5, 0.25], pa.float32()),
            "hist": pa.array([[1.5, 2.5], None], pa.list_(pa.float32())),
            "blob": pa.array([b"\x00\xff", b"ok"]),
        }
    )
    with Client() as client:
        client.ingest("driver_stats", rows)
    return tmp_path


def error_of(result: Result) -> tuple[int, str]:
    """The exit code and the one stderr line (asserting there is exactly one)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result.exit_code, lines[0].removeprefix("error: ")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".potluck" not in p.parts}


# ---- Arrow and OS errors on the way out ---------------------------------------------------------


def test_lists_cannot_go_to_csv(project: Path) -> None:
    before = _files(project)
    result = runner.invoke(
        app, ["historical", "-f", "driver_stats:hist", "-e", "entities.csv", "--out", "t.csv"]
    )
    assert error_of(result) == (
        2,
        "cannot write 't.csv': column 'driver_stats__hist' holds lists (FLOAT_LIST), which CSV "
        "cannot store; write a .parquet file instead",
    )
    assert _files(project) == before


def test_bytes_that_are_not_text_cannot_go_to_csv(project: Path) -> None:
    result = runner.invoke(
        app, ["historical", "-f", "driver_stats:blob", "-e", "entities.csv", "-O", "o/t.csv"]
    )
    assert error_of(result) == (
        2,
        "cannot write 'o/t.csv': column 'driver_stats__blob' row 0 holds bytes that are not "
        "UTF-8 text, which CSV cannot store; write a .parquet file instead",
    )
    assert not (project / "o").exists()


def test_out_below_a_file_and_out_a_folder(project: Path) -> None:
    (project / "notes.txt").write_text("a file\n")
    (project / "folder.parquet").mkdir()
    base = ["historical", "-f", "driver_stats:conv_rate", "-e", "entities.csv"]
    below = runner.invoke(app, [*base, "--out", "notes.txt/sub/t.parquet"])
    assert error_of(below) == (
        2,
        "cannot write 'notes.txt/sub/t.parquet': 'notes.txt' is a file, so no folder can be "
        "made there; choose another path",
    )
    folder = runner.invoke(app, [*base, "--out", "folder.parquet"])
    assert error_of(folder) == (
        2,
        "cannot write 'folder.parquet': it is a folder; give the path of a file",
    )
    assert list((project / "folder.parquet").iterdir()) == []
    assert [p.name for p in project.iterdir() if p.name.startswith("_tmp")] == []


@pytest.mark.parametrize(
    ("path", "error", "kind", "message"),
    [
        (
            "rows.csv",
            PermissionError(errno.EACCES, "Permission denied"),
            ValidationError,
            "cannot read 'rows.csv': permission denied",
        ),
        (
            "out/t.parquet",
            OSError(errno.ENOSPC, "No space left on device"),
            UnavailableError,
            "cannot read 'out/t.parquet': No space left on device",
        ),
        (
            "s3://bucket/t.parquet",
            OSError("AWS Error NETWORK_CONNECTION during GetObject operation:\n  timeout"),
            UnavailableError,
            "cannot read 's3://bucket/t.parquet': AWS Error NETWORK_CONNECTION during GetObject "
            "operation: timeout; check the URL, the network and the credentials",
        ),
    ],
    ids=["unreadable", "disk-full", "object-store"],
)
def test_os_errors_name_the_path(
    path: str, error: OSError, kind: type[PotluckError], message: str
) -> None:
    translated = os_error(path, error, "read")
    assert (type(translated), translated.message) == (kind, message)
    assert translated.attrs()["path"] == path


# ---- duplicated columns -------------------------------------------------------------------------


def test_a_csv_with_a_duplicated_header(project: Path) -> None:
    (project / "dup.csv").write_text(
        "driver_id,event_timestamp,driver_id\n1001,2030-01-01T00:00:00Z,1001\n"
    )
    historical = runner.invoke(
        app, ["historical", "-f", "driver_stats:conv_rate", "-e", "dup.csv", "-O", "t.parquet"]
    )
    message = (
        "column 'driver_id' appears twice in the header of 'dup.csv' (columns 0 and 2, "
        "0-based); rename or drop one of them"
    )
    assert error_of(historical) == (2, message)
    assert error_of(runner.invoke(app, ["ingest", "driver_stats", "dup.csv"])) == (2, message)


def test_a_dataframe_with_duplicated_columns(project: Path) -> None:
    frame = pd.DataFrame(
        [[1001, pd.Timestamp("2030-01-01", tz="UTC"), 1001]],
        columns=["driver_id", "event_timestamp", "driver_id"],
    )
    with Client() as client:
        for call in (
            lambda: client.get_historical_features(["driver_stats:conv_rate"], frame),
            lambda: client.ingest("driver_stats", frame),
        ):
            with pytest.raises(DataValidationError) as raised:
                call()
            assert raised.value.message == (
                "column 'driver_id' appears twice in the DataFrame (columns 0 and 2, 0-based); "
                "rename or drop one of them"
            )
            assert raised.value.attrs() == {"column": "driver_id", "row": None}


def test_a_csv_malformed_past_its_first_block(project: Path) -> None:
    lines = "driver_id,event_timestamp\n" + "1001,2030-01-01T00:00:00Z\n" * 650_000
    (project / "late.csv").write_text(lines + "1002,2030-01-01T00:00:00Z,3\n")
    result = runner.invoke(
        app, ["historical", "-f", "driver_stats:conv_rate", "-e", "late.csv", "-O", "t.parquet"]
    )
    assert error_of(result) == (
        2,
        "cannot read 'late.csv': CSV parse error: Expected 2 columns, got 3: "
        "1002,2030-01-01T00:00:00Z,3",
    )


# ---- object stores, settings and drivers --------------------------------------------------------


def test_an_unreachable_object_store_fails_in_bounded_time(project: Path) -> None:
    url = f"s3://potluck-no-such-bucket-{os.urandom(6).hex()}/rows.parquet"
    started = time.monotonic()
    code, message = error_of(runner.invoke(app, ["ingest", "driver_stats", url]))
    assert time.monotonic() - started < 60
    assert code == 1
    assert message.startswith(f"cannot open {url!r}: ")
    assert message.endswith("; check the URL, the network and the credentials")


def test_a_memory_limit_duckdb_refuses_names_the_setting() -> None:
    config = DuckDBConfig.model_construct(
        memory_limit="lots", threads=None, native_local_reads=True
    )
    with pytest.raises(ConfigError) as raised:
        DuckDBOfflineStore(config)
    assert raised.value.message == (
        "setting offline_store.memory_limit = 'lots' is refused by DuckDB: Parser Error: Memory "
        "must have a number (e.g. 1GB); fix offline_store.memory_limit in potluck.yaml (or "
        "POTLUCK_OFFLINE_STORE__MEMORY_LIMIT)"
    )
    assert raised.value.attrs() == {"key": "offline_store.memory_limit", "sources": ()}


@pytest.mark.parametrize(
    ("build", "message", "key"),
    [
        (
            lambda: SqlRegistry("postgresql://potluck:secret@db:abc/features"),
            "invalid registry URL 'postgresql://potluck:***@db:abc/features'; expected "
            "sqlite:///path/to/registry.db or postgresql://user:password@host:port/database",
            "registry",
        ),
        (
            lambda: SqlRegistry("postgresql://potluck:secret@db:99999/features"),
            "invalid registry URL 'postgresql://potluck:***@db:99999/features': port 99999 is "
            "not from 1 to 65535",
            "registry",
        ),
        (
            lambda: RedisOnlineStore(
                RedisConfig.model_construct(url="redis://:secret@cache:abc/0")
            ),
            "invalid online_store.url 'redis://:***@cache:abc/0': Port could not be cast to "
            "integer value as 'abc'; use redis://[user:password@]host:port/db",
            "online_store.url",
        ),
        (
            lambda: RedisClusterOnlineStore(
                RedisClusterConfig.model_construct(startup_nodes=["cache:7000", "cache:x"])
            ),
            "invalid online_store.startup_nodes entry 'cache:x': expected host:port with a port "
            "from 1 to 65535",
            "online_store.startup_nodes",
        ),
    ],
    ids=["registry-port-text", "registry-port-range", "redis-port", "cluster-port"],
)
def test_a_url_with_a_bad_port_built_in_code(build: object, message: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build()  # type: ignore[operator]
    assert (raised.value.message, raised.value.key) == (message, key)


def test_a_damaged_registry_file_names_the_setting(project: Path) -> None:
    (project / ".potluck" / "registry.db").write_bytes(b"not a database " * 20)
    code, message = error_of(runner.invoke(app, ["entities", "list"]))
    assert (code, message) == (
        2,
        f"registry sqlite:///{project}/.potluck/registry.db is not a readable registry "
        "database: file is not a database; point the 'registry' setting at another file, or "
        "restore this one",
    )


# ---- jobs and logging ---------------------------------------------------------------------------


def test_a_failed_ingest_online_prints_only_its_error(project: Path) -> None:
    env = {
        "POTLUCK_ONLINE_STORE__TYPE": "redis",
        "POTLUCK_ONLINE_STORE__URL": "redis://127.0.0.1:1/0",
    }
    result = runner.invoke(app, ["ingest-online", "driver_stats"], env=env)
    code, message = error_of(result)
    assert code == 1
    assert re.fullmatch(
        r"job \d{8}T\d{12}Z-[0-9a-f]{8} failed: online store Redis at 127\.0\.0\.1:1 is "
        r"unavailable: Error 111 connecting to 127\.0\.0\.1:1\. Connection refused\.",
        message,
    ), message
    assert re.fullmatch(
        r"job \S+ FAILED: 0 rows read, 0 written, 0 skipped, 0 rejected\n", result.stdout
    )


def test_what_a_command_reports_meanwhile_is_one_line_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("potluck.ingestion.engines.local")
    with command_output():
        try:
            raise ConnectionError("registry went away")
        except ConnectionError:
            logger.warning("writing the record of job %s failed", "j1", exc_info=True)
        logger.info("potluck core listening on %s", "127.0.0.1:6565")
        logger.debug("not shown")
        warnings.warn("feature table 't' has no data yet", NoDataWarning, stacklevel=1)
        thread = threading.Thread(target=lambda: 1 / 0, name="potluck-job-x")
        thread.start()
        thread.join()
    assert capsys.readouterr().err == (
        "warning: writing the record of job j1 failed: ConnectionError: registry went away\n"
        "potluck core listening on 127.0.0.1:6565\n"
        "warning: feature table 't' has no data yet\n"
        "warning: potluck-job-x stopped: ZeroDivisionError: division by zero\n"
    )
    assert logging.getLogger("potluck").handlers == []
    assert logging.getLogger("potluck").propagate


# ---- what potluck did not expect, and Ctrl-C ----------------------------------------------------


def _app_raising(error: BaseException) -> typer.Typer:
    """An app on the CLI's own root group whose one command raises ``error``."""
    test_app = typer.Typer(cls=_PotluckGroup, add_completion=False)

    @test_app.command()
    def boom() -> None:
        """Raise."""
        raise error

    @test_app.command()
    def other() -> None:
        """Another command, so that boom is a subcommand."""

    return test_app


def test_an_unexpected_exception_is_one_line_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POTLUCK_DEBUG", raising=False)
    result = runner.invoke(_app_raising(KeyError("x")), ["boom"])
    assert error_of(result) == (
        1,
        "internal error: KeyError: 'x' (run with POTLUCK_DEBUG=1 for the traceback)",
    )
    leak = RuntimeError("cannot reach postgresql://potluck:secret@db:5432/features")
    assert error_of(runner.invoke(_app_raising(leak), ["boom"])) == (
        1,
        "internal error: RuntimeError: cannot reach postgresql://potluck:***@db:5432/features "
        "(run with POTLUCK_DEBUG=1 for the traceback)",
    )


def test_potluck_debug_prints_the_traceback_first() -> None:
    result = runner.invoke(_app_raising(KeyError("x")), ["boom"], env={"POTLUCK_DEBUG": "1"})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-2:] == [
        "KeyError: 'x'",
        "error: internal error: KeyError: 'x' (run with POTLUCK_DEBUG=1 for the traceback)",
    ]
    expected = runner.invoke(
        _app_raising(PotluckError("a failure")), ["boom"], env={"POTLUCK_DEBUG": "1"}
    )
    assert expected.stderr.splitlines()[-2:] == [
        "potluck.errors.PotluckError: a failure",
        "error: a failure",
    ]


def test_an_interrupt_in_process_is_exit_130() -> None:
    assert error_of(runner.invoke(_app_raising(KeyboardInterrupt()), ["boom"])) == (
        130,
        "interrupted",
    )


def _without_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}


@pytest.fixture(scope="module")
def slow_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose training set takes DuckDB a second or more on one thread, and whose
    offline-to-online job takes several seconds (3 million rows, 50,000 keys)."""
    tmp_path = tmp_path_factory.mktemp("slow")
    (tmp_path / "potluck.yaml").write_text("offline_store: {type: duckdb, threads: 1}\n")
    (tmp_path / "definitions.yaml").write_text(
        "entities:\n  - {name: driver_id, value_type: INT64}\nfeature_tables:\n"
        "  - name: driver_stats\n    entities: [driver_id]\n"
        "    features: [{name: conv_rate, value_type: DOUBLE}]\n"
        "    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}\n"
    )
    rng = np.random.default_rng(0)
    start = np.datetime64("2024-01-01T00:00:00", "us").astype(np.int64)
    month = 30 * 86_400 * 10**6

    def times(n: int) -> pa.Array:
        return pa.array(start + rng.integers(0, month, n), pa.timestamp("us", "UTC"))

    source = tmp_path / "data" / "driver_stats"
    source.mkdir(parents=True)  # a plain Parquet folder: written fast, read whole
    n = 3_000_000
    pq.write_table(
        pa.table(
            {
                "driver_id": rng.integers(0, 50_000, n),
                "event_timestamp": times(n),
                "conv_rate": rng.random(n),
            }
        ),
        source / "rows.parquet",
    )
    m = 1_500_000
    pq.write_table(
        pa.table({"driver_id": rng.integers(0, 50_000, m), "event_timestamp": times(m)}),
        tmp_path / "entities.parquet",
    )
    applied = subprocess.run(
        [str(POTLUCK), "apply", "-f", "definitions.yaml"],
        cwd=tmp_path,
        env=_without_settings(),
        capture_output=True,
    )
    assert applied.returncode == 0
    return tmp_path


def _reading(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (DuckDB scans it while it joins)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())
    except OSError:  # the process ended, or a descriptor closed while we looked
        return False


def test_ctrl_c_during_historical_is_one_line_and_exit_130(slow_project: Path) -> None:
    env = _without_settings()
    process = subprocess.Popen(
        [
            str(POTLUCK),
            "historical",
            "-f",
            "driver_stats:conv_rate",
            "-e",
            "entities.parquet",
            "-O",
            "training.parquet",
        ],
        cwd=slow_project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    source = slow_project / "data" / "driver_stats" / "rows.parquet"
    deadline = time.monotonic() + 30
    while not _reading(process.pid, source):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err, out) == (130, "error: interrupted\n", "")
    assert sorted(p.name for p in slow_project.iterdir()) == [
        ".potluck",
        "data",
        "definitions.yaml",
        "entities.parquet",
        "potluck.yaml",
    ]


def _running_job(root: Path, process: subprocess.Popen[str]) -> str:
    """Wait until the project's newest job runs; return its id."""
    deadline = time.monotonic() + 30
    with Client(settings=Settings(root=root)) as client:
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            jobs = client.list_jobs()
            if jobs and jobs[0].status is JobStatus.RUNNING and jobs[0].stats.rows_read:
                return jobs[0].id
            time.sleep(0.05)


def _ingest_online(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(POTLUCK), "ingest-online", "driver_stats", "--full"],
        cwd=root,
        env=_without_settings(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_during_ingest_online_stops_its_job_and_exits_130(slow_project: Path) -> None:
    process = _ingest_online(slow_project)
    job_id = _running_job(slow_project, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (
        130,
        f"error: interrupted: job {job_id} stopped with status CANCELLED; rows already written "
        f"stay; see `potluck jobs describe {job_id}`\n",
    )
    assert out.startswith(f"job {job_id} CANCELLED: ")


def test_a_job_cancelled_elsewhere_is_one_error_line(
    slow_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process = _ingest_online(slow_project)
    job_id = _running_job(slow_project, process)
    monkeypatch.chdir(slow_project)
    _clean_environment(monkeypatch)
    cancel = runner.invoke(app, ["jobs", "cancel", job_id])
    assert cancel.exit_code == 0, cancel.output
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (
        1,
        f"error: job {job_id} was cancelled (potluck jobs cancel); rows already written stay\n",
    )
    assert out.startswith(f"job {job_id} CANCELLED: ")


def test_an_exception_after_the_command_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POTLUCK_DEBUG", raising=False)
    test_app = typer.Typer(cls=_PotluckGroup, add_completion=False)

    @test_app.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.call_on_close(lambda: (_ for _ in ()).throw(OSError("closing failed")))

    @test_app.command()
    def fine() -> None:
        """Succeed."""

    result = runner.invoke(test_app, ["fine"])
    assert error_of(result) == (
        1,
        "internal error: OSError: closing failed (run with POTLUCK_DEBUG=1 for the traceback)",
    )


@pytest.fixture(autouse=True)
def _no_leftover_handlers() -> Iterator[None]:
    yield
    assert logging.getLogger("potluck").handlers == []
