r"""Calibration of a QKD link as state estimation: what the counts say about the link.

A QKD module reports, per interval and intensity class, the pulses sent, the pulses with a
click, the sifted pulses and their errors (:class:`~qkdtwin.interfaces.LinkTelemetry`). This
module turns a sliding window of such reports into a maximum-likelihood estimate of the link
state with confidence intervals, the way a metrologist calibrates an instrument, and tracks it
over time (:class:`LinkEstimator`).

The count model
---------------
Per link the unknown parameters are :math:`\theta = (\eta, p_d, e_d)`: the overall
transmittance :math:`\eta` (channel times detector efficiency), the dark-count probability
:math:`p_d` of each of Bob's two detectors per gate, and the misalignment :math:`e_d`. A pulse
of class :math:`k` (mean photon number :math:`\mu_k`; signal first, then the weak decoy, then
the vacuum) makes a click with probability

.. math::

    P_k = 1 - (1 - p_d)^2 e^{-\eta\mu_k},

the bases match with the known probability 1/2 (sifting carries no information on
:math:`\theta`), and a sifted click is an error with probability

.. math::

    e_k = P_w (1 - P_c/2) / P_k, \qquad
    P_c = 1 - (1-p_d) e^{-\eta\mu_k(1-e_d)}, \quad P_w = 1 - (1-p_d) e^{-\eta\mu_k e_d}

(the wrong detector fires and the right one does not, or both fire and the random bit is
wrong). The counts of an interval are ``detected ~ Binomial(sent, P_k)``,
``sifted ~ Binomial(detected, 1/2)`` and ``errors ~ Binomial(sifted, e_k)``. Dead time and
afterpulsing are not modelled. If :math:`\theta` is constant over a window, the sums of the
counts over its intervals (per intensity) are sufficient statistics, so a fit on a window costs
the same as a fit on one interval.

What the counts identify
------------------------
:math:`\eta`, :math:`p_d` and :math:`e_d` are identifiable (the vacuum class pins
:math:`p_d`, the signal and decoy classes :math:`\eta`, the errors :math:`e_d`). The counts
cannot separate fibre loss from detector efficiency: only their product :math:`\eta` enters.
The channel loss reported is therefore
:math:`L = -10\log_{10}(\eta/\eta_{det})` with the *declared* detector efficiency
:math:`\eta_{det}` of the operator's attach file; if the true efficiency is
:math:`(1+\epsilon)\eta_{det}` the reported loss is low by :math:`10\log_{10}(1+\epsilon)`,
0.41 dB for a 10 % mismatch. Without a vacuum class :math:`p_d` is identified only through
the curvature of :math:`P_k` in :math:`\mu_k` (weakly: its interval is wide) and can be fixed
instead (``dark_count_prob``); with a single non-vacuum class and no vacuum it must be.

The fit
-------
Maximum likelihood in the transformed space :math:`u = (\log\eta, \log p_d,
\operatorname{logit} 2e_d)`, where the parameters are unconstrained and the likelihood is
close to quadratic. The optimiser is Fisher scoring (Gauss-Newton on the binomial
likelihood, with the analytic score and expected information), with Levenberg damping, a step
cap and step halving on the log-likelihood, started at a closed-form estimate (vacuum gain
for :math:`p_d`, signal gain for :math:`\eta`, signal QBER for :math:`e_d`) or warm-started at
the previous window's estimate; L-BFGS-B is the fallback. Confidence intervals come from the
*observed* Fisher information at the MLE, a central-difference Hessian of the analytic score
(step :math:`10^{-4}` in :math:`u`, symmetrised; truncation error ~1e-8 relative), as Wald
intervals in :math:`u` mapped back (so they respect :math:`\eta, p_d > 0` and
:math:`0 < e_d < 1/2`). :math:`L` is linear in :math:`\log\eta`, so its delta-method interval
is exact in :math:`u`; the signal QBER's interval is a delta-method interval on the logit
scale. A fit on summed counts takes about a millisecond.

Key rate
--------
From the window's counts: signal gain :math:`Q_\mu` and QBER :math:`E_\mu`, weak-decoy gain
:math:`Q_\nu` and QBER :math:`E_\nu`, :math:`Y_0` = vacuum gain (or the fitted
:math:`1-(1-p_d)^2` without a vacuum class) go into
:func:`~qkdtwin.qkd.keyrate.vacuum_weak_decoy_bounds` and
:func:`~qkdtwin.qkd.keyrate.gllp_rate`; bits per signal pulse times signal pulses per second.

References
----------
X. Ma, B. Qi, Y. Zhao, H.-K. Lo, PRA 72, 012326 (2005) (count model, decoy bounds);
H.-K. Lo, X. Ma, K. Chen, PRL 94, 230504 (2005); Y. Pawitan, *In All Likelihood* (OUP 2001),
ch. 8-9 (observed information, Wald intervals on a transformed scale); B. Efron,
D. V. Hinkley, Biometrika 65, 457 (1978) (observed versus expected information).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict
from scipy import optimize
from scipy.special import expit, ndtri, xlog1py, xlogy

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError
from qkdtwin.qkd.keyrate import gllp_rate, vacuum_weak_decoy_bounds

if TYPE_CHECKING:
    from qkdtwin.interfaces.link_telemetry import LinkTelemetry

__all__ = [
    "DB_PER_NEPER",
    "IntervalObservation",
    "LinkEstimate",
    "LinkEstimator",
    "fit_link",
    "log_likelihood",
    "loss_db_from_transmittance",
    "model_probabilities",
]

FloatArray = NDArray[np.float64]

#: dB per natural-log unit of transmittance: L = -DB_PER_NEPER * ln(eta / eta_det).
DB_PER_NEPER = 10.0 / math.log(10.0)

# bounds of the transformed parameters (log eta, log pd, logit 2 ed)
_U_LO = np.array([math.log(1e-15), math.log(1e-15), -30.0])
_U_HI = np.array([0.0, math.log(0.5), 30.0])
_HESS_STEP = 1e-4
_MAX_ITER = 60


# --------------------------------------------------------------------------- observations
def _int_tuple(field_name: str, values: ArrayLike) -> tuple[int, ...]:
    if isinstance(values, tuple | list) and all(type(x) is int for x in values):
        out = tuple(values)  # the usual case (parsed telemetry): no array round trip
        if all(x >= 0 for x in out):
            return out
    try:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError
        out = tuple(int(x) for x in arr)
        if not np.all(arr == np.asarray(out)):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{field_name} must be a sequence of integers, got {values!r}",
            field=field_name,
            value=values,
            allowed="integers >= 0, one per intensity class",
        ) from None
    if any(x < 0 for x in out):
        raise ConfigError(
            f"{field_name} must be >= 0, got {values!r}",
            field=field_name,
            value=values,
            allowed=">= 0",
        )
    return out


@dataclass(frozen=True)
class IntervalObservation:
    """What a QKD module measured over one reporting interval (or a sum of intervals).

    Parameters
    ----------
    t_start, t_end
        Start and end of the interval, s (Unix time or simulation time), ``t_end > t_start``.
    intensities
        Mean photon number of each intensity class (signal first, then the weak decoy, then
        the vacuum, 0).
    sent, detected, sifted, errors
        Per class: pulses sent, pulses with at least one click, detected pulses whose bases
        matched, sifted pulses whose bit differs (``errors <= sifted <= detected <= sent``).
    photocurrent_ua
        Mean photocurrent of Bob's detector monitor over the interval, µA, or ``None``.
    monitor_samples
        Number of monitor readings the mean averages (>= 1; given with ``photocurrent_ua``).
    live_s
        Seconds of pulses the counts cover; defaults to ``t_end - t_start`` (a sum of
        intervals with gaps covers less than its span).

    Raises
    ------
    ConfigError
        For inconsistent lengths, negative or unordered counts, an empty interval, or a
        photocurrent without its sample count.
    """

    t_start: float
    t_end: float
    intensities: tuple[float, ...]
    sent: tuple[int, ...]
    detected: tuple[int, ...]
    sifted: tuple[int, ...]
    errors: tuple[int, ...]
    photocurrent_ua: float | None = None
    monitor_samples: int | None = None
    live_s: float | None = field(default=None)

    def __post_init__(self) -> None:
        t0 = v.finite("t_start", self.t_start)
        t1 = v.finite("t_end", self.t_end)
        if not t1 > t0:
            raise ConfigError(
                f"t_end must be after t_start, got [{t0!r}, {t1!r}]",
                field="t_end",
                value=t1,
                allowed=f"> {t0!r}",
            )
        mus = tuple(v.in_range("intensities", m, 0.0, 100.0) for m in self.intensities)
        if not mus:
            raise ConfigError("at least one intensity class is needed", field="intensities")
        counts = {}
        for name in ("sent", "detected", "sifted", "errors"):
            c = _int_tuple(name, getattr(self, name))
            if len(c) != len(mus):
                raise ConfigError(
                    f"{name} has {len(c)} entries for {len(mus)} intensity classes",
                    field=name,
                    value=getattr(self, name),
                    allowed=f"{len(mus)} entries",
                )
            counts[name] = c
        for k in range(len(mus)):
            if not (
                counts["errors"][k]
                <= counts["sifted"][k]
                <= counts["detected"][k]
                <= counts["sent"][k]
            ):
                raise ConfigError(
                    f"class {k}: counts must satisfy errors <= sifted <= detected <= sent",
                    field="errors",
                    value={n: c[k] for n, c in counts.items()},
                    allowed="errors <= sifted <= detected <= sent",
                )
        if (self.photocurrent_ua is None) != (self.monitor_samples is None):
            raise ConfigError(
                "photocurrent_ua and monitor_samples come together",
                field="monitor_samples",
                value=self.monitor_samples,
                allowed="both None or both given",
            )
        if self.photocurrent_ua is not None and self.monitor_samples is not None:
            v.finite("photocurrent_ua", self.photocurrent_ua)
            if int(self.monitor_samples) != self.monitor_samples or self.monitor_samples < 1:
                raise ConfigError(
                    f"monitor_samples must be an integer >= 1, got {self.monitor_samples!r}",
                    field="monitor_samples",
                    value=self.monitor_samples,
                    allowed=">= 1",
                )
            object.__setattr__(self, "photocurrent_ua", float(self.photocurrent_ua))
            object.__setattr__(self, "monitor_samples", int(self.monitor_samples))
        live = t1 - t0 if self.live_s is None else v.in_range("live_s", self.live_s, 0.0)
        object.__setattr__(self, "t_start", t0)
        object.__setattr__(self, "t_end", t1)
        object.__setattr__(self, "intensities", mus)
        object.__setattr__(self, "live_s", live)
        for name, c in counts.items():
            object.__setattr__(self, name, c)

    @property
    def duration_s(self) -> float:
        """Span of the interval, s."""
        return self.t_end - self.t_start

    @classmethod
    def from_telemetry(cls, msg: LinkTelemetry) -> IntervalObservation:
        """Build the observation of one :class:`~qkdtwin.interfaces.LinkTelemetry` message."""
        mon = msg.detector_monitor
        return cls(
            t_start=msg.interval_start,
            t_end=msg.interval_end,
            intensities=tuple(c.intensity for c in msg.intensities),
            sent=tuple(c.sent for c in msg.intensities),
            detected=tuple(c.detected for c in msg.intensities),
            sifted=tuple(c.sifted for c in msg.intensities),
            errors=tuple(c.errors for c in msg.intensities),
            photocurrent_ua=None if mon is None else mon.photocurrent_ua,
            monitor_samples=None if mon is None else mon.samples,
        )

    @classmethod
    def combine(cls, observations: Iterable[IntervalObservation]) -> IntervalObservation:
        """Sum the counts of intervals with the same intensities (sufficient if θ is constant).

        The result spans the earliest start to the latest end, its ``live_s`` is the sum of
        the intervals' live times, and its photocurrent is the sample-weighted mean of the
        intervals that have one.

        Raises
        ------
        ConfigError
            If there is no observation or the intensities differ.
        """
        obs = list(observations)
        if not obs:
            raise ConfigError("nothing to combine", field="observations", value=[])
        mus = obs[0].intensities
        if any(o.intensities != mus for o in obs):
            raise ConfigError(
                "only intervals with the same intensities can be summed",
                field="intensities",
                value=sorted({o.intensities for o in obs}),
            )
        tot = {
            n: tuple(int(x) for x in np.sum([getattr(o, n) for o in obs], axis=0))
            for n in ("sent", "detected", "sifted", "errors")
        }
        mon = [o for o in obs if o.photocurrent_ua is not None]
        current: float | None = None
        samples: int | None = None
        if mon:
            w = np.array([o.monitor_samples for o in mon], dtype=np.float64)
            x = np.array([o.photocurrent_ua for o in mon], dtype=np.float64)
            current, samples = float(np.dot(w, x) / w.sum()), int(w.sum())
        return cls(
            t_start=min(o.t_start for o in obs),
            t_end=max(o.t_end for o in obs),
            intensities=mus,
            photocurrent_ua=current,
            monitor_samples=samples,
            live_s=float(sum(o.live_s or 0.0 for o in obs)),
            **tot,
        )


# --------------------------------------------------------------------------- the model
def model_probabilities(
    eta: ArrayLike, dark_count_prob: ArrayLike, misalignment: ArrayLike, intensities: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    r"""Click probability :math:`P_k` and sifted error probability :math:`e_k` of each class.

    Parameters
    ----------
    eta
        Overall transmittance (channel times detector efficiency), in [0, 1].
    dark_count_prob
        Dark-count probability per gate of one detector, in [0, 1).
    misalignment
        :math:`e_d`, in [0, 1/2].
    intensities
        Mean photon numbers :math:`\mu_k`; broadcast against the parameters (put the class
        axis last, e.g. ``eta[..., None]``).

    Returns
    -------
    tuple of ndarray
        ``(p_click, p_err)``: :math:`P_k = 1-(1-p_d)^2 e^{-\eta\mu_k}` and
        :math:`e_k = P_w(1-P_c/2)/P_k` (1/2 for the vacuum; 1/2 where :math:`P_k = 0`).

    Examples
    --------
    >>> p, e = model_probabilities(0.045 * 10 ** (-0.63), 8.5e-7, 0.033, [0.48, 0.1, 0.0])
    >>> [round(float(x), 6) for x in p], round(float(e[0]), 5), float(e[2])
    ([0.005052, 0.001056, 2e-06], 0.03316, 0.5)

    Notes
    -----
    Computed with ``expm1``/``log1p``, accurate for :math:`P_k` down to ~1e-300.
    """
    eta_a = np.asarray(eta, dtype=np.float64)
    pd = np.asarray(dark_count_prob, dtype=np.float64)
    ed = np.asarray(misalignment, dtype=np.float64)
    mu = np.asarray(intensities, dtype=np.float64)
    x = eta_a * mu
    lq = np.log1p(-pd)
    p = -np.expm1(2.0 * lq - x)
    pc = -np.expm1(lq - x * (1.0 - ed))
    pw = -np.expm1(lq - x * ed)
    num = pw * (1.0 - 0.5 * pc)
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(p > 0.0, num / np.where(p > 0.0, p, 1.0), 0.5)
    return np.asarray(p, dtype=np.float64), np.asarray(e, dtype=np.float64)


def log_likelihood(
    eta: ArrayLike,
    dark_count_prob: ArrayLike,
    misalignment: ArrayLike,
    obs: IntervalObservation,
) -> FloatArray:
    r"""Log-likelihood of the counts of ``obs`` (up to a constant), broadcast over parameters.

    Parameters
    ----------
    eta, dark_count_prob, misalignment
        Parameter values (arrays of any common shape).
    obs
        The counts (one interval or a :meth:`IntervalObservation.combine` sum).

    Returns
    -------
    ndarray
        :math:`\sum_k D_k\log P_k + (N_k-D_k)\log(1-P_k) + E_k\log e_k +
        (S_k-E_k)\log(1-e_k)`, shaped like the broadcast parameters; the binomial
        coefficients and the sifting term (which does not depend on θ) are dropped.
    """
    mu = np.asarray(obs.intensities, dtype=np.float64)
    n, d, s, e = (np.asarray(getattr(obs, k), dtype=np.float64) for k in _COUNT_FIELDS)
    eta_a = np.asarray(eta, dtype=np.float64)[..., None]
    pd = np.asarray(dark_count_prob, dtype=np.float64)[..., None]
    ed = np.asarray(misalignment, dtype=np.float64)[..., None]
    p, q = model_probabilities(eta_a, pd, ed, mu)
    ll = xlogy(d, p) + xlog1py(n - d, -p) + xlogy(e, q) + xlog1py(s - e, -q)
    return np.asarray(np.sum(ll, axis=-1), dtype=np.float64)


_COUNT_FIELDS = ("sent", "detected", "sifted", "errors")


def loss_db_from_transmittance(eta: ArrayLike, declared_detector_efficiency: float) -> FloatArray:
    r"""Channel loss :math:`-10\log_{10}(\eta/\eta_{det})`, dB (``inf`` where ``eta == 0``)."""
    with np.errstate(divide="ignore"):
        return np.asarray(
            -DB_PER_NEPER
            * (np.log(np.asarray(eta, dtype=np.float64)) - math.log(declared_detector_efficiency)),
            dtype=np.float64,
        )


# --------------------------------------------------------------------------- results
Interval = tuple[float, float]


class LinkEstimate(BaseModel):
    r"""A link's estimated state over one window, with confidence intervals.

    Attributes
    ----------
    t, t_start
        End and start of the window, s (end of its last interval, start of its first).
    window_s
        Nominal window length, s.
    intervals
        Number of intervals summed.
    intensities
        Mean photon numbers of the classes.
    eta, eta_ci
        Overall transmittance (channel times detector efficiency) and its interval.
    dark_count_prob, dark_count_prob_ci
        Dark-count probability per detector per gate and its interval (a zero-width interval
        when it was fixed).
    misalignment, misalignment_ci
        :math:`e_d` and its interval.
    loss_db, loss_db_ci, loss_db_se
        Channel loss :math:`-10\log_{10}(\eta/\eta_{det})` with the declared detector
        efficiency, dB; its interval and standard error.
    qber, qber_ci
        Fitted sifted error probability of the signal class and its delta-method interval.
    qber_observed
        Raw signal-class QBER ``errors / sifted`` of the window (``None`` without sifted bits).
    key_rate_bps, key_rate_per_pulse
        Asymptotic vacuum + weak decoy GLLP rate from the window's counts: bit/s, and bits per
        signal pulse (0.0 without a weak decoy or a positive rate).
    converged
        ``False`` when the fit did not converge, a parameter sits at a bound, the information
        is singular, or the counts do not identify the parameters (``message`` says which).
    message
        Empty, or why ``converged`` is ``False`` / what was fixed.
    confidence
        Confidence level of the intervals.
    declared_detector_efficiency
        The efficiency used to turn :math:`\eta` into a channel loss.
    click_prob, error_prob
        Fitted :math:`P_k` and :math:`e_k` per class.
    sent, detected, sifted, errors
        The window's summed counts per class.
    sent_per_interval
        Mean pulses sent per interval per class.
    covariance
        Inverse observed information in :math:`u = (\log\eta, \log p_d,
        \operatorname{logit} 2e_d)` (rows and columns of fixed parameters are 0).
    log_likelihood, iterations, fit_ms
        Maximised log-likelihood, optimiser iterations, wall-clock time of the fit (ms).
    photocurrent_ua, photocurrent_sigma_ua, monitor_intervals, monitor_samples_per_interval
        Detector monitor over the window: sample-weighted mean photocurrent :math:`\hat I_0`,
        per-sample standard deviation :math:`\hat\sigma` (from the spread of the interval
        means, :math:`\hat\sigma^2 = \sum_i n_i (I_i-\hat I_0)^2/(m-1)`), number of
        intervals with a reading and their mean sample count; ``None`` without readings.
    """

    model_config = ConfigDict(frozen=True)

    t: float
    t_start: float
    window_s: float
    intervals: int
    intensities: tuple[float, ...]
    eta: float
    eta_ci: Interval
    dark_count_prob: float
    dark_count_prob_ci: Interval
    misalignment: float
    misalignment_ci: Interval
    loss_db: float
    loss_db_ci: Interval
    loss_db_se: float
    qber: float
    qber_ci: Interval
    qber_observed: float | None
    key_rate_bps: float
    key_rate_per_pulse: float
    converged: bool
    message: str = ""
    confidence: float
    declared_detector_efficiency: float
    click_prob: tuple[float, ...]
    error_prob: tuple[float, ...]
    sent: tuple[int, ...]
    detected: tuple[int, ...]
    sifted: tuple[int, ...]
    errors: tuple[int, ...]
    sent_per_interval: tuple[float, ...]
    covariance: tuple[tuple[float, float, float], ...]
    log_likelihood: float
    iterations: int
    fit_ms: float
    photocurrent_ua: float | None = None
    photocurrent_sigma_ua: float | None = None
    monitor_intervals: int = 0
    monitor_samples_per_interval: float | None = None


# --------------------------------------------------------------------------- fit internals
@dataclass
class _Problem:
    """Summed counts as float arrays (classes with no pulses removed) and what is fixed."""

    mu: FloatArray
    n: FloatArray
    d: FloatArray
    s: FloatArray
    e: FloatArray
    free: NDArray[np.bool_]
    fixed: FloatArray  # theta value of each fixed parameter (eta, pd, ed)
    #: (mu, n, d, s, e) of each class as Python floats, for :func:`_evaluate`'s scalar path
    rows: list[tuple[float, float, float, float, float]] = field(init=False, repr=False)
    free_flags: tuple[bool, bool, bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = list(
            zip(
                self.mu.tolist(),
                self.n.tolist(),
                self.d.tolist(),
                self.s.tolist(),
                self.e.tolist(),
                strict=True,
            )
        )
        self.free_flags = (bool(self.free[0]), bool(self.free[1]), bool(self.free[2]))

    def theta(self, u: FloatArray) -> tuple[float, float, float]:
        eta = math.exp(u[0]) if self.free[0] else float(self.fixed[0])
        pd = math.exp(u[1]) if self.free[1] else float(self.fixed[1])
        ed = 0.5 / (1.0 + math.exp(-u[2])) if self.free[2] else float(self.fixed[2])
        return eta, pd, ed


def _evaluate(
    prob: _Problem, u: FloatArray, grad: bool = True
) -> tuple[float, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Log-likelihood, score and expected information in ``u`` (free parameters), and P, e.

    Returns ``(ll, score[3], info[3, 3], P, e)``; rows/columns of fixed parameters are zero.

    A fit has 2-4 intensity classes, and NumPy's per-call overhead on arrays of three was
    most of a fit's ~2 ms (an attached twin of 1,000 links fits ~150 windows a second). So
    the same arithmetic runs on Python floats, class by class (:func:`_evaluate_scalar`);
    where a probability is 0 or 1 (an empty class, a parameter fixed at 0), where NumPy's
    inf/nan arithmetic decides the result, the array form (:func:`_evaluate_arrays`) runs
    instead. The two agree to rounding (``math.exp`` and NumPy's ``exp`` may differ in the
    last bit); tests compare them.
    """
    out = _evaluate_scalar(prob, u, grad)
    return out if out is not None else _evaluate_arrays(prob, u, grad)


