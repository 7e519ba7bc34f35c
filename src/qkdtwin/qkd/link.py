"""Simulate a QKD link pulse by pulse and turn its statistics into a secret key rate.

:func:`simulate_link` is the one entry point: it picks the engine for the protocol, streams
the requested number of pulses through it in fixed-size chunks (memory stays flat whatever the
pulse count), and returns a :class:`LinkResult` with the counts, gains and error rates per
intensity and basis, the decoy-state estimates, the secret key rate computed *from the simulated
statistics* with the protocol's key-rate formula, the analytic expectation for comparison, and
optionally the sifted bits of Alice and Bob.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from numpy.typing import NDArray

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, SimulationError
from qkdtwin.qkd import keyrate
from qkdtwin.qkd.attacks import Attack, NoAttack
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.protocols import canonical_protocol
from qkdtwin.qkd.protocols.entangled import BBM92_SETTINGS, E91_SETTINGS, EntangledEngine
from qkdtwin.qkd.protocols.prepare_measure import PrepareMeasureEngine
from qkdtwin.qkd.source import EntangledPairSource, SinglePhotonSource, WeakCoherentSource
from qkdtwin.qkd.statistics import EntangledStats, PrepareMeasureStats

__all__ = ["DEFAULT_CHUNK", "LinkResult", "SiftedKey", "simulate_link"]

#: Pulses per chunk: large enough to amortise NumPy call overhead, small enough for the L2/L3
#: cache and a flat memory profile (about 30 MB of temporaries).
DEFAULT_CHUNK = 1 << 20


@dataclass(frozen=True)
class SiftedKey:
    """All sifted bits of a run, aligned: Alice's and Bob's bit, basis and intensity class.

    For entanglement-based protocols ``basis`` is the key setting pair index and
    ``intensity`` is all zeros.
    """

    alice: NDArray[np.uint8]
    bob: NDArray[np.uint8]
    basis: NDArray[np.uint8]
    intensity: NDArray[np.uint8]

    def select(self, *, basis: int | None = None, intensity: int | None = None) -> SiftedKey:
        """Return the bits of one basis and/or one intensity class."""
        mask = np.ones(self.alice.size, dtype=bool)
        if basis is not None:
            mask &= self.basis == basis
        if intensity is not None:
            mask &= self.intensity == intensity
        return SiftedKey(self.alice[mask], self.bob[mask], self.basis[mask], self.intensity[mask])


class IntensityStats(TypedDict):
    """Counts and rates of one intensity class of a prepare-and-measure run."""

    intensity: float
    sent: int
    detected: int
    gain: float
    sifted: int
    qber: float
    qber_z: float
    qber_x: float
    double_clicks: int
    detected_zz: int
    detected_xx: int
    errors_zz: int
    errors_xx: int


class TaggedStats(TypedDict):
    """Photon-number-tagged sifted gain and QBER of the signal class (simulation truth)."""

    sifted_gain: float
    qber: float


class DecoyEstimates(TypedDict):
    """Vacuum+weak decoy bounds of decoy-state BB84, next to the simulation's truth."""

    y0: float
    y1_lower: float
    e1_upper: float
    y1_true: float
    e1_true: float


class PnsForwarding(TypedDict):
    """Eve's photon-number-splitting strategy: forwarding probabilities by photon number."""

    single: float
    multi: float


class LinkDetails(TypedDict, total=False):
    """Protocol-specific statistics of a run (:attr:`LinkResult.details`).

    Prepare-and-measure protocols: ``per_intensity``, ``tagged_single_photon``,
    ``eve_known_fraction``, ``signal_fraction``; SARG04 adds ``tagged_two_photon``, decoy-state
    BB84 ``decoy_estimates``, a PNS attack ``pns_forwarding``. Entangled protocols:
    ``coincidence_gain``, ``correlations`` and, for E91, ``chsh_s``.
    """

    per_intensity: list[IntensityStats]
    tagged_single_photon: TaggedStats
    eve_known_fraction: float
    signal_fraction: float
    tagged_two_photon: TaggedStats
    decoy_estimates: DecoyEstimates
    pns_forwarding: PnsForwarding
    coincidence_gain: float
    correlations: list[list[float]]
    chsh_s: float


class LinkResultDict(LinkDetails):
    """JSON-ready form of a :class:`LinkResult`: the fixed fields, then its :class:`LinkDetails`."""

    protocol: str
    distance_km: float
    pulses: int
    attack: str
    detections: int
    sifted_bits: int
    qber: float
    secret_key_rate_per_pulse: float
    secret_key_rate_bps: float
    secret_key_rate_per_signal_pulse: float
    analytic_rate_per_signal_pulse: float
    analytic_rate_per_pulse: float
    elapsed_s: float
    pulses_per_s: float


