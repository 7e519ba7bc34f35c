"""Pulse-by-pulse engine for entanglement-based QKD (BBM92, E91) with an SPDC source.

The source emits, per pump pulse, a two-mode squeezed vacuum in each polarisation pair: in
Alice's measurement basis the pair number splits into two independent thermal modes
``M0, M1`` (geometric, mean ``lam = mu / 2`` each), Alice's photon of a mode-``j`` pair has
polarisation ``j`` in her basis and Bob's photon the same polarisation (state ``Phi+``). This
is the multi-pair model of Ma, Fung, Lo, PRA 76, 012307 (2007).

Alice measures along angle ``theta_A`` and Bob along ``theta_B`` (linear polarisation angles);
a detected photon of Bob's from a mode-``j`` pair lands in his detector ``j`` with probability
``p = 1/2 + (1/2)(1 - 2 e_d) cos 2(theta_B - theta_A)``, which gives the BB84 cases (``1 - e_d``
for matching bases, ``1/2`` for conjugate ones) and the CHSH angles of E91 alike. Each detector
also fires on a dark count. Both detectors of a side firing gives a random bit.

Pulses with at least one pair are simulated photon by photon in law (binomial thinning of the
two modes). Pulses with no pair can only produce coincidences of two dark counts, which are
drawn sparsely: first the pulses where Alice has a dark click (geometric gaps), then Bob's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.sampling import bernoulli_positions
from qkdtwin.qkd.source import EntangledPairSource
from qkdtwin.qkd.statistics import EntangledStats

__all__ = ["BBM92_SETTINGS", "E91_SETTINGS", "EntangledEngine", "SettingPlan"]


@dataclass(frozen=True)
class SettingPlan:
    """Measurement angles of both sides and which setting pairs make key or test CHSH.

    Angles are linear-polarisation angles in degrees (a spin angle is twice that).
    """

    alice_deg: tuple[float, ...]
    bob_deg: tuple[float, ...]
    key_pairs: tuple[tuple[int, int], ...]
    chsh: tuple[tuple[int, int], ...] | None = None  # (a1,b1),(a1,b2),(a2,b1),(a2,b2)


#: BBM92 (Bennett, Brassard, Mermin, PRL 68, 557 (1992)): both sides in Z (0°) or X (45°).
BBM92_SETTINGS = SettingPlan((0.0, 45.0), (0.0, 45.0), ((0, 0), (1, 1)))

#: E91 (Ekert, PRL 67, 661 (1991)) with spin analyser angles 0, π/4, π/2 (Alice) and
#: π/4, π/2, 3π/4 (Bob), i.e. polarisation angles 0, 22.5, 45 and 22.5, 45, 67.5 degrees.
#: Matching angles (22.5, 22.5) and (45, 45) make key; Alice {0, 45} x Bob {22.5, 67.5} give
#: the CHSH value S = E(0,22.5) - E(0,67.5) + E(45,22.5) + E(45,67.5) = 2 sqrt(2) ideally.
E91_SETTINGS = SettingPlan(
    (0.0, 22.5, 45.0),
    (22.5, 45.0, 67.5),
    ((1, 0), (2, 1)),
    ((0, 0), (0, 2), (2, 0), (2, 2)),
)


@dataclass
class EntangledBits:
    """Sifted key bits of Alice and Bob from the key setting pairs, in pulse order."""

    alice: list[NDArray[np.uint8]] = field(default_factory=list)
    bob: list[NDArray[np.uint8]] = field(default_factory=list)
    setting: list[NDArray[np.uint8]] = field(default_factory=list)


class EntangledEngine:
    """Simulates chunks of pump pulses of an entanglement-based protocol.

    Parameters
    ----------
    model
        Link with an :class:`EntangledPairSource`; both sides use ``model.detector``.
    plan
        Measurement settings (:data:`BBM92_SETTINGS` or :data:`E91_SETTINGS`).
    keep_bits
        Whether to keep the sifted bits.
    """

    def __init__(self, model: LinkModel, plan: SettingPlan, *, keep_bits: bool = False) -> None:
        if not isinstance(model.source, EntangledPairSource):
            raise ConfigError(
                "entanglement-based protocols need an EntangledPairSource", field="source"
            )
        det = model.detector
        if det.dead_time_s > 0 or det.afterpulse_prob > 0:
            raise ConfigError(
                "dead time and afterpulsing are simulated for prepare-and-measure protocols "
                "only, not for bbm92/e91",
                field="dead_time_s" if det.dead_time_s > 0 else "afterpulse_prob",
            )
        self.model = model
        self.plan = plan
        self.keep_bits = keep_bits
        self.bits = EntangledBits()
        ta, tb = model.arm_transmittances()
        eff = model.detector.efficiency
        self.eta_a = ta * eff
        self.eta_b = tb * eff
        self.pd = model.detector.dark_count_prob
        self.lam = model.source.lam
        ed = model.detector.misalignment
        delta = np.deg2rad(np.subtract.outer(plan.bob_deg, plan.alice_deg).T)  # (na, nb)
        self._p_same = 0.5 + 0.5 * (1.0 - 2.0 * ed) * np.cos(2.0 * delta)
        self.na = len(plan.alice_deg)
        self.nb = len(plan.bob_deg)
        # pair number n = M0 + M1 ~ NegBin(2, 1/(1+lam)); table for inverse-CDF sampling
        p = 1.0 / (1.0 + self.lam)
        n_max = int(20 + 40 * self.lam)
        nn = np.arange(n_max + 1)
        pmf = (nn + 1) * p**2 * (1 - p) ** nn
        self._pair_cdf = np.cumsum(pmf)
        self._pair_cdf[-1] = 1.0

    @staticmethod
    def _bits(
        rng: np.random.Generator, f0: NDArray[np.bool_], f1: NDArray[np.bool_]
    ) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
        double = f0 & f1
        rand = rng.integers(0, 2, f0.size, dtype=np.uint8)
        return np.where(double, rand, f1.astype(np.uint8)).astype(np.uint8), double

    def run_chunk(
        self, rng: np.random.Generator, offset: int, n: int, stats: EntangledStats
    ) -> None:
        """Simulate pump pulses ``offset .. offset + n - 1`` and add their counts to ``stats``."""
        del offset  # no inter-gate memory for the entangled engine
        na, nb = self.na, self.nb
        sa = rng.integers(0, na, n, dtype=np.uint8)
        sb = rng.integers(0, nb, n, dtype=np.uint8)
        stats.sent += np.bincount(sa.astype(np.intp) * nb + sb, minlength=na * nb).reshape(na, nb)
        pairs = np.searchsorted(self._pair_cdf, rng.random(n), side="right")
        # --- pulses with pairs: thin the two modes
        idx = np.flatnonzero(pairs > 0)
        tot = pairs[idx]
        m0 = _uniform_split(rng, tot)
        m1 = tot - m0
        pd = self.pd
        qa = 1.0 - self.eta_a
        # Alice: mode-j photons only reach her detector j, so her detectors are independent
        a0 = rng.random(tot.size) >= (1 - pd) * qa**m0
        a1 = rng.random(tot.size) >= (1 - pd) * qa**m1
        # Bob: a photon goes to detector 0, detector 1 or is lost; the two detectors share
        # photons, so draw their joint pattern from (none, 0 only, 1 only, both)
        p = self._p_same[sa[idx], sb[idx]]
        eb = self.eta_b
        c0 = (1 - pd) * (1 - eb * p) ** m0 * (1 - eb * (1 - p)) ** m1
        c1 = (1 - pd) * (1 - eb * (1 - p)) ** m0 * (1 - eb * p) ** m1
        cb = (1 - pd) ** 2 * (1 - eb) ** tot
        u = rng.random(tot.size)
        t0 = cb
        t1 = t0 + (c1 - cb)  # detector 0 only
        t2 = t1 + (c0 - cb)  # detector 1 only
        b0 = ((u >= t0) & (u < t1)) | (u >= t2)
        b1 = u >= t1
        # --- pulses without pairs: dark-dark coincidences only
        y0 = 1.0 - (1.0 - pd) ** 2
        dark_a = bernoulli_positions(rng, n, y0)
        dark_a = dark_a[pairs[dark_a] == 0]
        dark_b = dark_a[rng.random(dark_a.size) < y0]
        da0, da1 = _dark_pattern(rng, pd, dark_b.size)
        db0, db1 = _dark_pattern(rng, pd, dark_b.size)
        # --- coincidences
        coinc = (a0 | a1) & (b0 | b1)
        gi = np.concatenate([idx[coinc], dark_b])
        fa0 = np.concatenate([a0[coinc], da0])
        fa1 = np.concatenate([a1[coinc], da1])
        fb0 = np.concatenate([b0[coinc], db0])
        fb1 = np.concatenate([b1[coinc], db1])
        stats.alice_clicks += int(np.count_nonzero(a0 | a1)) + dark_a.size
        stats.bob_clicks += int(np.count_nonzero(b0 | b1)) + dark_b.size
        order = np.argsort(gi, kind="stable")
        gi, fa0, fa1, fb0, fb1 = gi[order], fa0[order], fa1[order], fb0[order], fb1[order]
        abit, adouble = self._bits(rng, fa0, fa1)
        bbit, bdouble = self._bits(rng, fb0, fb1)
        cell = sa[gi].astype(np.intp) * nb + sb[gi]
        size = na * nb
        stats.coincidences += np.bincount(cell, minlength=size).reshape(na, nb)
        stats.equal += np.bincount(cell[abit == bbit], minlength=size).reshape(na, nb)
        stats.double_clicks += np.bincount(cell[adouble | bdouble], minlength=size).reshape(na, nb)
        if self.keep_bits:
            key = np.zeros(gi.size, dtype=bool)
            which = np.zeros(gi.size, dtype=np.uint8)
            for pair_idx, (i, j) in enumerate(self.plan.key_pairs):
                hit = cell == i * nb + j
                key |= hit
                which[hit] = pair_idx
            self.bits.alice.append(abit[key])
            self.bits.bob.append(bbit[key])
            self.bits.setting.append(which[key])


def _uniform_split(rng: np.random.Generator, n: NDArray[np.int64]) -> NDArray[np.int64]:
    """Draw the number of mode-0 pairs: uniform on ``0..n`` given the total ``n``."""
    return np.floor(rng.random(n.size) * (n + 1)).astype(np.int64)


def _dark_pattern(
    rng: np.random.Generator, pd: float, size: int
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which of two detectors fired, given that at least one had a dark count."""
    if size == 0:
        e = np.zeros(0, dtype=bool)
        return e, e
    y0 = 1.0 - (1.0 - pd) ** 2
    u = rng.random(size) * y0
    only0 = u < pd * (1 - pd)
    only1 = (u >= pd * (1 - pd)) & (u < 2 * pd * (1 - pd))
    both = ~(only0 | only1)
    return only0 | both, only1 | both
