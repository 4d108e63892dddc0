"""A brute-force model of what an online store holds, for property tests to compare against.

It does not store "the current value": it keeps every row ever accepted, in write order, and
answers each question from that whole history, straight from the definitions in DESIGN §3:

- a row whose ``event + max_age <= now`` when written is skipped;
- the value of a key is its row with the greatest ``(event, created)`` (a null created time
  sorts first), the earliest written among exact ties, and reads as absent once
  ``event + max_age <= now``;
- a write batch *writes* a key when its best row for the key beats the key's value before the
  batch; every other row of the batch is *skipped*.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from potluck.online.base import WriteResult


@dataclass(frozen=True)
class ReferenceRow:
    """One written row: its key, times in µs since the epoch, and feature values."""

    key: Hashable
    event_us: int
    created_us: int | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> tuple[int, float]:
        """What newer-wins compares: event time, then created time with null lowest."""
        return (self.event_us, float("-inf") if self.created_us is None else self.created_us)


def _best(rows: Sequence[ReferenceRow]) -> ReferenceRow | None:
    """The greatest row by rank, the earliest one among ties."""
    best: ReferenceRow | None = None
    for row in rows:
        if best is None or row.rank > best.rank:
            best = row
    return best


class ReferenceOnlineStore:
    """Newer-wins by brute force over the full write history of one table."""

    def __init__(self, max_age_us: int | None = None) -> None:
        self.max_age_us = max_age_us
        self.history: list[ReferenceRow] = []

    def _expired(self, row: ReferenceRow, now_us: int) -> bool:
        return self.max_age_us is not None and row.event_us + self.max_age_us <= now_us

    def write(self, rows: Sequence[ReferenceRow], now_us: int) -> WriteResult:
        """Apply one write batch at ``now_us``; return what a store must report for it."""
        live = [row for row in rows if not self._expired(row, now_us)]
        written = 0
        for key in {row.key for row in live}:
            incoming = _best([row for row in live if row.key == key])
            stored = _best([row for row in self.history if row.key == key])
            assert incoming is not None
            if stored is None or self._expired(stored, now_us) or incoming.rank > stored.rank:
                written += 1
        self.history.extend(live)
        return WriteResult(written=written, skipped=len(rows) - written)

    def read(self, key: Hashable, now_us: int) -> ReferenceRow | None:
        """The row a store must return for ``key`` at ``now_us`` (``None``: absent)."""
        best = _best([row for row in self.history if row.key == key])
        if best is None or self._expired(best, now_us):
            return None
        return best


__all__ = ["ReferenceOnlineStore", "ReferenceRow"]
