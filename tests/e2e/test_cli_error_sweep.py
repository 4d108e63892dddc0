"""Every CLI command against a corpus of bad input: one ``error:`` line, no traceback, the
documented exit code, and nothing changed.

The commands are enumerated from the Typer app, so a new command is swept by the generic cases
(an unknown option, missing arguments, a bad ``--output``) at once, and fails
:func:`test_every_command_has_bad_inputs` until it gets its own bad inputs in :data:`CASES`.
Runs in-process (CliRunner) against one real project; a few cases run the real entry point.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from potluck.cli.main import app

POTLUCK = Path(sys.executable).parent / "potluck"
BAD, FAILED = 2, 1

DEFINITIONS = """\
entities:
  - {name: driver_id, value_type: INT64}
  - {name: spare_id, value_type: STRING}
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features:
      - {name: conv_rate, value_type: FLOAT}
      - {name: hist, value_type: FLOAT_LIST}
    max_age: 1d
    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}
"""

FILES = {
    "potluck.yaml": "project: default\n",
    "definitions.yaml": DEFINITIONS,
    "entities.csv": "driver_id,event_timestamp\n1001,2030-01-01T00:00:00Z\n",
    "dup.csv": "driver_id,event_timestamp,driver_id\n1001,2030-01-01T00:00:00Z,1001\n",
    "bad.yaml": "entities: [\n",
    "badtype.yaml": "online_store: {type: redis_cluser}\n",
    "undefined.yaml": (
        "feature_tables:\n  - name: t\n    entities: [nobody]\n"
        "    features: [{name: x, value_type: INT64}]\n"
    ),
    "afile": "not a folder\n",
    "rows.json": "{}\n",
    "nojobservice.yaml": "job_service_url: 127.0.0.1:1\n",
    "coreurl.yaml": "core_url: 127.0.0.1:1\n",
}

TIMESTAMP = pa.timestamp("us", "UTC")
REGISTRY_DOWN = {"POTLUCK_REGISTRY": "postgresql://potluck:secret@127.0.0.1:1/features"}


def _leaf_commands() -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        else:
            found[" ".join(path)] = command

    walk(get_command(app), ())
    return found


COMMANDS = _leaf_commands()


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with its definitions applied, two rows ingested and loaded online."""
    root = tmp_path_factory.mktemp("sweep")
    for name, text in FILES.items():
        (root / name).write_text(text)
    (root / "adir").mkdir()
    (root / "adir.parquet").mkdir()
    (root / "garbage.parquet").write_bytes(b"PAR1 not really parquet \x00\xff")
    (root / "damaged.db").write_bytes(b"not a database " * 20)
    # Past the CSV reader's first block (16 MiB), so the bad line fails only as it is reached.
    late = "driver_id,event_timestamp\n" + "1001,2030-01-01T00:00:00Z\n" * 650_000 + "1,2,3\n"
    (root / "late_ragged.csv").write_text(late)
    (root / "damaged.yaml").write_text(f"registry: sqlite:///{root}/damaged.db\n")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1001, 1002], pa.int64()),
                "event_timestamp": pa.array([now - timedelta(hours=1)] * 2, TIMESTAMP),
                "conv_rate": pa.array([0.5, 0.25], pa.float32()),
                "hist": pa.array([[1.5], []], pa.list_(pa.float32())),
            }
        ),
        root / "rows.parquet",
    )
    runner = CliRunner()
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for args in (
            ["apply", "-f", "definitions.yaml"],
            ["ingest", "driver_stats", "rows.parquet"],
            ["ingest-online", "driver_stats"],
        ):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args, result.output)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture()
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return project


HISTORICAL = ["historical", "-f", "driver_stats:conv_rate", "-e", "entities.csv"]
BUSY = "{busy}"

