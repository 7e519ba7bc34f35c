r"""Attack detection from a link's observations alone: CUSUM tests against the calibrated link.

Every reporting interval of a QKD link gives counts per intensity class
(:class:`~qkdtwin.twin.estimate.IntervalObservation`). Under the calibrated *pre-change*
model (the reference, a :func:`~qkdtwin.twin.estimate.fit_link` estimate) each count is a
binomial with a known probability; an attack or a fault changes one of those probabilities.
This module watches several such statistics per link with one-sided CUSUM tests on
log-likelihood ratios (Page 1954) and says which one alarmed, when the change most likely
began, and with what evidence.

Statistics
----------
Each is a binomial (or Gaussian) count per interval, with a pre-change probability from the
reference and a *design* post-change value; the per-interval LLR is
:math:`L_t = x_t\log\frac{p_1}{p_0} + (n_t-x_t)\log\frac{1-p_1}{1-p_0}`.

``qber``
    Signal-class errors among the signal's sifted bits: :math:`p_0 = e_\mu^{ref}`,
    :math:`p_1 = p_0 + \Delta_e` (default 0.015). Intercept-resend on a fraction :math:`F`
    of the pulses adds :math:`F(1/4 - e_\mu/2)` (0.023 for 10 %).
``decoy-yield``
    The weak decoy's share of the (signal + decoy) clicks, conditional on their sum:
    :math:`x_t = D_{\nu,t}`, :math:`n_t = D_{\mu,t} + D_{\nu,t}`,
    :math:`p = N_\nu Y_\nu / (N_\mu Y_\mu + N_\nu Y_\nu)` with the interval's pulse numbers
    (two independent binomials with :math:`P \ll 1` given their sum are binomial up to
    :math:`O(P)`). The design is a relative drop :math:`\delta` (default 6 %) of the decoy
    gain relative to the signal's. A loss change common to both classes cancels; a PNS
    attack, tuned to keep the signal gain and QBER, lowers the decoy gain (by ~6 % at 30 km
    when 10 % of the pulses are attacked).
``decoy-yield-rise``
    The same share, rising by ``decoy_rise`` (default 3 %): PNS on a *short* link (about
    10 km with GYS) cannot block enough single photons to keep the signal gain honest without
    forwarding relatively more decoy light, so the ratio rises instead (by ~2.4 % at 10 km
    when half the pulses are attacked, ~4.8 % when all are).
``loss-step`` / ``count-model``
    Signal clicks among signal pulses: :math:`p_0` the reference click probability,
    :math:`p_1` the click probability after a transmittance step of ``loss_step_db``
    (default 0.5 dB) down (``loss-step``) or up (``count-model``: more clicks than an honest
    channel gives, as under naive detector blinding). Counts cannot tell a tap from a bad
    splice: any loss step above the design size alarms, whatever its cause.
``background``
    Vacuum-class clicks: :math:`p_1 = \rho\,Y_0^{ref}` (default :math:`\rho = 2`).
``detector-monitor``
    Interval mean photocurrent, :math:`I_t \sim N(I_0, \sigma^2/n_t)` with :math:`I_0,
    \sigma` estimated from the reference window; the design is a relative rise (default
    20 %). Gaussian CUSUM; only when the module reports a monitor.

Indifference zone. The null of each test is not the reference value itself but the edge of
a tolerance zone around it (``*_tolerance``: 0.1 dB of loss, 0.002 of QBER, 1 % of decoy
yield, 25 % of background, 5 % of photocurrent), on the side of the alternative. The ARL
guarantee then holds for every pre-change value inside the zone, so it survives the
reference's own statistical error (the zone used is at least ``reference_precision`` = 3
standard errors of the reference, so it widens while the reference is young; a statistic is
active while its zone is at most half its design change) and slow drift.
Without the zone the design is fragile: at 30 km a GYS link gives ~8000 signal clicks per
second, a 0.5 dB step is ten standard deviations of one interval, and an offset of the
reference of 0.005 dB (0.01 dB) cuts a 30-day ARL of the loss statistic by 42 % (66 %).

Why CUSUM and not GLR
---------------------
The CUSUM of the LLR against a fixed design alternative is optimal (Lorden's minimax delay
for a given ARL; Moustakides 1986) when the post-change value is the design value, costs
O(1) per interval and statistic, and its ARL has accurate closed-form and numerical
approximations, which is what a threshold set from a 30-day budget needs. The GLR test
adapts to an unknown post-change value but costs a maximisation over the change point per
interval (or a window) and its thresholds need simulation. A design value at the smallest
change worth detecting loses little against larger changes (the delay is about
:math:`h/E_1[L]`, and :math:`E_1[L]` grows with the change), so the CUSUM keeps
near-optimal delays over the range that matters.

Thresholds and false alarms
---------------------------
The false-alarm budget is an average run length (ARL) for the *link* (default 30 simulated
days). With :math:`m` statistics the budget is split evenly, each CUSUM getting ARL
:math:`m\,ARL_{link}`: by the union bound
:math:`P(\text{any alarm in } t) \le \sum_i P(\text{alarm}_i \text{ in } t)`, and as the
alarm processes are close to independent Poisson streams the link's ARL is then close to
(and not below) the target. Each threshold :math:`h` solves Siegmund's corrected
approximation (:func:`cusum_threshold`)

.. math::

    ARL_0 \approx \frac{e^{h+c} - h - c - 1}{K}, \qquad K = KL(p_0\,\|\,p_1)
    \text{ per interval},

where :math:`c = \rho_+ + \rho_-` adds the expected overshoots of the LLR random walk over
the upper barrier (under the post-change law) and under the lower barrier 0 (under the
pre-change law). Our increments are sums of many Bernoulli LLRs, close to Gaussian with
variance :math:`\sigma_L^2 = a^2 n p_0(1-p_0) \approx 2K` (:math:`a` the per-event LLR
weight); for a Gaussian walk of small drift the limiting expected ladder overshoot is
:math:`\rho = -\zeta(1/2)/\sqrt{2\pi}\,\sigma_L = 0.583\,\sigma_L` (Siegmund 1985, ch. X;
the Gaussian CUSUM's :math:`h + 1.166\,\delta` correction), hence :math:`c = 1.166\,\sigma_L`.
The approximation is within a few per cent of simulation up to :math:`K \approx 1` per
interval when an interval holds about ten or more events (tested against simulation for the
decoy, loss and Gaussian monitor statistics). It fails beyond: when an interval carries most
of the evidence (the QBER and loss statistics of a short link: :math:`K` of 5-50), the CUSUM
rarely leaves zero and the diffusion picture breaks down (Siegmund then underestimates the
ARL by orders of magnitude); and for sparse lattice counts (the vacuum class, ~0.3 clicks per
interval) it is ~10 % off. There the threshold is found from the ARL of the exact
per-interval count law on a fine Markov-chain discretisation of the CUSUM (Brook & Evans
1972; :func:`cusum_arl`), which agrees with simulation to a few per cent. When even
:math:`h = 0` gives an ARL above the target, the threshold is 0 and the ARL is longer than
asked (conservative).

:func:`lorden_delay_bound` gives :math:`\log(ARL)/KL(\text{post}\,\|\,\text{pre})`, Lorden's
asymptotic lower bound on the worst-case mean delay, from the count laws of the interval;
benchmarks compare measured delays with twice this bound (and with one interval, the least
delay there can be).

Fast path
---------
For benchmarks, :func:`design_statistics` + :func:`count_llrs` + :func:`cusum_scan` run the
same tests over count arrays of shape ``(intervals, classes)`` against a fixed reference
(e.g. :meth:`Reference.from_model`): the LLRs are one vectorised expression per statistic and
the CUSUM uses :math:`S_t = C_t - \min(0, \min_{s\le t} C_s)` between alarms (~10^7
interval-statistics per second). :class:`LinkDetector` is the online version, with the
learned reference.

The reference
-------------
:class:`LinkDetector` keeps its own :class:`~qkdtwin.twin.estimate.LinkEstimator` over
``reference_window_s`` (default 600 s) fed with intervals that are ``guard_intervals``
(default 10) old, so an attack cannot pollute its own reference before it is seen. The
reference is frozen while an alarm is active and while any CUSUM is above
``freeze_fraction`` (1/2) of its threshold (evidence is building up), and relearned from
scratch after :meth:`LinkDetector.clear`. Its lag behind the current interval is
:math:`g + W/2` intervals (guard plus half the window). A drift is tolerated as long as the
offset it builds up over that lag stays inside the indifference zone: a loss ramp of at most
``loss_tolerance_db / lag`` (:meth:`DetectorConfig.tolerated_ramp_db_per_hour`: 0.1 dB over
310 s = 1.16 dB/h with the defaults and 1 s intervals) keeps the ARL at or above its target;
the design step (0.5 dB) is reached within the lag only at 5.8 dB/h.

References
----------
E. S. Page, Biometrika 41, 100 (1954); G. Lorden, Ann. Math. Stat. 42, 1897 (1971);
G. V. Moustakides, Ann. Stat. 14, 1379 (1986); D. Siegmund, *Sequential Analysis*
(Springer 1985), ch. II and X; D. Brook, D. A. Evans, Biometrika 59, 539 (1972);
M. Basseville, I. V. Nikiforov, *Detection of Abrupt Changes* (Prentice Hall 1993), ch. 2 and 5;
A. Tartakovsky, I. Nikiforov, M. Basseville, *Sequential Analysis* (CRC 2014), ch. 8.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict
from scipy import stats
from scipy.special import ndtr, xlogy
from threadpoolctl import ThreadpoolController

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError
from qkdtwin.twin.estimate import (
    IntervalObservation,
    LinkEstimate,
    LinkEstimator,
    loss_db_from_transmittance,
    model_probabilities,
)

__all__ = [
    "RHO_GAUSS",
    "STATISTICS",
    "CusumScan",
    "DetectionAlarm",
    "DetectorConfig",
    "LinkDetector",
    "LlrLaw",
    "Reference",
    "StatisticDesign",
    "binomial_kl",
    "count_llrs",
    "cusum_arl",
    "cusum_scan",
    "cusum_threshold",
    "cusum_threshold_markov",
    "design_statistics",
    "lorden_delay_bound",
    "siegmund_arl",
]

FloatArray = NDArray[np.float64]

#: The statistics, in the order of :func:`design_statistics`.
STATISTICS = (
    "qber",
    "decoy-yield",
    "decoy-yield-rise",
    "loss-step",
    "count-model",
    "background",
    "detector-monitor",
)

#: Limiting expected ladder overshoot of a Gaussian random walk, in units of its step s.d.
RHO_GAUSS = 0.5826
_SECONDS_PER_DAY = 86400.0


# --------------------------------------------------------------------------- KL, ARL, delay
def binomial_kl(n: ArrayLike, p: ArrayLike, q: ArrayLike) -> FloatArray:
    r"""Kullback-Leibler divergence :math:`KL(\mathrm{Bin}(n,p)\,\|\,\mathrm{Bin}(n,q))`, nats.

    Parameters
    ----------
    n
        Number of trials (>= 0; may be a non-integer expected number).
    p, q
        Success probabilities, ``0 < q < 1``.

    Returns
    -------
    ndarray
        :math:`n\,[p\log(p/q) + (1-p)\log((1-p)/(1-q))]`.
    """
    nn = np.asarray(n, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    qq = np.asarray(q, dtype=np.float64)
    kl = xlogy(pp, pp / qq) + xlogy(1.0 - pp, (1.0 - pp) / (1.0 - qq))
    return np.asarray(nn * kl, dtype=np.float64)


def siegmund_arl(h: float, kl_per_interval: float, *, llr_sd: float | None = None) -> float:
    r"""Siegmund's corrected approximation of a CUSUM's in-control ARL, in intervals.

    Parameters
    ----------
    h
        Threshold (>= 0): the CUSUM alarms when it exceeds ``h``.
    kl_per_interval
        :math:`K = KL(p_0\,\|\,p_1)` of one interval, nats (> 0): minus the mean LLR
        increment before the change.
    llr_sd
        Standard deviation :math:`\sigma_L` of the LLR increment; default
        :math:`\sqrt{2K}` (exact for Gaussian increments).

    Returns
    -------
    float
        :math:`(e^{h+c} - h - c - 1)/K` with :math:`c = 2 \times 0.583\,\sigma_L`.
    """
    k = v.in_range("kl_per_interval", kl_per_interval, 0.0, None, low_open=True)
    sd = math.sqrt(2.0 * k) if llr_sd is None else v.in_range("llr_sd", llr_sd, 0.0)
    y = v.in_range("h", h, 0.0) + 2.0 * RHO_GAUSS * sd
    return float(math.expm1(y) - y) / k


def cusum_threshold(
    arl_intervals: float, kl_per_interval: float, *, llr_sd: float | None = None
) -> float:
    r"""CUSUM threshold for a target in-control ARL from Siegmund's approximation.

    Parameters
    ----------
    arl_intervals
        Target average run length to a false alarm, in intervals (> 0).
    kl_per_interval
        :math:`K = KL(p_0\,\|\,p_1)` per interval, nats (> 0).
    llr_sd
        Standard deviation of the LLR increment; default :math:`\sqrt{2K}`.

    Returns
    -------
    float
        :math:`h = y - c` where :math:`e^y - y - 1 = K \cdot ARL` and
        :math:`c = 1.166\,\sigma_L` (see the module notes); 0 when that is negative, i.e.
        when even :math:`h = 0` meets the target by the approximation.

    Raises
    ------
    ConfigError
        For a non-positive ARL or KL.

    Examples
    --------
    Gaussian mean shift of one standard deviation (K = 1/2), ARL 1000:

    >>> round(cusum_threshold(1000.0, 0.5), 3)
    5.064

    Notes
    -----
    Accurate to a few per cent in ARL for :math:`K \lesssim 1`; beyond, use
    :func:`cusum_threshold_markov`. Solved by Newton's method from above on the convex
    :math:`e^y - y - 1`.
    """
    arl = v.in_range("arl_intervals", arl_intervals, 0.0, None, low_open=True)
    k = v.in_range("kl_per_interval", kl_per_interval, 0.0, None, low_open=True)
    sd = math.sqrt(2.0 * k) if llr_sd is None else v.in_range("llr_sd", llr_sd, 0.0)
    target = arl * k
    y = math.log1p(target) + 1.0
    for _ in range(100):
        f = math.expm1(y) - y - target
        step = f / math.expm1(y)
        y -= step
        if abs(step) < 1e-12 * max(1.0, y):
            break
    return max(y - 2.0 * RHO_GAUSS * sd, 0.0)


def lorden_delay_bound(arl_intervals: float, kl_post_pre: float) -> float:
    r"""Lorden's asymptotic lower bound on the worst-case mean detection delay, in intervals.

    Parameters
    ----------
    arl_intervals
        In-control ARL of the procedure, intervals (> 1).
    kl_post_pre
        :math:`KL(\text{post}\,\|\,\text{pre})` of one interval's counts, nats (> 0), e.g.
        :func:`binomial_kl` of the interval's expected number of trials.

    Returns
    -------
    float
        :math:`\log(ARL)/KL`: no procedure with this ARL detects faster (as ARL grows);
        the CUSUM matched to the change attains it. A delay is at least one interval.

    References
    ----------
    G. Lorden, Ann. Math. Stat. 42, 1897 (1971).
    """
    arl = v.in_range("arl_intervals", arl_intervals, 1.0, None, low_open=True)
    k = v.in_range("kl_post_pre", kl_post_pre, 0.0, None, low_open=True)
    return math.log(arl) / k


@dataclass(frozen=True)
class LlrLaw:
    """Law of one interval's LLR increment: ``a * X + b`` with ``X ~ Bin(n, p)``, or Gaussian.

    Build with :meth:`binomial` or :meth:`gaussian`.

    Attributes
    ----------
    kind
        ``"binomial"`` or ``"gaussian"``.
    n, p, a, b
        Binomial: trials, success probability of the law evaluated, LLR weight per success
        and constant part.
    mean_l, sd_l
        Gaussian: mean and standard deviation of the increment.
    """

    kind: Literal["binomial", "gaussian"]
    n: int = 0
    p: float = 0.0
    a: float = 0.0
    b: float = 0.0
    mean_l: float = 0.0
    sd_l: float = 0.0

    @classmethod
    def binomial(cls, n: float, p0: float, p1: float, p: float | None = None) -> LlrLaw:
        """Binomial LLR of ``Bin(n, p1)`` against ``Bin(n, p0)``, counts drawn with ``p``.

        ``n`` is rounded to an integer >= 1; ``p`` defaults to ``p0`` (in-control law).
        """
        p0 = v.in_range("p0", p0, 0.0, 1.0, low_open=True, high_open=True)
        p1 = v.in_range("p1", p1, 0.0, 1.0, low_open=True, high_open=True)
        pt = p0 if p is None else v.in_range("p", p, 0.0, 1.0)
        nn = max(1, round(v.in_range("n", n, 0.0)))
        a = math.log(p1 / p0) - math.log1p(-p1) + math.log1p(-p0)
        b = nn * (math.log1p(-p1) - math.log1p(-p0))
        return cls("binomial", n=nn, p=pt, a=a, b=b)

    @classmethod
    def gaussian(cls, se: float, m0: float, m1: float, m: float | None = None) -> LlrLaw:
        """Gaussian LLR of ``N(m1, se^2)`` against ``N(m0, se^2)``, observations ``N(m, se^2)``."""
        s = v.in_range("se", se, 0.0, None, low_open=True)
        mt = m0 if m is None else m
        d = (m1 - m0) / s**2
        return cls("gaussian", mean_l=d * (mt - 0.5 * (m0 + m1)), sd_l=abs(m1 - m0) / s)

    @property
    def mean(self) -> float:
        """Mean of the increment."""
        if self.kind == "gaussian":
            return self.mean_l
        return self.a * self.n * self.p + self.b

    @property
    def sd(self) -> float:
        """Standard deviation of the increment."""
        if self.kind == "gaussian":
            return self.sd_l
        return abs(self.a) * math.sqrt(self.n * self.p * (1.0 - self.p))

    def exceed(self, y: float) -> float:
        """``P(L > y)``."""
        if self.kind == "gaussian":
            return (
                float(ndtr((self.mean_l - y) / self.sd_l))
                if self.sd_l > 0
                else float(self.mean_l > y)
            )
        t = (y - self.b) / self.a
        if self.a > 0:  # X > t
            return float(stats.binom.sf(math.floor(t + 1e-12), self.n, self.p))
        return float(stats.binom.cdf(math.ceil(t - 1e-12) - 1, self.n, self.p))

    def grid(self, w: float, big_h: int) -> tuple[FloatArray, float, float]:
        """Increment law on the grid ``m * w``, ``|m| <= big_h``; masses below and above.

        Each atom ``a x + b`` is split between its two neighbouring grid points so that the
        mean is exact; a Gaussian is integrated over the cells ``((m-1/2)w, (m+1/2)w]``.
        """
        size = 2 * big_h + 1
        if self.kind == "gaussian":
            edges = (np.arange(-big_h, big_h + 2) - 0.5) * w
            z = (edges - self.mean_l) / self.sd_l
            cdf = ndtr(z)
            pi = np.diff(cdf)
            return np.asarray(pi, dtype=np.float64), float(cdf[0]), float(ndtr(-z[-1]))
        lo_l, hi_l = -(big_h + 1) * w, (big_h + 1) * w
        ends = sorted(((lo_l - self.b) / self.a, (hi_l - self.b) / self.a))
        x_lo = max(0, math.floor(ends[0]))
        x_hi = min(self.n, math.ceil(ends[1]))
        if x_hi < x_lo:
            x = np.zeros(0)
            pmf = np.zeros(0)
        else:
            x = np.arange(x_lo, x_hi + 1, dtype=np.float64)
            pmf = stats.binom.pmf(x, self.n, self.p)
        below_x = float(stats.binom.cdf(x_lo - 1, self.n, self.p)) if x_lo > 0 else 0.0
        above_x = float(stats.binom.sf(x_hi, self.n, self.p))
        low, high = (below_x, above_x) if self.a > 0 else (above_x, below_x)
        pos = (self.a * x + self.b) / w
        m0 = np.floor(pos)
        f = pos - m0
        pi = np.zeros(size)
        for m, wt in ((m0, pmf * (1.0 - f)), (m0 + 1.0, pmf * f)):
            mi = m.astype(np.int64) + big_h
            inside = (mi >= 0) & (mi < size)
            np.add.at(pi, mi[inside], wt[inside])
            low += float(wt[mi < 0].sum())
            high += float(wt[mi >= size].sum())
        return pi, low, high


def cusum_arl(h: float, law: LlrLaw, *, states: int = 300) -> float:
    r"""ARL of the CUSUM :math:`S_t = \max(0, S_{t-1} + L_t)` to :math:`S_t > h`, from 0.

    Parameters
    ----------
    h
        Threshold, >= 0.
    law
        Law of the increments :math:`L_t` (in-control law for a false-alarm ARL, a
        post-change law for a detection delay).
    states
        Number of grid states between 0 and ``h`` (accuracy ~1 % at 300).

    Returns
    -------
    float
        Mean number of intervals to the alarm (``inf`` if it never comes).

    Notes
    -----
    Markov-chain approximation (Brook & Evans 1972): the CUSUM lives on the grid
    :math:`\{0, w, \dots, Hw\}` with reflection at 0 and absorption above :math:`h`;
    the increment law is projected on the grid preserving its mean (for binomial laws whose
    per-event weight exceeds the cell, the grid is aligned with the lattice). The ARL is the
    first entry of :math:`(I - Q)^{-1}\mathbf 1`. At ``h = 0`` the ARL is exactly
    :math:`1/P(L > 0)`.
    """
    hh = v.in_range("h", h, 0.0)
    if hh == 0.0:
        p = law.exceed(0.0)
        return math.inf if p <= 0.0 else 1.0 / p
    m = max(int(states), 20)
    w = hh / m
    if law.kind == "binomial" and abs(law.a) >= w:
        w = abs(law.a) / round(abs(law.a) / w)
    big_h = math.floor(hh / w + 1e-9)
    pi, low, _ = law.grid(w, big_h)
    idx = np.arange(big_h + 1)
    q = pi[idx[None, :] - idx[:, None] + big_h]
    # column 0: everything that lands at or below 0
    cum = np.cumsum(pi)  # cum[k] = sum of pi[0..k] = P(m <= k - big_h)
    q[:, 0] = low + cum[big_h - idx]
    mat = np.eye(big_h + 1) - q
    try:
        sol = np.linalg.solve(mat, np.ones(big_h + 1))
    except np.linalg.LinAlgError:
        return math.inf
    arl = float(sol[0])
    return arl if arl > 0 and math.isfinite(arl) else math.inf


def cusum_threshold_markov(
    arl_intervals: float, law: LlrLaw, *, states: int = 200, rtol: float = 0.01
) -> float:
    r"""Smallest threshold whose :func:`cusum_arl` under the in-control ``law`` reaches the target.

    Parameters
    ----------
    arl_intervals
        Target in-control ARL, intervals (>= 1).
    law
        In-control law of the increments.
    states
        Grid states of :func:`cusum_arl`.
    rtol
        Stop once the ARL is within this relative margin above the target.

    Returns
    -------
    float
        The threshold; 0 when :math:`1/P(L>0)` already exceeds the target; ``inf`` when no
        threshold reaches it (an increment law without negative drift).

    Notes
    -----
    The ARL is non-decreasing in ``h`` but, for lattice increments whose steps carry most
    of an interval's evidence, a *step function* of ``h`` (the QBER LLR of a short link
    moves in steps of ~0.2 nats, each worth ~20 % of ARL): not every target is attainable,
    and the threshold returned is the conservative end (ARL at or above the target).
    Illinois regula falsi on :math:`\log ARL(h) - \log ARL_{target}`, bracketed from 0 and
    Siegmund's value, ~5-15 evaluations.
    """
    target = v.in_range("arl_intervals", arl_intervals, 1.0, None)
    lt = math.log(target)

    def g(hh: float) -> float:
        a = cusum_arl(hh, law, states=states)
        return (math.log(a) if math.isfinite(a) and a > 0 else 700.0) - lt

    lo, glo = 0.0, g(0.0)
    if glo >= 0.0:
        return 0.0
    kl = max(-law.mean, 1e-12)
    hi = max(cusum_threshold(target, kl, llr_sd=law.sd), 0.1)
    ghi = g(hi)
    while ghi < 0.0:
        if hi > 1e4:  # the ARL does not grow with h: no threshold reaches the target
            return math.inf
        lo, glo = hi, ghi
        hi = 2.0 * hi + 1.0
        ghi = g(hi)
    g_at_hi = ghi  # true value at hi (ghi/glo may be halved by the Illinois rule)
    side = 0
    for _ in range(60):
        if g_at_hi < rtol or hi - lo < 1e-4 * max(1.0, hi):
            break
        h = hi - ghi * (hi - lo) / (ghi - glo)
        if not (lo < h < hi):
            h = 0.5 * (lo + hi)
        gh = g(h)
        if gh >= 0.0:
            hi, ghi, g_at_hi = h, gh, gh
            if side == 1:
                glo *= 0.5
            side = 1
        else:
            lo, glo = h, gh
            if side == -1:
                ghi *= 0.5
            side = -1
    return hi


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class DetectorConfig:
    """Design of a link's detector: budgets, design changes, tolerances, reference handling.

    Parameters
    ----------
    arl_days
        False-alarm budget: ARL of the link over all its statistics, simulated days (> 0).
    guard_intervals
        Intervals an observation waits before it may enter the reference (>= 0).
    reference_window_s
        Window of the reference fit, s (> 0).
    refit_every
        The reference is refitted (and the thresholds revised) every this many intervals it
        learns (>= 1); at once when it is empty.
    statistics
        Statistics to run (a subset of :data:`STATISTICS`); those the link's data cannot
        support (no weak decoy, no vacuum class, no monitor) are dropped.
    qber_step, qber_tolerance
        Design rise of the signal QBER and its indifference zone (absolute, ``step > tol``).
    decoy_drop, decoy_tolerance
        Design relative drop of the decoy-to-signal gain ratio and its zone.
    decoy_rise
        Design relative rise of that ratio (``decoy-yield-rise``; same zone). Smaller than the
        drop: PNS on a short link raises the ratio only a little (~4.8 % at 10 km with every
        pulse attacked), and no honest change raises it.
    loss_step_db, loss_tolerance_db
        Design transmittance step (both directions), dB, and its zone.
    background_ratio, background_tolerance
        Design factor of the vacuum yield (> 1) and the zone (relative, ``1 + tol < ratio``).
    monitor_step, monitor_tolerance
        Design relative rise of the mean photocurrent and its zone.
    freeze_fraction
        The reference stops learning while any CUSUM exceeds this fraction of its threshold.
    reference_precision
        The zone actually used is ``max(tolerance, reference_precision * se)`` with ``se``
        the reference's standard error of the statistic's null value (so an imprecise
        reference, e.g. while relearning, widens the zone instead of eroding the ARL); a
        statistic is active while that zone is at most half the design change.
    threshold_method
        ``"auto"`` (Siegmund where K <= ``siegmund_max_kl`` and the increments are close to
        continuous, about ten or more events per interval; else the Markov chain),
        ``"siegmund"`` or ``"markov"``.
    siegmund_max_kl
        Largest KL per interval for which ``"auto"`` trusts Siegmund's approximation.
    """

    arl_days: float = 30.0
    guard_intervals: int = 10
    reference_window_s: float = 600.0
    refit_every: int = 10
    statistics: tuple[str, ...] = STATISTICS
    qber_step: float = 0.015
    qber_tolerance: float = 0.002
    decoy_drop: float = 0.06
    decoy_rise: float = 0.03
    decoy_tolerance: float = 0.01
    loss_step_db: float = 0.5
    loss_tolerance_db: float = 0.1
    background_ratio: float = 2.0
    background_tolerance: float = 0.25
    monitor_step: float = 0.2
    monitor_tolerance: float = 0.05
    freeze_fraction: float = 0.5
    reference_precision: float = 3.0
    threshold_method: Literal["auto", "siegmund", "markov"] = "auto"
    siegmund_max_kl: float = 1.0

    def __post_init__(self) -> None:
        v.in_range("arl_days", self.arl_days, 0.0, None, low_open=True)
        if int(self.guard_intervals) != self.guard_intervals or self.guard_intervals < 0:
            raise ConfigError(
                f"guard_intervals must be an integer >= 0, got {self.guard_intervals!r}",
                field="guard_intervals",
                value=self.guard_intervals,
                allowed=">= 0",
            )
        v.in_range("reference_window_s", self.reference_window_s, 0.0, None, low_open=True)
        if int(self.refit_every) != self.refit_every or self.refit_every < 1:
            raise ConfigError(
                f"refit_every must be an integer >= 1, got {self.refit_every!r}",
                field="refit_every",
                value=self.refit_every,
                allowed=">= 1",
            )
        unknown = [s for s in self.statistics if s not in STATISTICS]
        if unknown or not self.statistics:
            raise ConfigError(
                f"unknown statistics {unknown}" if unknown else "no statistic selected",
                field="statistics",
                value=self.statistics,
                allowed=", ".join(STATISTICS),
            )
        pairs = (
            ("qber_step", "qber_tolerance", 0.5),
            ("decoy_drop", "decoy_tolerance", 1.0),
            ("decoy_rise", "decoy_tolerance", None),
            ("loss_step_db", "loss_tolerance_db", None),
            ("monitor_step", "monitor_tolerance", None),
        )
        for step_name, tol_name, top in pairs:
            tol = v.in_range(tol_name, getattr(self, tol_name), 0.0, top, high_open=True)
            v.in_range(step_name, getattr(self, step_name), tol, top, low_open=True, high_open=True)
        v.in_range("background_tolerance", self.background_tolerance, 0.0)
        v.in_range(
            "background_ratio",
            self.background_ratio,
            1.0 + self.background_tolerance,
            None,
            low_open=True,
        )
        v.in_range("freeze_fraction", self.freeze_fraction, 0.0, 1.0, low_open=True)
        v.in_range("reference_precision", self.reference_precision, 0.0, None, low_open=True)
        v.in_range("siegmund_max_kl", self.siegmund_max_kl, 0.0, None, low_open=True)
        if self.threshold_method not in ("auto", "siegmund", "markov"):
            raise ConfigError(
                f"threshold_method must be auto, siegmund or markov, got {self.threshold_method!r}",
                field="threshold_method",
                value=self.threshold_method,
                allowed="auto, siegmund, markov",
            )

    def link_arl_intervals(self, interval_s: float) -> float:
        """Return the link's ARL budget in intervals of ``interval_s`` seconds."""
        return (
            self.arl_days
            * _SECONDS_PER_DAY
            / v.in_range("interval_s", interval_s, 0.0, None, low_open=True)
        )

    def reference_lag_s(self, interval_s: float = 1.0) -> float:
        """Lag of the reference behind the current interval: guard plus half the window, s."""
        return self.guard_intervals * interval_s + 0.5 * self.reference_window_s

    def tolerated_ramp_db_per_hour(self, interval_s: float = 1.0) -> float:
        """Largest loss ramp whose offset over the reference lag stays inside the zone, dB/h."""
        return self.loss_tolerance_db / self.reference_lag_s(interval_s) * 3600.0


