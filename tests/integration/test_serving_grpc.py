"""The gRPC adapter on a real server (port 0) over a real SQLite store, and RemoteServing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from _serving_support import (  # noqa: F401 - fixtures used by name
    CUSTOMER,
    DRIVER,
    DRIVER_STATS,
    PAIR_STATS,
    micros,
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
from potluck.errors import FeatureRefError, ValidationError
from potluck.registry.sql import SqlRegistry
from potluck.serving.remote import RemoteServing
from potluck.serving.server import ServingServer, start_serving
from potluck.serving.service import ServingService
from potluck.types import ValueType

NOW = utc_now()
EARLIER = NOW - timedelta(minutes=10)


@pytest.fixture()
def served(registry: SqlRegistry, tmp_path: Path) -> Iterator[tuple[ServingServer, str]]:
    project = new_project()
    registry.apply(project, [DRIVER, CUSTOMER, DRIVER_STATS, PAIR_STATS])
    store = open_store(store_config("sqlite", tmp_path, None))
    write_rows(
        store,
        project,
        DRIVER_STATS,
        [
            {"driver_id": 1, "conv_rate": 0.5, "trips": 7, "note": "x", "event_timestamp": NOW},
            {"driver_id": 2, "trips": 3, "event_timestamp": EARLIER},
        ],
    )
    with start_serving(ServingService(registry, store, project)) as server:
        yield server, project
    store.close()


@pytest.fixture()
def stub(served: tuple[ServingServer, str]) -> Iterator[pb_grpc.ServingServiceStub]:
    with grpc.insecure_channel(served[0].grpc_address) as channel:
        yield pb_grpc.ServingServiceStub(channel)


def _request(
    features: list[str], ids: list[object], full: bool = True
) -> pb.GetOnlineFeaturesRequest:
    values = [
        value_pb.Value(string_val=i) if isinstance(i, str) else value_pb.Value(int64_val=i)
        for i in ids
    ]
    return pb.GetOnlineFeaturesRequest(
        features=pb.FeatureList(val=features),
        entities={"driver_id": value_pb.RepeatedValue(val=values)},
        full_feature_names=full,
    )


def test_serving_info(stub: pb_grpc.ServingServiceStub) -> None:
    info = stub.GetFeastServingInfo(pb.GetFeastServingInfoRequest())
    assert info.version == version("potluck")


def test_columnar_response(stub: pb_grpc.ServingServiceStub) -> None:
    resp = stub.GetOnlineFeatures(
        _request(["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:note"], [1, 2, 9])
    )
    assert list(resp.metadata.feature_names.val) == [
        "driver_id",
        "driver_stats__conv_rate",
        "driver_stats__trips",
        "driver_stats__note",
    ]
    ids, conv, trips, note = resp.results
    assert [v.int64_val for v in ids.values] == [1, 2, 9]
    assert list(ids.statuses) == [pb.PRESENT] * 3
    assert [t.seconds for t in ids.event_timestamps] == [0, 0, 0]
    assert [v.WhichOneof("val") for v in conv.values] == ["float_val", None, None]
    assert conv.values[0].float_val == 0.5
    assert list(conv.statuses) == [pb.PRESENT, pb.NULL_VALUE, pb.NOT_FOUND]
    assert [v.int64_val for v in trips.values] == [7, 3, 0]
    assert list(trips.statuses) == [pb.PRESENT, pb.PRESENT, pb.NOT_FOUND]
    assert [t.seconds for t in trips.event_timestamps] == [
        micros(NOW) // 1_000_000,
        micros(EARLIER) // 1_000_000,
        0,
    ]
    assert [v.string_val for v in note.values] == ["x", "", ""]
    assert list(note.statuses) == [pb.PRESENT, pb.NULL_VALUE, pb.NOT_FOUND]
    assert resp.status is True


def test_bare_feature_names(stub: pb_grpc.ServingServiceStub) -> None:
    resp = stub.GetOnlineFeatures(_request(["driver_stats:trips"], [1], full=False))
    assert list(resp.metadata.feature_names.val) == ["driver_id", "trips"]


def test_errors_map_to_invalid_argument(stub: pb_grpc.ServingServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOnlineFeatures(_request(["driver_stats:speed"], [1]))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "unknown feature 'driver_stats:speed': feature table 'driver_stats' has no feature "
        "'speed'; it has conv_rate, acc_rate, trips, note"
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOnlineFeatures(_request(["driver_stats:trips"], ["1"]))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "entity 'driver_id' has type INT64, but row 0 holds str '1'"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(feature_service="svc"))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "feature services are not supported" in (err.value.details() or "")


def test_remote_serving_matches_the_embedded_service(
    served: tuple[ServingServer, str],
) -> None:
    server, project = served
    refs = ["driver_stats:conv_rate", "driver_stats:note"]
    remote = RemoteServing(server.grpc_address, project=project)
    try:
        got = remote.get_online_features(refs, {"driver_id": [1, 2, 9]})
        want = server.service.get_online_features(refs, {"driver_id": [1, 2, 9]})
        assert got.to_dict() == want.to_dict()
        assert got.statuses() == want.statuses()
        assert got.event_timestamps() == want.event_timestamps()
        numpy_ids = remote.get_online_features(refs, {"driver_id": list(np.arange(3) + 1)})
        assert numpy_ids.to_dict()["driver_stats__note"] == ["x", None, None]
        with pytest.raises(FeatureRefError) as err:
            remote.get_online_features(["driver_stats:speed"], {"driver_id": [1]})
        assert err.value.ref == f"{project}/driver_stats:speed"
        with pytest.raises(ValidationError) as verr:
            remote.get_online_features(refs, {"driver_id": ["a"]})
        assert verr.value.entity == "driver_id"
    finally:
        remote.close()


ALL_TYPES = FeatureTable(
    name="all_types",
    entities=("driver_id",),
    features=tuple(Feature(name=t.name.lower(), value_type=t) for t in ValueType),
)


def test_every_value_type_travels(registry: SqlRegistry, tmp_path: Path) -> None:
    project = new_project()
    registry.apply(project, [DRIVER, ALL_TYPES])
    store = open_store(store_config("sqlite", tmp_path, None))
    stamp = datetime(2024, 5, 1, 12, 30, 15, tzinfo=timezone.utc)
    row = {
        "bytes": b"\x00\xff",
        "string": "é",
        "int32": -7,
        "int64": 2**40,
        "double": 0.1,
        "float": 0.5,
        "bool": True,
        "unix_timestamp": stamp,
        "bytes_list": [b"a", b""],
        "string_list": ["x", "y"],
        "int32_list": [1, -2],
        "int64_list": [2**40],
        "double_list": [0.25],
        "float_list": [1.5, 2.5],
        "bool_list": [False, True],
        "unix_timestamp_list": [stamp],
    }
    rows = [{"driver_id": i, "event_timestamp": NOW, **row} for i in range(20)]
    write_rows(store, project, ALL_TYPES, rows)
    service = ServingService(registry, store, project)
    with start_serving(service) as server:
        remote = RemoteServing(server.grpc_address, project=project)
        try:
            got = remote.get_online_features(["all_types:*"], {"driver_id": [*range(20), 99]})
            dense = remote.get_online_features(["all_types:*"], {"driver_id": list(range(20))})
        finally:
            remote.close()
        body = {"features": ["all_types:*"], "entities": {"driver_id": [0, 99]}}
        json_resp = httpx.post(f"{server.http_url}/get-online-features", json=body).json()
    values = got.to_dict()
    for name, value in row.items():
        assert values[f"all_types__{name}"] == [value] * 20 + [None], name
    assert got.value_types[1:] == list(ValueType)
    assert dense.to_dict()["all_types__double"] == [0.1] * 20  # floats sent as one block
    assert dense.to_dict()["all_types__float"] == [0.5] * 20
    json_values = {
        name: result["values"]
        for name, result in zip(
            json_resp["metadata"]["feature_names"], json_resp["results"], strict=True
        )
    }
    assert json_values["bytes"] == ["AP8=", None]
    assert json_values["unix_timestamp"] == ["2024-05-01T12:30:15Z", None]
    assert json_values["unix_timestamp_list"] == [["2024-05-01T12:30:15Z"], None]
    assert json_values["bytes_list"] == [["YQ==", ""], None]
    assert json_values["float_list"] == [[1.5, 2.5], None]
