"""Faults a fresh security trial found (issue 12), each fixed for its whole kind.

JWT claim types and exact permission names, the size cap on the authorization value, denial
messages naming the project, mutual TLS from potluck's own clients, audit identities that tell
static tokens from JWT subjects, and the rough edges of the CLI around them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _auth_support import AUDIENCE, ISSUER, Pki, Signer, make_pki, token_entry, write_jwks
from typer.testing import CliRunner

from potluck import Entity, ValueType
from potluck.auth.authenticator import MAX_AUTHORIZATION, Authenticator
from potluck.auth.exposure import check_exposure
from potluck.auth.http import AuthMiddleware
from potluck.auth.identity import Caller, Permission
from potluck.auth.jwt_verifier import JwtVerifier
from potluck.auth.settings import AuthSettings, JwtSettings, TlsSettings
from potluck.auth.tokens import TokenTable
from potluck.cli.main import app
from potluck.client import Client
from potluck.config import load_settings
from potluck.errors import (
    ConfigError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry

JWT_CLAIM = (
    "; it must be a list of names or a space-separated string of names (leave the claim out to "
    "mean every project or no permission); ask the identity provider's administrator to fix "
    "the claim"
)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return Signer("k")


@pytest.fixture(scope="module")
def jwt_settings(signer: Signer, tmp_path_factory: pytest.TempPathFactory) -> JwtSettings:
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    write_jwks(jwks, signer)
    return JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks)


@pytest.fixture(scope="module")
def verifier(jwt_settings: JwtSettings) -> JwtVerifier:
    return JwtVerifier(jwt_settings)


# ---- 1. list claims: types and empty values ------------------------------------------------


@pytest.mark.parametrize("claim", ["projects", "permissions"])
@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (5, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
        (False, "a boolean"),
        ({"alpha": True}, "an object"),
        (None, "null"),
        ("", "an empty string"),
        ("   ", "an empty string"),
        ([1], "a list holding something other than non-empty strings"),
        (["alpha", ""], "a list holding something other than non-empty strings"),
        ([None], "a list holding something other than non-empty strings"),
    ],
)
def test_a_list_claim_of_another_type_is_refused(
    verifier: JwtVerifier, signer: Signer, claim: str, value: Any, shape: str
) -> None:
    with pytest.raises(UnauthenticatedError) as refused:
        verifier.verify(signer.token(**{"permissions": ["admin"], claim: value}))
    assert refused.value.message == f"unauthenticated: the JWT's {claim!r} claim is {shape}" + (
        JWT_CLAIM
    )


@pytest.mark.parametrize(
    ("claims", "permissions", "projects"),
    [
        ({"permissions": "apply"}, {Permission.APPLY}, None),
        ({"permissions": "apply read_online"}, {Permission.APPLY, Permission.READ_ONLINE}, None),
        ({"permissions": ["apply"], "projects": "alpha"}, {Permission.APPLY}, {"alpha"}),
        (
            {"permissions": ["apply"], "projects": " alpha  beta "},
            {Permission.APPLY},
            {"alpha", "beta"},
        ),
        ({"permissions": ["apply"], "projects": []}, {Permission.APPLY}, set()),
        ({"permissions": []}, set(), None),
        ({}, set(), None),
    ],
)
def test_a_string_claim_is_a_space_separated_list_and_only_a_missing_one_means_every_project(
    verifier: JwtVerifier,
    signer: Signer,
    claims: dict[str, Any],
    permissions: set[Permission],
    projects: set[str] | None,
) -> None:
    caller = verifier.verify(signer.token(sub="ana", **claims))
    assert caller == Caller(
        "ana",
        frozenset(permissions),
        None if projects is None else frozenset(projects),
        kind="jwt",
    )


# ---- 2. exact permission names in JWTs -----------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Admin", "ADMIN", "admin ", " admin", "read-online", "Read_Online", "admin\n"]
)
def test_jwt_permission_names_are_exact_and_other_values_grant_nothing(
    verifier: JwtVerifier, signer: Signer, name: str
) -> None:
    caller = verifier.verify(signer.token(permissions=[name, "openid"]))
    assert caller.permissions == frozenset()
    exact = verifier.verify(signer.token(permissions=["admin", "openid"], sub="bo"))
    assert exact.permissions == frozenset({Permission.ADMIN})


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("ana\nforged", "it holds the control character '\\n'"),
        ("ana\x1b[2J", "it holds the control character '\\x1b'"),
        (" ana", "it has spaces around it"),
        ("  ", "it is empty"),
    ],
)
def test_a_jwt_subject_that_could_forge_a_log_line_is_refused(
    verifier: JwtVerifier, signer: Signer, subject: str, problem: str
) -> None:
    with pytest.raises(UnauthenticatedError) as refused:
        verifier.verify(signer.token(sub=subject))
    assert refused.value.message == (
        f"unauthenticated: the JWT's 'sub' claim cannot name a caller: {problem}"
    )


# ---- 4. the size of the authorization value ------------------------------------------------

TOO_LONG = (
    f"unauthenticated: the authorization value is longer than the {MAX_AUTHORIZATION} "
    "characters accepted; send a shorter token (a JWT with fewer claims)"
)


def test_an_authorization_value_over_16_kb_is_refused_before_any_lookup(
    verifier: JwtVerifier, signer: Signer
) -> None:
    authenticator = Authenticator(TokenTable([]), verifier)
    fitting = signer.token(pad="x" * (MAX_AUTHORIZATION * 3 // 4 - 1000))  # base64: 4/3
    assert len(fitting) > MAX_AUTHORIZATION - 1500
    assert authenticator.authenticate(f"Bearer {fitting}").subject == "robot"
    big = signer.token(pad="x" * 200_000)  # a valid JWT: refused for its size alone
    with pytest.raises(UnauthenticatedError) as refused:
        authenticator.authenticate(f"Bearer {big}")
    assert refused.value.message == TOO_LONG


def _asgi(
    middleware: AuthMiddleware, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, dict[str, Any]]:
    """Run one request through ``middleware``; return the status and JSON body it answered."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "client": None}
    asyncio.run(middleware(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not be reached")


def _middleware(*entries: dict[str, Any]) -> AuthMiddleware:
    auth = AuthSettings(tokens=entries)
    return AuthMiddleware(
        _never,
        authenticator=Authenticator.from_settings(auth),
        read_path="/get-online-features",
        default_project="default",
        max_body=1 << 20,
    )


def test_http_refuses_a_megabyte_authorization_header_with_401() -> None:
    middleware = _middleware(token_entry("reader", "plk_reader", ["read_online"], None))
    junk = b"Bearer " + b"j" * (1 << 20)
    status, body = _asgi(middleware, "/metrics", [(b"authorization", junk)])
    assert (status, body) == (401, {"error": {"code": "unauthenticated", "message": TOO_LONG}})


# ---- 5. denials name the project -----------------------------------------------------------


def test_an_http_denial_of_a_caller_allowed_every_project_names_the_project() -> None:
    middleware = _middleware(token_entry("ops", "plk_ops", ["read_definitions"], None))
    body = json.dumps({"features": ["beta/stats:trips"], "entities": {}}).encode()
    status, answer = _asgi(
        middleware, "/get-online-features", [(b"authorization", b"Bearer plk_ops")], body
    )
    assert (status, answer["error"]["message"]) == (
        403,
        "permission denied: 'ops' lacks the 'read_online' permission on project 'beta'",
    )


@pytest.fixture(scope="module")
def core(
    jwt_settings: JwtSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CoreServer, SqlRegistry]]:
    folder = tmp_path_factory.mktemp("core")
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    registry.create_project("alpha")
    registry.create_project("beta")
    auth = AuthSettings(
        tokens=(
            token_entry("reader", "plk_reader", ["read_definitions"], None),
            token_entry("ci", "plk_ci", ["apply", "read_definitions"], ["alpha"]),
            token_entry("admin", "plk_admin", ["admin"], None),
        ),
        jwt=jwt_settings,
    )
    server = start_core_server(registry, auth=auth)
    yield server, registry
    server.stop(None)
    registry.close()


def _client(address: str, folder: Path, **settings: object) -> Client:
    (folder / "potluck.yaml").write_text(json.dumps({"core_url": address, **settings}))
    return Client(settings=load_settings(folder / "potluck.yaml", environ={}))


def test_a_grpc_denial_of_a_caller_allowed_every_project_names_the_project(
    core: tuple[CoreServer, SqlRegistry], tmp_path: Path
) -> None:
    client = _client(core[0].address, tmp_path, token="plk_reader", project="beta")
    with pytest.raises(PermissionDeniedError) as denied:
        client.apply([Entity(name="driver_id", value_type=ValueType.INT64)])
    assert denied.value.message == (
        "permission denied: 'reader' lacks the 'apply' permission on project 'beta'"
    )
    with pytest.raises(PermissionDeniedError) as denied:
        client.archive_project("alpha")
    assert denied.value.message == (
        "permission denied: 'reader' lacks the 'admin' permission on project 'alpha'"
    )


# ---- 6. an apply's refusal names apply -----------------------------------------------------


def test_an_apply_refused_at_its_first_read_names_apply(
    core: tuple[CoreServer, SqlRegistry], tmp_path: Path
) -> None:
    client = _client(core[0].address, tmp_path, token="plk_ci", project="beta")
    with pytest.raises(PermissionDeniedError) as denied:
        client.apply([Entity(name="driver_id", value_type=ValueType.INT64)])
    assert denied.value.message == (
        "permission denied: 'ci' lacks the 'read_definitions' permission on project 'beta': "
        "applying to project 'beta' reads its definitions first, so it needs the 'apply' and "
        "'read_definitions' permissions there"
    )


# ---- 7. audit identities -------------------------------------------------------------------


def test_the_audit_log_tells_a_static_token_from_a_jwt_subject(
    core: tuple[CoreServer, SqlRegistry], signer: Signer, tmp_path: Path
) -> None:
    server, registry = core
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _client(server.address, tmp_path / "a", token="plk_admin").create_project("by_token")
    jwt = signer.token(sub="admin", permissions=["admin"])
    _client(server.address, tmp_path / "b", token=jwt).create_project("by_jwt")
    actors = {e.project: e.actor for e in registry.audit_log() if e.action == "create_project"}
    assert (actors["by_token"], actors["by_jwt"]) == ("token:admin", "jwt:admin")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ci\nadmin", "it holds the control character '\\n'"),
        ("ci\x00", "it holds the control character '\\x00'"),
        ("ci ", "it has spaces around it"),
        ("", "it is empty"),
    ],
)
def test_token_create_refuses_names_that_could_forge_a_log_line(
    tmp_path: Path, name: str, problem: str
) -> None:
    tokens = tmp_path / "tokens.yaml"
    result = CliRunner().invoke(
        app,
        ["auth", "token", "create", name, "--permission", "apply", "--tokens-file", str(tokens)],
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert " ".join(result.stderr.split()) == (
        f"error: the token's NAME {name!r} cannot be used: {problem}; choose a plain name such "
        "as 'ci' or 'dashboard'"
    )
    assert not tokens.exists()


# ---- 3. mutual TLS from potluck's clients; 8. TLS rough edges -------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_core(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoreServer]:
    folder = tmp_path_factory.mktemp("mtls")
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    registry.create_project("alpha")
    auth = AuthSettings(
        tokens=(token_entry("admin", "plk_admin", ["admin"], None),),
        tls=TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file, client_ca_file=pki.ca_file),
    )
    server = start_core_server(registry, auth=auth)
    yield server
    server.stop(None)
    registry.close()


