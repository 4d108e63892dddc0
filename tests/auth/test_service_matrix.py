"""Every service x every permission x every kind of caller, over plain and TLS connections.

One server set per transport (module-scoped): Core (potluck's API and Feast 0.9's on one port),
Online Serving (gRPC, V2 included, and HTTP) and the Job Service (potluck's API and Feast 0.9's
``feast.core.JobService`` on one port; both are also served on Core's port, as ``potluck core
--job-service`` does). Each call is made with each caller's token;
the outcome is ``allowed`` (the auth layer let it through: the handler may still answer an
error of its own, such as NOT_FOUND), ``UNAUTHENTICATED`` or ``PERMISSION_DENIED``
(``UNIMPLEMENTED`` would mean the server does not serve the method at all).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest
from _auth_support import AUDIENCE, ISSUER, Pki, Signer, make_pki, token_entry, write_jwks

from potluck import Entity, Feature, FeatureTable, ValueType
from potluck._proto.feast.core import CoreService_pb2 as feast_pb
from potluck._proto.feast.core import CoreService_pb2_grpc as feast_grpc
from potluck._proto.feast.core import JobService_pb2 as feast_jobs_pb
from potluck._proto.feast.core import JobService_pb2_grpc as feast_jobs_grpc
from potluck._proto.feast.serving import OnlineFeaturesV2_pb2 as v2_pb
from potluck._proto.feast.serving import ServingService_pb2 as serving_pb
from potluck._proto.feast.serving import ServingService_pb2_grpc as serving_grpc
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck._proto.potluck.core.v1 import core_service_pb2 as core_pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as core_grpc
from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as jobs_pb
from potluck._proto.potluck.jobservice.v1 import job_service_pb2_grpc as jobs_grpc
from potluck.auth.settings import AuthSettings, JwtSettings, TlsSettings
from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES, SERVING_SERVICES
from potluck.config import load_settings
from potluck.jobservice.server import add_job_service, start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import start_serving
from potluck.serving.service import ServingService

PERMISSIONS = ["read_online", "read_definitions", "apply", "run_jobs", "record_denials", "admin"]
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
STATS = FeatureTable(
    name="stats",
    entities=("driver_id",),
    features=(Feature(name="x", value_type=ValueType.INT64),),
    max_age=timedelta(days=1),
)


@dataclass(frozen=True)
class Caller:
    """A caller and what the model says it may do (``None``: it is not authenticated)."""

    authorization: str | None
    permissions: frozenset[str] | None
    projects: frozenset[str] | None = None


SIGNER = Signer("k1")


def _callers() -> dict[str, Caller]:
    callers = {
        "no token": Caller(None, None),
        "bad token": Caller("Bearer plk_not-a-token", None),
        "not bearer": Caller("Basic dXNlcjpwdw==", None),
        "expired JWT": Caller(f"Bearer {SIGNER.token(ttl=-120, permissions=['admin'])}", None),
        "wrong audience": Caller(
            f"Bearer {SIGNER.token(aud='someone-else', permissions=['admin'])}", None
        ),
        "other project": Caller("Bearer plk_beta_admin", frozenset({"admin"}), frozenset({"beta"})),
        "read-only": Caller("Bearer plk_read_only", frozenset({"read_online", "read_definitions"})),
        "admin": Caller("Bearer plk_admin", frozenset({"admin"})),
        "JWT apply on alpha": Caller(
            "Bearer "
            + SIGNER.token(permissions="apply read_definitions openid", projects=["alpha"]),
            frozenset({"apply", "read_definitions"}),
            frozenset({"alpha"}),
        ),
    }
    for permission in PERMISSIONS:
        callers[f"only {permission} on alpha"] = Caller(
            f"Bearer plk_only_{permission}", frozenset({permission}), frozenset({"alpha"})
        )
    return callers


CALLERS = _callers()

TOKENS = [
    token_entry("beta-admin", "plk_beta_admin", ["admin"], ["beta"]),
    token_entry("reader", "plk_read_only", ["read_online", "read_definitions"], None),
    token_entry("admin", "plk_admin", ["admin"], None),
    *(token_entry(f"only-{p}", f"plk_only_{p}", [p], ["alpha"]) for p in PERMISSIONS),
]


@dataclass
class Servers:
    core: str
    grpc: str
    http: str
    jobs: str
    pki: Pki | None

    def channel(self, address: str) -> grpc.Channel:
        if self.pki is None:
            return grpc.insecure_channel(address)
        roots = self.pki.ca_file.read_bytes()
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))


@pytest.fixture(scope="module", params=["plain", "tls"])
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp(request.param)
    pki = make_pki(folder / "pki") if request.param == "tls" else None
    write_jwks(folder / "jwks.json", SIGNER)
    auth = AuthSettings(
        tokens=TOKENS,
        jwt=JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=folder / "jwks.json"),
        tls=None if pki is None else TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file),
    )
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    for project in ("alpha", "beta"):
        registry.apply(project, [DRIVER, STATS])
    store = SqliteOnlineStore(SqliteConfig(path=str(folder / "online.db")))
    (folder / "potluck.yaml").write_text(
        f"project: alpha\nregistry: sqlite:///{folder / 'registry.db'}\n"
        f"online_store: {{type: sqlite, path: {folder / 'jobs-online.db'}}}\n"
    )
    job_service = JobService(load_settings(folder / "potluck.yaml", environ={}))

    def on_core(add: Callable[[grpc.Server, JobService], None]) -> Callable[..., None]:
        return lambda server, _registry: add(server, job_service)

    job_services_on_core = [on_core(add) for add in (add_job_service, *JOB_SERVICES)]
    core = start_core_server(registry, services=[*CORE_SERVICES, *job_services_on_core], auth=auth)
    serving = start_serving(
        ServingService(registry, store, "alpha"), services=SERVING_SERVICES, auth=auth
    )
    jobs = start_jobservice_server(job_service, services=JOB_SERVICES, auth=auth)
    try:
        yield Servers(core.address, serving.grpc_address, serving.http_url, jobs.address, pki)
    finally:
        jobs.stop(None)
        job_service.close()
        serving.stop(None)
        core.stop(None)
        store.close()
        registry.close()


# ---- the calls: (permission, the project it acts on or None, call) ---------------------------

Metadata = tuple[tuple[str, str], ...]
Call = Callable[[Servers, Metadata], Any]


def _core(method: str, request: Any) -> Call:
    def call(servers: Servers, md: Metadata) -> Any:
        with servers.channel(servers.core) as channel:
            return getattr(core_grpc.CoreServiceStub(channel), method)(
                request, metadata=md, timeout=10
            )

    return call


def _feast(method: str, request: Any) -> Call:
    def call(servers: Servers, md: Metadata) -> Any:
        with servers.channel(servers.core) as channel:
            return getattr(feast_grpc.CoreServiceStub(channel), method)(
                request, metadata=md, timeout=10
            )

    return call


def _serving(method: str, request: Any) -> Call:
    def call(servers: Servers, md: Metadata) -> Any:
        with servers.channel(servers.grpc) as channel:
            stub = serving_grpc.ServingServiceStub(channel)
            if method == "GetOnlineFeaturesV2":
                rpc = channel.unary_unary(
                    "/feast.serving.ServingService/GetOnlineFeaturesV2",
                    request_serializer=v2_pb.GetOnlineFeaturesRequestV2.SerializeToString,
                    response_deserializer=v2_pb.GetOnlineFeaturesResponseV2.FromString,
                )
                return rpc(request, metadata=md, timeout=10)
            return getattr(stub, method)(request, metadata=md, timeout=10)

    return call


def _jobs(method: str, request: Any) -> Call:
    def call(servers: Servers, md: Metadata) -> Any:
        with servers.channel(servers.jobs) as channel:
            return getattr(jobs_grpc.JobServiceStub(channel), method)(
                request, metadata=md, timeout=10
            )

    return call


def _feast_jobs(method: str, request: Any) -> Call:
    def call(servers: Servers, md: Metadata) -> Any:
        with servers.channel(servers.jobs) as channel:
            return getattr(feast_jobs_grpc.JobServiceStub(channel), method)(
                request, metadata=md, timeout=10
            )

    return call


def _http(method: str, path: str, body: Any = None) -> Call:
    def call(servers: Servers, md: Metadata) -> Any:
        verify: Any = (
            ssl.create_default_context(cafile=servers.pki.ca_file) if servers.pki else False
        )
        headers = {k: v for k, v in md}
        with httpx.Client(base_url=servers.http, verify=verify, timeout=10) as http:
            return http.request(method, path, json=body, headers=headers)

    return call


CALLS: dict[str, tuple[str | None, str | None, Call]] = {
    "core ListEntities": (
        "read_definitions",
        "alpha",
        _core("ListEntities", core_pb.ListRequest(project="alpha")),
    ),
    "core GetJob": (
        "read_definitions",
        "alpha",
        _core("GetJob", core_pb.GetJobRequest(project="alpha", id="nope")),
    ),
    "core ListProjects": (
        "read_definitions",
        None,
        _core("ListProjects", core_pb.ListProjectsRequest()),
    ),
    "core Apply (plan)": (
        "read_definitions",
        "alpha",
        _core("Plan", core_pb.ApplyRequest(project="alpha")),
    ),
    "core DeleteFeatureTable": (
        "apply",
        "alpha",
        _core("DeleteFeatureTable", core_pb.GetRequest(project="alpha", name="nope")),
    ),
    "core PutJob": (
        "run_jobs",
        "alpha",
        _core("PutJob", core_pb.Job(project="alpha", id="j1", body_json="{}")),
    ),
    "core AuthorizeJobControl": (
        "run_jobs",
        "alpha",
        _core("AuthorizeJobControl", core_pb.AuthorizeJobControlRequest(project="alpha")),
    ),
    "core CreateProject": (
        "admin",
        "alpha",
        _core("CreateProject", core_pb.ProjectRequest(name="alpha")),
    ),
    "core AllowLocation": (
        "admin",
        "alpha",
        _core("AllowLocation", core_pb.AllowLocationRequest(project="alpha", location="/x")),
    ),
    "core ListAllowedLocations": (
        "read_definitions",
        "alpha",
        _core("ListAllowedLocations", core_pb.ProjectRequest(name="alpha")),
    ),
    "core ListAudit": (
        "admin",
        "alpha",
        _core("ListAudit", core_pb.ListAuditRequest(project="alpha")),
    ),
    "core ListAudit (every project: narrowed to the caller's)": (
        "admin",
        None,
        _core("ListAudit", core_pb.ListAuditRequest()),
    ),
    "core RecordDenial": (
        "record_denials",
        "alpha",
        _core(
            "RecordDenial",
            core_pb.RecordDenialRequest(
                actor="token:someone",
                project="alpha",
                permission="apply",
                method="/potluck.core.v1.CoreService/Apply",
            ),
        ),
    ),
    "feast GetFeastCoreVersion": (
        "read_definitions",
        None,
        _feast("GetFeastCoreVersion", feast_pb.GetFeastCoreVersionRequest()),
    ),
    "feast GetFeatureTable": (
        "read_definitions",
        "alpha",
        _feast("GetFeatureTable", feast_pb.GetFeatureTableRequest(project="alpha", name="stats")),
    ),
    "feast DeleteFeatureTable": (
        "apply",
        "alpha",
        _feast(
            "DeleteFeatureTable", feast_pb.DeleteFeatureTableRequest(project="alpha", name="nope")
        ),
    ),
    "feast CreateProject": (
        "admin",
        "alpha",
        _feast("CreateProject", feast_pb.CreateProjectRequest(name="alpha")),
    ),
    "serving GetFeastServingInfo": (
        "read_online",
        None,
        _serving("GetFeastServingInfo", serving_pb.GetFeastServingInfoRequest()),
    ),
    "serving GetOnlineFeatures": (
        "read_online",
        "alpha",
        _serving(
            "GetOnlineFeatures",
            serving_pb.GetOnlineFeaturesRequest(
                features=serving_pb.FeatureList(val=["alpha/stats:x"]),
                entities={"driver_id": value_pb.RepeatedValue(val=[value_pb.Value(int64_val=1)])},
            ),
        ),
    ),
    "serving GetOnlineFeaturesV2": (
        "read_online",
        "alpha",
        _serving(
            "GetOnlineFeaturesV2",
            v2_pb.GetOnlineFeaturesRequestV2(
                project="alpha",
                features=[v2_pb.FeatureReferenceV2(feature_table="stats", name="x")],
                entity_rows=[
                    v2_pb.GetOnlineFeaturesRequestV2.EntityRow(
                        fields={"driver_id": value_pb.Value(int64_val=1)}
                    )
                ],
            ),
        ),
    ),
    "http get-online-features": (
        "read_online",
        "alpha",
        _http(
            "POST",
            "/get-online-features",
            {"features": ["alpha/stats:x"], "entities": {"driver_id": [1]}},
        ),
    ),
    "http get-online-features (default project)": (
        "read_online",
        "alpha",
        _http(
            "POST",
            "/get-online-features",
            {"features": ["stats:x"], "entities": {"driver_id": [1]}},
        ),
    ),
    "jobs StartOfflineToOnline": (
        "run_jobs",
        "alpha",
        _jobs(
            "StartOfflineToOnline",
            jobs_pb.StartOfflineToOnlineRequest(project="alpha", table="nope"),
        ),
    ),
    "jobs StartStreamToOnline": (
        "run_jobs",
        "alpha",
        _jobs(
            "StartStreamToOnline", jobs_pb.StartStreamToOnlineRequest(project="alpha", table="nope")
        ),
    ),
    "jobs GetHistoricalFeatures": (
        "run_jobs",
        "alpha",
        _jobs("GetHistoricalFeatures", jobs_pb.GetHistoricalFeaturesRequest(project="alpha")),
    ),
    "jobs CancelJob": (
        "run_jobs",
        "alpha",
        _jobs("CancelJob", jobs_pb.JobRequest(project="alpha", job_id="nope")),
    ),
    "jobs ScheduleOfflineToOnline": (
        "run_jobs",
        "alpha",
        _jobs(
            "ScheduleOfflineToOnline",
            jobs_pb.ScheduleRequest(project="alpha", table="nope", cron="0 * * * *"),
        ),
    ),
    "jobs Unschedule": (
        "run_jobs",
        "alpha",
        _jobs("Unschedule", jobs_pb.UnscheduleRequest(project="alpha", table="nope")),
    ),
    "jobs ListJobs": (
        "read_definitions",
        "alpha",
        _jobs("ListJobs", jobs_pb.ListJobsRequest(project="alpha")),
    ),
    "jobs ListJobs (every project: the default one)": (
        "read_definitions",
        "default",
        _jobs("ListJobs", jobs_pb.ListJobsRequest()),
    ),
    "jobs GetJob": (
        "read_definitions",
        "alpha",
        _jobs("GetJob", jobs_pb.JobRequest(project="alpha", job_id="nope")),
    ),
    "jobs ListSchedules": (
        "read_definitions",
        "alpha",
        _jobs("ListSchedules", jobs_pb.ListSchedulesRequest(project="alpha")),
    ),
    "feast jobs StartOfflineToOnlineIngestionJob": (
        "run_jobs",
        "alpha",
        _feast_jobs(
            "StartOfflineToOnlineIngestionJob",
            feast_jobs_pb.StartOfflineToOnlineIngestionJobRequest(
                project="alpha", table_name="nope"
            ),
        ),
    ),
    "feast jobs StartOfflineToOnlineIngestionJob (default project)": (
        "run_jobs",
        "default",
        _feast_jobs(
            "StartOfflineToOnlineIngestionJob",
            feast_jobs_pb.StartOfflineToOnlineIngestionJobRequest(table_name="nope"),
        ),
    ),
    "feast jobs StartStreamToOnlineIngestionJob": (
        "run_jobs",
        "alpha",
        _feast_jobs(
            "StartStreamToOnlineIngestionJob",
            feast_jobs_pb.StartStreamToOnlineIngestionJobRequest(
                project="alpha", table_name="nope"
            ),
        ),
    ),
    "feast jobs GetHistoricalFeatures": (
        "run_jobs",
        "alpha",
        _feast_jobs(
            "GetHistoricalFeatures",
            feast_jobs_pb.GetHistoricalFeaturesRequest(project="alpha", output_format="avro"),
        ),
    ),
    "feast jobs CancelJob": (
        "run_jobs",
        None,
        _feast_jobs("CancelJob", feast_jobs_pb.CancelJobRequest(job_id="nope")),
    ),
    "feast jobs ListJobs": (
        "read_definitions",
        None,
        _feast_jobs("ListJobs", feast_jobs_pb.ListJobsRequest(include_terminated=True)),
    ),
    "feast jobs GetJob": (
        "read_definitions",
        None,
        _feast_jobs("GetJob", feast_jobs_pb.GetJobRequest(job_id="nope")),
    ),
    "http metrics": ("read_online", None, _http("GET", "/metrics")),
    "http health": ("read_online", None, _http("GET", "/health")),
    "http health/live": (None, None, _http("GET", "/health/live")),
}


def _on_core_port(call: Call) -> Call:
    """``call`` made to Core's port, which serves the Job Service too (``--job-service``)."""
    return lambda servers, md: call(replace(servers, jobs=servers.core), md)


