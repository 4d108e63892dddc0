"""Static bearer tokens: made at random, shown once, stored only as their SHA-256.

Why SHA-256 and not a slow password hash (argon2, bcrypt): a token is 32 random bytes (256 bits),
so no dictionary or brute-force search over the hash can find it; slow hashes exist for
low-entropy human passwords, and one would cost milliseconds on every request (the serving
budget for authentication is 50 µs). A fast hash also lets a server find the entry by its hash
in a dictionary, without comparing the token against each entry.

A tokens file is YAML: a list of entries ``{name, hash, permissions, projects}``
(:class:`~potluck.auth.settings.TokenEntry`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pydantic
import yaml

from potluck.auth.identity import Caller, Permission
from potluck.auth.settings import HASH_PREFIX, TokenEntry
from potluck.errors import ConfigError

TOKEN_PREFIX = "plk_"
"""How a potluck static token starts (so a leaked one can be recognised by secret scanners)."""

TOKEN_BYTES = 32
"""Random bytes in a token."""


def hash_token(token: str) -> str:
    """Return the stored form of ``token``: ``sha256:`` and its SHA-256 in hex."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """Return a new random token (``plk_`` and 43 URL-safe characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def read_tokens_file(path: Path) -> list[TokenEntry]:
    """Return the entries of the tokens file at ``path`` (none when it does not exist).

    Raises:
        ConfigError: If the file cannot be read, is not YAML, is not a list of entries, an entry
            is invalid (the message names the entry's position and key), or two entries share
            a name or a hash.
    """
    if not path.exists():
        return []
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _file_error(path, f"cannot be read: {exc}") from None
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise _file_error(path, f"must hold a list of token entries, got {type(loaded).__name__}")
    entries = []
    for index, raw in enumerate(loaded):
        try:
            entries.append(TokenEntry.model_validate(raw))
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "entry"
            reason = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
            raise _file_error(path, f"entry {index + 1}, {where}: {reason}") from None
    _check_unique(entries, str(path))
    return entries


def append_token(path: Path, entry: TokenEntry) -> None:
    """Add ``entry`` to the tokens file at ``path`` (created, readable by its owner only).

    Raises:
        ConfigError: If the file is invalid, or holds an entry named as ``entry`` already.
    """
    entries = read_tokens_file(path)
    if any(e.name == entry.name for e in entries):
        raise ConfigError(
            f"the tokens file {path} has a token named {entry.name!r} already; choose another "
            "name, or remove that entry first to replace it",
            key="auth.tokens_file",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump([entry.model_dump(mode="json", exclude_none=True)], sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as file:
        file.write(text)


def _file_error(path: Path, reason: str) -> ConfigError:
    return ConfigError(
        f"invalid tokens file {path}: {reason}; fix or regenerate it with `potluck auth token "
        "create`",
        key="auth.tokens_file",
    )


def _check_unique(entries: Sequence[TokenEntry], where: str) -> None:
    names: set[str] = set()
    hashes: set[str] = set()
    for entry in entries:
        if entry.name in names or entry.hash in hashes:
            what = "name" if entry.name in names else "hash"
            raise ConfigError(
                f"two token entries in {where} share the {what} of {entry.name!r}; keep one",
                key="auth.tokens",
            )
        names.add(entry.name)
        hashes.add(entry.hash)


class TokenTable:
    """The static tokens a server accepts, found by their hash.

    Args:
        entries: The accepted tokens' entries.
    """

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        listed = list(entries)
        _check_unique(listed, "the auth settings")
        self._callers: Mapping[str, Caller] = {
            entry.hash: Caller(
                subject=entry.name,
                permissions=frozenset(entry.permissions),
                projects=None if entry.projects is None else frozenset(entry.projects),
            )
            for entry in listed
        }

    def __len__(self) -> int:
        return len(self._callers)

    def caller(self, token: str) -> Caller | None:
        """Return the caller ``token`` belongs to, or ``None`` when it is no accepted token."""
        return self._callers.get(hash_token(token))


def parse_permissions(names: Iterable[str]) -> tuple[Permission, ...]:
    """Return the permissions ``names`` name, in order, without repeats.

    Raises:
        ValueError: If a name is no permission (the message lists them).
    """
    found: dict[Permission, None] = {}
    for name in names:
        found[Permission.parse(name)] = None
    return tuple(found)


__all__ = [
    "TOKEN_BYTES",
    "TOKEN_PREFIX",
    "TokenTable",
    "append_token",
    "hash_token",
    "new_token",
    "parse_permissions",
    "read_tokens_file",
]
