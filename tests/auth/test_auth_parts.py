"""The pieces of authentication: messages, the SDK's token and TLS, mutual TLS, JWKS rotation,
the tokens file, and the safe defaults of the server commands."""

from __future__ import annotations

import functools
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from _auth_support import (
    AUDIENCE,
    ISSUER,
    Pki,
    Signer,
    make_pki,
    serving_service,
    token_entry,
    write_jwks,
)
from typer.testing import CliRunner

from potluck._proto.potluck.core.v1 import core_service_pb2 as core_pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as core_grpc
from potluck.auth.exposure import check_exposure
from potluck.auth.identity import Caller, Permission, current_caller
from potluck.auth.jwt_verifier import JwtVerifier
from potluck.auth.settings import AuthSettings, JwtSettings, TlsSettings
from potluck.auth.tokens import hash_token, read_tokens_file
from potluck.cli.main import app
from potluck.client import Client
from potluck.config import load_settings
from potluck.errors import (
    ConfigError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.workers import start_workers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def core(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoreServer]:
    folder = tmp_path_factory.mktemp("core")
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}")
    registry.create_project("alpha")
    auth = AuthSettings(
        tokens=(
            token_entry("reader", "plk_reader", ["read_definitions"], ["alpha"]),
            token_entry("admin", "plk_admin", ["admin"], None),
        ),
        tls=TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file),
    )
    server = start_core_server(registry, auth=auth)
    yield server
    server.stop(None)
    registry.close()


def _client(core: CoreServer, pki: Pki, tmp_path: Path, **settings: object) -> Client:
    (tmp_path / "potluck.yaml").write_text(
        json.dumps(
            {
                "project": "alpha",
                "core_url": core.address,
                "core_secure": True,
                "ca_file": str(pki.ca_file),
                **settings,
            }
        )
    )
    return Client(settings=load_settings(tmp_path / "potluck.yaml", environ={}))


def test_the_sdk_sends_its_token_over_tls(core: CoreServer, pki: Pki, tmp_path: Path) -> None:
    client = _client(core, pki, tmp_path, token="plk_reader")
    assert [p.name for p in client.list_projects()] == ["alpha"]
    with pytest.raises(PermissionDeniedError) as denied:
        client.create_project("beta")
    assert denied.value.message == (
        "permission denied: 'reader' lacks the 'admin' permission on project 'beta'"
    )
    assert (denied.value.permission, denied.value.project) == ("admin", "beta")


def test_the_sdk_reads_its_token_from_token_file(
    core: CoreServer, pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("plk_admin\n")
    client = _client(core, pki, tmp_path, token_file="token")
    assert client.create_project("gamma").name == "gamma"


def test_a_client_without_a_token_is_told_how_to_send_one(
    core: CoreServer, pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(UnauthenticatedError) as refused:
        _client(core, pki, tmp_path).list_projects()
    assert refused.value.message == (
        "unauthenticated: this server requires a bearer token and the call carried none: send "
        "'authorization: Bearer <token>' (potluck: set token or token_file; Feast 0.9's SDK: "
        "enable_auth with TLS on; see docs/security.md)"
    )


def test_a_plain_client_cannot_talk_to_a_tls_server(core: CoreServer, pki: Pki) -> None:
    with grpc.insecure_channel(core.address) as channel, pytest.raises(grpc.RpcError) as failed:
        core_grpc.CoreServiceStub(channel).ListProjects(
            core_pb.ListProjectsRequest(),
            metadata=(("authorization", "Bearer plk_admin"),),
            timeout=5,
        )
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_the_sdk_sends_its_token_to_the_job_service_over_tls(pki: Pki, tmp_path: Path) -> None:
    base = {
        "project": "alpha",
        "registry": f"sqlite:///{tmp_path / 'registry.db'}",
        "online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")},
    }
    (tmp_path / "server.yaml").write_text(json.dumps(base))
    auth = AuthSettings(
        tokens=(token_entry("reader", "plk_reader", ["read_definitions"], ["alpha"]),),
        tls=TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file),
    )
    service = JobService(load_settings(tmp_path / "server.yaml", environ={}))
    server = start_jobservice_server(service, auth=auth)

    def client(**settings: object) -> Client:
        path = tmp_path / "client.yaml"
        remote = {"job_service_url": server.address, "job_service_secure": True}
        path.write_text(json.dumps({**base, **remote, "ca_file": str(pki.ca_file), **settings}))
        return Client(settings=load_settings(path, environ={}))

    try:
        reader = client(token="plk_reader")
        assert reader.list_jobs() == []
        with pytest.raises(PermissionDeniedError) as denied:
            reader.unschedule_offline_to_online_ingestion("stats")
        assert denied.value.message == (
            "permission denied: 'reader' lacks the 'run_jobs' permission on project 'alpha'"
        )
        with pytest.raises(UnauthenticatedError) as refused:
            client().list_jobs()
        assert refused.value.message.startswith("unauthenticated: this server requires")
        with pytest.raises(UnavailableError) as plain:
            client(token="plk_reader", job_service_secure=False).list_jobs()
        assert plain.value.message.startswith(f"cannot reach the Job Service at {server.address}")
    finally:
        server.stop(None)
        service.close()


