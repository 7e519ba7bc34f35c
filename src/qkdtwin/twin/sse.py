"""Server-sent events for the twin services: one bounded queue per client, fed from any thread.

Both services (the self-simulated twin's and the attached twin's) stream their events the same
way: a subscriber callback, called on the twin's threads, hands each event to the client's
asyncio queue; a slow client loses its oldest events, never the twin's loop; a keep-alive comment
every 10 s lets a vanished client be noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

__all__ = ["event_stream"]

Event = dict[str, Any]


def event_stream(
    request: Request,
    subscribe: Callable[[Callable[[Event], None]], None],
    unsubscribe: Callable[[Callable[[Event], None]], None],
    first: Callable[[], Event] | None = None,
) -> StreamingResponse:
    """Return a ``text/event-stream`` response of every event the twin publishes.

    Parameters
    ----------
    request
        The client's request (to notice a disconnect).
    subscribe, unsubscribe
        The twin's subscriber registration.
    first
        Builds the first event sent (e.g. the current state); ``None``: a ``hello`` event.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=256)

    def push(ev: Event) -> None:
        def put() -> None:
            if queue.full():  # a slow client loses old events, never the loop
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(ev)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(put)

    subscribe(push)

    async def stream() -> AsyncIterator[bytes]:
        try:
            ev0 = first() if first is not None else {"type": "hello"}
            yield f"event: {ev0['type']}\ndata: {json.dumps(ev0)}\n\n".encode()
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=10.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield b": keep-alive\n\n"
                    continue
                yield f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode()
        finally:
            unsubscribe(push)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
