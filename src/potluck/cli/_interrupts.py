"""Ctrl-C and SIGTERM while a command runs: both stop it the same way, each with its exit code.

**SIGTERM is handled like Ctrl-C.** SIGTERM is how a supervisor, ``kill`` or a CI runner's
timeout stops a process. Left to Python's default it ends the process at once, in the middle of
its work: a job it follows stays ``RUNNING`` until its heartbeat times out, an ingestion leaves
its files for ``gc``. Within :func:`stop_signals_as_interrupts` (the root command group installs
it around every command), SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so every
clean-up written for Ctrl-C runs for it too; the command then ends with one line
(``error: terminated``) and exit code :data:`EXIT_TERMINATED` (128 + 15) where Ctrl-C gives
``error: interrupted`` and 130 (:func:`interruption`). ``potluck serve``, ``core`` and
``stream`` install their own handlers (a graceful stop) for as long as they serve.

**While a command follows a job it started**, a raised interrupt would leave the job running
unwatched: Python raises between any two bytecodes (while the job is submitted, before its
handle is known, inside the handler of an earlier signal). Within :func:`deferred_interrupts`,
SIGINT and SIGTERM only count; the command reads the count where it can act on it (ask the job
to stop, then wait until it has ended), however many signals come and however quickly.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT), as shells report a process a SIGINT ended: 128 + 2."""

EXIT_TERMINATED = 143
"""SIGTERM, as shells report a process a SIGTERM ended: 128 + 15."""

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Terminated(KeyboardInterrupt):  # noqa: N818 - a signal, like KeyboardInterrupt
    """SIGTERM arrived: raised where Ctrl-C raises ``KeyboardInterrupt``, and caught as one."""


@dataclass
class _Received:
    """Whether SIGTERM arrived during the current command (read by :func:`interruption`)."""

    sigterm: bool = False


_received = _Received()


@dataclass
class Interrupts:
    """How many times SIGINT or SIGTERM arrived within :func:`deferred_interrupts`.

    Attributes:
        count: Signals received, of either kind.
        terminated: Whether one of them was SIGTERM.
    """

    count: int = 0
    terminated: bool = False


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(signum: signal.Signals, previous: _Handler) -> None:
    # None: the handler was not set from Python; Python's own SIGINT handler raises
    # KeyboardInterrupt, SIGTERM's default ends the process.
    if previous is None:
        previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    signal.signal(signum, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _received.sigterm = True
    raise Terminated


@contextmanager
def stop_signals_as_interrupts() -> Iterator[None]:
    """Within it, SIGTERM raises :class:`Terminated` (as SIGINT raises ``KeyboardInterrupt``).

    Off the main thread (where Python never delivers signals) nothing is installed. The
    previous handler is restored at the end.
    """
    _received.sigterm = False
    if not _on_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        _restore(signal.SIGTERM, previous)


def interruption(exc: BaseException) -> tuple[str, int]:
    """Return the error line's message and the exit code of a command a signal stopped.

    SIGTERM (a :class:`Terminated`, or any ``KeyboardInterrupt`` after SIGTERM arrived: a
    driver may raise its own after the signal stopped it) gives ``("terminated", 143)``;
    Ctrl-C gives ``("interrupted", 130)``.
    """
    if isinstance(exc, Terminated) or _received.sigterm:
        return "terminated", EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED


def ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on (main thread only): the command is ending.

    A second signal while it ends (closing its connections) would otherwise raise again where
    nothing catches it, and end the process by the signal instead of with its one line and
    exit code. The root group restores the handlers when the command has ended.
    """
    if _on_main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def deferred_interrupts() -> Iterator[Interrupts]:
    """Count SIGINTs and SIGTERMs instead of raising, then restore the handlers.

    Off the main thread (where Python never delivers signals) nothing is installed and the
    count stays 0.

    Yields:
        The count, updated as signals arrive.
    """
    interrupts = Interrupts()

    def count(signum: int, frame: FrameType | None) -> None:
        interrupts.count += 1
        if signum == signal.SIGTERM:
            interrupts.terminated = True
            _received.sigterm = True

    if not _on_main_thread():
        yield interrupts
        return
    previous = {s: signal.signal(s, count) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupts
    finally:
        for signum, handler in previous.items():
            _restore(signum, handler)


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Interrupts",
    "Terminated",
    "deferred_interrupts",
    "ignore_stop_signals",
    "interruption",
    "stop_signals_as_interrupts",
]
