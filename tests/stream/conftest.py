"""Fixtures of the stream tests: a protobuf message class compiled for the session."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc_tools
import pytest
from grpc_tools import protoc

EVENTS_PROTO = """\
syntax = "proto3";
package potluck.test;
import "google/protobuf/timestamp.proto";
message DriverEvent {
  optional int64 driver_id = 1;
  optional float conv_rate = 2;
  repeated int64 trips = 3;
  google.protobuf.Timestamp event_timestamp = 4;
  optional string note = 5;
  optional bytes blob = 6;
}
"""
"""The message class of the protobuf tests (module ``potluck_test_events_pb2``)."""


@pytest.fixture(scope="session")
def proto_class(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``potluck_test_events_pb2.DriverEvent``, compiled into a folder on ``sys.path``."""
    folder = tmp_path_factory.mktemp("proto")
    (folder / "potluck_test_events.proto").write_text(EVENTS_PROTO)
    include = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{folder}",
            f"-I{include}",
            f"--python_out={folder}",
            str(folder / "potluck_test_events.proto"),
        ]
    )
    assert code == 0
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("potluck_test_events_pb2").DriverEvent
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("potluck_test_events_pb2", None)
