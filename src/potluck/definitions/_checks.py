"""Checks shared by every definition: names, column names, labels and value types."""

from __future__ import annotations

import re
import unicodedata
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


COLUMN_NAME_RULE = (
    "a column name is non-empty, has no '/', '\\', '..', '=' or control characters (NUL "
    "included) and no leading or trailing whitespace; upper case, digits, inner spaces and other "
    "punctuation are fine"
)
"""What :func:`check_column_name` accepts, as its messages say it."""

PARTITION_FOLDER_SUFFIX = "=YYYY-MM-DD"
MAX_PATH_COMPONENT_BYTES = 255
MAX_PARTITION_COLUMN_BYTES = MAX_PATH_COMPONENT_BYTES - len(PARTITION_FOLDER_SUFFIX)
"""A partition folder ``<column>=YYYY-MM-DD`` must fit in one 255-byte path component."""

PARTITION_COLUMN_RULE = (
    "a partition column name is a column name that is also a safe folder name: non-empty, no "
    "'/', '\\', '..', '=' or control characters, no leading or trailing whitespace, not starting "
    f"with '_' or '.' (readers skip such folders), at most {MAX_PARTITION_COLUMN_BYTES} bytes in "
    "UTF-8"
)
"""What :func:`check_partition_column` accepts, as its messages say it."""


def _column_name_problem(value: str) -> str | None:
    """Return why ``value`` is not a valid column name, or ``None`` if it is one."""
    for bad in ("/", "\\", "..", "="):
        if bad in value:
            return f"it contains '{bad}'"
    control = _control_character(value)
    if control is not None:
        return f"it contains the control character {control!r}"
    if value != value.strip():
        return "it starts or ends with whitespace"
    return None


def _control_character(value: str) -> str | None:
    return next((ch for ch in value if unicodedata.category(ch) == "Cc"), None)


def check_column_name(value: object, field: str, where: str | None = None) -> str:
    """Return ``value`` if it is a valid source column name, else raise naming ``field``.

    Source columns come from other tools, so upper case, inner spaces and punctuation are
    accepted; only what could leave a folder or break a ``<column>=<value>`` folder name is not.
    ``where`` starts the message when given (``"batch_source.field_mapping key"``); ``field``
    stays the dotted field name.

    Raises:
        DefinitionError: If ``value`` is not a non-empty string, or holds ``/``, a backslash,
            ``..``, ``=`` or a control character (NUL included), or starts or ends with whitespace.
    """
    if not isinstance(value, str) or not value:
        raise DefinitionError(
            f"{where or field}: must be a non-empty column name, got {value!r}", field=field
        )
    problem = _column_name_problem(value)
    if problem is not None:
        raise DefinitionError(
            f"{where or field}: invalid column name {value!r}: {problem}; {COLUMN_NAME_RULE}",
            field=field,
        )
    return value


def check_partition_column(value: object, field: str) -> str:
    """Return ``value`` if it can name ``<value>=YYYY-MM-DD`` partition folders, else raise.

    A partition column name is a valid column name (:func:`check_column_name`) that does not
    start with ``_`` or ``.`` (every reader skips such folders, so the rows would never be read)
    and whose folder name fits in one 255-byte path component.

    Raises:
        DefinitionError: If ``value`` is not such a name; ``field`` names the field.
    """
    if not isinstance(value, str) or not value:
        return check_column_name(value, field)  # raises, as for every column
    problem = _partition_column_problem(value)
    if problem is not None:
        raise DefinitionError(
            f"{field}: invalid partition column name {value!r}: {problem}; {PARTITION_COLUMN_RULE}",
            field=field,
        )
    return value


def _partition_column_problem(value: str) -> str | None:
    """Return why ``value`` cannot name partition folders, or ``None`` if it can."""
    problem = _column_name_problem(value)
    if problem is not None:
        return problem
    if value.startswith(("_", ".")):
        return f"it starts with '{value[0]}'"
    size = len(value.encode("utf-8"))
    if size > MAX_PARTITION_COLUMN_BYTES:
        return f"it is {size} bytes in UTF-8"
    return None


def check_inside_source(relative_path: str, table: str) -> str:
    """Return ``relative_path`` if a file written there stays inside its batch source folder.

    ``ingest()`` calls this on every file path it writes, relative to the source folder
    (``day=2024-05-01/part-....parquet``), as a last defence against a definition stored before
    partition column names were checked: the partition folder is the only part of such a path
    that comes from a definition.

    Args:
        relative_path: A ``/``-separated path relative to the batch source folder.
        table: The feature table being written, for the message.

    Returns:
        ``relative_path``, unchanged.

    Raises:
        DefinitionError: If the path is absolute, has an empty, ``.`` or ``..`` component, a
            backslash or a control character, or a folder starting with ``_`` or ``.`` (which
            readers skip); ``field`` is ``batch_source.date_partition_column``, ``table`` and
            ``path`` are set.
    """
    problem = _outside_problem(relative_path)
    if problem is not None:
        field = "batch_source.date_partition_column"
        raise DefinitionError(
            f"feature table {table}: ingest refuses to write {relative_path!r}: {problem}; "
            f"the partition folder comes from {field}, so apply the table again with a valid "
            f"one ({PARTITION_COLUMN_RULE})",
            field=field,
            table=table,
            path=relative_path,
        )
    return relative_path


def _outside_problem(relative_path: str) -> str | None:
    """Return why writing ``relative_path`` could leave (or hide in) the source folder."""
    if relative_path.startswith("/"):
        return "it is an absolute path"
    parts = relative_path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return f"it has the path component {part!r}"
        if "\\" in part:
            return f"its component {part!r} contains '\\'"
        control = _control_character(part)
        if control is not None:
            return f"its component {part!r} contains the control character {control!r}"
    hidden = next((f for f in parts[:-1] if f.startswith(("_", "."))), None)
    if hidden is not None:
        return f"its folder {hidden!r} starts with '{hidden[0]}', and readers skip such folders"
    return None


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
