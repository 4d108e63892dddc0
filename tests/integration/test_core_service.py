"""The Core service end to end: a real gRPC server on port 0 over a real SqlRegistry (SQLite in
tmp_path), called through RemoteRegistry, through potluck.Client(core_url=...) and through the
raw generated stub (to pin the status codes)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from potluck import (
    Client,
    Entity,
    Feature,
    FeatureTable,
    FileSource,
    KafkaSource,
    ProtoFormat,
    ValueType,
)
from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as pb_grpc
from potluck._proto.potluck.core.v1 import definitions_pb2 as defs_pb
from potluck.config import load_settings
from potluck.definitions.serde import feature_table_to_proto
from potluck.errors import (
    AlreadyExistsError,
    ConflictError,
    DefinitionError,
    IncompatibleChangeError,
    NotFoundError,
    PotluckError,
    UnavailableError,
    ValidationError,
)
from potluck.registry.base import JobRecord, Registry
from potluck.registry.remote import RemoteRegistry
from potluck.registry.server import CoreServer, run_core, start_core_server
from potluck.registry.sql import SqlRegistry

DRIVER = Entity(
    name="driver_id", value_type=ValueType.INT64, description="a driver", labels={"team": "rides"}
)
CITY = Entity(name="city", value_type=ValueType.STRING)


def _stats(**overrides: Any) -> FeatureTable:
    spec: dict[str, Any] = {
        "name": "driver_stats",
        "entities": ["driver_id"],
        "features": [
            Feature(name="conv_rate", value_type=ValueType.DOUBLE, labels={"unit": "ratio"}),
            Feature(name="trips", value_type=ValueType.INT64_LIST),
        ],
        "max_age": timedelta(hours=2),
        "batch_source": FileSource(
            path="/data/driver_stats",
            event_timestamp_column="event_ts",
            created_timestamp_column="created_ts",
            date_partition_column="day",
            field_mapping={"rate": "conv_rate"},
        ),
        "stream_source": KafkaSource(
            bootstrap_servers="127.0.0.1:9092",
            topic="driver_stats",
            message_format=ProtoFormat(class_path="events_pb2.DriverStats"),
            event_timestamp_column="event_ts",
        ),
        "labels": {"team": "rides"},
    }
    spec.update(overrides)
    return FeatureTable(**spec)


CITY_STATS = FeatureTable(
    name="city_stats",
    entities=["city", "driver_id"],
    features=[Feature(name="demand", value_type=ValueType.FLOAT)],
    labels={"team": "maps"},
)


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[SqlRegistry]:
    reg = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    yield reg
    reg.close()


@pytest.fixture()
def server(registry: SqlRegistry) -> Iterator[CoreServer]:
    srv = start_core_server(registry)
    yield srv
    srv.stop()


@pytest.fixture()
def remote(server: CoreServer) -> Iterator[RemoteRegistry]:
    reg = RemoteRegistry(server.address)
    yield reg
    reg.close()


@pytest.fixture()
def stub(server: CoreServer) -> Iterator[Any]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.CoreServiceStub(channel)


def _raised(call: Callable[[], object]) -> PotluckError:
    with pytest.raises(PotluckError) as info:
        call()
    return info.value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the server itself -------------------------------------------------------------------------


def test_server_listens_on_a_chosen_port_and_serves_health(server: CoreServer) -> None:
    assert server.port > 0
    assert server.address == f"127.0.0.1:{server.port}"
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "potluck.core.v1.CoreService"):
            response = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_a_taken_port_is_refused(registry: SqlRegistry, server: CoreServer) -> None:
    error = _raised(lambda: start_core_server(registry, port=server.port))
    assert type(error) is UnavailableError
    assert error.message == (
        f"the Core service cannot listen on 127.0.0.1:{server.port}: Address already in use"
    )
    assert error.attrs() == {"address": f"127.0.0.1:{server.port}"}


# ---- every RPC through RemoteRegistry ----------------------------------------------------------


def test_apply_get_list_round_trip(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    changes = remote.apply("default", [_stats(), DRIVER])
    assert [(c.kind, c.name, c.action, c.revision) for c in changes] == [
        ("feature_table", "driver_stats", "create", 1),  # in the order given, as embedded
        ("entity", "driver_id", "create", 0),
    ]

    table = remote.get("default", "feature_table", "driver_stats")
    assert table == _stats()
    assert isinstance(table, FeatureTable) and table.revision == 1
    assert table == registry.get("default", "feature_table", "driver_stats")
    assert remote.get("default", "entity", "driver_id") == DRIVER

    remote.apply("default", [CITY, CITY_STATS])
    assert remote.list("default", "entity") == [CITY, DRIVER]
    assert remote.list("default", "feature_table") == [CITY_STATS, _stats()]
    assert remote.list("default", "feature_table", {"team": "maps"}) == [CITY_STATS]
    assert remote.list("default", "entity", {"team": "rides"}) == [DRIVER]
    assert remote.list("default", "feature_table", {"team": "nobody"}) == []
    assert remote.list("other", "feature_table") == []


def test_same_plan_as_the_registry_itself(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    remote.apply("default", [DRIVER, _stats()])
    changed = _stats(
        features=[
            Feature(name="conv_rate", value_type=ValueType.DOUBLE, labels={"unit": "ratio"}),
            Feature(name="trips", value_type=ValueType.INT64_LIST),
            Feature(name="rating", value_type=ValueType.FLOAT),
        ],
        max_age=timedelta(hours=3),
    )
    direct = registry.apply("default", [DRIVER, changed], dry_run=True)
    assert remote.apply("default", [DRIVER, changed], dry_run=True) == direct
    assert [(c.name, c.action, c.revision) for c in direct] == [
        ("driver_id", "unchanged", 0),
        ("driver_stats", "update", 2),
    ]
    assert direct[1].details  # the plan says what changes, and it travels unchanged
    assert remote.get("default", "feature_table", "driver_stats") == _stats()  # dry run

    assert remote.apply("default", [DRIVER, changed]) == direct
    assert remote.apply("default", [DRIVER, changed]) == registry.apply(
        "default", [DRIVER, changed], dry_run=True
    )
    assert {c.action for c in remote.apply("default", [DRIVER, changed])} == {"unchanged"}


def test_history_round_trips_revisions_and_timestamps(
    registry: SqlRegistry, remote: RemoteRegistry
) -> None:
    remote.apply("default", [DRIVER, _stats()])
    remote.apply("default", [_stats(max_age=timedelta(hours=5))])
    history = remote.history("default", "feature_table", "driver_stats")
    assert [r.revision for r in history] == [1, 2]
    assert [r.spec for r in history] == [_stats(), _stats(max_age=timedelta(hours=5))]
    direct = registry.history("default", "feature_table", "driver_stats")
    for got, want in zip(history, direct, strict=True):
        assert got.applied_at.tzinfo is timezone.utc
        assert got.applied_at == want.applied_at.replace(
            tzinfo=want.applied_at.tzinfo or timezone.utc
        )
    assert history[0].applied_at <= history[1].applied_at


def test_entity_history_round_trips(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    remote.apply("default", [DRIVER])
    described = Entity(name="driver_id", value_type=ValueType.INT64, description="renamed")
    remote.apply("default", [described])
    history = remote.history("default", "entity", "driver_id")
    assert [(r.revision, r.spec) for r in history] == [(1, DRIVER), (2, described)]
    assert history == [
        dataclasses.replace(r, applied_at=r.applied_at.astimezone(timezone.utc))
        for r in registry.history("default", "entity", "driver_id")
    ]


def test_optimistic_concurrency_travels(remote: RemoteRegistry) -> None:
    remote.apply("default", [DRIVER, _stats()])
    read = remote.get("default", "feature_table", "driver_stats")
    assert isinstance(read, FeatureTable)
    remote.apply("default", [_stats(max_age=timedelta(hours=4))])
    stale = _stats(max_age=timedelta(hours=6), revision=read.revision)
    error = _raised(lambda: remote.apply("default", [stale]))
    assert type(error) is ConflictError
    fresh = remote.get("default", "feature_table", "driver_stats")
    assert isinstance(fresh, FeatureTable) and fresh.revision == 2
    changes = remote.apply("default", [_stats(max_age=timedelta(hours=6), revision=2)])
    assert [(c.action, c.revision) for c in changes] == [("update", 3)]


def test_concurrent_updates_through_core_lose_nothing(remote: RemoteRegistry) -> None:
    remote.apply("default", [DRIVER, _stats()])
    writers, updates = 4, 5

    def update(writer: int) -> int:
        conflicts = 0
        for n in range(updates):
            while True:
                current = remote.get("default", "feature_table", "driver_stats")
                assert isinstance(current, FeatureTable)
                labels = {**current.labels, f"w{writer}": str(n)}
                try:
                    remote.apply("default", [dataclasses.replace(current, labels=labels)])
                    break
                except ConflictError:
                    conflicts += 1
        return conflicts

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(update, range(writers)))
    final = remote.get("default", "feature_table", "driver_stats")
    assert isinstance(final, FeatureTable)
    assert final.revision == 1 + writers * updates
    assert final.labels == {"team": "rides", **{f"w{w}": str(updates - 1) for w in range(writers)}}
    history = remote.history("default", "feature_table", "driver_stats")
    assert [r.revision for r in history] == list(range(1, 2 + writers * updates))


def test_delete(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    remote.apply("default", [DRIVER, CITY, _stats()])
    remote.delete("default", "entity", "city")
    remote.delete("default", "feature_table", "driver_stats")
    assert remote.list("default", "feature_table") == []
    assert registry.list("default", "entity") == [DRIVER]
    assert [r.revision for r in remote.history("default", "feature_table", "driver_stats")] == [1]
    error = _raised(lambda: remote.get("default", "feature_table", "driver_stats"))
    assert type(error) is NotFoundError
    assert error.message == "feature table driver_stats not found in project default"


def test_projects(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    created = remote.create_project("rides")
    assert created.name == "rides" and created.archived is False
    assert created.created_at is not None and created.created_at.tzinfo is timezone.utc
    remote.apply("maps", [CITY])
    assert [p.name for p in remote.list_projects()] == ["maps", "rides"]
    archived = remote.archive_project("rides")
    assert archived.name == "rides" and archived.archived is True
    assert [p.name for p in remote.list_projects()] == ["maps"]
    listed = remote.list_projects(include_archived=True)
    assert [(p.name, p.archived) for p in listed] == [("maps", False), ("rides", True)]
    direct = registry.list_projects(include_archived=True)
    assert [(p.name, p.archived) for p in direct] == [(p.name, p.archived) for p in listed]


def test_jobs(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    body = {
        "status": "SUCCEEDED",
        "stats": {"read": 10, "written": 9, "rejected": 1},
        "errors": ["row 3: null key"],
        "ratio": 0.5,
        "done": True,
        "parent": None,
    }
    remote.put_job(JobRecord(project="default", id="job-1", body=body))
    remote.put_job(JobRecord(project="default", id="job-2", body={"status": "RUNNING"}))
    assert remote.get_job("default", "job-1") == JobRecord(project="default", id="job-1", body=body)
    assert registry.get_job("default", "job-1").body == body
    remote.put_job(JobRecord(project="default", id="job-2", body={"status": "FAILED"}))
    assert remote.get_job("default", "job-2").body == {"status": "FAILED"}
    assert remote.list_jobs("default") == registry.list_jobs("default")
    assert {j.id for j in remote.list_jobs("default")} == {"job-1", "job-2"}
    assert remote.list_jobs("other") == []


def test_unknown_kind_is_refused_before_any_call(remote: RemoteRegistry) -> None:
    for call in (
        lambda: remote.get("default", "feature_view", "x"),
        lambda: remote.list("default", "feature_view"),
        lambda: remote.delete("default", "feature_view", "x"),
        lambda: remote.history("default", "feature_view", "x"),
    ):
        error = _raised(call)
        assert type(error) is ValidationError
        assert error.message == "unknown kind 'feature_view'; expected one of entity, feature_table"
        assert error.attrs() == {"kind": "feature_view"}


# ---- errors: same class, message and fields as the registry raises -----------------------------


def _same_error(
    registry: Registry, remote: RemoteRegistry, call: Callable[[Registry], object]
) -> PotluckError:
    direct = _raised(lambda: call(registry))
    through_core = _raised(lambda: call(remote))
    assert type(through_core) is type(direct)
    assert through_core.message == direct.message
    assert through_core.attrs() == direct.attrs()
    return through_core


def test_errors_come_back_as_raised(registry: SqlRegistry, remote: RemoteRegistry) -> None:
    remote.apply("default", [DRIVER, _stats()])
    remote.create_project("taken")
    remote.archive_project("taken")
    retyped = _stats(features=[Feature(name="conv_rate", value_type=ValueType.STRING)])
    cases: list[tuple[type[PotluckError], Callable[[Registry], object]]] = [
        (NotFoundError, lambda r: r.get("default", "entity", "nobody")),
        (NotFoundError, lambda r: r.get("default", "feature_table", "nothing")),
        (NotFoundError, lambda r: r.delete("default", "feature_table", "nothing")),
        (NotFoundError, lambda r: r.history("default", "feature_table", "nothing")),
        (NotFoundError, lambda r: r.get_job("default", "no-such-job")),
        (NotFoundError, lambda r: r.archive_project("nowhere")),
        (ValidationError, lambda r: r.apply("taken", [CITY])),
        (AlreadyExistsError, lambda r: r.create_project("default")),
        (DefinitionError, lambda r: r.apply("default", [CITY_STATS])),
        (IncompatibleChangeError, lambda r: r.apply("default", [retyped])),
        (ConflictError, lambda r: r.apply("default", [_stats(max_age=timedelta(1), revision=7)])),
        (ValidationError, lambda r: r.delete("default", "entity", "driver_id")),
    ]
    for expected, call in cases:
        error = _same_error(registry, remote, call)
        assert isinstance(error, expected), (expected, error)
    assert remote.get("default", "feature_table", "driver_stats") == _stats()  # nothing written


@pytest.mark.parametrize(
    ("rpc", "request_", "status", "code"),
    [
        (
            "GetEntity",
            pb.GetRequest(project="default", name="nobody"),
            grpc.StatusCode.NOT_FOUND,
            "not_found",
        ),
        (
            "CreateProject",
            pb.ProjectRequest(name="default"),
            grpc.StatusCode.ALREADY_EXISTS,
            "already_exists",
        ),
        (
            "Apply",
            pb.ApplyRequest(
                project="default", entities=[defs_pb.EntitySpec(name="Bad Name", value_type=4)]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_definition",
        ),
        (
            "DeleteEntity",
            pb.GetRequest(project="default", name="driver_id"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
        (
            "PutJob",
            pb.Job(project="default", id="j", body_json="[1, 2"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
    ],
)
def test_status_codes_on_the_wire(
    remote: RemoteRegistry, stub: Any, rpc: str, request_: Any, status: grpc.StatusCode, code: str
) -> None:
    remote.apply("default", [DRIVER, _stats()])
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request_, timeout=5)
    call: Any = info.value
    assert call.code() == status
    assert dict(call.trailing_metadata())["potluck-error-code"] == code


def test_incompatible_and_conflict_status_codes(remote: RemoteRegistry, stub: Any) -> None:
    remote.apply("default", [DRIVER, _stats()])
    retyped = _stats(features=[Feature(name="conv_rate", value_type=ValueType.STRING)])
    for table, status in [
        (retyped, grpc.StatusCode.FAILED_PRECONDITION),
        (_stats(max_age=timedelta(hours=9), revision=5), grpc.StatusCode.ABORTED),
    ]:
        request = pb.ApplyRequest(project="default", feature_tables=[feature_table_to_proto(table)])
        with pytest.raises(grpc.RpcError) as info:
            stub.Apply(request, timeout=5)
        assert info.value.code() == status  # type: ignore[attr-defined]


def test_bad_job_body_names_the_field(stub: Any, remote: RemoteRegistry) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.PutJob(pb.Job(project="default", id="j", body_json="[1, 2]"), timeout=5)
    assert info.value.details() == (  # type: ignore[attr-defined]
        "job 'j': body_json must be a JSON object, got list"
    )


class _BrokenRegistry(SqlRegistry):
    """A real SqlRegistry with one method that fails the way a bug would."""

    def list_projects(self, *, include_archived: bool = False) -> Any:
        raise RuntimeError("disk on fire")


def test_unexpected_failure_is_internal(tmp_path: Path) -> None:
    broken = _BrokenRegistry(f"sqlite:///{tmp_path / 'broken.db'}")
    srv = start_core_server(broken)
    remote = RemoteRegistry(srv.address)
    try:
        error = _raised(remote.list_projects)
        with grpc.insecure_channel(srv.address) as channel, pytest.raises(grpc.RpcError) as info:
            pb_grpc.CoreServiceStub(channel).ListProjects(pb.ListProjectsRequest(), timeout=5)
    finally:
        remote.close()
        srv.stop()
        broken.close()
    assert type(error) is PotluckError
    assert error.message == "internal error in the Core service: RuntimeError: disk on fire"
    assert info.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]


# ---- reaching the service ----------------------------------------------------------------------


def test_unreachable_address_fails_fast_naming_it() -> None:
    port = _free_port()
    started = time.monotonic()
    error = _raised(lambda: RemoteRegistry(f"127.0.0.1:{port}"))
    assert time.monotonic() - started < 2.0
    assert type(error) is UnavailableError
    assert error.message.startswith(f"cannot reach the Core service at 127.0.0.1:{port}: ")
    assert "Connection refused" in error.message
    assert error.message.endswith("; is `potluck core` running?")
    assert error.attrs() == {"address": f"127.0.0.1:{port}"}


def test_silent_peer_times_out_naming_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        error = _raised(lambda: RemoteRegistry(address, timeout=0.5))
    assert type(error) is UnavailableError
    assert error.message == (
        f"cannot reach the Core service at {address}: no answer within 0.5 s; "
        "is `potluck core` running?"
    )


def test_a_grpc_server_that_is_not_core_is_told_apart() -> None:
    other = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        error = _raised(lambda: RemoteRegistry(f"127.0.0.1:{port}"))
    finally:
        other.stop(None)
    assert type(error) is UnavailableError
    assert error.message == (
        f"cannot reach the Core service at 127.0.0.1:{port}: it answers but does not serve "
        "potluck.core.v1.CoreService; is `potluck core` running?"
    )


def test_server_gone_after_connecting(registry: SqlRegistry) -> None:
    srv = start_core_server(registry)
    remote = RemoteRegistry(srv.address)
    srv.stop()
    try:
        error = _raised(remote.list_projects)
    finally:
        remote.close()
    assert type(error) is UnavailableError
    assert error.message.startswith(f"cannot reach the Core service at {srv.address}: ")
    assert error.attrs() == {"address": srv.address}


# ---- potluck.Client(core_url=...) --------------------------------------------------------------


def test_client_goes_through_core(
    tmp_path: Path, registry: SqlRegistry, server: CoreServer
) -> None:
    config = tmp_path / "client" / "potluck.yaml"
    config.parent.mkdir()
    config.write_text("project: rides\nregistry: sqlite:///embedded.db\n")
    with Client(config_path=config, core_url=server.address) as client:
        assert client.apply([DRIVER, _stats()])[1].revision == 1
        assert client.get_feature_table("driver_stats") == _stats()
        assert client.get_entity("driver_id") == DRIVER
        assert client.list_feature_tables(labels={"team": "rides"}) == [_stats()]
        assert [r.revision for r in client.feature_table_history("driver_stats")] == [1]
        assert [p.name for p in client.list_projects()] == ["rides"]
        client.delete_feature_table("driver_stats")
        error = _raised(lambda: client.get_feature_table("driver_stats"))
        assert type(error) is NotFoundError
    assert registry.list("rides", "entity") == [DRIVER]  # written to the Core's registry...
    assert not (config.parent / "embedded.db").exists()  # ...not to the embedded one


def test_client_from_settings(server: CoreServer, registry: SqlRegistry) -> None:
    settings = load_settings(environ={}, overrides={"core_url": server.address, "project": "p"})
    with Client(settings=settings) as client:
        client.create_project("p")
        client.apply(DRIVER)
    assert registry.get("p", "entity", "driver_id") == DRIVER


def test_client_with_unreachable_core_url_names_it(tmp_path: Path) -> None:
    port = _free_port()
    config = tmp_path / "potluck.yaml"
    config.write_text(f"core_url: 127.0.0.1:{port}\n")
    error = _raised(lambda: Client(config_path=config))
    assert type(error) is UnavailableError
    assert error.message.startswith(f"cannot reach the Core service at 127.0.0.1:{port}: ")


# ---- run_core: the blocking entry point --------------------------------------------------------


@contextmanager
def _run_core(registry_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``run_core`` in a child process; yield it and the one line it logs."""
    (tmp_path / "potluck.yaml").write_text(f"registry: {registry_url}\n")
    code = (
        "from potluck.config import load_settings\n"
        "from potluck.registry.server import run_core\n"
        f"run_core(load_settings({str(tmp_path / 'potluck.yaml')!r}, environ={{}}), port=0)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    with subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    ) as proc:
        try:
            assert proc.stderr is not None
            seen: list[str] = []
            # gRPC's C core may log its own lines to the same stderr; skip those.
            for raw in proc.stderr:
                seen.append(raw.strip())
                if seen[-1].startswith("potluck core"):
                    break
            else:
                pytest.fail(f"run_core exited with {proc.wait()}: {seen}")
            yield proc, seen[-1]
        finally:
            if proc.poll() is None:
                proc.kill()


def test_run_core_serves_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "core.db"
    with _run_core(f"sqlite:///{db}", tmp_path) as (proc, line):
        match = re.fullmatch(
            r"potluck core listening on (127\.0\.0\.1:\d+) \(registry: (.*)\)", line
        )
        assert match, line
        assert match.group(2) == f"sqlite:///{db}"
        with closing(RemoteRegistry(match.group(1))) as remote:
            remote.apply("default", [DRIVER])
            assert remote.get("default", "entity", "driver_id") == DRIVER
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    with closing(SqlRegistry(f"sqlite:///{db}")) as reg:
        assert reg.get("default", "entity", "driver_id") == DRIVER


@pytest.mark.postgres
def test_run_core_masks_the_password(fresh_postgres_url: str, tmp_path: Path) -> None:
    assert ":potluck@" in fresh_postgres_url
    with _run_core(fresh_postgres_url, tmp_path) as (proc, line):
        masked = fresh_postgres_url.replace(":potluck@", ":***@")
        assert line.endswith(f" (registry: {masked})"), line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_run_core_fails_at_start_when_the_registry_is_unreachable(tmp_path: Path) -> None:
    port = _free_port()
    url = f"postgresql://potluck:secret@127.0.0.1:{port}/potluck"
    config = tmp_path / "potluck.yaml"
    config.write_text(f"registry: {url}\n")
    settings = load_settings(config, environ={})
    error = _raised(lambda: run_core(settings, port=0))
    assert type(error) is UnavailableError
    assert error.message.startswith(
        f"cannot connect to registry postgresql://potluck:***@127.0.0.1:{port}/potluck: "
    )