@dataclass
class LinkResult:
    """Outcome of :func:`simulate_link`.

    Attributes
    ----------
    protocol, distance_km, pulses, attack
        What was simulated.
    detections
        Pulses with at least one registered click at Bob (coincidences for entangled
        protocols), all intensity classes.
    sifted_bits
        Sifted bits of the key-generating class (signal intensity / key settings).
    qber
        Error rate of those sifted bits.
    secret_key_rate_per_pulse, secret_key_rate_bps
        The *asymptotic* key-rate formula evaluated on the simulated (finite) counts, bits per
        pulse sent and times the repetition rate: a **diagnostic** of the link, not a secure
        rate (its estimated single-photon error bound can fall below the true value on small
        counts). The secure figure of a finite block is a finite-key length
        (``qkdtwin.qkd.postprocess.finite_key_estimate``, or the post-processing itself).
    analytic_rate_per_pulse
        The analytic rate of the same protocol on the same link, for comparison, in the
        analytic module's convention: **per signal pulse** for decoy-state BB84 (decoys a
        vanishing fraction, Lo-Ma-Chen), per pulse otherwise. ``to_dict`` gives it under
        ``analytic_rate_per_signal_pulse`` and its per-pulse value (times the signal fraction)
        under ``analytic_rate_per_pulse``.
    elapsed_s
        Wall time of the simulation in seconds.
    details
        Protocol-specific statistics: gains and QBER per intensity and basis, decoy estimates,
        photon-number-tagged yields, CHSH value, Eve's knowledge.
    alice_bits, bob_bits
        Sifted bits of the key-generating class when requested (``keep_bits=True``), else
        ``None``.
    sifted_key
        With ``keep_bits=True``: every sifted bit with its basis and intensity class
        (:class:`SiftedKey`), for post-processing; else ``None``.
    """

    protocol: str
    distance_km: float
    pulses: int
    attack: str
    detections: int
    sifted_bits: int
    qber: float
    secret_key_rate_per_pulse: float
    secret_key_rate_bps: float
    analytic_rate_per_pulse: float
    elapsed_s: float
    details: LinkDetails = field(default_factory=LinkDetails)
    alice_bits: NDArray[np.uint8] | None = None
    bob_bits: NDArray[np.uint8] | None = None
    sifted_key: SiftedKey | None = None

    @property
    def pulses_per_s(self) -> float:
        """Simulation throughput (pulses per wall-clock second)."""
        return self.pulses / self.elapsed_s if self.elapsed_s > 0 else math.inf

    def to_dict(self) -> LinkResultDict:
        """JSON-ready dictionary (bits excluded)."""
        return {
            "protocol": self.protocol,
            "distance_km": self.distance_km,
            "pulses": self.pulses,
            "attack": self.attack,
            "detections": self.detections,
            "sifted_bits": self.sifted_bits,
            "qber": self.qber,
            "secret_key_rate_per_pulse": self.secret_key_rate_per_pulse,
            "secret_key_rate_bps": self.secret_key_rate_bps,
            "secret_key_rate_per_signal_pulse": (
                self.secret_key_rate_per_pulse / self.details["signal_fraction"]
                if self.details.get("signal_fraction")
                else self.secret_key_rate_per_pulse
            ),
            "analytic_rate_per_signal_pulse": self.analytic_rate_per_pulse,
            "analytic_rate_per_pulse": self.analytic_rate_per_pulse
            * float(self.details.get("signal_fraction") or 1.0),
            "elapsed_s": self.elapsed_s,
            "pulses_per_s": self.pulses_per_s,
            **self.details,
        }


