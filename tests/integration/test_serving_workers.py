"""`potluck serve --workers N`: N real processes share one gRPC and one HTTP port (SO_REUSEPORT),
over a SQLite registry and online store."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from _serving_support import DRIVER, DRIVER_STATS, new_project, open_store, utc_now, write_rows

from potluck import Client
from potluck._proto.feast.serving import ServingService_pb2 as pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as pb_grpc
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.config import load_settings
from potluck.errors import UnavailableError
from potluck.serving.service import ServingService
from potluck.serving.workers import start_workers

POTLUCK = Path(sys.executable).parent / "potluck"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port``, IPv4 or v4-mapped IPv6 (/proc/net)."""
    local = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    rows = [
        row.split()
        for table in ("tcp", "tcp6")
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]
    ]
    return sum(1 for row in rows if row[1] in local and row[3] == "0A")


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out.update(int(child) for child in (task / "children").read_text().split())
    return out


def _workers(pid: int) -> set[int]:
    """The serving workers among ``pid``'s children (not multiprocessing's resource tracker)."""
    return {
        child
        for child in _children(pid)
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    project = new_project()
    path = tmp_path / "potluck.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "registry": f"sqlite:///{tmp_path / 'registry.db'}",
                "online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")},
            }
        )
    )
    with Client(settings=load_settings(path)) as client:
        client.apply([DRIVER, DRIVER_STATS])
    store = open_store({"type": "sqlite", "path": str(tmp_path / "online.db")})
    rows = [{"driver_id": i, "trips": 10 * i, "event_timestamp": utc_now()} for i in range(5)]
    write_rows(store, project, DRIVER_STATS, rows)
    store.close()
    return path


def _serve(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(POTLUCK), "--config", str(config), "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture()
def served(config: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    grpc_port, http_port = _free_port(), _free_port()
    proc = _serve(
        config, "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--workers", "2"
    )
    assert proc.stderr is not None
    try:
        notice = proc.stderr.readline()  # without auth it listens on this machine only
        assert notice.startswith("potluck serve: authentication is off"), notice
        banner = proc.stderr.readline()  # printed once every worker listens
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert re.match(
        rf"potluck serving project '\w+' \(2 processes\): gRPC on 127\.0\.0\.1:{grpc_port}, "
        rf"HTTP on http://127\.0\.0\.1:{http_port}$",
        banner.strip(),
    ), banner
    try:
        yield proc, grpc_port, http_port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _count(text: str) -> int:
    match = re.search(
        r'^potluck_serving_request_duration_seconds_count\{endpoint="http:/get-online-features"\}'
        r" (\S+)$",
        text,
        re.MULTILINE,
    )
    return 0 if match is None else int(float(match.group(1)))


def test_two_workers_share_both_ports_and_split_the_connections(
    served: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, grpc_port, http_port = served
    assert len(_workers(proc.pid)) == 2
    assert (_listeners(grpc_port), _listeners(http_port)) == (2, 2)
    body = {"features": ["driver_stats:trips"], "entities": {"driver_id": [3, 9]}}
    reads = 41  # odd, so the two workers' counts always differ
    for _ in range(reads):  # a new connection each time: the kernel picks a worker per connection
        resp = httpx.post(f"http://127.0.0.1:{http_port}/get-online-features", json=body)
        assert resp.json()["results"][1]["values"] == [30, None]
    counts = set()
    for _ in range(60):
        counts.add(_count(httpx.get(f"http://127.0.0.1:{http_port}/metrics").text))
        if len(counts) == 2:
            break
    assert len(counts) == 2 and sum(counts) == reads  # each worker counted its own share
    request = pb.GetOnlineFeaturesRequest(
        features=pb.FeatureList(val=["driver_stats:trips"]),
        entities={"driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=4)])},
    )
    for _ in range(6):
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
            reply = pb_grpc.ServingServiceStub(channel).GetOnlineFeatures(request)
        assert reply.results[1].values[0].int64_val == 40


def test_sigterm_stops_every_worker(served: tuple[subprocess.Popen[str], int, int]) -> None:
    proc, grpc_port, http_port = served
    workers = _workers(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert (_listeners(grpc_port), _listeners(http_port)) == (0, 0)


def test_a_worker_that_dies_stops_the_group(
    served: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, _, _ = served
    first, second = sorted(_workers(proc.pid))
    os.kill(first, signal.SIGKILL)
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None
    assert (
        proc.stderr.read()
        .strip()
        .endswith("error: a serving worker exited on its own; the others were stopped")
    )
    deadline = time.monotonic() + 10
    while Path(f"/proc/{second}").exists():
        assert time.monotonic() < deadline, "the other worker is still running"
        time.sleep(0.1)


def test_ports_in_use_are_refused(
    config: Path, served: tuple[subprocess.Popen[str], int, int]
) -> None:
    _, grpc_port, http_port = served
    # Another group on the same ports would share them silently under SO_REUSEPORT: refused.
    again = _serve(
        config, "--grpc-port", str(grpc_port), "--http-port", str(_free_port()), "--workers", "2"
    )
    _, err = again.communicate(timeout=60)
    assert again.returncode == 1
    assert err.strip() == (
        f"error: cannot listen for gRPC on 127.0.0.1:{grpc_port}: Address already in use; "
        "choose a free port with --grpc-port (0 picks one), or stop the program using it"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        again = _serve(config, "--http-port", str(port), "--grpc-port", "0", "--workers", "3")
        _, err = again.communicate(timeout=60)
    assert again.returncode == 1
    assert err.strip() == (
        f"error: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use; "
        "choose a free port with --http-port (0 picks one), or stop the program using it"
    )


def _unreachable_store() -> ServingService:
    raise UnavailableError(
        "online store Redis at 127.0.0.1:1 is unavailable", address="127.0.0.1:1"
    )


def test_a_worker_that_cannot_start_fails_the_start() -> None:
    grpc_port = _free_port()
    with pytest.raises(UnavailableError) as err:
        start_workers(_unreachable_store, workers=2, grpc_port=grpc_port)
    assert err.value.message == "online store Redis at 127.0.0.1:1 is unavailable"
    assert err.value.address == "127.0.0.1:1"
    with socket.socket() as sock:  # the port was given back
        sock.bind(("127.0.0.1", grpc_port))