# --------------------------------------------------------------------------- reference
@dataclass(frozen=True)
class Reference:
    """The calibrated pre-change model a detector tests against.

    Build with :meth:`from_estimate` (a :class:`~qkdtwin.twin.estimate.LinkEstimate`) or
    :meth:`from_model` (known parameters, e.g. in a benchmark).

    Attributes
    ----------
    intensities, sent_per_interval
        Classes and mean pulses sent per interval in each.
    eta, dark_count_prob, misalignment
        Fitted (or true) parameters.
    click_prob, error_prob
        :math:`P_k`, :math:`e_k` per class.
    photocurrent_ua, photocurrent_sigma_ua, monitor_samples
        Monitor baseline: mean, per-sample standard deviation, mean samples per interval.
    se
        Standard error of each statistic's null value in the units of its tolerance
        (QBER absolute, decoy and background relative, loss dB, monitor relative); 0 for a
        known model.
    t
        End of the reference window, s.
    declared_detector_efficiency
        For reporting losses.
    """

    intensities: tuple[float, ...]
    sent_per_interval: tuple[float, ...]
    eta: float
    dark_count_prob: float
    misalignment: float
    click_prob: tuple[float, ...]
    error_prob: tuple[float, ...]
    photocurrent_ua: float | None = None
    photocurrent_sigma_ua: float | None = None
    monitor_samples: float | None = None
    se: dict[str, float] = field(default_factory=dict)
    t: float = 0.0
    declared_detector_efficiency: float = 1.0

    @property
    def signal(self) -> int:
        """Index of the signal class (the first)."""
        return 0

    @property
    def decoy(self) -> int | None:
        """Index of the weak decoy: the smallest intensity in (0, signal), or ``None``."""
        mu = self.intensities
        cand = [k for k in range(1, len(mu)) if 0.0 < mu[k] < mu[0]]
        return min(cand, key=lambda k: mu[k]) if cand else None

    @property
    def vacuum(self) -> int | None:
        """Index of the vacuum class, or ``None``."""
        return next((k for k, m in enumerate(self.intensities) if m == 0.0), None)

    @classmethod
    def from_model(
        cls,
        eta: float,
        dark_count_prob: float,
        misalignment: float,
        intensities: Sequence[float],
        sent_per_interval: Sequence[float],
        *,
        photocurrent: tuple[float, float, float] | None = None,
        declared_detector_efficiency: float = 1.0,
    ) -> Reference:
        """Build the reference of known parameters; ``photocurrent = (I0, sigma, samples)``."""
        mu = tuple(float(m) for m in intensities)
        p, e = model_probabilities(eta, dark_count_prob, misalignment, np.asarray(mu))
        return cls(
            intensities=mu,
            sent_per_interval=tuple(float(s) for s in sent_per_interval),
            eta=float(eta),
            dark_count_prob=float(dark_count_prob),
            misalignment=float(misalignment),
            click_prob=tuple(float(x) for x in p),
            error_prob=tuple(float(x) for x in e),
            photocurrent_ua=None if photocurrent is None else float(photocurrent[0]),
            photocurrent_sigma_ua=None if photocurrent is None else float(photocurrent[1]),
            monitor_samples=None if photocurrent is None else float(photocurrent[2]),
            se={},
            declared_detector_efficiency=declared_detector_efficiency,
        )

    @classmethod
    def from_estimate(cls, est: LinkEstimate) -> Reference:
        """Build the reference from a window fit, with the standard errors of its null values."""
        d = np.asarray(est.detected, dtype=np.float64)
        s = np.asarray(est.sifted, dtype=np.float64)
        ref = cls(
            intensities=est.intensities,
            sent_per_interval=est.sent_per_interval,
            eta=est.eta,
            dark_count_prob=est.dark_count_prob,
            misalignment=est.misalignment,
            click_prob=est.click_prob,
            error_prob=est.error_prob,
            photocurrent_ua=est.photocurrent_ua,
            photocurrent_sigma_ua=est.photocurrent_sigma_ua,
            monitor_samples=est.monitor_samples_per_interval,
            t=est.t,
            declared_detector_efficiency=est.declared_detector_efficiency,
        )
        se: dict[str, float] = {}
        e0 = est.error_prob[0]
        se["qber"] = math.sqrt(e0 * (1 - e0) / s[0]) if s[0] > 0 else math.inf
        kd, kv = ref.decoy, ref.vacuum
        if kd is not None:
            # relative s.e. of the decoy/signal gain ratio (independent Poisson counts)
            se["decoy-yield"] = se["decoy-yield-rise"] = (
                math.sqrt(1.0 / d[kd] + 1.0 / d[0]) if d[kd] > 0 and d[0] > 0 else math.inf
            )
        se["loss-step"] = se["count-model"] = est.loss_db_se
        if kv is not None:
            se["background"] = 1.0 / math.sqrt(d[kv]) if d[kv] > 0 else math.inf
        if est.photocurrent_ua and est.photocurrent_sigma_ua is not None:
            tot = est.monitor_intervals * (est.monitor_samples_per_interval or 0.0)
            se["detector-monitor"] = (
                est.photocurrent_sigma_ua / math.sqrt(tot) / est.photocurrent_ua
                if tot > 0
                else math.inf
            )
        object.__setattr__(ref, "se", se)
        return ref

    def click_prob_at(self, eta: float) -> float:
        """Signal click probability at transmittance ``eta`` with the reference dark counts."""
        p, _ = model_probabilities(
            eta, self.dark_count_prob, self.misalignment, self.intensities[0]
        )
        return float(p)


