"""Why a gRPC server cannot listen on ``host:port``: one home for the Core and Job Service servers.

gRPC's ``add_insecure_port`` (and ``add_secure_port``) raise a bare ``RuntimeError`` that does
not say what went wrong; :func:`bind_problem` binds a plain socket to the same address to find
out (``Address already in use``, ``Cannot assign requested address``...).
"""

from __future__ import annotations

import socket


def bind_problem(host: str, port: int) -> str:
    """Say why ``host:port`` cannot be listened on; gRPC's own error does not.

    Args:
        host: The interface (IPv4, or IPv6 when it holds a ``:``).
        port: The port.

    Returns:
        The operating system's reason (``Address already in use``), or ``"gRPC could not bind
        it"`` when a plain socket binds fine.
    """
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "gRPC could not bind it"


__all__ = ["bind_problem"]
