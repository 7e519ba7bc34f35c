"""Request body size limit of a KME, as plain ASGI middleware.

:class:`BodySizeLimit` refuses a request whose body is larger than ``max_bytes`` with 413 and
an ETSI GS QKD 014 Error object ``{"message": ..., "details": [{"max_body_bytes": N}]}``
*before* the application parses it:

* a ``Content-Length`` above the limit is refused at once, without reading a byte of the body;
* a body without ``Content-Length`` (chunked) is counted while it is read and refused as soon
  as it passes the limit, so at most ``max_bytes`` plus one chunk is ever held.

A body within the limit is read in full (it is small) and handed to the application as one
message. The 413 answer carries ``Connection: close``, so the server closes the connection
instead of reading and discarding the rest of the body.

The server-side limits (TLS handshake, header and keep-alive timeouts, concurrent
connections) live in :mod:`qkdtwin.kms.tls`; ``docs/kms.md`` ("Limits") lists them all.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodySizeLimit", "send_etsi_error"]

#: Default largest request body, in bytes (64 KiB).
DEFAULT_MAX_BODY_BYTES = 64 * 1024

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: refuse HTTP request bodies above ``max_bytes`` with an ETSI 413.

    Parameters
    ----------
    app
        The wrapped ASGI application.
    max_bytes
        Largest accepted body, in bytes.
    """

    def __init__(self, app: AsgiApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (only ``http`` bodies are limited)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            # The server (h11) has already refused a malformed or repeated Content-Length.
            if name.lower() == b"content-length" and value.strip().isdigit():
                if int(value) > self.max_bytes:
                    await self._refuse(send)
                    return
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay_body(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send) -> None:
        await send_etsi_error(
            send, 413, "request body too large", [{"max_body_bytes": self.max_bytes}]
        )


def _replay_body(body: bytes, receive: Receive) -> Receive:
    """Return a ``receive`` that hands on ``body``, read beforehand, then the client's messages.

    For middleware that reads a request's whole body before the app runs: the app gets the
    body as one ``http.request`` message, then whatever ``receive`` answers (after the body,
    only ``http.disconnect`` remains).
    """
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_etsi_error(
    send: Callable[[Any], Awaitable[None]],
    status: int,
    message: str,
    details: list[dict[str, Any]],
) -> None:
    """Answer at the ASGI level with an ETSI Error body, and close the connection.

    For refusals made before any route runs (a body too large, too many connections).
    """
    content = json.dumps({"message": message, "details": details}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content, "more_body": False})
