"""Authentication on HTTP: the serving app's one ASGI middleware.

Every path but the open ones (``/health/live``) needs ``Authorization: Bearer <token>`` and the
:attr:`~potluck.auth.identity.Permission.READ_ONLINE` permission. For the read path, a caller
limited to some projects is checked against the projects of the body's feature references
(``project/table:feature``; others are the server's default project): the middleware reads the
body (no more than the app's size limit) and hands it on unchanged. A missing or bad token gets
401 with ``WWW-Authenticate: Bearer``, a denied call 403; both in the app's error envelope
``{"error": {"code": ..., "message": ...}}``, and both are told to the ``on_refusal`` callback
(:mod:`potluck.auth.denials`) with the method ``<HTTP method> <path>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from potluck.auth.authenticator import MAX_AUTHORIZATION, Authenticator, authorize
from potluck.auth.denials import UNAUTHENTICATED, OnRefusal, Refusal, denial
from potluck.auth.identity import Caller, Permission, acting_as
from potluck.errors import PermissionDeniedError, PotluckError, UnauthenticatedError
from potluck.registry._edge import log_line

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health/live"})
"""Paths anyone may read: liveness says only that the process serves."""


class AuthMiddleware:
    """Authenticate every HTTP request but :data:`OPEN_PATHS` (see the module doc).

    Args:
        app: The app behind it.
        authenticator: Turns the ``Authorization`` header into a caller.
        read_path: The path whose body names projects (``/get-online-features``).
        default_project: The project of references that name none.
        max_body: The most body bytes read to find the projects; a larger body is handed on
            for the app to refuse.
        on_refusal: Told of every refused request (``None``: nothing is told).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        read_path: str,
        default_project: str,
        max_body: int,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self.app = app
        self._on_refusal = on_refusal
        self._authenticator = authenticator
        self._read_path = read_path
        self._default = default_project
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401/403 itself, or call the app with the caller set."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        value = None
        for name, item in scope["headers"]:
            if name == b"authorization":  # cut: a longer value is refused, never decoded whole
                value = item[: MAX_AUTHORIZATION + 1].decode("latin-1")
                break
        try:
            caller = self._authenticator.authenticate(value)
            reads_body = caller.projects is not None or not caller.may(Permission.READ_ONLINE, None)
            if reads_body and scope["path"] == self._read_path:  # a denial names the project
                receive = await self._check_body(caller, receive)
            else:
                authorize(caller, Permission.READ_ONLINE, (None,))
        except UnauthenticatedError as exc:
            self._tell(Refusal(UNAUTHENTICATED, _method(scope)))
            await _refuse(scope, send, 401, exc, [(b"www-authenticate", b"Bearer")])
            return
        except PermissionDeniedError as exc:
            self._tell(denial(_method(scope), exc))
            await _refuse(scope, send, 403, exc, [])
            return
        with acting_as(caller):
            await self.app(scope, receive, send)

    def _tell(self, refusal: Refusal) -> None:
        if self._on_refusal is not None:
            self._on_refusal(refusal)

    async def _check_body(self, caller: Caller, receive: Receive) -> Receive:
        """Authorize ``caller`` on the body's projects; return a ``receive`` that replays it."""
        messages: list[Message] = []
        size = 0
        more = True
        while more and size <= self._max_body:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        projects: set[str | None] = {self._default}
        if not more:
            projects = self._projects(b"".join(m.get("body", b"") for m in messages))
        authorize(caller, Permission.READ_ONLINE, projects)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay

    def _projects(self, body: bytes) -> set[str | None]:
        try:
            features = json.loads(body).get("features")
        except (ValueError, AttributeError):
            return {self._default}  # the app refuses the body itself
        if not isinstance(features, list):
            return {self._default}
        return {
            f.partition("/")[0] if "/" in f else self._default
            for f in features
            if isinstance(f, str)
        } or {self._default}


def _method(scope: Scope) -> str:
    return f"{scope['method']} {log_line(str(scope['path']))}"


async def _refuse(
    scope: Scope, send: Send, status: int, error: PotluckError, headers: list[tuple[bytes, bytes]]
) -> None:
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "unknown client"
    _log.warning(
        "refused %s %s from %s: %d %s: %s",
        scope["method"],
        log_line(str(scope["path"])),
        peer,
        status,
        error.code,
        error.message,
    )
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["OPEN_PATHS", "AuthMiddleware"]
