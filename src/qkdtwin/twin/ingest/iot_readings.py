"""Decrypted IIoT readings, when the attach file grants the twin an aggregator SAE identity.

Without keys the twin reads envelope metadata only
(:class:`~qkdtwin.twin.ingest.iot_stream.IotMetadataStream`). An operator may instead grant it
the aggregator's role (the attach file's ``aggregator`` section,
:class:`~qkdtwin.twin.attach.AttachAggregator`): an SAE of its own, entitled to every gateway
key as an ETSI GS QKD 014 *additional slave* (``additional_slave_SAE_IDs`` of the gateways'
``enc_keys``), and the aggregator's ML-KEM-768 decapsulation key. The twin then runs the very
receiver the plant's SCADA runs (:class:`qkdtwin.iot.Aggregator`: key by key_ID from its KME,
ML-KEM decapsulation, key confirmation, replay window, AES-GCM), one per edge gateway, and
shows each device's latest verified reading.

What it can and cannot do:

* Readings appear from the first key exchange (KEX record) the twin sees: a twin attached in the
  middle of an epoch waits for the gateway's next rekey (``rekey_seconds``, 60 s in the plant).
* The KME hands each key to each entitled SAE once: the twin fetches it with its own identity,
  so it takes nothing from the operator's aggregator.
* A recording holds the encrypted payloads, never key material, so a replay cannot decrypt:
  readings are live only (the replayed twin shows metadata, as without the grant).
* A KME that refuses or cannot be reached counts as ``unknown_key_id`` (the aggregator's own
  reason) for that epoch; the twin keeps running and tries again at the next rekey.

With ``topic_style="sparkplug"`` the gateways speak Sparkplug B 3.0: a
:class:`~qkdtwin.iot.sparkplug_host.SparkplugReceiver` takes the ``spBv1.0/<group>/...``
messages, follows births, deaths and ``seq`` (its counts appear as ``sparkplug.*`` in
:meth:`IotReadings.counters`), and hands each ``qkdtwin/envelope`` metric to the same
aggregators, which open it exactly as a ``qkdtwin/v1`` frame.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from qkdtwin.errors import ConfigError
from qkdtwin.iot.aggregator import Aggregator
from qkdtwin.iot.devices import Reading
from qkdtwin.iot.keys import KmeKeySource, mlkem_keypair
from qkdtwin.iot.transport import TOPIC_ROOT
from qkdtwin.kms.client import KmeClient

if TYPE_CHECKING:
    from qkdtwin.iot.sparkplug_host import SparkplugReceiver
    from qkdtwin.twin.attach import AttachAggregator

__all__ = ["DeviceReading", "IotReadings"]

_ROOT_PARTS = len(TOPIC_ROOT.split("/"))


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """The latest verified reading of one device.

    Attributes
    ----------
    device_id, edge
        The device and its edge gateway.
    kind
        ``"temperature"``, ``"vibration"``, ``"power"`` or ``"energy"``.
    t
        The device's sample time, s (its own clock).
    values
        Named measurements, units in the names (``temp_c``...). The simulator's own health
        flag travels in the plaintext too; the twin does not show it (it is the plant's truth).
    received_at
        Receive time of the frame that carried it, network time s.
    """

    device_id: str
    edge: str
    kind: str
    t: float
    values: dict[str, float]
    received_at: float


def _load_kem_seed(spec: AttachAggregator) -> bytes:
    path = spec.kem_seed_file
    assert path is not None
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"aggregator.kem_seed_file: cannot read a hex seed from {str(path)!r}: {exc}",
            field="aggregator.kem_seed_file",
            value=str(path),
        ) from None
    if len(seed) != 64:
        raise ConfigError(
            f"aggregator.kem_seed_file: an ML-KEM-768 seed is 64 bytes, {str(path)!r} holds "
            f"{len(seed)}",
            field="aggregator.kem_seed_file",
            value=str(path),
        )
    return seed


class IotReadings:
    """The twin in the aggregator's role: one :class:`~qkdtwin.iot.Aggregator` per edge.

    Parameters
    ----------
    spec
        The attach file's ``aggregator`` section (paths resolved).
    kme_url
        URL of the KME the twin's SAE sits behind.
    topic_style
        ``"qkdtwin"`` (``qkdtwin/v1`` topics) or ``"sparkplug"`` (Sparkplug B 3.0).

    Raises
    ------
    ConfigError
        If the ML-KEM seed file is unreadable or not a 64-byte hex seed, or the SAE
        certificate, key or CA cannot be loaded; the Sparkplug mode without protobuf.
    """

    def __init__(
        self,
        spec: AttachAggregator,
        kme_url: str,
        *,
        topic_style: Literal["qkdtwin", "sparkplug"] = "qkdtwin",
    ) -> None:
        self.spec = spec
        if topic_style == "sparkplug":
            from qkdtwin.iot.sparkplug import require_protobuf

            require_protobuf()
        kem = mlkem_keypair(_load_kem_seed(spec)) if spec.mode != "qkd-only" else None
        self._client: KmeClient | None = None
        if spec.mode != "pqc-only":
            try:
                self._client = KmeClient(kme_url, spec.cert, spec.key, spec.ca, timeout_s=5.0)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(
                    f"aggregator.cert: cannot use the SAE certificate {str(spec.cert)!r} "
                    f"(key {str(spec.key)!r}, CA {str(spec.ca)!r}): {exc}",
                    field="aggregator.cert",
                    value=str(spec.cert),
                ) from None
        self._lock = threading.Lock()
        self._received: dict[str, float] = {}
        self._edge_of: dict[str, str] = {}
        self._now = 0.0
        self.ignored = 0
        self.aggregators: dict[str, Aggregator] = {}
        for edge, master in spec.edges.items():
            src = None if self._client is None else KmeKeySource(self._client, master, batch=1)
            self.aggregators[edge] = Aggregator(
                src,
                kem,
                scheme=spec.scheme,
                mode=spec.mode,
                on_reading=functools.partial(self._on_reading, edge),
            )
        self._receiver: SparkplugReceiver | None = None
        if topic_style == "sparkplug":
            from qkdtwin.iot.sparkplug_host import SparkplugReceiver

            self._receiver = SparkplugReceiver(self.aggregators, spec.group)

    def _on_reading(self, edge: str, reading: Reading) -> None:
        # called under the edge aggregator's lock, in the MQTT thread: book-keeping only
        with self._lock:
            self._received[reading.device_id] = self._now
            self._edge_of[reading.device_id] = edge

    def offer(self, topic: str, payload: bytes, now: float) -> None:
        """One MQTT message of the IIoT tree (never raises); ``now`` is network time, s."""
        if self._receiver is not None:
            with self._lock:
                self._now = now
            before = self._receiver.host.ignored
            self._receiver.on_message(topic, payload)
            self.ignored += self._receiver.host.ignored - before
            for each in self.aggregators.values():
                with each.lock:
                    each.latencies_ms.clear()
            return
        parts = topic.split("/")
        if len(parts) != _ROOT_PARTS + 3 or parts[_ROOT_PARTS] != self.spec.group:
            self.ignored += 1
            return
        agg = self.aggregators.get(parts[-1])
        if agg is None:
            self.ignored += 1
            return
        with self._lock:
            self._now = now
        agg.on_message(topic, payload)
        with agg.lock:  # the session's per-interval latency list: the twin does not keep it
            agg.latencies_ms.clear()

    def latest(self) -> list[DeviceReading]:
        """Every device's latest verified reading, sorted by device ID."""
        out: list[DeviceReading] = []
        for edge, agg in self.aggregators.items():
            with agg.lock:
                items = list(agg.latest.items())
            with self._lock:
                received = dict(self._received)
            for dev, r in items:
                out.append(
                    DeviceReading(
                        device_id=dev,
                        edge=edge,
                        kind=r.kind,
                        t=r.t,
                        values=dict(r.values),
                        received_at=received.get(dev, float("nan")),
                    )
                )
        return sorted(out, key=lambda d: d.device_id)

    def counters(self) -> dict[str, int]:
        """Delivered readings, key fetches (bits) and refusals by reason, over every edge."""
        total: Counter[str] = Counter()
        for agg in self.aggregators.values():
            with agg.lock:
                total["delivered"] += agg.delivered
                total["records"] += agg.records_seen
                total["qkd_bits_fetched"] += agg.qkd_bits_fetched
                for reason, n in agg.rejected.items():
                    total[f"rejected.{reason}"] += n
        total["ignored"] = self.ignored
        if self._receiver is not None:
            for k, v in self._receiver.totals().items():
                if k != "ignored":
                    total[f"sparkplug.{k}"] = v
        return dict(total)

    def close(self) -> None:
        """Close the KME client."""
        if self._client is not None:
            self._client.close()
            self._client = None