def _rate_prepare_measure(
    protocol: str, model: LinkModel, stats: PrepareMeasureStats
) -> tuple[float, LinkDetails]:
    """Secret key rate per pulse from simulated prepare-and-measure statistics."""
    src = model.source
    if isinstance(src, EntangledPairSource):
        raise ConfigError("prepare-and-measure statistics need a pulsed source", field="source")
    f = model.ec_efficiency
    gains = stats.gain()
    qbers = stats.sifted_qber()
    sent_k = stats.sent.sum(axis=(1, 2))
    # key bits come from the signal class only: weight the rate by its share of pulses
    share = float(sent_k[0] / max(stats.pulses, 1))
    q_mu, e_mu = float(gains[0]), float(qbers[0])
    tq, te = stats.tagged_gain(), stats.tagged_qber()
    det: LinkDetails = {
        "per_intensity": [
            {
                "intensity": float(mu),
                "sent": int(sent_k[i]),
                "detected": int(stats.detected[i].sum()),
                "gain": float(gains[i]),
                "sifted": int(stats.sifted[i]),
                "qber": float(qbers[i]),
                "qber_z": float(stats.basis_qber()[i, 0]),
                "qber_x": float(stats.basis_qber()[i, 1]),
                "double_clicks": int(stats.double_clicks[i]),
                "detected_zz": int(stats.detected[i, 0, 0]),
                "detected_xx": int(stats.detected[i, 1, 1]),
                "errors_zz": int(stats.errors[i, 0, 0]),
                "errors_xx": int(stats.errors[i, 1, 1]),
            }
            for i, mu in enumerate(src.intensities)
        ],
        "tagged_single_photon": {"sifted_gain": float(tq[0, 1]), "qber": float(te[0, 1])},
        "eve_known_fraction": float(stats.eve_known[0] / max(stats.sifted[0], 1)),
        "signal_fraction": share,
    }
    if protocol == "sarg04":
        rate = keyrate.sarg04_rate(
            float(stats.sifted[0] / max(sent_k[0], 1)),
            e_mu,
            float(tq[0, 1]),
            float(te[0, 1]),
            float(tq[0, 2]),
            float(te[0, 2]),
            f,
        )
        det["tagged_two_photon"] = {"sifted_gain": float(tq[0, 2]), "qber": float(te[0, 2])}
        return share * float(rate), det
    if protocol == "decoy-bb84":
        assert isinstance(src, WeakCoherentSource)
        decoys = list(src.decoys)
        if 0.0 not in decoys or not any(d > 0 for d in decoys):
            raise ConfigError(
                "decoy-bb84 needs a weak decoy (> 0) and a vacuum decoy (0)",
                field="decoys",
                value=tuple(decoys),
                allowed="e.g. 0.1,0",
            )
        i_nu = 1 + next(i for i, d in enumerate(decoys) if d > 0)
        i_vac = 1 + decoys.index(0.0)
        nu = float(src.intensities[i_nu])
        y0 = float(gains[i_vac])
        y1_l, e1_u = keyrate.vacuum_weak_decoy_bounds(
            float(src.mu), nu, q_mu, float(gains[i_nu]), float(qbers[i_nu]), y0
        )
        y1_l, e1_u = float(y1_l), float(e1_u)
        q1 = y1_l * src.mu * math.exp(-src.mu)
        rate = keyrate.gllp_rate(q_mu, e_mu, q1, e1_u, f) if y1_l > 0 else 0.0
        # photon-number-resolved truth from the simulation (what an ideal estimate would give)
        p1 = src.mu * math.exp(-src.mu)
        y1_true = float(tq[0, 1]) / (p1 * 0.5) if p1 > 0 else 0.0
        det["decoy_estimates"] = {
            "y0": y0,
            "y1_lower": y1_l,
            "e1_upper": e1_u,
            "y1_true": y1_true,
            "e1_true": float(te[0, 1]),
        }
        return share * float(rate), det
    if isinstance(src, SinglePhotonSource):
        return share * float(keyrate.shor_preskill_rate(q_mu, e_mu, f)), det
    return share * float(keyrate.gllp_no_decoy_rate(float(src.mu), q_mu, e_mu, f)), det


