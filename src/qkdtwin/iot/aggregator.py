"""Aggregator at the data-aggregation layer: obtains keys by key_ID, decrypts, checks, delivers.

For every frame received on an edge's data topic it parses the records and, per record:

1. header well-formed (else ``malformed``-family reasons from :func:`parse_header`);
2. mode equals the link's mode (``mode_mismatch``), kind fits the scheme (``kind_mismatch``),
   an aggregate comes from the gateway itself (``sender_mismatch``);
3. KEX: a newer epoch (``stale_kex`` otherwise); the QKD key fetched by key_ID from the KME
   (``dec_keys``; ``unknown_key_id`` if refused); ML-KEM decapsulation; key confirmation
   (``auth_failed``). The current and the previous epoch stay open (in-flight grace);
4. data: epoch open (``wrong_epoch``), key_ID equal to the epoch's (``unknown_key_id``), replay
   window (``replay``, ``too_old``), AES-GCM authentication (``auth_failed``), payload
   (``bad_payload``); only then the window moves and readings are delivered.

Every refusal is counted by reason and the aggregator keeps running; a malformed record stops
the parsing of the rest of its frame (it cannot be delimited), counted once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qkdtwin.errors import ConfigError, EnvelopeError, KmsError
from qkdtwin.iot.devices import Reading, check_reading, decode_aggregate, decode_reading
from qkdtwin.iot.envelope import (
    KIND_AGGREGATE,
    KIND_DEVICE,
    KIND_KEX,
    Header,
    ReplayWindow,
    iter_records,
    kex_ciphertext,
    open_envelope,
    open_kex,
)
from qkdtwin.iot.key_derivation import MODES, EpochKeys, open_epoch
from qkdtwin.iot.key_sources import QkdKeySource
from qkdtwin.iot.latest import LatestReadings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import mlkem

__all__ = ["Aggregator", "EdgeState"]


@dataclass
class EdgeState:
    """What the aggregator knows of one edge gateway."""

    online: bool = False
    bd_seq: int | None = None
    epochs: dict[int, EpochKeys] = field(default_factory=dict)
    windows: dict[tuple[int, str], ReplayWindow] = field(default_factory=dict)
    births: int = 0
    deaths: int = 0


class _KeyCache:
    """Keep keys fetched by key_ID until their epoch is confirmed.

    The KME hands a key out once; if a forged rekey record made us fetch a key whose genuine
    record comes later, the genuine one still finds it here. At most ``size`` keys are kept.
    """

    def __init__(self, inner: QkdKeySource, size: int = 64) -> None:
        self.inner = inner
        self.size = size
        self._keys: dict[str, bytes] = {}

    def new_key(self, size_bits: int) -> tuple[str, bytes]:
        return self.inner.new_key(size_bits)

    def key_by_id(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            key = self._keys[key_id] = self.inner.key_by_id(key_id)
            while len(self._keys) > self.size:
                del self._keys[next(iter(self._keys))]
        return key

    def forget(self, key_id: str) -> None:
        self._keys.pop(key_id, None)


class Aggregator:
    """The receiving end (ETSI slave SAE) of every edge gateway of one group.

    Parameters
    ----------
    key_source
        Where QKD keys are fetched by key_ID (ignored in pqc-only mode).
    kem_private_key
        The aggregator's ML-KEM-768 decapsulation key (ignored in qkd-only mode).
    scheme, mode
        As the gateways'.
    replay_window
        Size of the per-sender anti-replay window (sequence numbers).
    on_reading
        Called with every verified reading, in the receiving thread and under the
        aggregator's lock: keep it short (hand the reading over, do not block).
    wall_ns
        Wall clock (ns) for latencies.
    """

    def __init__(
        self,
        key_source: QkdKeySource | None,
        kem_private_key: mlkem.MLKEM768PrivateKey | None,
        *,
        scheme: str,
        mode: str,
        replay_window: int = 1024,
        on_reading: Callable[[Reading], None] | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if scheme not in ("fixed", "mobile") or mode not in MODES:
            raise ConfigError("unknown scheme or mode", field="scheme", value=(scheme, mode))
        if replay_window < 1:
            raise ConfigError("replay_window must be >= 1", field="replay_window")
        self.key_source = None if key_source is None else _KeyCache(key_source)
        self.kem_private_key = kem_private_key
        self.scheme = scheme
        self.mode = mode
        self.mode_code = MODES[mode]
        self.replay_window = replay_window
        self.on_reading = on_reading
        self._wall_ns = wall_ns
        self.edges: dict[str, EdgeState] = {}
        #: Device ID -> latest verified reading, kept encoded (see :mod:`qkdtwin.iot.latest`).
        self.latest = LatestReadings()
        self.rejected: Counter[str] = Counter()
        self.delivered = 0
        self.records_seen = 0
        self.frames_seen = 0
        self.qkd_bits_fetched = 0
        self.latencies_ms: list[float] = []
        self.lock = threading.Lock()
        #: Notified after every frame and birth/death (waits for delivery use it).
        self.cv = threading.Condition(self.lock)
        self._expected_kind = KIND_AGGREGATE if scheme == "fixed" else KIND_DEVICE

    # -- MQTT entry points -----------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        """Dispatch one MQTT message (``qkdtwin/v1/{group}/{type}/{edge}``)."""
        parts = topic.split("/")
        if len(parts) != 5:
            return
        msg_type, edge = parts[3], parts[4]
        if msg_type in ("NDATA", "DDATA"):
            self.handle_frame(edge, payload, msg_type)
        elif msg_type in ("NBIRTH", "NDEATH"):
            self._lifecycle(edge, msg_type, payload)

    def _lifecycle(self, edge: str, msg_type: str, payload: bytes) -> None:
        import json

        try:
            bd_seq = int(json.loads(payload).get("bdSeq", -1))
        except (ValueError, AttributeError, TypeError):
            bd_seq = -1
        self.lifecycle(edge, msg_type, bd_seq)

    def lifecycle(self, edge: str, msg_type: str, bd_seq: int) -> None:
        """Take an edge's birth (``"NBIRTH"``) or death (``"NDEATH"``) with its ``bdSeq``."""
        with self.cv:
            self.cv.notify_all()
            st = self.edges.setdefault(edge, EdgeState())
            if msg_type == "NBIRTH":
                st.online, st.bd_seq = True, bd_seq
                st.births += 1
            elif st.bd_seq is None or bd_seq == st.bd_seq:
                # Sparkplug rule: a death counts only if it matches the current birth.
                st.online = False
                st.deaths += 1

    def notify(self) -> None:
        """Wake the threads waiting on :attr:`cv` (a message that changed no count)."""
        with self.cv:
            self.cv.notify_all()

    def handle_frame(
        self, edge: str, frame: bytes, msg_type: str | None = None, *, sender: str | None = None
    ) -> None:
        """Process one frame of ``edge``: every record is delivered or counted as rejected.

        ``msg_type`` is the ``qkdtwin/v1`` topic's (NDATA or DDATA, checked against the
        scheme); ``sender`` is the sender a Sparkplug topic names (the edge for NDATA, the
        device for DDATA): a record of another sender is refused (``sender_mismatch``).
        """
        with self.cv:
            self.cv.notify_all()  # wakes waiters once the lock is released, after this frame
            self.frames_seen += 1
            st = self.edges.setdefault(edge, EdgeState())
            expected = "NDATA" if self.scheme == "fixed" else "DDATA"
            try:
                for header, body in iter_records(frame):
                    self.records_seen += 1
                    try:
                        if msg_type is not None and msg_type != expected:
                            raise EnvelopeError("data on the wrong topic", reason="kind_mismatch")
                        if sender is not None and header.sender_id != sender:
                            raise EnvelopeError(
                                "record of another sender than its topic's",
                                reason="sender_mismatch",
                            )
                        self._record(edge, st, header, body)
                    except EnvelopeError as exc:
                        self.rejected[exc.reason] += 1
            except EnvelopeError as exc:
                self.records_seen += 1
                self.rejected[exc.reason] += 1

    # -- records ---------------------------------------------------------------------------
    def _record(self, edge: str, st: EdgeState, header: Header, body: bytes) -> None:
        if header.mode != self.mode_code:
            raise EnvelopeError("mode differs from the link's", reason="mode_mismatch")
        if header.kind == KIND_KEX:
            self._kex(edge, st, header, body)
            return
        if header.kind != self._expected_kind:
            raise EnvelopeError("record kind does not fit the scheme", reason="kind_mismatch")
        if header.kind == KIND_AGGREGATE and header.sender_id != edge:
            raise EnvelopeError("aggregate not sent by its gateway", reason="sender_mismatch")
        keys = st.epochs.get(header.epoch)
        if keys is None:
            raise EnvelopeError(f"epoch {header.epoch} is not open", reason="wrong_epoch")
        if header.key_id_str != keys.key_id:
            raise EnvelopeError("key_ID does not match the epoch", reason="unknown_key_id")
        wkey = (header.epoch, header.sender_id)
        window = st.windows.get(wkey)
        if window is None:
            window = st.windows[wkey] = ReplayWindow(self.replay_window)
        window.check(header.seq)
        plaintext = open_envelope(keys.sender_aead(header.sender_id), header, body)
        # every reading is checked before any is kept: one bad reading refuses the record
        records = decode_aggregate(plaintext) if header.kind == KIND_AGGREGATE else [plaintext]
        checked = [(*check_reading(r), r) for r in records]  # (device_id, ts_ns, data)
        if header.kind != KIND_AGGREGATE and checked[0][0] != header.sender_id:
            raise EnvelopeError("reading of another device", reason="sender_mismatch")
        window.commit(header.seq)
        now = self._wall_ns()
        for device_id, ts_ns, data in checked:
            self.latest._keep_checked(device_id, data)  # checked above: not twice
            self.latencies_ms.append((now - ts_ns) / 1e6)
            if self.on_reading is not None:
                self.on_reading(decode_reading(data))
        self.delivered += len(checked)

    def _kex(self, edge: str, st: EdgeState, header: Header, body: bytes) -> None:
        if header.sender_id != edge:
            raise EnvelopeError("rekey not sent by its gateway", reason="sender_mismatch")
        newest = max(st.epochs, default=0)
        if header.epoch <= newest:
            raise EnvelopeError("rekey for an old epoch", reason="stale_kex")
        kem_ct = kex_ciphertext(body)
        if (self.mode == "qkd-only") != (len(kem_ct) == 0) or (kem_ct and len(kem_ct) != 1088):
            raise EnvelopeError("bad ML-KEM ciphertext length", reason="bad_length")
        key_id = header.key_id_str
        if (key_id is None) != (self.mode == "pqc-only"):
            raise EnvelopeError("key_ID missing or unexpected", reason="unknown_key_id")
        try:
            keys = open_epoch(
                self.mode,
                self.key_source,
                self.kem_private_key,
                link_id=edge,
                epoch=header.epoch,
                key_id=key_id,
                kem_ciphertext=kem_ct,
            )
        except KmsError as exc:
            raise EnvelopeError(
                f"key_ID refused by the KME: {exc}", reason="unknown_key_id"
            ) from exc
        open_kex(keys.confirm_aead(), header, body)
        if self.key_source is not None and key_id is not None:
            self.key_source.forget(key_id)
        self.qkd_bits_fetched += keys.qkd_bits
        st.epochs[header.epoch] = keys
        for old in [e for e in st.epochs if e < header.epoch - 1]:
            del st.epochs[old]
        for wk in [wk for wk in st.windows if wk[0] < header.epoch - 1]:
            del st.windows[wk]