def test_serving_workers_give_an_https_url_under_tls(pki: Pki, tmp_path: Path) -> None:
    auth = AuthSettings(
        tokens=(token_entry("reader", "plk_reader", ["read_online"], None),),
        tls=TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file),
    )
    factory = functools.partial(serving_service, str(tmp_path))
    with start_workers(factory, workers=1, auth=auth) as group:
        assert group.http_url == f"https://127.0.0.1:{group.http_port}"
        verify = ssl.create_default_context(cafile=pki.ca_file)
        with httpx.Client(base_url=group.http_url, verify=verify, timeout=10) as http:
            reply = http.get("/health", headers={"authorization": "Bearer plk_reader"})
    assert reply.status_code == 200


def test_mutual_tls_refuses_a_client_without_a_certificate(pki: Pki, tmp_path: Path) -> None:
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    auth = AuthSettings(
        tokens=(token_entry("admin", "plk_admin", ["admin"], None),),
        tls=TlsSettings(cert_file=pki.cert_file, key_file=pki.key_file, client_ca_file=pki.ca_file),
    )
    server = start_core_server(registry, auth=auth)
    md = (("authorization", "Bearer plk_admin"),)
    roots = pki.ca_file.read_bytes()
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=roots)
        with grpc.secure_channel(server.address, anonymous) as channel:
            with pytest.raises(grpc.RpcError) as failed:
                core_grpc.CoreServiceStub(channel).ListProjects(
                    core_pb.ListProjectsRequest(), metadata=md, timeout=5
                )
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        known = grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=pki.client_key_file.read_bytes(),
            certificate_chain=pki.client_cert_file.read_bytes(),
        )
        with grpc.secure_channel(server.address, known) as channel:
            reply = core_grpc.CoreServiceStub(channel).ListProjects(
                core_pb.ListProjectsRequest(), metadata=md, timeout=5
            )
            assert list(reply.projects) == []
    finally:
        server.stop(None)
        registry.close()


def test_unknown_kid_rereads_the_jwks_once_per_interval(tmp_path: Path) -> None:
    old, new, rogue = Signer("old"), Signer("new"), Signer("rogue")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, old)
    settings = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks, jwks_refresh_interval=0.5
    )
    verifier = JwtVerifier(settings)
    assert verifier.verify(old.token(permissions=["apply"])).permissions == {Permission.APPLY}
    write_jwks(jwks, old, new)  # the issuer publishes the next key, then signs with it
    time.sleep(0.6)  # reads are at least jwks_refresh_interval apart, the first one included
    assert verifier.verify(new.token(sub="ci")).subject == "ci"
    assert verifier.fetches == 2
    with pytest.raises(UnauthenticatedError) as unknown:
        verifier.verify(rogue.token())
    assert unknown.value.message == (
        "unauthenticated: the JWT is signed with a key the issuer does not publish (kid 'rogue')"
    )
    for _ in range(5):  # within the interval: no more reads, however many unknown kids
        with pytest.raises(UnauthenticatedError):
            verifier.verify(rogue.token())
    assert verifier.fetches == 2
    write_jwks(jwks, new)  # the old key is retired
    time.sleep(0.6)
    with pytest.raises(UnauthenticatedError):
        verifier.verify(rogue.token())
    assert verifier.fetches == 3
    with pytest.raises(UnauthenticatedError):
        verifier.verify(old.token(sub="fresh"))  # a token the cache has not seen


def test_retiring_a_key_refuses_the_tokens_it_signed_even_those_verified_before(
    tmp_path: Path,
) -> None:
    old, new, replaced = Signer("old"), Signer("new"), Signer("new")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, old, new)
    settings = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks, jwks_refresh_interval=0.3
    )
    verifier = JwtVerifier(settings)
    old_token, new_token = old.token(sub="ana"), new.token(sub="bo")
    assert (verifier.verify(old_token).subject, verifier.verify(new_token).subject) == ("ana", "bo")
    write_jwks(jwks, new)  # the old key is retired (say, it leaked)
    time.sleep(0.4)
    with pytest.raises(UnauthenticatedError):
        verifier.verify(Signer("rogue").token())  # an unknown kid: the JWKS is read again
    assert verifier.fetches == 2
    with pytest.raises(UnauthenticatedError) as refused:
        verifier.verify(old_token)  # cached as verified before the read: dropped with its key
    assert refused.value.message == (
        "unauthenticated: the JWT is signed with a key the issuer does not publish (kid 'old')"
    )
    assert verifier.verify(new_token).subject == "bo"
    write_jwks(jwks, replaced)  # the same kid, another key: tokens of the first are refused
    time.sleep(0.4)
    with pytest.raises(UnauthenticatedError):
        verifier.verify(Signer("rogue").token())
    with pytest.raises(UnauthenticatedError) as refused:
        verifier.verify(new_token)
    assert refused.value.message == "unauthenticated: the JWT's signature does not verify"
    assert verifier.verify(replaced.token(sub="cy")).subject == "cy"


