"""The authenticated public channel of post-processing, with exact accounting of what crossed it.

Everything Alice and Bob say to each other during reconciliation goes through one
:class:`ClassicalChannel`. The channel is *authenticated* (Eve cannot change or inject
messages — in a real link a Wegman-Carter tag does that, paid for with pre-shared key) but
*public*: Eve reads every message. It therefore keeps the books the security proof needs:

* ``leaked_bits`` — the number of parity bits Alice disclosed about her key. This is the
  ``leak_EC`` term of the key-length formula; it is counted when the bits cross the channel,
  never estimated. Parities a party *infers* from bits already disclosed (a linear combination
  of them) are not sent and therefore not counted: they tell Eve nothing new.
* ``messages`` and ``messages_by`` — messages sent, in total and by each party;
* ``rounds`` — round trips: each time the direction of traffic turns back, half a round trip
  is completed (a request and its answer make one round).

With ``record=True`` the channel also keeps a transcript of every :class:`Message` (sender,
kind, number of parity bits and the payload), which tests use to recount the leakage
independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin.errors import ConfigError

__all__ = ["PARTIES", "ClassicalChannel", "Message"]

#: The two parties that may talk over a :class:`ClassicalChannel`.
PARTIES = ("alice", "bob")


@dataclass(frozen=True)
class Message:
    """One message on the public channel, as Eve sees it.

    Attributes
    ----------
    sender
        ``"alice"`` or ``"bob"``.
    kind
        What the message is: ``"parities"`` for disclosed parity bits, or a free-form word
        chosen by the protocol (``"request"``, ``"shuffle"``, ...).
    parity_bits
        Number of parity bits of the sender's key that the message discloses (0 for requests).
    payload
        The content (a copy of the parity bits for ``"parities"`` messages).
    """

    sender: str
    kind: str
    parity_bits: int
    payload: Any


class ClassicalChannel:
    """An authenticated public classical channel that counts every message and disclosed bit.

    Parameters
    ----------
    record
        Keep a transcript of every message (``transcript``). Off by default: a 10^6-bit frame
        exchanges ~10^5 parities and the transcript would hold all of them.

    Attributes
    ----------
    leaked_bits
        Parity bits that Alice disclosed about her key (``disclosed_bits("alice")``).
    messages
        Messages sent by both parties.
    messages_by
        Messages sent by each party, ``{"alice": ..., "bob": ...}`` (a copy).
    rounds
        Completed round trips.
    transcript
        The recorded messages (empty unless ``record=True``).

    Examples
    --------
    >>> import numpy as np
    >>> ch = ClassicalChannel()
    >>> _ = ch.send("bob", "request", "parities of blocks 0..2, please")
    >>> ch.send_parities("alice", np.array([1, 0, 1], dtype=np.uint8))
    array([1, 0, 1], dtype=uint8)
    >>> ch.leaked_bits, ch.messages, ch.rounds
    (3, 2, 1)

    Notes
    -----
    Counting is per call: one call of :meth:`send` or :meth:`send_parities` is one message.
    A parity bit is counted once, when it is sent; the protocols never send a parity whose
    value the receiver already knows or can infer.
    """

    def __init__(self, *, record: bool = False) -> None:
        self._record = bool(record)
        self._disclosed = dict.fromkeys(PARTIES, 0)
        self._messages = dict.fromkeys(PARTIES, 0)
        self._turns = 0
        self._last_sender: str | None = None
        self._transcript: list[Message] = []

    # ------------------------------------------------------------------ accounting
    @property
    def leaked_bits(self) -> int:
        """Parity bits Alice disclosed about her key."""
        return self._disclosed["alice"]

    def disclosed_bits(self, party: str) -> int:
        """Parity bits ``party`` disclosed about its key."""
        return self._disclosed[_check_party(party)]

    @property
    def messages(self) -> int:
        """Messages sent by both parties."""
        return sum(self._messages.values())

    @property
    def messages_by(self) -> dict[str, int]:
        """Messages sent by each party (a copy)."""
        return dict(self._messages)

    @property
    def rounds(self) -> int:
        """Completed round trips (a request and its answer make one)."""
        return (self._turns + 1) // 2

    @property
    def transcript(self) -> tuple[Message, ...]:
        """Recorded messages, oldest first (empty unless the channel records)."""
        return tuple(self._transcript)

    @property
    def recording(self) -> bool:
        """Whether the channel keeps a transcript."""
        return self._record

    # ------------------------------------------------------------------ sending
    def send(self, sender: str, kind: str, payload: Any) -> Any:
        """Send a message that discloses no parity bit (a request, a shuffle); return it.

        Raises
        ------
        ConfigError
            If ``sender`` is not ``"alice"`` or ``"bob"``.
        """
        self._count(_check_party(sender), kind, 0, payload)
        return payload

    def send_parities(self, sender: str, parities: ArrayLike) -> NDArray[np.uint8]:
        """Send parity bits of ``sender``'s key; count them; return what the receiver gets.

        Parameters
        ----------
        sender
            ``"alice"`` or ``"bob"``.
        parities
            The parity bits (0/1), one per parity the receiver asked for.

        Returns
        -------
        numpy.ndarray
            A fresh ``uint8`` copy of the bits, as delivered.

        Raises
        ------
        ConfigError
            If ``sender`` is unknown or a value is not 0 or 1.
        """
        party = _check_party(sender)
        bits = np.array(parities, dtype=np.uint8).reshape(-1)
        if bits.size and int(bits.max()) > 1:
            raise ConfigError(
                "parities must be 0 or 1", field="parities", value=parities, allowed="{0, 1}"
            )
        self._disclosed[party] += int(bits.size)
        self._count(party, "parities", int(bits.size), bits.copy() if self._record else None)
        return bits

    def _count(self, sender: str, kind: str, parity_bits: int, payload: Any) -> None:
        self._messages[sender] += 1
        if self._last_sender is not None and self._last_sender != sender:
            self._turns += 1
        self._last_sender = sender
        if self._record:
            self._transcript.append(Message(sender, kind, parity_bits, payload))


def _check_party(party: str) -> str:
    if party not in PARTIES:
        raise ConfigError(
            f"sender must be one of {', '.join(PARTIES)}, got {party!r}",
            field="sender",
            value=party,
            allowed=", ".join(PARTIES),
        )
    return party