# --------------------------------------------------------------------------- designs
@dataclass(frozen=True)
class StatisticDesign:
    r"""One statistic's test: its null edge, design alternative, threshold and budget.

    Attributes
    ----------
    name
        One of :data:`STATISTICS`.
    p_ref
        The reference value of the tested probability (QBER, decoy share at the mean pulse
        numbers, click probability, vacuum yield) or, for the monitor, mean photocurrent.
    p0, p1
        Null edge (reference moved by the tolerance towards the alternative) and design
        alternative. For ``decoy-yield`` they are decoy shares at the mean pulse numbers
        and the test uses each interval's own pulse numbers.
    g_ref, g0, g1
        ``decoy-yield`` only: decoy-to-signal gain ratios behind ``p_ref``, ``p0``, ``p1``.
    trials
        Expected trials per interval (sifted bits, clicks, pulses; monitor samples).
    sd
        ``detector-monitor`` only: per-sample standard deviation of the photocurrent.
    kl
        :math:`KL(p_0\|p_1)` per interval (nats) at the expected trials.
    arl_intervals
        This statistic's share of the ARL budget.
    threshold, method
        CUSUM threshold and how it was found (``siegmund`` or ``markov``).
    step, tolerance
        The design change and indifference zone in the configuration's units.
    active
        ``False`` while the reference is too imprecise for this statistic.
    law
        In-control law of the LLR increment at the null edge.
    """

    name: str
    p_ref: float
    p0: float
    p1: float
    trials: float
    kl: float
    arl_intervals: float
    threshold: float
    method: str
    step: float
    tolerance: float
    active: bool
    law: LlrLaw
    g_ref: float = math.nan
    g0: float = math.nan
    g1: float = math.nan
    sd: float = math.nan

    def evidence(self) -> dict[str, float]:
        """Design parameters as plain numbers (for alarms and reports)."""
        out = {
            "p_ref": self.p_ref,
            "p0_null_edge": self.p0,
            "p1_design": self.p1,
            "step": self.step,
            "tolerance": self.tolerance,
            "trials_per_interval": self.trials,
            "kl_per_interval": self.kl,
            "arl_intervals": self.arl_intervals,
            "llr_per_event": self.law.a,
        }
        if self.name in _DECOY:
            out |= {"gain_ratio_ref": self.g_ref, "gain_ratio_null_edge": self.g0}
            out["gain_ratio_design"] = self.g1
        return out


