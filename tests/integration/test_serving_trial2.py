"""Serving faults of the second new-user trial (issue 8), in-process: a request body declared in a
charset other than UTF-8 gets 415, uvicorn's log records come out of potluck's logger, serving
listens on IPv6 too, and how SIGINT and SIGTERM stop a server's main thread
(:mod:`potluck._stop_signals`). The same faults through ``potluck serve`` and ``potluck core`` are
in tests/e2e/test_serve_trial2.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from _serving_support import (  # noqa: F401 - fixtures used by name
    CUSTOMER,
    DRIVER,
    PAIR_STATS,
    new_project,
    open_store,
    registry_fixture,
    store_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck._proto.feast.serving import ServingService_pb2 as pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as pb_grpc
from potluck._stop_signals import StopSignals, Terminated
from potluck.registry.sql import SqlRegistry
from potluck.serving.http import create_app
from potluck.serving.metrics import ServingMetrics
from potluck.serving.server import start_serving
from potluck.serving.service import ServingService

READ = "/get-online-features"
CAFE = json.dumps(
    {"features": ["pair_stats:rides"], "entities": {"driver_id": [1], "customer_id": ["caf\xe9"]}},
    ensure_ascii=False,
)


@pytest.fixture()
def service(registry: SqlRegistry, tmp_path: Path) -> Iterator[ServingService]:
    project = new_project()
    registry.apply(project, [DRIVER, CUSTOMER, PAIR_STATS])
    store = open_store(store_config("sqlite", tmp_path, None))
    yield ServingService(registry, store, project)
    store.close()


def _post(app: Any, content: bytes, content_type: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await client.post(READ, content=content, headers={"content-type": content_type})

    return asyncio.run(go())


def _refused(charset: str, content_type: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "unsupported_media_type",
            "message": f"unsupported charset {charset!r} in Content-Type {content_type!r}: JSON "
            "is UTF-8 (RFC 8259); send the request body encoded as UTF-8, with 'Content-Type: "
            "application/json' or 'application/json; charset=utf-8'",
        }
    }


# ---- charsets: JSON is UTF-8 -------------------------------------------------------------------


def test_a_latin_1_body_is_refused_with_415_naming_the_charset(
    service: ServingService, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    caplog.set_level(logging.WARNING)
    content_type = "application/json; charset=latin-1"
    resp = _post(app, CAFE.encode("latin-1"), content_type)
    assert (resp.status_code, resp.json()) == (415, _refused("latin-1", content_type))
    records = [r for r in caplog.records if r.name.startswith("potluck.")]
    assert [(r.name, r.levelname, r.exc_info) for r in records] == [
        ("potluck.serving.http", "WARNING", None)
    ]
    assert records[0].getMessage() == (
        f"rejected POST {READ} from 127.0.0.1:123: 415 unsupported_media_type: "
        + _refused("latin-1", content_type)["error"]["message"]
    )


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        ("application/json; charset=ISO-8859-1", "ISO-8859-1"),
        ("application/json;charset=windows-1252", "windows-1252"),
        ('application/json; charset="utf-16"', "utf-16"),
        ("application/json; charset=utf-8-sig", "utf-8-sig"),
        ("application/json; charset=", ""),
        ("application/json; charset=utf-8; charset=latin-1", "latin-1"),
    ],
    ids=["iso-8859-1", "no space", "utf-16 quoted", "utf-8 with BOM", "empty", "second charset"],
)
def test_every_charset_but_utf_8_is_refused(
    service: ServingService, content_type: str, charset: str
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _post(app, CAFE.encode(), content_type)
    assert (resp.status_code, resp.json()) == (415, _refused(charset, content_type))


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=utf8",
        'application/json; charset="utf-8"',
        "application/json; Charset=Utf-8; profile=x",
        "application/json; profile=x",
    ],
)
def test_utf_8_in_any_spelling_is_read(service: ServingService, content_type: str) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _post(app, CAFE.encode(), content_type)
    assert resp.status_code == 200
    assert resp.json()["results"][1]["values"] == ["caf\xe9"]
    assert resp.json()["results"][2]["statuses"] == ["NOT_FOUND"]


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzUTF-_8 1\"'", max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.lists(
        st.tuples(st.sampled_from(["charset", "Charset", " charset ", "profile", "q"]), _TOKEN),
        max_size=3,
    )
)
def test_the_charset_rule_matches_a_reference(
    service: ServingService, params: list[tuple[str, str]]
) -> None:
    """Accepted exactly when every ``charset`` parameter names UTF-8; else the first other one
    is named."""
    content_type = "application/json" + "".join(f";{key}={value}" for key, value in params)
    charsets = [v.strip().strip('"') for k, v in params if k.strip().lower() == "charset"]
    other = [c for c in charsets if c.lower() not in ("utf-8", "utf8")]
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _post(app, b'{"features": ["pair_stats:rides"], "entities": {}}', content_type)
    if other:
        assert (resp.status_code, resp.json()) == (415, _refused(other[0], content_type))
    else:  # read: the body's own mistake (no entities), not its charset
        assert (resp.status_code, resp.json()["error"]["code"]) == (422, "invalid_argument")


# ---- uvicorn's log records go through potluck's logger -----------------------------------------


def _send_raw(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello to the plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
]


def _wait_for_records(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    deadline = time.monotonic() + 10
    while True:
        # Only potluck's records: pytest may also capture uvicorn's own logger directly (it
        # does not propagate), which says nothing about what a potluck user sees.
        records = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("potluck")
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.01)


def test_uvicorn_records_come_out_of_potluck_serving_http(
    service: ServingService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with start_serving(service) as server:
        answers = [_send_raw(server.http_port, payload) for payload in NOT_HTTP]
        records = _wait_for_records(caplog, len(NOT_HTTP))
    assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {b"HTTP/1.1 400 Bad Request"}
    assert {answer.rsplit(b"\r\n", 1)[1] for answer in answers} == {
        b"Invalid HTTP request received."
    }
    assert [(r.name, r.levelname, r.getMessage(), r.exc_info) for r in records] == [
        ("potluck.serving.http", "WARNING", "Invalid HTTP request received.", None)
    ] * len(NOT_HTTP)
    assert logging.getLogger("uvicorn").propagate is False


def test_uvicorn_records_reach_only_the_handlers_of_potluck_loggers(
    service: ServingService,
) -> None:
    """An application that handles both the root logger and potluck's sees each line once."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.name}: {record.getMessage()}")

    root, handler = logging.getLogger(), Collect()
    root.addHandler(handler)
    try:
        with start_serving(service) as server:
            _send_raw(server.http_port, NOT_HTTP[0])
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # a second copy would arrive at once
    finally:
        root.removeHandler(handler)
    assert seen == ["potluck.serving.http: Invalid HTTP request received."]


