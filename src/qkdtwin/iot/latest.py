"""Every device's latest verified reading, kept as the bytes it arrived in.

An aggregator sees every device every interval, and the twin keeps the latest reading of each.
Decoding each into a :class:`~qkdtwin.iot.devices.Reading` as it arrives costs ~3 us and two
objects the garbage collector tracks (the reading and its values dict); as each lives until the
device's next reading, one interval later, they all reach the collector's oldest generation.
At 10,000 devices that is ~20,000 objects promoted per interval, and CPython runs a full
collection whenever the promotions since the last one reach a quarter of the oldest
generation: one every ~17 ticks of the 1,000-link twin, each 1.2-1.6 s (docs/twin.md,
"Performance at scale"). Bytes are not tracked, nor is a dict that holds only strings and
bytes, so :class:`LatestReadings` keeps the encoded readings and decodes one only when asked.
"""

from __future__ import annotations

from collections.abc import ItemsView, Mapping

from qkdtwin._encoded_map import EncodedMapping
from qkdtwin.errors import ConfigError
from qkdtwin.iot.devices import Reading, check_reading, decode_reading, reading_health

__all__ = ["LatestReadings"]


class LatestReadings(EncodedMapping[Reading]):
    """Device ID -> latest reading, held encoded and decoded on access (a read-only mapping).

    Each access decodes anew: ``latest[d] == latest[d]`` but ``latest[d] is not latest[d]``.
    Insertion order is the order in which devices were first seen.

    Parameters
    ----------
    encoded
        Device ID -> encoded reading; each is checked as the aggregator checks it.

    Raises
    ------
    MalformedEnvelopeError
        With reason ``"bad_payload"`` for bytes that are not a reading.
    ConfigError
        For a reading filed under another device's ID (``field="encoded"``).
    """

    __slots__ = ()

    def __init__(self, encoded: Mapping[str, bytes] | None = None) -> None:
        super().__init__({})
        for device_id, data in (encoded or {}).items():
            self.set_encoded(device_id, data)

    @classmethod
    def _of_checked(cls, encoded: dict[str, bytes]) -> LatestReadings:
        """Wrap ``encoded`` (readings already checked; not copied) without checking again."""
        out = cls.__new__(cls)
        EncodedMapping.__init__(out, encoded)
        return out

    def __getitem__(self, device_id: str) -> Reading:
        return decode_reading(self._encoded[device_id])

    def encoded(self, device_id: str) -> bytes:
        """Return the reading of ``device_id`` as it arrived (``KeyError`` if never seen)."""
        return self._encoded[device_id]

    def encoded_items(self) -> ItemsView[str, bytes]:
        """``(device_id, encoded reading)`` pairs, without decoding (a live view)."""
        return self._encoded.items()

    def health(self, device_id: str) -> str:
        """Return the health of ``device_id``'s latest reading, read without decoding it."""
        return reading_health(self._encoded[device_id])

    def set_encoded(self, device_id: str, data: bytes) -> None:
        """Check ``data`` and keep it as ``device_id``'s latest reading.

        Raises
        ------
        MalformedEnvelopeError
            With reason ``"bad_payload"`` for bytes that are not a reading (nothing is kept).
        ConfigError
            If the reading is another device's (``field="encoded"``; nothing is kept).
        """
        owner, _ts_ns = check_reading(data)
        if owner != device_id:
            raise ConfigError(
                f"the reading is {owner!r}'s, not {device_id!r}'s", field="encoded", value=device_id
            )
        self._keep_checked(device_id, bytes(data))

    def _keep_checked(self, device_id: str, data: bytes) -> None:
        """Keep a reading the caller checked (:func:`check_reading`): the aggregator's path."""
        self._encoded[device_id] = data

    def copy(self) -> LatestReadings:
        """Return a snapshot: later readings do not change it."""
        return LatestReadings._of_checked(dict(self._encoded))