@functools.lru_cache(maxsize=4096)
def _markov_threshold_cached(
    arl_key: int, kind: str, n_key: int, p0_key: int, p1_key: int
) -> float:
    # The chain's solves are small (~200 states): BLAS threads only fight over the cores
    # (10x slower than one thread on a busy 2-core machine), so they run single-threaded.
    with _blas().limit(limits=1, user_api="blas"):
        return _markov_threshold(arl_key, kind, n_key, p0_key, p1_key)


@functools.cache
def _blas() -> ThreadpoolController:
    """Return the process's thread pools, inspected once.

    ``threadpool_limits`` re-scanned the loaded libraries at every call, ~10 ms: a quarter of
    a threshold's cost.
    """
    return ThreadpoolController()


def _markov_threshold(arl_key: int, kind: str, n_key: int, p0_key: int, p1_key: int) -> float:
    arl = math.exp(arl_key / 1000.0)
    if kind == "binomial":
        n = math.exp(n_key / _N_KEY_SCALE)
        p0 = 1.0 / (1.0 + math.exp(-p0_key / _P_KEY_SCALE))
        p1 = 1.0 / (1.0 + math.exp(-p1_key / _P_KEY_SCALE))
        law = LlrLaw.binomial(n, p0, p1)
    else:
        delta = p1_key / 1000.0  # shift in standard errors
        law = LlrLaw.gaussian(1.0, 0.0, delta)
    return cusum_threshold_markov(arl, law)


