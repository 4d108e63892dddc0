"""Checks shared by every definition: names, labels and value types."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from potluck.errors import DefinitionError
from potluck.types import ValueType

NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")
MAX_NAME_LENGTH = 64
RESERVED_NAMES = frozenset({"event_timestamp", "created_timestamp", "ingestion_id"})
"""Column names potluck itself uses; no entity or feature may take them."""


def check_name(value: object, field: str) -> str:
    """Return ``value`` if it is a valid potluck name, else raise naming ``field``.

    Raises:
        DefinitionError: If ``value`` is not a string matching ``[a-z_][a-z0-9_]*`` of at most 64
            characters.
    """
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise DefinitionError(
            f"{field}: invalid name {value!r}; names match [a-z_][a-z0-9_]* "
            "(lower-case letters, digits and underscores, not starting with a digit)",
            field=field,
        )
    if len(value) > MAX_NAME_LENGTH:
        raise DefinitionError(
            f"{field}: name {value[:20]!r}... is {len(value)} characters; "
            f"the limit is {MAX_NAME_LENGTH}",
            field=field,
        )
    return value


def check_column_name(value: object, field: str) -> str:
    """Return ``value`` if it is a non-empty string (source column names are free-form)."""
    if not isinstance(value, str) or not value:
        raise DefinitionError(
            f"{field}: must be a non-empty column name, got {value!r}", field=field
        )
    return value


def check_not_reserved(name: str, field: str) -> None:
    """Raise if ``name`` is one of the column names potluck reserves."""
    if name in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        raise DefinitionError(
            f"{field}: {name!r} is reserved for potluck's own columns ({reserved}); choose "
            "another name",
            field=field,
        )


def check_value_type(value: object, field: str, where: str | None = None) -> ValueType:
    """Return ``value`` as a :class:`ValueType`, raising a definition error naming ``field``.

    ``where`` starts the message when given (``"feature conv_rate: value_type"``); ``field``
    stays the dotted field name (``"feature.value_type"``).
    """
    try:
        return ValueType.parse(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise DefinitionError(f"{where or field}: {exc}", field=field) from None


def check_labels(value: object, field: str, where: str | None = None) -> dict[str, str]:
    """Return ``value`` as a fresh ``dict[str, str]``, raising if it is not one.

    ``where`` starts the message when given; ``field`` stays the dotted field name.
    """
    if value is None:
        return {}
    where = where or field
    if not isinstance(value, Mapping):
        raise DefinitionError(f"{where}: must be a mapping of strings, got {value!r}", field=field)
    labels: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            raise DefinitionError(
                f"{where}: labels map non-empty strings to strings, got {key!r}: {item!r}",
                field=field,
            )
        labels[key] = item
    return labels


def check_str(value: object, field: str) -> str:
    """Return ``value`` if it is a string."""
    if not isinstance(value, str):
        raise DefinitionError(f"{field}: must be a string, got {value!r}", field=field)
    return value


def set_frozen(obj: Any, name: str, value: Any) -> None:
    """Assign ``name`` on a frozen dataclass during ``__post_init__`` normalisation."""
    object.__setattr__(obj, name, value)
