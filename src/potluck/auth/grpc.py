"""Authentication on gRPC: the servers' one interceptor, TLS ports, and clients' channels.

:class:`AuthInterceptor` authenticates every call from its ``authorization`` metadata, checks the
method's :class:`~potluck.auth.rules.Rule`, and runs the handler with the caller as
:func:`~potluck.auth.identity.current_caller`. A missing or bad token ends the call with
``UNAUTHENTICATED``, a denied one with ``PERMISSION_DENIED`` naming the permission and project;
both carry potluck's error metadata, so potluck's clients raise
:class:`~potluck.errors.UnauthenticatedError` / :class:`~potluck.errors.PermissionDeniedError`.
Each refusal is told to the server's ``on_refusal`` callback (:mod:`potluck.auth.denials`), which
audits denials.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import grpc

from potluck.auth.authenticator import Authenticator, authorize
from potluck.auth.denials import UNAUTHENTICATED, OnRefusal, Refusal, denial
from potluck.auth.identity import Caller, acting_as
from potluck.auth.rules import OPEN_SERVICES, Rule
from potluck.auth.settings import AuthSettings, TlsSettings
from potluck.errors import (
    ConfigError,
    PermissionDeniedError,
    PotluckError,
    UnauthenticatedError,
)
from potluck.registry._errors import error_metadata

_log = logging.getLogger(__name__)

METADATA_KEY = "authorization"
"""The gRPC metadata key carrying ``Bearer <token>``."""

if TYPE_CHECKING:  # generic only in the type stubs
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _UnaryClient = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _StreamClient = grpc.UnaryStreamClientInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler
    _UnaryClient = grpc.UnaryUnaryClientInterceptor
    _StreamClient = grpc.UnaryStreamClientInterceptor


class AuthInterceptor(_Interceptor):
    """Authenticate and authorize every call by the method's rule; refuse unlisted methods.

    Args:
        authenticator: Turns the ``authorization`` metadata into a caller.
        rules: The permission rule of each method (full name), of every service served.
        default_project: The project a request that names none acts on.
        on_refusal: Told of every refused call (``None``: nothing is told).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        rules: Mapping[str, Rule],
        *,
        default_project: str,
        on_refusal: OnRefusal | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._rules = rules
        self._default = default_project
        self._on_refusal = on_refusal
        self._handlers: dict[str, _Handler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        """Return the method's handler wrapped in the authentication check."""
        method = handler_call_details.method
        if method.startswith(OPEN_SERVICES):
            return continuation(handler_call_details)
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        wrapped = self._wrap(handler, method, self._rules.get(method))
        self._handlers[method] = wrapped
        return wrapped

    def caller(self, method: str, rule: Rule | None, request: Any, context: Any) -> Caller:
        """Return the authenticated caller of a call, or end the call (see the module doc)."""
        value = None
        for key, item in context.invocation_metadata():
            if key == METADATA_KEY:
                value = item if isinstance(item, str) else item.decode("latin-1")
                break
        try:
            caller = self._authenticator.authenticate(value)
            if rule is None:
                raise PermissionDeniedError(
                    f"permission denied: {method} has no permission rule, so no one may call it",
                    permission=None,
                    project=None,
                    subject=caller.actor,
                )
            # a caller allowed every project holding the permission passes unread; otherwise the
            # request's projects are read, so a denial names the one the call acts on
            if caller.projects is not None or not caller.may(rule.permission, None):
                authorize(caller, rule.permission, rule.projects(request, self._default))
        except UnauthenticatedError as exc:
            self._tell(Refusal(UNAUTHENTICATED, method))
            _refuse(context, method, grpc.StatusCode.UNAUTHENTICATED, exc)
        except PermissionDeniedError as exc:
            acted_on = () if rule is None else rule.projects(request, self._default)
            self._tell(denial(method, exc, acted_on))
            _refuse(context, method, grpc.StatusCode.PERMISSION_DENIED, exc)
        return caller

    def _tell(self, refusal: Refusal) -> None:
        if self._on_refusal is not None:
            self._on_refusal(refusal)

    def _wrap(self, handler: _Handler, method: str, rule: Rule | None) -> _Handler:
        if handler.response_streaming:
            stream = handler.unary_stream
            assert stream is not None

            def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                caller = self.caller(method, rule, request, context)
                with acting_as(caller):
                    yield from stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                streaming,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        unary = handler.unary_unary
        assert unary is not None

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            caller = self.caller(method, rule, request, context)
            with acting_as(caller):
                return unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _refuse(context: Any, method: str, status: grpc.StatusCode, error: PotluckError) -> NoReturn:
    _log.warning("refused %s from %s: %s: %s", method, context.peer(), status.name, error.message)
    context.set_trailing_metadata(error_metadata(error))
    context.abort(status, error.message)
    raise AssertionError("context.abort returns only by raising")  # pragma: no cover


def server_interceptors(
    auth: AuthSettings | None,
    rules: Mapping[str, Rule],
    *,
    default_project: str,
    on_refusal: OnRefusal | None = None,
) -> list[_Interceptor]:
    """Return the interceptors that make a server require tokens (none when auth is off).

    ``on_refusal`` is told of every refused call (servers pass a
    :class:`~potluck.auth.denials.DenialAudit` over their registry).

    Raises:
        ConfigError: If the tokens file or the JWKS is invalid.
        UnavailableError: If the JWKS cannot be read.
    """
    if auth is None or not auth.authenticates:
        return []
    authenticator = Authenticator.from_settings(auth)
    return [
        AuthInterceptor(
            authenticator, rules, default_project=default_project, on_refusal=on_refusal
        )
    ]


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"invalid setting {key!r}: cannot read {path}: {exc.strerror}", key=key
        ) from None


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """Return the credentials of a TLS port (mutual TLS when ``client_ca_file`` is set).

    Raises:
        ConfigError: If a certificate or key file cannot be read.
    """
    pair = (_read(tls.key_file, "auth.tls.key_file"), _read(tls.cert_file, "auth.tls.cert_file"))
    client_ca = (
        _read(tls.client_ca_file, "auth.tls.client_ca_file")
        if tls.client_ca_file is not None
        else None
    )
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def add_port(server: grpc.Server, target: str, auth: AuthSettings | None) -> int:
    """Listen on ``target``, with TLS when ``auth`` has a certificate; return the bound port.

    Raises:
        ConfigError: If a certificate or key file cannot be read.
        RuntimeError: If gRPC cannot bind ``target`` (as ``add_insecure_port``).
    """
    if auth is not None and auth.tls is not None:
        return server.add_secure_port(target, server_credentials(auth.tls))
    return server.add_insecure_port(target)


