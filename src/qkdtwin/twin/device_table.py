"""The twin's table of device readings, one tick's snapshot, decoded only when asked for.

Every tick the telemetry component hands the twin the latest reading of every device (10,000
at 1,000 gateways). Built as one :class:`~qkdtwin.twin.results.DeviceReading` dict per device,
the table would replace ~10,000 objects tracked by the garbage collector every tick, each
living one tick: enough to trigger a full collection (1.2-1.6 s at that size) every ~17 ticks
(docs/twin.md, "Performance at scale"). :class:`DeviceTable` keeps the readings encoded, in
a dict of strings and bytes that the collector does not track, and builds a device's dict
when the dashboard's page or the full state asks for it. Filtering by gateway or health reads
no values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from qkdtwin._encoded_map import EncodedMapping
from qkdtwin.twin.results import DeviceReading

__all__ = ["DeviceTable"]


class _DecodedReading(Protocol):
    """What :class:`DeviceTable` reads of a decoded reading (:class:`qkdtwin.iot.Reading`)."""

    @property
    def kind(self) -> str: ...
    @property
    def t(self) -> float: ...
    @property
    def values(self) -> dict[str, float]: ...
    @property
    def health(self) -> str: ...


class DeviceTable(EncodedMapping[DeviceReading]):
    """Device ID -> :class:`~qkdtwin.twin.results.DeviceReading`, decoded on access.

    Parameters
    ----------
    encoded
        Device ID -> its latest encoded reading (kept, not copied: the caller gives a dict it
        no longer changes), in the table's order.
    gateway_of
        Device ID -> the node of its edge gateway (for every device of ``encoded``; it may
        hold more).
    decode
        Decodes an encoded reading (:func:`qkdtwin.iot.devices.decode_reading`).
    health_of
        Reads an encoded reading's health label without decoding its values
        (:func:`qkdtwin.iot.devices.reading_health`).
    """

    __slots__ = ("_decode", "_gateway_of", "_health_of")

    def __init__(
        self,
        encoded: dict[str, bytes],
        gateway_of: Mapping[str, str],
        *,
        decode: Callable[[bytes], _DecodedReading],
        health_of: Callable[[bytes], str],
    ) -> None:
        super().__init__(encoded)
        self._gateway_of = gateway_of
        self._decode = decode
        self._health_of = health_of

    def __getitem__(self, device_id: str) -> DeviceReading:
        r = self._decode(self._encoded[device_id])
        return {
            "device_id": device_id,
            "gateway": self._gateway_of[device_id],
            "kind": r.kind,
            "t": float(r.t),
            "values": {k: float(v) for k, v in r.values.items()},
            "health": r.health,
        }

    def select(self, gateway: str | None = None, health: str | None = None) -> list[str]:
        """Return the IDs of the devices that pass the filters, in the table's order.

        ``gateway``: the node's devices only; ``health``: that label only (``None``: any).
        No reading is decoded.
        """
        gw, hl = self._gateway_of, self._health_of
        return [
            d
            for d, data in self._encoded.items()
            if (gateway is None or gw[d] == gateway) and (health is None or hl(data) == health)
        ]
