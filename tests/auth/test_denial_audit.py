"""Every served RPC has a rule; denied calls land in the audit log, coalesced and never blocking."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from _auth_support import token_entry

from potluck._proto.feast.core import CoreService_pb2 as feast_core_pb
from potluck._proto.feast.core import JobService_pb2 as feast_jobs_pb
from potluck._proto.feast.serving import ServingService_pb2 as serving_pb
from potluck._proto.potluck.core.v1 import core_service_pb2 as core_pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as core_grpc
from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as jobs_pb
from potluck._proto.potluck.jobservice.v1 import job_service_pb2_grpc as jobs_grpc
from potluck.auth.denials import DenialAudit, Refusal
from potluck.auth.exposure import isolation_warning
from potluck.auth.grpc import ClientSecurity
from potluck.auth.rules import CORE_RULES, FEAST_CORE_RULES, JOB_SERVICE_RULES, SERVING_RULES
from potluck.auth.settings import AuthSettings
from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES
from potluck.config import load_settings
from potluck.jobservice.server import add_job_service, start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.registry.base import AuditEntry
from potluck.registry.remote import RemoteRegistry
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import ServingServer, start_serving
from potluck.serving.service import ServingService

RULES = {**CORE_RULES, **FEAST_CORE_RULES, **SERVING_RULES, **JOB_SERVICE_RULES}


def test_every_rpc_of_every_served_service_has_a_rule() -> None:
    services = [
        core_pb.DESCRIPTOR.services_by_name["CoreService"],
        feast_core_pb.DESCRIPTOR.services_by_name["CoreService"],
        serving_pb.DESCRIPTOR.services_by_name["ServingService"],
        jobs_pb.DESCRIPTOR.services_by_name["JobService"],
        feast_jobs_pb.DESCRIPTOR.services_by_name["JobService"],
    ]
    methods = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
    methods.add("/feast.serving.ServingService/GetOnlineFeaturesV2")  # compat's hand-made handler
    assert len(methods) == 52
    assert sorted(methods - RULES.keys()) == []


# ---- DenialAudit on its own ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _denied(subject: str = "bob", method: str = "/p.S/M") -> Refusal:
    return Refusal("permission_denied", method, subject, "apply", "alpha")


def test_identical_denials_within_the_window_become_one_counted_entry() -> None:
    written: list[tuple[str, str, str, str]] = []
    clock = Clock()
    audit = DenialAudit(lambda *entry: written.append(entry), window=10, clock=clock)
    for _ in range(500):
        audit(_denied())
    audit(_denied(subject="eve"))
    audit(Refusal("unauthenticated", "/p.S/M"))
    assert audit.flush()
    assert written == [
        ("bob", "alpha", "apply", "/p.S/M"),
        ("eve", "alpha", "apply", "/p.S/M"),
        ("bob", "alpha", "apply", "/p.S/M (denied 499 more times in 10 s)"),
    ]
    clock.now = 11.0  # a new window: written at once again
    audit(_denied())
    assert audit.flush()
    assert written[-1] == ("bob", "alpha", "apply", "/p.S/M")
    audit.close()
    assert audit.counts == {
        "unauthenticated": 1,
        "permission_denied": 502,
        "written": 4,
        "coalesced": 499,
        "dropped": 0,
        "failed": 0,
    }


def test_a_failing_or_slow_registry_neither_fails_nor_delays_the_denied_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writing, release = threading.Event(), threading.Event()

    def slow_then_fail(*entry: str) -> None:
        writing.set()
        release.wait(5)
        raise ConnectionError("registry down")

    audit = DenialAudit(slow_then_fail, max_pending=2)
    audit(_denied(method="/p.S/M0"))
    assert writing.wait(5)
    for n in range(1, 5):  # M0 is being written (blocked): two wait, two find no room
        audit(_denied(method=f"/p.S/M{n}"))
    release.set()
    with caplog.at_level(logging.WARNING, logger="potluck.auth.denials"):
        assert audit.flush()
    audit.close()
    assert audit.counts["failed"] == 3
    assert audit.counts["dropped"] == 2
    assert caplog.messages[0] == (
        "could not record a permission denial of bob (/p.S/M0) in the audit log: "
        "ConnectionError: registry down"
    )


# ---- the servers -----------------------------------------------------------------------------


@dataclass
class Stack:
    registry: SqlRegistry
    core: str
    serving: ServingServer
    remote_serving: ServingServer
    jobs: str


TOKENS = [
    token_entry("admin", "plk_admin", ["admin"], None),
    token_entry("reader", "plk_reader", ["read_definitions"], None),
    token_entry("beta-admin", "plk_beta_admin", ["admin"], ["beta"]),
    token_entry("serving", "plk_serving", ["admin"], None),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("denials")
    auth = AuthSettings(tokens=TOKENS)
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    registry.create_project("alpha")
    registry.create_project("beta")
    (folder / "potluck.yaml").write_text(
        f"project: alpha\nregistry: sqlite:///{folder / 'registry.db'}\n"
        f"online_store: {{type: sqlite, path: {folder / 'jobs-online.db'}}}\n"
    )
    job_service = JobService(load_settings(folder / "potluck.yaml", environ={}))
    on_core = [
        lambda server, _registry, add=add: add(server, job_service)
        for add in (add_job_service, *JOB_SERVICES)
    ]
    core = start_core_server(registry, services=[*CORE_SERVICES, *on_core], auth=auth)
    store = SqliteOnlineStore(SqliteConfig(path=str(folder / "online.db")))
    serving = start_serving(ServingService(registry, store, "alpha"), auth=auth)
    remote = RemoteRegistry(core.address, security=ClientSecurity(token="plk_serving"))
    remote_serving = start_serving(ServingService(remote, store, "alpha"), auth=auth)
    jobs = start_jobservice_server(job_service, services=JOB_SERVICES, auth=auth)
    try:
        yield Stack(registry, core.address, serving, remote_serving, jobs.address)
    finally:
        jobs.stop(None)
        remote_serving.stop(None)
        serving.stop(None)
        remote.close()
        core.stop(None)
        job_service.close()
        store.close()
        registry.close()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _denied_entries(stack: Stack, method: str) -> list[AuditEntry]:
    return [
        e
        for e in stack.registry.audit_log(limit=1000)
        if e.action == "permission_denied" and str(e.change["method"]).startswith(method)
    ]


def _refused(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code()  # type: ignore[attr-defined, no-any-return]


def test_a_denied_core_call_is_in_the_audit_log(stack: Stack) -> None:
    with grpc.insecure_channel(stack.core) as channel:
        stub = core_grpc.CoreServiceStub(channel)
        request = core_pb.AllowLocationRequest(project="alpha", location="/data/elsewhere")
        assert (
            _refused(
                lambda: stub.AllowLocation(request, metadata=_bearer("plk_reader"), timeout=10)
            )
            is grpc.StatusCode.PERMISSION_DENIED
        )
    (entry,) = _wait_for(stack, "/potluck.core.v1.CoreService/AllowLocation")
    assert (entry.actor, entry.project, entry.target) == ("token:reader", "alpha", "admin")


def test_a_denied_job_service_call_is_in_the_audit_log(stack: Stack) -> None:
    with grpc.insecure_channel(stack.core) as channel:  # potluck core --job-service
        stub = jobs_grpc.JobServiceStub(channel)
        request = jobs_pb.StartOfflineToOnlineRequest(project="beta", table="t")
        assert (
            _refused(
                lambda: stub.StartOfflineToOnline(
                    request, metadata=_bearer("plk_reader"), timeout=10
                )
            )
            is grpc.StatusCode.PERMISSION_DENIED
        )
    (entry,) = _wait_for(stack, "/potluck.jobservice.v1.JobService/StartOfflineToOnline")
    assert (entry.actor, entry.project, entry.target) == ("token:reader", "beta", "run_jobs")


def test_a_denied_call_to_a_job_service_of_its_own_is_in_the_audit_log(stack: Stack) -> None:
    with grpc.insecure_channel(stack.jobs) as channel:  # potluck jobservice
        stub = jobs_grpc.JobServiceStub(channel)
        request = jobs_pb.JobRequest(project="beta", job_id="j1")
        assert (
            _refused(lambda: stub.CancelJob(request, metadata=_bearer("plk_reader"), timeout=10))
            is grpc.StatusCode.PERMISSION_DENIED
        )
    (entry,) = _wait_for(stack, "/potluck.jobservice.v1.JobService/CancelJob")
    assert (entry.actor, entry.project, entry.target) == ("token:reader", "beta", "run_jobs")


def test_denied_serving_calls_are_audited_and_unauthenticated_ones_counted(stack: Stack) -> None:
    body = {"features": ["alpha/stats:x"], "entities": {"driver_id": [1]}}
    for server in (stack.serving, stack.remote_serving):
        with httpx.Client(base_url=server.http_url, timeout=10) as http:
            denied = http.post(
                "/get-online-features", json=body, headers={"authorization": "Bearer plk_reader"}
            )
            assert denied.status_code == 403
            assert http.post("/get-online-features", json=body).status_code == 401
            metrics = http.get("/metrics", headers={"authorization": "Bearer plk_admin"}).text
        assert (
            'potluck_serving_errors_total{code="unauthenticated",'
            'endpoint="http:/get-online-features"} 1.0'
        ) in metrics
    local, remote = sorted(
        _wait_for(stack, "POST /get-online-features", count=2), key=lambda e: len(str(e.change))
    )
    # a denied HTTP read names the body's project, for callers allowed every project too
    assert (local.actor, local.project, local.target) == ("token:reader", "alpha", "read_online")
    assert local.change == {"method": "POST /get-online-features"}
    assert remote.actor == "token:reader"
    assert remote.change == {"method": "POST /get-online-features", "reported_by": "token:serving"}


def test_list_audit_gives_an_admin_of_some_projects_only_their_entries(stack: Stack) -> None:
    with grpc.insecure_channel(stack.core) as channel:
        stub = core_grpc.CoreServiceStub(channel)
        stub.AllowLocation(
            core_pb.AllowLocationRequest(project="beta", location="/data/shared"),
            metadata=_bearer("plk_beta_admin"),
            timeout=10,
        )
        scoped = stub.ListAudit(
            core_pb.ListAuditRequest(limit=1000), metadata=_bearer("plk_beta_admin"), timeout=10
        )
        everything = stub.ListAudit(
            core_pb.ListAuditRequest(limit=1000), metadata=_bearer("plk_admin"), timeout=10
        )
        assert (
            _refused(
                lambda: stub.ListAudit(
                    core_pb.ListAuditRequest(project="alpha"),
                    metadata=_bearer("plk_beta_admin"),
                    timeout=10,
                )
            )
            is grpc.StatusCode.PERMISSION_DENIED
        )
    assert {e.project for e in scoped.entries} == {"beta"}
    assert ("allow_location", "/data/shared") in {(e.action, e.target) for e in scoped.entries}
    assert {"alpha", "beta"} <= {e.project for e in everything.entries}


def _wait_for(stack: Stack, method: str, count: int = 1) -> list[AuditEntry]:
    """The denial entries of ``method``, once ``count`` have been written (in the background)."""
    deadline = threading.Event()
    for _ in range(100):
        found = _denied_entries(stack, method)
        if len(found) >= count:
            return found
        deadline.wait(0.05)
    return _denied_entries(stack, method)


# ---- isolation default -----------------------------------------------------------------------


def test_auth_with_isolation_off_warns_of_cross_project_sources() -> None:
    on = AuthSettings(tokens=TOKENS)
    assert isolation_warning(False, on) == (
        "authentication is on but project data isolation is off (data_isolation: "
        "off): a feature table of one project may name another project's folder as its "
        "source and read or overwrite that project's data; remove data_isolation: off "
        "(docs/security.md)"
    )
    assert isolation_warning(True, on) is None
    assert isolation_warning(False, None) is None