def test_keys_are_read_again_after_jwks_max_age_and_a_failed_read_keeps_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = Signer("old"), Signer("new")
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, old, new)
    settings = JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks, jwks_max_age=0.3)
    verifier = JwtVerifier(settings)
    old_token, new_token = old.token(sub="ana"), new.token(sub="bo")
    assert (verifier.verify(old_token).subject, verifier.verify(new_token).subject) == ("ana", "bo")
    write_jwks(jwks, new)
    time.sleep(0.4)  # no unknown kid needed: the keys are too old, the next request reads them
    with pytest.raises(UnauthenticatedError) as refused:
        verifier.verify(old_token)
    assert refused.value.message == (
        "unauthenticated: the JWT is signed with a key the issuer does not publish (kid 'old')"
    )
    assert verifier.fetches == 2
    jwks.write_text("{not json")
    time.sleep(0.4)
    with caplog.at_level("WARNING", logger="potluck.auth.jwt_verifier"):
        assert verifier.verify(new_token).subject == "bo"
    assert verifier.fetches == 3
    assert [r.getMessage() for r in caplog.records] == [
        f"keeping the JWT keys read before: the JWKS at {jwks} is not a usable JSON Web Key "
        "Set: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"ttl": -120}, "unauthenticated: the JWT has expired; get a new token"),
        (
            {"aud": "other"},
            "unauthenticated: the JWT is not for this service: its audience is not 'potluck'",
        ),
        (
            {"iss": "https://evil.test"},
            "unauthenticated: the JWT was not issued by 'https://issuer.test'",
        ),
    ],
)
def test_jwt_refusals_say_why(tmp_path: Path, claims: dict, message: str) -> None:
    signer = Signer("k")
    write_jwks(tmp_path / "jwks.json", signer)
    verifier = JwtVerifier(
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path / "jwks.json")
    )
    with pytest.raises(UnauthenticatedError) as refused:
        verifier.verify(signer.token(**claims))
    assert refused.value.message == message


def test_claims_map_to_permissions_and_projects(tmp_path: Path) -> None:
    signer = Signer("k")
    write_jwks(tmp_path / "jwks.json", signer)
    settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=tmp_path / "jwks.json",
        permissions_claim="groups",
        permission_map={"ml-readers": ["read_online", "read_definitions"]},
    )
    caller = JwtVerifier(settings).verify(
        signer.token(sub="ana", groups=["ml-readers", "staff"], projects=["alpha"])
    )
    assert caller == Caller(
        "ana",
        frozenset({Permission.READ_ONLINE, Permission.READ_DEFINITIONS}),
        frozenset({"alpha"}),
        kind="jwt",
    )
    assert current_caller() is None


def test_hmac_and_none_algorithms_are_refused_in_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HS256 is not accepted"):
        JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=tmp_path, algorithms=("HS256",))


def test_token_create_prints_the_token_once_and_stores_its_hash(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    args = ["auth", "token", "create", "ci", "--permission", "apply", "--project", "alpha"]
    result = CliRunner().invoke(app, [*args, "--tokens-file", str(tokens)])
    assert result.exit_code == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("plk_") and len(token) == 47
    [entry] = read_tokens_file(tokens)
    assert (entry.name, entry.hash, entry.permissions, entry.projects) == (
        "ci",
        hash_token(token),
        (Permission.APPLY,),
        ("alpha",),
    )
    assert token not in tokens.read_text()
    assert tokens.stat().st_mode & 0o777 == 0o600


def test_a_bad_tokens_file_names_the_entry(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("- {name: ci, hash: plk_raw_token, permissions: [apply]}\n")
    with pytest.raises(ConfigError, match=r"entry 1, hash: a token hash is 'sha256:'"):
        read_tokens_file(tokens)


def test_without_auth_servers_stay_on_this_machine() -> None:
    assert "listens on 127.0.0.1 only" in check_exposure(
        "127.0.0.1", None, allow_unauthenticated=False, what="potluck serve"
    )
    with pytest.raises(ValidationError) as refused:
        check_exposure("0.0.0.0", None, allow_unauthenticated=False, what="potluck serve")
    assert refused.value.message == (
        "potluck serve would listen on 0.0.0.0 without authentication, so anyone who can reach "
        "it could call it; configure auth (tokens_file, tokens or jwt; docs/security.md), or "
        "pass --allow-unauthenticated to serve unauthenticated anyway"
    )
    assert check_exposure(
        "0.0.0.0", None, allow_unauthenticated=True, what="potluck core"
    ).startswith("warning: potluck core listens on 0.0.0.0 WITHOUT authentication")
    auth = AuthSettings(tokens=(token_entry("a", "plk_a", ["admin"], None),))
    assert check_exposure("0.0.0.0", auth, allow_unauthenticated=False, what="potluck core") == (
        "potluck core: authentication on (bearer tokens), plain connections, no TLS"
    )


@pytest.mark.parametrize("command", [["core"], ["serve"], ["jobservice"]])
def test_server_commands_refuse_to_expose_an_unauthenticated_server(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text("project: default\n")
    result = CliRunner().invoke(app, [*command, "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--allow-unauthenticated" in result.stderr
    assert "Traceback" not in result.stderr
