"""A brute-force model of what an online store holds, for property tests to compare against.

It keeps every row ever accepted, in write order, and per key the value a store must hold with
its expiry, straight from the definitions in DESIGN §3 and ``online/base.py``:

- a row expires at ``event + max_age`` (the table's max_age when written): it reads as present
  up to that instant included, as absent after;
- a write batch keeps, per key, its best row (greatest ``(event, created)``, a null created time
  first, the earliest among exact ties); that row *replaces* the key's value when there is no
  live value or the row beats it (is greater in ``WriteMode.NEWER``, greater or equal in
  ``WriteMode.RELOAD``). A replacing row that has expired already removes the value and stores
  nothing. Only rows that store a value count as *written*; all others are *skipped*;
- :meth:`ReferenceOnlineStore.extend_expiry` (a raised or removed max_age) gives each live
  value the expiry ``event + max_age`` where that is later, and never shortens one.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from potluck.online._values import MAX_ABS_MICROS, MAX_AGE_CAP_MICROS
from potluck.online.base import WriteMode, WriteResult


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


@dataclass
class _Held:
    """A key's value and when it expires (``None``: never)."""

    row: ReferenceRow
    expire_us: int | None


def _best(rows: Sequence[ReferenceRow]) -> ReferenceRow | None:
    """The greatest row by rank, the earliest one among ties."""
    best: ReferenceRow | None = None
    for row in rows:
        if best is None or row.rank > best.rank:
            best = row
    return best


class ReferenceOnlineStore:
    """Newer-wins by brute force for one table whose ``max_age`` may change."""

    def __init__(self, max_age_us: int | None = None) -> None:
        self.max_age_us = max_age_us
        self.history: list[ReferenceRow] = []
        self._held: dict[Hashable, _Held] = {}

    def _expiry(self, row: ReferenceRow) -> int | None:
        if self.max_age_us is None:
            return None
        expire = row.event_us + min(self.max_age_us, MAX_AGE_CAP_MICROS)
        return None if expire > MAX_ABS_MICROS else expire

    def _live(self, key: Hashable, now_us: int) -> _Held | None:
        held = self._held.get(key)
        if held is None or (held.expire_us is not None and held.expire_us < now_us):
            return None
        return held

    def write(
        self, rows: Sequence[ReferenceRow], now_us: int, mode: WriteMode = WriteMode.NEWER
    ) -> WriteResult:
        """Apply one write batch at ``now_us``; return what a store must report for it."""
        written = 0
        for key in dict.fromkeys(row.key for row in rows):
            incoming = _best([row for row in rows if row.key == key])
            assert incoming is not None
            held = self._live(key, now_us)
            beats = held is None or incoming.rank > held.row.rank
            if mode is WriteMode.RELOAD and held is not None:
                beats = beats or incoming.rank == held.row.rank
            if not beats:
                continue
            expire = self._expiry(incoming)
            if expire is not None and expire < now_us:
                self._held.pop(key, None)
                continue
            self._held[key] = _Held(incoming, expire)
            self.history.append(incoming)
            written += 1
        return WriteResult(written=written, skipped=len(rows) - written)

    def extend_expiry(self, max_age_us: int | None, now_us: int) -> int:
        """Change the table's max_age to ``max_age_us`` and extend live values; count them."""
        self.max_age_us = max_age_us
        changed = 0
        for key in list(self._held):
            held = self._live(key, now_us)
            if held is None or held.expire_us is None:
                continue
            expire = self._expiry(held.row)
            if expire is None or expire > held.expire_us:
                held.expire_us = expire
                changed += 1
        return changed

    def read(self, key: Hashable, now_us: int) -> ReferenceRow | None:
        """The row a store must return for ``key`` at ``now_us`` (``None``: absent)."""
        held = self._live(key, now_us)
        return None if held is None else held.row


__all__ = ["ReferenceOnlineStore", "ReferenceRow"]
