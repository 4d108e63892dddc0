"""Bearer tokens to callers, and callers' permissions checked: the one decision every server makes.

:class:`Authenticator` turns an ``Authorization`` value (``Bearer <token>``) into a
:class:`~potluck.auth.identity.Caller`: a static token is looked up by its hash first (a
dictionary lookup), then, when JWTs are configured, a token shaped as a JWT is verified.
:func:`authorize` refuses a caller that lacks a permission on a project.
"""

from __future__ import annotations

from collections.abc import Iterable

from potluck.auth.identity import Caller, Permission
from potluck.auth.jwt_verifier import JwtVerifier
from potluck.auth.settings import AuthSettings
from potluck.auth.tokens import TokenTable, read_tokens_file
from potluck.errors import PermissionDeniedError, UnauthenticatedError

SCHEME = "bearer"
"""The only ``Authorization`` scheme accepted (any case)."""

MAX_AUTHORIZATION = 16 * 1024
"""The longest ``Authorization`` value looked at, in characters (gRPC's own metadata limit);
a longer one is refused before any token is looked up or verified."""

_HOW = (
    "send 'authorization: Bearer <token>' (potluck: set token or token_file; Feast 0.9's SDK: "
    "enable_auth with TLS on; see docs/security.md)"
)


class Authenticator:
    """Authenticates the bearer tokens a server accepts.

    Args:
        tokens: The static tokens.
        jwt: The JWT verifier; ``None`` when JWTs are not accepted.
    """

    def __init__(self, tokens: TokenTable, jwt: JwtVerifier | None = None) -> None:
        self._tokens = tokens
        self._jwt = jwt

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> Authenticator:
        """Build the authenticator ``auth`` describes (paths already absolute).

        Raises:
            ConfigError: If the tokens file or the JWKS is invalid.
            UnavailableError: If the JWKS cannot be read.
        """
        entries = [*auth.tokens]
        if auth.tokens_file is not None:
            entries += read_tokens_file(auth.tokens_file)
        verifier = JwtVerifier(auth.jwt) if auth.jwt is not None else None
        return cls(TokenTable(entries), verifier)

    def authenticate(self, authorization: str | None) -> Caller:
        """Return the caller an ``Authorization`` header (or gRPC metadata) value names.

        Raises:
            UnauthenticatedError: If the value is missing, longer than
                :data:`MAX_AUTHORIZATION`, is not ``Bearer <token>``, or the token is not
                accepted; the message says which, never quoting the token.
        """
        if authorization is not None and len(authorization) > MAX_AUTHORIZATION:
            raise UnauthenticatedError(
                f"unauthenticated: the authorization value is longer than the {MAX_AUTHORIZATION} "
                "characters accepted; send a shorter token (a JWT with fewer claims)"
            )
        if not authorization:
            raise UnauthenticatedError(
                "unauthenticated: this server requires a bearer token and the call carried "
                "none: " + _HOW
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != SCHEME or not token:
            raise UnauthenticatedError(
                "unauthenticated: the authorization value is not 'Bearer <token>': " + _HOW
            )
        caller = self._tokens.caller(token)
        if caller is not None:
            return caller
        if self._jwt is not None and token.count(".") == 2:
            return self._jwt.verify(token)
        raise UnauthenticatedError(
            "unauthenticated: the bearer token is not accepted (unknown, or revoked); ask an "
            "administrator for a valid one"
        )


def authorize(caller: Caller, permission: Permission, projects: Iterable[str | None]) -> None:
    """Return if ``caller`` holds ``permission`` on every project of ``projects``.

    Args:
        caller: Who calls.
        permission: What the call needs.
        projects: The projects the call acts on (``None``: no single project).

    Raises:
        PermissionDeniedError: Naming the caller, the permission and the project.
    """
    for project in projects:
        if not caller.may(permission, project):
            where = "" if project is None else f" on project {project!r}"
            raise PermissionDeniedError(
                f"permission denied: {caller.subject!r} lacks the {permission.value!r} "
                f"permission{where}",
                permission=permission.value,
                project=project,
                subject=caller.actor,
            )


__all__ = ["MAX_AUTHORIZATION", "SCHEME", "Authenticator", "authorize"]
