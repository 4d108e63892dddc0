"""Feast compatibility: a gRPC client compiled here from the wire contract in DESIGN.md (not our
generated code) talks to our server, and the HTTP endpoint answers Feast's JSON shape."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from _serving_support import (  # noqa: F401 - fixtures used by name
    DRIVER,
    DRIVER_STATS,
    micros,
    new_project,
    open_store,
    registry_fixture,
    store_config,
    utc_now,
    write_rows,
)
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from potluck.registry.sql import SqlRegistry
from potluck.serving.server import ServingServer, start_serving
from potluck.serving.service import ServingService

VALUE_PROTO = """
syntax = "proto3";
package feast.types;
message Value { oneof val {
  bytes bytes_val = 1; string string_val = 2; int32 int32_val = 3; int64 int64_val = 4;
  double double_val = 5; float float_val = 6; bool bool_val = 7; int64 unix_timestamp_val = 8;
  BytesList bytes_list_val = 11; StringList string_list_val = 12; Int32List int32_list_val = 13;
  Int64List int64_list_val = 14; DoubleList double_list_val = 15; FloatList float_list_val = 16;
  BoolList bool_list_val = 17; Int64List unix_timestamp_list_val = 18; Null null_val = 19; } }
message BytesList { repeated bytes val = 1; }
message StringList { repeated string val = 1; }
message Int32List { repeated int32 val = 1; }
message Int64List { repeated int64 val = 1; }
message DoubleList { repeated double val = 1; }
message FloatList { repeated float val = 1; }
message BoolList { repeated bool val = 1; }
enum Null { NULL = 0; }
message RepeatedValue { repeated Value val = 1; }
"""

SERVING_PROTO = """
syntax = "proto3";
package feast.serving;
import "google/protobuf/timestamp.proto";
import "feast/types/Value.proto";
service ServingService {
  rpc GetFeastServingInfo (GetFeastServingInfoRequest) returns (GetFeastServingInfoResponse);
  rpc GetOnlineFeatures (GetOnlineFeaturesRequest) returns (GetOnlineFeaturesResponse); }
message GetFeastServingInfoRequest {}
message GetFeastServingInfoResponse { string version = 1; }
message FeatureList { repeated string val = 1; }
message GetOnlineFeaturesRequest {
  oneof kind { string feature_service = 1; FeatureList features = 2; }
  map<string, feast.types.RepeatedValue> entities = 3;
  bool full_feature_names = 4;
  map<string, feast.types.RepeatedValue> request_context = 5; }
message GetOnlineFeaturesResponseMetadata { FeatureList feature_names = 1; }
message GetOnlineFeaturesResponse {
  GetOnlineFeaturesResponseMetadata metadata = 1;
  repeated FeatureVector results = 2;
  bool status = 3;
  message FeatureVector { repeated feast.types.Value values = 1; repeated FieldStatus statuses = 2;
                          repeated google.protobuf.Timestamp event_timestamps = 3; } }
enum FieldStatus { INVALID = 0; PRESENT = 1; NULL_VALUE = 2; NOT_FOUND = 3; OUTSIDE_MAX_AGE = 4; }
"""


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Message classes compiled from the contract, in a pool of their own."""
    root = tmp_path_factory.mktemp("contract")
    (root / "feast" / "types").mkdir(parents=True)
    (root / "feast" / "serving").mkdir(parents=True)
    (root / "feast" / "types" / "Value.proto").write_text(textwrap.dedent(VALUE_PROTO))
    (root / "feast" / "serving" / "ServingService.proto").write_text(SERVING_PROTO)
    out = root / "contract.pb"
    include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "feast/serving/ServingService.proto",
        ]
    )
    assert status == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    names = [
        "feast.types.Value",
        "feast.types.RepeatedValue",
        "feast.serving.FeatureList",
        "feast.serving.GetFeastServingInfoRequest",
        "feast.serving.GetFeastServingInfoResponse",
        "feast.serving.GetOnlineFeaturesRequest",
        "feast.serving.GetOnlineFeaturesResponse",
    ]
    classes = {
        n.rsplit(".", 1)[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(n))
        for n in names
    }
    classes["FieldStatus"] = pool.FindEnumTypeByName("feast.serving.FieldStatus")
    return classes


