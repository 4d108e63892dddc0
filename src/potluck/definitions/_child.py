"""Run user code in a forked child process, so that its ending the process is noticed.

A ``.py`` definitions file is user code. ``sys.exit()`` raises ``SystemExit``, which a caller
can catch; but ``os._exit()``, a signal the code sends its own process, ``os.abort()`` or a
crash in C end the process at once, running no ``finally`` block and no ``atexit`` hook, so
nothing in that process can report it: ``potluck plan defs.py`` would end with the file's exit
status (0 for ``os._exit(0)``) and no word. :func:`run_in_child` runs the code in a child made
by ``fork``; the child sends its outcome (the value, or the exception raised) back through a
pipe before it exits. A parent that reads the end of the pipe without an outcome knows the code
ended the child early, and how (:class:`ProcessEnded`).

``fork`` rather than a new interpreter: the child starts at once with everything the parent
imported, in the same working folder, environment, ``sys.path`` and standard streams. What the
code imports or changes stays in the child; only the outcome comes back (pickled), with what
the code wrote to ``sys.stdout`` or ``sys.stderr`` where those are in-memory streams (an
in-process test runner's), which the parent then writes to its own. Where there
is no ``fork`` (Windows) the code runs in the calling process, and a premature end there cannot
be reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import pickle
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_RESULT, _RAISED = "result", "raised"


class ProcessEnded(Exception):  # noqa: N818 - it reports what happened, not a failure of ours
    """The code ended the child process before it could send its outcome.

    Attributes:
        how: What the parent saw, e.g. ``"it exited with status 0"`` or ``"it was killed by
            SIGKILL"``.
    """

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


def _flush_all() -> None:
    """Flush Python's and the C library's buffered output, so nothing is lost or written twice."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no C library to ask
        ctypes.CDLL(None).fflush(None)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"it was killed by {name}"
    return f"it exited with status {os.waitstatus_to_exitcode(status)}"


def _in_memory(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream is not None
    return False


def _child(function: Callable[[], Any], out: int) -> None:
    """Run ``function`` and write its pickled outcome to ``out``; never returns."""
    try:
        # What goes to an in-memory stream would stay in the child's copy of it: collect it.
        captured = {
            name: io.StringIO() for name in ("stdout", "stderr") if _in_memory(getattr(sys, name))
        }
        for name, buffer in captured.items():
            setattr(sys, name, buffer)
        try:
            outcome: tuple[str, Any] = (_RESULT, function())
        except BaseException as exc:  # noqa: BLE001 - every outcome goes to the parent
            outcome = (_RAISED, exc)
        written = {name: buffer.getvalue() for name, buffer in captured.items()}
        try:
            payload = pickle.dumps((*outcome, written))
        except Exception as exc:  # noqa: BLE001 - an outcome that cannot be sent is one too
            problem = TypeError(f"its outcome cannot be sent back: {exc}")
            payload = pickle.dumps((_RAISED, problem, written))
        with os.fdopen(out, "wb") as pipe:
            pipe.write(payload)
        _flush_all()
    finally:
        os._exit(0)


def run_in_child(function: Callable[[], T]) -> T:
    """Call ``function`` in a forked child and return its result, or raise what it raised.

    Args:
        function: Code to run; its result and anything it raises must pickle.

    Returns:
        What ``function`` returned.

    Raises:
        ProcessEnded: If the child ended before sending an outcome.
        BaseException: Whatever ``function`` raised, as the child raised it (unpickled).
    """
    if not hasattr(os, "fork"):
        return function()
    _flush_all()
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns when forking with threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, which never returns
        os.close(read)
        _child(function, write)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # Ctrl-C or SIGTERM meanwhile: the child must not outlive us
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    if not payload:
        raise ProcessEnded(_describe(status))
    kind, value, written = pickle.loads(payload)
    for name, text in written.items():
        getattr(sys, name).write(text)
    if kind == _RAISED:
        raise value
    result: T = value
    return result


__all__ = ["ProcessEnded", "run_in_child"]