def _evaluate_scalar(
    prob: _Problem, u: FloatArray, grad: bool
) -> tuple[float, FloatArray, FloatArray, FloatArray, FloatArray] | None:
    """:func:`_evaluate_arrays` on Python floats; ``None`` where a probability is 0 or 1."""
    eta, pd, ed = prob.theta(u)
    lq = math.log1p(-pd)
    inv_q = 1.0 / (1.0 - pd)
    f0, f1, f2 = prob.free_flags
    j0 = eta if f0 else 0.0
    j1 = pd if f1 else 0.0
    j2 = ed * (1.0 - 2.0 * ed) if f2 else 0.0
    ll = 0.0
    g0 = g1 = g2 = 0.0
    i00 = i01 = i02 = i11 = i12 = i22 = 0.0
    ps: list[float] = []
    es: list[float] = []
    exp, expm1, log, log1p = math.exp, math.expm1, math.log, math.log1p
    for mu, n, d, s, er in prob.rows:
        x = eta * mu
        p = -expm1(2.0 * lq - x)
        cc = exp(lq - x * (1.0 - ed))
        pc = 1.0 - cc
        pw = -expm1(lq - x * ed)
        num = pw * (1.0 - 0.5 * pc)
        if not (0.0 < p < 1.0):
            return None
        e = num / p
        if not (0.0 < e < 1.0):
            return None
        ll += (
            (d * log(p) if d else 0.0)
            + ((n - d) * log1p(-p) if n - d else 0.0)
            + (er * log(e) if er else 0.0)
            + ((s - er) * log1p(-e) if s - er else 0.0)
        )
        ps.append(p)
        es.append(e)
        if not grad:
            continue
        nc = exp(2.0 * lq - x)
        cw = exp(lq - x * ed)
        # d/d(eta, pd, ed) of P, Pc, Pw (the array form's dp, dpc, dpw rows)
        dp0, dp1, dp2 = nc * mu, 2.0 * nc * inv_q, 0.0
        dc0, dc1, dc2 = cc * mu * (1.0 - ed), cc * inv_q, -cc * x
        dw0, dw1, dw2 = cw * mu * ed, cw * inv_q, cw * x
        h = 1.0 - 0.5 * pc
        de0 = ((dw0 * h - 0.5 * pw * dc0) - e * dp0) / p * j0
        de1 = ((dw1 * h - 0.5 * pw * dc1) - e * dp1) / p * j1
        de2 = ((dw2 * h - 0.5 * pw * dc2) - e * dp2) / p * j2
        dp0, dp1, dp2 = dp0 * j0, dp1 * j1, dp2 * j2
        vp = p * (1.0 - p)
        ve = e * (1.0 - e)
        rp = (d - n * p) / vp
        re = (er - s * e) / ve
        g0 += dp0 * rp + de0 * re
        g1 += dp1 * rp + de1 * re
        g2 += dp2 * rp + de2 * re
        wp = n / vp
        we = s / ve
        i00 += dp0 * wp * dp0 + de0 * we * de0
        i01 += dp0 * wp * dp1 + de0 * we * de1
        i02 += dp0 * wp * dp2 + de0 * we * de2
        i11 += dp1 * wp * dp1 + de1 * we * de1
        i12 += dp1 * wp * dp2 + de1 * we * de2
        i22 += dp2 * wp * dp2 + de2 * we * de2
    if not grad:
        return ll, np.zeros(3), np.zeros((3, 3)), np.array(ps), np.array(es)
    score = np.array([g0, g1, g2])
    info = np.array([[i00, i01, i02], [i01, i11, i12], [i02, i12, i22]])
    return ll, score, info, np.array(ps), np.array(es)


