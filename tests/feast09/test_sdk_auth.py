"""Feast 0.9's own SDK (feast==0.9.5.2), its authentication on, against potluck's servers.

Core, Online Serving and the Job Service run here with the Feast 0.9 services added, TLS, static
tokens and JWTs verified against a JWKS file. The SDK (a subprocess in its own venv,
``_sdk_auth_client.py``) gets its JWTs the way Feast 0.9 does with ``auth_provider="oauth"``: an
OAuth client-credentials request to a token endpoint, here a tiny HTTP server on 127.0.0.1 that
signs JWTs with the JWKS's key. Feast 0.9 attaches its token through the channel credentials,
which gRPC sends over TLS only, so every channel here is TLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from _run_feast import run_feast_script
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from potluck import Client
from potluck.auth.settings import AuthSettings, JwtSettings, TlsSettings
from potluck.auth.tokens import hash_token
from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES, SERVING_SERVICES
from potluck.config import load_settings
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry
from potluck.serving.server import start_serving

SCRIPT = Path(__file__).with_name("_sdk_auth_client.py")
ISSUER = "https://login.test"
AUDIENCE = "potluck"
CLIENTS = {
    "writer": (
        "ml-pipeline",
        "s3cret-writer",
        ["apply", "read_definitions", "read_online", "run_jobs"],
    ),
    "reader": ("dashboard", "s3cret-reader", ["read_definitions", "read_online"]),
}
"""OAuth clients of the token endpoint: name -> (client id, secret, the permissions granted)."""
STATIC_TOKEN = "plk_feast_static_reader"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost that is its own CA (PEM), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class TokenEndpoint:
    """An OAuth token endpoint for the client-credentials grant, as Feast 0.9's SDK calls it.

    It answers a JSON ``POST {grant_type, client_id, client_secret, audience}`` of a known client
    with ``{"access_token": <JWT>, "token_type": "Bearer", "expires_in": 300}``: an RS256 JWT for
    ``AUDIENCE`` whose ``sub`` is the client id and ``permissions`` the client's; anything else
    gets 401. Its key is published in :attr:`jwks`.
    """

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**public, "kid": "login-1", "use": "sig", "alg": "RS256"}]}
        self.requests: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({k: v for k, v in body.items() if k != "client_secret"})
                token = endpoint.grant(body)
                reply = (
                    {"access_token": token, "token_type": "Bearer", "expires_in": 300}
                    if token is not None
                    else {"error": "invalid_client"}
                )
                data = json.dumps(reply).encode()
                self.send_response(200 if token is not None else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet: the test reads :attr:`requests` instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def grant(self, body: dict[str, Any]) -> str | None:
        """Return a JWT for a known client's valid request, else ``None``."""
        for client_id, secret, permissions in CLIENTS.values():
            if (
                body.get("grant_type") == "client_credentials"
                and body.get("audience") == AUDIENCE
                and (body.get("client_id"), body.get("client_secret")) == (client_id, secret)
            ):
                now = int(time.time())
                claims = {
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                    "sub": client_id,
                    "iat": now,
                    "exp": now + 300,
                    "permissions": permissions,
                }
                return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "login-1"})
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def sdk_run(
    tmp_path_factory: pytest.TempPathFactory, feast09_python: Path
) -> Iterator[tuple[dict[str, Any], TokenEndpoint]]:
    """Start the servers and the token endpoint, run the SDK's flow once, return its output."""
    data = tmp_path_factory.mktemp("feast09_auth")
    (data / "home").mkdir()
    cert_file, key_file = _self_signed(data)
    endpoint = TokenEndpoint()
    (data / "jwks.json").write_text(json.dumps(endpoint.jwks))
    auth = AuthSettings(
        tokens=(
            {
                "name": "static-reader",
                "hash": hash_token(STATIC_TOKEN),
                "permissions": ["read_definitions"],
            },
        ),
        jwt=JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=data / "jwks.json"),
        tls=TlsSettings(cert_file=cert_file, key_file=key_file),
    )
    config = data / "potluck.yaml"
    config.write_text(
        f"project: default\nregistry: sqlite:///{data}/registry.db\n"
        f"online_store: {{type: sqlite, path: {data}/online.db}}\n"
    )
    registry = SqlRegistry(f"sqlite:///{data}/registry.db")
    registry.list_projects()  # creates the database, as `potluck core` does at start
    core = start_core_server(registry, services=CORE_SERVICES, auth=auth)
    client = Client(config)
    serving = start_serving(
        client.serving_service(refresh_interval=3600), services=SERVING_SERVICES, auth=auth
    )
    job_service = JobService(load_settings(config, environ={}))
    jobs = start_jobservice_server(job_service, services=JOB_SERVICES, auth=auth)
    order = {
        "core": core.address,
        "serving": serving.grpc_address,
        "jobservice": jobs.address,
        "ca_file": str(cert_file),
        "token_url": endpoint.url,
        "audience": AUDIENCE,
        "clients": {name: [c[0], c[1]] for name, c in CLIENTS.items()},
        "static_token": STATIC_TOKEN,
        "data": str(data),
        "now": dt.datetime.now(dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat(),
    }
    try:
        yield run_feast_script(feast09_python, SCRIPT, order, home=data / "home"), endpoint
    finally:
        jobs.stop(None)
        job_service.close()
        serving.stop()
        core.stop()
        client.close()
        registry.close()
        endpoint.close()


NO_TOKEN = (
    "unauthenticated: this server requires a bearer token and the call carried none: send "
    "'authorization: Bearer <token>' (potluck: set token or token_file; Feast 0.9's SDK: "
    "enable_auth with TLS on; see docs/security.md)"
)


def test_without_a_token_the_sdk_says_unauthenticated(
    sdk_run: tuple[dict[str, Any], TokenEndpoint],
) -> None:
    out, _ = sdk_run
    assert out["anonymous"] == {
        "list_projects": {"type": "RpcError", "code": "UNAUTHENTICATED", "text": NO_TOKEN},
        "apply": {"type": "RpcError", "code": None, "text": NO_TOKEN},
        "get_online_features": {"type": "RpcError", "code": None, "text": NO_TOKEN},
    }


def test_the_oauth_client_credentials_flow_applies_reads_and_runs_jobs(
    sdk_run: tuple[dict[str, Any], TokenEndpoint],
) -> None:
    out, endpoint = sdk_run
    writer = out["writer"]
    assert writer["tables"] == ["driver_stats"]
    assert writer["job_status"] == "COMPLETED"
    assert writer["jobs"] == [writer["job_id"]]
    assert writer["online"] == {"driver_id": [1, 2], "driver_stats:trips": [3, 4]}
    # One token request per client the SDK built; the rejected secret got 401.
    grant = {"grant_type": "client_credentials", "audience": AUDIENCE}
    assert endpoint.requests == [
        {**grant, "client_id": "ml-pipeline"},
        {**grant, "client_id": "ml-pipeline"},
        {**grant, "client_id": "dashboard"},
    ]
    assert out["bad_secret"] == {
        "type": "RuntimeError",
        "code": None,
        "text": "Could not fetch OAuth token, got response : 401",
    }


def test_a_read_only_token_reads_but_cannot_apply_or_start_jobs(
    sdk_run: tuple[dict[str, Any], TokenEndpoint],
) -> None:
    out, _ = sdk_run
    reader = out["reader"]
    assert reader["tables"] == ["driver_stats"]
    assert reader["online"] == {"driver_id": [1, 2], "driver_stats:trips": [3, 4]}
    assert reader["apply"] == {
        "type": "RpcError",
        "code": None,
        "text": (
            "permission denied: 'dashboard' lacks the 'apply' permission on project 'default'"
        ),
    }
    assert reader["start_job"] == {  # this call lets gRPC's own error through
        "type": "RpcError",
        "code": "PERMISSION_DENIED",
        "text": (
            "permission denied: 'dashboard' lacks the 'run_jobs' permission on project 'default'"
        ),
    }


def test_a_static_token_works_as_feast_09s_auth_token(
    sdk_run: tuple[dict[str, Any], TokenEndpoint],
) -> None:
    out, _ = sdk_run
    assert out["static"] == {"entities": ["driver_id"]}