BASES: dict[str, list[str]] = {
    "plan": ["plan", "-f", "definitions.yaml"],
    "apply": ["apply", "-f", "definitions.yaml"],
    "entities list": ["entities", "list"],
    "entities describe": ["entities", "describe", "driver_id"],
    "entities delete": ["entities", "delete", "driver_id", "--yes"],
    "feature-tables list": ["feature-tables", "list"],
    "feature-tables describe": ["feature-tables", "describe", "driver_stats"],
    "feature-tables delete": ["feature-tables", "delete", "driver_stats"],
    "projects list": ["projects", "list"],
    "projects archive": ["projects", "archive", "nope"],
    "projects restore": ["projects", "restore", "nope"],
    "projects allow-location": ["projects", "allow-location", "nope", "/srv/shared"],
    "projects describe": ["projects", "describe", "nope"],
    "audit": ["audit"],
    "auth token create": [
        *("auth", "token", "create", "x", "--permission", "apply", "--tokens-file", "b.yaml")
    ],
    "ingest": ["ingest", "driver_stats", "missing.parquet"],
    "historical": ["historical", "-f", "nope:x", "-e", "entities.csv", "--out", "out/t.parquet"],
    "gc": ["gc", "nope"],
    "ingest-online": ["ingest-online", "nope"],
    "jobs list": ["jobs", "list"],
    "jobs describe": ["jobs", "describe", "nope"],
    "jobs cancel": ["jobs", "cancel", "nope"],
    "jobs schedule": ["jobs", "schedule", "nope", "--cron", "0 * * * *", "--look-back", "1h"],
    "jobs unschedule": ["jobs", "unschedule", "nope"],
    "jobs schedules": ["jobs", "schedules"],
    "online get": ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001"],
    "online purge": ["online", "purge", "driver_stats"],
    "core": ["core", "--port", BUSY],
    "jobservice": ["jobservice", "--port", BUSY],
    "serve": ["serve", "--grpc-port", BUSY, "--http-port", "0"],
    "publish": ["publish", "nope", "rows.parquet"],
    "stream": ["stream", "nope"],
}
"""Per command that reads settings: an invocation that fails, or reads only, once settings are
broken; the global cases put bad settings in front of it (``init`` reads none)."""