def _evaluate_arrays(
    prob: _Problem, u: FloatArray, grad: bool = True
) -> tuple[float, FloatArray, FloatArray, FloatArray, FloatArray]:
    """:func:`_evaluate` with NumPy arrays over the classes (the reference form)."""
    eta, pd, ed = prob.theta(u)
    mu = prob.mu
    x = eta * mu
    lq = math.log1p(-pd)
    nc = np.exp(2.0 * lq - x)
    p = -np.expm1(2.0 * lq - x)
    cc = np.exp(lq - x * (1.0 - ed))
    cw = np.exp(lq - x * ed)
    pc = 1.0 - cc
    pw = -np.expm1(lq - x * ed)
    num = pw * (1.0 - 0.5 * pc)
    e = num / p
    n, d, s, er = prob.n, prob.d, prob.s, prob.e
    ll = float(np.sum(xlogy(d, p) + xlog1py(n - d, -p) + xlogy(er, e) + xlog1py(s - er, -e)))
    if not grad:
        z = np.zeros(3)
        return ll, z, np.zeros((3, 3)), p, e
    inv_q = 1.0 / (1.0 - pd)
    dp = np.stack([nc * mu, 2.0 * nc * inv_q, np.zeros_like(mu)], axis=1)
    dpc = np.stack([cc * mu * (1.0 - ed), cc * inv_q, -cc * x], axis=1)
    dpw = np.stack([cw * mu * ed, cw * inv_q, cw * x], axis=1)
    dnum = dpw * (1.0 - 0.5 * pc)[:, None] - 0.5 * pw[:, None] * dpc
    de = (dnum - e[:, None] * dp) / p[:, None]
    jac = np.array([eta, pd, ed * (1.0 - 2.0 * ed)]) * prob.free
    dp = dp * jac
    de = de * jac
    vp = p * (1.0 - p)
    ve = e * (1.0 - e)
    score = dp.T @ ((d - n * p) / vp) + de.T @ ((er - s * e) / ve)
    info = (dp * (n / vp)[:, None]).T @ dp + (de * (s / ve)[:, None]).T @ de
    return ll, score, info, p, e


