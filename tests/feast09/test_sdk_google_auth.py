"""Feast 0.9's ``auth_provider: google`` against potluck, for real and without the internet.

Feast 0.9.5's SDK gets a Google ID token with google-auth: ``fetch_id_token(audience=
"feast.dev")`` reads the service-account file ``GOOGLE_APPLICATION_CREDENTIALS`` names and posts
a JWT-bearer grant to the file's ``token_uri``, here :class:`GoogleTokenEndpoint` on 127.0.0.1,
which answers with an ``id_token`` signed by the test's key. The SDK then checks that token
with ``verify_oauth2_token``, which fetches Google's signing certificates from the fixed URL
https://www.googleapis.com/oauth2/v1/certs (no setting changes it): the SDK's process gets
``HTTPS_PROXY`` set to :class:`CertsProxy`, a local proxy that answers that one URL over TLS with
a certificate for www.googleapis.com from the test's CA (``REQUESTS_CA_BUNDLE``), publishing
the test's key. ``NO_PROXY`` keeps every other connection (the token endpoint, potluck's
servers) direct. potluck's servers verify the same ID token as a JWT (issuer
``https://accounts.google.com``, audience ``feast.dev``, the key in a JWKS file) and map the
token's ``email`` to permissions (``permission_map``), as docs/security.md says to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socketserver
import ssl
import threading
import time
import urllib.parse
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

from potluck.auth.settings import AuthSettings, JwtSettings, TlsSettings
from potluck.compat.feast09 import CORE_SERVICES, JOB_SERVICES
from potluck.config import load_settings
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry

SCRIPT = Path(__file__).with_name("_sdk_google_client.py")
GOOGLE_ISSUER = "https://accounts.google.com"
FEAST_AUDIENCE = "feast.dev"
"""The audience Feast 0.9's google provider always asks for (``fetch_id_token``)."""
CERTS_HOST = "www.googleapis.com"
ASSERTION_AUDIENCE = "https://oauth2.googleapis.com/token"
"""The ``aud`` google-auth puts in a service account's grant assertion, whatever token_uri is."""
ACCOUNTS = {
    "pipeline": ("pipeline@feast-test.iam.gserviceaccount.com", FEAST_AUDIENCE),
    "stranger": ("stranger@feast-test.iam.gserviceaccount.com", "someone-else"),
}
"""Service accounts: name -> (client_email, the audience the token endpoint puts in its token)."""


