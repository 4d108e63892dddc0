"""The audit log's vocabulary: who acts, the actions recorded, and the change each one carries.

Registries write an :class:`~potluck.registry.base.AuditEntry` in the same transaction as the
change it records, so the log never shows a change that did not happen, nor misses one. The
actor is :func:`current_actor`: the authenticated caller (``potluck.auth.identity``), else the
remote peer of a Core call (set by :class:`RecordPeer` on the Core server), else the local OS
user. Servers that deny a call record it with :func:`record_denial`.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

from potluck.auth.identity import current_caller
from potluck.errors import ValidationError
from potluck.registry.base import Change, JobRecord, Registry

APPLY = "apply"
DELETE = "delete"
CREATE_PROJECT = "create_project"
ARCHIVE_PROJECT = "archive_project"
RESTORE_PROJECT = "restore_project"
ALLOW_LOCATION = "allow_location"
JOB_START = "job_start"
JOB_CANCEL = "job_cancel"
PERMISSION_DENIED = "permission_denied"

ACTIONS = (
    APPLY,
    DELETE,
    CREATE_PROJECT,
    ARCHIVE_PROJECT,
    RESTORE_PROJECT,
    ALLOW_LOCATION,
    JOB_START,
    JOB_CANCEL,
    PERMISSION_DENIED,
)
"""Every action the audit log records."""

MAX_LIMIT = 10_000
"""The most audit entries one read returns."""

_PEER: ContextVar[str | None] = ContextVar("potluck_audit_peer", default=None)

if TYPE_CHECKING:  # generic only in the type stubs
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


def current_actor() -> str:
    """Return who the current change is made by.

    That is the authenticated caller's :attr:`~potluck.auth.identity.Caller.actor`
    (``token:<name>``, ``jwt:<sub>``); without authentication, ``peer:<address>``
    inside a call a server serves, else ``local:<OS user>``.
    """
    caller = current_caller()
    if caller is not None:
        return caller.actor
    peer = _PEER.get()
    if peer:
        return f"peer:{peer}"
    try:
        return f"local:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return f"local:uid {os.getuid()}"


@contextlib.contextmanager
def acting_from(peer: str) -> Iterator[None]:
    """Make ``peer`` (gRPC's ``ipv4:127.0.0.1:50000``) the remote end of the call inside."""
    token = _PEER.set(peer)
    try:
        yield
    finally:
        _PEER.reset(token)


class RecordPeer(_Interceptor):
    """A server interceptor that lets :func:`current_actor` name the peer of every call."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Return the method's handler, run with its peer known."""
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        behavior = handler.unary_unary
        if behavior is None:
            return handler
        call = behavior

        def with_peer(request: Any, context: grpc.ServicerContext) -> Any:
            with acting_from(context.peer()):
                return call(request, context)

        return grpc.unary_unary_rpc_method_handler(
            with_peer,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def check_limit(limit: int) -> int:
    """Return ``limit`` if it is a whole number from 1 to :data:`MAX_LIMIT`.

    Raises:
        ValidationError: If it is not; ``field`` is ``limit``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_LIMIT:
        raise ValidationError(
            f"limit: must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}", field="limit"
        )
    return limit


def apply_change(changes: Sequence[Change]) -> dict[str, Any]:
    """Return what an apply records: each object's plan line."""
    return {
        "changes": [
            {
                "kind": c.kind,
                "name": c.name,
                "action": c.action,
                "revision": c.revision,
                "details": list(c.details),
            }
            for c in changes
        ]
    }


def job_event(job: JobRecord) -> tuple[str, str, dict[str, Any]]:
    """Return the action, target and change a new job record stands for.

    ``potluck.ingestion.jobs`` writes a job's first record when the job starts, and a separate
    record whose body names ``cancel_for`` when someone asks to stop it.
    """
    body: Mapping[str, Any] = job.body
    target = body.get("cancel_for")
    if isinstance(target, str):
        return JOB_CANCEL, target, {"job": target}
    change: dict[str, Any] = {"job": job.id}
    change.update({k: body[k] for k in ("kind", "table", "engine") if k in body})
    return JOB_START, job.id, change


def record_denial(registry: Registry, project: str | None, permission: str, method: str) -> None:
    """Record that the current caller was denied ``permission`` for ``method``.

    Servers' authorization call it when they refuse a call (inside the call, so the caller or
    the peer is known); the entry's actor is :func:`current_actor`.

    Args:
        registry: The registry that keeps the log (a Core client records it through Core).
        project: The project the call acted on (``None``: none).
        permission: The permission it lacked (``apply``, ``admin`` ...).
        method: The call (``/potluck.core.v1.CoreService/Apply``, ``POST /get-online-features``).
    """
    registry.record_denial(current_actor(), project or "", permission, method)


__all__ = [
    "ACTIONS",
    "ALLOW_LOCATION",
    "APPLY",
    "ARCHIVE_PROJECT",
    "CREATE_PROJECT",
    "DELETE",
    "JOB_CANCEL",
    "JOB_START",
    "MAX_LIMIT",
    "PERMISSION_DENIED",
    "RESTORE_PROJECT",
    "RecordPeer",
    "acting_from",
    "apply_change",
    "check_limit",
    "current_actor",
    "job_event",
    "record_denial",
]
