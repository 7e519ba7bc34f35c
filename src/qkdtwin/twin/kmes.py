"""The key management layer of the live twin: one KME per node, one link-key store per link end.

Every QKD link delivers its secret key to the KMEs at both of its ends as identical keys (same
key_ID, same material) in a :class:`~qkdtwin.kms.KeyStore` per link end, the stores that
:func:`qkdtwin.kms.relay.relay_key` consumes hop by hop. The material is drawn from the operating
system's CSPRNG at the secret key rate the link engine measured, standing in for the link's
post-processed final key (as :class:`~qkdtwin.kms.feeder.LinkFeeder` does; running Cascade and
privacy amplification for every key of every link would cost more than the twin's CPU budget).

Keys are delivered to the stores in batches every ``feed_every`` ticks (one SQLite transaction
per store and batch, ~0.6 ms, is what bounds the cost with 100 links). Until delivered they are
*pending*, a count: their IDs and material are drawn at delivery, and only as many as the
stores can still take (a store at ``max_keys`` drops the rest, as it always did; drawing and
wrapping 10^5 keys a second that a full store throws away was most of the twin's CPU at 1,000
links), and a delivery that no store could take costs no transaction at all. When a link raises
an alarm, its pending keys and the keys delivered from the blocks in the alarm window are
discarded (:meth:`KeyStore.discard`).
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from qkdtwin.kms import KeyStore
from qkdtwin.kms.kek import create_kek, load_kek
from qkdtwin.kms.relay import Hop

__all__ = ["KeyCounts", "KmeLayer", "LinkKeys"]

KEY_BITS = 256
#: A link's stores are topped up only once they have room for this fraction of ``max_keys``
#: (at least one key); below that, its pending keys are dropped as a full store drops them.
TOP_UP_FRACTION = 0.05


class KeyCounts(TypedDict):
    """Key accounts of one link for the API (:meth:`KmeLayer.link_view`), keys of 256 bits."""

    available: int
    pending: int
    produced: int
    discarded: int


@dataclass
class LinkKeys:
    """Key accounting of one link: its two stores, pending keys and recent deliveries."""

    link: str
    a: str
    b: str
    store_a: KeyStore
    store_b: KeyStore
    bits: float = 0.0
    #: Keys produced and not yet delivered (their material is drawn at delivery).
    pending: int = 0
    delivered: deque[list[str]] = field(default_factory=lambda: deque(maxlen=64))
    available: int = 0
    produced: int = 0
    discarded: int = 0

    def store_at(self, node: str) -> KeyStore:
        """Return the store at end ``node``."""
        return self.store_a if node == self.a else self.store_b


class KmeLayer:
    """KMEs of every node and the link-key stores of every link.

    Parameters
    ----------
    links
        ``(link_id, a, b)`` of every link.
    data_dir
        Directory of the SQLite stores (``kme/<link>-<end>.db``).
    max_keys
        Capacity of each store, keys (extra keys are dropped by the store).
    """

    def __init__(self, links: list[tuple[str, str, str]], data_dir: Path, max_keys: int) -> None:
        root = Path(data_dir) / "kme"
        root.mkdir(parents=True, exist_ok=True)
        self.links: dict[str, LinkKeys] = {}
        self.max_keys = int(max_keys)
        #: Least room (keys) for which a link's stores are topped up (:meth:`flush`).
        self.top_up_keys = max(1, math.ceil(TOP_UP_FRACTION * self.max_keys))
        # wrapped at rest like every KME's store (kek.bin, 0600, beside the stores)
        kek = load_kek(create_kek(root / "kek.bin"))
        for lid, a, b in links:
            sa, sb = (
                KeyStore(
                    f"sqlite:///{root / f'{lid}@{end}.db'}",
                    max_key_count=max_keys,
                    kek=kek,
                    keep_connections=False,  # 2,000 stores at 1,000 links: no idle descriptors
                )
                for end in (a, b)
            )
            lk = LinkKeys(lid, a, b, sa, sb)
            lk.available = sa.available_count(KEY_BITS)
            self.links[lid] = lk

    def produce(self, link: str, key_bits: float) -> int:
        """Add ``key_bits`` of secret key from ``link`` as pending 256-bit keys; return how many."""
        lk = self.links[link]
        lk.bits += key_bits
        n = int(lk.bits // KEY_BITS)
        if n:
            lk.bits -= n * KEY_BITS
            lk.pending += n
            lk.produced += n
        return n

    def mark_block(self, link: str) -> None:
        """Start a new block's list of delivered key IDs (for discarding on an alarm)."""
        self.links[link].delivered.append([])

    def flush(self, link: str) -> int:
        """Deliver the pending keys of ``link`` to both its stores; return how many were stored.

        Keys beyond what the stores can still take (``max_keys`` less the available keys)
        are dropped, as the store would drop them, without drawing their material. A store
        nearly full (room for less than :data:`TOP_UP_FRACTION` of ``max_keys``) is not topped
        up: at 1,000 links every relay took one key from a store and the next delivery put
        one back, two store transactions for one key, ~40 % of the twin's tick. So a link's
        stores hold between 95 % and 100 % of ``max_keys`` while its key rate exceeds their use.
        """
        lk = self.links[link]
        if not lk.pending:
            return 0
        room = max(0, self.max_keys - lk.available)
        m, lk.pending = min(lk.pending, room), 0
        if room < self.top_up_keys:
            return 0
        keys = [(str(uuid.uuid4()), os.urandom(KEY_BITS // 8)) for _ in range(m)]
        n = lk.store_a.add_keys(keys)
        lk.store_b.add_keys(keys)
        if lk.delivered:
            lk.delivered[-1].extend(k for k, _ in keys[:n])
        lk.available += n
        return n

    def discard(self, link: str, blocks: int) -> int:
        """Drop the pending keys and those delivered in the last ``blocks`` blocks of ``link``."""
        lk = self.links[link]
        n = lk.pending
        lk.pending = 0
        lk.bits = 0.0
        ids: list[str] = []
        for lst in list(lk.delivered)[-blocks:]:
            ids.extend(lst)
            lst.clear()
        if ids:
            gone = lk.store_a.discard(ids, by="twin:alarm")
            lk.store_b.discard(ids, by="twin:alarm")
            lk.available -= gone
            n += gone
        lk.discarded += n
        return n

    def hops(self, path: list[str]) -> list[Hop]:
        """Return the relay hops (link-key stores) of a node path, for :func:`relay_key`."""
        out = []
        for u, v in itertools.pairwise(path):
            lk = self.links["-".join(sorted((u, v)))]
            out.append(Hop(f"kme-{u}", f"kme-{v}", lk.store_at(u), lk.store_at(v)))
        return out

    def consumed(self, path: list[str]) -> None:
        """Account for one link key consumed on every hop of ``path`` (by a relay)."""
        for u, v in itertools.pairwise(path):
            lk = self.links["-".join(sorted((u, v)))]
            lk.available -= 1

    def path_has_keys(self, path: list[str]) -> bool:
        """Return whether every link of ``path`` holds at least one delivered link key."""
        return all(
            self.links["-".join(sorted((u, v)))].available > 0 for u, v in itertools.pairwise(path)
        )

    def resync(self, path: list[str]) -> None:
        """Re-read the available counts of the links of ``path`` from their stores."""
        for u, v in itertools.pairwise(path):
            lk = self.links["-".join(sorted((u, v)))]
            lk.available = lk.store_a.available_count(KEY_BITS)

    def node_levels(self) -> dict[str, int]:
        """Available link keys held by each node's KME (sum over its link-end stores)."""
        out: dict[str, int] = {}
        for lk in self.links.values():
            out[lk.a] = out.get(lk.a, 0) + lk.available
            out[lk.b] = out.get(lk.b, 0) + lk.available
        return out

    def link_view(self, link: str) -> KeyCounts:
        """Key accounts of one link for the API (keys of 256 bits)."""
        lk = self.links[link]
        return {
            "available": lk.available,
            "pending": lk.pending,
            "produced": lk.produced,
            "discarded": lk.discarded,
        }

    def close(self) -> None:
        """Close every store."""
        for lk in self.links.values():
            lk.store_a.close()
            lk.store_b.close()
