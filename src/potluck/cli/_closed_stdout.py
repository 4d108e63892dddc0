"""A command whose stdout is closed early (``potluck ... | head -1``) ends quietly.

When the reader of a pipe goes away, writing to it fails with ``EPIPE``: Python ignores SIGPIPE,
so the write raises :class:`BrokenPipeError`. Unix tools in C (git, grep) are killed by SIGPIPE
instead, silently, and the shell reports exit status 141 (128 + 13). potluck does the same with
Python's recommended handling (the "Note on SIGPIPE" of the :mod:`signal` documentation): it
catches the error, points stdout at ``/dev/null`` so that the interpreter's last flush cannot
fail again, prints nothing and exits with :data:`EXIT_BROKEN_PIPE`. Under ``set -o pipefail``
such a pipeline fails as it would with git or grep; without it the pipeline's status is that of
its last command.

SIGPIPE is not set back to its default action: a write to a closed socket (Redis, PostgreSQL, a
gRPC peer) would then kill the process instead of raising an error that is reported. So a
``BrokenPipeError`` counts as a closed stdout only when stdout really is a pipe without reader
(:func:`stdout_closed`); one from a socket stays an error.

Tables and help go through rich, which handles a broken pipe itself
(``rich.console.Console.on_broken_pipe``): it points stdout at ``/dev/null`` and raises
``SystemExit(1)``; :func:`silenced_by_rich` recognises that end, so it exits 141 too.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from typing import NoReturn

import typer

EXIT_BROKEN_PIPE = 141
"""The exit code of a command whose stdout was closed: 128 + SIGPIPE (13), as a shell reports
git or grep ended by SIGPIPE."""


def _stdout_fd() -> int | None:
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stdout, or none
        return None


def stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone.

    Polls stdout's file descriptor for ``POLLERR``/``POLLHUP`` without waiting; where
    :func:`select.poll` does not exist (Windows), a broken pipe is taken to be stdout.
    """
    fd = _stdout_fd()
    if fd is None:
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silenced_by_rich(exc: SystemExit) -> bool:
    """Whether ``exc`` is rich's end of a command whose stdout was closed.

    Rich raises ``SystemExit(1)`` after pointing stdout at ``/dev/null``; no other ``SystemExit``
    leaves stdout there (a command's own stdout cannot have been ``/dev/null`` and broken).
    """
    fd = _stdout_fd()
    if exc.code != 1 or fd is None:
        return False
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return False


def end_quietly() -> NoReturn:
    """Point stdout at ``/dev/null`` and exit with :data:`EXIT_BROKEN_PIPE`, printing nothing.

    Raises:
        typer.Exit: Always, with :data:`EXIT_BROKEN_PIPE`.
    """
    fd = _stdout_fd()
    if fd is not None:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
    raise typer.Exit(EXIT_BROKEN_PIPE)


__all__ = ["EXIT_BROKEN_PIPE", "end_quietly", "silenced_by_rich", "stdout_closed"]
