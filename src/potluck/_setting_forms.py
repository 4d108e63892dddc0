"""The forms of settings that drivers read later: URLs, ``host:port`` addresses, memory sizes.

Each check returns its value unchanged or raises ``ValueError`` with the reason, for pydantic
validators (``potluck.config`` turns them into a :class:`~potluck.errors.ConfigError` naming the
key, the value with its secrets masked, and every source read). A reason never repeats a
secret: values are shown by the caller through :func:`potluck._redact.redact_url`.

Checked here, when settings load, rather than when a driver first parses them: a port that is
not a number, credentials whose end cannot be told, or a URL without a scheme would otherwise
surface later as a driver's ``ValueError`` (or, worse, a host name made of half a password).
"""

from __future__ import annotations

import re

from potluck._redact import find_credentials, mask_query_secrets
from potluck._redis_url import check_database_and_query

MAX_PORT = 65_535

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+")
_MEMORY = re.compile(r"\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGT]i?B)\s*", re.IGNORECASE)
_MEMORY_UNITS = {
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
"""Bytes per unit of a memory size, as DuckDB reads them."""
_PERCENT = re.compile(r"\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*%")  # DuckDB: no space after %
_ENCODE_HINT = (
    "cannot tell where its credentials end; percent-encode '@', '/', '?' and '#' in the user "
    "name and password (%40, %2F, %3F, %23)"
)
REGISTRY_EXAMPLE = "sqlite:///.potluck/registry.db or postgresql://user@host:5432/database"
REGISTRY_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")
"""The registry URL schemes potluck supports: a SQLite file, or PostgreSQL through psycopg 3
(``potluck[postgres]``), which is also what plain ``postgresql://`` uses. A scheme may be written
in any case (it is stored in lower case, as SQLAlchemy reads it)."""
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _authority(url: str, start: int) -> str:
    """Return the authority of ``url``: from ``start`` to the first ``/``, ``?`` or ``#``."""
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, start)
        if 0 <= found < end:
            end = found
    return url[start:end]


def _check_port(port: str) -> None:
    if not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise ValueError(f"port {port!r} is not a number from 1 to {MAX_PORT}")


def _check_server_url(url: str, start: int, *, one_at: bool) -> None:
    """Check the authority of a URL whose scheme ends at ``start``: credentials, host, port.

    ``one_at`` says the driver reads the credentials up to an ``@`` wherever it is
    (SQLAlchemy), so the URL may hold only the one that ends them.
    """
    authority = _authority(url, start)
    userinfo, at, hostport = authority.rpartition("@")
    if one_at and url.count("@", start) > int(bool(at)):
        raise ValueError(
            "it holds an '@' besides the one that ends the credentials, and the database "
            "driver would read the credentials up to it; percent-encode it as %40"
        )
    credentials = find_credentials(mask_query_secrets(url))
    if (credentials.end if credentials else None) != (start + len(userinfo) if at else None):
        raise ValueError(_ENCODE_HINT)
    if hostport.endswith("]") or ":" not in hostport:
        host, port = hostport, None
    else:
        host, _, port = hostport.rpartition(":")
    if host and not _HOST.fullmatch(host):
        raise ValueError(f"host {host!r} is not a host name or IP address")
    if port is not None:
        _check_port(port)


def check_registry_url(url: str) -> str:
    """Check a registry URL: one of :data:`REGISTRY_SCHEMES`, with a numeric port.

    Its credentials must end where SQLAlchemy reads their end: no other raw ``@`` (in the
    password or the query). Other databases SQLAlchemy knows (``mysql://``...) are refused
    here, when settings load, rather than when their driver is found missing.

    Returns:
        The URL, its scheme in lower case.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        raise ValueError(f"expected a URL such as {REGISTRY_EXAMPLE}")
    name = scheme.group(1).lower()
    if name not in REGISTRY_SCHEMES:
        raise ValueError(
            f"the scheme {scheme.group(1)!r} is not supported; the registry is a SQLite file "
            "(sqlite:///path/to/registry.db) or a PostgreSQL database "
            "(postgresql://user@host:5432/database, or postgresql+psycopg://...)"
        )
    url = name + url[len(name) :]
    if name != "sqlite":
        _check_server_url(url, scheme.end(), one_at=True)
    return url


def check_redis_url(url: str) -> str:
    """Check a Redis URL: ``redis://``, ``rediss://`` or ``unix://``, with a numeric port.

    The database (``/DB``, a whole number) and every query parameter are checked too, against
    what redis-py reads (see :mod:`potluck._redis_url`).
    """
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1) not in REDIS_SCHEMES:
        raise ValueError(
            "expected redis://host:port/db (credentials as user:password@ before the host), "
            "rediss://... for TLS, or unix:///path/to/socket"
        )
    if scheme.group(1) != "unix":
        _check_server_url(url, scheme.end(), one_at=False)
    check_database_and_query(url)
    return url


def check_address(address: str) -> str:
    """Check a ``host:port`` address (of a gRPC service or a cluster node)."""
    if "@" in address:
        raise ValueError("expected host:port; credentials are not supported in an address")
    if _SCHEME.match(address):
        raise ValueError("expected host:port without a scheme, such as 127.0.0.1:6565")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not _HOST.fullmatch(host):
        raise ValueError("expected host:port, such as 127.0.0.1:6565")
    _check_port(port)
    return address


def check_memory_limit(value: str) -> str:
    """Check a memory size the way DuckDB reads ``memory_limit``: ``4GB``, ``512MiB``, ``80%``.

    A size must be within DuckDB's range, less than 2^64 bytes. How small a limit DuckDB can
    work in depends on the query, so a tiny one fails when a query runs out of memory.
    """
    amount = _MEMORY.fullmatch(value) or _PERCENT.fullmatch(value)
    if amount is None:
        raise ValueError(
            "expected a number and a unit, such as 4GB or 512MiB (KB, MB, GB, TB for powers of "
            "1000; KiB, MiB, GiB, TiB for powers of 1024), or a share of RAM such as 80%"
        )
    number = float(amount.group("number"))
    if number <= 0:
        raise ValueError("must be more than 0")
    if amount.re is _PERCENT and number > 100:
        raise ValueError("a share of RAM is at most 100%")
    if amount.re is _MEMORY and number * _MEMORY_UNITS[amount.group("unit").lower()] >= 2.0**64:
        # DuckDB multiplies the number (a double) by the unit and refuses 2^64 bytes or more.
        raise ValueError(
            "is beyond DuckDB's range: a memory limit is less than 2^64 bytes (18446744TB, "
            "16777216TiB); use a smaller one, such as 80%"
        )
    return value


__all__ = [
    "MAX_PORT",
    "REDIS_SCHEMES",
    "REGISTRY_EXAMPLE",
    "REGISTRY_SCHEMES",
    "check_address",
    "check_memory_limit",
    "check_redis_url",
    "check_registry_url",
]