CASES: dict[str, list[tuple[list[str], int]]] = {
    "init": [
        (["init", "afile"], BAD),
        (["init", "."], BAD),  # potluck.yaml exists
        (["init", "afile/sub"], FAILED),
        (["init", "--with-sample-data", "."], BAD),
    ],
    "plan": [
        (["plan"], BAD),
        (["plan", "-f", "missing.yaml"], BAD),
        (["plan", "-f", "bad.yaml"], BAD),
        (["plan", "-f", "undefined.yaml"], BAD),
        (["plan", "-f", "garbage.parquet"], BAD),
        (["plan", "adir"], BAD),
        (["plan", "afile"], BAD),
    ],
    "apply": [
        (["apply"], BAD),
        (["apply", "-f", "missing.yaml"], BAD),
        (["apply", "-f", "bad.yaml"], BAD),
        (["apply", "-f", "undefined.yaml"], BAD),
        (["apply", "definitions.yaml", "bad.yaml"], BAD),
        (["apply", "adir"], BAD),
        (["apply", "rows.json"], BAD),
    ],
    "entities list": [(["entities", "list", "--label", "team"], BAD)],
    "entities describe": [(["entities", "describe", "nobody"], BAD)],
    "entities delete": [
        (["entities", "delete", "nobody", "--yes"], BAD),
        (["entities", "delete", "driver_id", "--yes"], BAD),  # used by driver_stats
        (["entities", "delete", "spare_id"], BAD),  # no terminal to confirm on
    ],
    "feature-tables list": [(["feature-tables", "list", "-l", "team"], BAD)],
    "feature-tables describe": [
        (["feature-tables", "describe", "nope"], BAD),
        (["feature-tables", "describe", "nope", "--history"], BAD),
    ],
    "feature-tables delete": [
        (["feature-tables", "delete", "nope", "--yes"], BAD),
        (["feature-tables", "delete", "driver_stats"], BAD),  # no terminal to confirm on
    ],
    "projects list": [(["-c", "adir", "projects", "list"], BAD)],
    "projects create": [
        (["projects", "create", "Bad Name"], BAD),
        (["projects", "create", "default"], BAD),
    ],
    "projects archive": [(["projects", "archive", "nope"], BAD)],
    "projects restore": [(["projects", "restore", "nope"], BAD)],
    "projects allow-location": [
        (["projects", "allow-location", "nope", "/srv/shared"], BAD),
        (["projects", "allow-location", "default", "kafka:"], BAD),
        (["projects", "allow-location", "default", " "], BAD),
    ],
    "projects describe": [(["projects", "describe", "nope"], BAD)],
    "auth token create": [
        (["auth", "token", "create", "ci", "--permission", "nope", "--tokens-file", "t.yaml"], BAD),
        (["auth", "token", "create", "ci", "--permission", "apply"], BAD),  # no tokens file
        (["auth", "token", "create", "", "--permission", "apply", "--tokens-file", "t.yaml"], BAD),
        (
            ["auth", "token", "create", "ci", "--permission", "apply", "--project", "Bad-Name"]
            + ["--tokens-file", "t.yaml"],
            BAD,
        ),
        (
            ["auth", "token", "create", "ci", "--permission", "apply", "--tokens-file", "bad.yaml"],
            BAD,
        ),
    ],
    "audit": [
        (["audit", "--since", "yesterday"], BAD),
        (["audit", "--limit", "0"], BAD),
        (["audit", "--limit", "many"], BAD),
        (["audit", "--since", "99999999d"], BAD),
        (["audit", "--since", "99999999999d"], BAD),
        (["audit", "--since=-1h"], BAD),
    ],
    "ingest": [
        (["ingest", "nope", "rows.parquet"], BAD),
        (["ingest", "driver_stats", "missing.csv"], BAD),
        (["ingest", "driver_stats", "adir"], BAD),
        (["ingest", "driver_stats", "adir.parquet"], BAD),
        (["ingest", "driver_stats", "garbage.parquet"], BAD),
        (["ingest", "driver_stats", "dup.csv"], BAD),
        (["ingest", "driver_stats", "entities.csv"], BAD),  # no feature columns
        (["ingest", "driver_stats", "rows.json"], BAD),
        (["ingest", "driver_stats", "nosuchscheme://bucket/rows.parquet"], BAD),
    ],
    "historical": [
        (["historical", "-f", "nope:x", "-e", "entities.csv", "--out", "o/t.parquet"], BAD),
        (["historical", "-f", "driver_stats:nope", "-e", "entities.csv", "-O", "o/t.parquet"], BAD),
        (["historical", "-f", "::", "-e", "entities.csv", "-O", "o/t.parquet"], BAD),
        ([*HISTORICAL[:3], "-e", "missing.csv", "-O", "o/t.parquet"], BAD),
        ([*HISTORICAL[:3], "-e", "dup.csv", "-O", "o/t.parquet"], BAD),
        ([*HISTORICAL[:3], "-e", "garbage.parquet", "-O", "o/t.parquet"], BAD),
        ([*HISTORICAL[:3], "-e", "adir", "-O", "o/t.parquet"], BAD),
        ([*HISTORICAL[:3], "-e", "late_ragged.csv", "-O", "o/t.parquet"], BAD),
        ([*HISTORICAL, "-O", "afile/sub/t.parquet"], BAD),
        ([*HISTORICAL, "-O", "adir.parquet"], BAD),
        ([*HISTORICAL, "-O", "o/t.json"], BAD),
        (["historical", "-f", "driver_stats:hist", "-e", "entities.csv", "-O", "o/t.csv"], BAD),
        ([*HISTORICAL, "-O", "nosuchscheme://bucket/t.parquet"], BAD),
        ([*HISTORICAL, "-O", "o/t.parquet", "--source-version", "x"], BAD),
        ([*HISTORICAL, "-O", "o/t.parquet", "--source-version", "driver_stats=99"], BAD),
    ],
    "gc": [
        (["gc", "nope"], BAD),
        (["gc", "--grace", "forever"], BAD),
        (["gc", "--grace", "99999999999d"], BAD),
        (["gc", "--staging", "--older-than", "forever"], BAD),
        (["gc", "--staging", "--older-than", "-1d"], BAD),
        (["gc", "--staging", "--older-than", "99999999999d"], BAD),
        (["gc", "driver_stats", "--staging"], BAD),
        (["gc", "--staging", "--grace", "1h"], BAD),
        (["gc", "--older-than", "1d"], BAD),
        (["gc", "--staging"], BAD),  # no staging location is set
    ],
    "ingest-online": [
        (["ingest-online", "nope"], BAD),
        (["ingest-online", "driver_stats", "--start", "yesterday"], BAD),
        (["ingest-online", "driver_stats", "--end", "2024-13-45"], BAD),
        (["ingest-online", "driver_stats", "--since-last", "--full"], BAD),
    ],
    "jobs list": [(["jobs", "list", "--table", "nope"], BAD)],
    "jobs describe": [(["jobs", "describe", "nope"], BAD), (["jobs", "describe", ""], BAD)],
    "jobs cancel": [(["jobs", "cancel", "nope"], BAD)],
    "jobs schedule": [
        (["jobs", "schedule", "nope", "--cron", "0 * * * *", "--look-back", "1h"], BAD),
        (["jobs", "schedule", "driver_stats", "--cron", "hourly", "--look-back", "1h"], BAD),
        (["jobs", "schedule", "driver_stats", "--cron", "0 * * * *", "--look-back", "soon"], BAD),
        (["jobs", "schedule", "driver_stats", "--cron", "0 * * * *", "--look-back", "0s"], BAD),
        (["jobs", "schedule", "driver_stats", "--cron", "0 * * * *", "--look-back=-1h"], BAD),
        (["jobs", "schedule", "driver_stats", "--cron", "* * * * *", "--look-back=99999999d"], BAD),
        (
            ["jobs", "schedule", "driver_stats", "--cron", "0 * * * *", "--look-back=9999999999d"],
            BAD,
        ),
        (["jobs", "schedule", "driver_stats", "--cron", "", "--look-back", "1h"], BAD),
        (["jobs", "schedule", "driver_stats", "--cron", "0 * * * *"], BAD),
    ],
    "jobs unschedule": [(["jobs", "unschedule", "driver_stats"], BAD)],  # it has none
    "jobs schedules": [(["-c", "nojobservice.yaml", "jobs", "schedules"], FAILED)],
    "online get": [
        (["online", "get", "driver_stats:conv_rate", "-e", "driver_id=abc"], BAD),
        (["online", "get", "driver_stats:nope", "-e", "driver_id=1"], BAD),
        (["online", "get", "nope:x", "-e", "driver_id=1"], BAD),
        (["online", "get", "driver_stats:conv_rate", "-e", "nobody=1"], BAD),
        (["online", "get", "driver_stats:conv_rate", "-e", "noequals"], BAD),
        (["online", "get", "driver_stats:conv_rate"], BAD),
    ],
    "online purge": [
        (["online", "purge", "nope", "--yes"], BAD),
        (["online", "purge", "driver_stats"], BAD),  # no terminal to confirm on
    ],
    "core": [
        (["core", "--port", "-1"], BAD),
        (["core", "--port", "abc"], BAD),
        (["core", "--port", BUSY], FAILED),
        (["core", "--host", "10.254.254.254", "--port", "6565"], BAD),
        (["core", "--job-service", "--port", BUSY], FAILED),
        (["-c", "coreurl.yaml", "core", "--port", "0"], BAD),
        (["-c", "coreurl.yaml", "core", "--job-service", "--port", "0"], BAD),
    ],
    "jobservice": [
        (["jobservice", "--port", "-1"], BAD),
        (["jobservice", "--port", "abc"], BAD),
        (["jobservice", "--port", BUSY], FAILED),
        (["jobservice", "--host", "10.254.254.254", "--port", "6568"], BAD),
        (["jobservice", "--control-loop-interval", "0"], BAD),
        (["jobservice", "--control-loop-interval", "1e300"], BAD),
        (["-c", "coreurl.yaml", "jobservice", "--port", "0"], BAD),
    ],
    "serve": [
        (["serve", "--grpc-port", BUSY], FAILED),
        (["serve", "--grpc-port", "0", "--http-port", BUSY], FAILED),
        (["serve", "--host", "10.254.254.254"], BAD),
        (["serve", "--workers", "0"], BAD),
        (["serve", "--refresh-interval", "0"], BAD),
        (["serve", "--grpc-port", "http"], BAD),
    ],
    "publish": [
        (["publish", "nope", "rows.parquet"], BAD),
        (["publish", "driver_stats", "rows.parquet"], BAD),  # no stream source
        (["publish", "driver_stats", "rows.parquet", "-k", "noequals"], BAD),
        (["publish", "driver_stats", "rows.parquet", "-k", "a=1", "-k", "a=2"], BAD),
        (["publish", "driver_stats", "rows.parquet", "-k", "transactional.id=x"], BAD),
    ],
    "stream": [
        (["stream", "nope"], BAD),
        (["stream", "driver_stats"], BAD),  # no stream source
        (["stream", "driver_stats", "--batch-interval", "0"], BAD),
        (["stream", "driver_stats", "--batch-size", "0"], BAD),
        (["stream", "driver_stats", "--metrics-port", "70000"], BAD),
        (["stream", "driver_stats", "-k", "=1"], BAD),
        (["stream", "driver_stats", "-k", "group.id=mine"], BAD),
    ],
}
"""Each command's own bad inputs and the exit code docs/cli.md documents for each."""


