"""Erasure of handed-over master copies, coalesced across concurrent ``enc_keys`` responses.

Once a master SAE has its ``enc_keys`` response and the slaves fetch at another KME, the
master-side copy of those keys is never delivered again and is erased
(:meth:`~qkdtwin.kms.store.KeyStore.erase_handed_over`). Erasing once per response costs one
write transaction per request: 17 % of a KME's interpreter time in the single-key round-trip
benchmark. :class:`HandOverEraser` keeps the promise (the copy goes as soon as the response
is sent) while sharing the transactions: the first response to finish becomes the *flusher*
and erases, in one transaction per store, the key IDs of every response that finished
meanwhile; the others only add their IDs and return. Under load that is one transaction for
many responses; idle, it is exactly the old per-response erasure.

The coalescing needs no timer and no event loop of its own (an app may be served by several
loops), only a lock: an ID added while a flush runs is picked up by that flush before it
stops, so no ID waits for a later request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["Eraser", "HandOverEraser"]

log = logging.getLogger(__name__)

#: Erases the handed-over copies among these key IDs; returns how many it erased.
Eraser = Callable[[Sequence[str]], int]


class HandOverEraser:
    """Collect handed-over key IDs and erase them in shared transactions.

    Parameters
    ----------
    run
        Runs a blocking callable off the event loop and awaits it (the KME's SAE worker
        threads, :meth:`~qkdtwin.kms.admission.ThreadLimiter.run`).
    """

    def __init__(self, run: Callable[[Callable[[], None]], Awaitable[None]]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._pending: dict[Eraser, list[str]] = {}
        self._flushing = False
        self.transactions = 0  #: erase calls made (one per eraser per flush)
        self.handed_over = 0  #: key IDs submitted

    async def submit(self, eraser: Eraser, key_ids: Sequence[str]) -> None:
        """Queue ``key_ids`` for ``eraser``; flush now unless a flush is already running.

        Called once the response holding the keys was written. Returns when these IDs are
        erased, or at once when another caller's running flush will erase them.
        """
        with self._lock:
            self._pending.setdefault(eraser, []).extend(key_ids)
            self.handed_over += len(key_ids)
            if self._flushing:
                return
            self._flushing = True
        await self._run(self._flush)

    def _flush(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending, {}
                if not batch:
                    self._flushing = False
                    return
            for eraser, ids in batch.items():
                self.transactions += 1
                try:
                    eraser(ids)
                except Exception:  # the copies stay reserved: the sweep erases them later
                    log.exception("erasing %d handed-over master copies failed", len(ids))

    @property
    def idle(self) -> bool:
        """True when no ID waits and no flush runs."""
        with self._lock:
            return not self._flushing and not self._pending