NOW = utc_now()


@pytest.fixture()
def server(registry: SqlRegistry, tmp_path: Path) -> Iterator[ServingServer]:
    project = new_project()
    registry.apply(project, [DRIVER, DRIVER_STATS])
    store = open_store(store_config("sqlite", tmp_path, None))
    write_rows(
        store,
        project,
        DRIVER_STATS,
        [
            {"driver_id": 1001, "conv_rate": 0.25, "trips": 30, "event_timestamp": NOW},
            {"driver_id": 1002, "acc_rate": 0.75, "event_timestamp": NOW - timedelta(hours=1)},
        ],
    )
    with start_serving(ServingService(registry, store, project)) as srv:
        yield srv
    store.close()


def _rpc(channel: grpc.Channel, name: str, request_cls: Any, response_cls: Any) -> Any:
    return channel.unary_unary(
        f"/feast.serving.ServingService/{name}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )


def test_grpc_client_from_the_contract(server: ServingServer, contract: dict[str, Any]) -> None:
    c = contract
    status = {v.number: v.name for v in c["FieldStatus"].values}
    request = c["GetOnlineFeaturesRequest"](
        features=c["FeatureList"](val=["driver_stats:conv_rate", "driver_stats:acc_rate"]),
        entities={
            "driver_id": c["RepeatedValue"](
                val=[c["Value"](int64_val=i) for i in (1001, 1002, 1003)]
            )
        },
        full_feature_names=True,
    )
    with grpc.insecure_channel(server.grpc_address) as channel:
        info = _rpc(
            channel,
            "GetFeastServingInfo",
            c["GetFeastServingInfoRequest"],
            c["GetFeastServingInfoResponse"],
        )(c["GetFeastServingInfoRequest"]())
        response = _rpc(
            channel,
            "GetOnlineFeatures",
            c["GetOnlineFeaturesRequest"],
            c["GetOnlineFeaturesResponse"],
        )(request)
    assert info.version
    assert list(response.metadata.feature_names.val) == [
        "driver_id",
        "driver_stats__conv_rate",
        "driver_stats__acc_rate",
    ]
    ids, conv, acc = response.results
    assert [v.int64_val for v in ids.values] == [1001, 1002, 1003]
    assert [status[s] for s in conv.statuses] == ["PRESENT", "NULL_VALUE", "NOT_FOUND"]
    assert conv.values[0].float_val == 0.25
    assert [status[s] for s in acc.statuses] == ["NULL_VALUE", "PRESENT", "NOT_FOUND"]
    assert acc.values[1].double_val == 0.75
    assert [t.seconds for t in acc.event_timestamps] == [
        micros(NOW) // 1_000_000,
        micros(NOW - timedelta(hours=1)) // 1_000_000,
        0,
    ]


def test_http_takes_and_returns_feasts_json(server: ServingServer) -> None:
    body = {
        "features": ["driver_stats:conv_rate", "driver_stats:trips"],
        "entities": {"driver_id": [1001, 1002]},
    }
    resp = httpx.post(f"{server.http_url}/get-online-features", json=body)
    data = resp.json()
    assert resp.status_code == 200
    assert set(data) == {"metadata", "results"}
    assert data["metadata"] == {"feature_names": ["driver_id", "conv_rate", "trips"]}
    assert [set(r) for r in data["results"]] == [{"values", "statuses", "event_timestamps"}] * 3
    assert [r["values"] for r in data["results"]] == [[1001, 1002], [0.25, None], [30, None]]
    assert data["results"][2]["statuses"] == ["PRESENT", "NULL_VALUE"]