class ClientSecurity(NamedTuple):
    """How a client reaches a server: TLS or not, which CAs to trust, which token to send."""

    secure: bool = False
    """Use TLS."""
    ca_file: Path | None = None
    """CA certificates (PEM) to trust; ``None``: the system's."""
    token: str | None = None
    """The bearer token to send; ``None``: none."""
    cert_file: Path | None = None
    """The client certificate chain (PEM) for mutual TLS; ``None``: none is shown."""
    key_file: Path | None = None
    """The private key (PEM) of ``cert_file``."""


def plain_hint(security: ClientSecurity, setting: str, details: str) -> str:
    """Return the hint an unreachable server's message ends with: TLS, if the client is plain.

    A plain client that reaches a TLS port is told only "Socket closed" (gRPC's ``details``),
    so then the message asks whether the server serves TLS and names the setting that turns it
    on (``setting``: ``core_secure``, ``serving_secure``, ``job_service_secure``).
    """
    if security.secure or "Socket closed" not in details:
        return ""
    return f" Is it serving TLS? Then set {setting}: true (and ca_file)."


PLAIN = ClientSecurity()
"""No TLS, no token: how clients reach a server on this machine without authentication."""


class _BearerToken(_UnaryClient, _StreamClient):
    """Adds ``authorization: Bearer <token>`` to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._entry = (METADATA_KEY, f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self._entry]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        """Send the call with the token."""
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        """Send the call with the token."""
        return continuation(self._details(details), request)


def open_channel(
    address: str, security: ClientSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """Return a channel to ``address`` that uses TLS and sends the token as ``security`` says.

    Raises:
        ConfigError: If ``ca_file``, ``client_cert_file`` or ``client_key_file`` cannot be read.
    """
    if security.secure:
        roots = _read(security.ca_file, "ca_file") if security.ca_file is not None else None
        chain = key = None
        if security.cert_file is not None and security.key_file is not None:
            chain = _read(security.cert_file, "client_cert_file")
            key = _read(security.key_file, "client_key_file")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=roots, private_key=key, certificate_chain=chain
        )
        channel = grpc.secure_channel(address, credentials, options=list(options))
    else:
        channel = grpc.insecure_channel(address, options=list(options))
    if security.token:
        return grpc.intercept_channel(channel, _BearerToken(security.token))
    return channel


__all__ = [
    "METADATA_KEY",
    "PLAIN",
    "AuthInterceptor",
    "ClientSecurity",
    "add_port",
    "open_channel",
    "plain_hint",
    "server_credentials",
    "server_interceptors",
]
