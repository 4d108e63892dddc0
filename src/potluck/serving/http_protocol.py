"""uvicorn's httptools protocol with a cap on the bytes of a request's line and headers.

httptools (llhttp) buffers a header value until it ends, with no limit of its own: a 64 MiB
header is read whole before any of potluck's checks run. :class:`CappedHttpToolsProtocol`
counts the bytes a connection receives while a request's head is incomplete and answers ``431``
with one log line, then closes the connection, as soon as they pass the cap; so a request head
never holds more than the cap plus one socket read in memory. h11, uvicorn's other parser, has
such a cap but costs about 40 % more server time per request here (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from potluck.auth.authenticator import MAX_AUTHORIZATION

MAX_REQUEST_HEAD = 2 * MAX_AUTHORIZATION
"""The most bytes of a request's line and headers (32 KiB): room for an ``Authorization`` value
at its 16 KiB cap (refused by potluck with a 401 that says so) and the other headers."""

HEAD_TOO_LARGE = "Request line and headers are too large."
"""The body of the ``431`` answer and the text of its log line."""

_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(HEAD_TOO_LARGE)).encode("ascii") + b"\r\n"
    b"connection: close\r\n\r\n" + HEAD_TOO_LARGE.encode("ascii")
)


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """An httptools connection that refuses a request head over :attr:`max_head` bytes.

    Bytes are counted from the start of a request's head (the connection's start, or the end
    of the previous request) until its headers are complete. A body is not counted; the bytes
    of the next request that arrive in the same read as the end of the previous one are not
    either, which errs toward serving.
    """

    max_head: int = MAX_REQUEST_HEAD
    """The most bytes of one request's line and headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes: int | None = 0

    def data_received(self, data: bytes) -> None:
        """Count ``data`` while a head is incomplete; refuse it once over the cap."""
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > self.max_head:
            self._head_bytes = None
            if not self.transport.is_closing():
                self.logger.warning(HEAD_TOO_LARGE)
                self.transport.write(_ANSWER)
                self.transport.close()

    def on_headers_complete(self) -> None:
        """Stop counting: the head is complete."""
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """Count the next request's head from here."""
        super().on_message_complete()
        self._head_bytes = 0


__all__ = ["HEAD_TOO_LARGE", "MAX_REQUEST_HEAD", "CappedHttpToolsProtocol"]
