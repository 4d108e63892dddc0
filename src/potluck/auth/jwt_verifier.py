"""JWT bearer tokens (OIDC access tokens) verified against the issuer's JSON Web Key Set.

A token is accepted when its signature verifies with the JWKS key its header's ``kid`` names
(with one of the configured public-key algorithms), and its ``iss``, ``aud``, ``exp`` (and
``nbf``, ``iat`` when present) hold, within ``leeway`` seconds of clock skew. Its claims become
a :class:`~potluck.auth.identity.Caller` as :class:`~potluck.auth.settings.JwtSettings` maps
them.

Key rotation: the keys are read at start, and again (file or URL) by the first request after
``jwks_max_age`` seconds (a failed read keeps the keys it has, with a warning, and is tried again
``jwks_max_age`` later); a token naming a ``kid`` not among them makes the verifier read the JWKS
at once, at most once per ``jwks_refresh_interval`` seconds, so a flood of made-up ``kid`` values
cannot make it fetch in a loop. Keys no longer published
are dropped at that read, and so are the cached verifications of tokens they signed: a retired
(or replaced) key's tokens are refused from then on, even those verified before.

Verified tokens are kept (up to :data:`CACHE_SIZE`) until they expire, so a client that sends
the same token on every request pays the signature check once: a cached token is still checked
against its ``exp`` on every use.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from potluck.auth.identity import Caller, Permission, subject_problem
from potluck.auth.settings import JwtSettings
from potluck.errors import ConfigError, UnauthenticatedError, UnavailableError

_log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
"""Verified tokens kept; the cache is emptied when full."""

FETCH_TIMEOUT = 5.0
"""Seconds to wait for ``jwks_url``."""


class JwtVerifier:
    """Verifies JWTs for one issuer and audience.

    Args:
        settings: The issuer, audience, key source and claim mapping.
        clock: Returns the time now, in seconds since the epoch (tests pass their own).

    Raises:
        ConfigError: If the JWKS cannot be read or holds no usable key.
    """

    def __init__(self, settings: JwtSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Caller, float, str | None]] = {}
        self._keys, self._published = self._read_keys()
        self._fetched_at = time.monotonic()
        self.fetches = 1
        """How many times the JWKS was read (for tests and logs)."""

    def verify(self, token: str) -> Caller:
        """Return the caller ``token`` names.

        Raises:
            UnauthenticatedError: If it is not a well-formed JWT, names an unknown key, its
                signature does not verify, or its issuer, audience or times do not hold; the
                message says which (never quoting the token).
        """
        if time.monotonic() - self._fetched_at >= self._settings.jwks_max_age:
            self._refresh_aged_keys()
        cached = self._cache.get(token)
        if cached is not None:
            caller, expires, _ = cached
            if self._clock() <= expires + self._settings.leeway:
                return caller
            del self._cache[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise UnauthenticatedError(
                f"unauthenticated: the bearer token is not a valid JWT: {exc}"
            ) from None
        algorithm = header.get("alg")
        if algorithm not in self._settings.algorithms:
            raise UnauthenticatedError(
                f"unauthenticated: the JWT's algorithm {algorithm!r} is not accepted (accepted: "
                f"{', '.join(self._settings.algorithms)})"
            )
        key = self._key(header.get("kid"))
        claims = self._decode(token, key, str(algorithm))
        caller = self._caller(claims)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (caller, float(claims["exp"]), key.key_id)
        return caller

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        s = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": ["exp", "iss", "aud"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError(
                "unauthenticated: the JWT has expired; get a new token"
            ) from None
        except jwt.InvalidAudienceError:
            raise UnauthenticatedError(
                "unauthenticated: the JWT is not for this service: its audience is not "
                f"{s.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError(
                f"unauthenticated: the JWT was not issued by {s.issuer!r}"
            ) from None
        except jwt.InvalidSignatureError:
            raise UnauthenticatedError(
                "unauthenticated: the JWT's signature does not verify"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError(f"unauthenticated: the JWT is not accepted: {exc}") from None
        if self._clock() > float(claims["exp"]) + s.leeway:  # the verifier's own clock decides
            raise UnauthenticatedError("unauthenticated: the JWT has expired; get a new token")
        return claims

    def _key(self, kid: object) -> jwt.PyJWK:
        """Return the key ``kid`` names, reading the JWKS again (rate-limited) if it is unknown."""
        name = kid if isinstance(kid, str) else None
        key = self._lookup(name)
        if key is not None:
            return key
        with self._lock:
            key = self._lookup(name)
            if key is None and (
                time.monotonic() - self._fetched_at >= self._settings.jwks_refresh_interval
            ):
                try:
                    self._replace_keys()
                finally:
                    self._fetched_at = time.monotonic()
                    self.fetches += 1
                key = self._lookup(name)
        if key is None:
            raise UnauthenticatedError(
                "unauthenticated: the JWT is signed with a key the issuer does not publish "
                f"(kid {name!r})"
            )
        return key

    def _refresh_aged_keys(self) -> None:
        """Read the JWKS again because the keys are ``jwks_max_age`` old (one thread does it)."""
        if not self._lock.acquire(blocking=False):
            return  # another thread is reading them; use the current keys meanwhile
        try:
            if time.monotonic() - self._fetched_at < self._settings.jwks_max_age:
                return
            try:
                self._replace_keys()
            except (ConfigError, UnavailableError) as exc:
                _log.warning("keeping the JWT keys read before: %s", exc.message)
            finally:
                self._fetched_at = time.monotonic()
                self.fetches += 1
        finally:
            self._lock.release()

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid) if kid is not None else None

    def _replace_keys(self) -> None:
        """Read the JWKS again; forget verifications by keys it no longer publishes as before."""
        keys, published = self._read_keys()
        kept = {kid for kid, jwk in published.items() if self._published.get(kid) == jwk}
        self._cache = {t: entry for t, entry in self._cache.items() if entry[2] in kept}
        self._keys, self._published = keys, published

    def _read_keys(self) -> tuple[dict[str | None, jwt.PyJWK], dict[str | None, str]]:
        """Return the JWKS's keys by ``kid``, and each key's JWK as canonical JSON."""
        s = self._settings
        where = str(s.jwks_file) if s.jwks_file is not None else str(s.jwks_url)
        try:
            if s.jwks_file is not None:
                text = s.jwks_file.read_text(encoding="utf-8")
            else:
                with urllib.request.urlopen(str(s.jwks_url), timeout=FETCH_TIMEOUT) as reply:
                    text = reply.read().decode("utf-8")
            loaded = json.loads(text)
            key_set = jwt.PyJWKSet.from_dict(loaded)
        except OSError as exc:
            raise UnavailableError(
                f"cannot read the JWKS at {where}: {exc}", address=where
            ) from None
        except (ValueError, jwt.PyJWKSetError) as exc:
            raise ConfigError(
                f"the JWKS at {where} is not a usable JSON Web Key Set: {exc}",
                key="auth.jwt.jwks_file" if s.jwks_file is not None else "auth.jwt.jwks_url",
            ) from None
        published = {
            jwk.get("kid"): json.dumps(jwk, sort_keys=True)
            for jwk in loaded["keys"]
            if isinstance(jwk, dict)
        }
        return {key.key_id: key for key in key_set.keys}, published

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        s = self._settings
        subject = claims.get(s.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise UnauthenticatedError(
                f"unauthenticated: the JWT has no {s.subject_claim!r} claim naming the caller"
            )
        problem = subject_problem(subject)
        if problem is not None:
            raise UnauthenticatedError(
                f"unauthenticated: the JWT's {s.subject_claim!r} claim cannot name a caller: "
                f"{problem}"
            )
        permissions: set[Permission] = set()
        for value in _names(claims, s.permissions_claim) or ():
            if s.permission_map:
                permissions.update(s.permission_map.get(value, ()))
            elif value in _PERMISSIONS:
                permissions.add(_PERMISSIONS[value])
            # else another service's scope ("openid", "email"): not ours, ignored
        projects = _names(claims, s.projects_claim)
        return Caller(
            subject=subject,
            permissions=frozenset(permissions),
            projects=None if projects is None else frozenset(projects),
            kind="jwt",
        )


_PERMISSIONS = {p.value: p for p in Permission}
"""The permission names a JWT may carry: exactly these (no other case, no spaces around)."""


def _names(claims: Mapping[str, Any], claim: str) -> tuple[str, ...] | None:
    """Return the names a list-of-names claim holds; ``None`` when the JWT lacks the claim.

    A list of non-empty strings is taken as it is; a string is a space-separated list (as
    OAuth's ``scope``; identity providers send a single value as a string).

    Raises:
        UnauthenticatedError: If the claim is present but is no such list or string: a number,
            a boolean, an object, ``null``, an empty or blank string, or a list holding anything
            but non-empty strings.
    """
    if claim not in claims:
        return None
    value = claims[claim]
    if isinstance(value, str):
        names = value.split()
        if names:
            return tuple(names)
    elif isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise UnauthenticatedError(
        f"unauthenticated: the JWT's {claim!r} claim is {_shape(value)}; it must be a list of "
        "names or a space-separated string of names (leave the claim out to mean every project "
        "or no permission); ask the identity provider's administrator to fix the claim"
    )


def _shape(value: object) -> str:
    """Describe a claim's value without quoting it at length."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "an empty string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list holding something other than non-empty strings"
    return f"a {type(value).__name__}"


__all__ = ["CACHE_SIZE", "FETCH_TIMEOUT", "JwtVerifier"]
