"""Credentials in URLs and settings, found and masked before anything is shown.

Every message, log line, job record and description that may hold a setting's URL passes it
through :func:`redact_url` (one URL) or :func:`redact_text` (free text, such as a driver's error),
so a password never leaves the process in clear, whatever the URL's form:

- ``scheme://user:password@host/...`` and ``scheme://:password@host`` (Redis);
- a URL without a scheme, ``user:password@host:6379``;
- a password holding ``@``, ``:``, ``/``, ``?`` or ``#``: the credentials run to the **last** ``@``,
  so a raw ``@`` in a password is masked whole (the host shown may then be cut short: masking
  errs on the side of hiding);
- a secret in the query string: ``?password=...``, ``?token=...``, an object store's
  ``?access_key=...&secret_key=...&session_token=...``, a signed URL's ``X-Amz-Signature=...``
  and the like (:func:`is_secret_key`);
- object-store URLs like any other: ``s3://KEY:SECRET@bucket/path``, ``gs://user:pw@bucket``,
  ``hdfs://user:pw@host:8020/path`` (a secret key may hold ``/`` and ``+``).

The masked form keeps the scheme, the user name, the host and the rest, and puts ``***`` where
the secret was: ``postgresql://potluck:***@db:5432/features``. The placeholder ``user:password``
that potluck's own hints write (``postgresql://user:password@host:port/database``,
``redis://[user:password@]host:port/db``) is left as it is: it is no one's secret.
"""

from __future__ import annotations

import re
import string
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
        "ssl_password",
        "sig",
        "sas",
        "external_id",
    }
)
"""Query-string keys whose values are secrets (compared without case, ``-`` read as ``_``)."""

SECRET_KEY_PARTS = ("password", "passwd", "secret", "token", "signature", "credential")
"""A query key that holds one of these, or ends in ``key``, is a secret too: pyarrow's and the
object stores' ``session_token``, ``access_key``, ``account_key``, ``sas_token``,
``client_secret``, a signed URL's ``X-Amz-Signature``, ``X-Amz-Credential`` and
``X-Amz-Security-Token`` (masking errs on the side of hiding)."""

PLACEHOLDER_CREDENTIALS = ("user", "password")
"""The user name and password that hints show as placeholders; never masked."""

MIN_SECRET_LENGTH = 3
"""Known secrets shorter than this are only masked inside URLs, never in free text (replacing a
two-letter password everywhere would garble every message)."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_PARAMETER = re.compile(r"(?P<key>(?:^|(?<=[?&;]))[A-Za-z0-9_.\-]+)=(?P<value>[^&#;]*)")
_WORD = re.compile(r"[^\s'\"<>]+")
"""A run of text that may hold a URL: URLs in messages end at a space or a quote."""
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+.-")
_SENTENCE_PUNCTUATION = ".,:;()[]"
"""Characters that end a URL's word without being part of it (the sentence around it)."""
_NOT_IN_USERINFO = re.compile(r"([(),])")


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


def is_secret_key(key: str) -> bool:
    """Whether a query-string key holds a secret: see :data:`SECRET_QUERY_KEYS`.

    Example:
        >>> is_secret_key("X-Amz-Security-Token"), is_secret_key("region")
        (True, False)
    """
    name = key.lower().replace("-", "_")
    return (
        name in SECRET_QUERY_KEYS
        or name.endswith("key")
        or any(part in name for part in SECRET_KEY_PARTS)
    )


def _secret_parameters(url: str) -> list[re.Match[str]]:
    return [m for m in _QUERY_PARAMETER.finditer(url) if is_secret_key(m.group("key"))]


def mask_query_secrets(url: str) -> str:
    """Return ``url`` with the values of its secret query keys (``password=``...) masked."""

    def mask(match: re.Match[str]) -> str:
        key = match.group("key")
        return f"{key}={MASK}" if is_secret_key(key) else match.group(0)

    return _QUERY_PARAMETER.sub(mask, url)


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
    if found is not None and found.password is not None and not _placeholder(found):
        url = f"{url[: found.start]}{found.username}:{MASK}{url[found.end :]}"
    return url


def _placeholder(found: Credentials) -> bool:
    return (found.username.lstrip("["), found.password) == PLACEHOLDER_CREDENTIALS


def url_secrets(url: str) -> set[str]:
    """Return the secrets ``url`` holds: its password and secret query values.

    Each is returned as written and percent-decoded; empty values are left out.
    """
    found: set[str] = set()
    credentials = find_credentials(mask_query_secrets(url))
    if credentials is not None and credentials.password and not _placeholder(credentials):
        found.add(credentials.password)
    found.update(m.group("value") for m in _secret_parameters(url) if m.group("value"))
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


def _without_punctuation(text: str) -> tuple[str, str]:
    """Split the sentence punctuation that ends ``text`` (``).``) off it."""
    kept = text.rstrip(_SENTENCE_PUNCTUATION)
    return kept, text[len(kept) :]


def _redact_word(word: str) -> str:
    """Mask the URL a word of text holds: ``scheme://...`` or, without a scheme, ``user:pw@host``.

    A URL with a scheme runs from the scheme to the end of the word; one without runs from the
    last ``=`` before its ``@`` (``url=user:pw@host``), within ``(``, ``)`` or ``,``. Sentence
    punctuation at the end is left out. Linear in the word's length, whatever it holds.
    """
    mark = word.find("://")
    if mark > 0:
        start = mark
        while start > 0 and word[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < mark and word[start] not in string.ascii_letters:
            start += 1
        if start < mark:
            url, end = _without_punctuation(word[start:])
            return f"{_redact_word(word[:start])}{redact_url(url)}{end}"
    if "@" not in word:
        return word
    pieces = _NOT_IN_USERINFO.split(word)
    for i, piece in enumerate(pieces):
        at = piece.rfind("@")
        if at > 0:
            begin = piece.rfind("=", 0, at) + 1
            url, end = _without_punctuation(piece[begin:])
            pieces[i] = f"{piece[:begin]}{redact_url(url)}{end}"
    return "".join(pieces)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every URL in it redacted and every known secret replaced.

    Args:
        text: Free text: an error message, a driver's message, a log line.
        secrets: Secrets to mask wherever they appear (see :func:`url_secrets`); those shorter
            than :data:`MIN_SECRET_LENGTH` are only masked inside URLs.
    """
    text = _WORD.sub(lambda m: _redact_word(m.group(0)), text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


__all__ = [
    "MASK",
    "PLACEHOLDER_CREDENTIALS",
    "SECRET_QUERY_KEYS",
    "SECRET_KEY_PARTS",
    "Credentials",
    "find_credentials",
    "is_secret_key",
    "mask_query_secrets",
    "redact_text",
    "redact_url",
    "secrets_in",
    "url_secrets",
]
