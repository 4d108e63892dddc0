"""What the CLI writes on stderr besides progress: error lines, warnings and log records.

A command's stderr holds at most one ``error: <message>`` line, plus ``warning: <message>``
lines for things to know (a :class:`~potluck.notices.PotluckWarning`, a log record of level
WARNING); never a traceback. With ``POTLUCK_DEBUG=1`` in the environment, the traceback of an
error and of each logged exception is printed too, before its line. Every such line is one line
(:func:`one_line`): credentials masked, control characters escaped, and at most
:data:`MAX_LINE_CHARS` long, however long the value or driver message it quotes.

While user code runs (a ``.py`` definitions file), :func:`stdout_to_stderr` sends what it writes
to stdout to stderr, down to the file descriptor, so a command's stdout holds only its output.

The CLI reads ``POTLUCK_DEBUG`` itself rather than through :mod:`potluck.config`: it must work
when the settings are what failed to load.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import typer

from potluck._redact import redact_text
from potluck.cli._render import visible
from potluck.notices import PotluckWarning

DEBUG_VARIABLE = "POTLUCK_DEBUG"
"""The environment variable that makes the CLI print tracebacks (``POTLUCK_DEBUG=1``)."""

LOGGER_NAME = "potluck"
"""The logger whose records a command prints (its children's included)."""

MAX_LINE_CHARS = 1_000
"""The longest line an error or warning prints; the middle of a longer one is cut (its start
says what failed, its end what to do next)."""

_KEPT_END = 300
"""Characters of a cut line's end that are kept."""


def debug_enabled() -> bool:
    """Whether ``POTLUCK_DEBUG`` asks for tracebacks (any value but empty or ``0``)."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def one_line(text: str) -> str:
    """Return ``text`` as one bounded line that shows no credential and cannot act on a terminal.

    Every run of whitespace (newlines included) becomes one space; any other control character
    (an escape sequence from a name or a value in the message) is shown as its escape, as
    :func:`~potluck.cli._render.visible` does; the credentials of every URL are masked
    (:func:`~potluck._redact.redact_text`); and a line longer than :data:`MAX_LINE_CHARS` loses
    its middle, replaced by ``... (N characters cut) ...``.
    """
    line = visible(redact_text(" ".join(text.split())))
    if len(line) <= MAX_LINE_CHARS:
        return line
    marker = f" ... ({len(line)} characters cut) ... "  # as long as the real one, or longer
    head = MAX_LINE_CHARS - _KEPT_END - len(marker)
    cut = len(line) - head - _KEPT_END
    return f"{line[:head]} ... ({cut} characters cut) ... {line[-_KEPT_END:]}"


def print_error(message: str, exc: BaseException | None = None) -> None:
    """Print ``error: <message>`` as one line on stderr (after ``exc``'s traceback in debug)."""
    if exc is not None and debug_enabled():
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    typer.echo(f"error: {one_line(message)}", err=True)


def internal_error_message(exc: BaseException) -> str:
    """Return the message of an exception potluck did not expect, secrets masked.

    Example:
        >>> internal_error_message(KeyError("x"))
        "internal error: KeyError: 'x' (run with POTLUCK_DEBUG=1 for the traceback)"
    """
    text = one_line(str(exc))
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"internal error: {redact_text(detail)} (run with {DEBUG_VARIABLE}=1 for the traceback)"


class _LineFormatter(logging.Formatter):
    """``<level>: <message>`` (INFO records: the message alone), one line.

    An exception attached to a WARNING or lower record is summed up on the line; its traceback
    is printed only in debug mode, or for ERROR records (a server's unexpected failure).
    """

    def __init__(self, *, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def format(self, record: logging.LogRecord) -> str:
        message = one_line(record.getMessage())
        if record.levelno != logging.INFO:
            message = f"{record.levelname.lower()}: {message}"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return message
        if self._debug or record.levelno >= logging.ERROR:
            return "".join(traceback.format_exception(exc)) + message
        return f"{message}: {type(exc).__name__}: {one_line(str(exc))}"


class _StderrHandler(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment (a test runner may replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            typer.echo(self.format(record), err=True)
        except Exception:  # a log line must never fail the command
            self.handleError(record)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    typer.echo(f"warning: {one_line(str(message))}", err=True)


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "a thread"
    exc = args.exc_value
    if exc is not None and debug_enabled():
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    summary = f"{args.exc_type.__name__}: {one_line(str(exc))}" if exc else args.exc_type.__name__
    typer.echo(f"warning: {name} stopped: {summary}", err=True)


@contextmanager
def command_output() -> Iterator[None]:
    """Route what a running command reports to stderr as one line each, then restore.

    Within it: records of the ``potluck`` loggers (INFO and up; DEBUG too with
    ``POTLUCK_DEBUG=1``) print as ``<level>: <message>`` lines, potluck's warnings as
    ``warning: <message>`` (always shown, whatever the interpreter's warning filters), and an
    exception that ends a thread as one ``warning:`` line instead of a traceback.
    """
    debug = debug_enabled()
    logger = logging.getLogger(LOGGER_NAME)
    handler = _StderrHandler()
    handler.setFormatter(_LineFormatter(debug=debug))
    saved_level, saved_propagate = logger.level, logger.propagate
    saved_hook = threading.excepthook
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    threading.excepthook = _thread_failed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", PotluckWarning)
            warnings.showwarning = _show_warning
            yield
    finally:
        threading.excepthook = saved_hook
        logger.removeHandler(handler)
        logger.setLevel(saved_level)
        logger.propagate = saved_propagate


def _flush_stdout() -> None:
    """Flush what Python and the C library hold for stdout, so it goes where fd 1 points now."""
    for stream in (sys.stdout, sys.__stdout__):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
                stream.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no C library to ask
        ctypes.CDLL(None).fflush(None)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout to stderr while it runs, then restore stdout.

    File descriptor 1 is made a copy of descriptor 2, so not only ``print`` but ``os.write(1,
    ...)``, C code and child processes write to stderr; ``sys.stdout`` is pointed at
    ``sys.stderr`` too (an in-process runner replaces both). What was written to stdout before
    goes to stdout first. With stdout or stderr closed, only ``sys.stdout`` is redirected.
    """
    _flush_stdout()
    try:
        saved: int | None = os.dup(1)
    except OSError:  # stdout is closed
        saved = None
    if saved is not None:
        try:
            os.dup2(2, 1)
        except OSError:  # stderr is closed
            os.close(saved)
            saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _flush_stdout()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
