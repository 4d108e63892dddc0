"""Fuzzing Online Serving in a process of its own, with a bounded number of examples: no 5xx,
no INTERNAL or UNKNOWN, no hang (every call has a deadline), and bounded memory (the server's
peak RSS). HTTP requests come from schemathesis, generated from the OpenAPI document the server
serves (valid and invalid per the schema; each response must match the document); gRPC requests
from hypothesis (random field values in GetOnlineFeaturesRequest, random and mutated bytes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from potluck._proto.feast.serving import ServingService_pb2 as pb
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.serving._openapi import openapi_document
from potluck.serving.server import VERSION

SERVER = Path(__file__).with_name("_hostile_server.py")
TITLE = "potluck online serving"
SCHEMA = schemathesis.openapi.from_dict(openapi_document(title=TITLE, version=VERSION))
MIB = 1 << 20
MAX_GROWTH_MIB = 16
"""How much the server's peak RSS may grow while fuzzed (caches and buffers settling)."""

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Server:
    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(directory), str(MIB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ports = json.loads(self.proc.stdout.readline())
        self.http_url = f"http://127.0.0.1:{ports['http']}"
        self.grpc_address = f"127.0.0.1:{ports['grpc']}"

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    def reset_peak_rss(self) -> float:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.peak_rss_mib()

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("fuzzed"))
    yield running
    running.stop()


def test_the_server_serves_this_document(server: Server) -> None:
    served = httpx.get(f"{server.http_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == openapi_document(title=TITLE, version=VERSION)


# ---- HTTP ----------------------------------------------------------------------------------------

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _fuzz_http(server: Server, path: str, method: str, mode: GenerationMode) -> None:
    operation = SCHEMA[path][method]
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=server.http_url, timeout=10)
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("path", "method", "mode"),
    [
        ("/get-online-features", "POST", GenerationMode.POSITIVE),
        ("/get-online-features", "POST", GenerationMode.NEGATIVE),
        ("/health", "GET", GenerationMode.POSITIVE),
        ("/metrics", "GET", GenerationMode.POSITIVE),
    ],
    ids=["read-valid", "read-invalid", "health", "metrics"],
)
def test_http_fuzz_gets_no_5xx_and_matches_the_document(
    server: Server, path: str, method: str, mode: GenerationMode
) -> None:
    before = server.reset_peak_rss()
    _fuzz_http(server, path, method, mode)
    assert server.peak_rss_mib() - before < MAX_GROWTH_MIB


def test_the_documented_example_reads_values_of_the_documented_shape(server: Server) -> None:
    operation = SCHEMA["/get-online-features"]["POST"]
    request = operation.definition.raw["requestBody"]
    example = {
        name: field["examples"][0]
        for name, field in SCHEMA.raw_schema["components"]["schemas"]["GetOnlineFeaturesRequest"][
            "properties"
        ].items()
        if "examples" in field
    }
    assert request["content"]["application/json"]["schema"]["$ref"].endswith("Request")
    case = operation.Case(body=example, media_type="application/json")
    response = case.call(base_url=server.http_url, timeout=10)
    assert response.status_code == 200
    case.validate_response(response, checks=CHECKS)
    assert json.loads(response.content)["results"][2]["statuses"] == ["NOT_FOUND", "NOT_FOUND"]


# ---- gRPC ----------------------------------------------------------------------------------------

REFS = ["driver_stats:conv_rate", "driver_stats:trips", "pair_stats:rides", "driver_stats:*"]
NAMES = st.sampled_from(["driver_id", "customer_id"]) | st.text(max_size=12)
INT64 = st.integers(-(2**63), 2**63 - 1)


def _value(**field: Any) -> value_pb.Value:
    return value_pb.Value(**field)


SCALARS = st.one_of(
    st.builds(lambda v: _value(int64_val=v), INT64),
    st.builds(lambda v: _value(int32_val=v), st.integers(-(2**31), 2**31 - 1)),
    st.builds(lambda v: _value(double_val=v), st.floats()),
    st.builds(lambda v: _value(float_val=v), st.floats(width=32)),
    st.builds(lambda v: _value(string_val=v), st.text(max_size=20)),
    st.builds(lambda v: _value(bytes_val=v), st.binary(max_size=20)),
    st.builds(lambda v: _value(bool_val=v), st.booleans()),
    st.builds(lambda v: _value(unix_timestamp_val=v), INT64),
    st.just(_value(null_val=value_pb.NULL)),
    st.just(_value()),
    st.builds(
        lambda v: _value(int64_list_val=value_pb.Int64List(val=v)), st.lists(INT64, max_size=3)
    ),
    st.builds(
        lambda v: _value(unix_timestamp_list_val=value_pb.Int64List(val=v)),
        st.lists(INT64, max_size=3),
    ),
    st.builds(
        lambda v: _value(string_list_val=value_pb.StringList(val=v)),
        st.lists(st.text(max_size=5), max_size=3),
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> pb.GetOnlineFeaturesRequest:
    request = pb.GetOnlineFeaturesRequest(full_feature_names=draw(st.booleans()))
    kind = draw(st.sampled_from(["features", "feature_service", "none"]))
    if kind == "features":
        refs = st.sampled_from(REFS) | st.text(max_size=30)
        request.features.val.extend(draw(st.lists(refs, max_size=4)))
    elif kind == "feature_service":
        request.feature_service = draw(st.text(max_size=10))
    rows = draw(st.integers(0, 4))
    for name in draw(st.lists(NAMES, max_size=3, unique=True)):
        request.entities[name].val.extend(draw(st.lists(SCALARS, min_size=rows, max_size=rows)))
    if draw(st.booleans()):
        request.request_context["x"].val.extend(draw(st.lists(SCALARS, max_size=2)))
    return request


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request's bytes with a few bytes overwritten, inserted or cut."""
    data = bytearray(draw(requests()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "insert", "cut"]))
        if action == "insert" or not data:
            data[where:where] = draw(st.binary(min_size=1, max_size=3))
        elif action == "set":
            data[min(where, len(data) - 1)] = draw(st.integers(0, 255))
        else:
            del data[where : where + draw(st.integers(1, 8))]
    return bytes(data)


ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


def _status(call: Any, request: Any) -> grpc.StatusCode:
    try:
        response = call(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    if isinstance(response, bytes):
        response = pb.GetOnlineFeaturesResponse.FromString(response)
    assert len(response.results) == len(response.metadata.feature_names.val)
    return grpc.StatusCode.OK


@pytest.mark.timeout(120)
def test_grpc_fuzz_gets_no_internal_or_unknown(server: Server) -> None:
    before = server.reset_peak_rss()
    method = "/feast.serving.ServingService/GetOnlineFeatures"
    with grpc.insecure_channel(server.grpc_address) as channel:
        typed = channel.unary_unary(
            method,
            request_serializer=pb.GetOnlineFeaturesRequest.SerializeToString,
            response_deserializer=pb.GetOnlineFeaturesResponse.FromString,
        )
        raw = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )

        @FUZZ
        @given(request=requests())
        def fields(request: pb.GetOnlineFeaturesRequest) -> None:
            assert _status(typed, request) in ALLOWED, request

        @FUZZ
        @given(data=st.binary(max_size=200) | mutated())
        def garbage(data: bytes) -> None:
            assert _status(raw, data) in ALLOWED, data

        fields()
        garbage()
    assert server.peak_rss_mib() - before < MAX_GROWTH_MIB