def _initial(prob: _Problem) -> FloatArray:
    """Closed-form start: vacuum gain -> pd, signal gain -> eta, signal QBER -> ed."""
    mu, n, d, s, e = prob.mu, prob.n, prob.d, prob.s, prob.e
    vac = mu == 0.0
    if prob.free[1]:
        if np.any(vac) and n[vac].sum() > 0:
            y0 = (d[vac].sum() + 0.5) / (n[vac].sum() + 1.0)
        else:
            y0 = 2e-6
        pd = 1.0 - math.sqrt(1.0 - min(y0, 0.5))
    else:
        pd = float(prob.fixed[1])
    pos = np.flatnonzero(~vac)
    k = pos[np.argmax(d[pos])] if pos.size else 0
    pk = min(max(d[k] / max(n[k], 1.0), 1e-15), 1.0 - 1e-12)
    lq = math.log1p(-pd)
    eta = -(math.log1p(-pk) - 2.0 * lq) / max(mu[k], 1e-12)
    eta = min(max(eta, 1e-12), 0.99) if prob.free[0] else float(prob.fixed[0])
    if prob.free[2]:
        xk = eta * mu[k]
        qk = (e[k] + 0.5) / (s[k] + 1.0)
        a = math.exp(-xk)
        y0 = -math.expm1(2.0 * lq)
        ed = (qk * pk - 0.5 * y0 * a) / max(-math.expm1(-xk), 1e-300)
        ed = min(max(ed, 1e-4), 0.45)
    else:
        ed = 0.01
    return np.array([math.log(eta), math.log(max(pd, 1e-15)), math.log(2 * ed / (1 - 2 * ed))])


