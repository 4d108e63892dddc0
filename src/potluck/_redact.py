"""Credentials in URLs and settings, found and masked before anything is shown.

Every message, log line, job record and description that may hold a setting's URL passes it
through :func:`redact_url` (one URL) or :func:`redact_text` (free text, such as a driver's error),
so a password never leaves the process in clear, whatever the URL's form:

- ``scheme://user:password@host/...`` and ``scheme://:password@host`` (Redis);
- a URL without a scheme, ``user:password@host:6379``;
- a password holding ``@``, ``:``, ``/``, ``?`` or ``#``: the credentials run to the **last** ``@``,
  so a raw ``@`` in a password is masked whole (the host shown may then be cut short: masking
  errs on the side of hiding);
- a secret in the query string: ``?password=...``, ``?token=...`` and the like
  (:data:`SECRET_QUERY_KEYS`).

The masked form keeps the scheme, the user name, the host and the rest, and puts ``***`` where
the secret was: ``postgresql://potluck:***@db:5432/features``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

MASK = "***"
"""What a secret is replaced with."""

SECRET_QUERY_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "auth",
        "access_key",
        "secret_key",
        "api_key",
        "apikey",
        "sslpassword",
    }
)
"""Query-string keys whose values are secrets (compared without case)."""

MIN_SECRET_LENGTH = 3
"""Known secrets shorter than this are only masked inside URLs, never in free text (replacing a
two-letter password everywhere would garble every message)."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_SECRET = re.compile(
    r"(?P<key>(?:^|(?<=[?&;]))(?:" + "|".join(sorted(SECRET_QUERY_KEYS)) + r"))=(?P<value>[^&#;]*)",
    re.IGNORECASE,
)
_URL_IN_TEXT = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*"  # scheme://...
    r"|[^\s'\"<>(),=]+@[^\s'\"<>()@,]*)"  # user:password@host without a scheme
    r"[^\s'\"<>.,:;()\[\]]"  # not ending in the punctuation of the sentence around it
)


@dataclass(frozen=True)
class Credentials:
    """Where the credentials of a URL are, as :func:`find_credentials` reads them.

    Attributes:
        start: Index in the URL where the user info begins (after ``scheme://``).
        end: Index of the ``@`` that ends the user info.
        username: The text before the first ``:`` of the user info.
        password: The text after it; ``None`` when the user info has no ``:``.
    """

    start: int
    end: int
    username: str
    password: str | None


def mask_query_secrets(url: str) -> str:
    """Return ``url`` with the values of its secret query keys (``password=``...) masked."""
    return _QUERY_SECRET.sub(lambda m: f"{m.group('key')}={MASK}", url)


def find_credentials(url: str) -> Credentials | None:
    """Return where the user info of ``url`` is, or ``None`` if it has none.

    The user info runs from after ``scheme://`` (or the start, without a scheme) to the last
    ``@``, so a raw ``/``, ``?``, ``#`` or ``@`` in a password stays inside it. A body that
    starts with ``/`` (``sqlite:///path@x.db``) has no user info. Pass the URL through
    :func:`mask_query_secrets` first for an ``@`` inside a secret query value not to count.
    """
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    at = url.rfind("@", start)
    if at < 0 or url.startswith("/", start):
        return None
    userinfo = url[start:at]
    username, colon, password = userinfo.partition(":")
    return Credentials(start, at, username, password if colon else None)


def redact_url(url: str) -> str:
    """Return ``url`` with its password and secret query values replaced by ``***``.

    Example:
        >>> redact_url("redis://:s3cr@t@cache:6379/0?password=x")
        'redis://:***@cache:6379/0?password=***'
    """
    url = mask_query_secrets(url)
    found = find_credentials(url)
    if found is not None and found.password is not None:
        url = f"{url[: found.start]}{found.username}:{MASK}{url[found.end :]}"
    return url


def url_secrets(url: str) -> set[str]:
    """Return the secrets ``url`` holds: its password and secret query values.

    Each is returned as written and percent-decoded; empty values are left out.
    """
    found: set[str] = set()
    credentials = find_credentials(mask_query_secrets(url))
    if credentials is not None and credentials.password:
        found.add(credentials.password)
    found.update(m.group("value") for m in _QUERY_SECRET.finditer(url) if m.group("value"))
    return found | {unquote(s) for s in found}


def secrets_in(values: Iterable[object]) -> set[str]:
    """Return the secrets of every URL-like string in ``values``.

    Nested mappings, lists and tuples are searched too (a settings dump, a plug-in section).
    """
    found: set[str] = set()
    for value in values:
        if isinstance(value, str):
            found |= url_secrets(value)
        elif isinstance(value, dict):
            found |= secrets_in(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            found |= secrets_in(value)
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every URL in it redacted and every known secret replaced.

    Args:
        text: Free text: an error message, a driver's message, a log line.
        secrets: Secrets to mask wherever they appear (see :func:`url_secrets`); those shorter
            than :data:`MIN_SECRET_LENGTH` are only masked inside URLs.
    """
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


__all__ = [
    "MASK",
    "SECRET_QUERY_KEYS",
    "Credentials",
    "find_credentials",
    "mask_query_secrets",
    "redact_text",
    "redact_url",
    "secrets_in",
    "url_secrets",
]
