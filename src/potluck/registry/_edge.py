"""What potluck's gRPC servers (Core and Online Serving) do with hostile input at their edge.

- :class:`RejectUndecodable`, a server interceptor: a request whose bytes are not a valid
  protobuf message of the method's type ends the call with ``INVALID_ARGUMENT`` (gRPC's own
  handling answers ``INTERNAL`` and logs a traceback), the decoder's reason as the details,
  trailing metadata for a :class:`~potluck.errors.ValidationError` (``field="request"``), and
  one log line.
- :func:`shorten`: error messages echo what the client sent, which may be megabytes; a status's
  details travel in a header that a client refuses beyond 8 KiB (``RESOURCE_EXHAUSTED`` on the
  client side), so messages are cut to :data:`MAX_MESSAGE_BYTES` first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from potluck.errors import ValidationError
from potluck.registry._errors import error_metadata

_log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1_000
"""The longest error message (UTF-8 bytes) a server sends; longer ones are cut, saying so."""

MAX_LOG_CHARS = 300
"""The longest error message a one-line log of a rejected request quotes."""

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}

if TYPE_CHECKING:  # generic only in the type stubs
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor


def shorten(message: str, max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """Return ``message`` cut to at most ``max_bytes`` UTF-8 bytes, ending with how much was cut.

    Characters that cannot be encoded (lone surrogates) come back backslash-escaped, so the
    result always encodes as UTF-8.
    """
    encoded = message.encode("utf-8", "backslashreplace")
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    kept = encoded[: max(max_bytes - 32, 0)].decode("utf-8", "ignore")
    return f"{kept}... ({len(encoded) - len(kept.encode())} more bytes cut)"


def log_line(message: str) -> str:
    """Return ``message`` as one line for a log: control characters escaped, length bounded."""
    return shorten(message, MAX_LOG_CHARS).translate(_CONTROL)


def _describe(data: bytes, method: str, exc: Exception) -> str:
    name = method.rsplit("/", 1)[-1]
    return f"the {name} request ({len(data)} bytes) is not a valid protobuf message: {exc}"


class _Undecodable:
    """Stands in for a request whose bytes did not parse; carries the reason."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class RejectUndecodable(_Interceptor):
    """Answer requests that are not valid protobuf with ``INVALID_ARGUMENT``, not ``INTERNAL``.

    It wraps each unary-request method's deserializer so that a parse failure yields a marker
    instead of raising (gRPC would end the call with ``INTERNAL`` and log a traceback), and the
    method's behaviour so that the marker ends the call with ``INVALID_ARGUMENT``. Wrapped
    handlers are kept per method name (only methods the server has, so the cache is bounded).
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Return the method's handler, with undecodable requests mapped to INVALID_ARGUMENT."""
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = _wrap(handler, method)
        self._handlers[method] = wrapped
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    parse = handler.request_deserializer
    behavior: Callable[[Any, grpc.ServicerContext], Any] | None = (
        handler.unary_stream if handler.response_streaming else handler.unary_unary
    )
    if handler.request_streaming or parse is None or behavior is None:
        return handler
    call_behavior = behavior

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # the decoder's own error type varies by protobuf backend
            return _Undecodable(_describe(data, method, exc))

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            _reject(context, method, request.message)
        return call_behavior(request, context)

    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.response_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    return make(
        guarded, request_deserializer=lenient, response_serializer=handler.response_serializer
    )


def _reject(context: grpc.ServicerContext, method: str, message: str) -> NoReturn:
    error = ValidationError(shorten(message), field="request")
    _log.warning(
        "rejected %s from %s: INVALID_ARGUMENT %s: %s",
        method,
        context.peer(),
        error.code,
        log_line(message),
    )
    context.set_trailing_metadata(error_metadata(error))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)


__all__ = ["MAX_LOG_CHARS", "MAX_MESSAGE_BYTES", "RejectUndecodable", "log_line", "shorten"]