_SERVERS = ("core", "serve", "jobservice")
"""The commands that start a server: they fail at the busy port before reading the registry."""


_NO_REGISTRY = ("auth token create",)
"""The commands that never open the registry: a broken registry or project cannot fail them."""


def _global_cases() -> list[tuple[str, list[str], int, dict[str, str]]]:
    """Bad settings in front of each command's base invocation."""
    cases = []
    for name, base in BASES.items():
        cases += [
            (name, ["-c", "missing.yaml", *base], BAD, {}),
            (name, ["-c", "bad.yaml", *base], BAD, {}),
            (name, ["-c", "badtype.yaml", *base], BAD, {}),
            (name, ["-c", "adir", *base], BAD, {}),
            (name, base, BAD, {"POTLUCK_ONLINE_STORE__TYPE": "nope"}),
            (name, base, BAD, {"POTLUCK_OFFLINE_STORE__THREADS": "many"}),
        ]
        if name in _NO_REGISTRY:
            continue
        cases.append((name, ["-c", "damaged.yaml", *base], FAILED if name in _SERVERS else BAD, {}))
        if name not in ("plan", "apply", "projects list", "audit", *_SERVERS):  # not project-bound
            cases.append((name, ["-p", "nosuch", *base], BAD, {}))
        if name not in _SERVERS:  # they fail at the busy port first
            cases.append((name, base, FAILED, REGISTRY_DOWN))
    return cases


