"""How a server's main thread stops: SIGINT and SIGTERM stop it gracefully, and say which came.

``potluck serve`` and ``potluck core`` stop the same way on either signal (calls in flight get
their grace period) but end differently: SIGTERM is how a supervisor (systemd, Kubernetes) stops a
service, so it ends with exit code 0; SIGINT is Ctrl-C, which ends any potluck command with exit
code 130. :class:`StopSignals` installs the handlers for the life of a ``with`` block and keeps
the first signal in :attr:`StopSignals.received`.

While the server starts (before :meth:`StopSignals.serving` names how to stop it) there is
nothing to stop gracefully: SIGINT raises ``KeyboardInterrupt``, as Python does by default, and
SIGTERM raises :class:`Terminated`, so that start-up unwinds through its clean-up code either way.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Terminated(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt
    """SIGTERM arrived while the server was starting.

    It derives from ``BaseException``, as ``KeyboardInterrupt`` does, so that no ``except
    Exception`` on the way swallows it.
    """


class StopSignals:
    """SIGINT and SIGTERM handlers for a server's main thread, installed for a ``with`` block.

    Attributes:
        received: The first of the two signals that arrived, or ``None``.

    Example:
        >>> with StopSignals() as signals:
        ...     server = start_server()
        ...     signals.serving(server.stop)
        ...     server.wait()
        >>> exit_code = 130 if signals.received == signal.SIGINT else 0
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._stop: Callable[[], object] | None = None
        self._previous: dict[signal.Signals, _Handler] = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:  # a handler set from C cannot be put back from Python
                signal.signal(signum, handler)

    def serving(self, stop: Callable[[], object]) -> None:
        """Name how to stop the now running server; from here on, a signal calls ``stop``.

        ``stop`` runs in a thread of its own (a signal handler must return at once), once, on
        the first signal; later signals are only ignored while it runs.
        """
        self._stop = stop

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signal.Signals(signum)
        if self._stop is None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Terminated
        if first:
            threading.Thread(target=self._stop, name="potluck-stop", daemon=True).start()


__all__ = ["StopSignals", "Terminated"]
