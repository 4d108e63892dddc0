"""Online Serving under hostile input: every client mistake gets a 4xx / INVALID_ARGUMENT with
its exact message and one log line (never a 5xx or a traceback), bodies over the limit are
refused before they are read, and names that do not exist never grow a cache or the cost of a
refresh. The fuzzers are in test_serving_fuzz.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from _serving_support import (  # noqa: F401 - fixtures used by name
    CUSTOMER,
    DRIVER,
    DRIVER_STATS,
    PAIR_STATS,
    new_project,
    open_store,
    registry_fixture,
    store_config,
    utc_now,
    write_rows,
)

from potluck._proto.feast.serving import ServingService_pb2 as pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as pb_grpc
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.definitions import Feature, FeatureTable
from potluck.definitions.serde import KIND_ENTITY
from potluck.errors import FeatureRefError, NotFoundError
from potluck.registry.base import JobRecord
from potluck.registry.remote import RemoteRegistry
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.http import create_app
from potluck.serving.metrics import ServingMetrics
from potluck.serving.server import ServingServer, start_serving
from potluck.serving.service import (
    MAX_CACHED_PLANS,
    MISS_RELOAD_BURST,
    MISS_RELOADS_PER_SECOND,
    ServingService,
)
from potluck.types import ValueType

TEN_MINUTES_AGO = utc_now() - timedelta(minutes=10)
READ = "/get-online-features"
GOOD = {"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}}
TOO_DEEP = (
    "the request body nests arrays and objects too deeply to parse (about 1,000 levels or "
    'more); a request needs 3: {"features": [...], "entities": {"driver_id": [...]}}'
)
SERVER = Path(__file__).with_name("_hostile_server.py")
MIB = 1 << 20


@pytest.fixture()
def service(registry: SqlRegistry, tmp_path: Path) -> Iterator[ServingService]:
    project = new_project()
    registry.apply(project, [DRIVER, CUSTOMER, DRIVER_STATS, PAIR_STATS])
    store = open_store(store_config("sqlite", tmp_path, None))
    write_rows(
        store,
        project,
        DRIVER_STATS,
        [{"driver_id": 1, "conv_rate": 0.5, "trips": 7, "event_timestamp": TEN_MINUTES_AGO}],
    )
    yield ServingService(registry, store, project)
    store.close()


def _post(app: Any, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await client.post(READ, content=content, headers=headers)

    return asyncio.run(go())


def _rejections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("potluck.")]


def _assert_one_line_logged(caplog: pytest.LogCaptureFixture, status: str, code: str) -> None:
    records = _rejections(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    line = record.getMessage()
    assert "\n" not in line
    assert f": {status} {code}: " in line


def _cut(message: str) -> str:
    """The message as a server sends it: at most 1,000 UTF-8 bytes."""
    data = message.encode()
    kept = data[:968].decode("utf-8", "ignore")  # never half a character
    return f"{kept}... ({len(data) - len(kept.encode())} more bytes cut)"


# ---- HTTP: one corpus, one class of mistake per entry ------------------------------------------

LONG_REF = "a" * 5_000 + ":b"
HTTP_CORPUS: list[tuple[str, bytes, dict[str, str], int, str, str]] = [
    (
        "nested 1,000 arrays",
        b"[" * 1_000 + b"]" * 1_000,
        {},
        400,
        "malformed_body",
        TOO_DEEP,
    ),
    (
        "nested 100,000 objects, unterminated",
        b'{"a":' * 100_000,
        {},
        400,
        "malformed_body",
        TOO_DEEP,
    ),
    (
        "lone surrogate in an entity name",
        b'{"features": ["driver_stats:trips"], "entities": {"\\ud800": [1]}}',
        {},
        400,
        "malformed_body",
        "the request body holds a lone surrogate (a \\ud800-\\udfff escape that is not half "
        "of a pair) in a key of $.entities; JSON strings must be valid Unicode",
    ),
    (
        "lone low surrogate in a top-level key",
        b'{"\\uDC00x": 1}',
        {},
        400,
        "malformed_body",
        "the request body holds a lone surrogate (a \\ud800-\\udfff escape that is not half "
        "of a pair) in a key of $; JSON strings must be valid Unicode",
    ),
    (
        "lone surrogate in a string entity value",
        b'{"features": ["pair_stats:rides"], '
        b'"entities": {"driver_id": [1], "customer_id": ["ok", "\\ud83dx"]}}',
        {},
        400,
        "malformed_body",
        "the request body holds a lone surrogate (a \\ud800-\\udfff escape that is not half "
        "of a pair) in $.entities.customer_id[1]; JSON strings must be valid Unicode",
    ),
    (
        "lone surrogate in a feature reference",
        b'{"features": ["driver_stats:\\udfff"], "entities": {"driver_id": [1]}}',
        {},
        400,
        "malformed_body",
        "the request body holds a lone surrogate (a \\ud800-\\udfff escape that is not half "
        "of a pair) in $.features[0]; JSON strings must be valid Unicode",
    ),
    (
        "bytes that are not UTF-8",
        b'{"features": ["\xff"]}',
        {},
        400,
        "malformed_body",
        "the request body is not UTF-8: byte 15 is 0xff; send JSON encoded as UTF-8",
    ),
    (
        "a surrogate encoded as UTF-8 bytes",
        b'{"entities": {"\xed\xa0\x80": [1]}}',
        {},
        400,
        "malformed_body",
        "the request body is not UTF-8: byte 15 is 0xed; send JSON encoded as UTF-8",
    ),
    (
        "not JSON",
        b"{not json",
        {},
        400,
        "malformed_body",
        "the request body is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
    ),
    (
        "an empty body",
        b"",
        {},
        400,
        "malformed_body",
        "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)",
    ),
    (
        "a number of 5,000 digits",
        b'{"features": ["driver_stats:trips"], "entities": {"driver_id": [' + b"9" * 5_000 + b"]}}",
        {},
        400,
        "malformed_body",
        "the request body is not valid JSON: Exceeds the limit (4300 digits) for integer "
        "string conversion: value has 5000 digits; use sys.set_int_max_str_digits() to "
        "increase the limit",
    ),
    (
        "a JSON array instead of an object",
        b"[]",
        {},
        422,
        "invalid_argument",
        "the request body must be a JSON object with 'features' and 'entities'",
    ),
    (
        "a field name of 10,000 characters",
        json.dumps({**GOOD, "x" * 10_000: 1}).encode(),
        {},
        422,
        "invalid_argument",
        f"unknown field '{'x' * 37}...{'x' * 38}' in the request body; expected 'features', "
        "'entities' and 'full_feature_names'",
    ),
    (
        "an integer beyond INT64",
        json.dumps({**GOOD, "entities": {"driver_id": [2**64]}}).encode(),
        {},
        422,
        "invalid_argument",
        "entity 'driver_id': value 18446744073709551616 in row 0 does not fit INT64",
    ),
    (
        "an entity value nested 500 deep",
        b'{"features": ["driver_stats:trips"], "entities": {"driver_id": ['
        + b"[" * 500
        + b"]" * 500
        + b"]}}",
        {},
        422,
        "invalid_argument",
        "entity 'driver_id' has type INT64, but row 0 holds list [[[[[[[...]]]]]]]",
    ),
    (
        "NaN for an INT64 entity",
        b'{"features": ["driver_stats:trips"], "entities": {"driver_id": [NaN]}}',
        {},
        422,
        "invalid_argument",
        "entity 'driver_id' has type INT64, but row 0 holds float nan",
    ),
    (
        "a feature reference of 5,000 characters",
        json.dumps({**GOOD, "features": [LONG_REF]}).encode(),
        {},
        422,
        "invalid_feature_ref",
        _cut(f"unknown feature '{LONG_REF}': there is no feature table '{LONG_REF[:-2]}'"),
    ),
    (
        "no features",
        json.dumps({**GOOD, "features": []}).encode(),
        {},
        422,
        "invalid_feature_ref",
        "feature references must be a non-empty list of 'table:feature'",
    ),
    (
        "no entities",
        json.dumps({**GOOD, "entities": {}}).encode(),
        {},
        422,
        "invalid_argument",
        "the request has no entity columns; pass e.g. {'driver_id': [1001]}",
    ),
    (
        "text/plain",
        json.dumps(GOOD).encode(),
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
        "unsupported Content-Type 'text/plain'; send the request body as JSON with "
        "'Content-Type: application/json'",
    ),
    (
        "curl's default form type",
        json.dumps(GOOD).encode(),
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        "unsupported Content-Type 'application/x-www-form-urlencoded'; send the request body "
        "as JSON with 'Content-Type: application/json'",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "code", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in HTTP_CORPUS],
)
def test_every_malformed_request_gets_its_4xx_and_one_log_line(
    service: ServingService,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    message: str,
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    caplog.set_level(logging.WARNING)
    resp = _post(app, body, {"content-type": "application/json", **headers})
    assert (resp.status_code, resp.json()) == (
        status,
        {"error": {"code": code, "message": message}},
    )
    _assert_one_line_logged(caplog, str(status), code)


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "Application/JSON"},
    ],
    ids=["json", "with charset", "other case"],
)
def test_json_content_types_and_surrogate_pairs_are_accepted(
    service: ServingService, headers: dict[str, str]
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    body = (
        b'{"features": ["pair_stats:rides"], '
        b'"entities": {"driver_id": [1], "customer_id": ["\\ud83d\\ude00"]}}'
    )
    resp = _post(app, body, headers)
    assert resp.status_code == 200
    assert resp.json()["results"][1]["values"] == ["\N{GRINNING FACE}"]
    assert resp.json()["results"][2]["statuses"] == ["NOT_FOUND"]


def test_a_small_limit_refuses_by_content_length_and_while_reading(
    service: ServingService, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9", max_request_bytes=100)
    caplog.set_level(logging.WARNING)
    body = json.dumps({**GOOD, "entities": {"driver_id": list(range(40))}}).encode()
    resp = _post(app, body, {"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.headers["connection"] == "close"
    assert resp.json() == {
        "error": {
            "code": "body_too_large",
            "message": f"the request body is {len(body)} bytes, more than the limit of 100 bytes; "
            "send fewer entity rows per request, or raise the limit with potluck serve "
            "--max-request-bytes",
        }
    }
    _assert_one_line_logged(caplog, "413", "body_too_large")

    async def chunked() -> httpx.Response:
        async def chunks() -> Any:
            for _ in range(11):
                yield b" " * 10

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            headers = {"content-type": "application/json"}
            return await client.post(READ, content=chunks(), headers=headers)

    resp = asyncio.run(chunked())
    assert resp.status_code == 413
    assert resp.json()["error"]["message"] == (
        "the request body is larger than the limit of 100 bytes; send fewer entity rows per "
        "request, or raise the limit with potluck serve --max-request-bytes"
    )
    good = _post(app, json.dumps(GOOD).encode(), {"content-type": "application/json"})
    assert good.status_code == 200


def test_other_routes_answer_the_envelope_with_one_escaped_log_line(
    service: ServingService, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    caplog.set_level(logging.WARNING)

    async def go(method: str, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await client.request(method, path)

    resp = asyncio.run(go("GET", "/x%0Afake log line"))
    assert (resp.status_code, resp.json()) == (
        404,
        {"error": {"code": "not_found", "message": "Not Found"}},
    )
    _assert_one_line_logged(caplog, "404", "not_found")
    assert "GET /x\\x0afake log line from 127.0.0.1:123" in caplog.records[0].getMessage()
    caplog.clear()
    resp = asyncio.run(go("POST", "/health"))
    assert (resp.status_code, resp.headers["allow"]) == (405, "GET")
    assert resp.json() == {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}}
    _assert_one_line_logged(caplog, "405", "method_not_allowed")


# ---- HTTP: on a real server, the body over the limit is never read -----------------------------


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response until the server closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def _stream(sock: socket.socket, total: int, *, chunked: bool) -> int:
    """Send up to ``total`` body bytes in 1 MiB pieces until the server stops taking them."""
    piece = b"0" * MIB
    frame = b"%x\r\n%s\r\n" % (MIB, piece) if chunked else piece
    sent = 0
    try:
        while sent < total:
            sock.sendall(frame)
            sent += MIB
    except OSError:  # the server answered 413 and closed the connection
        pass
    return sent


def _attack(port: int, total: int, *, chunked: bool) -> tuple[int, dict[str, str], bytes, int]:
    """POST a ``total``-byte body (declared, or chunked) while reading the answer."""
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % total
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /get-online-features HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\n" + framing + b"\r\n\r\n"
        )
        sent: list[int] = []
        sender = threading.Thread(target=lambda: sent.append(_stream(sock, total, chunked=chunked)))
        sender.start()
        status, headers, body = _response(sock)
        sender.join()
    return status, headers, body, sent[0]


def test_a_declared_body_over_the_limit_is_answered_before_it_is_sent(
    service: ServingService,
) -> None:
    with (
        start_serving(service, max_request_bytes=1_000) as server,
        socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock,
    ):
        sock.sendall(
            b"POST /get-online-features HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: 419430400\r\n\r\n"
        )
        status, headers, body = _response(sock)  # no body byte was sent
    assert (status, headers["connection"]) == (413, "close")
    assert json.loads(body)["error"]["message"] == (
        "the request body is 419430400 bytes, more than the limit of 1000 bytes; send fewer "
        "entity rows per request, or raise the limit with potluck serve --max-request-bytes"
    )


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _reset_peak_rss(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS (Linux ``clear_refs``); return it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _peak_rss_kib(pid)


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, int]]:
    """A serving process of its own (default 1 MiB limit): (pid, gRPC port, HTTP port)."""
    directory = tmp_path_factory.mktemp("hostile-server")
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), str(directory), str(MIB)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    ports = json.loads(proc.stdout.readline())
    yield proc.pid, ports["grpc"], ports["http"]
    proc.stdin.close()
    proc.wait(timeout=30)
    proc.stdout.close()


def test_a_400_mib_body_does_not_grow_the_server(server_process: tuple[int, int, int]) -> None:
    pid, _, port = server_process
    for chunked in (False, True):  # warm up both paths first
        assert _attack(port, 2 * MIB, chunked=chunked)[0] == 413
    before = _reset_peak_rss(pid)  # else the peak of start-up could hide a later one
    for chunked in (False, True):
        status, headers, body, sent = _attack(port, 400 * MIB, chunked=chunked)
        assert (status, headers["connection"]) == (413, "close")
        assert json.loads(body)["error"]["code"] == "body_too_large"
        assert sent < 400 * MIB  # the server closed the connection instead of reading on
    grown = (_peak_rss_kib(pid) - before) / 1024
    print(f"peak RSS grew by {grown:.2f} MiB")
    assert grown < 4, f"peak RSS grew by {grown:.1f} MiB"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        assert http.post(READ, json=GOOD).status_code == 200


# ---- gRPC: undecodable bytes, limits, values out of range, long messages -----------------------


def _raw_call(address: str, method: str, data: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as err:
            call(data, timeout=10)
    return err.value


GARBAGE = [
    (b"\xff\xff\xff", "Wire format was corrupt"),
    (b"\x12\x05\x0a\x03ab", "Wire format was corrupt"),
    (b"\x12\x03\x0a\x01\xff", "String field had bad UTF-8"),
]


@pytest.fixture()
def served(service: ServingService) -> Iterator[ServingServer]:
    with start_serving(service) as server:
        yield server


@pytest.mark.parametrize(("data", "reason"), GARBAGE, ids=["corrupt", "truncated", "bad utf-8"])
def test_serving_answers_invalid_protobuf_with_invalid_argument(
    served: ServingServer, caplog: pytest.LogCaptureFixture, data: bytes, reason: str
) -> None:
    caplog.set_level(logging.WARNING)
    error = _raw_call(served.grpc_address, "/feast.serving.ServingService/GetOnlineFeatures", data)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"the GetOnlineFeatures request ({len(data)} bytes) is not a valid protobuf message: "
        f"Error parsing message with type 'feast.serving.GetOnlineFeaturesRequest': {reason}"
    )
    assert dict(error.trailing_metadata())["potluck-error-code"] == "invalid_argument"
    _assert_one_line_logged(caplog, "INVALID_ARGUMENT", "invalid_argument")


@pytest.fixture()
def core(registry: SqlRegistry) -> Iterator[CoreServer]:
    server = start_core_server(registry)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("method", "message_type"),
    [
        ("/potluck.core.v1.CoreService/Apply", "potluck.core.v1.ApplyRequest"),
        ("/potluck.core.v1.CoreService/GetEntity", "potluck.core.v1.GetRequest"),
        ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_core_answers_invalid_protobuf_with_invalid_argument(
    core: CoreServer, method: str, message_type: str
) -> None:
    error = _raw_call(core.address, method, b"\xff\xff\xff")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    name = method.rsplit("/", 1)[1]
    assert error.details() == (
        f"the {name} request (3 bytes) is not a valid protobuf message: Error parsing message "
        f"with type '{message_type}': Wire format was corrupt"
    )


def test_core_cuts_long_messages_so_clients_can_read_them(core: CoreServer) -> None:
    remote = RemoteRegistry(core.address)
    with pytest.raises(NotFoundError) as err:
        remote.get("default", KIND_ENTITY, "e" * 20_000)
    assert err.value.message == _cut(f"entity {'e' * 20_000} not found in project default")


def _request(**entities: list[value_pb.Value]) -> pb.GetOnlineFeaturesRequest:
    return pb.GetOnlineFeaturesRequest(
        features=pb.FeatureList(val=["driver_stats:trips"]),
        entities={k: value_pb.RepeatedValue(val=v) for k, v in entities.items()},
    )


def test_grpc_client_mistakes_are_invalid_argument_with_exact_messages(
    served: ServingServer,
) -> None:
    cases = [
        (
            _request(driver_id=[value_pb.Value(unix_timestamp_val=2**62)]),
            "entity 'driver_id': row 0 holds the timestamp 4611686018427387904 (seconds since "
            "the epoch), outside the years 1 to 9999",
        ),
        (
            _request(
                driver_id=[
                    value_pb.Value(int64_val=1),
                    value_pb.Value(unix_timestamp_list_val=value_pb.Int64List(val=[0, -(2**40)])),
                ]
            ),
            "entity 'driver_id': row 1 holds the timestamp -1099511627776 (seconds since the "
            "epoch), outside the years 1 to 9999",
        ),
        (
            pb.GetOnlineFeaturesRequest(
                entities={"driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=1)])}
            ),
            "feature references must be a non-empty list of 'table:feature'",
        ),
        (
            _request(driver_id=[value_pb.Value(string_val="x" * 3_000)]),
            f"entity 'driver_id' has type INT64, but row 0 holds str '{'x' * 37}...{'x' * 38}'",
        ),
    ]
    with grpc.insecure_channel(served.grpc_address) as channel:
        stub = pb_grpc.ServingServiceStub(channel)
        for request, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                stub.GetOnlineFeatures(request, timeout=10)
            assert (err.value.code(), err.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
            )
        long_ref = "é" * 5_000
        request = _request(driver_id=[value_pb.Value(int64_val=1)])
        request.features.val[:] = [long_ref]
        with pytest.raises(grpc.RpcError) as err:
            stub.GetOnlineFeatures(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # not RESOURCE_EXHAUSTED
        assert err.value.details() == _cut(
            f"invalid feature reference '{long_ref}'; expected 'table:feature', "
            "'project/table:feature' or 'table:*'"
        )


def test_grpc_message_over_the_limit_is_resource_exhausted(service: ServingService) -> None:
    big = _request(driver_id=[value_pb.Value(int64_val=i) for i in range(200)])
    with (
        start_serving(service, max_request_bytes=256) as server,
        grpc.insecure_channel(server.grpc_address) as channel,
    ):
        stub = pb_grpc.ServingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetOnlineFeatures(big, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == (
            f"SERVER: Received message larger than max ({big.ByteSize()} vs. 256)"
        )
        small = _request(driver_id=[value_pb.Value(int64_val=1)])
        assert len(stub.GetOnlineFeatures(small, timeout=10).results) == 2


# ---- caches: unknown names are neither cached nor re-read --------------------------------------


class CountingRegistry(SqlRegistry):
    """A real SQLite registry that counts the reads serving makes of it."""

    reads = 0

    def list(self, project: str, kind: str, labels: Any = None) -> Any:
        self.reads += 1
        return super().list(project, kind, labels)

    def list_jobs(self, project: str) -> list[JobRecord]:
        self.reads += 1
        return super().list_jobs(project)


@pytest.fixture()
def counting(tmp_path: Path) -> Iterator[tuple[CountingRegistry, ServingService]]:
    registry = CountingRegistry(f"sqlite:///{tmp_path / 'counted.db'}")
    project = new_project()
    registry.apply(project, [DRIVER, CUSTOMER, DRIVER_STATS, PAIR_STATS])
    store = open_store(store_config("sqlite", tmp_path, None))
    yield registry, ServingService(registry, store, project)
    store.close()
    registry.close()


def _reads_during(registry: CountingRegistry, work: Any) -> int:
    before = registry.reads
    work()
    return registry.reads - before


def _bound(seconds: float) -> int:
    """The most registry reads that rationed miss reloads may cost over ``seconds``: each
    reload reads tables, entities and jobs."""
    return 3 * (MISS_RELOAD_BURST + math.ceil(seconds * MISS_RELOADS_PER_SECOND) + 1)


def test_unknown_projects_are_not_cached_nor_reread_at_each_refresh(
    counting: tuple[CountingRegistry, ServingService],
) -> None:
    registry, service = counting
    refs = ["driver_stats:trips"]
    service.get_online_features(refs, {"driver_id": [1]})
    plan = service.plan(refs, ("driver_id",))
    refresh_cost = _reads_during(registry, service.refresh)
    assert refresh_cost == 3  # the one project: tables, entities, jobs

    def flood() -> None:
        for i in range(20_000):
            with pytest.raises(FeatureRefError) as err:
                service.get_online_features([f"nope{i}/t:f"], {"driver_id": [1]})
            if i % 5_000 == 0:
                assert err.value.message == (
                    f"unknown feature 'nope{i}/t:f': there is no feature table 't' in project "
                    f"'nope{i}'"
                )

    start = time.monotonic()
    flood_reads = _reads_during(registry, flood)
    assert flood_reads <= _bound(time.monotonic() - start)
    assert service.cache_sizes() == {"plans": 1, "projects": 1}
    assert _reads_during(registry, service.refresh) == refresh_cost
    assert service.plan(refs, ("driver_id",)) is plan  # known requests still hit their plan


def test_unknown_tables_ration_reloads_and_a_new_table_is_still_found(
    counting: tuple[CountingRegistry, ServingService],
) -> None:
    registry, service = counting
    service.get_online_features(["driver_stats:trips"], {"driver_id": [1]})

    def flood() -> None:
        for i in range(2_000):
            with pytest.raises(FeatureRefError):
                service.get_online_features([f"nope_{i}:f"], {"driver_id": [1]})
            with pytest.raises(FeatureRefError):
                service.get_online_features([f"driver_stats:nope_{i}"], {"driver_id": [1]})

    start = time.monotonic()
    assert _reads_during(registry, flood) <= _bound(time.monotonic() - start)
    late = FeatureTable(
        name="late_stats",
        entities=("driver_id",),
        features=(Feature(name="x", value_type=ValueType.BOOL),),
    )
    registry.apply(service.project, [late])
    time.sleep(1.1 / MISS_RELOADS_PER_SECOND)  # the budget refills
    resp = service.get_online_features(["late_stats:x"], {"driver_id": [4]})
    assert resp.statuses() == {"driver_id": ["PRESENT"], "late_stats__x": ["NOT_FOUND"]}


def test_the_plan_cache_keeps_the_newest_plans(service: ServingService) -> None:
    project = service.project
    features = ["conv_rate", "acc_rate", "trips", "note"]
    keys = []
    for k in range(1, 5):
        for names in itertools.permutations(features, k):
            for prefixes in itertools.product(["", f"{project}/"], repeat=k):
                refs = [f"{p}driver_stats:{n}" for p, n in zip(prefixes, names, strict=True)]
                keys.extend((refs, full) for full in (True, False))
    assert len(keys) > MAX_CACHED_PLANS
    for refs, full in keys:
        service.plan(refs, ("driver_id",), full_feature_names=full)
    assert service.cache_sizes() == {"plans": MAX_CACHED_PLANS, "projects": 1}
    newest = service.plan(keys[-1][0], ("driver_id",), full_feature_names=keys[-1][1])
    assert service.plan(keys[-1][0], ("driver_id",), full_feature_names=keys[-1][1]) is newest
    app = create_app(service, ServingMetrics(service), version="9.9")

    async def scrape() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(scrape())
    assert f'potluck_serving_cache_entries{{cache="plans"}} {float(MAX_CACHED_PLANS)}' in text
    assert 'potluck_serving_cache_entries{cache="projects"} 1.0' in text
