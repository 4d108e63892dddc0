"""Refused calls: what the servers' interceptor and middleware report, and the audit of denials.

The gRPC interceptor (:mod:`potluck.auth.grpc`) and the HTTP middleware (:mod:`potluck.auth.http`)
call an :data:`OnRefusal` callback with a :class:`Refusal` for every call they refuse, after the
refusal is decided and without waiting for what the callback does.

:class:`DenialAudit` is the callback servers pass: it writes each permission denial to the audit
log (``Registry.record_denial``) from one background thread, so a slow or failing registry never
delays or fails the refused call (a failed write is logged as a warning and counted). Denials are
bounded: the first denial of a (caller, method, permission, project) is written at once; the same
denial again within :data:`COALESCE_SECONDS` is only counted, and the count is written as one more
entry (``<method> (denied N more times in 10 s)``) when that window ends. At most
:data:`MAX_PENDING` writes wait; beyond that new ones are dropped and counted.

Unauthenticated calls (no token, a bad or expired one) are not written to the audit log: they
have no identity to record, and anyone could flood the log with them. They are counted
(:attr:`DenialAudit.counts`; Online Serving shows them on ``/metrics``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from potluck.errors import PermissionDeniedError

_log = logging.getLogger(__name__)

UNAUTHENTICATED = "unauthenticated"
PERMISSION_DENIED = "permission_denied"

COALESCE_SECONDS = 10.0
"""How long a repeated identical denial is counted instead of written."""

MAX_PENDING = 1000
"""The most audit writes waiting; more are dropped (and counted)."""

MAX_WINDOWS = 10_000
"""The most distinct denials counted at once; more are written uncoalesced, if room remains."""

REPEATED = re.compile(r" \(denied [1-9][0-9]{0,9} more times in [0-9]+(?:\.[0-9]+)? s\)\Z")
"""The end :func:`repeats_suffix` gives a method, as Core's ``RecordDenial`` recognises it."""


def repeats_suffix(repeats: int, window: float) -> str:
    """Return what the entry of ``repeats`` coalesced denials adds to the method's name."""
    return f" (denied {repeats} more times in {window:g} s)"


@dataclass(frozen=True)
class Refusal:
    """One refused call.

    Attributes:
        status: :data:`UNAUTHENTICATED` or :data:`PERMISSION_DENIED`.
        method: The call: ``/potluck.core.v1.CoreService/Apply``, ``POST /get-online-features``.
        subject: The caller's audit identity (``token:<name>``, ``jwt:<sub>``); ``None`` when
            unauthenticated.
        permission: The permission it lacked; ``None`` when unauthenticated or when the method
            has no rule.
        project: The project the call acted on; ``None`` for none.
    """

    status: str
    method: str
    subject: str | None = None
    permission: str | None = None
    project: str | None = None


def denial(
    method: str, error: PermissionDeniedError, projects: Iterable[str | None] = ()
) -> Refusal:
    """Return the :class:`Refusal` of a call to ``method`` refused with ``error``.

    Args:
        method: The call.
        error: The refusal.
        projects: The projects the call acts on, for when ``error`` names none (a caller
            allowed every project is refused before they are looked up); the first is kept.
    """
    fields = error.attrs()
    project = fields.get("project") or next((p for p in projects if p), None)
    return Refusal(
        PERMISSION_DENIED,
        method,
        subject=fields.get("subject"),
        permission=fields.get("permission"),
        project=project,
    )


OnRefusal = Callable[[Refusal], None]
"""Told of every refused call; must not block (it runs in the call's thread or event loop)."""

RecordDenial = Callable[[str, str, str, str], None]
"""``(actor, project, permission, method)``: ``Registry.record_denial`` of the server's registry."""


@dataclass
class _Window:
    opened: float
    repeats: int = 0


class DenialAudit:
    """Write permission denials to the audit log in the background, coalesced and bounded.

    Args:
        record: Writes one entry (``registry.record_denial``); may block or raise.
        window: Seconds during which a repeated identical denial is counted, not written.
        max_pending: The most writes waiting.
        clock: Monotonic seconds (tests pass a fake).

    Attributes:
        counts: Refusals by outcome: ``unauthenticated``, ``permission_denied`` (seen),
            ``written``, ``coalesced`` (counted into a later entry), ``dropped`` (no room),
            ``failed`` (the registry write raised).
    """

    def __init__(
        self,
        record: RecordDenial,
        *,
        window: float = COALESCE_SECONDS,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._record = record
        self._window = window
        self._max_pending = max_pending
        self._clock = clock
        self._windows: dict[tuple[str, str, str, str], _Window] = {}
        self._pending: list[tuple[str, str, str, str]] = []
        self._busy = 0
        self._lock = threading.Condition()
        self._closed = False
        self.counts = dict.fromkeys(
            (UNAUTHENTICATED, PERMISSION_DENIED, "written", "coalesced", "dropped", "failed"), 0
        )
        self._thread = threading.Thread(target=self._run, name="potluck-denial-audit", daemon=True)
        self._thread.start()

    def __call__(self, refusal: Refusal) -> None:
        """Count ``refusal``; queue its audit entry if it is a new permission denial."""
        with self._lock:
            self.counts[refusal.status] = self.counts.get(refusal.status, 0) + 1
            if refusal.status != PERMISSION_DENIED or self._closed:
                return
            key = (
                refusal.subject or "",
                refusal.project or "",
                refusal.permission or "",
                refusal.method,
            )
            now = self._clock()
            self._close_windows(now)
            window = self._windows.get(key)
            if window is not None:
                window.repeats += 1
                self.counts["coalesced"] += 1
                return
            if len(self._windows) < MAX_WINDOWS:
                self._windows[key] = _Window(now)
            self._queue(key)

    def _queue(self, entry: tuple[str, str, str, str]) -> None:
        if len(self._pending) >= self._max_pending:
            self.counts["dropped"] += 1
            return
        self._pending.append(entry)
        self._lock.notify()

    def _close_windows(self, now: float) -> None:
        """End the windows older than the coalescing time; queue the repeats they counted."""
        for key, window in list(self._windows.items()):
            if now - window.opened < self._window:
                continue
            del self._windows[key]
            if window.repeats:
                actor, project, permission, method = key
                repeated = f"{method}{repeats_suffix(window.repeats, self._window)}"
                self._queue((actor, project, permission, repeated))

    def flush(self, timeout: float = 5.0) -> bool:
        """Queue the repeats counted so far and wait until every queued entry is written.

        Returns:
            Whether everything was written (or failed) within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._close_windows(float("inf"))
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is counted and queued (within ``timeout`` seconds), then stop."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    if not self._lock.wait(self._window):
                        self._close_windows(self._clock())
                if not self._pending:
                    return
                entry = self._pending.pop(0)
                self._busy += 1
            try:
                self._record(*entry)
                outcome = "written"
            except Exception as exc:  # noqa: BLE001 - an audit write must never end the server
                _log.warning(
                    "could not record a permission denial of %s (%s) in the audit log: %s: %s",
                    entry[0],
                    entry[3],
                    type(exc).__name__,
                    exc,
                )
                outcome = "failed"
            with self._lock:
                self.counts[outcome] += 1
                self._busy -= 1
                self._lock.notify_all()


__all__ = [
    "COALESCE_SECONDS",
    "REPEATED",
    "MAX_PENDING",
    "MAX_WINDOWS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "DenialAudit",
    "OnRefusal",
    "RecordDenial",
    "Refusal",
    "denial",
    "repeats_suffix",
]