def simulate_link(
    protocol: str,
    model: LinkModel,
    pulses: int,
    rng: np.random.Generator,
    *,
    attack: Attack | None = None,
    keep_bits: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> LinkResult:
    """Simulate ``pulses`` pulses of ``protocol`` over ``model`` and compute the key rate.

    Parameters
    ----------
    protocol
        ``bb84``, ``decoy-bb84``, ``sarg04``, ``bbm92`` or ``e91``.
    model
        The physical link (see :func:`qkdtwin.qkd.build_link_model`).
    pulses
        Number of pulses (pump pulses for entangled sources), >= 1.
    rng
        Source of randomness; the same seed gives the same result.
    attack
        Eve's strategy (prepare-and-measure protocols only).
    keep_bits
        Also return the sifted bits of Alice and Bob (memory grows with the sifted key).
    chunk_size
        Pulses simulated per vectorised step.
    progress
        Called with the number of pulses done after each chunk.

    Returns
    -------
    LinkResult

    Raises
    ------
    ConfigError
        For an unknown protocol, ``pulses < 1`` or an attack the protocol does not support.
    SimulationError
        For protocols that have no pulse-level simulation (``cv-gg02``, ``plob``).

    Examples
    --------
    >>> import numpy as np
    >>> from qkdtwin.qkd import build_link_model, simulate_link
    >>> res = simulate_link("bb84", build_link_model("bb84", 10.0), 10**6,
    ...                     np.random.default_rng(7))
    >>> 0.0 < res.qber < 0.1
    True
    """
    name = canonical_protocol(protocol)
    if name in ("cv-gg02", "plob"):
        raise SimulationError(
            f"{name} has no pulse-by-pulse simulation; "
            "use `qkdtwin link rate` for its analytic rate"
        )
    try:
        n_pulses = int(pulses)
    except (TypeError, ValueError):
        raise ConfigError(
            f"pulses must be an integer >= 1, got {pulses!r}",
            field="pulses",
            value=pulses,
            allowed=">= 1",
        ) from None
    if n_pulses != pulses or n_pulses < 1:
        raise ConfigError(
            f"pulses must be an integer >= 1, got {pulses!r}",
            field="pulses",
            value=pulses,
            allowed=">= 1",
        )
    v.in_range("chunk_size", chunk_size, 1)
    att: Attack = attack if attack is not None else NoAttack()
    t0 = time.perf_counter()
    details: LinkDetails
    if name in ("bbm92", "e91"):
        if not isinstance(att, NoAttack):
            raise ConfigError(
                f"attacks are simulated for prepare-and-measure protocols, not {name}",
                field="attack",
                value=att.describe(),
            )
        plan = BBM92_SETTINGS if name == "bbm92" else E91_SETTINGS
        eng = EntangledEngine(model, plan, keep_bits=keep_bits)
        estats = EntangledStats(eng.na, eng.nb)
        _stream(lambda off, n: eng.run_chunk(rng, off, n, estats), n_pulses, chunk_size, progress)
        key_coinc = sum(int(estats.coincidences[i, j]) for i, j in plan.key_pairs)
        key_equal = sum(int(estats.equal[i, j]) for i, j in plan.key_pairs)
        qber = 1.0 - key_equal / key_coinc if key_coinc else 0.0
        sifted_gain = key_coinc / n_pulses
        rate = float(keyrate.bbm92_rate(sifted_gain, qber, model.ec_efficiency, sifting=1.0))
        corr = estats.correlation()
        details = {
            "coincidence_gain": float(estats.coincidences.sum() / n_pulses),
            "correlations": corr.tolist(),
        }
        if plan.chsh is not None:
            (a1, b1), (a2, b2), (a3, b3), (a4, b4) = plan.chsh
            s_val = corr[a1, b1] - corr[a2, b2] + corr[a3, b3] + corr[a4, b4]
            details["chsh_s"] = float(s_val)
        detections = int(estats.coincidences.sum())
        sifted = key_coinc
        skey = None
        bits: tuple[NDArray[np.uint8] | None, NDArray[np.uint8] | None] = (None, None)
        if keep_bits:
            ea = np.concatenate(eng.bits.alice or [np.empty(0, np.uint8)])
            eb = np.concatenate(eng.bits.bob or [np.empty(0, np.uint8)])
            es = np.concatenate(eng.bits.setting or [np.empty(0, np.uint8)])
            skey = SiftedKey(ea, eb, es, np.zeros(ea.size, dtype=np.uint8))
            bits = (ea, eb)
    else:
        sifting = "sarg04" if name == "sarg04" else "bb84"
        pm = PrepareMeasureEngine(model, sifting, att, keep_bits=keep_bits)
        pstats = PrepareMeasureStats(pm.n_classes)
        _stream(lambda off, n: pm.run_chunk(rng, off, n, pstats), n_pulses, chunk_size, progress)
        rate, details = _rate_prepare_measure(name, model, pstats)
        qber = float(pstats.sifted_qber()[0])
        detections = int(pstats.detected.sum())
        sifted = int(pstats.sifted[0])
        if hasattr(pm, "pns_strategy"):
            details["pns_forwarding"] = {"single": pm.pns_strategy[0], "multi": pm.pns_strategy[1]}
        skey = None
        bits = (None, None)
        if keep_bits:
            a_bits, b_bits, basis, klass = pm.bits.arrays()
            skey = SiftedKey(a_bits, b_bits, basis, klass)
            sig = klass == 0
            bits = (a_bits[sig], b_bits[sig])
    elapsed = time.perf_counter() - t0
    analytic = keyrate.analytic_key_rate(name, model).rate_per_pulse
    return LinkResult(
        protocol=name,
        distance_km=model.distance_km,
        pulses=n_pulses,
        attack=att.describe(),
        detections=detections,
        sifted_bits=sifted,
        qber=qber,
        secret_key_rate_per_pulse=rate,
        secret_key_rate_bps=rate * model.repetition_rate_hz,
        analytic_rate_per_pulse=float(analytic),
        elapsed_s=elapsed,
        details=details,
        alice_bits=bits[0],
        bob_bits=bits[1],
        sifted_key=skey,
    )


def _stream(
    step: Callable[[int, int], None],
    pulses: int,
    chunk_size: int,
    progress: Callable[[int], None] | None,
) -> None:
    done = 0
    while done < pulses:
        n = min(chunk_size, pulses - done)
        step(done, n)
        done += n
        if progress is not None:
            progress(done)
