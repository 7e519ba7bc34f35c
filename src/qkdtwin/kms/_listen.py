"""Listening sockets bound before a KME server starts, so a port in use is one clear error.

uvicorn binds its port inside the server's event loop; on failure it logs the error and calls
``sys.exit``, which on a :class:`~qkdtwin.kms.tls.RunningServer` thread only says "failed to
start". :func:`listen_socket` binds first and raises :class:`~qkdtwin.errors.ConfigError`
with the reason (``127.0.0.1:8443 is in use (Address already in use)``);
:class:`PreboundServer` then serves that socket, and can announce when it accepts
connections.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence

import uvicorn

from qkdtwin.errors import ConfigError

__all__ = ["PreboundServer", "listen_socket"]


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind a TCP socket to ``host:port`` (0: any free port) for a server to listen on.

    ``SO_REUSEADDR`` is set as uvicorn does, so a port left in TIME_WAIT is reusable, but one
    that another socket listens on is not.

    Raises
    ------
    ConfigError
        If the address is in use, not allowed, or not an address of this machine (one line
        with ``host:port`` and the operating system's reason).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # accepted connections inherit it. Without it Nagle held back a response's last segment
    # until the client's delayed ACK: ~40 ms added to requests (seen in kms_roundtrip.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            message = f"{host}:{port} is in use ({reason})"
        else:
            message = f"cannot listen on {host}:{port} ({reason})"
        raise ConfigError(message, field="port", value=port) from None
    return sock


class PreboundServer(uvicorn.Server):
    """A uvicorn server that serves sockets bound beforehand (:func:`listen_socket`).

    ``run()`` without arguments serves ``sockets``, so
    :class:`~qkdtwin.kms.tls.RunningServer` runs it like any other server.

    Parameters
    ----------
    config
        The server's configuration (``make_server(...).config``).
    sockets
        The bound sockets; uvicorn closes them when the started server shuts down.
    on_started
        Called once, on the server's event loop, when it accepts connections.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        sockets: Sequence[socket.socket],
        *,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.bound_sockets = list(sockets)
        self._on_started = on_started

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve ``sockets``, by default the bound ones, until asked to exit."""
        super().run(sockets=self.bound_sockets if sockets is None else sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then call ``on_started``."""
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()