#: Quantisation of the Markov-chain threshold cache: ``n`` in steps of 2 % and ``p0``, ``p1``
#: in steps of 0.5 % of their odds. A refitted reference moves ``p0`` by about its standard
#: error (well under 1 % once the window is full), so successive refits share thresholds
#: instead of solving the chain again (~20 ms each); the threshold is computed for the
#: quantised law itself, which changes the ARL by a few per cent at most.
_N_KEY_SCALE = 50.0
_P_KEY_SCALE = 200.0


def _logit_key(p: float) -> int:
    return round(_P_KEY_SCALE * math.log(p / (1.0 - p)))


def _threshold(law: LlrLaw, kl: float, arl: float, method: str, max_kl: float) -> tuple[float, str]:
    # Siegmund's diffusion correction needs many small steps: K per interval at most
    # ``max_kl`` and a near-continuous increment (per-event weight below a third of its s.d.,
    # i.e. about ten or more events per interval)
    lattice = law.kind == "binomial" and abs(law.a) > law.sd / 3.0
    use_markov = method == "markov" or (method == "auto" and (kl > max_kl or lattice))
    if not use_markov:
        return cusum_threshold(arl, kl, llr_sd=law.sd), "siegmund"
    if law.kind == "binomial":
        p0 = law.p
        p1 = p0 * math.exp(law.a) / (1.0 - p0 + p0 * math.exp(law.a))
        key = (
            round(1000.0 * math.log(arl)),
            "binomial",
            round(_N_KEY_SCALE * math.log(law.n)),
            _logit_key(p0),
            _logit_key(p1),
        )
    else:
        key = (round(1000.0 * math.log(arl)), "gaussian", 0, 0, round(1000.0 * law.sd))
    return _markov_threshold_cached(*key), "markov"