CALLS.update(
    {
        f"{name} (on Core's port)": (permission, project, _on_core_port(call))
        for name, (permission, project, call) in CALLS.items()
        if name.startswith(("jobs ", "feast jobs "))
    }
)


def expected(caller: Caller, permission: str | None, project: str | None) -> str:
    if permission is None:
        return "allowed"
    if caller.permissions is None:
        return "UNAUTHENTICATED"
    held = permission in caller.permissions or "admin" in caller.permissions
    in_project = project is None or caller.projects is None or project in caller.projects
    return "allowed" if held and in_project else "PERMISSION_DENIED"


def outcome(call: Call, servers: Servers, caller: Caller) -> str:
    md: Metadata = (
        () if caller.authorization is None else (("authorization", caller.authorization),)
    )
    try:
        result = call(servers, md)
    except grpc.RpcError as exc:
        code = exc.code()  # type: ignore[attr-defined]
        refusals = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        if (
            code in refusals or code == grpc.StatusCode.UNIMPLEMENTED
        ):  # no such service: not "allowed"
            return code.name
        return "allowed"
    if isinstance(result, httpx.Response):
        return {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(result.status_code, "allowed")
    return "allowed"


@pytest.mark.parametrize("call_name", list(CALLS))
def test_every_caller_gets_what_its_token_allows(servers: Servers, call_name: str) -> None:
    permission, project, call = CALLS[call_name]
    got = {name: outcome(call, servers, caller) for name, caller in CALLERS.items()}
    want = {name: expected(caller, permission, project) for name, caller in CALLERS.items()}
    assert got == want


def test_feasts_job_calls_by_id_see_only_the_callers_projects(servers: Servers) -> None:
    """Feast 0.9's GetJob, CancelJob and ListJobs name no project: a caller limited to some
    projects finds no job of another project (NOT_FOUND), rather than acting on it."""
    admin = (("authorization", "Bearer plk_admin"),)
    started = _jobs(  # a job of project beta (its entity file is missing: it fails, and stays)
        "GetHistoricalFeatures",
        jobs_pb.GetHistoricalFeaturesRequest(
            project="beta",
            feature_refs=["stats:x"],
            entity_source="/nonexistent/entities.parquet",
            output_location="/nonexistent/out",
        ),
    )(servers, admin)
    job_id = started.job.id

    def as_caller(token: str, call: Call) -> Any:
        return call(servers, (("authorization", f"Bearer {token}"),))

    for token, method, request in [
        ("plk_only_read_definitions", "GetJob", feast_jobs_pb.GetJobRequest(job_id=job_id)),
        ("plk_only_run_jobs", "CancelJob", feast_jobs_pb.CancelJobRequest(job_id=job_id)),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            as_caller(token, _feast_jobs(method, request))
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert refused.value.details() == (  # type: ignore[attr-defined]
            f"job {job_id} not found in any project"
        )
    listed = as_caller(
        "plk_only_read_definitions",
        _feast_jobs("ListJobs", feast_jobs_pb.ListJobsRequest(include_terminated=True)),
    )
    assert job_id not in [job.id for job in listed.jobs]
    for token in ("plk_read_only", "plk_admin"):  # every project
        found = as_caller(token, _feast_jobs("GetJob", feast_jobs_pb.GetJobRequest(job_id=job_id)))
        assert found.job.id == job_id
        listed = as_caller(
            token, _feast_jobs("ListJobs", feast_jobs_pb.ListJobsRequest(include_terminated=True))
        )
        assert job_id in [job.id for job in listed.jobs]
