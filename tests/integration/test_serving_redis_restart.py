"""A running server answers UNAVAILABLE / 503 while its Redis is down and recovers by itself.

The test starts its own redis-server on a free port (never the shared one), stops it under a
running server, and starts it again on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from _serving_support import (  # noqa: F401 - fixtures used by name
    DRIVER,
    DRIVER_STATS,
    new_project,
    open_store,
    registry_fixture,
    utc_now,
    write_rows,
)

from potluck._proto.feast.serving import ServingService_pb2 as pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as pb_grpc
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import start_serving
from potluck.serving.service import ServingService

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
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
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


@pytest.fixture()
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    yield port
    proc.kill()
    proc.wait()


REQUEST = pb.GetOnlineFeaturesRequest(
    features=pb.FeatureList(val=["driver_stats:trips"]),
    entities={"driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=1)])},
)
BODY = {"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}}


def test_unavailable_while_down_then_recovers(
    registry: SqlRegistry, tmp_path: Path, redis_port: int
) -> None:
    project = new_project()
    registry.apply(project, [DRIVER, DRIVER_STATS])
    store = open_store({"type": "redis", "url": f"redis://127.0.0.1:{redis_port}/0"})
    rows = [{"driver_id": 1, "trips": 5, "event_timestamp": utc_now()}]
    write_rows(store, project, DRIVER_STATS, rows)
    with (
        start_serving(ServingService(registry, store, project)) as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        stub = pb_grpc.ServingServiceStub(channel)
        http = httpx.Client(base_url=server.http_url)
        assert list(stub.GetOnlineFeatures(REQUEST).results[1].statuses) == [pb.PRESENT]

        subprocess.run(["redis-cli", "-p", str(redis_port), "shutdown", "nosave"], check=False)
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetOnlineFeatures(REQUEST)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert (err.value.details() or "").startswith(
            f"online store Redis at 127.0.0.1:{redis_port} is unavailable"
        )
        resp = http.post("/get-online-features", json=BODY)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"
        assert resp.json()["error"]["message"].startswith(
            f"online store Redis at 127.0.0.1:{redis_port} is unavailable"
        )
        assert http.get("/health").status_code == 503  # readiness follows the store
        assert http.get("/health/live").status_code == 200

        redis_proc = _start_redis(redis_port, tmp_path)
        try:
            deadline = time.monotonic() + 10
            while http.post("/get-online-features", json=BODY).status_code != 200:
                assert time.monotonic() < deadline, "serving did not recover"
                time.sleep(0.1)
            while http.get("/health").status_code != 200:  # within the check's ~1 s cache
                assert time.monotonic() < deadline, "readiness did not recover"
                time.sleep(0.1)
            after = stub.GetOnlineFeatures(REQUEST)
            assert list(after.results[1].statuses) == [pb.NOT_FOUND]  # a fresh, empty Redis
            write_rows(store, project, DRIVER_STATS, rows)
            assert list(stub.GetOnlineFeatures(REQUEST).results[1].statuses) == [pb.PRESENT]
            assert http.post("/get-online-features", json=BODY).json()["results"][1] == {
                "values": [5],
                "statuses": ["PRESENT"],
                "event_timestamps": [rows[0]["event_timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ")],
            }
        finally:
            http.close()
            store.close()
            redis_proc.kill()
            redis_proc.wait()
