"""Several `potluck serve` processes side by side, each on its own online store (SQLite, Redis),
sharing one registry."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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

POTLUCK = Path(sys.executable).parent / "potluck"

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert proc.poll() is None, f"potluck serve exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"port {port} did not open"
            time.sleep(0.1)


def _config(folder: Path, project: str, registry: Path, online: dict[str, Any]) -> Path:
    folder.mkdir()
    path = folder / "potluck.yaml"
    path.write_text(
        yaml.safe_dump(
            {"project": project, "registry": f"sqlite:///{registry}", "online_store": online}
        )
    )
    return path


def test_two_servers_two_stores(tmp_path: Path, redis_url: str) -> None:
    project = new_project()
    registry = tmp_path / "registry.db"
    configs = {
        "sqlite": _config(
            tmp_path / "a", project, registry, {"type": "sqlite", "path": "online.db"}
        ),
        "redis": _config(tmp_path / "b", project, registry, {"type": "redis", "url": redis_url}),
    }
    with Client(settings=load_settings(configs["sqlite"])) as client:
        client.apply([DRIVER, DRIVER_STATS])
    now = utc_now()
    stores = {
        "sqlite": {"type": "sqlite", "path": str(tmp_path / "a" / "online.db")},
        "redis": {"type": "redis", "url": redis_url},
    }
    for trips, kind in enumerate(("sqlite", "redis"), start=1):
        store = open_store(stores[kind])
        write_rows(
            store, project, DRIVER_STATS, [{"driver_id": 7, "trips": trips, "event_timestamp": now}]
        )
        store.close()
    procs: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
    try:
        for kind, config in configs.items():
            grpc_port, http_port = _free_port(), _free_port()
            with (tmp_path / f"{kind}.log").open("wb") as log:
                proc = subprocess.Popen(
                    [
                        str(POTLUCK),
                        "--config",
                        str(config),
                        "serve",
                        "--grpc-port",
                        str(grpc_port),
                        "--http-port",
                        str(http_port),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            procs[kind] = (proc, grpc_port, http_port)
        answers = {}
        for kind, (proc, grpc_port, http_port) in procs.items():
            _wait_for(grpc_port, proc)
            _wait_for(http_port, proc)
            body = {"features": ["driver_stats:trips"], "entities": {"driver_id": [7]}}
            resp = httpx.post(f"http://127.0.0.1:{http_port}/get-online-features", json=body)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                reply = pb_grpc.ServingServiceStub(channel).GetOnlineFeatures(
                    pb.GetOnlineFeaturesRequest(
                        features=pb.FeatureList(val=["driver_stats:trips"]),
                        entities={
                            "driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=7)])
                        },
                    )
                )
            answers[kind] = (
                resp.json()["results"][1]["values"],
                reply.results[1].values[0].int64_val,
            )
        assert answers == {"sqlite": ([1], 1), "redis": ([2], 2)}
        with Client(
            settings=load_settings(configs["redis"]).model_copy(
                update={"serving_url": f"127.0.0.1:{procs['redis'][1]}"}
            )
        ) as remote:
            assert remote.get_online_features(
                ["driver_stats:trips"], [{"driver_id": 7}]
            ).to_dict() == {
                "driver_id": [7],
                "driver_stats__trips": [2],
            }
    finally:
        for proc, _, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in procs.values():
            assert proc.wait(timeout=30) == 0
