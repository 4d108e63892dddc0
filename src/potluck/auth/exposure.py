"""Safe defaults: a server without authentication listens on this machine only, unless told.

:func:`check_exposure` is called by every server command before it starts. Without a token
source configured (``auth.tokens_file``, ``auth.tokens`` or ``auth.jwt``), listening on an
address other than a loopback one is refused unless the command was given
``--allow-unauthenticated``; then it goes on with a warning.

:func:`isolation_warning` is the line the Core service logs when it authenticates callers but
keeps no project's data apart (``data_isolation: off``).
"""

from __future__ import annotations

import ipaddress

from potluck.auth.settings import AuthSettings
from potluck.errors import ValidationError

ALLOW_FLAG = "--allow-unauthenticated"
"""The option that lets a server without authentication listen beyond this machine."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(
    host: str, auth: AuthSettings | None, *, allow_unauthenticated: bool, what: str
) -> str:
    """Return the line a server prints at start about its authentication, or refuse to start.

    Args:
        host: The address it will listen on (``--host``).
        auth: The auth settings, ``None`` when absent.
        allow_unauthenticated: Whether ``--allow-unauthenticated`` was given.
        what: The server, for the messages (``"potluck serve"``).

    Returns:
        The notice: authentication is on (and TLS or not), off on this machine only, or off
        and exposed (the warning).

    Raises:
        ValidationError: If ``host`` is not a loopback address, authentication is off and
            ``allow_unauthenticated`` is false; the message names both ways out.
    """
    tls = "plain connections, no TLS"
    if auth is not None and auth.tls is not None:
        tls = "mutual TLS" if auth.tls.client_ca_file is not None else "TLS"
    if auth is not None and auth.authenticates:
        return f"{what}: authentication on (bearer tokens), {tls}"
    if is_loopback(host):
        return (
            f"{what}: authentication is off, so it listens on {host} only (this machine); "
            "configure auth to serve other machines (docs/security.md)"
        )
    if not allow_unauthenticated:
        raise ValidationError(
            f"{what} would listen on {host} without authentication, so anyone who can reach it "
            f"could call it; configure auth (tokens_file, tokens or jwt; docs/security.md), or "
            f"pass {ALLOW_FLAG} to serve unauthenticated anyway",
            field="host",
        )
    return (
        f"warning: {what} listens on {host} WITHOUT authentication ({ALLOW_FLAG}): anyone "
        "who can reach it can call it"
    )


def isolation_warning(isolates_data: bool, auth: AuthSettings | None) -> str | None:
    """Return the warning of a Core service with authentication on and project isolation off.

    Args:
        isolates_data: Whether project data isolation is on
            (:attr:`potluck.config.Settings.isolates_data`).
        auth: The auth settings, ``None`` when absent.

    Returns:
        The warning, for a ``WARNING`` log record (the CLI shows it as ``warning: ...``), or
        ``None`` when authentication is off (one user) or isolation is on.
    """
    if not isolates_data and auth is not None and auth.authenticates:
        return (
            "authentication is on but project data isolation is off (data_isolation: "
            "off): a feature table of one project may name another project's folder as its "
            "source and read or overwrite that project's data; remove data_isolation: off "
            "(docs/security.md)"
        )
    return None


__all__ = ["ALLOW_FLAG", "check_exposure", "is_loopback", "isolation_warning"]
