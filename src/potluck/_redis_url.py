"""The database and query parameters of a Redis URL, checked as potluck's settings load.

redis-py's ``from_url`` reads ``redis://host:port/DB?name=value&...``: it keeps a path that is no
number as database 0 without a word, passes a query parameter it does not know on to the
connection class (a ``TypeError`` at the first command), and refuses a bad value with a message
that names neither the setting nor what to write. Here every part is checked up front, so a
bad URL is one :class:`ValueError` naming the part and what to write instead:

- the path is empty, ``/``, or ``/DB`` with ``DB`` a whole number (``unix://`` URLs name the
  socket in the path and the database only as ``?db=``);
- each query parameter is one of :data:`QUERY_PARAMETERS` that the URL's scheme allows, given
  once, with a value of its kind. The table holds the parameters of redis-py's ``from_url`` that
  mean something to potluck; the others (``decode_responses``, which would break potluck's
  binary values, ``retry_on_error``, ...) are refused by name.

Values of secret parameters (``password``, ``ssl_password``) are never repeated in a reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_DATABASES = 16
"""How many databases a Redis server has unless its ``databases`` setting says otherwise."""

_DIGITS = re.compile(r"[0-9]+")
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")
_TCP = ("redis", "rediss")
_ALL = ("redis", "rediss", "unix")
_TLS = ("rediss",)


def _whole(least: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not _DIGITS.fullmatch(value) or int(value) < least:
            return f"is not a whole number of at least {least}"
        return None

    return check


def _seconds(value: str) -> str | None:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        return "is not a number of seconds above 0, such as 2.5"
    return None


def _boolean(value: str) -> str | None:
    if value.lower() in _TRUE + _FALSE:
        return None
    return "is not true or false (also yes/no, 1/0)"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"is not one of {', '.join(choices)}"

    return check


def _text(value: str) -> str | None:
    return None


@dataclass(frozen=True)
class QueryParameter:
    """One query parameter potluck passes on to redis-py.

    Attributes:
        schemes: The URL schemes it is allowed with.
        check: Returns why a value is wrong (completing "'NAME' = VALUE ..."), or ``None``.
        secret: Its value is a secret, never shown.
    """

    schemes: tuple[str, ...]
    check: Callable[[str], str | None]
    secret: bool = False


QUERY_PARAMETERS: dict[str, QueryParameter] = {
    "db": QueryParameter(_ALL, _whole(0)),
    "username": QueryParameter(_ALL, _text),
    "password": QueryParameter(_ALL, _text, secret=True),
    "client_name": QueryParameter(_ALL, _text),
    "socket_timeout": QueryParameter(_ALL, _seconds),
    "socket_connect_timeout": QueryParameter(_ALL, _seconds),
    "socket_keepalive": QueryParameter(_TCP, _boolean),
    "retry_on_timeout": QueryParameter(_ALL, _boolean),
    "health_check_interval": QueryParameter(_ALL, _whole(0)),
    "max_connections": QueryParameter(_ALL, _whole(1)),
    "protocol": QueryParameter(_ALL, _one_of("2", "3")),
    "ssl_cert_reqs": QueryParameter(_TLS, _one_of("none", "optional", "required")),
    "ssl_check_hostname": QueryParameter(_TLS, _boolean),
    "ssl_ca_certs": QueryParameter(_TLS, _text),
    "ssl_ca_path": QueryParameter(_TLS, _text),
    "ssl_certfile": QueryParameter(_TLS, _text),
    "ssl_keyfile": QueryParameter(_TLS, _text),
    "ssl_password": QueryParameter(_TLS, _text, secret=True),
    "ssl_ciphers": QueryParameter(_TLS, _text),
}
"""The query parameters a Redis URL may hold, by name (compared with case, as redis-py does)."""


def check_database_and_query(url: str) -> None:
    """Check the path (the database) and the query of a Redis URL whose scheme is known good.

    Args:
        url: ``redis://...``, ``rediss://...`` or ``unix://...``.

    Raises:
        ValueError: Naming the database or the query parameter that is wrong, and what to
            write instead.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    in_path = _database_in_path(unquote(parts.path)) if scheme in _TCP else None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    seen: set[str] = set()
    for name, value in pairs:
        parameter = QUERY_PARAMETERS.get(name)
        if parameter is None or scheme not in parameter.schemes:
            raise ValueError(_unknown(name, scheme))
        if name in seen:
            raise ValueError(f"query parameter {name!r} is given twice; keep one")
        seen.add(name)
        if not value:
            raise ValueError(f"query parameter {name!r} has no value; give one or leave it out")
        problem = parameter.check(value)
        if problem is not None:
            shown = "" if parameter.secret else f" = {value!r}"
            raise ValueError(f"query parameter {name!r}{shown} {problem}")
    if in_path is not None and "db" in seen:
        raise ValueError(
            "the database is given twice, in the path and as ?db=; keep one (redis://host:port/DB)"
        )


def _database_in_path(path: str) -> int | None:
    """Return the database a ``redis://`` URL's path names (``/3``), ``None`` if it names none."""
    number = path[1:] if path.startswith("/") else path
    if not number:
        return None
    if not _DIGITS.fullmatch(number):
        raise ValueError(
            f"the path {path!r} names no database: write redis://host:port/DB with DB a whole "
            f"number from 0 (a server has databases 0 to {DEFAULT_DATABASES - 1} unless its "
            "'databases' setting allows more)"
        )
    return int(number)


def _unknown(name: str, scheme: str) -> str:
    parameter = QUERY_PARAMETERS.get(name)
    if parameter is not None:
        needs = " or ".join(f"{s}://" for s in parameter.schemes)
        return f"query parameter {name!r} needs a {needs} URL, not {scheme}://"
    allowed = ", ".join(n for n, p in QUERY_PARAMETERS.items() if scheme in p.schemes)
    return f"unknown query parameter {name!r}; a {scheme}:// URL takes {allowed}"


__all__ = ["DEFAULT_DATABASES", "QUERY_PARAMETERS", "QueryParameter", "check_database_and_query"]