def design_statistics(
    reference: Reference,
    config: DetectorConfig,
    link_arl_intervals: float,
    *,
    monitor: bool | None = None,
) -> tuple[StatisticDesign, ...]:
    """Designs and thresholds of a link's statistics against ``reference``.

    Parameters
    ----------
    reference
        The pre-change model.
    config
        Design, tolerances and budget.
    link_arl_intervals
        The link's ARL budget in intervals; each of the ``m`` statistics gets
        ``m * link_arl_intervals`` (union bound).
    monitor
        Whether the link reports a detector monitor; default: whether the reference has a
        monitor baseline.

    Returns
    -------
    tuple of StatisticDesign
        In the order of :data:`STATISTICS`, only those the configuration selects and the
        data support.
    """
    arl_link = v.in_range("link_arl_intervals", link_arl_intervals, 1.0, None)
    has_mon = reference.photocurrent_ua is not None if monitor is None else monitor
    kd, kv = reference.decoy, reference.vacuum
    names = [
        s
        for s in config.statistics
        if not (s in _DECOY and kd is None)
        and not (s == "background" and kv is None)
        and not (s == "detector-monitor" and not has_mon)
    ]
    names = [s for s in STATISTICS if s in names]
    arl = len(names) * arl_link
    ref = reference
    n_s = ref.sent_per_interval[0]
    p_s = ref.click_prob[0]
    k_se = config.reference_precision
    out: list[StatisticDesign] = []
    for name in names:
        tol_eff = max(_TOLERANCE[name](config), k_se * ref.se.get(name, 0.0))
        step = _STEP[name](config)
        # the zone must leave room for the alternative: at most half-way to the design
        room = (step - 1.0) / 2.0 if name == "background" else step / 2.0
        extra: dict[str, float] = {}
        if name == "qber":
            trials = 0.5 * n_s * p_s
            p_ref = ref.error_prob[0]
            p0 = min(p_ref + tol_eff, 0.5)
            p1 = min(p_ref + step, 0.5)
        elif name in _DECOY:
            assert kd is not None
            n_d, p_d = ref.sent_per_interval[kd], ref.click_prob[kd]
            g = p_d / p_s
            if name == "decoy-yield":
                g0 = g * (1.0 - min(tol_eff, 0.99))
                g1 = g * (1.0 - step)
            else:  # rise: PNS on a short link forwards more decoy light than honest
                g0 = g * (1.0 + tol_eff)
                g1 = g * (1.0 + step)
            trials = n_s * p_s + n_d * p_d

            def share(gg: float, nd: float = n_d) -> float:
                return nd * gg / (n_s + nd * gg)

            p_ref, p0, p1 = share(g), share(g0), share(g1)
            extra = {"g_ref": g, "g0": g0, "g1": g1}
        elif name in ("loss-step", "count-model"):
            sign = -1.0 if name == "loss-step" else 1.0
            trials = n_s
            p_ref = p_s
            p0 = ref.click_prob_at(ref.eta * 10.0 ** (sign * tol_eff / 10.0))
            p1 = min(ref.click_prob_at(ref.eta * 10.0 ** (sign * step / 10.0)), 1.0 - 1e-12)
        elif name == "background":
            assert kv is not None
            trials = ref.sent_per_interval[kv]
            p_ref = ref.click_prob[kv]
            p0 = p_ref * (1.0 + tol_eff)
            p1 = min(p_ref * step, 0.5)
        else:  # detector-monitor
            i0 = ref.photocurrent_ua or 0.0
            sig = ref.photocurrent_sigma_ua or 0.0
            samples = ref.monitor_samples or 1.0
            p_ref, p0, p1 = i0, i0 * (1.0 + tol_eff), i0 * (1.0 + step)
            trials = samples
            if i0 > 0 and sig > 0:
                law = LlrLaw.gaussian(1.0, 0.0, (p1 - p0) / (sig / math.sqrt(samples)))
                kl = 0.5 * law.sd**2
                h, method = _threshold(
                    law, kl, arl, config.threshold_method, config.siegmund_max_kl
                )
            else:
                law = LlrLaw.gaussian(1.0, 0.0, 1.0)
                kl, h, method = 0.0, math.inf, "none"
            active = bool(i0 > 0 and sig > 0 and tol_eff <= room)
            out.append(
                StatisticDesign(
                    name,
                    p_ref,
                    p0,
                    p1,
                    trials,
                    kl,
                    arl,
                    h,
                    method,
                    step,
                    tol_eff,
                    active,
                    law,
                    sd=sig,
                )
            )
            continue
        ok = 0.0 < p0 < 1.0 and 0.0 < p1 < 1.0 and p0 != p1 and trials > 0
        if ok:
            law = LlrLaw.binomial(trials, p0, p1)
            kl = float(binomial_kl(law.n, p0, p1))
            h, method = _threshold(law, kl, arl, config.threshold_method, config.siegmund_max_kl)
        else:
            law = LlrLaw("binomial", n=1, p=0.5, a=0.0, b=0.0)
            kl, h, method = 0.0, math.inf, "none"
        active = ok and tol_eff <= room
        out.append(
            StatisticDesign(
                name, p_ref, p0, p1, trials, kl, arl, h, method, step, tol_eff, active, law, **extra
            )
        )
    return tuple(out)


#: The two decoy-yield statistics (the decoy/signal gain ratio falling, or rising).
_DECOY = ("decoy-yield", "decoy-yield-rise")

_TOLERANCE = {
    "qber": lambda c: c.qber_tolerance,
    "decoy-yield": lambda c: c.decoy_tolerance,
    "decoy-yield-rise": lambda c: c.decoy_tolerance,
    "loss-step": lambda c: c.loss_tolerance_db,
    "count-model": lambda c: c.loss_tolerance_db,
    "background": lambda c: c.background_tolerance,
    "detector-monitor": lambda c: c.monitor_tolerance,
}
_STEP = {
    "qber": lambda c: c.qber_step,
    "decoy-yield": lambda c: c.decoy_drop,
    "decoy-yield-rise": lambda c: c.decoy_rise,
    "loss-step": lambda c: c.loss_step_db,
    "count-model": lambda c: c.loss_step_db,
    "background": lambda c: c.background_ratio,
    "detector-monitor": lambda c: c.monitor_step,
}


# --------------------------------------------------------------------------- LLRs, fast path
def _binom_llr(x: FloatArray, n: FloatArray, p0: ArrayLike, p1: ArrayLike) -> FloatArray:
    p0a = np.asarray(p0, dtype=np.float64)
    p1a = np.asarray(p1, dtype=np.float64)
    return np.asarray(
        x * (np.log(p1a) - np.log(p0a)) + (n - x) * (np.log1p(-p1a) - np.log1p(-p0a)),
        dtype=np.float64,
    )


def count_llrs(
    designs: Sequence[StatisticDesign],
    reference: Reference,
    *,
    sent: ArrayLike,
    detected: ArrayLike,
    sifted: ArrayLike,
    errors: ArrayLike,
    photocurrent_ua: ArrayLike | None = None,
    monitor_samples: ArrayLike | None = None,
) -> FloatArray:
    """Per-interval LLR of every statistic, vectorised over intervals.

    Parameters
    ----------
    designs
        From :func:`design_statistics`.
    reference
        The reference the designs were made against (class roles).
    sent, detected, sifted, errors
        Counts, shape ``(T, K)`` (intervals by intensity classes).
    photocurrent_ua, monitor_samples
        Monitor readings, shape ``(T,)`` (needed for ``detector-monitor``).

    Returns
    -------
    ndarray
        Shape ``(T, m)``, column ``j`` the LLR increments of ``designs[j]``.
    """
    n = np.atleast_2d(np.asarray(sent, dtype=np.float64))
    d = np.atleast_2d(np.asarray(detected, dtype=np.float64))
    s = np.atleast_2d(np.asarray(sifted, dtype=np.float64))
    e = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    out = np.zeros((n.shape[0], len(designs)))
    kd, kv = reference.decoy, reference.vacuum
    for j, des in enumerate(designs):
        if not des.active or not math.isfinite(des.threshold):
            # as the online detector: an inactive statistic (reference not precise enough)
            # contributes nothing
            continue
        if des.name == "qber":
            out[:, j] = _binom_llr(e[:, 0], s[:, 0], des.p0, des.p1)
        elif des.name in _DECOY:
            assert kd is not None
            ns, nd = n[:, 0], n[:, kd]
            r0 = nd * des.g0 / (ns + nd * des.g0)
            r1 = nd * des.g1 / (ns + nd * des.g1)
            out[:, j] = _binom_llr(d[:, kd], d[:, 0] + d[:, kd], r0, r1)
        elif des.name in ("loss-step", "count-model"):
            out[:, j] = _binom_llr(d[:, 0], n[:, 0], des.p0, des.p1)
        elif des.name == "background":
            assert kv is not None
            out[:, j] = _binom_llr(d[:, kv], n[:, kv], des.p0, des.p1)
        else:
            if photocurrent_ua is None or monitor_samples is None:
                raise ConfigError(
                    "detector-monitor needs photocurrent_ua and monitor_samples",
                    field="photocurrent_ua",
                )
            x = np.asarray(photocurrent_ua, dtype=np.float64)
            ns_ = np.asarray(monitor_samples, dtype=np.float64)
            var = des.sd**2 / ns_
            out[:, j] = (des.p1 - des.p0) / var * (x - 0.5 * (des.p0 + des.p1))
    return out