def _pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key: Any, issuer: str, signer: Any, **extensions: Any) -> bytes:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for extension, critical in extensions.values():
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate from it for 127.0.0.1, localhost and www.googleapis.com."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(
        "test CA",
        ca_key,
        "test CA",
        ca_key,
        basic=(x509.BasicConstraints(ca=True, path_length=None), True),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.DNSName(CERTS_HOST),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = _certificate(
        "localhost", key, "test CA", ca_key, san=(x509.SubjectAlternativeName(names), False)
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    for path, data in zip(paths, (ca, cert, _pem(key)), strict=True):
        path.write_bytes(data)
    return paths


class GoogleTokenEndpoint:
    """Google's token endpoint for service accounts' ID tokens, as google-auth calls it.

    A form ``POST {grant_type: urn:ietf:params:oauth:grant-type:jwt-bearer, assertion}`` whose
    assertion is signed by a known service account's key and asks for a ``target_audience`` is
    answered ``{"id_token": <RS256 JWT>}``: issuer ``https://accounts.google.com``, the account's
    audience (:data:`ACCOUNTS`), ``sub`` and ``email`` the account's, and, as Google's, no
    permissions claim (potluck maps the ``email`` to permissions). Anything else gets 400.
    :attr:`requests` keeps (account, target_audience) per grant.
    """

    def __init__(self) -> None:
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.accounts = {
            email: (rsa.generate_private_key(public_exponent=65537, key_size=2048), audience)
            for email, audience in ACCOUNTS.values()
        }
        self.requests: list[tuple[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                form = urllib.parse.parse_qs(
                    self.rfile.read(int(self.headers["Content-Length"])).decode()
                )
                token = endpoint.grant(form)
                reply = {"id_token": token} if token else {"error": "invalid_grant"}
                data = json.dumps(reply).encode()
                self.send_response(200 if token else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet: the test reads :attr:`requests` instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def grant(self, form: dict[str, list[str]]) -> str | None:
        """Return an ID token for a valid JWT-bearer grant of a known account, else ``None``."""
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return None
        [assertion] = form.get("assertion", [""])
        email = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        if email not in self.accounts:
            return None
        key, audience = self.accounts[email]
        claims = jwt.decode(
            assertion,
            key.public_key(),
            algorithms=["RS256"],
            audience=ASSERTION_AUDIENCE,
            issuer=email,
        )
        self.requests.append((email, claims["target_audience"]))
        now = int(time.time())
        body = {
            "iss": GOOGLE_ISSUER,
            "aud": audience,
            "azp": email,
            "sub": email.partition("@")[0],
            "email": email,
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(body, self.signing_key, algorithm="RS256", headers={"kid": "google-1"})

    def service_account_file(self, path: Path, email: str) -> Path:
        """Write the service-account JSON of ``email``, its ``token_uri`` this endpoint."""
        key, _ = self.accounts[email]
        info = {
            "type": "service_account",
            "project_id": "feast-test",
            "private_key_id": "sa-1",
            "private_key": _pem(key).decode(),
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": self.url,
        }
        path.write_text(json.dumps(info))
        return path

    def certs(self) -> dict[str, str]:
        """Google's ``oauth2/v1/certs`` document: ``{kid: X.509 certificate (PEM)}``."""
        cert = _certificate("google-1", self.signing_key, "google-1", self.signing_key)
        return {"google-1": cert.decode()}

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.signing_key.public_key()))
        return {"keys": [{**public, "kid": "google-1", "use": "sig", "alg": "RS256"}]}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class CertsProxy:
    """An HTTPS proxy that serves only https://www.googleapis.com/oauth2/v1/certs itself.

    It accepts ``CONNECT www.googleapis.com:443``, speaks TLS with a certificate for that name
    from the test's CA, and answers ``GET /oauth2/v1/certs`` with ``certs``; every other
    CONNECT or path gets 403/404, so nothing leaves the machine. :attr:`requests` keeps the
    paths asked for.
    """

    def __init__(self, certs: dict[str, str], cert_file: Path, key_file: Path) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        body = json.dumps(certs).encode()
        self.requests: list[str] = []
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                target = self.rfile.readline().split()[1].decode()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                if target != f"{CERTS_HOST}:443":
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                with context.wrap_socket(self.connection, server_side=True) as tls:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += tls.recv(4096)
                    path = head.split()[1].decode()
                    proxy.requests.append(path)
                    found = path == "/oauth2/v1/certs"
                    status = b"200 OK" if found else b"404 Not Found"
                    data = body if found else b""
                    tls.sendall(
                        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(data)).encode() + b"\r\n"
                        b"Connection: close\r\n\r\n" + data
                    )

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def sdk_run(
    tmp_path_factory: pytest.TempPathFactory, feast09_python: Path
) -> Iterator[tuple[dict[str, Any], GoogleTokenEndpoint, CertsProxy]]:
    """Start Core and the Job Service, the token endpoint and the proxy; run the SDK once."""
    data = tmp_path_factory.mktemp("feast09_google")
    (data / "home").mkdir()
    ca_file, cert_file, key_file = _tls_files(data)
    endpoint = GoogleTokenEndpoint()
    proxy = CertsProxy(endpoint.certs(), cert_file, key_file)
    (data / "jwks.json").write_text(json.dumps(endpoint.jwks()))
    auth = AuthSettings(
        jwt=JwtSettings(
            issuer=GOOGLE_ISSUER,
            audience=FEAST_AUDIENCE,
            jwks_file=data / "jwks.json",
            permissions_claim="email",
            permission_map={email: ["read_definitions"] for email, _ in ACCOUNTS.values()},
        ),
        tls=TlsSettings(cert_file=cert_file, key_file=key_file),
    )
    config = data / "potluck.yaml"
    config.write_text(
        f"project: default\nregistry: sqlite:///{data}/registry.db\n"
        f"online_store: {{type: sqlite, path: {data}/online.db}}\n"
    )
    registry = SqlRegistry(f"sqlite:///{data}/registry.db")
    registry.create_project("default")
    core = start_core_server(registry, services=CORE_SERVICES, auth=auth)
    job_service = JobService(load_settings(config, environ={}))
    jobs = start_jobservice_server(job_service, services=JOB_SERVICES, auth=auth)
    order = {
        "core": core.address,
        "jobservice": jobs.address,
        "ca_file": str(ca_file),
        "credentials": {
            name: str(endpoint.service_account_file(data / f"{name}.json", email))
            for name, (email, _) in ACCOUNTS.items()
        },
    }
    env = {
        "HTTPS_PROXY": proxy.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_grpc_proxy": "127.0.0.1,localhost",
        "REQUESTS_CA_BUNDLE": str(ca_file),
    }
    try:
        yield (
            run_feast_script(feast09_python, SCRIPT, order, home=data / "home", env=env),
            endpoint,
            proxy,
        )
    finally:
        jobs.stop(None)
        job_service.close()
        core.stop(None)
        registry.close()
        proxy.close()
        endpoint.close()


def test_a_service_accounts_google_id_token_is_accepted(
    sdk_run: tuple[dict[str, Any], GoogleTokenEndpoint, CertsProxy],
) -> None:
    out, endpoint, proxy = sdk_run
    assert out["pipeline"] == {
        "list_projects": ["default"],
        "list_feature_tables": [],
        "list_jobs": 0,
    }
    # google-auth asked the file's token_uri for a token for Feast's fixed audience, and
    # fetched Google's certificates (through the proxy) to check it
    assert ("pipeline@feast-test.iam.gserviceaccount.com", FEAST_AUDIENCE) in endpoint.requests
    assert set(proxy.requests) == {"/oauth2/v1/certs"}


WRONG_AUDIENCE = "unauthenticated: the JWT is not for this service: its audience is not 'feast.dev'"


def test_an_id_token_for_another_audience_is_unauthenticated(
    sdk_run: tuple[dict[str, Any], GoogleTokenEndpoint, CertsProxy],
) -> None:
    out, endpoint, _ = sdk_run
    assert out["stranger"] == {
        "list_projects": {"error": "UNAUTHENTICATED", "text": WRONG_AUDIENCE},
        "list_feature_tables": {"error": "UNAUTHENTICATED", "text": WRONG_AUDIENCE},
        "list_jobs": {"error": "UNAUTHENTICATED", "text": WRONG_AUDIENCE},
    }
    assert ("stranger@feast-test.iam.gserviceaccount.com", FEAST_AUDIENCE) in endpoint.requests
