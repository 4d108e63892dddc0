"""What the CLI writes on stderr besides progress: error lines, warnings and log records.

A command's stderr holds at most one ``error: <message>`` line, plus ``warning: <message>``
lines for things to know (a :class:`~potluck.notices.PotluckWarning`, a log record of level
WARNING); never a traceback. With ``POTLUCK_DEBUG=1`` in the environment, the traceback of an
error and of each logged exception is printed too, before its line.

The CLI reads ``POTLUCK_DEBUG`` itself rather than through :mod:`potluck.config`: it must work
when the settings are what failed to load.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import typer

from potluck._redact import redact_text
from potluck.notices import PotluckWarning

DEBUG_VARIABLE = "POTLUCK_DEBUG"
"""The environment variable that makes the CLI print tracebacks (``POTLUCK_DEBUG=1``)."""

LOGGER_NAME = "potluck"
"""The logger whose records a command prints (its children's included)."""


def debug_enabled() -> bool:
    """Whether ``POTLUCK_DEBUG`` asks for tracebacks (any value but empty or ``0``)."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def one_line(text: str) -> str:
    """Return ``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


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