def test_the_sdk_shows_its_client_certificate_to_a_mutual_tls_core(
    mtls_core: CoreServer, pki: Pki, tmp_path: Path
) -> None:
    secure = {"token": "plk_admin", "core_secure": True, "ca_file": str(pki.ca_file)}
    client = _client(
        mtls_core.address,
        tmp_path,
        **secure,
        client_cert_file=str(pki.client_cert_file),
        client_key_file=str(pki.client_key_file),
    )
    assert [p.name for p in client.list_projects()] == ["alpha"]
    with pytest.raises(UnavailableError):
        _client(mtls_core.address, tmp_path, **secure).list_projects()


@pytest.mark.parametrize(
    ("given", "missing"),
    [("client_cert_file", "client_key_file"), ("client_key_file", "client_cert_file")],
)
def test_a_client_certificate_needs_its_key(
    mtls_core: CoreServer, pki: Pki, tmp_path: Path, given: str, missing: str
) -> None:
    with pytest.raises(ConfigError) as bad:
        _client(mtls_core.address, tmp_path, core_secure=True, **{given: str(pki.ca_file)})
    assert bad.value.message == (
        f"invalid settings: {given} is set but {missing} is not; mutual TLS needs both the "
        "client certificate and its private key"
    )


def test_the_cli_against_a_tls_core_prints_one_line_that_hints_at_tls(
    mtls_core: CoreServer, tmp_path: Path
) -> None:
    (tmp_path / "potluck.yaml").write_text(
        json.dumps({"core_url": mtls_core.address, "token": "plk_admin"})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POTLUCK_", "GRPC_"))}
    potluck = str(Path(sys.executable).parent / "potluck")  # the console script, as users run it
    cli = [potluck, "--config", str(tmp_path / "potluck.yaml")]
    result = subprocess.run(
        [*cli, "projects", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (result.returncode, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach the Core service at {mtls_core.address}: ")
    assert lines[0].endswith(
        "is `potluck core` running? Is it serving TLS? Then set core_secure: true (and ca_file)."
    )


def test_the_start_line_says_mutual_tls(pki: Pki) -> None:
    tokens = (token_entry("admin", "plk_admin", ["admin"], None),)
    tls = TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file)
    mutual = tls.model_copy(update={"client_ca_file": pki.ca_file})
    lines = [
        check_exposure(
            "0.0.0.0",
            AuthSettings(tokens=tokens, tls=t),
            allow_unauthenticated=False,
            what="potluck core",
        )
        for t in (mutual, tls, None)
    ]
    assert lines == [
        "potluck core: authentication on (bearer tokens), mutual TLS",
        "potluck core: authentication on (bearer tokens), TLS",
        "potluck core: authentication on (bearer tokens), plain connections, no TLS",
    ]


@pytest.mark.parametrize("name", ["CA_FILE", "TOKEN_FILE", "CLIENT_CERT_FILE", "CORE_URL"])
def test_an_empty_environment_variable_unsets_an_optional_setting(
    tmp_path: Path, name: str
) -> None:
    settings = load_settings(None, environ={f"POTLUCK_{name}": ""})
    assert getattr(settings, name.lower()) is None


# ---- 8. allowed locations; 9. restore ------------------------------------------------------


@pytest.fixture
def project_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "potluck.yaml").write_text(
        json.dumps({"registry": f"sqlite:///{tmp_path / 'registry.db'}"})
    )
    monkeypatch.chdir(tmp_path)
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.create_project("beta")
    registry.close()
    return tmp_path


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (
            "/",
            "error: location: '/' is the whole file system; allowing it would let the project's "
            "tables read and overwrite every project's data; allow the narrowest folder they need",
        ),
        (
            "/srv/..",
            "error: location: '/srv/..' is the whole file system; allowing it would let the "
            "project's tables read and overwrite every project's data; allow the narrowest folder "
            "they need",
        ),
        (
            "relative/dir",
            "error: location: 'relative/dir' is relative; an allowed location is stored in the "
            "registry and holds for every client, so give an absolute folder (such as "
            "/srv/shared/stats), a URL such as s3://bucket/prefix, or kafka:PREFIX",
        ),
        (
            "./x",
            "error: location: './x' is relative; an allowed location is stored in the registry "
            "and holds for every client, so give an absolute folder (such as /srv/shared/stats), "
            "a URL such as s3://bucket/prefix, or kafka:PREFIX",
        ),
    ],
)
def test_allow_location_refuses_the_root_and_relative_folders(
    project_folder: Path, location: str, message: str
) -> None:
    assert _cli("projects", "allow-location", "beta", location) == (2, "", message)
    registry = SqlRegistry(f"sqlite:///{project_folder / 'registry.db'}")
    assert registry.list_allowed_locations("beta") == []
    registry.close()


def test_restoring_a_project_that_is_not_archived_changes_and_records_nothing(
    project_folder: Path,
) -> None:
    assert _cli("projects", "restore", "beta") == (
        0,
        "Project 'beta' is not archived; nothing to restore.\n",
        "",
    )
    assert _cli("projects", "archive", "beta")[0] == 0
    assert _cli("projects", "restore", "beta") == (0, "Restored project 'beta'.\n", "")
    registry = SqlRegistry(f"sqlite:///{project_folder / 'registry.db'}")
    actions = [e.action for e in registry.audit_log()]
    registry.close()
    assert actions == ["restore_project", "archive_project", "create_project"]
