"""Online Serving benchmark: gRPC and HTTP, 1 and 100 entities, 1 and 4 concurrent clients.

The server is a real ``potluck serve [--workers N]`` process (and its worker processes) over
Redis (POTLUCK_TEST_REDIS_URL) with a SQLite registry; 1,000 drivers with 3 features each are
written first. Each scenario runs a load generator in its own process (``benchmarks/serving.py
--loadgen ...``): N client threads send requests back to back (closed loop) for a fixed time
after a warm-up, recording each request's latency. Reported: p50, p99, requests/s, and the CPU
used over the measured window (user + system time from /proc, in % of one core) by the server
(all its processes), the load generator and Redis, and by everything else on the machine
("other": the machine's busy time from /proc/stat minus those three; the 2 cores are shared with
other engineers' work). Each scenario runs ``--runs`` times; every figure is the median of the
runs. Everything runs on 127.0.0.1.

``--auth off,jwt`` runs every scenario against a server without authentication and one that
requires a JWT (RS256, verified against a local JWKS; every request carries the same token, as a
client reusing its access token does), so the cost of authentication shows in the same run.

Usage: python benchmarks/serving.py [--seconds 5] [--warmup 1] [--runs 3] [--workers 1,2]
       [--transport grpc,http] [--entities 1,100] [--clients 1,4] [--auth off,jwt]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
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


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (a serving parent and its workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            out.extend(tree_pids(int(child)))
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


# ---- load generator (runs in its own process) --------------------------------------------------


def _grpc_caller(address: str, entities: int, token: str | None) -> Any:
    import grpc

    from potluck._proto.feast.serving import ServingService_pb2 as pb
    from potluck._proto.feast.serving import ServingService_pb2_grpc as pb_grpc
    from potluck._proto.feast.types import Value_pb2 as value_pb

    # A channel of its own (not the process-wide subchannel pool), so each client thread has
    # its own connection, as separate client processes would, and SO_REUSEPORT can spread them.
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = pb_grpc.ServingServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),) if token else None

    def call(i: int) -> None:
        ids = [(i * 37 + k) % DRIVERS for k in range(entities)]
        request = pb.GetOnlineFeaturesRequest(
            features=pb.FeatureList(val=FEATURES),
            entities={
                "driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=x) for x in ids])
            },
        )
        resp = stub.GetOnlineFeatures(request, metadata=metadata)
        assert resp.results[1].statuses[0] == pb.PRESENT

    return call


def _http_caller(port: int, entities: int, token: str | None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"

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
            call = _grpc_caller(f"127.0.0.1:{args.port}", args.entities, args.token)
        else:
            call = _http_caller(args.port, args.entities, args.token)
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
    server_pids = tree_pids(args.server_pid)
    barrier.wait()

    def sample() -> tuple[float, ...]:
        return (
            time.perf_counter(),
            cpu_seconds(os.getpid()),
            sum(cpu_seconds(pid) for pid in server_pids),
            cpu_seconds(args.redis_pid),
            machine_busy_seconds(),
        )

    start = sample()
    for t in threads:
        t.join()
    end = sample()
    wall, mine, server, redis, busy = (b - a for a, b in zip(start, end, strict=True))
    merged = sorted(x for lat in latencies for x in lat)
    print(
        json.dumps(
            {
                "count": len(merged),
                "seconds": wall,
                "p50": merged[len(merged) // 2],
                "p99": merged[int(len(merged) * 0.99)],
                "cpu": mine / wall,
                "server_cpu": server / wall,
                "redis_cpu": redis / wall,
                "other_cpu": (busy - mine - server - redis) / wall,
                "server_processes": len(server_pids),
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


def _jwt_config(config: Path) -> tuple[Path, str]:
    """Write a config requiring JWTs (a new RSA key in a local JWKS); return it and a token."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = config.parent / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "bench", "alg": "RS256"}]}))
    settings = yaml.safe_load(config.read_text())
    settings["auth"] = {
        "jwt": {"issuer": "https://bench", "audience": "potluck", "jwks_file": str(jwks)}
    }
    secured = config.parent / "potluck-jwt.yaml"
    secured.write_text(yaml.safe_dump(settings))
    now = int(time.time())
    claims = {
        "iss": "https://bench",
        "aud": "potluck",
        "sub": "bench",
        "exp": now + 3600,
        "permissions": ["read_online"],
    }
    return secured, jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (medians)")
    parser.add_argument("--workers", default="1,2", help="serving processes, e.g. 1,2")
    parser.add_argument("--transport", default="grpc,http")
    parser.add_argument("--entities", default="1,100")
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--auth", default="off,jwt", help="off (no auth) and/or jwt")
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        args.clients, args.entities = int(args.clients), int(args.entities)
        loadgen(args)
        return
    redis_url = os.environ.get("POTLUCK_TEST_REDIS_URL")
    if not redis_url:
        sys.exit("POTLUCK_TEST_REDIS_URL is not set (run scripts/services.sh start)")
    import redis

    redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
    with tempfile.TemporaryDirectory() as tmp:
        config = _setup(Path(tmp), redis_url)
        secured, token = _jwt_config(config)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, Redis at {redis_url}")
        print(f"load average at the start: {Path('/proc/loadavg').read_text().split()[:3]}")
        print()
        print(
            "| workers | auth | transport | entities | clients | p50 | p99 | req/s | server CPU "
            "| loadgen CPU | Redis CPU | other CPU | server µs/req | loadgen µs/req |"
        )
        print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for workers in _ints(args.workers):
            for auth in args.auth.split(","):
                served = secured if auth == "jwt" else config
                args.token = token if auth == "jwt" else None
                with _server(served, workers) as (server_pid, grpc_port, http_port):
                    for transport in args.transport.split(","):
                        port = grpc_port if transport == "grpc" else http_port
                        for entities in _ints(args.entities):
                            for clients in _ints(args.clients):
                                runs = [
                                    _scenario(
                                        args,
                                        server_pid,
                                        redis_pid,
                                        transport,
                                        port,
                                        entities,
                                        clients,
                                    )
                                    for _ in range(args.runs)
                                ]
                                row = _row(workers, transport, entities, clients, runs)
                                print(_auth_row(row, auth), flush=True)
        print()
        print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")


