"""Counters that the pulse-by-pulse engines accumulate, chunk after chunk.

All counts are exact integers (``int64``), so statistics from separate chunks, processes or
machines add up to those of one long run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["N_PHOTON_TAGS", "EntangledStats", "PrepareMeasureStats"]

#: Photon-number tags kept for detected pulses: 0, 1, ..., N_PHOTON_TAGS - 2 and ">= last".
N_PHOTON_TAGS = 8


def _zeros(*shape: int) -> NDArray[np.int64]:
    return np.zeros(shape, dtype=np.int64)


@dataclass
class PrepareMeasureStats:
    """Counts of a prepare-and-measure run (BB84, decoy-state BB84, SARG04).

    Index ``k`` is the intensity class (signal first, then the decoys), ``a`` Alice's basis and
    ``b`` Bob's basis (0 = Z, 1 = X).

    Attributes
    ----------
    sent
        Pulses sent, shape ``(K, 2, 2)`` over ``(k, a, b)``.
    detected
        Pulses where at least one of Bob's detectors registered a click, ``(K, 2, 2)``.
    errors
        Detected pulses whose Bob bit differs from Alice's bit value, ``(K, 2, 2)``; only the
        ``a == b`` entries are error counts in the BB84 sense.
    double_clicks
        Detected pulses where both detectors clicked (Bob took a random bit), ``(K,)``.
    sifted, sifted_errors
        Pulses kept by the protocol's sifting rule and the errors among them, ``(K,)``.
    tagged_sifted, tagged_errors
        The same split by the photon number Alice emitted, ``(K, N_PHOTON_TAGS)``: what an
        ideal (infinite) decoy-state analysis would estimate.
    eve_known
        Sifted bits whose value Eve knows exactly, ``(K,)``.
    """

    n_classes: int
    sent: NDArray[np.int64] = field(init=False)
    detected: NDArray[np.int64] = field(init=False)
    errors: NDArray[np.int64] = field(init=False)
    double_clicks: NDArray[np.int64] = field(init=False)
    sifted: NDArray[np.int64] = field(init=False)
    sifted_errors: NDArray[np.int64] = field(init=False)
    tagged_sifted: NDArray[np.int64] = field(init=False)
    tagged_errors: NDArray[np.int64] = field(init=False)
    eve_known: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        k = self.n_classes
        self.sent = _zeros(k, 2, 2)
        self.detected = _zeros(k, 2, 2)
        self.errors = _zeros(k, 2, 2)
        self.double_clicks = _zeros(k)
        self.sifted = _zeros(k)
        self.sifted_errors = _zeros(k)
        self.tagged_sifted = _zeros(k, N_PHOTON_TAGS)
        self.tagged_errors = _zeros(k, N_PHOTON_TAGS)
        self.eve_known = _zeros(k)

    def merge(self, other: PrepareMeasureStats) -> None:
        """Add another run's counts to these, in place."""
        for name in (
            "sent",
            "detected",
            "errors",
            "double_clicks",
            "sifted",
            "sifted_errors",
            "tagged_sifted",
            "tagged_errors",
            "eve_known",
        ):
            getattr(self, name)[...] += getattr(other, name)

    @property
    def pulses(self) -> int:
        """Total pulses sent."""
        return int(self.sent.sum())

    def gain(self) -> NDArray[np.float64]:
        """Gain ``Q_k``: fraction of the class-``k`` pulses that Bob detected."""
        sent = self.sent.sum(axis=(1, 2))
        out: NDArray[np.float64] = np.zeros(self.n_classes)
        np.divide(self.detected.sum(axis=(1, 2)), sent, out=out, where=sent > 0)
        return out

    def sifted_qber(self) -> NDArray[np.float64]:
        """Error rate ``E_k`` of the sifted bits of each class."""
        return np.divide(
            self.sifted_errors, self.sifted, out=np.zeros(self.n_classes), where=self.sifted > 0
        )

    def basis_qber(self) -> NDArray[np.float64]:
        """Error rate in matching bases for each class and basis, shape ``(K, 2)``."""
        det = self.detected[:, [0, 1], [0, 1]]
        err = self.errors[:, [0, 1], [0, 1]]
        return np.divide(err, det, out=np.zeros(det.shape), where=det > 0)

    def tagged_gain(self) -> NDArray[np.float64]:
        """Sifted gain per emitted photon number: sifted_n / pulses sent, ``(K, tags)``."""
        sent = self.sent.sum(axis=(1, 2)).astype(np.float64)[:, np.newaxis]
        out: NDArray[np.float64] = np.zeros(self.tagged_sifted.shape)
        np.divide(self.tagged_sifted, sent, out=out, where=sent > 0)
        return out

    def tagged_qber(self) -> NDArray[np.float64]:
        """Sifted error rate per emitted photon number, ``(K, tags)``."""
        return np.divide(
            self.tagged_errors,
            self.tagged_sifted,
            out=np.zeros(self.tagged_errors.shape),
            where=self.tagged_sifted > 0,
        )


@dataclass
class EntangledStats:
    """Counts of an entanglement-based run (BBM92, E91) over Alice's and Bob's settings.

    Attributes
    ----------
    sent
        Pulses per setting pair ``(i, j)``, shape ``(n_a, n_b)``.
    coincidences
        Pulses where both Alice and Bob registered a click.
    equal
        Coincidences where Alice's and Bob's bits are equal.
    double_clicks
        Coincidences where at least one side had a double click (random bit assigned).
    """

    n_settings_alice: int
    n_settings_bob: int
    sent: NDArray[np.int64] = field(init=False)
    coincidences: NDArray[np.int64] = field(init=False)
    equal: NDArray[np.int64] = field(init=False)
    double_clicks: NDArray[np.int64] = field(init=False)
    alice_clicks: int = 0
    bob_clicks: int = 0

    def __post_init__(self) -> None:
        shape = (self.n_settings_alice, self.n_settings_bob)
        self.sent = _zeros(*shape)
        self.coincidences = _zeros(*shape)
        self.equal = _zeros(*shape)
        self.double_clicks = _zeros(*shape)

    def merge(self, other: EntangledStats) -> None:
        """Add another run's counts to these, in place."""
        self.sent += other.sent
        self.coincidences += other.coincidences
        self.equal += other.equal
        self.double_clicks += other.double_clicks
        self.alice_clicks += other.alice_clicks
        self.bob_clicks += other.bob_clicks

    @property
    def pulses(self) -> int:
        """Total pulses (pump pulses) sent."""
        return int(self.sent.sum())

    def correlation(self) -> NDArray[np.float64]:
        """Correlation ``E(i, j) = (N_equal - N_different) / N_coincidences``."""
        c = self.coincidences.astype(np.float64)
        diff = self.coincidences - self.equal
        return np.divide(self.equal - diff, c, out=np.zeros(c.shape), where=c > 0)
