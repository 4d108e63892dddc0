"""uvicorn's log records, logged again as records of ``potluck.serving.http``.

uvicorn logs on its own loggers (``uvicorn.error`` says ``Invalid HTTP request received.`` for
each connection whose bytes are not HTTP, which h11 or httptools refused) and, left to itself,
gives them handlers of its own format. Serving starts uvicorn with ``log_config=None`` and calls
:func:`forward_uvicorn_logs`, so that its records reach whatever handles potluck's loggers (in
the CLI, one ``warning: <message>`` line each) and nothing else: one format for every line a
serving process writes. h11 and httptools do not log; what they refuse, uvicorn logs.
"""

from __future__ import annotations

import logging

UVICORN_LOGGER = "uvicorn"
"""The parent of uvicorn's loggers (``uvicorn.error``, ``uvicorn.access``, ``uvicorn.asgi``)."""

TARGET_LOGGER = "potluck.serving.http"
"""Where uvicorn's records are logged again."""


class _Forward(logging.Handler):
    """Logs each record again on :data:`TARGET_LOGGER`, under that logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        target = logging.getLogger(TARGET_LOGGER)
        if target.isEnabledFor(record.levelno):
            target.handle(logging.makeLogRecord({**record.__dict__, "name": TARGET_LOGGER}))


def forward_uvicorn_logs() -> None:
    """Send every record of the ``uvicorn`` loggers to ``potluck.serving.http`` instead.

    Idempotent. The ``uvicorn`` logger stops propagating, so an application that also handles
    the root logger sees each line once.
    """
    logger = logging.getLogger(UVICORN_LOGGER)
    if not any(isinstance(handler, _Forward) for handler in logger.handlers):
        logger.addHandler(_Forward())
    logger.propagate = False


__all__ = ["TARGET_LOGGER", "UVICORN_LOGGER", "forward_uvicorn_logs"]