@contextlib.contextmanager
def _server(config: Path, workers: int) -> Iterator[tuple[int, int, int]]:
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
            *(["--workers", str(workers)] if workers != 1 else []),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(grpc_port, server)
        _wait_port(http_port, server)
        time.sleep(1.0)  # every worker listens once the parent has printed; let them settle
        yield server.pid, grpc_port, http_port
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _scenario(
    args: argparse.Namespace,
    server_pid: int,
    redis_pid: int,
    transport: str,
    port: int,
    entities: int,
    clients: int,
) -> dict[str, Any]:
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
        "--server-pid",
        str(server_pid),
        "--redis-pid",
        str(redis_pid),
        *(["--token", args.token] if args.token else []),
    ]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed for {transport} {entities}x{clients}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["rate"] = result["count"] / result["seconds"]
    return result


def _row(
    workers: int, transport: str, entities: int, clients: int, runs: list[dict[str, Any]]
) -> str:
    def median(key: str) -> float:
        return float(statistics.median(run[key] for run in runs))

    rate = median("rate")
    server_us = statistics.median(r["server_cpu"] / r["rate"] for r in runs) * 1e6
    loadgen_us = statistics.median(r["cpu"] / r["rate"] for r in runs) * 1e6
    return (
        f"| {workers} | {transport} | {entities} | {clients} | {median('p50') * 1e3:.2f} ms "
        f"| {median('p99') * 1e3:.2f} ms | {rate:,.0f} | {median('server_cpu'):.0%} "
        f"| {median('cpu'):.0%} | {median('redis_cpu'):.0%} | {median('other_cpu'):.0%} "
        f"| {server_us:.0f} | {loadgen_us:.0f} |"
    )


def _auth_row(row: str, auth: str) -> str:
    """Insert the auth column after the workers column of a :func:`_row` line."""
    first, rest = row[2:].split(" | ", 1)
    return f"| {first} | {auth} | {rest}"


if __name__ == "__main__":
    main()
