"""``potluck serve`` and ``potluck core`` as a new user runs them (issue 8, second trial), as real
processes: Ctrl-C exits 130 and SIGTERM 0 whatever the number of workers and whenever the signal
comes, every line on stderr has potluck's one-line form (uvicorn's included, in workers too), a
worker group restarts at once on its ports, and a ``--host`` that is not this machine's is a usage
mistake (exit code 2)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from potluck import Client, Entity, ValueType
from potluck.cli.main import app
from potluck.config import load_settings

POTLUCK = Path(sys.executable).parent / "potluck"
BANNER = re.compile(
    r"potluck serving project 'default'(?: \(2 processes\))?: "
    r"gRPC on 127\.0\.0\.1:(\d+), HTTP on http://127\.0\.0\.1:(\d+)"
)
NOT_HTTP = [b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"]
LATIN_1 = "application/json; charset=latin-1"
REFUSED_LATIN_1 = r"rejected POST /get-online-features from 127\.0\.0\.1:\d+: " + re.escape(
    f"415 unsupported_media_type: unsupported charset 'latin-1' in Content-Type '{LATIN_1}': "
    "JSON is UTF-8 (RFC 8259); send the request body encoded as UTF-8, with 'Content-Type: "
    "application/json' or 'application/json; charset=utf-8'"
)
HOST_HINT = (
    "pass one of its addresses, 127.0.0.1 (this machine only) or 0.0.0.0 (all of its IPv4 "
    "addresses)"
)

pytestmark = pytest.mark.slow


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A project folder with one entity applied, on SQLite."""
    (tmp_path / "potluck.yaml").write_text(
        "project: default\nregistry: sqlite:///registry.db\n"
        "online_store: {type: sqlite, path: online.db}\n"
    )
    settings = load_settings(tmp_path / "potluck.yaml", environ={})
    with Client(settings=settings) as client:
        client.apply([Entity(name="driver_id", value_type=ValueType.INT64)])
    return tmp_path


