"""Optical fibre channel: length, attenuation and extra insertion loss."""

from __future__ import annotations

from dataclasses import dataclass

from qkdtwin import _validate as v

__all__ = ["FiberChannel", "db_to_transmittance", "transmittance_to_db"]


def db_to_transmittance(loss_db: float) -> float:
    """Convert a loss in dB to a power transmittance ``10^(-loss/10)``."""
    return float(10.0 ** (-loss_db / 10.0))


def transmittance_to_db(transmittance: float) -> float:
    """Convert a transmittance in (0, 1] to a loss in dB."""
    import math

    v.in_range("transmittance", transmittance, 0.0, 1.0, low_open=True)
    return -10.0 * math.log10(transmittance)


@dataclass(frozen=True)
class FiberChannel:
    """Single-mode fibre with loss linear in length plus a fixed insertion loss.

    Parameters
    ----------
    length_km
        Fibre length in km (>= 0).
    attenuation_db_per_km
        Attenuation coefficient alpha in dB/km (>= 0); 0.2 dB/km is standard SMF-28 at 1550 nm.
    insertion_loss_db
        Extra loss in dB from connectors, splices and Bob's optics outside his detectors.

    Examples
    --------
    >>> round(FiberChannel(50.0, 0.2).transmittance, 4)
    0.1
    """

    length_km: float
    attenuation_db_per_km: float = 0.2
    insertion_loss_db: float = 0.0

    def __post_init__(self) -> None:
        v.in_range("distance_km", self.length_km, 0.0)
        v.in_range("attenuation_db_per_km", self.attenuation_db_per_km, 0.0)
        v.in_range("insertion_loss_db", self.insertion_loss_db, 0.0)

    @property
    def loss_db(self) -> float:
        """Total channel loss ``alpha * L + insertion`` in dB."""
        return self.attenuation_db_per_km * self.length_km + self.insertion_loss_db

    @property
    def transmittance(self) -> float:
        """Probability that one photon crosses the channel, ``10^(-loss_db/10)``."""
        return db_to_transmittance(self.loss_db)
