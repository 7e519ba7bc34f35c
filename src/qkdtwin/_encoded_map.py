"""A read-only mapping over records kept encoded, decoded one at a time when read.

Shared by the IIoT layer's :class:`~qkdtwin.iot.latest.LatestReadings` and the twin's
:class:`~qkdtwin.twin.device_table.DeviceTable`: both hold a dict of strings and bytes, which
CPython's garbage collector does not track, instead of one decoded object per device.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from typing import TypeVar

__all__ = ["EncodedMapping"]

V = TypeVar("V", covariant=True)


class EncodedMapping(Mapping[str, V]):
    """Key -> decoded value over ``_encoded`` (key -> bytes).

    Subclasses decode in :meth:`__getitem__`; iteration, length and membership read no value.
    """

    __slots__ = ("_encoded",)

    def __init__(self, encoded: dict[str, bytes]) -> None:
        self._encoded = encoded

    @abstractmethod
    def __getitem__(self, key: str) -> V: ...

    def __iter__(self) -> Iterator[str]:
        return iter(self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)

    def __contains__(self, key: object) -> bool:
        return key in self._encoded

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self._encoded)} devices)"
