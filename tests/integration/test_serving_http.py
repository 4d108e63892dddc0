"""The HTTP adapter: in-process through httpx.ASGITransport, and once over real uvicorn."""

from __future__ import annotations

import asyncio
import re
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
from potluck.registry.sql import SqlRegistry
from potluck.serving.http import create_app
from potluck.serving.metrics import ServingMetrics
from potluck.serving.server import start_serving
from potluck.serving.service import ServingService

NOW = utc_now()
TEN_MINUTES_AGO = NOW - timedelta(minutes=10)


@pytest.fixture()
def service(registry: SqlRegistry, tmp_path: Path) -> Iterator[ServingService]:
    project = new_project()
    registry.apply(project, [DRIVER, CUSTOMER, DRIVER_STATS, PAIR_STATS])
    store = open_store(store_config("sqlite", tmp_path, None))
    write_rows(
        store,
        project,
        DRIVER_STATS,
        [
            {"driver_id": 1, "conv_rate": 0.5, "trips": 7, "event_timestamp": TEN_MINUTES_AGO},
            {"driver_id": 2, "trips": 3, "note": "b", "event_timestamp": TEN_MINUTES_AGO},
        ],
    )
    yield ServingService(registry, store, project)
    store.close()


def _call(
    app: Any, method: str, url: str, body: Any = None, content: bytes | None = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            headers = {"content-type": "application/json"} if content is not None else None
            return await client.request(method, url, json=body, content=content, headers=headers)

    return asyncio.run(go())


def _stamp(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


FEAST_REQUEST = {
    "features": ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:note"],
    "entities": {"driver_id": [1, 2, 3]},
}


def test_feast_json_shape(service: ServingService) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _call(app, "POST", "/get-online-features", FEAST_REQUEST)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    epoch, ts = "1970-01-01T00:00:00Z", _stamp(TEN_MINUTES_AGO)
    assert resp.json() == {
        "metadata": {"feature_names": ["driver_id", "conv_rate", "trips", "note"]},
        "results": [
            {
                "values": [1, 2, 3],
                "statuses": ["PRESENT", "PRESENT", "PRESENT"],
                "event_timestamps": [epoch, epoch, epoch],
            },
            {
                "values": [0.5, None, None],
                "statuses": ["PRESENT", "NULL_VALUE", "NOT_FOUND"],
                "event_timestamps": [ts, ts, epoch],
            },
            {
                "values": [7, 3, None],
                "statuses": ["PRESENT", "PRESENT", "NOT_FOUND"],
                "event_timestamps": [ts, ts, epoch],
            },
            {
                "values": [None, "b", None],
                "statuses": ["NULL_VALUE", "PRESENT", "NOT_FOUND"],
                "event_timestamps": [ts, ts, epoch],
            },
        ],
    }
    full = _call(app, "POST", "/get-online-features", {**FEAST_REQUEST, "full_feature_names": True})
    assert full.json()["metadata"]["feature_names"][1] == "driver_stats__conv_rate"


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (
            {"features": ["driver_stats:speed"], "entities": {"driver_id": [1]}},
            422,
            "invalid_feature_ref",
            "unknown feature 'driver_stats:speed': feature table 'driver_stats' has no feature "
            "'speed'; it has conv_rate, acc_rate, trips, note",
        ),
        (
            {"features": ["driver_stats:trips"], "entities": {"driver_id": ["one"]}},
            422,
            "invalid_argument",
            "entity 'driver_id' has type INT64, but row 0 holds str 'one'",
        ),
        (
            {"features": "driver_stats:trips", "entities": {"driver_id": [1]}},
            422,
            "invalid_argument",
            "'features' must be a list of feature references such as 'driver_stats:conv_rate'",
        ),
        (
            {"features": ["driver_stats:trips"], "entities": {"driver_id": list(range(10_001))}},
            422,
            "invalid_argument",
            "the request has 10001 entity rows; the limit is max_entities_per_request=10000",
        ),
    ],
)
def test_errors_have_one_envelope(
    service: ServingService, body: Any, status: int, code: str, message: str
) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _call(app, "POST", "/get-online-features", body)
    assert resp.status_code == status
    assert resp.json() == {"error": {"code": code, "message": message}}


def test_bad_json_and_unknown_routes_use_the_envelope(service: ServingService) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _call(app, "POST", "/get-online-features", content=b"{not json")
    assert resp.status_code == 400
    assert resp.json() == {
        "error": {
            "code": "malformed_body",
            "message": "the request body is not valid JSON: Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1)",
        }
    }
    resp = _call(app, "GET", "/nowhere")
    assert resp.status_code == 404
    assert resp.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    resp = _call(app, "GET", "/get-online-features")
    assert resp.status_code == 405
    assert resp.json() == {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}}


def test_health(service: ServingService) -> None:
    app = create_app(service, ServingMetrics(service), version="9.9")
    resp = _call(app, "GET", "/health")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok", "version": "9.9"})


def _sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


def test_real_uvicorn_and_metrics(service: ServingService) -> None:
    with start_serving(service) as server, httpx.Client(base_url=server.http_url) as http:
        resp = http.post("/get-online-features", json=FEAST_REQUEST)
        assert resp.status_code == 200
        assert resp.json()["results"][2]["values"] == [7, 3, None]
        # Responses leave at once on a kept-alive connection (TCP_NODELAY, no ~40 ms waits for
        # a delayed ACK between the header and body segments).
        times = []
        for _ in range(9):
            start = time.perf_counter()
            http.get("/health")
            times.append(time.perf_counter() - start)
        assert sorted(times)[4] < 0.02
        http.post("/get-online-features", json={"features": ["x:y"], "entities": {}})
        with grpc.insecure_channel(server.grpc_address) as channel:
            pb_grpc.ServingServiceStub(channel).GetOnlineFeatures(
                pb.GetOnlineFeaturesRequest(
                    features=pb.FeatureList(val=["driver_stats:trips"]),
                    entities={
                        "driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=1)])
                    },
                )
            )
        metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    http_count = _sample(
        text,
        "potluck_serving_request_duration_seconds_count",
        'endpoint="http:/get-online-features"',
    )
    grpc_count = _sample(
        text, "potluck_serving_request_duration_seconds_count", 'endpoint="grpc:GetOnlineFeatures"'
    )
    assert (http_count, grpc_count) == (2.0, 1.0)
    assert (
        _sample(
            text,
            "potluck_serving_errors_total",
            'code="invalid_argument",endpoint="http:/get-online-features"',
        )
        == 1.0
    )
    freshness = _sample(
        text,
        "potluck_feature_freshness_seconds",
        f'project="{service.project}",table="driver_stats"',
    )
    ago = (utc_now() - TEN_MINUTES_AGO).total_seconds()  # fixed when the module loaded
    assert ago - 5 <= freshness <= ago + 5
