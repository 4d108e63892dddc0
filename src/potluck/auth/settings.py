"""The ``auth`` settings block: who may call potluck's servers, and their TLS certificates.

It is one value of :class:`potluck.config.Settings` (``auth:`` in ``potluck.yaml``, or
``POTLUCK_AUTH__...`` variables); the client-side settings (``token``, ``core_secure``...) are
top-level settings. Paths are relative to the config file's folder; :func:`resolved` makes them
absolute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from potluck.auth.identity import Permission, subject_problem

HASH_PREFIX = "sha256:"
"""How a stored token hash starts: the algorithm, then 64 lower-case hex digits."""

_HEX = frozenset("0123456789abcdef")


def _permission(value: object) -> Permission:
    if isinstance(value, Permission):
        return value
    return Permission.parse(str(value))


PermissionName = Annotated[
    Permission,
    PlainSerializer(lambda p: p.value, return_type=str),
]
"""A :class:`Permission` written by its name (``read_online``, ``apply``...)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenEntry(_Frozen):
    """One static token, stored as its hash (the token itself is shown once, at creation)."""

    name: str = Field(min_length=1)
    """Who holds it: the caller's subject in logs and audit records."""
    hash: str
    """``sha256:`` and the SHA-256 of the token in hex (``potluck auth token create`` writes it)."""
    permissions: tuple[PermissionName, ...] = ()
    """What it may do."""
    projects: tuple[str, ...] | None = None
    """The projects it may act on; ``null`` (the default) for every project."""

    @field_validator("permissions", mode="before")
    @classmethod
    def _parse_permissions(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            return tuple(_permission(v) for v in value)
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = subject_problem(value)
        if problem is not None:
            raise ValueError(f"a token name names its holder in logs, and {problem}; rename it")
        return value

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        digest = value.removeprefix(HASH_PREFIX)
        if not value.startswith(HASH_PREFIX) or len(digest) != 64 or not set(digest) <= _HEX:
            raise ValueError(
                "a token hash is 'sha256:' and 64 lower-case hex digits, as `potluck auth token "
                "create` writes it; never store the token itself"
            )
        return value


class JwtSettings(_Frozen):
    """OIDC / JWT bearer tokens, verified against an issuer's JSON Web Key Set."""

    issuer: str
    """The ``iss`` every token must carry."""
    audience: str
    """The ``aud`` every token must carry (one of its values, when a list)."""
    jwks_url: str | None = None
    """Where the issuer publishes its keys (``https://issuer/.well-known/jwks.json``)."""
    jwks_file: Path | None = None
    """A local JWKS file instead of ``jwks_url`` (read again when a token names an unknown key)."""
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    """The signature algorithms accepted; ``none`` and HMAC are never accepted."""
    subject_claim: str = "sub"
    """The claim naming the caller."""
    permissions_claim: str = "permissions"
    """The claim holding the caller's permissions: a list, or a space-separated string (as
    OAuth's ``scope``)."""
    permission_map: dict[str, tuple[PermissionName, ...]] = Field(default_factory=dict)
    """Values of the permissions claim mapped to permissions (``{ml-readers: [read_online]}``);
    empty: the values are permission names themselves."""
    projects_claim: str = "projects"
    """The claim listing the projects the caller may act on; absent: every project."""
    leeway: float = Field(default=30.0, ge=0)
    """Seconds of clock skew allowed when checking ``exp``, ``nbf`` and ``iat``."""
    jwks_refresh_interval: float = Field(default=60.0, ge=0)
    """The fewest seconds between two fetches of the keys for a token naming an unknown ``kid``."""
    jwks_max_age: float = Field(default=300.0, gt=0)
    """Seconds after which the keys are read again (at the next request): a key removed from the
    JWKS is refused, with every token it signed, at most this long after."""

    @field_validator("algorithms")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a.lower() == "none" or a.upper().startswith("HS")]
        if bad or not value:
            raise ValueError(
                f"{bad[0] if bad else 'an empty list'} is not accepted: list public-key "
                "algorithms such as RS256, ES256 or EdDSA"
            )
        return value

    @field_validator("permission_map", mode="before")
    @classmethod
    def _parse_map(cls, value: object) -> object:
        if isinstance(value, dict):
            return {
                k: tuple(_permission(p) for p in ([v] if isinstance(v, str) else v))
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtSettings:
        if (self.jwks_url is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_url and jwks_file")
        return self


class TlsSettings(_Frozen):
    """The servers' certificate; with ``client_ca_file``, clients must show one too (mutual TLS)."""

    cert_file: Path
    """The server's certificate chain (PEM)."""
    key_file: Path
    """The server's private key (PEM)."""
    client_ca_file: Path | None = None
    """CA certificates (PEM) that client certificates must chain to; set, a client without one
    is refused."""


class AuthSettings(_Frozen):
    """Server side: static tokens, JWT verification and TLS for every potluck server."""

    tokens_file: Path | None = None
    """A YAML file holding a list of :class:`TokenEntry` (``potluck auth token create`` appends
    to it); read when a server starts."""
    tokens: tuple[TokenEntry, ...] = ()
    """Token entries given in the settings themselves (``POTLUCK_AUTH__TOKENS``)."""
    jwt: JwtSettings | None = None
    """JWT verification; ``null``: only static tokens are accepted."""
    tls: TlsSettings | None = None
    """The servers' TLS certificate; ``null``: plain connections."""

    @property
    def authenticates(self) -> bool:
        """Whether the servers require a bearer token (a token source is configured)."""
        return self.tokens_file is not None or bool(self.tokens) or self.jwt is not None


def resolved(auth: AuthSettings, root: Path) -> AuthSettings:
    """Return ``auth`` with every relative path made absolute against ``root``."""

    def absolute(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else root / path

    jwt = auth.jwt
    if jwt is not None and jwt.jwks_file is not None:
        jwt = jwt.model_copy(update={"jwks_file": absolute(jwt.jwks_file)})
    tls = auth.tls
    if tls is not None:
        tls = tls.model_copy(
            update={
                "cert_file": absolute(tls.cert_file),
                "key_file": absolute(tls.key_file),
                "client_ca_file": absolute(tls.client_ca_file),
            }
        )
    return auth.model_copy(
        update={"tokens_file": absolute(auth.tokens_file), "jwt": jwt, "tls": tls}
    )


__all__ = [
    "HASH_PREFIX",
    "AuthSettings",
    "JwtSettings",
    "PermissionName",
    "TlsSettings",
    "TokenEntry",
    "resolved",
]
