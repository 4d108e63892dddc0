"""The one mapping between potluck errors and gRPC statuses, shared by the Core server and client.

The server sends a failed call's status (from :func:`status_for`), the error's message as the
status details, and two trailing metadata entries: ``potluck-error-code`` (the error's ``code``)
and ``potluck-error-attrs`` (its structured fields as JSON). The client rebuilds the same error
class with the same message and fields with :func:`rebuild_error`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc

from potluck._redact import redact_text
from potluck.errors import (
    AlreadyExistsError,
    ConfigError,
    ConflictError,
    DecodeError,
    DefinitionError,
    IncompatibleChangeError,
    NotFoundError,
    PermissionDeniedError,
    PotluckError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)

CODE_KEY = "potluck-error-code"
"""Trailing metadata key that carries :attr:`PotluckError.code`."""

ATTRS_KEY = "potluck-error-attrs"
"""Trailing metadata key that carries the error's fields as JSON."""

_MAX_ATTRS_CHARS = 4_096  # well under gRPC's default 8 KiB metadata limit

STATUS_BY_ERROR: tuple[tuple[type[PotluckError], grpc.StatusCode], ...] = (
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (DefinitionError, grpc.StatusCode.INVALID_ARGUMENT),
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (IncompatibleChangeError, grpc.StatusCode.FAILED_PRECONDITION),
    (ConflictError, grpc.StatusCode.ABORTED),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (DecodeError, grpc.StatusCode.DATA_LOSS),
)
"""Error class to gRPC status, first match wins; anything else is ``INTERNAL``.
``ValidationError`` covers ``FeatureRefError`` and ``DataValidationError``."""


def status_for(error: PotluckError) -> grpc.StatusCode:
    """Return the gRPC status a Core call that raised ``error`` ends with."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return grpc.StatusCode.INTERNAL


def error_metadata(error: PotluckError) -> tuple[tuple[str, str], ...]:
    """Return the trailing metadata that lets the client rebuild ``error``.

    Fields that are not JSON values travel as their ``str()``; fields too large for metadata
    are dropped (the code and message always travel).
    """
    # Masked like the message: a path or address field may be a URL with credentials.
    attrs = redact_text(json.dumps(error.attrs(), default=str, ensure_ascii=True, sort_keys=True))
    if len(attrs) > _MAX_ATTRS_CHARS:
        attrs = "{}"
    return ((CODE_KEY, error.code), (ATTRS_KEY, attrs))


def rebuild_error(code: str, message: str, metadata: Mapping[str, str | bytes]) -> PotluckError:
    """Rebuild the error the server raised from its ``code``, message and trailing metadata.

    Args:
        code: The ``potluck-error-code`` the server sent.
        message: The status details (the error's message).
        metadata: The call's trailing metadata, as a mapping.

    Returns:
        An instance of the class whose ``code`` is ``code`` (``PotluckError`` for an unknown
        code), with the same message and fields.
    """
    cls = _classes_by_code().get(code, PotluckError)
    attrs = _decode_attrs(metadata.get(ATTRS_KEY))
    try:
        return cls(message, **attrs)
    except TypeError:
        # The fields do not fit the constructor (dropped as too large, or from a newer server):
        # keep the class and message, which are what callers match on.
        error = cls.__new__(cls)
        PotluckError.__init__(error, message, **attrs)
        return error


def _decode_attrs(raw: str | bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        attrs = json.loads(raw)
    except ValueError:
        return {}
    return attrs if isinstance(attrs, dict) else {}


def _classes_by_code() -> dict[str, type[PotluckError]]:
    # Breadth-first from the root, so a class that only inherits its parent's code (such as
    # TerminalError's "internal") never shadows the parent.
    by_code: dict[str, type[PotluckError]] = {}
    queue: list[type[PotluckError]] = [PotluckError]
    while queue:
        cls = queue.pop(0)
        by_code.setdefault(cls.code, cls)
        queue.extend(cls.__subclasses__())
    return by_code
