"""The tests' one way to choose a port for a process that must be told it before it starts.

In-process servers bind port 0 and read the port back (``serve_in_thread``, ``ServiceThread``,
``DevNetwork``, ``listen_socket``): no race. A *child process* sometimes has to be given its
port up front: a Mosquitto the test configures, a KME whose config names its peer's URL before
either runs, a KME restarted on the port its clients know. For those, :func:`free_port` asks
the system for a free port and releases it; another process could take it before the child
binds it, a small window that the child's own "address in use" error would make visible.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` now (for a child process to bind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
