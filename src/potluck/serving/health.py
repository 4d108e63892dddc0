"""Whether a serving process is ready: its online store answers a cheap, rate-limited ping.

A serving process is *live* while it answers at all, and *ready* while it can also read its
online store. Both transports ask one :class:`StoreHealth`: HTTP ``GET /health`` (readiness;
``GET /health/live`` is liveness) and the gRPC health service ``grpc.health.v1.Health``
(services ``""`` and ``feast.serving.ServingService`` are readiness, ``liveness`` is liveness).

A check pings the store (:meth:`potluck.online.base.Pingable.ping`) with a short timeout
(:data:`DEFAULT_PING_TIMEOUT`) and keeps the answer for :data:`DEFAULT_CACHE_SECONDS`; checks in
that time, and checks that arrive while a ping runs, get the same answer. So however often load
balancers and orchestrators probe, the store gets at most one ping a second per process, and a
probe never waits on the store's own (longer) timeouts. A store without the ``Pingable``
ability is ready whenever the process serves. When readiness changes, one log line says so and
the listeners (the gRPC health service, for its ``Watch`` streams) are told.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from potluck.errors import PotluckError
from potluck.online.base import OnlineStore, Pingable

logger = logging.getLogger(__name__)

DEFAULT_PING_TIMEOUT = 0.5
"""Seconds a readiness check waits for the online store."""

DEFAULT_CACHE_SECONDS = 1.0
"""Seconds a readiness answer is reused before the store is pinged again."""


@dataclass(frozen=True)
class Readiness:
    """The answer of a readiness check.

    Attributes:
        ready: Whether the online store answered.
        reason: Why not, naming the store (the store's error message); empty when ready.
    """

    ready: bool
    reason: str = ""


READY = Readiness(ready=True)


class StoreHealth:
    """Readiness of one online store, pinged at most once per ``cache_seconds``.

    Args:
        store: The serving process's online store.
        timeout: Seconds a ping may take.
        cache_seconds: Seconds an answer is reused.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        store: OnlineStore,
        *,
        timeout: float = DEFAULT_PING_TIMEOUT,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._answer = READY
        self._asked_at: float | None = None
        self._listeners: list[Callable[[Readiness], None]] = []

    def on_change(self, listener: Callable[[Readiness], None]) -> None:
        """Call ``listener`` with the new answer whenever readiness changes."""
        self._listeners.append(listener)

    def check(self) -> Readiness:
        """Return whether the store answers, pinging it unless an answer is fresh enough.

        Never raises: a failed ping is an answer (not ready, with the reason).
        """
        with self._lock:  # one ping at a time; callers meanwhile wait for it and share it
            now = self._clock()
            if self._asked_at is not None and now - self._asked_at < self._cache_seconds:
                return self._answer
            answer = self._ping()
            self._asked_at = self._clock()
            changed, self._answer = answer != self._answer, answer
        if changed:
            self._tell(answer)
        return answer

    def _ping(self) -> Readiness:
        if not isinstance(self._store, Pingable):
            return READY
        try:
            self._store.ping(self._timeout)
        except PotluckError as exc:
            return Readiness(ready=False, reason=exc.message)
        except Exception as exc:  # a store's bug must not fail the health check itself
            logger.exception("pinging the online store failed")
            return Readiness(ready=False, reason=f"pinging the online store failed: {exc!r}")
        return READY

    def _tell(self, answer: Readiness) -> None:
        if answer.ready:
            logger.info("ready again: the online store answers")
        else:
            logger.warning("not ready: %s", answer.reason)
        for listener in self._listeners:
            listener(answer)


__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "DEFAULT_PING_TIMEOUT",
    "READY",
    "Readiness",
    "StoreHealth",
]
