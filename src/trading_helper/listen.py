"""The listening socket of ``serve`` and ``demo``, bound before anything else is imported or started.

Kept apart from ``api/serve.py`` (which imports the whole application) so that a command can bind
its port first and answer a port in use with one line at once, not after seconds of imports.
"""

from __future__ import annotations

import errno
import socket

from trading_helper.errors import ConfigError


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything else starts: a port in use is one
    clear error at once, not a server that says it runs and then cannot."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = (
            "is in use (another server, or another trading-helper, listens there)"
            if exc.errno == errno.EADDRINUSE
            else f"cannot be listened on: {exc.strerror or exc}"
        )
        raise ConfigError(
            f"port {port} on {host} {reason}: stop it, or choose another port (--port or API_PORT)"
        ) from exc
    return sock
