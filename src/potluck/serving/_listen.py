"""Where serving listens: ``host:port`` as text, and TCP sockets bound to it, IPv4 or IPv6.

The host is what ``potluck serve --host`` was given: an IPv4 or IPv6 address, or a name that
resolves to one of this machine's addresses. The socket takes the family of the host's first
passive address, so ``::1`` and ``0.0.0.0`` both work.
"""

from __future__ import annotations

import socket


def address(host: str, port: int) -> str:
    """Return ``host:port``, the host in brackets when it is an IPv6 address (``[::1]:6566``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bound_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Return a TCP socket bound to ``host:port`` (``SO_REUSEADDR``), not yet listening.

    Args:
        host: The interface.
        port: The port; 0 picks a free one.
        reuse_port: Set ``SO_REUSEPORT`` too, so sibling processes can bind the same port.

    Raises:
        OSError: If ``host`` does not resolve (``socket.gaierror``) or ``host:port`` cannot be
            bound (``errno`` says why: ``EADDRINUSE``, ``EADDRNOTAVAIL``...).
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says so, and without it every response waits ~40 ms for delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


__all__ = ["address", "bound_socket"]
