"""The gateway as a Sparkplug B 3.0 edge node: births, deaths, sealed data, commands.

One :class:`SparkplugEdgeNode` per edge gateway. Its devices are Sparkplug devices. What it
publishes (``seq`` counts every message after NBIRTH, modulo 256, under one lock, so sequence
order is publication order even when a rebirth command arrives on the network thread):

* **NBIRTH** (``seq`` 0): ``bdSeq`` (``UInt64``), ``Node Control/Rebirth`` and
  ``qkdtwin/rekey`` (writable ``Boolean`` commands), ``qkdtwin/envelope`` (``Bytes``, null: the
  NDATA metric), and the session's clear metadata as ``qkdtwin/<name>`` metrics (scheme, mode,
  device count, KEM name and key fingerprint, envelope version).
* **DBIRTH**, one per device: ``qkdtwin/kind`` (``String``), ``qkdtwin/envelope`` (``Bytes``,
  null) and every value the device measures, as a ``Double`` metric with ``is_null`` set and
  its unit in the ``engUnit`` property. The readings never travel in clear: they are in the
  sealed envelopes only.
* **NDATA**: ``qkdtwin/envelope`` holding the gateway's records (KEX records, and in the fixed
  scheme the sealed aggregates). **DDATA** (mobile scheme): ``qkdtwin/envelope`` holding one
  device's sealed readings. Each envelope metric is one or more records back to back (a
  frame of :mod:`qkdtwin.iot.envelope`), at most ``frame_bytes`` unless one record is larger.
* **DDEATH** for every device, then **NDEATH** (``bdSeq`` of the birth), on a clean close;
  the same NDEATH is registered as the MQTT will at connect.

Ordering: records are grouped per sender between two gateway records, and a gateway record
(a KEX) is published before the device data that follows it, so a KEX still precedes every
envelope of its epoch, as on the ``qkdtwin/v1`` topics.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from qkdtwin.iot.devices import VALUE_NAMES, VALUE_UNITS
from qkdtwin.iot.sparkplug import (
    BDSEQ_METRIC,
    ENVELOPE_METRIC,
    REBIRTH_METRIC,
    REKEY_METRIC,
    DataType,
    Metric,
    Payload,
    decode_payload,
    encode_payload,
    next_seq,
    now_ms,
    sparkplug_topic,
)

__all__ = ["SparkplugEdgeNode", "group_records", "parse_command"]


class _Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...


def group_records(
    edge: str, senders: Sequence[str], records: Sequence[bytes], frame_bytes: int
) -> list[tuple[str | None, bytes]]:
    """Group sealed records into Sparkplug data messages, in a safe publication order.

    Parameters
    ----------
    edge
        The gateway's ID: its records (KEX, aggregates) go to NDATA (device ``None``).
    senders, records
        The records in sealing order and the sender of each.
    frame_bytes
        Largest envelope metric, bytes (a larger single record goes alone).

    Returns
    -------
    list of (device ID or None, frame)
        Consecutive gateway records form one NDATA group; device records between two
        gateway records are grouped per device (first appearance order) and follow them.
    """
    out: list[tuple[str | None, bytes]] = []
    segment: dict[str | None, list[bytes]] = {}

    def flush() -> None:
        for dev, recs in segment.items():
            cur: list[bytes] = []
            size = 0
            for r in recs:
                if cur and size + len(r) > frame_bytes:
                    out.append((dev, b"".join(cur)))
                    cur, size = [], 0
                cur.append(r)
                size += len(r)
            if cur:
                out.append((dev, b"".join(cur)))
        segment.clear()

    for sender, rec in zip(senders, records, strict=True):
        key = None if sender == edge else sender
        if key is None and any(k is not None for k in segment):
            flush()  # a gateway record (a KEX) after device data starts a new segment
        segment.setdefault(key, []).append(rec)
    flush()
    return out


def parse_command(payload: bytes) -> set[str]:
    """Return the commands an NCMD asks for: ``"rebirth"`` and/or ``"rekey"``.

    Raises
    ------
    MalformedEnvelopeError
        If the payload is not Sparkplug B.
    """
    asked = set()
    for m in decode_payload(payload).metrics:
        if m.value is True and m.name == REBIRTH_METRIC:
            asked.add("rebirth")
        elif m.value is True and m.name == REKEY_METRIC:
            asked.add("rekey")
    return asked


class SparkplugEdgeNode:
    """One edge gateway as a Sparkplug B edge node (see the module docstring).

    Parameters
    ----------
    group, edge
        Sparkplug group ID and edge node ID.
    devices
        ``(device_id, kind)`` of every device behind the gateway (kinds of
        :data:`~qkdtwin.iot.devices.KINDS`).
    node_info
        Clear metadata for NBIRTH, published as ``qkdtwin/<name>`` metrics (``str`` as
        ``String``, ``int`` as ``UInt64``; ``None`` values are left out).
    bd_seq
        Birth/death sequence number of this MQTT session, 0..255.
    frame_bytes
        Largest envelope metric, bytes.
    clock_ms
        Wall clock, ms since the Unix epoch (timestamps).
    """

    def __init__(
        self,
        group: str,
        edge: str,
        devices: Sequence[tuple[str, str]],
        *,
        node_info: dict[str, str | int | None] | None = None,
        bd_seq: int = 0,
        frame_bytes: int = 256 * 1024,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.group = group
        self.edge = edge
        self.devices = list(devices)
        self.node_info = dict(node_info or {})
        self.bd_seq = bd_seq % 256
        self.frame_bytes = frame_bytes
        self._clock = clock_ms
        # reentrant: on the in-process bus a rebirth command may arrive while publishing
        self._lock = threading.RLock()
        self._seq: int | None = None
        #: Messages published, by message type.
        self.published: Counter[str] = Counter()

    # -- topics and payloads ---------------------------------------------------------------
    def topic(self, message_type: str, device: str | None = None) -> str:
        """Return the Sparkplug topic of this edge node (or of one of its devices)."""
        return sparkplug_topic(self.group, message_type, self.edge, device)

    def death(self) -> tuple[str, bytes]:
        """``(topic, payload)`` of NDEATH: the MQTT will, and the last message of a clean close."""
        ts = self._clock()
        bd = Metric(BDSEQ_METRIC, DataType.UINT64, self.bd_seq, ts)
        return self.topic("NDEATH"), encode_payload(Payload(ts, None, (bd,)))

    def _node_birth(self, ts: int) -> Payload:
        metrics = [
            Metric(BDSEQ_METRIC, DataType.UINT64, self.bd_seq, ts),
            Metric(REBIRTH_METRIC, DataType.BOOLEAN, False, ts),
            Metric(REKEY_METRIC, DataType.BOOLEAN, False, ts),
            Metric(ENVELOPE_METRIC, DataType.BYTES, None, ts, is_null=True),
        ]
        for name, value in self.node_info.items():
            if value is None:
                continue
            dtype = DataType.STRING if isinstance(value, str) else DataType.UINT64
            metrics.append(Metric(f"qkdtwin/{name}", dtype, value, ts))
        return Payload(ts, 0, tuple(metrics))

    @staticmethod
    def device_birth_metrics(kind: str, ts: int | None = None) -> tuple[Metric, ...]:
        """DBIRTH metrics of a device of ``kind``: names, datatypes and units, no reading."""
        metrics = [
            Metric("qkdtwin/kind", DataType.STRING, kind, ts),
            Metric(ENVELOPE_METRIC, DataType.BYTES, None, ts, is_null=True),
        ]
        for name in VALUE_NAMES[kind]:
            unit = VALUE_UNITS.get(name, "")
            props = {"engUnit": unit} if unit else {}
            metrics.append(Metric(name, DataType.DOUBLE, None, ts, True, props))
        return tuple(metrics)

    # -- publishing ------------------------------------------------------------------------
    def _send(self, tr: _Publisher, msg_type: str, device: str | None, payload: Payload) -> int:
        data = encode_payload(payload)
        tr.publish(self.topic(msg_type, device), data, qos=1)
        self.published[msg_type] += 1
        return len(data)

    def _next(self) -> int:
        assert self._seq is not None, "publish the births first"
        self._seq = next_seq(self._seq)
        return self._seq

    def publish_births(self, tr: _Publisher) -> int:
        """Publish NBIRTH (``seq`` 0) and every DBIRTH (also a rebirth); return bytes sent."""
        with self._lock:
            ts = self._clock()
            self._seq = 0
            n = self._send(tr, "NBIRTH", None, self._node_birth(ts))
            for dev, kind in self.devices:
                birth = Payload(ts, self._next(), self.device_birth_metrics(kind, ts))
                n += self._send(tr, "DBIRTH", dev, birth)
            return n

    def publish_records(
        self, tr: _Publisher, senders: Sequence[str], records: Sequence[bytes]
    ) -> tuple[int, int]:
        """Publish sealed records as NDATA/DDATA; return ``(messages, payload bytes)``."""
        groups = group_records(self.edge, senders, records, self.frame_bytes)
        n = 0
        with self._lock:
            for dev, frame in groups:
                ts = self._clock()
                env = Metric(ENVELOPE_METRIC, DataType.BYTES, frame, ts)
                msg_type = "NDATA" if dev is None else "DDATA"
                n += self._send(tr, msg_type, dev, Payload(ts, self._next(), (env,)))
        return len(groups), n

    def publish_deaths(self, tr: _Publisher) -> None:
        """Publish DDEATH for every device, then NDEATH (a clean close)."""
        with self._lock:
            if self._seq is None:
                return
            for dev, _kind in self.devices:
                self._send(tr, "DDEATH", dev, Payload(self._clock(), self._next()))
            topic, payload = self.death()
            tr.publish(topic, payload, qos=1)
            self.published["NDEATH"] += 1
            self._seq = None
