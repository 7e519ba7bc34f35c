"""The event subscribers of a twin: callbacks that receive every event it publishes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Subscribers"]


class Subscribers:
    """Mixin of the twins: :meth:`subscribe` and :meth:`unsubscribe` event callbacks.

    The class using it sets ``_lock`` (its state lock) and ``_subs`` (an empty list) and
    publishes by calling every callback in ``_subs``.
    """

    _lock: threading.RLock
    _subs: list[Callable[[dict[str, Any]], None]]

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(event)`` for every event (``tick``, ``alarm``, ...)."""
        with self._lock:
            self._subs.append(callback)

    def unsubscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Stop calling ``callback``."""
        with self._lock:
            if callback in self._subs:
                self._subs.remove(callback)
