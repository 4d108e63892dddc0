"""Read statuses and the one max-age rule every online store is served under.

A value read online is ``NOT_FOUND`` when the store holds no live row for its key,
``OUTSIDE_MAX_AGE`` when a row comes back but ``now - event_ts > max_age`` (the value is then
withheld), ``NULL_VALUE`` when the row is live and the value is null, and ``PRESENT`` otherwise.
The enum numbers are Feast's ``feast.serving.FieldStatus``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any


class FieldStatus(IntEnum):
    """The status of one value in an online read (Feast's numbers)."""

    INVALID = 0
    PRESENT = 1
    NULL_VALUE = 2
    NOT_FOUND = 3
    OUTSIDE_MAX_AGE = 4


PRESENT = FieldStatus.PRESENT
NULL_VALUE = FieldStatus.NULL_VALUE
NOT_FOUND = FieldStatus.NOT_FOUND
OUTSIDE_MAX_AGE = FieldStatus.OUTSIDE_MAX_AGE


def row_status(event_us: int | None, max_age_us: int | None, now_us: int) -> FieldStatus:
    """Return the status of the row read for one key.

    Args:
        event_us: The row's event time in microseconds since the epoch, or ``None`` when the store
            returned no row.
        max_age_us: The table's ``max_age`` in microseconds, or ``None`` when values never age out.
        now_us: The time of the read in microseconds since the epoch.

    Returns:
        ``NOT_FOUND``; ``OUTSIDE_MAX_AGE`` when ``now - event_ts > max_age``; else ``PRESENT`` (a
        live row, whose values may still be null: see :func:`value_statuses`).
    """
    if event_us is None:
        return NOT_FOUND
    if max_age_us is not None and now_us - event_us > max_age_us:
        return OUTSIDE_MAX_AGE
    return PRESENT


def row_statuses(
    event_us: Sequence[int | None], max_age_us: int | None, now_us: int
) -> list[FieldStatus]:
    """Return :func:`row_status` of every row (the same rule, one pass)."""
    if max_age_us is None:
        return [NOT_FOUND if ts is None else PRESENT for ts in event_us]
    oldest = now_us - max_age_us
    return [
        NOT_FOUND if ts is None else (OUTSIDE_MAX_AGE if ts < oldest else PRESENT)
        for ts in event_us
    ]


def value_statuses(
    values: list[Any],
    rows: Sequence[FieldStatus],
    *,
    all_live: bool = False,
    has_nulls: bool = True,
) -> list[FieldStatus]:
    """Return each value's status, and withhold (set to ``None``) the values of rows not live.

    Args:
        values: One feature's values, one per row; modified in place.
        rows: The row statuses from :func:`row_statuses`.
        all_live: Every row is ``PRESENT`` (a shortcut the caller may know of).
        has_nulls: Whether ``values`` may hold ``None`` (a shortcut: Arrow knows its null count).
    """
    if all_live:
        if not has_nulls:
            return [PRESENT] * len(values)
        return [NULL_VALUE if v is None else PRESENT for v in values]
    out: list[FieldStatus] = []
    append = out.append
    for i, status in enumerate(rows):
        if status is PRESENT:
            append(NULL_VALUE if values[i] is None else PRESENT)
        else:
            values[i] = None
            append(status)
    return out


__all__ = [
    "NOT_FOUND",
    "NULL_VALUE",
    "OUTSIDE_MAX_AGE",
    "PRESENT",
    "FieldStatus",
    "row_status",
    "row_statuses",
    "value_statuses",
]
