"""Admission control of a KME's SAE traffic, and the thread limiters of all its traffic.

Under overload a KME must answer quickly rather than queue without bound: a client that
gives up after its timeout and goes away should not leave the KME working for nobody (keys
reserved, mirrored at the peer KME and never received). Three pieces:

* :class:`SaeAdmission`, ASGI middleware on the ETSI GS QKD 014 paths (``/api/v1/keys/``
  only): at most ``max_active`` requests are served at once and at most ``max_queued`` wait,
  each at most ``queue_timeout_s`` seconds (a freed slot goes to the newest waiter, see
  :class:`AdmissionGate`). A request beyond the queue, or one that waited too long, gets 503
  at once with an ETSI Error body and ``Retry-After`` (:data:`ADMISSION_RETRY_AFTER_S`); the
  connection stays open.
* Client departure: once admitted, a request whose client has closed its connection is
  dropped unserved, before the store is touched. The request's :class:`Ticket` (in the ASGI
  scope under :data:`SCOPE_TICKET_KEY`) lets a route ask again later
  (:meth:`Ticket.client_gone`) and tells it whether its final response body found the
  client gone (:attr:`Ticket.dropped`): ``enc_keys`` then undoes its reservation instead
  of erasing the master-side copy (:mod:`qkdtwin.kms.api`).
* :class:`ThreadLimiter`: each kind of traffic runs its blocking store and peer work on its
  own anyio ``CapacityLimiter`` (SAE requests on one sized ``max_active``, KME-to-KME and
  operator requests on another), never on anyio's shared default one. So a KME whose SAE
  workers all wait for the peer KME to mirror their reservations still serves that peer's
  mirror requests: two KMEs overloaded in both directions cannot deadlock.

The peer and operator endpoints bypass the SAE admission: their load is bounded by the
other KMEs' own admission (each admitted ``enc_keys`` makes at most one peer call at a time).

Disconnects are detected through the ASGI receive channel: after the request body, the
server's ``receive()`` answers ``http.disconnect`` at once when the connection is gone and
blocks otherwise; :meth:`Ticket.client_gone` calls it inside an already cancelled scope (as
Starlette's ``Request.is_disconnected`` does), so it never waits.

"Admission control" in ``docs/kms.md`` describes the limits, what a client sees and the
accounting of keys under overload.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from qkdtwin.kms.limits import _replay_body

__all__ = [
    "ADMISSION_RETRY_AFTER_S",
    "DEFAULT_MAX_ACTIVE_REQUESTS",
    "DEFAULT_MAX_QUEUED_REQUESTS",
    "DEFAULT_PEER_THREADS",
    "DEFAULT_QUEUE_TIMEOUT_S",
    "SAE_PATH_PREFIX",
    "SCOPE_GONE_PROBE_KEY",
    "SCOPE_TICKET_KEY",
    "AdmissionCounts",
    "AdmissionGate",
    "SaeAdmission",
    "ThreadLimiter",
    "Ticket",
]

#: Default most SAE requests served at once per KME.
DEFAULT_MAX_ACTIVE_REQUESTS = 16
#: Default most SAE requests waiting for a slot per KME.
DEFAULT_MAX_QUEUED_REQUESTS = 64
#: Default longest wait for a slot, in seconds.
DEFAULT_QUEUE_TIMEOUT_S = 1.0
#: Default threads for KME-to-KME and operator requests per KME.
DEFAULT_PEER_THREADS = 16
#: ``Retry-After`` seconds of an admission 503.
ADMISSION_RETRY_AFTER_S = 1
#: Requests under this path prefix are SAE traffic (ETSI GS QKD 014) and pass admission.
SAE_PATH_PREFIX = "/api/v1/keys/"
#: ASGI scope key of an admitted request's :class:`Ticket`.
SCOPE_TICKET_KEY = "qkdtwin.admission"
#: ASGI scope key of the server's own "is this connection gone?" function (no waiting),
#: put there by :class:`qkdtwin.kms.tls.MtlsH11Protocol`.
SCOPE_GONE_PROBE_KEY = "qkdtwin.client_gone"

#: Event-loop turns given before the last check of a client's connection (see Ticket.dropping).
_CLOSE_TURNS = 3

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class AdmissionCounts:
    """What the SAE admission of one KME did, since the KME started.

    Gauges: ``active`` (requests being served), ``queued`` (requests waiting for a slot).
    Totals: ``admitted_total`` (requests that got a slot), ``rejected_total`` (503 at once:
    the queue was full), ``timed_out_total`` (503 after ``queue_timeout_s`` in the queue),
    ``abandoned_total`` (admitted requests whose client had gone: dropped before the store
    was touched), ``undone_total`` (``enc_keys`` reservations undone because their client
    went away before the response was sent).
    """

    active: int
    queued: int
    admitted_total: int
    rejected_total: int
    timed_out_total: int
    abandoned_total: int
    undone_total: int


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AdmissionGate:
    """Bounded concurrency and a bounded queue with a wait limit (thread-safe).

    A freed slot goes to the *newest* waiter (last in, first out). A queue only forms under
    overload, and then the newest request has the most of its client's timeout left, while
    the oldest are the likeliest to have been given up already: served first, they would
    mostly be answered just as (or after) their clients give up, which wastes the work and
    risks a response lost in flight (keys stranded). Measured with 256 clients with 0.5-3 s
    timeouts, first-in-first-out served about 15 % fewer keys and undid 10 to 20 times as
    many reservations. The oldest waiters get 503 once they have waited ``queue_timeout_s``.

    Parameters
    ----------
    max_active
        Most requests holding a slot at once (>= 1).
    max_queued
        Most requests waiting for a slot (>= 0).
    queue_timeout_s
        Longest wait for a slot, in seconds (> 0).
    """

    def __init__(self, max_active: int, max_queued: int, queue_timeout_s: float) -> None:
        self.max_active = max_active
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self._lock = threading.Lock()
        self._active = 0
        self._queue: deque[_Waiter] = deque()
        self._totals = {
            "admitted": 0,
            "rejected": 0,
            "timed_out": 0,
            "abandoned": 0,
            "undone": 0,
        }

    async def acquire(self) -> str | None:
        """Wait for a slot; return ``None`` once holding one, else why not (no slot held).

        ``"full"``: the queue was full (answered at once); ``"timeout"``: no slot within
        ``queue_timeout_s``. A slot is handed straight from :meth:`release` to the newest
        waiter; a newcomer takes a free slot only when nobody waits.
        """
        with self._lock:
            if self._active < self.max_active and not self._queue:
                self._active += 1
                self._totals["admitted"] += 1
                return None
            if len(self._queue) >= self.max_queued:
                self._totals["rejected"] += 1
                return "full"
            waiter = _Waiter(asyncio.get_running_loop())
            self._queue.append(waiter)
        try:
            with anyio.move_on_after(self.queue_timeout_s):
                await asyncio.shield(waiter.future)
        except BaseException:  # cancelled (server shutdown): give back a slot handed to us
            self._withdraw(waiter)
            raise
        with self._lock:
            if waiter.granted:
                self._totals["admitted"] += 1
                return None
            self._queue.remove(waiter)
            self._totals["timed_out"] += 1
            return "timeout"

    def _withdraw(self, waiter: _Waiter) -> None:
        with self._lock:
            granted = waiter.granted
            if not granted:
                self._queue.remove(waiter)
        if granted:
            self.release()

    def release(self) -> None:
        """Give a slot back: to the newest waiter if any, else to the pool."""
        with self._lock:
            if self._queue:
                waiter = self._queue.pop()  # newest first, see the class docstring
                waiter.granted = True
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            else:
                self._active -= 1

    def count(self, what: str) -> None:
        """Add one to a total: ``"abandoned"`` or ``"undone"``."""
        with self._lock:
            self._totals[what] += 1

    def counts(self) -> AdmissionCounts:
        """Return the gauges and totals (see :class:`AdmissionCounts`)."""
        with self._lock:
            t = self._totals
            return AdmissionCounts(
                active=self._active,
                queued=len(self._queue),
                admitted_total=t["admitted"],
                rejected_total=t["rejected"],
                timed_out_total=t["timed_out"],
                abandoned_total=t["abandoned"],
                undone_total=t["undone"],
            )


class Ticket:
    """An admitted SAE request's view of its client's connection.

    ``dropped`` becomes true when the final body of a watched response (``watch = True``,
    set by the route) found the client gone: the server then wrote nothing, so nobody
    received it.

    Parameters
    ----------
    receive
        The request's ASGI receive channel, the body already read from it.
    probe
        The server's own synchronous "is the connection gone?" (:data:`SCOPE_GONE_PROBE_KEY`),
        if it offers one; else the receive channel is polled.
    """

    def __init__(self, receive: Receive, probe: Callable[[], bool] | None = None) -> None:
        self._receive = receive
        self._probe = probe
        self._gone = False
        self.watch = False
        self.dropped = False

    async def client_gone(self) -> bool:
        """Return whether the client has closed its connection (never waits).

        A ``True`` is certain (the server itself reports the disconnect); a ``False`` may be
        overtaken by a disconnect a moment later.
        """
        if self._gone:
            return True
        if self._probe is not None:
            self._gone = self._probe()
            return self._gone
        with anyio.CancelScope() as scope:
            scope.cancel()
            message = await self._receive()
            self._gone = message.get("type") == "http.disconnect"
        return self._gone

    async def dropping(self) -> bool:
        """Whether a response sent right now would be dropped (the client is gone).

        With the server's probe the answer is exact for a send made in the same step, with
        no await in between. The event loop is first given :data:`_CLOSE_TURNS` turns, so
        that a connection closed by its client before this call (asyncio needs three turns
        from reading the close to reporting the connection lost) is noticed even when the
        server was stalled meanwhile. Without the probe, ``True`` is certain and ``False``
        may be wrong (the response then counts as sent: never undone, at worst stranded).
        """
        if self._probe is not None:
            for _ in range(_CLOSE_TURNS):
                await anyio.lowlevel.checkpoint()
        return await self.client_gone()


def _busy_body(reason: str, gate: AdmissionGate) -> bytes:
    if reason == "gone":
        message = "the client went away"
        details: dict[str, Any] = {}
    elif reason == "full":
        message = "too many requests queued at this KME; retry later"
        details = {
            "max_active_requests": gate.max_active,
            "max_queued_requests": gate.max_queued,
        }
    else:
        message = "no request slot free at this KME in time; retry later"
        details = {"queue_timeout_s": gate.queue_timeout_s}
    return json.dumps({"message": message, "details": [details]}).encode()


class SaeAdmission:
    """ASGI middleware: admission control of the SAE requests (see the module docstring).

    Sits inside :class:`~qkdtwin.kms.limits.BodySizeLimit` (the body it reads whole is
    already bounded). Other paths (peer and operator endpoints) pass through untouched.

    Parameters
    ----------
    app
        The wrapped ASGI application.
    gate
        The KME's :class:`AdmissionGate`.
    """

    def __init__(self, app: AsgiApp, gate: AdmissionGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Serve one ASGI scope."""
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(SAE_PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # the whole body first, so that receive() then only reports a disconnect
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                break
        refused = await self.gate.acquire()
        if refused is not None:
            await self._refuse(send, refused)
            return
        try:
            ticket = Ticket(receive, scope.get(SCOPE_GONE_PROBE_KEY))
            if await ticket.client_gone():  # it gave up while queued: serve nobody
                self.gate.count("abandoned")
                await self._refuse(send, "gone")  # written nowhere: the connection is gone
                return
            scope[SCOPE_TICKET_KEY] = ticket

            async def watch(message: Message) -> None:
                if (
                    ticket.watch
                    and message["type"] == "http.response.body"
                    and not message.get("more_body", False)
                    and await ticket.dropping()
                ):
                    ticket.dropped = True  # the server will write nothing: nobody got it
                await send(message)

            await self.app(scope, _replay_body(b"".join(chunks), receive), watch)
        finally:
            self.gate.release()

    async def _refuse(self, send: Send, reason: str) -> None:
        content = _busy_body(reason, self.gate)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    (b"retry-after", str(ADMISSION_RETRY_AFTER_S).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content, "more_body": False})


class ThreadLimiter:
    """Runs blocking calls on worker threads, at most ``tokens`` at once (anyio).

    One anyio ``CapacityLimiter`` per event loop, made on first use (an app may be served
    by several loops, e.g. in-process test clients); never anyio's default limiter, which
    every other synchronous route and dependency of the process shares.
    """

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, anyio.CapacityLimiter
        ] = weakref.WeakKeyDictionary()

    def limiter(self) -> anyio.CapacityLimiter:
        """Return this loop's limiter."""
        loop = asyncio.get_running_loop()
        with self._lock:
            limiter = self._by_loop.get(loop)
            if limiter is None:
                limiter = anyio.CapacityLimiter(self.tokens)
                self._by_loop[loop] = limiter
        return limiter

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread under this limiter."""

        def call() -> T:
            return fn(*args, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=self.limiter())
