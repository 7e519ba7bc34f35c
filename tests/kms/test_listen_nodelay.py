"""Connections accepted on a prebound KME socket get TCP_NODELAY (no Nagle stall per response)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from qkdtwin.kms._listen import listen_socket

# starts real servers or processes (see tests/conftest.py for the markers)
pytestmark = pytest.mark.e2e


def test_accepted_connections_have_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY only when the socket's proto is TCP; a listening socket made
    with proto 0 passed that on to every connection, and Nagle then held each response's
    last segment until the client's delayed ACK (~40 ms per request)."""
    sock = listen_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    port = sock.getsockname()[1]
    nodelay: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            raw = transport.get_extra_info("socket")
            nodelay.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if nodelay:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert nodelay
    assert nodelay[0] != 0
