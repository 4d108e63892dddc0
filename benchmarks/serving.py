"""Online Serving benchmark: gRPC and HTTP, 1 and 100 entities, 1 and 4 concurrent clients.

The server is a real ``potluck serve`` process over Redis (POTLUCK_TEST_REDIS_URL) with a
SQLite registry; 1,000 drivers with 3 features each are written first. Each scenario runs a load
generator in its own process (``benchmarks/serving.py --loadgen ...``): N client threads send
requests back to back (closed loop) for a fixed time after a warm-up, recording each request's
latency. Reported: p50, p99, requests/s, and the CPU used by the server and by the load
generator (user + system time from /proc/<pid>/stat over the measured window, in % of one core;
the machine has 2 cores shared with other work). Everything runs on 127.0.0.1.

Usage: python benchmarks/serving.py [--seconds 5] [--warmup 1] [--transport grpc,http]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

FEATURES = ["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:trips"]
DRIVERS = 1_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# ---- load generator (runs in its own process) --------------------------------------------------


def _grpc_caller(address: str, entities: int) -> Any:
    import grpc

    from potluck._proto.feast.serving import ServingService_pb2 as pb
    from potluck._proto.feast.serving import ServingService_pb2_grpc as pb_grpc
    from potluck._proto.feast.types import Value_pb2 as value_pb

    channel = grpc.insecure_channel(address)
    stub = pb_grpc.ServingServiceStub(channel)

    def call(i: int) -> None:
        ids = [(i * 37 + k) % DRIVERS for k in range(entities)]
        request = pb.GetOnlineFeaturesRequest(
            features=pb.FeatureList(val=FEATURES),
            entities={
                "driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=x) for x in ids])
            },
        )
        resp = stub.GetOnlineFeatures(request)
        assert resp.results[1].statuses[0] == pb.PRESENT

    return call


def _http_caller(port: int, entities: int) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}

    def call(i: int) -> None:
        ids = [(i * 37 + k) % DRIVERS for k in range(entities)]
        # bytes, so http.client sends headers and body in one segment (no Nagle delay)
        body = json.dumps({"features": FEATURES, "entities": {"driver_id": ids}}).encode()
        conn.request("POST", "/get-online-features", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data

    return call


def loadgen(args: argparse.Namespace) -> None:
    """Run one scenario and print its latencies and the generator's own CPU as JSON."""
    stop_warmup = time.perf_counter() + args.warmup
    stop = stop_warmup + args.seconds
    latencies: list[list[float]] = [[] for _ in range(args.clients)]
    barrier = threading.Barrier(args.clients + 1)

    def client(index: int) -> None:
        if args.transport == "grpc":
            call = _grpc_caller(f"127.0.0.1:{args.port}", args.entities)
        else:
            call = _http_caller(args.port, args.entities)
        i = index * 100_003
        while time.perf_counter() < stop_warmup:
            call(i)
            i += 1
        barrier.wait()
        mine = latencies[index]
        while True:
            start = time.perf_counter()
            if start >= stop:
                break
            call(i)
            mine.append(time.perf_counter() - start)
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu0, wall0 = cpu_seconds(os.getpid()), time.perf_counter()
    for t in threads:
        t.join()
    cpu1, wall1 = cpu_seconds(os.getpid()), time.perf_counter()
    merged = sorted(x for lat in latencies for x in lat)
    print(
        json.dumps(
            {
                "count": len(merged),
                "seconds": wall1 - wall0,
                "p50": merged[len(merged) // 2],
                "p99": merged[int(len(merged) * 0.99)],
                "cpu": (cpu1 - cpu0) / (wall1 - wall0),
            }
        )
    )


# ---- orchestration -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"potluck serve did not open port {port}") from None
            time.sleep(0.1)


def _setup(folder: Path, redis_url: str) -> Path:
    from potluck import Client, Entity, Feature, FeatureTable, ValueType
    from potluck.config import load_settings
    from potluck.online.codec import encode_entity_keys
    from potluck.types import TIMESTAMP_ARROW_TYPE

    project = f"bench_{uuid.uuid4().hex[:8]}"
    config = folder / "potluck.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "registry": "sqlite:///registry.db",
                "online_store": {"type": "redis", "url": redis_url},
            }
        )
    )
    table = FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.FLOAT),
            Feature(name="acc_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
        ),
        max_age=timedelta(days=1),
    )
    with Client(settings=load_settings(config)) as client:
        client.apply([Entity(name="driver_id", value_type=ValueType.INT64), table])
        store = client._online()
        ids = pa.array(range(DRIVERS), pa.int64())
        now = datetime.now(timezone.utc)
        store.ensure_table(project, table)
        store.write(
            project,
            table,
            pa.RecordBatch.from_pydict(
                {
                    "entity_key": encode_entity_keys(
                        project, table.name, {"driver_id": ids}, {"driver_id": ValueType.INT64}
                    ),
                    "event_timestamp": pa.array([now] * DRIVERS, TIMESTAMP_ARROW_TYPE),
                    "created_timestamp": pa.array([None] * DRIVERS, TIMESTAMP_ARROW_TYPE),
                    "conv_rate": pa.array([0.5] * DRIVERS, pa.float32()),
                    "acc_rate": pa.array([0.25] * DRIVERS, pa.float64()),
                    "trips": ids,
                }
            ),
        )
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--transport", default="grpc,http")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--entities", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        loadgen(args)
        return
    redis_url = os.environ.get("POTLUCK_TEST_REDIS_URL")
    if not redis_url:
        sys.exit("POTLUCK_TEST_REDIS_URL is not set (run scripts/services.sh start)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = _setup(folder, redis_url)
        grpc_port, http_port = _free_port(), _free_port()
        potluck = Path(sys.executable).parent / "potluck"
        server = subprocess.Popen(
            [
                str(potluck),
                "--config",
                str(config),
                "serve",
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(grpc_port, server)
            _wait_port(http_port, server)
            print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, Redis at {redis_url}")
            print()
            print(
                "| transport | entities | clients | p50 | p99 | req/s | server CPU | loadgen CPU |"
            )
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for transport in args.transport.split(","):
                port = grpc_port if transport == "grpc" else http_port
                for entities in (1, 100):
                    for clients in (1, 4):
                        row = _scenario(args, server.pid, transport, port, entities, clients)
                        print(row, flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def _scenario(
    args: argparse.Namespace,
    server_pid: int,
    transport: str,
    port: int,
    entities: int,
    clients: int,
) -> str:
    command = [
        sys.executable,
        __file__,
        "--loadgen",
        "--transport",
        transport,
        "--port",
        str(port),
        "--clients",
        str(clients),
        "--entities",
        str(entities),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    time.sleep(args.warmup + 0.3)  # measure the server over (about) the measured window
    cpu0, wall0 = cpu_seconds(server_pid), time.perf_counter()
    out, _ = proc.communicate()
    cpu1, wall1 = cpu_seconds(server_pid), time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed for {transport} {entities}x{clients}")
    result = json.loads(out)
    server_cpu = (cpu1 - cpu0) / (wall1 - wall0)
    return (
        f"| {transport} | {entities} | {clients} | {result['p50'] * 1e3:.2f} ms "
        f"| {result['p99'] * 1e3:.2f} ms | {result['count'] / result['seconds']:,.0f} "
        f"| {server_cpu:.0%} | {result['cpu']:.0%} |"
    )


if __name__ == "__main__":
    main()
