"""Cancelling a job needs ``run_jobs`` on its project on every path, whatever the job's state.

The paths: the CLI and the SDK (``Client.cancel_job``, ``Job.cancel``) through Core alone (no Job
Service: the job record is read and the cancel request written through Core), the same through
potluck's Job Service, Feast 0.9's ``feast.core.JobService/CancelJob``, and Core's RPCs for job
records. Each with a read-only token and a jobs token, on a job that has ended and a running one.
A job that has ended is never written to; a caller without ``run_jobs`` is refused as it is for a
running job (Core's ``AuthorizeJobControl`` checks it and changes nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
from _auth_support import token_entry
from typer.testing import CliRunner

from potluck import Client, Entity, Feature, FeatureTable, ValueType
from potluck._proto.feast.core import JobService_pb2 as feast_jobs_pb
from potluck._proto.feast.core import JobService_pb2_grpc as feast_jobs_grpc
from potluck._proto.potluck.core.v1 import core_service_pb2 as core_pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as core_grpc
from potluck.auth.settings import AuthSettings
from potluck.cli.main import app
from potluck.compat.feast09 import JOB_SERVICES
from potluck.config import load_settings
from potluck.errors import NotFoundError, PermissionDeniedError
from potluck.ingestion.jobs import CANCEL_SUFFIX, Job, JobSpec, JobStatus, save_job
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
STATS = FeatureTable(
    name="stats",
    entities=("driver_id",),
    features=(Feature(name="x", value_type=ValueType.INT64),),
)
TOKENS = [
    token_entry("reader", "plk_reader", ["read_online", "read_definitions"], None),
    token_entry("jobs", "plk_jobs", ["read_definitions", "run_jobs"], None),
    token_entry("beta-jobs", "plk_beta_jobs", ["read_definitions", "run_jobs"], ["beta"]),
]
ENDED = "20240502T001000123456Z-aaaaaaaa"
RUNNING = "20240503T090000000000Z-eeeeeeee"
DENIED = "permission denied: 'reader' lacks the 'run_jobs' permission on project 'alpha'"
runner = CliRunner()


@dataclass(frozen=True)
class Stack:
    registry: SqlRegistry
    core: str
    jobs: str
    folder: Path


def _job(job_id: str, status: JobStatus, at: datetime, **fields: Any) -> Job:
    return Job(
        id=job_id,
        spec=JobSpec(project="alpha", table="stats"),
        engine="local",
        status=status,
        created_at=at,
        started_at=at,
        updated_at=at,
        **fields,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("job-control")
    auth = AuthSettings(tokens=TOKENS)
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    registry.apply("alpha", [DRIVER, STATS])
    registry.create_project("beta")
    now = datetime.now(timezone.utc)
    at = datetime(2024, 5, 2, tzinfo=timezone.utc)
    save_job(registry, _job(ENDED, JobStatus.SUCCEEDED, at, finished_at=at + timedelta(minutes=2)))
    save_job(
        registry,
        _job(RUNNING, JobStatus.RUNNING, now, heartbeat_timeout=timedelta(hours=1)),
    )
    (folder / "service.yaml").write_text(
        f"project: alpha\nregistry: sqlite:///{folder / 'registry.db'}\n"
        f"online_store: {{type: sqlite, path: {folder / 'online.db'}}}\n"
    )
    job_service = JobService(load_settings(folder / "service.yaml", environ={}))
    core = start_core_server(registry, auth=auth)
    jobs = start_jobservice_server(job_service, services=JOB_SERVICES, auth=auth)
    try:
        yield Stack(registry, core.address, jobs.address, folder)
    finally:
        jobs.stop(None)
        job_service.close()
        core.stop(None)
        registry.close()


def _config(stack: Stack, token: str, *, job_service: bool) -> Path:
    """A client's settings: Core alone, or Core and the Job Service, with ``token``."""
    settings: dict[str, Any] = {"project": "alpha", "core_url": stack.core, "token": token}
    if job_service:
        settings["job_service_url"] = stack.jobs
    path = stack.folder / f"{token}-{'jobservice' if job_service else 'core'}.yaml"
    path.write_text(json.dumps(settings))
    return path


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of a CLI command; stderr without the lines the in-process
    servers log (``warning: refused ...``), which a real CLI process does not print."""
    result = runner.invoke(app, ["--config", str(config), *args], env={"COLUMNS": "200"})
    err = "".join(
        line
        for line in result.stderr.splitlines(keepends=True)
        if not line.startswith("warning: refused ")
    )
    return result.exit_code, result.stdout, err


def _no_cancel_request(stack: Stack, job_id: str) -> bool:
    try:
        stack.registry.get_job("alpha", job_id + CANCEL_SUFFIX)
    except NotFoundError:
        return True
    return False


PATHS = [False, True]
PATH_IDS = ["through Core", "through the Job Service"]


@pytest.mark.parametrize("job_service", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("job_id", [ENDED, RUNNING], ids=["ended", "running"])
def test_the_cli_refuses_a_read_only_token_whatever_the_jobs_state(
    stack: Stack, job_id: str, job_service: bool
) -> None:
    config = _config(stack, "plk_reader", job_service=job_service)
    assert _cli(config, "jobs", "cancel", job_id[:12]) == (1, "", f"error: {DENIED}\n")
    assert _no_cancel_request(stack, job_id)


@pytest.mark.parametrize("job_service", PATHS, ids=PATH_IDS)
def test_the_cli_tells_a_jobs_token_that_an_ended_job_has_ended(
    stack: Stack, job_service: bool
) -> None:
    config = _config(stack, "plk_jobs", job_service=job_service)
    assert _cli(config, "jobs", "cancel", ENDED[:12]) == (
        0,
        f"job {ENDED} has already ended with status SUCCEEDED; nothing to cancel\n",
        "",
    )
    assert _no_cancel_request(stack, ENDED)


@pytest.mark.parametrize("job_service", PATHS, ids=PATH_IDS)
def test_the_cli_asks_a_running_job_to_stop_for_a_jobs_token(
    stack: Stack, job_service: bool
) -> None:
    config = _config(stack, "plk_jobs", job_service=job_service)
    assert _cli(config, "jobs", "cancel", RUNNING[:12]) == (
        0,
        f"cancel requested for job {RUNNING} (status RUNNING)\n",
        "",
    )
    assert stack.registry.get_job("alpha", RUNNING + CANCEL_SUFFIX).body["cancel_for"] == RUNNING


@pytest.mark.parametrize("job_service", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("job_id", [ENDED, RUNNING], ids=["ended", "running"])
def test_the_sdk_refuses_a_read_only_token_whatever_the_jobs_state(
    stack: Stack, job_id: str, job_service: bool
) -> None:
    config = _config(stack, "plk_reader", job_service=job_service)
    with Client(settings=load_settings(config, environ={})) as client:
        handle = client.get_job(job_id)
        for cancel in (lambda: client.cancel_job(job_id), handle.cancel):
            with pytest.raises(PermissionDeniedError) as denied:
                cancel()
            assert denied.value.message == DENIED
            assert (denied.value.permission, denied.value.project) == ("run_jobs", "alpha")


@pytest.mark.parametrize("job_service", PATHS, ids=PATH_IDS)
def test_the_sdk_leaves_an_ended_job_as_it_is_for_a_jobs_token(
    stack: Stack, job_service: bool
) -> None:
    config = _config(stack, "plk_jobs", job_service=job_service)
    with Client(settings=load_settings(config, environ={})) as client:
        assert client.cancel_job(ENDED).record().status is JobStatus.SUCCEEDED
        client.get_job(ENDED).cancel()
    assert _no_cancel_request(stack, ENDED)


def test_cores_job_rpcs_need_run_jobs_and_authorize_job_control_changes_nothing(
    stack: Stack,
) -> None:
    def call(method: str, request: Any, token: str) -> grpc.StatusCode:
        with grpc.insecure_channel(stack.core) as channel:
            rpc = getattr(core_grpc.CoreServiceStub(channel), method)
            try:
                rpc(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            except grpc.RpcError as exc:
                assert exc.details() in (  # type: ignore[attr-defined]
                    DENIED,
                    "permission denied: 'beta-jobs' lacks the 'run_jobs' permission on project "
                    "'alpha'",
                )
                return exc.code()  # type: ignore[attr-defined, no-any-return]
        return grpc.StatusCode.OK

    authorize = core_pb.AuthorizeJobControlRequest(project="alpha")
    request = core_pb.Job(project="alpha", id="j-put", body_json=json.dumps({"cancel_for": ENDED}))
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert call("AuthorizeJobControl", authorize, "plk_reader") is denied
    assert call("AuthorizeJobControl", authorize, "plk_beta_jobs") is denied
    assert call("AuthorizeJobControl", authorize, "plk_jobs") is grpc.StatusCode.OK
    assert call("PutJob", request, "plk_reader") is denied
    assert call("PutJob", request, "plk_beta_jobs") is denied
    assert call("GetJob", core_pb.GetJobRequest(project="alpha", id=ENDED), "plk_reader") is (
        grpc.StatusCode.OK
    )
    assert [r.id for r in stack.registry.list_jobs("alpha") if r.id == "j-put"] == []


@pytest.mark.parametrize("job_id", [ENDED, RUNNING], ids=["ended", "running"])
def test_feasts_cancel_job_needs_run_jobs_whatever_the_jobs_state(
    stack: Stack, job_id: str
) -> None:
    with grpc.insecure_channel(stack.jobs) as channel:
        stub = feast_jobs_grpc.JobServiceStub(channel)
        request = feast_jobs_pb.CancelJobRequest(job_id=job_id)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CancelJob(request, metadata=(("authorization", "Bearer plk_reader"),), timeout=10)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert refused.value.details() == (  # type: ignore[attr-defined]
            "permission denied: 'reader' lacks the 'run_jobs' permission"
        )
        with pytest.raises(grpc.RpcError) as hidden:  # run_jobs on beta only: alpha's is unseen
            stub.CancelJob(
                request, metadata=(("authorization", "Bearer plk_beta_jobs"),), timeout=10
            )
        assert hidden.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert hidden.value.details() == f"job {job_id} not found in any project"  # type: ignore[attr-defined]
        stub.CancelJob(request, metadata=(("authorization", "Bearer plk_jobs"),), timeout=10)
    if job_id == ENDED:
        assert _no_cancel_request(stack, ENDED)
    else:
        assert (
            stack.registry.get_job("alpha", RUNNING + CANCEL_SUFFIX).body["cancel_for"] == RUNNING
        )
