"""uvicorn's httptools protocol with a size cap and a time limit on each request's head.

httptools (llhttp) buffers a header until it ends, with no limit of its own: a 64 MiB header
is read whole before any of potluck's checks run, and a client may take forever to send a
head. :class:`CappedHttpToolsProtocol` adds both limits; h11, uvicorn's other parser, has a size
cap but costs about 40 % more server time per request here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from potluck.auth.authenticator import MAX_AUTHORIZATION

MAX_REQUEST_HEAD = 2 * MAX_AUTHORIZATION
"""The most bytes of a request's line and headers (32 KiB): room for an ``Authorization`` value
at its 16 KiB cap (refused by potluck with a 401 that says so) and the other headers."""

REQUEST_HEAD_TIMEOUT = 10.0
"""Seconds a connection may take to send a request's whole head, from its first byte (or from
the connection's start)."""

HEAD_TOO_LARGE = "Request line and headers are too large."
"""The body of the ``431`` answer and the text of its log line."""

HEAD_TOO_SLOW = "Request line and headers took too long to arrive."
"""The body of the ``408`` answer and the text of its log line."""

INVALID_REQUEST = "Invalid HTTP request received."
"""uvicorn's ``400`` answer and log line for a request httptools cannot parse."""


class _HeadTooLarge(Exception):
    """Raised in a parser callback: the head passed :attr:`CappedHttpToolsProtocol.max_head`."""


def _answer(status: bytes, text: str) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode("ascii") + b"\r\n"
        b"connection: close\r\n\r\n" + text.encode("ascii")
    )


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """An httptools connection that limits each request head's size and arrival time.

    - **Size**: the request line and headers are counted as the parser hands them over; past
      :attr:`max_head` bytes the request is answered ``431`` and the connection closed. A head
      that arrives in pieces is also refused once the reads since its first one pass
      :attr:`max_head`, so the parser never buffers more than that plus one socket read.
    - **Time**: a head not complete :attr:`head_timeout` seconds after its first byte (or
      after the connection opened) is answered ``408``; a connection that sent nothing is
      closed without an answer.

    Each refusal logs one warning line (through ``uvicorn.error``, which serving forwards).
    """

    max_head: int = MAX_REQUEST_HEAD
    head_timeout: float = REQUEST_HEAD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = 0  # bytes of the current head the parser handed over
        self._in_head = False  # a head has begun and is not complete
        self._began = False  # the current head began in the read being parsed
        self._pending = 0  # bytes of later reads while the current head stays incomplete
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head timer with the connection."""
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the head timer."""
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; answer ``431`` for a head over the cap, ``400`` for a bad request."""
        if self._in_head and self._pending > self.max_head:
            self._refuse(b"431 Request Header Fields Too Large", HEAD_TOO_LARGE)
            return
        self._began = False
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(b"431 Request Header Fields Too Large", HEAD_TOO_LARGE)
            else:
                self._disarm_head_timer()
                self.logger.warning(INVALID_REQUEST)
                self.send_400_response(INVALID_REQUEST)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and not self._began:
            # A read that began the head also held the previous request's end: not counted.
            self._pending += len(data)

    def on_message_begin(self) -> None:
        """A new head: count it from zero and time it from now."""
        super().on_message_begin()
        self._head = 0
        self._in_head = True
        self._began = True
        self._pending = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        """Count the URL's bytes."""
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count the header's bytes (with its ``: `` and line end)."""
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting and timing it."""
        self._in_head = False
        self._pending = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head += size
        if self._head > self.max_head:
            raise _HeadTooLarge

    def _refuse(self, status: bytes, text: str) -> None:
        self._in_head = False
        self._disarm_head_timer()
        if not self.transport.is_closing():
            self.logger.warning(text)
            self.transport.write(_answer(status, text))
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._refuse(b"408 Request Timeout", HEAD_TOO_SLOW)
        elif self.cycle is None and not self.transport.is_closing():
            self.transport.close()  # nothing was ever sent: no request to answer


__all__ = [
    "HEAD_TOO_LARGE",
    "HEAD_TOO_SLOW",
    "INVALID_REQUEST",
    "MAX_REQUEST_HEAD",
    "REQUEST_HEAD_TIMEOUT",
    "CappedHttpToolsProtocol",
]
