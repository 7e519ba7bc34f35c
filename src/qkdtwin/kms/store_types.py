"""Result types of the KME key store (:mod:`qkdtwin.kms.store`).

Plain values that :class:`~qkdtwin.kms.store.KeyStore` methods return: delivered keys
(:class:`DeliveredKey`), key counts (:class:`KeyCounts`), the outcome of an undone reservation
(:class:`UnreserveResult`), a key's metadata (:class:`StoredKey`), an audit row
(:class:`AuditEntry`) and the health of the background WAL checkpoints
(:class:`CheckpointHealth`). Every name here is re-exported by :mod:`qkdtwin.kms.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

__all__ = [
    "AuditEntry",
    "CheckpointHealth",
    "DeliveredKey",
    "KeyCounts",
    "StoredKey",
    "UnreserveResult",
]


class AuditEntry(TypedDict):
    """One row of a store's audit log (:meth:`KeyStore.audit_log`): when, who, which key, what."""

    at: float
    sae_id: str
    key_id: str
    action: str


@dataclass(frozen=True)
class DeliveredKey:
    """One key handed to an SAE: its ID and material (``size_bits // 8`` bytes)."""

    key_id: str
    material: bytes


@dataclass(frozen=True)
class KeyCounts:
    """Key counts of one store, as :meth:`KeyStore.counters` reports them.

    Gauges (now): ``available`` (unexpired keys in state available, as
    :meth:`KeyStore.available_count`), ``owned`` (those the asking KME may hand out itself:
    its own and unowned ones) and ``reserved`` (reserved for SAEs, not yet erased).

    Cumulative totals since the store was created (they survive restarts):

    * ``added_total``: keys stored (:meth:`~KeyStore.add_keys`,
      :meth:`~KeyStore.install_reserved`); equals the rows of ``kms_keys``.
    * ``delivered_total``: keys that left the pool for use, each counted once: reserved for a
      master SAE here (audit ``enc``), reserved as the mirror of the peer's reservation or
      installed for a relay's slaves (``sync``), or consumed as a relay pad (``relay``). A
      slave's ``dec_keys`` fetch of a key already counted is not counted again. A reservation
      undone because its master SAE never received it (:meth:`~KeyStore.unreserve`, audit
      ``undo``; admission control) is subtracted again: its keys came back to the pool, so
      ``delivered_total`` counts keys that left the pool and did not come back, and it can
      go *down* between two readings. Equals the audit rows with those three actions minus
      the ``undo`` rows.
    * ``discarded_total``: available keys erased unused: :meth:`~KeyStore.discard`
      (``discard``) and TTL expiry (``expire``); equals those audit rows.
    * ``erased_total``: keys whose material was dropped, by any path (after delivery, relay,
      discard, revocation, expiry); equals the rows in state erased or expired.

    So ``added_total == available_state + delivered_total + discarded_total``, where
    ``available_state`` counts available keys whether or not their TTL has passed. A
    revoked reservation (failed mirroring) stays in ``delivered_total``: its keys left the
    pool and the audit log shows ``enc``/``sync`` followed by ``revoke``; so does an undone
    key that could not go back (``undo`` refused it: a slave had fetched it).
    """

    available: int
    owned: int
    reserved: int
    added_total: int
    delivered_total: int
    erased_total: int
    discarded_total: int


@dataclass(frozen=True)
class UnreserveResult:
    """What :meth:`KeyStore.unreserve` did: key_IDs back in the pool, key_IDs erased instead."""

    returned: list[str]
    erased: list[str]


@dataclass(frozen=True)
class StoredKey:
    """The metadata of one stored key (never its material), for inspection and tests."""

    key_id: str
    size_bits: int
    state: str
    master_sae_id: str | None


@dataclass(frozen=True)
class CheckpointHealth:
    """How the background WAL checkpoints of one store fare (SQLite; PostgreSQL: none run).

    ``failures`` counts the failed checkpoints since the store was opened; ``last_error``
    (:func:`describe_error`) and ``last_error_at`` (store clock) describe the latest one;
    ``failing`` is true while the most recent checkpoint attempt failed.
    """

    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    failing: bool = False
