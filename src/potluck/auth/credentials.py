"""What a client sends: the TLS and bearer-token settings of the SDK and the CLI, read once.

``token`` (or the content of ``token_file``) is sent to every remote service; ``core_secure``,
``serving_secure`` and ``job_service_secure`` turn TLS on for ``core_url``, ``serving_url`` and
``job_service_url``, trusting ``ca_file`` (else the system's CAs), as Feast 0.9's client options
of the same names; ``client_cert_file`` and ``client_key_file`` are shown to servers that require
mutual TLS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from potluck.auth.grpc import ClientSecurity
from potluck.config import Settings
from potluck.errors import ConfigError


def client_token(settings: Settings) -> str | None:
    """Return the bearer token the settings give, or ``None``.

    Raises:
        ConfigError: If both ``token`` and ``token_file`` are set, or the file cannot be read
            or is empty.
    """
    if settings.token is not None and settings.token_file is not None:
        raise ConfigError(
            "invalid settings 'token' and 'token_file': set one of them, not both",
            key="token_file",
        )
    if settings.token is not None:
        return settings.token.get_secret_value().strip() or None
    if settings.token_file is None:
        return None
    path = settings.resolve_path(settings.token_file)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"invalid setting 'token_file' = {str(path)!r}: cannot read it ({exc}); write the "
            "token into it, or set token instead",
            key="token_file",
        ) from None
    if not token:
        raise ConfigError(
            f"invalid setting 'token_file' = {str(path)!r}: the file is empty; write the token "
            "into it",
            key="token_file",
        )
    return token


def client_security(
    settings: Settings, service: Literal["core", "serving", "job_service"]
) -> ClientSecurity:
    """Return how to reach ``service`` (Core, Online Serving, the Job Service) as settings say.

    Raises:
        ConfigError: As :func:`client_token`; or if only one of ``client_cert_file`` and
            ``client_key_file`` is set.
    """
    if (settings.client_cert_file is None) != (settings.client_key_file is None):
        given, missing = (
            ("client_cert_file", "client_key_file")
            if settings.client_key_file is None
            else ("client_key_file", "client_cert_file")
        )
        raise ConfigError(
            f"invalid settings: {given} is set but {missing} is not; mutual TLS needs both the "
            "client certificate and its private key",
            key=missing,
        )
    secure = {
        "core": settings.core_secure,
        "serving": settings.serving_secure,
        "job_service": settings.job_service_secure,
    }[service]

    def path(value: Path | None) -> Path | None:
        return settings.resolve_path(value) if value is not None else None

    return ClientSecurity(
        secure=secure,
        ca_file=path(settings.ca_file),
        token=client_token(settings),
        cert_file=path(settings.client_cert_file),
        key_file=path(settings.client_key_file),
    )


__all__ = ["client_security", "client_token"]
