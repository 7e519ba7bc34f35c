"""Process-wide background threads of the KME key store (:mod:`qkdtwin.kms.store`).

:class:`_Checkpointer` copies the WAL of the SQLite stores written lately into their database
files (:meth:`KeyStore.checkpoint <qkdtwin.kms.store.KeyStore.checkpoint>`) and
:class:`_Sweeper` runs the erasure sweeps of the stores a KME server registered
(:meth:`KeyStore.sweep <qkdtwin.kms.store.KeyStore.sweep>`). One daemon thread of each per
process, started with the first store that needs it: the singletons :data:`_CHECKPOINTER`
and :data:`_SWEEPER`, re-exported by :mod:`qkdtwin.kms.store`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

from qkdtwin.kms.store_errors import describe_error

if TYPE_CHECKING:
    from qkdtwin.kms.store import KeyStore

log = logging.getLogger("qkdtwin.kms")


class _StoreThread:
    """A set of stores (weakly held) and the daemon thread that works on them, ``_run``.

    The thread starts with the first store added (again, should it have died).
    """

    #: The thread's name.
    thread_name = "kms-store"

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stores: weakref.WeakSet[KeyStore] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, store: KeyStore) -> None:
        with self._lock:
            self._stores.add(store)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, daemon=True, name=self.thread_name
                )
                self._thread.start()

    def discard(self, store: KeyStore) -> None:
        with self._lock:
            self._stores.discard(store)

    def _run(self) -> None:
        raise NotImplementedError


class _Checkpointer(_StoreThread):
    """One daemon thread per process that checkpoints the SQLite stores written lately.

    The thread survives any error: a store whose checkpoint fails is logged and retried
    after a backoff that doubles from ``interval_s`` up to ``max_backoff_s`` (other stores
    are not slowed down), and the failure is counted in its
    :meth:`KeyStore.checkpoint_health`.
    """

    thread_name = "kms-wal-checkpoint"

    def __init__(self, interval_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        super().__init__(interval_s)
        self.max_backoff_s = max_backoff_s

    @property
    def alive(self) -> bool:
        """Whether the checkpoint thread runs (it starts with the first SQLite store)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self._round()
            except Exception:  # never let the thread die: the WAL would grow without bound
                log.exception("WAL checkpoint round failed")

    def _round(self) -> None:
        now = time.monotonic()
        with self._lock:
            stores = [s for s in self._stores if s._dirty and s._checkpoint_retry_at <= now]
        for store in stores:
            try:
                store.checkpoint()
            except Exception as exc:  # recorded by checkpoint(); retried after the backoff
                backoff = min(
                    self.max_backoff_s, max(self.interval_s, 2 * store._checkpoint_backoff_s)
                )
                store._checkpoint_backoff_s = backoff
                store._checkpoint_retry_at = time.monotonic() + backoff
                log.warning(
                    "WAL checkpoint of %s failed (%d failures), retry in %.1f s: %s",
                    store.engine.url.render_as_string(hide_password=True),
                    store.checkpoint_health().failures,
                    backoff,
                    describe_error(exc),
                )
            else:
                store._checkpoint_backoff_s = 0.0
                store._checkpoint_retry_at = 0.0


_CHECKPOINTER = _Checkpointer()


class _Sweeper(_StoreThread):
    """One daemon thread per process that erases what running KMEs will not deliver again.

    Every ``interval_s`` it calls :meth:`KeyStore.sweep` on the stores a KME server
    registered (:meth:`KeyStore.start_sweeping`): erasure then does not wait for the next
    ``enc_keys`` request. Errors are logged and never stop the thread.
    """

    thread_name = "kms-sweep"

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                stores = [s for s in self._stores if not s._closed]
            for store in stores:
                try:
                    store.sweep()
                except Exception as exc:  # a store error now; the next round retries
                    log.warning("erasure sweep of a key store failed: %s", describe_error(exc))


_SWEEPER = _Sweeper()