def _observed_info(prob: _Problem, u: FloatArray) -> FloatArray:
    """Observed information: central differences of the analytic score, symmetrised."""
    idx = np.flatnonzero(prob.free)
    hess = np.zeros((3, 3))
    for j in idx:
        step = np.zeros(3)
        step[j] = _HESS_STEP
        gp = _evaluate(prob, u + step)[1]
        gm = _evaluate(prob, u - step)[1]
        hess[:, j] = (gp - gm) / (2.0 * _HESS_STEP)
    return np.asarray(-0.5 * (hess + hess.T), dtype=np.float64)


def _solve_free(mat: FloatArray, vec: FloatArray, free: NDArray[np.bool_]) -> FloatArray:
    out = np.zeros(3)
    idx = np.flatnonzero(free)
    out[idx] = np.linalg.solve(mat[np.ix_(idx, idx)], vec[idx])
    return out


def _maximise(prob: _Problem, u0: FloatArray) -> tuple[FloatArray, float, int, bool]:
    """Fisher scoring with damping and step halving; L-BFGS-B fallback. (u, ll, iters, ok)."""
    u = np.clip(u0, _U_LO, _U_HI)
    ll, g, info, _, _ = _evaluate(prob, u)
    lam = 0.0
    for it in range(1, _MAX_ITER + 1):
        diag = np.diag(np.diag(info))
        try:
            step = _solve_free(info + lam * diag, g, prob.free)
        except np.linalg.LinAlgError:
            lam = max(1e-3, 10.0 * lam)
            continue
        decrement = float(g @ step)
        if decrement < 1e-10:
            return u, ll, it, True
        big = float(np.max(np.abs(step)))
        if big > 2.0:
            step *= 2.0 / big
        t = 1.0
        while t > 1e-10:
            un = np.clip(u + t * step, _U_LO, _U_HI)
            lln = _evaluate(prob, un, grad=False)[0]
            if np.isfinite(lln) and lln >= ll - 1e-12 * abs(ll):
                break
            t *= 0.5
        else:
            break
        u = un
        ll, g, info, _, _ = _evaluate(prob, u)
        lam = lam / 10.0 if t == 1.0 else max(1e-6, 10.0 * lam)
    # fallback: quasi-Newton on the free parameters within the bounds
    idx = np.flatnonzero(prob.free)

    def nll(z: FloatArray) -> tuple[float, FloatArray]:
        full = u.copy()
        full[idx] = z
        val, grad, _, _, _ = _evaluate(prob, full)
        return -val, -grad[idx]

    res = optimize.minimize(
        nll,
        u[idx],
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(_U_LO[idx], _U_HI[idx], strict=True)),
        options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-8},
    )
    u = u.copy()
    u[idx] = res.x
    return u, -float(res.fun), _MAX_ITER + int(res.nit), bool(res.success)


def _key_rate(
    mu: tuple[float, ...],
    n: FloatArray,
    d: FloatArray,
    s: FloatArray,
    e: FloatArray,
    y0_fit: float,
    f: float,
    live_s: float,
) -> tuple[float, float]:
    """(bits per signal pulse, bit/s) of the vacuum + weak decoy GLLP rate from the counts."""
    mu_s = mu[0]
    weak = [k for k in range(1, len(mu)) if 0.0 < mu[k] < mu_s and n[k] > 0 and s[k] > 0]
    if mu_s <= 0.0 or not weak or n[0] <= 0 or s[0] <= 0 or live_s <= 0.0:
        return 0.0, 0.0
    kd = min(weak, key=lambda k: mu[k])
    vac = [k for k in range(len(mu)) if mu[k] == 0.0 and n[k] > 0]
    y0 = float(d[vac].sum() / n[vac].sum()) if vac else y0_fit
    q_mu = float(d[0] / n[0])
    e_mu = min(float(e[0] / s[0]), 0.5)
    q_nu = float(d[kd] / n[kd])
    e_nu = min(float(e[kd] / s[kd]), 0.5)
    y1, e1 = vacuum_weak_decoy_bounds(mu_s, mu[kd], q_mu, q_nu, e_nu, min(y0, 1.0))
    if y1 <= 0.0:
        return 0.0, 0.0
    q1 = y1 * mu_s * math.exp(-mu_s)
    rate = float(gllp_rate(q_mu, e_mu, min(q1, 1.0), e1, f))
    return rate, rate * float(n[0]) / live_s