# ---- IPv6 ----------------------------------------------------------------------------------------


def test_serving_listens_on_ipv6(service: ServingService) -> None:
    with start_serving(service, host="::1") as server:
        assert server.grpc_address == f"[::1]:{server.grpc_port}"
        assert server.http_url == f"http://[::1]:{server.http_port}"
        health = httpx.get(f"{server.http_url}/health", timeout=10)
        with grpc.insecure_channel(server.grpc_address) as channel:
            info = pb_grpc.ServingServiceStub(channel).GetFeastServingInfo(
                pb.GetFeastServingInfoRequest(), timeout=10
            )
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert info.version == health.json()["version"]


# ---- StopSignals: how a server's main thread stops -----------------------------------------------


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(1)  # the handler runs at the next instruction; this is never reached in full


def test_a_signal_while_starting_unwinds_start_up() -> None:
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    for signum, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
        with pytest.raises(raised), StopSignals() as signals:
            _signal_self(signum)
        assert signals.received == signum
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_serving_calls_stop_once_and_is_remembered(signum: int) -> None:
    stops: list[str] = []
    stopped = threading.Event()

    def stop() -> None:
        stops.append(threading.current_thread().name)
        stopped.set()

    with StopSignals() as signals:
        signals.serving(stop)
        os.kill(os.getpid(), signum)
        assert stopped.wait(10)
        other = signal.SIGTERM if signum == signal.SIGINT else signal.SIGINT
        os.kill(os.getpid(), other)  # a second signal, while stopping, changes nothing
        time.sleep(0.1)
    assert (signals.received, stops) == (signum, ["potluck-stop"])
