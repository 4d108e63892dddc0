"""How often requests that name something the definitions cache lacks may reload it.

A request naming a table or feature the cache does not know reloads its project's definitions
before answering, so a table applied a moment ago is served at once. Unbounded, that lets any
client make the server read the registry on every request by naming things that do not exist.
:class:`MissBudget` is a token bucket per key (a project the cache holds, or one shared key for
every project it does not): ``burst`` reloads at once, then ``per_second`` on average; a miss
beyond that is answered from the cache as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable


class MissBudget:
    """Token buckets that bound how often misses may reload definitions, one per key.

    Not thread-safe: the caller holds its own lock around :meth:`take` and :meth:`keep_only`.

    Args:
        burst: Reloads allowed at once (the bucket's size).
        per_second: Reloads allowed per second on average (its refill rate).
        clock: Seconds from a monotonic clock.
    """

    def __init__(
        self,
        *,
        burst: int,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def take(self, key: Hashable) -> bool:
        """Spend one reload of ``key``'s budget; return whether there was one to spend."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def keep_only(self, keys: Collection[Hashable]) -> None:
        """Forget the buckets of every key not in ``keys`` (projects no longer cached)."""
        for key in [k for k in self._buckets if k not in keys]:
            del self._buckets[key]


__all__ = ["MissBudget"]
