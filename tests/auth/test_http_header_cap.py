"""A huge request head is refused by Online Serving's HTTP parser, in bounded memory.

Serving's uvicorn runs httptools through :class:`CappedHttpToolsProtocol`, which counts a
request head's bytes up to :data:`MAX_REQUEST_HEAD` (32 KiB): a 1 MiB and a 64 MiB header, sent
over a raw socket, get ``431`` and one log line as soon as the first 32 KiB are read; the
process's RSS, sampled every millisecond while the request is sent, never grows by 20 MiB (the
64 MiB header is streamed from one 64 KiB buffer, so the client adds nothing), and the server
answers the next request. (httptools alone read the 64 MiB header whole and answered 200.) An
``Authorization`` value just over potluck's 16 KiB cap still reaches potluck, which answers 401
saying why.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from _auth_support import serving_service, token_entry

from potluck.auth.authenticator import MAX_AUTHORIZATION
from potluck.auth.settings import AuthSettings
from potluck.serving.http_protocol import HEAD_TOO_LARGE, HEAD_TOO_SLOW, REQUEST_HEAD_TIMEOUT
from potluck.serving.server import MAX_REQUEST_HEAD, ServingServer, start_serving

MIB = 1024 * 1024
CHUNK = b"a" * (64 * 1024)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingServer]:
    folder = tmp_path_factory.mktemp("header-cap")
    auth = AuthSettings(tokens=[token_entry("reader", "plk_reader", ["read_online"], None)])
    with start_serving(serving_service(str(folder)), auth=auth) as running:
        yield running


class PeakRss:
    """The highest RSS of this process, sampled every millisecond inside the ``with`` block."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _send_huge_header(port: int, size: int) -> bytes:
    """Send a request whose one header value is ``size`` bytes; return what the server said.

    A reader thread collects the answer while the header is still being sent (the server
    answers and closes long before the end; the send then fails, as it should).
    """
    answer: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:

        def read() -> None:
            try:
                while chunk := sock.recv(65536):
                    answer.append(chunk)
            except OSError:  # a reset after the answer: what was read is kept
                pass

        reader = threading.Thread(target=read)
        reader.start()
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ")
            for _ in range(size // len(CHUNK)):
                sock.sendall(CHUNK)
            sock.sendall(b"\r\n\r\n")
        except OSError:  # the server closed the connection: expected
            pass
        reader.join(30)
    return b"".join(answer)


@pytest.mark.parametrize("size", [1 * MIB, 64 * MIB], ids=["1 MiB", "64 MiB"])
def test_a_huge_header_gets_431_in_bounded_memory_and_the_server_serves_on(
    server: ServingServer, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="potluck.serving.http"), PeakRss() as rss:
        answer = _send_huge_header(server.http_port, size)
    grown = rss.peak - rss.start
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert answer.endswith(b"\r\n\r\n" + HEAD_TOO_LARGE.encode())
    assert grown < 20 * MIB, f"RSS grew {grown / MIB:.1f} MiB"
    assert [r.getMessage() for r in caplog.records if r.name == "potluck.serving.http"] == [
        HEAD_TOO_LARGE
    ]
    good = httpx.get(
        f"{server.http_url}/health", headers={"authorization": "Bearer plk_reader"}, timeout=10
    )
    assert good.status_code == 200


def test_an_authorization_value_over_its_cap_still_gets_potlucks_401(
    server: ServingServer,
) -> None:
    value = "Bearer " + "x" * MAX_AUTHORIZATION
    assert len(value) + 200 < MAX_REQUEST_HEAD
    refused = httpx.get(f"{server.http_url}/health", headers={"authorization": value}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"].startswith(
        f"unauthenticated: the authorization value is longer than the {MAX_AUTHORIZATION} "
        "characters accepted"
    )


def test_a_head_just_under_the_cap_is_served(server: ServingServer) -> None:
    filler = "y" * (MAX_REQUEST_HEAD - 1024)
    good = httpx.get(
        f"{server.http_url}/health",
        headers={"authorization": "Bearer plk_reader", "x-filler": filler},
        timeout=10,
    )
    assert good.status_code == 200


def test_the_cap_counts_each_request_head_on_a_kept_alive_connection(server: ServingServer) -> None:
    filler = "y" * (MAX_REQUEST_HEAD * 2 // 3)
    with httpx.Client(timeout=10) as client:
        statuses = [
            client.get(
                f"{server.http_url}/health",
                headers={"authorization": "Bearer plk_reader", "x-filler": filler},
            ).status_code
            for _ in range(5)
        ]
    assert statuses == [200] * 5


def test_a_body_larger_than_the_cap_is_not_counted_as_head(server: ServingServer) -> None:
    body = b" " * (MAX_REQUEST_HEAD * 8) + b'{"features": ["nosuch:f"], "entities": {"k": [1]}}'
    answer = httpx.post(
        f"{server.http_url}/get-online-features",
        content=body,
        headers={"authorization": "Bearer plk_reader", "content-type": "application/json"},
        timeout=10,
    )
    # read whole and answered by potluck: the unknown table, not the size of the head
    assert answer.status_code == 422
    assert answer.json() == {
        "error": {
            "code": "invalid_feature_ref",
            "message": "unknown feature 'nosuch:f': there is no feature table 'nosuch'",
        }
    }


def _exchange(port: int, request: bytes, timeout: float = 30) -> bytes:
    """Send ``request`` in one write; return all the server said until it closed."""
    answer: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                answer.append(chunk)
        except OSError:  # a reset after the answer: what was read is kept
            pass
    return b"".join(answer)


OVER = MAX_REQUEST_HEAD + 1024
WHOLE_HEADS = {
    "one header": b"GET /health HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * OVER + b"\r\n\r\n",
    "many small headers": b"GET /health HTTP/1.1\r\nHost: h\r\n"
    + b"".join(b"X-%d: v\r\n" % i for i in range(OVER // 8))
    + b"\r\n",
    "authorization": b"GET /health HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "
    + b"x" * (3 * MAX_REQUEST_HEAD)
    + b"\r\n\r\n",
    "url": b"GET /health?" + b"q" * OVER + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    "second of two pipelined": b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
    + b"GET /health HTTP/1.1\r\nHost: h\r\nX-Big: "
    + b"a" * OVER
    + b"\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", WHOLE_HEADS.values(), ids=WHOLE_HEADS.keys())
def test_a_head_over_the_cap_sent_in_one_write_gets_431(
    server: ServingServer, request_bytes: bytes
) -> None:
    answer = _exchange(server.http_port, request_bytes)
    last = answer.rsplit(b"HTTP/1.1 ", 1)[1]
    assert last.startswith(b"431 Request Header Fields Too Large\r\n"), answer[:300]
    assert last.endswith(b"\r\n\r\n" + HEAD_TOO_LARGE.encode())


def test_pipelined_requests_under_the_cap_are_all_served(server: ServingServer) -> None:
    one = b"GET /health HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer plk_reader\r\n\r\n"
    answer = _exchange(
        server.http_port, one * 199 + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    )
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 200


def test_a_head_that_does_not_arrive_in_time_gets_408(
    server: ServingServer, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="potluck.serving.http"),
        socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: h\r\n")
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"\r\n\r\n" + HEAD_TOO_SLOW.encode())
    assert REQUEST_HEAD_TIMEOUT - 1 < waited < REQUEST_HEAD_TIMEOUT + 10
    assert [r.getMessage() for r in caplog.records if r.name == "potluck.serving.http"] == [
        HEAD_TOO_SLOW
    ]


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    server: ServingServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        assert sock.recv(65536) == b""
