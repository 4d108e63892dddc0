"""``record_denials``: the one permission a server's token needs to report denials to Core.

It grants ``RecordDenial`` and nothing else (every other method of every service is refused);
``admin`` still grants it. Tokens files, JWT claims and ``potluck auth token create`` accept it.
A Serving in front of a remote Core whose token holds ``read_definitions`` and
``record_denials`` (what docs/security.md says it needs) reports a denial that Core records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from _auth_support import AUDIENCE, ISSUER, Signer, token_entry, write_jwks
from typer.testing import CliRunner

from potluck._proto.potluck.core.v1 import core_service_pb2 as core_pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as core_grpc
from potluck.auth.grpc import ClientSecurity
from potluck.auth.identity import Caller, Permission
from potluck.auth.jwt_verifier import JwtVerifier
from potluck.auth.rules import (
    CORE_RULES,
    FEAST_CORE_RULES,
    JOB_SERVICE_RULES,
    SERVING_RULES,
)
from potluck.auth.settings import AuthSettings, JwtSettings
from potluck.auth.tokens import read_tokens_file
from potluck.cli.main import app
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.registry.base import AuditEntry
from potluck.registry.remote import RemoteRegistry
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import start_serving
from potluck.serving.service import ServingService

RECORD_DENIAL = "/potluck.core.v1.CoreService/RecordDenial"
APPLY = "/potluck.core.v1.CoreService/Apply"
EVERY_RULE = {**CORE_RULES, **FEAST_CORE_RULES, **SERVING_RULES, **JOB_SERVICE_RULES}
TOKENS = [
    token_entry("serving", "plk_serving", ["read_definitions", "record-denials"], None),
    token_entry("reporter", "plk_reporter", ["record_denials"], None),
    token_entry("reader", "plk_reader", ["read_online", "read_definitions"], None),
    token_entry("admin", "plk_admin", ["admin"], None),
]


@pytest.mark.parametrize("project", ["alpha", None])
def test_record_denials_grants_record_denial_and_no_other_method(project: str | None) -> None:
    reporter = Caller("reporter", frozenset({Permission.RECORD_DENIALS}))
    allowed = sorted(m for m, r in EVERY_RULE.items() if reporter.may(r.permission, project))
    assert allowed == [RECORD_DENIAL]
    admin = Caller("admin", frozenset({Permission.ADMIN}))
    assert admin.may(CORE_RULES[RECORD_DENIAL].permission, project)


def test_tokens_files_and_jwt_claims_accept_record_denials(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "- {name: serving, hash: 'sha256:" + "0" * 64 + "', permissions: [Record-Denials]}\n"
    )
    [entry] = read_tokens_file(tokens)
    assert entry.permissions == (Permission.RECORD_DENIALS,)
    signer = Signer("k")
    write_jwks(tmp_path / "jwks.json", signer)
    verifier = JwtVerifier(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "jwks.json")
    )
    caller = verifier.verify(signer.token(sub="serving-1", permissions="record_denials openid"))
    assert caller == Caller("serving-1", frozenset({Permission.RECORD_DENIALS}), None, kind="jwt")


def test_token_create_lists_and_grants_record_denials(tmp_path: Path) -> None:
    shown = CliRunner().invoke(app, ["auth", "token", "create", "--help"], env={"COLUMNS": "200"})
    assert "run_jobs, record_denials (a server's token for reporting denials to Core), admin" in (
        " ".join(shown.stdout.replace("│", " ").split())
    )
    tokens = tmp_path / "tokens.yaml"
    args = ["auth", "token", "create", "serving", "--permission", "record_denials"]
    created = CliRunner().invoke(
        app, [*args, "--permission", "read_definitions", "--tokens-file", str(tokens)]
    )
    assert created.exit_code == 0, created.stderr
    assert created.stderr.startswith(
        "created token 'serving' (record_denials, read_definitions); its hash is in "
    )
    [entry] = read_tokens_file(tokens)
    assert entry.permissions == (Permission.RECORD_DENIALS, Permission.READ_DEFINITIONS)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CoreServer, SqlRegistry]]:
    folder = tmp_path_factory.mktemp("record-denials")
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    registry.create_project("alpha")
    server = start_core_server(registry, auth=AuthSettings(tokens=TOKENS))
    yield server, registry
    server.stop(None)
    registry.close()


def _record(core: CoreServer, token: str) -> grpc.StatusCode:
    request = core_pb.RecordDenialRequest(
        actor="token:someone", project="alpha", permission="apply", method=APPLY
    )
    with grpc.insecure_channel(core.address) as channel:
        stub = core_grpc.CoreServiceStub(channel)
        try:
            stub.RecordDenial(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except grpc.RpcError as exc:
            assert exc.details() == (  # type: ignore[attr-defined]
                "permission denied: 'reader' lacks the 'record_denials' permission on project "
                "'alpha'"
            )
            return exc.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_only_record_denials_and_admin_may_record_a_denial(
    core: tuple[CoreServer, SqlRegistry],
) -> None:
    server, registry = core
    assert _record(server, "plk_reporter") is grpc.StatusCode.OK
    assert _record(server, "plk_admin") is grpc.StatusCode.OK
    assert _record(server, "plk_reader") is grpc.StatusCode.PERMISSION_DENIED
    reported = [
        dict(e.change)
        for e in registry.audit_log(project="alpha", limit=100)
        if e.actor == "token:someone"
    ]
    assert sorted(reported, key=str) == [
        {"method": APPLY, "reported_by": "token:admin"},
        {"method": APPLY, "reported_by": "token:reporter"},
    ]


def _reported(registry: SqlRegistry, actor: str) -> list[AuditEntry]:
    """The denials of ``actor`` Core has recorded, once there is one (reports are async)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [
            e
            for e in registry.audit_log(project="alpha", limit=100)
            if e.actor == actor and e.action == "permission_denied"
        ]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_a_serving_token_with_read_definitions_and_record_denials_reports_denials(
    core: tuple[CoreServer, SqlRegistry], tmp_path: Path
) -> None:
    server, registry = core
    remote = RemoteRegistry(server.address, security=ClientSecurity(token="plk_serving"))
    store = SqliteOnlineStore(SqliteConfig(path=str(tmp_path / "online.db")))
    serving = start_serving(
        ServingService(remote, store, "alpha"), auth=AuthSettings(tokens=TOKENS)
    )
    try:
        body = {"features": ["alpha/stats:x"], "entities": {"driver_id": [1]}}
        with httpx.Client(base_url=serving.http_url, timeout=10) as http:
            denied = http.post(
                "/get-online-features", json=body, headers={"authorization": "Bearer plk_reporter"}
            )
        assert denied.status_code == 403
        assert denied.json()["error"]["message"] == (
            "permission denied: 'reporter' lacks the 'read_online' permission on project 'alpha'"
        )
        [entry] = _reported(registry, "token:reporter")
        assert (entry.target, entry.change) == (
            "read_online",
            {"method": "POST /get-online-features", "reported_by": "token:serving"},
        )
    finally:
        serving.stop(None)
        remote.close()
        store.close()
