"""The one potluck error tree.

Every error potluck raises on purpose derives from :class:`PotluckError`. Each carries a stable
``code`` (a short snake_case string that transports map to gRPC statuses, HTTP statuses and CLI
exit codes) and keeps the inputs that explain it as attributes (``field``, ``table``, ``column``,
``row`` ...), so callers never parse messages. No transport is imported here: the mapping tables
live at the edges (``serving/grpc.py``, ``serving/http.py``, ``registry/server.py``,
``cli/main.py``).

Hierarchy::

    PotluckError                       code
    ├── TerminalError                  (marker) retrying cannot help
    │   ├── DefinitionError            invalid_definition   a definition field is invalid
    │   ├── ConfigError                invalid_config       a setting is missing or invalid
    │   ├── PluginError                plugin_error         a plug-in name or class is wrong
    │   │   └── PluginDependencyError  missing_dependency   an optional extra is missing
    │   ├── NotFoundError              not_found            an object does not exist
    │   ├── AlreadyExistsError         already_exists       an object exists already
    │   ├── IncompatibleChangeError    incompatible_change  an apply needs force
    │   ├── ValidationError            invalid_argument     a request is malformed
    │   │   ├── FeatureRefError        invalid_feature_ref  a feature reference is bad
    │   │   └── DataValidationError    invalid_data         data does not fit a table
    │   ├── DecodeError                decode_error         a stream message is bad
    │   ├── JobError                   job_failed           an ingestion job failed
    │   ├── UnauthenticatedError       unauthenticated      no token, or a bad one
    │   └── PermissionDeniedError      permission_denied    the caller lacks a permission
    └── TransientError                 (marker) retrying may help
        ├── ConflictError              conflict             a concurrent writer won
        └── UnavailableError           unavailable          a server is unreachable

Warnings, where the operation goes on, live in :mod:`potluck.notices`.

A message never shows a credential: whatever URL it quotes (a registry, a Redis store, an
``s3://KEY:SECRET@bucket`` path, a ``?secret_key=`` query), :class:`PotluckError` masks it when
the error is made (:func:`potluck._redact.redact_text`), so every output built from a message
(a CLI error line, a job record, a server's status) is masked too.

``TerminalError`` and ``TransientError`` are the retry markers that ingestion and stream jobs use to
decide between retrying, dead-lettering and failing; both are ordinary ``Exception`` subclasses.
"""

from __future__ import annotations

from typing import Any, ClassVar

from potluck._redact import redact_text


class PotluckError(Exception):
    """Base class of every error potluck raises on purpose.

    Attributes:
        code: A stable, transport-neutral code for this kind of error.
        message: The human-readable message, which says what to do next where it can; the
            credentials of any URL in it are masked.
    """

    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **attrs: Any) -> None:
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self._attrs = attrs
        for key, value in attrs.items():
            setattr(self, key, value)

    def attrs(self) -> dict[str, Any]:
        """Return the structured fields this error was raised with."""
        return dict(self._attrs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._attrs))


def _rebuild(cls: type[PotluckError], message: str, attrs: dict[str, Any]) -> PotluckError:
    return cls(message, **attrs)


class TerminalError(PotluckError):
    """Marker: retrying the same operation cannot succeed."""


class TransientError(PotluckError):
    """Marker: the operation may succeed if retried (a connection reset, a rebalance)."""

    code: ClassVar[str] = "transient"


class DefinitionError(TerminalError):
    """A definition (entity, feature, table, source) is invalid; ``field`` names the bad field."""

    code: ClassVar[str] = "invalid_definition"

    def __init__(self, message: str, *, field: str, **attrs: Any) -> None:
        super().__init__(message, field=field, **attrs)


class ConfigError(TerminalError):
    """A setting is missing or invalid; ``key`` names it and ``sources`` lists where we looked."""

    code: ClassVar[str] = "invalid_config"


class PluginError(TerminalError):
    """A plug-in name does not resolve, or resolves to a class of the wrong kind."""

    code: ClassVar[str] = "plugin_error"


class PluginDependencyError(PluginError):
    """A plug-in needs an optional dependency; the message names the pip extra to install."""

    code: ClassVar[str] = "missing_dependency"


class NotFoundError(TerminalError):
    """An object (``kind``, ``name``, ``project``) does not exist."""

    code: ClassVar[str] = "not_found"


class AlreadyExistsError(TerminalError):
    """An object exists already and the operation may not replace it."""

    code: ClassVar[str] = "already_exists"


class IncompatibleChangeError(TerminalError):
    """An apply would change entities or a feature's type; pass ``force=True`` to allow it."""

    code: ClassVar[str] = "incompatible_change"


class ValidationError(TerminalError):
    """A request or argument is malformed."""

    code: ClassVar[str] = "invalid_argument"


class FeatureRefError(ValidationError):
    """A feature reference is malformed or names an unknown table or feature."""

    code: ClassVar[str] = "invalid_feature_ref"


class DataValidationError(ValidationError):
    """Input data does not fit a table; ``column`` and ``row`` locate the first problem."""

    code: ClassVar[str] = "invalid_data"


class DecodeError(TerminalError):
    """Bytes cannot be decoded.

    A stream message (dead-lettered, never retried), or a stored record another program wrote.
    """

    code: ClassVar[str] = "decode_error"


class JobError(TerminalError):
    """An ingestion job failed; ``job_id`` names it."""

    code: ClassVar[str] = "job_failed"


class UnauthenticatedError(TerminalError):
    """A call to a server carries no bearer token, or one the server does not accept."""

    code: ClassVar[str] = "unauthenticated"


class PermissionDeniedError(TerminalError):
    """The caller lacks ``permission`` on ``project`` (``None``: on no single project)."""

    code: ClassVar[str] = "permission_denied"


class ConflictError(TransientError):
    """A concurrent writer changed the object first; re-read it and apply again."""

    code: ClassVar[str] = "conflict"


class UnavailableError(TransientError):
    """A store, broker or service cannot be reached; ``address`` names it when known."""

    code: ClassVar[str] = "unavailable"


__all__ = [
    "AlreadyExistsError",
    "ConfigError",
    "ConflictError",
    "DataValidationError",
    "DecodeError",
    "DefinitionError",
    "FeatureRefError",
    "IncompatibleChangeError",
    "JobError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginDependencyError",
    "PluginError",
    "PotluckError",
    "TerminalError",
    "TransientError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationError",
]