def _generic_cases() -> list[tuple[str, list[str], int]]:
    """Cases every command gets from its parameters alone (and the root's own)."""
    cases = [
        ("potluck", ["--no-such-option", "entities", "list"], BAD),
        ("potluck", ["nosuchcommand"], BAD),
        ("potluck", ["entities", "nosuchcommand"], BAD),
        ("potluck", ["-p"], BAD),
    ]
    for name, command in COMMANDS.items():
        path = name.split()
        cases.append((name, [*path, "--no-such-option"], BAD))
        if any(p.required for p in command.params):
            cases.append((name, path, BAD))
        if any(getattr(p, "opts", None) and "--output" in p.opts for p in command.params):
            cases.append((name, [*path, "--output", "xml"], BAD))
    return cases


def _invoke(args: list[str], env: dict[str, str], busy: int) -> Any:
    args = [str(busy) if a == BUSY else a for a in args]
    return CliRunner().invoke(app, args, env=env, input="")


def _assert_one_error_line(result: Any, code: int) -> None:
    stderr = result.stderr
    assert "Traceback" not in stderr and "Traceback" not in result.stdout
    assert result.exit_code == code, (result.exit_code, stderr, result.stdout)
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors == lines, stderr
    assert "secret" not in stderr


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and ".potluck" not in p.parts
    }


@pytest.mark.parametrize(
    ("name", "args", "code"),
    [(n, a, c) for n, cases in CASES.items() for a, c in cases],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_bad_input(in_project: Path, busy_port: int, name: str, args: list[str], code: int) -> None:
    before = _snapshot(in_project)
    _assert_one_error_line(_invoke(args, {}, busy_port), code)
    assert _snapshot(in_project) == before


@pytest.mark.parametrize(
    ("name", "args", "code", "env"),
    _global_cases(),
    ids=lambda v: " ".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_bad_settings(
    in_project: Path, busy_port: int, name: str, args: list[str], code: int, env: dict[str, str]
) -> None:
    _assert_one_error_line(_invoke(args, env, busy_port), code)


@pytest.mark.parametrize(("name", "args", "code"), _generic_cases(), ids=str)
def test_generic_bad_input(
    in_project: Path, busy_port: int, name: str, args: list[str], code: int
) -> None:
    _assert_one_error_line(_invoke(args, {}, busy_port), code)


def test_every_command_has_bad_inputs() -> None:
    assert sorted(CASES) == sorted(COMMANDS)
    assert sorted(BASES) == sorted(set(COMMANDS) - {"init", "projects create"})


def test_the_registry_still_holds_what_was_applied(in_project: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["entities", "list", "-o", "json"])
    assert [e["name"] for e in json.loads(listed.stdout)] == ["driver_id", "spare_id"]
    tables = runner.invoke(app, ["feature-tables", "list", "-o", "json"])
    assert [t["name"] for t in json.loads(tables.stdout)] == ["driver_stats"]
    projects = runner.invoke(app, ["projects", "list", "--all", "-o", "json"])
    assert [p["name"] for p in json.loads(projects.stdout)] == ["default"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nosuchcommand"], BAD, "No such command 'nosuchcommand'. (see 'potluck --help')"),
        (["-c", "missing.yaml", "entities", "list"], BAD, None),
        (
            ["historical", "-f", "driver_stats:hist", "-e", "entities.csv", "--out", "t.csv"],
            BAD,
            "cannot write 't.csv': column 'driver_stats__hist' holds lists (FLOAT_LIST), which "
            "CSV cannot store; write a .parquet file instead",
        ),
        (["serve", "--grpc-port", BUSY, "--http-port", "0"], FAILED, None),
    ],
    ids=["unknown-command", "missing-config", "lists-to-csv", "busy-port"],
)
def test_the_entry_point(
    in_project: Path, busy_port: int, args: list[str], code: int, message: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    argv = [str(busy_port) if a == BUSY else a for a in args]
    done = subprocess.run(
        [str(POTLUCK), *argv], cwd=in_project, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    if message is not None:
        assert lines[0] == f"error: {message}"