@dataclass(frozen=True)
class CusumScan:
    """Result of :func:`cusum_scan`.

    Attributes
    ----------
    alarm_index
        Interval index of each alarm (the CUSUM exceeded its threshold there), ascending.
    alarm_statistic
        Column of the statistic that alarmed.
    change_index
        Estimated change point of each alarm: the first interval of the CUSUM's last
        excursion from zero.
    final
        CUSUM values after the last interval.
    """

    alarm_index: NDArray[np.int64]
    alarm_statistic: NDArray[np.int64]
    change_index: NDArray[np.int64]
    final: FloatArray

    def count(self, statistic: int | None = None) -> int:
        """Return the number of alarms (of one statistic, or all)."""
        if statistic is None:
            return int(self.alarm_index.size)
        return int(np.count_nonzero(self.alarm_statistic == statistic))


def cusum_scan(
    llr: ArrayLike, thresholds: ArrayLike, *, restart: bool = True, chunk: int = 65536
) -> CusumScan:
    r"""Run one-sided CUSUMs over LLR increments, vectorised: the benchmark fast path.

    Parameters
    ----------
    llr
        Increments, shape ``(T, m)`` (or ``(T,)``).
    thresholds
        Threshold per column, shape ``(m,)``; alarm when :math:`S_t > h`.
    restart
        Restart a CUSUM at 0 after its alarm (renewal: alarm counts estimate ARLs); if
        ``False`` only each column's first alarm is reported.
    chunk
        Intervals processed per vectorised block.

    Returns
    -------
    CusumScan
        Alarms, change points and final values.

    Notes
    -----
    Between alarms :math:`S_t = \max(0, S_{t-1} + L_t)` equals
    :math:`C_t - \min(0, \min_{s \le t} C_s)` with :math:`C_t = S_{t_0} + \sum L`: a
    cumulative sum and a running minimum (``numpy.minimum.accumulate``), so each block costs
    a few vector passes; after an alarm the block is recomputed from the next interval. The
    change point is one past the last :math:`s` with :math:`S_s = 0`.
    """
    arr = np.asarray(llr, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    hs = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if hs.shape != (arr.shape[1],):
        raise ConfigError(
            f"need one threshold per column ({arr.shape[1]}), got {hs.shape}",
            field="thresholds",
            value=hs.tolist(),
        )
    t_all, m = arr.shape
    a_idx: list[int] = []
    a_stat: list[int] = []
    a_chg: list[int] = []
    final = np.zeros(m)
    for j in range(m):
        h = hs[j]
        col = arr[:, j]
        s0 = 0.0
        last_zero = -1  # index of the last interval with S = 0 (-1: before the start)
        pos = 0
        while pos < t_all:
            if not math.isfinite(h):
                break
            end = min(pos + chunk, t_all)
            c = s0 + np.cumsum(col[pos:end])
            runmin = np.minimum.accumulate(np.minimum(c, 0.0))
            s = c - runmin
            over = np.flatnonzero(s > h)
            if over.size == 0:
                zeros = np.flatnonzero(s == 0.0)
                if zeros.size:
                    last_zero = pos + int(zeros[-1])
                s0 = float(s[-1])
                pos = end
                continue
            k = int(over[0])
            zeros = np.flatnonzero(s[:k] == 0.0)
            lz = pos + int(zeros[-1]) if zeros.size else last_zero
            a_idx.append(pos + k)
            a_stat.append(j)
            a_chg.append(lz + 1)
            if not restart:
                s0 = 0.0
                break
            s0 = 0.0
            last_zero = pos + k
            pos = pos + k + 1
        final[j] = s0
    order = np.argsort(np.asarray(a_idx, dtype=np.int64), kind="stable")
    return CusumScan(
        alarm_index=np.asarray(a_idx, dtype=np.int64)[order],
        alarm_statistic=np.asarray(a_stat, dtype=np.int64)[order],
        change_index=np.asarray(a_chg, dtype=np.int64)[order],
        final=final,
    )


# --------------------------------------------------------------------------- online detector
class DetectionAlarm(BaseModel):
    """One alarm of a link detector.

    Attributes
    ----------
    statistic
        Which statistic alarmed (:data:`STATISTICS`).
    t
        End of the interval at which the CUSUM exceeded its threshold, s.
    change_point_t
        Estimated onset: start of the first interval of the CUSUM's last excursion from 0.
    delay_s
        ``t - change_point_t``.
    intervals
        Intervals in that excursion.
    cusum, threshold
        The CUSUM value and the threshold it exceeded.
    design
        The LLR design (null edge, alternative, step, tolerance, KL, ARL share, ...).
    reference
        The pre-change reference values (eta, loss, QBER, gain ratio, yield, current).
    post_change
        Maximum-likelihood estimate of the tested quantity over the excursion.
    message
        One line for the log.
    """

    model_config = ConfigDict(frozen=True)

    statistic: str
    t: float
    change_point_t: float
    delay_s: float
    intervals: int
    cusum: float
    threshold: float
    design: dict[str, float]
    reference: dict[str, float]
    post_change: dict[str, float]
    message: str


@dataclass
class _Track:
    """A statistic's CUSUM state and its excursion's sufficient statistics."""

    s: float = 0.0
    start_t: float = math.nan
    intervals: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    in_alarm: bool = False

    def reset(self) -> None:
        self.s = 0.0
        self.start_t = math.nan
        self.intervals = 0
        self.sums = {}


class LinkDetector:
    """Online change detection on one link's intervals.

    Parameters
    ----------
    declared_detector_efficiency
        For the reference fit's loss scale (see :func:`~qkdtwin.twin.estimate.fit_link`).
    config
        Detector design (:class:`DetectorConfig`).
    interval_s
        Reporting interval, s; default: the first observation's duration. Converts the ARL
        budget into intervals.
    dark_count_prob
        Passed to the reference fit (fix :math:`p_d` without a vacuum class).
    refit_phase
        Intervals (``0 <= refit_phase < config.refit_every``) by which the refits after the
        first are delayed, so that many links' detectors started together do not all refit in
        the same interval (a refit is a fit and a design, ~5 ms; 300 links in one interval
        made a 1.5-s spike every ``refit_every`` intervals). 0: refit every ``refit_every``
        intervals from the first, as before.

    Notes
    -----
    Per :meth:`add`: each active statistic's LLR against the current reference updates its
    CUSUM; an alarm latches that statistic until :meth:`clear`. Then the interval enters
    the guard queue, and the interval leaving it enters the reference window unless the
    reference is frozen (any alarm active, or any CUSUM above ``freeze_fraction`` of its
    threshold). The reference is refitted (warm start, ~1 ms) and the designs recomputed
    (thresholds cached) when it changes.
    """

    def __init__(
        self,
        declared_detector_efficiency: float,
        config: DetectorConfig | None = None,
        *,
        interval_s: float | None = None,
        dark_count_prob: float | None = None,
        refit_phase: int = 0,
    ) -> None:
        self.config = config if config is not None else DetectorConfig()
        if not 0 <= refit_phase < self.config.refit_every:
            raise ConfigError(
                f"refit_phase must be in [0, refit_every), got {refit_phase!r}",
                field="refit_phase",
                value=refit_phase,
            )
        self._phase = int(refit_phase)
        self.interval_s = (
            None
            if interval_s is None
            else v.in_range("interval_s", interval_s, 0.0, None, low_open=True)
        )
        self._estimator = LinkEstimator(
            declared_detector_efficiency,
            window_s=self.config.reference_window_s,
            dark_count_prob=dark_count_prob,
        )
        self._guard: deque[IntervalObservation] = deque()
        self._reference: Reference | None = None
        self._estimate: LinkEstimate | None = None
        self._designs: tuple[StatisticDesign, ...] = ()
        self._tracks: dict[str, _Track] = {}
        self._monitor: bool | None = None
        self._pending = 0
        self._held = False
        self.alarms: list[DetectionAlarm] = []

    # ---------------------------------------------------------------- properties
    @property
    def reference(self) -> Reference | None:
        """The current reference (``None`` until the first fit)."""
        return self._reference

    @property
    def reference_estimate(self) -> LinkEstimate | None:
        """The reference window's fit."""
        return self._estimate

    @property
    def designs(self) -> tuple[StatisticDesign, ...]:
        """The statistics' current designs."""
        return self._designs

    @property
    def active_alarms(self) -> tuple[str, ...]:
        """Statistics whose alarm is latched."""
        return tuple(k for k, t in self._tracks.items() if t.in_alarm)

    @property
    def frozen(self) -> bool:
        """Whether the reference is not learning now."""
        if self._held or any(t.in_alarm for t in self._tracks.values()):
            return True
        f = self.config.freeze_fraction
        return any(
            d.active and math.isfinite(d.threshold) and self._tracks[d.name].s > f * d.threshold
            for d in self._designs
            if d.name in self._tracks
        )

    def cusums(self) -> dict[str, float]:
        """Return the current CUSUM value of each statistic."""
        return {k: t.s for k, t in self._tracks.items()}

    # ---------------------------------------------------------------- operation
    def clear(self) -> None:
        """Clear all alarms and relearn the reference from scratch."""
        self._held = False
        self._estimator.reset()
        self._guard.clear()
        self._reference = None
        self._estimate = None
        self._designs = ()
        self._pending = 0
        for t in self._tracks.values():
            t.reset()
            t.in_alarm = False

    def rearm(self) -> None:
        """Unlatch every alarm and restart every CUSUM from 0, keeping the reference held.

        After an alarm the twin re-arms at once: a change that persists crosses the threshold
        again within about one detection delay (fresh evidence that the alarm still holds),
        and a change that ended leaves every statistic quiet. The reference learns nothing
        until :meth:`release`, so the attacked intervals never become the new normal.
        """
        self._held = True
        for t in self._tracks.values():
            t.reset()
            t.in_alarm = False

    def release(self) -> None:
        """Let the reference learn again (after the twin judged the link recovered)."""
        self._held = False

    @property
    def held(self) -> bool:
        """Whether :meth:`rearm` holds the reference."""
        return self._held

    def add(self, obs: IntervalObservation) -> tuple[DetectionAlarm, ...]:
        """Process the newest interval; return the alarms it raised."""
        if self.interval_s is None:
            self.interval_s = obs.duration_s
        if self._monitor is None:
            self._monitor = obs.photocurrent_ua is not None
        raised: list[DetectionAlarm] = []
        ref = self._reference
        if ref is not None and obs.intensities == ref.intensities:
            for des in self._designs:
                tr = self._tracks.setdefault(des.name, _Track())
                if tr.in_alarm or not des.active or not math.isfinite(des.threshold):
                    continue
                llr, contrib = self._llr(des, ref, obs)
                if llr is None:
                    continue
                new = max(0.0, tr.s + llr)
                if new == 0.0:
                    tr.reset()
                    continue
                if tr.s == 0.0:
                    tr.start_t = obs.t_start
                    tr.intervals = 0
                    tr.sums = {}
                tr.s = new
                tr.intervals += 1
                for k, val in contrib.items():
                    tr.sums[k] = tr.sums.get(k, 0.0) + val
                if new > des.threshold:
                    alarm = self._alarm(des, ref, tr, obs)
                    raised.append(alarm)
                    self.alarms.append(alarm)
                    tr.in_alarm = True
                    tr.s = 0.0
        elif ref is not None:
            self.clear()
        self._guard.append(obs)
        while len(self._guard) > self.config.guard_intervals:
            old = self._guard.popleft()
            if not self.frozen:
                self._estimator.add(old)
                self._pending += 1
        if self._pending and (self._reference is None or self._pending >= self.config.refit_every):
            first = self._reference is None
            self._pending = 0
            self._refresh()
            if first and self._reference is not None:
                self._pending = -self._phase  # later refits fall at this link's phase
        return tuple(raised)

    def _refresh(self) -> None:
        est = self._estimator.estimate()
        if not est.converged and est.message.startswith("no clicks"):
            return
        self._estimate = est
        self._reference = Reference.from_estimate(est)
        assert self.interval_s is not None
        self._designs = design_statistics(
            self._reference,
            self.config,
            self.config.link_arl_intervals(self.interval_s),
            monitor=bool(self._monitor),
        )
        for d in self._designs:
            self._tracks.setdefault(d.name, _Track())

    @staticmethod
    def _llr(
        des: StatisticDesign, ref: Reference, obs: IntervalObservation
    ) -> tuple[float | None, dict[str, float]]:
        name = des.name
        if name == "qber":
            x, n = obs.errors[0], obs.sifted[0]
            return _scalar_llr(x, n, des.p0, des.p1), {"x": float(x), "n": float(n)}
        if name in _DECOY:
            kd = ref.decoy
            assert kd is not None
            ns, nd = obs.sent[0], obs.sent[kd]
            if ns + nd == 0:
                return None, {}
            r0 = nd * des.g0 / (ns + nd * des.g0)
            r1 = nd * des.g1 / (ns + nd * des.g1)
            x, n = obs.detected[kd], obs.detected[0] + obs.detected[kd]
            contrib = {
                "dd": float(x),
                "ds": float(obs.detected[0]),
                "nd": float(nd),
                "ns": float(ns),
            }
            return _scalar_llr(x, n, r0, r1), contrib
        if name in ("loss-step", "count-model"):
            x, n = obs.detected[0], obs.sent[0]
            return _scalar_llr(x, n, des.p0, des.p1), {"x": float(x), "n": float(n)}
        if name == "background":
            kv = ref.vacuum
            assert kv is not None
            x, n = obs.detected[kv], obs.sent[kv]
            return _scalar_llr(x, n, des.p0, des.p1), {"x": float(x), "n": float(n)}
        if obs.photocurrent_ua is None or obs.monitor_samples is None:
            return None, {}
        var = des.sd**2 / obs.monitor_samples
        i = obs.photocurrent_ua
        llr = (des.p1 - des.p0) / var * (i - 0.5 * (des.p0 + des.p1))
        return llr, {"x": i * obs.monitor_samples, "n": float(obs.monitor_samples)}

    def _alarm(
        self, des: StatisticDesign, ref: Reference, tr: _Track, obs: IntervalObservation
    ) -> DetectionAlarm:
        s = tr.sums
        eta_det = ref.declared_detector_efficiency
        reference: dict[str, float] = {
            "eta": ref.eta,
            "loss_db": float(loss_db_from_transmittance(ref.eta, eta_det)),
            "t": ref.t,
        }
        post: dict[str, float] = {}
        if des.name == "qber":
            reference["qber"] = des.p_ref
            post["qber"] = s["x"] / s["n"] if s.get("n") else math.nan
        elif des.name in _DECOY:
            reference["gain_ratio"] = des.g_ref
            g = (s["dd"] / s["nd"]) / (s["ds"] / s["ns"]) if s["ds"] > 0 and s["nd"] > 0 else 0.0
            post["gain_ratio"] = g
            post["relative_drop"] = 1.0 - g / des.g_ref
        elif des.name in ("loss-step", "count-model"):
            reference["click_prob"] = des.p_ref
            p = s["x"] / s["n"]
            post["click_prob"] = p
            mu = ref.intensities[0]
            lq = math.log1p(-ref.dark_count_prob)
            eta = max(-(math.log1p(-min(p, 1.0 - 1e-15)) - 2.0 * lq) / mu, 1e-300)
            post["eta"] = eta
            post["loss_db"] = float(loss_db_from_transmittance(eta, eta_det))
            post["loss_change_db"] = post["loss_db"] - reference["loss_db"]
        elif des.name == "background":
            reference["vacuum_yield"] = des.p_ref
            post["vacuum_yield"] = s["x"] / s["n"]
        else:
            reference["photocurrent_ua"] = des.p_ref
            reference["photocurrent_sigma_ua"] = des.sd
            post["photocurrent_ua"] = s["x"] / s["n"]
        delay = obs.t_end - tr.start_t
        quantity = ", ".join(f"{k}={val:.5g}" for k, val in post.items())
        msg = (
            f"{des.name}: CUSUM {tr.s:.3g} > {des.threshold:.3g} at t={obs.t_end:g} s, "
            f"change from t={tr.start_t:g} s ({tr.intervals} intervals); post-change {quantity}"
        )
        return DetectionAlarm(
            statistic=des.name,
            t=obs.t_end,
            change_point_t=tr.start_t,
            delay_s=delay,
            intervals=tr.intervals,
            cusum=tr.s,
            threshold=des.threshold,
            design=des.evidence(),
            reference=reference,
            post_change=post,
            message=msg,
        )


def _scalar_llr(x: float, n: float, p0: float, p1: float) -> float:
    return x * (math.log(p1) - math.log(p0)) + (n - x) * (math.log1p(-p1) - math.log1p(-p0))