def _notice(what: str) -> str:
    """The line a server without authentication prints first (docs/security.md)."""
    return (
        f"{what}: authentication is off, so it listens on 127.0.0.1 only (this machine); "
        "configure auth to serve other machines (docs/security.md)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _started(folder: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``potluck ARGS`` in its own process group; yield it once it printed its first line."""
    with subprocess.Popen(
        [str(POTLUCK), *args],
        cwd=folder,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell gives a foreground job
    ) as proc:
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline().rstrip("\n") == _notice(f"potluck {args[0]}")
            yield proc, proc.stderr.readline().rstrip("\n")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _stop(proc: subprocess.Popen[str], signum: int, *, group: bool) -> tuple[int, list[str]]:
    """Send ``signum`` (to the whole group, as Ctrl-C does, or to the process alone); return the
    exit code and the lines printed after the first."""
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, rest = proc.communicate(timeout=60)
    return proc.returncode, rest.splitlines()


def _send_raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


# ---- Ctrl-C exits 130, and every line is potluck's -----------------------------------------------


@pytest.mark.parametrize(
    ("workers", "group"),
    [("1", False), ("2", True)],
    ids=["1 worker, kill -INT", "2 workers, Ctrl-C to the group"],
)
def test_serve_prints_potluck_lines_only_and_ctrl_c_exits_130(
    project: Path, workers: str, group: bool
) -> None:
    ports = ["--grpc-port", str(_free_port()), "--http-port", str(_free_port())]
    with _started(project, "serve", *ports, "--workers", workers) as (proc, banner):
        match = BANNER.fullmatch(banner)
        assert match, banner
        http_port = int(match.group(2))
        answers = [_send_raw(http_port, payload) for payload in NOT_HTTP]
        refused = httpx.post(
            f"http://127.0.0.1:{http_port}/get-online-features",
            content='{"features": [], "entities": {"driver_id": ["caf\xe9"]}}'.encode("latin-1"),
            headers={"content-type": LATIN_1},
            timeout=10,
        )
        code, lines = _stop(proc, signal.SIGINT, group=group)
    assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {b"HTTP/1.1 400 Bad Request"}
    assert refused.status_code == 415
    assert code == 130
    assert lines[:2] == ["warning: Invalid HTTP request received."] * 2
    assert re.fullmatch(f"warning: {REFUSED_LATIN_1}", lines[2]), lines[2]
    assert lines[3:] == ["error: interrupted"]
    # The server closed those connections first, so the ports hold closed connections (TIME_WAIT)
    # now; a restart on the same ports starts anyway, and SIGTERM to the group ends it with 0.
    with _started(project, "serve", *ports, "--workers", workers) as (proc, banner):
        assert BANNER.fullmatch(banner), banner
        assert _stop(proc, signal.SIGTERM, group=True) == (0, [])


# ---- SIGTERM exits 0 -----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_stops_on_sigterm_to_itself_alone_with_0(project: Path, workers: str) -> None:
    """As Kubernetes stops a container: SIGTERM to the main process only."""
    ports = ["--grpc-port", "0", "--http-port", "0"]
    with _started(project, "serve", *ports, "--workers", workers) as (proc, banner):
        assert BANNER.fullmatch(banner), banner
        assert _stop(proc, signal.SIGTERM, group=False) == (0, [])


@pytest.mark.parametrize(
    ("signum", "code", "lines"),
    [(signal.SIGINT, 130, ["error: interrupted"]), (signal.SIGTERM, 0, [])],
    ids=["SIGINT", "SIGTERM"],
)
def test_core_exits_130_on_ctrl_c_and_0_on_sigterm(
    project: Path, signum: int, code: int, lines: list[str]
) -> None:
    with _started(project, "core", "--port", "0") as (proc, banner):
        registry = re.escape(f"sqlite:///{project / 'registry.db'}")
        assert re.fullmatch(
            rf"potluck core listening on 127\.0\.0\.1:\d+ \(registry: {registry}\)", banner
        ), banner
        assert _stop(proc, signum, group=True) == (code, lines)


# ---- a signal while workers start ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The worker processes ``pid`` has spawned so far."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        if ppid == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("signum", "code", "lines"),
    [(signal.SIGINT, 130, ["error: interrupted"]), (signal.SIGTERM, 0, [])],
    ids=["Ctrl-C", "SIGTERM"],
)
def test_a_signal_while_workers_start_stops_them_all_without_a_traceback(
    project: Path, signum: int, code: int, lines: list[str]
) -> None:
    with subprocess.Popen(
        [str(POTLUCK), "serve", "--grpc-port", "0", "--http-port", "0", "--workers", "2"],
        cwd=project,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            while not (workers := _children(proc.pid)):
                assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
                time.sleep(0.01)
            assert _stop(proc, signum, group=True) == (code, [_notice("potluck serve"), *lines])
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker outlived the parent"
        time.sleep(0.05)


# ---- --host: a usage mistake ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            "192.0.2.1",  # TEST-NET-1: documentation only, never a machine's address
            "--host '192.0.2.1' is not an address of this machine (EADDRNOTAVAIL: Cannot assign "
            f"requested address); {HOST_HINT}",
        ),
        (
            "",
            "--host '' is not an address of this machine: it does not resolve (Name or service "
            f"not known); {HOST_HINT}",
        ),
    ],
    ids=["not this machine's", "does not resolve"],
)
@pytest.mark.parametrize("command", [["serve"], ["core"]], ids=["serve", "core"])
def test_a_host_not_on_this_machine_is_a_usage_mistake(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    host: str,
    message: str,
) -> None:
    monkeypatch.chdir(project)
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("POTLUCK_")}
    result = CliRunner().invoke(app, [*command, "--host", host], env=unset)
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {message}\n", "")
