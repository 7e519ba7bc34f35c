"""Pulse-by-pulse engine shared by the prepare-and-measure protocols (BB84 family, SARG04).

Every pulse gets its own intensity class, Alice basis and bit, Bob basis (and, for SARG04, the
partner state Alice announces), drawn with vectorised NumPy calls over chunks of pulses. What
happens at Bob's detectors is then drawn in two exact stages:

1. **click or not**: the probability that at least one of Bob's detectors fires depends only on
   the intensity class (and Eve's photon-number strategy), not on bases or bits, because the
   total photon flux at Bob's two detectors does not depend on how it splits between them. One
   uniform draw per pulse against ``P_click[k]`` decides it.
2. **what clicked**: only for the clicking pulses, the emitted photon number (and Eve's
   action) is drawn from its posterior given a click, then which detector(s) fired given the
   photon number, the match of Bob's basis with the state that reached him, and the
   misalignment. Detector ``j`` fires unless none of the photons routed to it is detected and
   it has no dark count; the two detectors are independent given the photon number because a
   Poisson or binomial photon stream splits into independent streams.

The joint law of all per-pulse outcomes is identical to drawing the photon number, losses,
routing and dark counts of every pulse, at a cost dominated by stage 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.attacks import Attack, InterceptResend, NoAttack, PhotonNumberSplitting
from qkdtwin.qkd.detection import DetectorTimeline
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.sampling import categorical, random_bits
from qkdtwin.qkd.source import EntangledPairSource, SinglePhotonSource, WeakCoherentSource
from qkdtwin.qkd.statistics import N_PHOTON_TAGS, PrepareMeasureStats

__all__ = ["PrepareMeasureEngine", "SiftedBits"]


@dataclass
class SiftedBits:
    """Sifted bits of Alice and Bob, in pulse order, for post-processing.

    Every sifted pulse of every intensity class is kept with its class and Alice's basis, so
    that post-processing can form the key from the classes and basis its security proof uses
    (all Z-basis bits for Lim et al.'s decoy analysis, the signal class for GLLP).
    """

    alice: list[NDArray[np.uint8]] = field(default_factory=list)
    bob: list[NDArray[np.uint8]] = field(default_factory=list)
    basis: list[NDArray[np.uint8]] = field(default_factory=list)
    intensity: list[NDArray[np.uint8]] = field(default_factory=list)

    def arrays(
        self,
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
        """Concatenate into ``(alice_bits, bob_bits, alice_basis, intensity_class)``."""

        def cat(parts: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)

        return cat(self.alice), cat(self.bob), cat(self.basis), cat(self.intensity)


def _photon_cutoff(mu_max: float) -> int:
    """Largest photon number worth enumerating: Poisson tail beyond it < 1e-17."""
    return int(mu_max + 12.0 * np.sqrt(mu_max + 1.0) + 12.0)


class PrepareMeasureEngine:
    """Simulates chunks of pulses of BB84, decoy-state BB84 or SARG04 on a :class:`LinkModel`.

    Parameters
    ----------
    model
        The link (weak coherent or single-photon source).
    sifting
        ``"bb84"`` (keep matching bases, key bit = Alice's bit value) or ``"sarg04"`` (keep
        conclusive results, key bit = Alice's basis).
    attack
        Eve's strategy.
    keep_bits
        Whether to keep the sifted bits of the signal class.
    """

    def __init__(
        self,
        model: LinkModel,
        sifting: str = "bb84",
        attack: Attack | None = None,
        *,
        keep_bits: bool = False,
    ) -> None:
        if isinstance(model.source, EntangledPairSource):
            raise ConfigError(
                "prepare-and-measure protocols need a weak coherent or single-photon source",
                field="source",
            )
        if sifting not in ("bb84", "sarg04"):
            raise ConfigError(f"unknown sifting rule {sifting!r}", field="sifting")
        self.model = model
        self._source: WeakCoherentSource | SinglePhotonSource = model.source
        self.sifting = sifting
        self.attack: Attack = attack if attack is not None else NoAttack()
        self.keep_bits = keep_bits
        self.bits = SiftedBits()
        src = self._source
        self.n_classes = int(src.intensities.size)
        self._class_cum = np.cumsum(src.selection_probabilities)[:-1]
        det = model.detector
        self._pd = det.dark_count_prob
        self._ed = det.misalignment
        self._timeline = DetectorTimeline(
            det.dead_gates(model.repetition_rate_hz), det.afterpulse_prob
        )
        self._build_branches()

    # ------------------------------------------------------------------ set-up
    def _build_branches(self) -> None:
        """Enumerate photon-number branches and their click and category probabilities.

        A branch is (photons emitted ``n``, photons sent on to Bob's detectors ``m``, detection
        probability per photon ``t``, Eve knows the bit). Without PNS, ``m = n`` and
        ``t = eta``; with PNS, forwarded pulses reach Bob losslessly (``t = eta_Bob``).
        """
        model = self.model
        src = self._source
        n_max = _photon_cutoff(float(src.intensities.max()))
        n = np.arange(n_max + 1)
        pmf = np.asarray(src.photon_number_pmf(n), dtype=np.float64)  # (K, n_max+1)
        eta = model.eta
        if isinstance(self.attack, PhotonNumberSplitting):
            s1, sm = PhotonNumberSplitting.strategy(
                float(src.mu), model.transmittance, model.detector.efficiency, self._pd
            )
            self.pns_strategy = (s1, sm)
            fwd_m = np.maximum(n - 1, 0)
            fwd_m[1] = 1
            s = np.full(n.shape, sm)
            s[0], s[1] = 1.0, s1
            f = float(self.attack.fraction)
            # attacked pulses (share f): forwarded branches, then blocked branches; the rest
            # (share 1 - f) cross the honest channel
            w = np.concatenate([f * pmf * s, f * pmf * (1.0 - s), (1.0 - f) * pmf], axis=1)
            n_emit = np.concatenate([n, n, n])
            m = np.concatenate([fwd_m, np.zeros_like(n), n])
            t = np.concatenate(
                [np.full(2 * n.size, model.detector.efficiency), np.full(n.size, eta)]
            )
            knows = np.concatenate([n >= 2, np.zeros(2 * n.size, dtype=bool)])
        else:
            w, n_emit, m, t = pmf, n, n.copy(), np.full(n.shape, eta)
            knows = np.zeros(n.shape, dtype=bool)
        w = w / w.sum(axis=1, keepdims=True)
        pd = self._pd
        no_click = (1.0 - pd) ** 2 * (1.0 - t) ** m  # (B,)
        p_click_branch = 1.0 - no_click
        self.p_click = (w * p_click_branch).sum(axis=1)  # (K,)
        post_click = w * p_click_branch
        post_noclick = w * no_click
        self._cum_click = (
            np.cumsum(post_click, axis=1) / np.where(self.p_click > 0, self.p_click, 1.0)[:, None]
        )
        p_noclick = post_noclick.sum(axis=1)
        self._cum_noclick = (
            np.cumsum(post_noclick, axis=1) / np.where(p_noclick > 0, p_noclick, 1.0)[:, None]
        )
        self._n_emit = n_emit
        self._knows = knows
        # category tables given a click: (B, match) -> cumulative [c only, w only, both]
        ed = self._ed
        cat = np.zeros((m.size, 2, 3))
        for match, (ac, aw) in enumerate(((0.5, 0.5), (1.0 - ed, ed))):
            c_none = (1.0 - pd) * (1.0 - t * ac) ** m
            w_none = (1.0 - pd) * (1.0 - t * aw) ** m
            both_none = no_click
            p_c_only = w_none - both_none
            p_w_only = c_none - both_none
            tot = np.where(p_click_branch > 0, p_click_branch, 1.0)
            cat[:, match, 0] = p_c_only / tot
            cat[:, match, 1] = (p_c_only + p_w_only) / tot
            cat[:, match, 2] = 1.0
        self._cat_cum = cat

    # ------------------------------------------------------------------ helpers
    def _branches_for(
        self, rng: np.random.Generator, k: NDArray[np.uint8], cum: NDArray[np.float64]
    ) -> NDArray[np.intp]:
        out = np.empty(k.size, dtype=np.intp)
        u = rng.random(k.size)
        for c in range(self.n_classes):
            sel = k == c
            out[sel] = np.searchsorted(cum[c], u[sel], side="right")
        first: NDArray[np.intp] = np.minimum(out, cum.shape[1] - 1)
        return first

    def _eve(
        self,
        rng: np.random.Generator,
        branch: NDArray[np.intp],
        a: NDArray[np.integer[Any]],
        x: NDArray[np.integer[Any]],
    ) -> tuple[NDArray[np.integer[Any]], NDArray[np.integer[Any]], NDArray[np.bool_]]:
        """State (basis, bit) that reaches Bob and whether Eve knows Alice's bit."""
        if isinstance(self.attack, InterceptResend) and a.size:
            has_photon = self._n_emit[branch] > 0
            attacked = (rng.random(a.size) < self.attack.fraction) & has_photon
            e = rng.integers(0, 2, a.size, dtype=np.uint8)
            guess = rng.integers(0, 2, a.size, dtype=np.uint8)
            eve_bit = np.where(e == a, x, guess).astype(np.uint8)
            basis = np.where(attacked, e, a).astype(np.uint8)
            bit = np.where(attacked, eve_bit, x).astype(np.uint8)
            return basis, bit, attacked & (e == a)
        return a, x, self._knows[branch]

    # ------------------------------------------------------------------ main loop
    def run_chunk(
        self, rng: np.random.Generator, offset: int, n: int, stats: PrepareMeasureStats
    ) -> None:
        """Simulate pulses ``offset .. offset + n - 1`` and add their counts to ``stats``."""
        K = self.n_classes
        # --- per-pulse choices (all pulses)
        if K > 1:
            k = np.zeros(n, dtype=np.uint8)
            u = rng.random(n)
            for c in self._class_cum:
                k += u >= c
        else:
            k = np.zeros(n, dtype=np.uint8)
        r = random_bits(rng, n)  # bit 0: Alice basis, 1: Alice bit, 2: Bob basis, 3: SARG04 partner
        code = (r & 1) * 2 + ((r >> 2) & 1)  # a*2 + b
        if K > 1:
            code = code + k * 4
        stats.sent += np.bincount(code, minlength=4 * K).reshape(K, 2, 2)
        # --- stage 1: which pulses click
        p_click = self.p_click[k] if K > 1 else self.p_click[0]
        gates = np.flatnonzero(rng.random(n) < p_click)
        # --- stage 2: what clicked
        kc = k[gates]
        rc = r[gates]
        a = rc & 1
        x = (rc >> 1) & 1
        b = (rc >> 2) & 1
        branch = self._branches_for(rng, kc, self._cum_click)
        s_basis, s_bit, knows = self._eve(rng, branch, a, x)
        match = (s_basis == b).astype(np.intp)
        cat = categorical(rng.random(gates.size), self._cat_cum[branch, match])
        fired_correct = cat != 1
        fired_wrong = cat != 0
        fired1 = np.where(s_bit == 1, fired_correct, fired_wrong)
        fired0 = np.where(s_bit == 1, fired_wrong, fired_correct)
        if self._timeline.active:
            gates, kc, a, x, b, rc, branch, knows, fired0, fired1 = self._apply_timeline(
                rng, offset, n, k, r, gates, branch, knows, fired0, fired1
            )
        double = fired0 & fired1
        bob = np.where(double, rng.integers(0, 2, gates.size, dtype=np.uint8), fired1)
        bob = bob.astype(np.uint8)
        err = bob != x
        idx = kc.astype(np.intp) * 4 + a * 2 + b
        stats.detected += np.bincount(idx, minlength=4 * K).reshape(K, 2, 2)
        stats.errors += np.bincount(idx[err], minlength=4 * K).reshape(K, 2, 2)
        stats.double_clicks += np.bincount(kc[double], minlength=K)
        # --- sifting
        if self.sifting == "bb84":
            keep = a == b
            alice_key = x
            bob_key = bob
        else:
            # conclusive: Bob's result excludes the announced state of his basis; a double
            # click excludes neither and is inconclusive
            y = (rc >> 3) & 1
            v_b = np.where(b == a, x, y)
            keep = (bob != v_b) & ~double
            alice_key = a
            bob_key = (1 - b).astype(np.uint8)
        key_err = alice_key != bob_key
        ks = kc[keep]
        stats.sifted += np.bincount(ks, minlength=K)
        stats.sifted_errors += np.bincount(ks[key_err[keep]], minlength=K)
        tag = np.minimum(self._n_emit[branch[keep]], N_PHOTON_TAGS - 1)
        tidx = ks.astype(np.intp) * N_PHOTON_TAGS + tag
        stats.tagged_sifted += np.bincount(tidx, minlength=K * N_PHOTON_TAGS).reshape(K, -1)
        stats.tagged_errors += np.bincount(
            tidx[key_err[keep]], minlength=K * N_PHOTON_TAGS
        ).reshape(K, -1)
        stats.eve_known += np.bincount(ks[knows[keep]], minlength=K)
        if self.keep_bits:
            self.bits.alice.append(alice_key[keep].astype(np.uint8))
            self.bits.bob.append(bob_key[keep].astype(np.uint8))
            self.bits.basis.append(a[keep].astype(np.uint8))
            self.bits.intensity.append(kc[keep].astype(np.uint8))

    def _apply_timeline(
        self,
        rng: np.random.Generator,
        offset: int,
        n: int,
        k: NDArray[np.uint8],
        r: NDArray[np.uint8],
        gates: NDArray[np.int64],
        branch: NDArray[np.intp],
        knows: NDArray[np.bool_],
        fired0: NDArray[np.bool_],
        fired1: NDArray[np.bool_],
    ) -> tuple[NDArray[Any], ...]:
        """Apply dead time and afterpulses; afterpulse-only gates get their own pulse data."""
        reg_g, reg0, reg1 = self._timeline.apply(rng, offset, n, gates, fired0, fired1)
        pos = np.searchsorted(gates, reg_g)
        pos_c = np.minimum(pos, max(gates.size - 1, 0))
        known = (
            (gates.size > 0) & (gates[pos_c] == reg_g)
            if gates.size
            else np.zeros(reg_g.size, dtype=bool)
        )
        new = ~known
        br = np.empty(reg_g.size, dtype=np.intp)
        kn = np.zeros(reg_g.size, dtype=bool)
        if known.any():
            br[known] = branch[pos_c[known]]
            kn[known] = knows[pos_c[known]]
        if new.any():
            # a gate with no photon click: its photon number has the no-click posterior
            kg = k[reg_g[new]]
            br[new] = self._branches_for(rng, kg, self._cum_noclick)
            rg = r[reg_g[new]]
            _, _, kn_new = self._eve(rng, br[new], rg & 1, (rg >> 1) & 1)
            kn[new] = kn_new
        rr = r[reg_g]
        return (
            reg_g,
            k[reg_g],
            rr & 1,
            (rr >> 1) & 1,
            (rr >> 2) & 1,
            rr,
            br,
            kn,
            reg0,
            reg1,
        )