def _wald(center: float, se: float, z: float) -> Interval:
    if not math.isfinite(se):
        return (-math.inf, math.inf)
    return (center - z * se, center + z * se)


def _fit(
    obs: IntervalObservation,
    eta_det: float,
    confidence: float,
    *,
    ec_efficiency: float,
    dark_count_prob: float | None,
    start: FloatArray | None,
    window_s: float,
    intervals: int,
    monitor: tuple[float | None, float | None, int, float | None] = (None, None, 0, None),
) -> tuple[LinkEstimate, FloatArray | None]:
    tic = time.perf_counter()
    z = float(ndtri(0.5 + 0.5 * confidence))
    mus = obs.intensities
    n_all = np.asarray(obs.sent, dtype=np.float64)
    d_all = np.asarray(obs.detected, dtype=np.float64)
    s_all = np.asarray(obs.sifted, dtype=np.float64)
    e_all = np.asarray(obs.errors, dtype=np.float64)
    mu_all = np.asarray(mus, dtype=np.float64)
    keep = n_all > 0
    vac = keep & (mu_all == 0.0)
    pos = keep & (mu_all > 0.0)
    n_pos_levels = len({m for m, k in zip(mus, pos, strict=True) if k})
    notes: list[str] = []
    identified = True
    free = np.array([True, True, True])
    fixed = np.array([np.nan, np.nan, np.nan])
    if dark_count_prob is not None:
        free[1] = False
        fixed[1] = dark_count_prob
        notes.append("dark-count probability fixed")
    elif not np.any(vac) and n_pos_levels < 2:
        free[1] = False
        fixed[1] = 0.0
        identified = False
        notes.append("no vacuum class and one intensity: dark counts unidentifiable, fixed at 0")
    if s_all[pos].sum() == 0:
        free[2] = False
        fixed[2] = 0.0
        identified = False
        notes.append("no sifted bits: misalignment unidentifiable")
    per_int = tuple(float(x) / max(intervals, 1) for x in n_all)
    base = {
        "t": obs.t_end,
        "t_start": obs.t_start,
        "window_s": window_s,
        "intervals": intervals,
        "intensities": mus,
        "confidence": confidence,
        "declared_detector_efficiency": eta_det,
        "sent": obs.sent,
        "detected": obs.detected,
        "sifted": obs.sifted,
        "errors": obs.errors,
        "sent_per_interval": per_int,
        "photocurrent_ua": monitor[0],
        "photocurrent_sigma_ua": monitor[1],
        "monitor_intervals": monitor[2],
        "monitor_samples_per_interval": monitor[3],
        "qber_observed": float(e_all[0] / s_all[0]) if s_all[0] > 0 else None,
    }
    nan = math.nan
    if not np.any(pos) or d_all[pos].sum() == 0:
        # no clicks from light: eta's MLE is 0; one-sided upper bound from zero clicks
        exposure = float(np.dot(n_all[pos], mu_all[pos]))
        eta_up = -math.log(1.0 - confidence) / exposure if exposure > 0 else 1.0
        y0 = float(d_all[vac].sum() / n_all[vac].sum()) if np.any(vac) else nan
        pd = 1.0 - math.sqrt(1.0 - y0) if math.isfinite(y0) else nan
        loss_lo = float(loss_db_from_transmittance(min(eta_up, 1.0), eta_det))
        est = LinkEstimate(
            **base,
            eta=0.0,
            eta_ci=(0.0, min(eta_up, 1.0)),
            dark_count_prob=pd,
            dark_count_prob_ci=(nan, nan),
            misalignment=nan,
            misalignment_ci=(0.0, 0.5),
            loss_db=math.inf,
            loss_db_ci=(loss_lo, math.inf),
            loss_db_se=math.inf,
            qber=nan,
            qber_ci=(0.0, 1.0),
            key_rate_bps=0.0,
            key_rate_per_pulse=0.0,
            converged=False,
            message="no clicks from the light classes: transmittance not identified",
            click_prob=tuple(nan for _ in mus),
            error_prob=tuple(nan for _ in mus),
            covariance=((nan, nan, nan),) * 3,
            log_likelihood=nan,
            iterations=0,
            fit_ms=1e3 * (time.perf_counter() - tic),
        )
        return est, None

    prob = _Problem(mu_all[keep], n_all[keep], d_all[keep], s_all[keep], e_all[keep], free, fixed)
    u0 = _initial(prob)
    if start is not None and np.all(np.isfinite(start)):
        ws = np.where(free, start, u0)
        if _evaluate(prob, ws, grad=False)[0] >= _evaluate(prob, u0, grad=False)[0]:
            u0 = ws
    u, ll, iters, ok = _maximise(prob, u0)
    bound = free & ((u <= _U_LO + 1e-6) | (u >= _U_HI - 1e-6))
    at_bound = bool(np.any(bound))
    if at_bound:
        notes.append("a parameter is at its bound (its interval is degenerate)")
    idx = np.flatnonzero(free & ~bound)
    obs_info = _observed_info(prob, u)
    cov = np.zeros((3, 3))
    sub = obs_info[np.ix_(idx, idx)]
    try:
        if idx.size == 0:
            raise np.linalg.LinAlgError
        eig = np.linalg.eigvalsh(sub)
        if not np.all(eig > 1e-12 * max(float(np.max(np.abs(eig))), 1e-300)):
            raise np.linalg.LinAlgError
        cov[np.ix_(idx, idx)] = np.linalg.inv(sub)
        info_ok = True
    except np.linalg.LinAlgError:
        cov[np.ix_(idx, idx)] = np.inf
        info_ok = False
        notes.append("observed information singular")
    if not ok:
        notes.append("optimiser did not converge")
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    eta, pd, ed = prob.theta(u)
    ci_u = [(u[j] - z * se[j], u[j] + z * se[j]) for j in range(3)]
    eta_ci = (math.exp(ci_u[0][0]), min(math.exp(min(ci_u[0][1], 700.0)), 1.0))
    if free[1]:
        pd_ci = (math.exp(ci_u[1][0]), min(math.exp(min(ci_u[1][1], 700.0)), 0.5))
    else:
        pd_ci = (pd, pd)
    if free[2]:
        ed_ci = tuple(0.5 * float(expit(c)) for c in ci_u[2])
    else:
        ed_ci = (ed, ed) if identified else (0.0, 0.5)
    loss = float(loss_db_from_transmittance(eta, eta_det))
    loss_se = DB_PER_NEPER * float(se[0])
    # signal QBER: model value, delta method on the logit scale
    p_all, e_model = model_probabilities(eta, pd, ed, mu_all)
    q_sig = float(e_model[0])
    sig = np.zeros(3)  # d e_signal / d u by central differences
    for j in idx:
        st = np.zeros(3)
        st[j] = _HESS_STEP
        ep = model_probabilities(*prob.theta(u + st), mus[0])[1]
        em = model_probabilities(*prob.theta(u - st), mus[0])[1]
        sig[j] = float(ep - em) / (2.0 * _HESS_STEP)
    q_se = math.sqrt(max(float(sig @ cov @ sig), 0.0)) if info_ok else math.inf
    if 0.0 < q_sig < 1.0 and math.isfinite(q_se):
        lg = math.log(q_sig / (1.0 - q_sig))
        w = z * q_se / (q_sig * (1.0 - q_sig))
        qber_ci = (float(expit(lg - w)), float(expit(lg + w)))
    else:
        qber_ci = (0.0, 1.0)
    y0_fit = -math.expm1(2.0 * math.log1p(-pd))
    rate, rate_bps = _key_rate(
        mus, n_all, d_all, s_all, e_all, y0_fit, ec_efficiency, float(obs.live_s or 0.0)
    )
    converged = ok and info_ok and not at_bound and identified
    est = LinkEstimate(
        **base,
        eta=eta,
        eta_ci=eta_ci,
        dark_count_prob=pd,
        dark_count_prob_ci=pd_ci,
        misalignment=ed,
        misalignment_ci=(float(ed_ci[0]), float(ed_ci[1])),
        loss_db=loss,
        loss_db_ci=_wald(loss, loss_se, z),
        loss_db_se=loss_se,
        qber=q_sig,
        qber_ci=qber_ci,
        key_rate_bps=rate_bps,
        key_rate_per_pulse=rate,
        converged=converged,
        message="; ".join(notes),
        click_prob=tuple(float(x) for x in p_all),
        error_prob=tuple(float(x) for x in e_model),
        covariance=tuple((float(r[0]), float(r[1]), float(r[2])) for r in cov),
        log_likelihood=ll,
        iterations=iters,
        fit_ms=1e3 * (time.perf_counter() - tic),
    )
    return est, u


