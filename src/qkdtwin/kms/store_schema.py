"""SQL schema of the KME key store (:mod:`qkdtwin.kms.store`): tables and counter names.

Holds the SQLAlchemy :class:`~sqlalchemy.MetaData` of the store (``_metadata``) and its
tables: ``kms_keys`` (keys and their state), ``kms_grants`` (which SAE may fetch which key),
``kms_handover`` (master-side copies awaiting erasure), ``kms_audit`` (the append-only audit
log), ``kms_counters`` (the sharded counters behind :meth:`KeyStore.counters
<qkdtwin.kms.store.KeyStore.counters>`) and ``kms_meta`` (store-wide facts), plus the names of
the counters. Every name here is re-exported by :mod:`qkdtwin.kms.store`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

_metadata = MetaData()

_keys = Table(
    "kms_keys",
    _metadata,
    Column("key_id", String(36), primary_key=True),
    Column("seq", Integer, nullable=False, index=True),
    Column("size_bits", Integer, nullable=False),
    Column("material", LargeBinary, nullable=True),
    Column("state", String(16), nullable=False, index=True),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=True),
    Column("master_sae_id", String(255), nullable=True),
    Column("reserved_at", Double, nullable=True),
    # The KME allowed to hand this key out through enc_keys (None: either end). Splitting a
    # link's pool per direction keeps two KMEs from reserving the same key at once.
    Column("owner", String(255), nullable=True),
    # reserve() takes the oldest available keys: without this index it sorts the whole pool.
    Index("ix_kms_keys_state_seq", "state", "seq"),
    # erase_delivered() finds master-side copies and stale reservations by their age.
    Index("ix_kms_keys_state_reserved_at", "state", "reserved_at"),
)

_grants = Table(
    "kms_grants",
    _metadata,
    Column("key_id", String(36), nullable=False, index=True),
    Column("sae_id", String(255), nullable=False),
    Column("role", String(8), nullable=False),
    Column("delivered_at", Double, nullable=True),
    UniqueConstraint("key_id", "sae_id", name="uq_kms_grants_key_sae"),
)

# Master-side copies awaiting erasure: keys reserved here whose slaves fetch at the peer KME
# (reserve(slaves_here=False), relayed keys installed for the master). erase_handed_over()
# deletes a copy's row with the copy; erase_delivered() erases whatever is left here after the
# retry window. Without this table the sweep probed every reserved key of the last minute for
# a slave grant: 50 ms of write lock per second at a KME whose slaves had 40,000 keys to fetch.
_handover = Table(
    "kms_handover",
    _metadata,
    Column("key_id", String(36), nullable=False, index=True),
    Column("reserved_at", Double, nullable=False, index=True),
)

_audit = Table(
    "kms_audit",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("sae_id", String(255), nullable=False),
    Column("key_id", String(36), nullable=False),
    Column("action", String(16), nullable=False),
)

# Counters of :meth:`KeyStore.counters`. On PostgreSQL each counter is spread over
# ``_COUNTER_SHARDS`` rows (a writer adds to a random one, a reader sums them), so concurrent
# reservations do not queue on one hot row; SQLite has one writer at a time and uses shard 0.
_counters = Table(
    "kms_counters",
    _metadata,
    Column("name", String(300), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("value", BigInteger, nullable=False),
    PrimaryKeyConstraint("name", "shard", name="pk_kms_counters"),
)
_COUNTER_SHARDS = 16

# Store-wide facts: ``wrapping`` is ``none`` or the check value of the store's KEK.
_meta = Table(
    "kms_meta",
    _metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)
_ADDED, _DELIVERED, _ERASED, _DISCARDED, _RESERVED = (
    "added",
    "delivered",
    "erased",
    "discarded",
    "reserved",
)


def _available_name(owner: str | None) -> str:
    """Counter of the keys in state ``available`` owned by ``owner`` (``None``: unowned)."""
    return "available" if owner is None else f"available:{owner}"
