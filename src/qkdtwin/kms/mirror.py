"""Mirrors of concurrent reservations, batched: one request to the peer KME for many.

Every ``enc_keys`` for a slave behind a neighbour KME reserves keys here and has the
neighbour reserve the same key_IDs (``POST /kme/v1/reservations``) before it answers. Under
concurrency most of a request's cost is that HTTPS round trip. :class:`MirrorBatcher`
coalesces the mirrors that wait at the same time (group commit): the first caller sends its
own mirror; those that arrive while it is in flight queue, and when it returns, the oldest
waiter takes over and sends *all* queued mirrors as one ``POST /kme/v1/reservations/batch``
(up to :data:`MAX_BATCH_KEYS` key IDs, so the body stays under the KMEs' body-size limit).
Each caller then learns its own outcome: the peer answers per reservation, and a transport
failure fails every reservation of that batch (each caller revokes its own keys, as for a
single failed mirror). No caller waits for more than the batch ahead of it and its own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qkdtwin.errors import KeyExhaustedError, KmsError
from qkdtwin.kms.etsi_errors import error_class

__all__ = ["MAX_BATCH_KEYS", "MirrorBatcher"]

#: Most key IDs in one batch (about 40 bytes each in the body: well under 64 KiB).
MAX_BATCH_KEYS = 1000


@dataclass
class _Job:
    body: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    finished: bool = False
    lead: bool = False
    error: KmsError | None = None


class MirrorBatcher:
    """Coalesce concurrent mirror requests to one peer (see the module docstring).

    Parameters
    ----------
    send_one
        Sends one reservation body (``POST /kme/v1/reservations``); raises :class:`KmsError`.
    send_batch
        Sends several (``POST /kme/v1/reservations/batch``); returns the peer's answer per
        reservation, ``{"ok": true}`` or ``{"ok": false, "status": S, "message": M}``;
        raises :class:`KmsError` for a transport failure.
    """

    def __init__(
        self,
        send_one: Callable[[dict[str, Any]], Any],
        send_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    ) -> None:
        self._send_one = send_one
        self._send_batch = send_batch
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._busy = False
        #: Batches sent and reservations in them (how much coalescing happened).
        self.batches = 0
        self.mirrored = 0

    def mirror(self, body: dict[str, Any]) -> None:
        """Have the peer mirror one reservation; return when it did.

        Raises
        ------
        KmsError
            The peer's refusal of this reservation, or the batch's transport failure.
        """
        job = _Job(body)
        with self._lock:
            self._queue.append(job)
            if not self._busy:
                self._busy = True
                job.lead = True
        while not job.finished:
            if not job.lead:
                job.done.wait()
                job.done.clear()
                continue
            self._run_one_batch()  # its own job is at the front of the queue
        if job.error is not None:
            raise job.error

    def _run_one_batch(self) -> None:
        with self._lock:
            batch: list[_Job] = []
            keys = 0
            while self._queue and (not batch or keys + self._n(self._queue[0]) <= MAX_BATCH_KEYS):
                j = self._queue.popleft()
                batch.append(j)
                keys += self._n(j)
        try:
            if len(batch) == 1:
                self._send_one(batch[0].body)
                results: list[dict[str, Any]] = [{"ok": True}]
            else:
                results = self._send_batch([j.body for j in batch])
                if len(results) != len(batch):
                    raise KeyExhaustedError("the peer KME sent a malformed batch answer")
        except KmsError as exc:
            results = [{"ok": False, "error": exc}] * len(batch)
        for j, r in zip(batch, results, strict=True):
            if not r.get("ok"):
                err = r.get("error")
                if not isinstance(err, KmsError):
                    cls = error_class(int(r.get("status", 503)), KeyExhaustedError)
                    err = cls(str(r.get("message", "the peer KME refused the mirror")))
                j.error = err
        with self._lock:
            self.batches += 1
            self.mirrored += len(batch)
            for j in batch:
                j.finished = True
            # hand over: the oldest waiter sends the next batch, or nobody is busy
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].done.set()
            else:
                self._busy = False
        for j in batch:
            j.done.set()

    @staticmethod
    def _n(job: _Job) -> int:
        return len(job.body.get("key_IDs", ()))
