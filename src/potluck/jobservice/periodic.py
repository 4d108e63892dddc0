"""A pass that a Job Service runs every few seconds in a thread of its own.

The scheduler, the control loop and the staging collector each run one: :meth:`Periodic.start`
runs :meth:`Periodic.run_once` at once, then every :attr:`Periodic.interval` seconds, until
:meth:`Periodic.stop`. A pass that raises is logged (with :attr:`Periodic.failure`) and tried
again at the next interval; it never stops the thread. The warning goes to the logger of the
subclass's module.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import ClassVar


class Periodic(ABC):
    """Runs :meth:`run_once` every :attr:`interval` seconds in a daemon thread.

    Args:
        interval: Seconds between the end of one pass and the start of the next.
    """

    thread_name: ClassVar[str]
    """The thread's name (``potluck-...``), as ``ps -T`` and tracebacks show it."""

    failure: ClassVar[str]
    """The warning logged, with the traceback, when a pass raises."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def run_once(self) -> object:
        """Run one pass now, in the caller's thread; return what it did."""

    def start(self) -> None:
        """Run :meth:`run_once` now and then every :attr:`interval` seconds, in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a pass in progress finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                logging.getLogger(type(self).__module__).warning(self.failure, exc_info=True)
            self._stop.wait(self.interval)


__all__ = ["Periodic"]
