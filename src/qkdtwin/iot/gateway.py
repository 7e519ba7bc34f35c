"""Edge gateway: the fixed and mobile encryption schemes of the seed paper, failing closed.

* **fixed**: the gateway (router) aggregates the readings of its devices and seals the
  aggregate as one envelope per interval, under the gateway's key of the epoch.
* **mobile**: every reading is sealed separately under its device's own key of the epoch (the
  device's key, derived from the epoch master); the gateway aggregates the sealed envelopes
  into frames. In the twin the device-side sealing runs inside this object, for speed; the
  gateway never needs a device key to forward a frame.

Rekeying: a new epoch (fresh QKD key by key_ID and/or ML-KEM encapsulation, new master key,
new sender keys, sequence numbers from 1) starts after ``rekey_messages`` readings or
``rekey_seconds`` seconds, whichever comes first, and its KEX record precedes its envelopes.

Fail closed: when no key can be had (the key source raises a
:class:`~qkdtwin.errors.KmsError`, e.g. :class:`~qkdtwin.errors.KeyExhaustedError`) readings
wait in a bounded queue (``queue_limit``); when it is full the oldest are dropped and counted
(``dropped["queue_full"]``). Nothing is ever published without an envelope.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from qkdtwin.errors import ConfigError, KmsError
from qkdtwin.iot.devices import encode_aggregate
from qkdtwin.iot.envelope import (
    KIND_AGGREGATE,
    KIND_DEVICE,
    Sealer,
    check_sender_id,
    seal_kex,
)
from qkdtwin.iot.key_derivation import MODES, EpochKeys, start_epoch
from qkdtwin.iot.key_sources import QkdKeySource

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import mlkem

__all__ = ["EdgeGateway", "GatewayOutput"]


class GatewayOutput:
    """What one call of :meth:`EdgeGateway.process` produced."""

    __slots__ = ("envelopes", "frames", "readings_sent", "records", "sealed", "senders")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        #: Every sealed record in order, and its sender ID (the gateway for KEX and aggregate
        #: records, the device for a mobile reading): the Sparkplug mode groups them by sender.
        self.sealed: list[bytes] = []
        self.senders: list[str] = []
        self.readings_sent = 0
        self.records = 0
        self.envelopes = 0


class EdgeGateway:
    """One edge gateway (ETSI master SAE) sealing its devices' readings.

    Parameters
    ----------
    edge_id
        The gateway's ID (the link ID in every key derivation, the edge in MQTT topics).
    scheme
        ``"fixed"`` or ``"mobile"``.
    mode
        ``"hybrid"``, ``"qkd-only"`` or ``"pqc-only"``.
    key_source
        Where QKD keys come from (ignored in pqc-only mode).
    kem_public_key
        The aggregator's ML-KEM-768 encapsulation key (ignored in qkd-only mode).
    rekey_messages, rekey_seconds
        Rekey after this many readings or seconds (> 0).
    queue_limit
        Readings held while no key is available; beyond, the oldest are dropped.
    frame_bytes
        A frame (one MQTT message) is closed once it reaches this size.
    now
        Monotonic clock (s), injectable.
    tap
        Optional callback seeing each plaintext reading before sealing (tests).
    """

    def __init__(
        self,
        edge_id: str,
        *,
        scheme: str,
        mode: str,
        key_source: QkdKeySource | None,
        kem_public_key: mlkem.MLKEM768PublicKey | None,
        rekey_messages: int = 100_000,
        rekey_seconds: float = 60.0,
        queue_limit: int = 10_000,
        frame_bytes: int = 256 * 1024,
        now: Callable[[], float] = time.monotonic,
        tap: Callable[[str, bytes], None] | None = None,
    ) -> None:
        check_sender_id(edge_id)
        if scheme not in ("fixed", "mobile"):
            raise ConfigError(f"scheme must be fixed or mobile, got {scheme!r}", field="scheme")
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}", field="mode", value=mode)
        if rekey_messages < 1 or rekey_seconds <= 0 or queue_limit < 0 or frame_bytes < 1024:
            raise ConfigError(
                "need rekey_messages >= 1, rekey_seconds > 0, queue_limit >= 0, "
                "frame_bytes >= 1024",
                field="rekey_messages",
            )
        self.edge_id = edge_id
        self.scheme = scheme
        self.mode = mode
        self.mode_code = MODES[mode]
        self.key_source = key_source
        self.kem_public_key = kem_public_key
        self.rekey_messages = rekey_messages
        self.rekey_seconds = rekey_seconds
        self.queue_limit = queue_limit
        self.frame_bytes = frame_bytes
        self._now = now
        self.tap = tap
        self.queue: deque[tuple[str, bytes]] = deque()
        self.dropped: Counter[str] = Counter()
        self.key_failures: Counter[str] = Counter()
        self.epoch_no = 0
        self.epochs_started = 0
        self.qkd_bits_used = 0
        self.sent_readings = 0
        self._keys: EpochKeys | None = None
        self._epoch_started = 0.0
        self._epoch_readings = 0
        self._sealers: dict[str, Sealer] = {}
        self._rekey_requested = False
        #: Rekeys requested by command (:meth:`request_rekey`).
        self.rekey_requests = 0

    # -- keys ------------------------------------------------------------------------------
    def request_rekey(self) -> None:
        """Start a new epoch before the next reading is sealed (an operator's command).

        What a digital twin asks when a QKD link this gateway's keys crossed is in alarm: the
        current epoch's key may be known to Eve.
        """
        self._rekey_requested = True
        self.rekey_requests += 1

    def _need_rekey(self) -> bool:
        return (
            self._keys is None
            or self._rekey_requested
            or self._epoch_readings >= self.rekey_messages
            or self._now() - self._epoch_started >= self.rekey_seconds
        )

    def _rekey(self) -> bytes | None:
        """Start the next epoch; return its KEX record, or ``None`` if no key (fail closed)."""
        try:
            keys = start_epoch(
                self.mode,
                self.key_source,
                self.kem_public_key,
                link_id=self.edge_id,
                epoch=self.epoch_no + 1,
            )
        except KmsError as exc:
            # The old epoch is over (policy): forget its keys so nothing more is sealed.
            self._keys = None
            self._sealers = {}
            self.key_failures[type(exc).__name__] += 1
            return None
        self.epoch_no += 1
        self.epochs_started += 1
        self._rekey_requested = False
        self.qkd_bits_used += keys.qkd_bits
        self._keys = keys
        self._sealers = {}
        self._epoch_started = self._now()
        self._epoch_readings = 0
        return seal_kex(
            keys.confirm_aead(),
            mode=self.mode_code,
            key_id=keys.key_id,
            epoch=keys.epoch,
            sender_id=self.edge_id,
            kem_ct=keys.kem_ciphertext,
        )

    def _sealer(self, sender: str, kind: int) -> Sealer:
        s = self._sealers.get(sender)
        if s is None:
            keys = self._keys
            assert keys is not None
            s = self._sealers[sender] = Sealer(
                keys.sender_aead(sender),
                mode=self.mode_code,
                kind=kind,
                key_id=keys.key_id,
                epoch=keys.epoch,
                sender_id=sender,
            )
        return s

    # -- data ------------------------------------------------------------------------------
    def enqueue(self, readings: list[tuple[str, bytes]]) -> None:
        """Add ``(device_id, encoded reading)`` pairs; drop the oldest beyond ``queue_limit``."""
        if self.tap is not None:
            for dev, rec in readings:
                self.tap(dev, rec)
        self.queue.extend(readings)
        excess = len(self.queue) - self.queue_limit
        if excess > 0:
            for _ in range(excess):
                self.queue.popleft()
            self.dropped["queue_full"] += excess

    def process(self, readings: list[tuple[str, bytes]], *, frames: bool = True) -> GatewayOutput:
        """Queue ``readings``, then seal as many queued readings as keys allow.

        Parameters
        ----------
        readings
            ``(device_id, encoded reading)`` pairs.
        frames
            Build the frames (``False``: only :attr:`GatewayOutput.sealed`, for the Sparkplug
            mode, which frames per sender itself).

        Returns
        -------
        GatewayOutput
            The frames to publish (KEX records first within their epoch), the records, counts.
        """
        self.enqueue(readings)
        out = GatewayOutput()
        records: list[bytes] = []
        senders: list[str] = []
        edge = self.edge_id
        epochs_before = self.epochs_started
        while self.queue:
            if self._need_rekey():
                kex = self._rekey()
                if kex is None:
                    break  # fail closed: readings stay queued
                records.append(kex)
                senders.append(edge)
            budget = min(len(self.queue), self.rekey_messages - self._epoch_readings)
            batch = [self.queue.popleft() for _ in range(budget)]
            if self.scheme == "fixed":
                agg = encode_aggregate([rec for _dev, rec in batch])
                records.append(self._sealer(edge, KIND_AGGREGATE).seal(agg))
                senders.append(edge)
            else:
                for dev, rec in batch:
                    records.append(self._sealer(dev, KIND_DEVICE).seal(rec))
                senders.extend(dev for dev, _rec in batch)
            self._epoch_readings += budget
            out.readings_sent += budget
        self.sent_readings += out.readings_sent
        out.records = len(records)
        out.envelopes = len(records) - (self.epochs_started - epochs_before)
        out.sealed, out.senders = records, senders
        if frames:
            out.frames = self._frames(records)
        return out

    def _frames(self, records: list[bytes]) -> list[bytes]:
        frames: list[bytes] = []
        cur: list[bytes] = []
        size = 0
        for r in records:
            if cur and size + len(r) > self.frame_bytes:
                frames.append(b"".join(cur))
                cur, size = [], 0
            cur.append(r)
            size += len(r)
        if cur:
            frames.append(b"".join(cur))
        return frames
