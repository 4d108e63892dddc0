"""How the Feast 0.9 servicers end a failed call.

Feast 0.9's SDK re-raises every gRPC error as ``grpc.RpcError(details)``: its users see only the
status details, never the code. So a :class:`~potluck.errors.PotluckError` ends the call with a
status from the server's own mapping, its message (which names the object and the field) as the
details, cut to ``registry/_edge.py``'s bound, and its code and fields as trailing metadata, as
potluck's own services do. Anything else is a bug: ``INTERNAL``, logged with its traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from potluck.errors import PotluckError, ValidationError
from potluck.registry._edge import log_line, shorten
from potluck.registry._errors import error_metadata

_log = logging.getLogger(__name__)

StatusOf = Callable[[PotluckError], grpc.StatusCode]
"""Maps an error to the status the call ends with."""

_Self = TypeVar("_Self")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Method = Callable[[_Self, _Request], _Response]
_Handler = Callable[[_Self, _Request, grpc.ServicerContext], _Response]


def rpc(
    status_of: StatusOf, on_error: Callable[[Any, PotluckError], None] | None = None
) -> Callable[[_Method[_Self, _Request, _Response]], _Handler[_Self, _Request, _Response]]:
    """Return a decorator turning ``method(self, request)`` into a gRPC handler.

    Args:
        status_of: The status a :class:`PotluckError` ends the call with.
        on_error: Called with the servicer (``self``) and the error before the call ends
            (to count it in metrics).
    """

    def decorate(
        method: _Method[_Self, _Request, _Response],
    ) -> _Handler[_Self, _Request, _Response]:
        name = method.__name__

        @functools.wraps(method)
        def handler(self: _Self, request: _Request, context: grpc.ServicerContext) -> _Response:
            try:
                return method(self, request)
            except PotluckError as exc:
                error = exc
                status = status_of(exc)
            except Exception as exc:
                _log.exception("Feast 0.9 call %s failed", name)
                error = PotluckError(f"internal error in {name}: {type(exc).__name__}: {exc}")
                status = grpc.StatusCode.INTERNAL
            if on_error is not None:
                on_error(self, error)
            if status is not grpc.StatusCode.INTERNAL:
                _log.warning(
                    "rejected Feast 0.9 %s from %s: %s %s: %s",
                    name,
                    context.peer(),
                    status.name,
                    error.code,
                    log_line(error.message),
                )
            context.set_trailing_metadata(error_metadata(error))
            context.abort(status, shorten(error.message))

        return handler

    return decorate


def required(value: str, field: str, hint: str) -> str:
    """Return a request's required field ``value``; an empty one is refused naming ``field``.

    Args:
        value: The field's value.
        field: The field's name in Feast's message (``table_name``, ``spec.name``).
        hint: What to send instead, for the message.

    Raises:
        ValidationError: If ``value`` is empty (the call ends ``INVALID_ARGUMENT``).
    """
    if not value:
        raise ValidationError(f"{field} is not set: {hint}", field=field)
    return value


def unary(handler: Callable[[Any, grpc.ServicerContext], Any], request: Any, response: Any) -> Any:
    """Return the method handler of a unary call ``handler`` with its message classes."""
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request.FromString,
        response_serializer=response.SerializeToString,
    )


__all__ = ["StatusOf", "required", "rpc", "unary"]
