"""A slow, obviously correct point-in-time join in plain Python, to check engines against.

It is the semantics of DESIGN §3 written as directly as possible: for every entity row and every
table, look at every feature row. Nothing here is shared with the engines, so an engine bug cannot
hide in code both use. Use it on small inputs only (entity rows x feature rows comparisons).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"


@dataclass(frozen=True)
class ReferenceTable:
    """A feature table's rows for the reference join.

    Attributes:
        name: The table's name (output columns are ``name__feature``).
        entities: The entities keying it; each is a key in every row and every entity row.
        features: The features to output, in order.
        rows: The feature rows: a value per entity and feature, ``event_timestamp`` (an aware
            datetime) and optionally ``created_timestamp`` (an aware datetime or ``None``).
        max_age: The lookback bound, or ``None``.
    """

    name: str
    entities: Sequence[str]
    features: Sequence[str]
    rows: Sequence[Mapping[str, Any]]
    max_age: timedelta | None = None


def point_in_time_join(
    entity_rows: Sequence[Mapping[str, Any]], tables: Sequence[ReferenceTable]
) -> list[dict[str, Any]]:
    """Join ``entity_rows`` with ``tables`` point-in-time correctly.

    Args:
        entity_rows: Rows with ``event_timestamp`` (an aware datetime) and every entity the
            tables are keyed by; other keys are passed through.
        tables: The feature tables.

    Returns:
        One dict per entity row, in order: the row's own items, then ``table__feature`` for each
        table's features. A table's values come from its candidate row with the greatest
        ``event_timestamp``, ties broken by the greatest ``created_timestamp`` (``None``
        lowest), then by the later row in ``rows``; candidates have the row's keys and
        ``ts - max_age <= event_timestamp <= ts``. No candidate gives ``None`` values.
    """
    result: list[dict[str, Any]] = []
    for entity_row in entity_rows:
        out = dict(entity_row)
        ts: datetime = entity_row[EVENT_TIMESTAMP]
        for table in tables:
            best: Mapping[str, Any] | None = None
            for row in table.rows:
                if any(row[e] != entity_row[e] for e in table.entities):
                    continue
                event: datetime = row[EVENT_TIMESTAMP]
                if event > ts:
                    continue
                if table.max_age is not None and event < ts - table.max_age:
                    continue
                if best is None or _rank(row) >= _rank(best):
                    best = row  # on a full tie the later row wins, as it does in ingest()
            for feature in table.features:
                out[f"{table.name}__{feature}"] = None if best is None else best[feature]
        result.append(out)
    return result


def _rank(row: Mapping[str, Any]) -> tuple[datetime, bool, datetime | None]:
    # (event, has created, created): a missing created time sorts below every present one. Two
    # ranks reach the third item only when both created times are present (or both None, which
    # compare equal), so None is never ordered against a datetime.
    created = row.get(CREATED_TIMESTAMP)
    return (row[EVENT_TIMESTAMP], created is not None, created)


__all__ = ["ReferenceTable", "point_in_time_join"]
