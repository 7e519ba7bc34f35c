"""The physical description of one QKD link: source, fibre, detectors, clock.

:class:`LinkModel` is the single value that both the pulse-by-pulse simulator
(:func:`qkdtwin.qkd.simulate_link`) and the analytic key-rate formulas
(:func:`qkdtwin.qkd.analytic_key_rate`) consume, so that simulation and theory always describe
the same link.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qkdtwin import _validate as v
from qkdtwin.qkd.channel import FiberChannel
from qkdtwin.qkd.detector import ThresholdDetector
from qkdtwin.qkd.keyrate.dispatch import analytic_key_rate
from qkdtwin.qkd.keyrate.optimize import optimal_mu
from qkdtwin.qkd.presets import Preset, get_preset
from qkdtwin.qkd.source import EntangledPairSource, SinglePhotonSource, WeakCoherentSource

__all__ = ["LinkModel", "Source", "build_link_model"]

Source = WeakCoherentSource | SinglePhotonSource | EntangledPairSource


@dataclass(frozen=True)
class LinkModel:
    """A point-to-point QKD link.

    Parameters
    ----------
    source
        The photon source. For entanglement-based protocols an :class:`EntangledPairSource`
        sitting on the fibre at ``source_position``.
    channel
        The fibre between Alice and Bob (for entangled sources: the whole fibre, split at
        ``source_position``).
    detector
        Bob's detector pair; entanglement-based protocols give Alice an identical pair.
    repetition_rate_hz
        Pulse (or pump) repetition rate in Hz; converts bits per pulse to bit/s.
    ec_efficiency
        Error-correction inefficiency ``f >= 1``.
    source_position
        Entangled sources only: fraction of the fibre length between Alice and the source
        (0 = source in Alice's lab, 0.5 = in the middle).
    """

    source: Source
    channel: FiberChannel
    detector: ThresholdDetector
    repetition_rate_hz: float = 1.0e6
    ec_efficiency: float = 1.16
    source_position: float = 0.5

    def __post_init__(self) -> None:
        v.in_range("repetition_rate_hz", self.repetition_rate_hz, 0.0, None, low_open=True)
        v.in_range("ec_efficiency", self.ec_efficiency, 1.0, None)
        v.in_range("source_position", self.source_position, 0.0, 1.0)

    @property
    def distance_km(self) -> float:
        """Fibre length between Alice and Bob in km."""
        return self.channel.length_km

    @property
    def transmittance(self) -> float:
        """Channel transmittance ``eta_ch`` (fibre and insertion loss, no detector)."""
        return self.channel.transmittance

    @property
    def eta(self) -> float:
        """Overall transmittance-efficiency ``eta = eta_ch * eta_Bob`` (prepare and measure)."""
        return self.channel.transmittance * self.detector.efficiency

    def arm_transmittances(self) -> tuple[float, float]:
        """Channel transmittance from an entangled source to Alice and to Bob."""
        length = self.channel.length_km
        alpha = self.channel.attenuation_db_per_km
        ins = self.channel.insertion_loss_db
        to_alice = FiberChannel(length * self.source_position, alpha, ins / 2.0)
        to_bob = FiberChannel(length * (1.0 - self.source_position), alpha, ins / 2.0)
        return to_alice.transmittance, to_bob.transmittance

    def with_distance(self, distance_km: float) -> LinkModel:
        """Return the same link with another fibre length."""
        return replace(self, channel=replace(self.channel, length_km=distance_km))


def build_link_model(
    protocol: str,
    distance_km: float,
    preset: str | Preset = "gys",
    *,
    mu: float | None = None,
    decoys: tuple[float, ...] | None = None,
    decoy_probabilities: tuple[float, ...] | None = None,
    single_photon: bool = False,
    detector: ThresholdDetector | None = None,
    repetition_rate_hz: float | None = None,
) -> LinkModel:
    """Assemble a :class:`LinkModel` for ``protocol`` from a preset and optional overrides.

    ``decoy-bb84`` uses the preset's signal intensity and decoys (``mu = 0.48`` for ``gys``,
    the optimum of Lo, Ma and Chen). ``bb84`` (no decoys) and ``sarg04`` use a weak coherent
    source whose intensity, unless given, is the one that maximises the analytic key rate at
    this distance (:func:`qkdtwin.qkd.keyrate.optimal_mu`): without decoys the secure intensity
    falls with the transmittance, and at the preset's 0.48 neither protocol yields any key.
    Where no intensity gives key, 0.1 (bb84) or 0.2 (sarg04) is used. ``single_photon=True``
    gives bb84/sarg04 an ideal single-photon source. ``bbm92`` and ``e91`` use an SPDC pair
    source in the middle of the fibre with mean pair number ``mu`` (default 0.1).
    """
    from qkdtwin.qkd.protocols import canonical_protocol

    name = canonical_protocol(protocol)
    p = get_preset(preset) if isinstance(preset, str) else preset
    channel = p.channel(distance_km)
    det = detector if detector is not None else p.detector()
    source: Source
    if name in ("bbm92", "e91"):
        source = EntangledPairSource(mu if mu is not None else 0.1)
    elif single_photon:
        source = SinglePhotonSource()
    elif name == "decoy-bb84":
        source = WeakCoherentSource(
            mu if mu is not None else p.mu,
            decoys if decoys is not None else p.decoys,
            decoy_probabilities,
        )
    else:
        source = WeakCoherentSource(mu if mu is not None else p.mu)
    model = LinkModel(
        source=source,
        channel=channel,
        detector=det,
        repetition_rate_hz=repetition_rate_hz or p.repetition_rate_hz,
        ec_efficiency=p.ec_efficiency,
    )
    if mu is None and isinstance(source, WeakCoherentSource) and name in ("bb84", "sarg04"):
        best = optimal_mu(name, model)
        candidate = replace(model, source=WeakCoherentSource(best))
        if analytic_key_rate(name, candidate).rate_per_pulse <= 0.0:
            candidate = replace(model, source=WeakCoherentSource(0.1 if name == "bb84" else 0.2))
        model = candidate
    return model