def _check_common(
    declared_detector_efficiency: float, confidence: float, ec_efficiency: float
) -> tuple[float, float, float]:
    eta_det = v.in_range(
        "declared_detector_efficiency", declared_detector_efficiency, 0.0, 1.0, low_open=True
    )
    conf = v.in_range("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    f = v.in_range("ec_efficiency", ec_efficiency, 1.0)
    return eta_det, conf, f


def fit_link(
    obs: IntervalObservation | Sequence[IntervalObservation],
    declared_detector_efficiency: float,
    confidence: float = 0.95,
    *,
    ec_efficiency: float = 1.22,
    dark_count_prob: float | None = None,
    start: LinkEstimate | None = None,
) -> LinkEstimate:
    r"""Maximum-likelihood estimate of :math:`(\eta, p_d, e_d)` from summed counts.

    Parameters
    ----------
    obs
        One observation or a sequence of observations with the same intensities, which are
        summed. Pass the sequence (not a :meth:`IntervalObservation.combine` sum) when the
        estimate will serve as a detector reference: the per-interval pulse numbers of the
        estimate (``sent_per_interval``) come from the number of intervals, and a combined sum
        counts as one interval.
    declared_detector_efficiency
        Bob's detector efficiency from the operator's attach file, (0, 1]; converts
        :math:`\eta` into a channel loss (the counts identify only the product).
    confidence
        Level of the confidence intervals, (0, 1).
    ec_efficiency
        Error-correction inefficiency :math:`f \ge 1` of the key-rate formula.
    dark_count_prob
        Fix :math:`p_d` at this value instead of fitting it (without a vacuum class).
    start
        A previous estimate to warm-start from (used when its likelihood is higher than the
        closed-form start's).

    Returns
    -------
    LinkEstimate
        Estimates, intervals and key rate; ``converged=False`` (never an exception) for
        counts that do not identify the parameters.

    Raises
    ------
    ConfigError
        For an argument out of range or observations that cannot be summed.

    Examples
    --------
    60 s of a GYS link at 30 km (6.3 dB of fibre; counts of the expected sizes):

    >>> o = IntervalObservation(0.0, 60.0, (0.48, 0.1, 0.0), (96_000_000, 12_000_000,
    ...     12_000_000), (485_000, 12_670, 20), (242_500, 6_330, 10), (8_040, 214, 5))
    >>> est = fit_link(o, 0.045)
    >>> round(est.loss_db, 3), [round(x, 3) for x in est.loss_db_ci], est.converged
    (6.3, [6.288, 6.312], True)

    Notes
    -----
    See the module docstring for the model, the optimiser and the intervals. Degenerate
    counts: no clicks from the light classes gives ``eta = 0`` with a one-sided upper bound
    :math:`-\ln(1-c)/\sum_k N_k\mu_k`; no vacuum class fits :math:`p_d` from the curvature
    in :math:`\mu` (wide interval) unless it is fixed; no sifted bits leaves :math:`e_d`
    unidentified.
    """
    eta_det, conf, f = _check_common(declared_detector_efficiency, confidence, ec_efficiency)
    if dark_count_prob is not None:
        dark_count_prob = v.in_range("dark_count_prob", dark_count_prob, 0.0, 0.5)
    if isinstance(obs, IntervalObservation):
        total, count = obs, 1
    else:
        seq = list(obs)
        total, count = IntervalObservation.combine(seq), len(seq)
    u0 = None
    if start is not None and start.converged:
        u0 = np.array(
            [
                math.log(max(start.eta, 1e-15)),
                math.log(max(start.dark_count_prob, 1e-15)),
                math.log(max(start.misalignment, 1e-12) / max(0.5 - start.misalignment, 1e-12)),
            ]
        )
    est, _ = _fit(
        total,
        eta_det,
        conf,
        ec_efficiency=f,
        dark_count_prob=dark_count_prob,
        start=u0,
        window_s=total.duration_s,
        intervals=count,
        monitor=_monitor_stats(
            [(total.photocurrent_ua, total.monitor_samples)]
            if total.photocurrent_ua is not None
            else []
        ),
    )
    return est


def _monitor_stats(
    readings: Sequence[tuple[float | None, int | None]],
) -> tuple[float | None, float | None, int, float | None]:
    """(I0, per-sample sigma, intervals, mean samples) from (mean, samples) readings."""
    pairs = [(float(i), float(n)) for i, n in readings if i is not None and n is not None]
    if not pairs:
        return None, None, 0, None
    x = np.array([p[0] for p in pairs])
    w = np.array([p[1] for p in pairs])
    i0 = float(np.dot(w, x) / w.sum())
    sigma = float(math.sqrt(np.dot(w, (x - i0) ** 2) / (len(x) - 1))) if len(x) > 1 else None
    return i0, sigma, len(x), float(w.mean())


# --------------------------------------------------------------------------- tracking
class LinkEstimator:
    r"""Track a link's state over time with a sliding window of intervals.

    Parameters
    ----------
    declared_detector_efficiency
        Bob's detector efficiency from the attach file, (0, 1] (see :func:`fit_link`).
    window_s
        Length of the window, s (> 0): an interval belongs to the window while it starts no
        earlier than ``window_s`` before the end of the newest interval.
    confidence, ec_efficiency, dark_count_prob
        As in :func:`fit_link`.

    Notes
    -----
    **Why a sliding window and not a Kalman filter.** The window's summed counts are
    sufficient for a constant :math:`\theta`, so the window estimate is the exact MLE of the
    binomial model with intervals of known coverage, with no linearisation of a non-Gaussian
    observation model and no process noise to tune. An (extended) Kalman filter on, say, a
    random walk of :math:`\log\eta` would need that random walk's variance, which nothing
    measures, its gain would trade lag against noise by an assumption, and its memory is
    exponential: an attack's counts never fully leave it. The window has a hard memory
    (:math:`w` seconds), a lag of :math:`w/2` and a cost independent of its length (running
    sums, a warm-started fit of ~1 ms). Its price is a fixed bandwidth, which is what the
    state estimate needs (the change *detector*, :mod:`qkdtwin.twin.detect`, handles
    abrupt changes).

    **What a drifting loss does.** The truth a window estimates is the *mean* loss over the
    window. Pooling counts estimates the arithmetic mean of :math:`\eta` (the click
    probability is linear in :math:`\eta` to first order), so a linear ramp of the loss in dB
    is unbiased to first order; the second-order (Jensen) bias is
    :math:`-\frac{\ln 10}{20}\operatorname{Var}_w(L) = -\frac{\ln 10}{240}\Delta^2
    \approx -0.0096\,\Delta^2` dB for a ramp of total excursion :math:`\Delta` dB inside the
    window (−0.0096 dB for 1 dB within one window, −2.4e-4 dB for 0.16 dB). A daily
    sinusoid :math:`L_0 + A\sin(2\pi t/86400\,{\rm s})` changes by at most
    :math:`A\omega w = 4.4\times10^{-3} A` within a 60 s window: the Jensen bias is
    :math:`<2\times10^{-7} A^2` dB and the window mean differs from the loss at the window's
    centre by :math:`A(\omega w)^2/24 < 10^{-6} A`; relative to the loss at the window's
    *end* the estimate lags by at most :math:`A\omega w/2 = 2.2\times10^{-3} A` dB, below
    the 60 s statistical error (~0.006 dB for GYS at 30 km) for :math:`A \lesssim 3` dB.

    A change of intensities (a new source setting) restarts the window.
    """

    def __init__(
        self,
        declared_detector_efficiency: float,
        *,
        window_s: float = 60.0,
        confidence: float = 0.95,
        ec_efficiency: float = 1.22,
        dark_count_prob: float | None = None,
    ) -> None:
        self.declared_detector_efficiency, self.confidence, self.ec_efficiency = _check_common(
            declared_detector_efficiency, confidence, ec_efficiency
        )
        self.window_s = v.in_range("window_s", window_s, 0.0, None, low_open=True)
        self.dark_count_prob = (
            None
            if dark_count_prob is None
            else v.in_range("dark_count_prob", dark_count_prob, 0.0, 0.5)
        )
        self._buf: deque[IntervalObservation] = deque()
        self._sums: NDArray[np.int64] = np.zeros((4, 0), dtype=np.int64)
        self._u: FloatArray | None = None
        self._version = 0
        self._cache: dict[int, LinkEstimate] = {}
        self._cache_version = -1

    def reset(self) -> None:
        """Forget every interval (and the warm start)."""
        self._buf.clear()
        self._sums = np.zeros((4, 0), dtype=np.int64)
        self._u = None
        self._version += 1

    @property
    def intervals(self) -> int:
        """Number of intervals in the window."""
        return len(self._buf)

    @property
    def observations(self) -> tuple[IntervalObservation, ...]:
        """The window's intervals, oldest first."""
        return tuple(self._buf)

    @staticmethod
    def _vec(obs: IntervalObservation) -> NDArray[np.int64]:
        return np.array([obs.sent, obs.detected, obs.sifted, obs.errors], dtype=np.int64)

    def add(self, obs: IntervalObservation) -> None:
        """Add the newest interval and drop those that fell out of the window.

        Raises
        ------
        ConfigError
            If ``obs`` ends no later than the newest interval already in the window.
        """
        if self._buf and obs.intensities != self._buf[-1].intensities:
            self.reset()
        if self._buf and obs.t_end <= self._buf[-1].t_end:
            raise ConfigError(
                f"interval ending at {obs.t_end!r} is not newer than {self._buf[-1].t_end!r}",
                field="t_end",
                value=obs.t_end,
                allowed=f"> {self._buf[-1].t_end!r}",
            )
        vec = self._vec(obs)
        self._sums = vec.copy() if not self._buf else self._sums + vec
        self._buf.append(obs)
        horizon = obs.t_end - self.window_s - 1e-9 * max(1.0, abs(obs.t_end))
        while self._buf and self._buf[0].t_start < horizon:
            old = self._buf.popleft()
            self._sums -= self._vec(old)
        self._version += 1

    def estimate(self, *, exclude_last: int = 0) -> LinkEstimate:
        """Fit the window (without its newest ``exclude_last`` intervals).

        Parameters
        ----------
        exclude_last
            Number of newest intervals left out (>= 0), e.g. a guard against an attack that
            would otherwise pollute a reference.

        Returns
        -------
        LinkEstimate
            Cached until the next :meth:`add`; warm-started from the previous fit.

        Raises
        ------
        ConfigError
            If ``exclude_last`` is negative or leaves no interval.
        """
        if int(exclude_last) != exclude_last or exclude_last < 0:
            raise ConfigError(
                f"exclude_last must be an integer >= 0, got {exclude_last!r}",
                field="exclude_last",
                value=exclude_last,
                allowed=">= 0",
            )
        k = int(exclude_last)
        if len(self._buf) - k < 1:
            raise ConfigError(
                f"the window holds {len(self._buf)} intervals, none left after excluding {k}",
                field="exclude_last",
                value=exclude_last,
                allowed=f"< {len(self._buf)}",
            )
        if self._cache_version != self._version:
            self._cache.clear()
            self._cache_version = self._version
        if k in self._cache:
            return self._cache[k]
        sums = self._sums.copy()
        items = list(self._buf)
        kept = items[: len(items) - k]
        for o in items[len(items) - k :]:
            sums -= self._vec(o)
        first, last = kept[0], kept[-1]
        total = IntervalObservation(
            t_start=first.t_start,
            t_end=last.t_end,
            intensities=first.intensities,
            sent=tuple(int(x) for x in sums[0]),
            detected=tuple(int(x) for x in sums[1]),
            sifted=tuple(int(x) for x in sums[2]),
            errors=tuple(int(x) for x in sums[3]),
            live_s=float(sum(o.live_s or 0.0 for o in kept)),
        )
        est, u = _fit(
            total,
            self.declared_detector_efficiency,
            self.confidence,
            ec_efficiency=self.ec_efficiency,
            dark_count_prob=self.dark_count_prob,
            start=self._u,
            window_s=self.window_s,
            intervals=len(kept),
            monitor=_monitor_stats([(o.photocurrent_ua, o.monitor_samples) for o in kept]),
        )
        if u is not None and est.converged:
            self._u = u
        self._cache[k] = est
        return est
