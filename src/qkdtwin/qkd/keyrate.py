"""Analytic, asymptotic secret-key rates of the protocols qkdtwin simulates, and the PLOB bound.

Two layers live here:

* **formulas** — plain vectorised functions of the observables (gains, error rates) or of the
  channel parameters, each following one published analysis: the Lo-Ma-Chen channel model
  of weak coherent BB84 (:func:`wcp_gain`, :func:`wcp_qber`, :func:`photon_yield`,
  :func:`photon_error`), the GLLP rate with and without decoy states (:func:`gllp_rate`,
  :func:`gllp_no_decoy_rate`), the vacuum + weak decoy bounds of Ma-Qi-Zhao-Lo
  (:func:`vacuum_weak_decoy_bounds`), Shor-Preskill (:func:`shor_preskill_rate`), SARG04
  with single- and two-photon key (:func:`sarg04_expected`, :func:`sarg04_rate`), BBM92 with
  an SPDC source (:func:`bbm92_expected`, :func:`bbm92_rate`), Gaussian-modulated
  coherent-state CV-QKD (:func:`gg02_rate`) and the repeaterless bound (:func:`plob_bound`);
* **recipes** over a :class:`~qkdtwin.qkd.model.LinkModel` — :func:`analytic_key_rate`,
  :func:`max_distance` and :func:`optimal_mu` — which pick the right formula for a protocol
  name and feed it the link's parameters.

Units: rates are secret bits per pulse (per symbol for CV-QKD, per channel use for PLOB);
``rate_bps`` multiplies by the repetition rate. Every rate called a *rate* below is clipped
at zero. All results are asymptotic (infinitely long keys); the decoy-state rates are per
*signal* pulse, the asymptotic convention of Lo-Ma-Chen in which decoy pulses are a vanishing
fraction of the pulses sent.

Derivations, assumptions and the equations each function follows are collected in
``docs/_keyrate_notes.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from scipy.special import xlogy

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError, SimulationError
from qkdtwin.qkd.model import LinkModel
from qkdtwin.qkd.protocols import canonical_protocol
from qkdtwin.qkd.source import EntangledPairSource, SinglePhotonSource, WeakCoherentSource

__all__ = [
    "GG02_MIN_TRANSMITTANCE",
    "V_A_BOUNDS",
    "CvParameters",
    "KeyRate",
    "Sarg04Observables",
    "analytic_key_rate",
    "bbm92_expected",
    "bbm92_rate",
    "binary_entropy",
    "gg02_range_km",
    "gg02_rate",
    "gllp_no_decoy_rate",
    "gllp_rate",
    "max_distance",
    "optimal_mu",
    "optimal_v_a",
    "photon_error",
    "photon_yield",
    "plob_bound",
    "sarg04_expected",
    "sarg04_phase_error_bound",
    "sarg04_rate",
    "shor_preskill_rate",
    "vacuum_weak_decoy_bounds",
    "wcp_gain",
    "wcp_qber",
]

#: A float for scalar input, an array of float64 when any input is an array.
FloatOrArray = float | NDArray[np.float64]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- argument helpers
def _arr(
    field: str,
    value: ArrayLike,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> NDArray[np.float64]:
    """``value`` as a float64 array, every element finite and inside the interval, else raise."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{field} must be a number or an array of numbers, got {value!r}",
            field=field,
            value=value,
            allowed="real",
        ) from None
    if not np.all(np.isfinite(a)):
        raise ConfigError(
            f"{field} must be finite, got {value!r}", field=field, value=value, allowed="finite"
        )
    lo_bad = low is not None and bool(np.any(a <= low if low_open else a < low))
    hi_bad = high is not None and bool(np.any(a >= high if high_open else a > high))
    if lo_bad or hi_bad:
        if low is not None and high is not None:
            allowed = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"{'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"{'<' if high_open else '<='} {high:g}"
        raise ConfigError(
            f"{field} must be in {allowed}, got {value!r}",
            field=field,
            value=value,
            allowed=allowed,
        )
    return a


def _out(x: NDArray[np.float64], *inputs: ArrayLike) -> FloatOrArray:
    """Return a Python float when every input was a scalar, else the array."""
    if all(np.ndim(i) == 0 for i in inputs):
        return float(x)
    return np.asarray(x, dtype=np.float64)


def _miss_hit(
    n: NDArray[np.float64], eta: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(1 - eta)^n`` and ``1 - (1 - eta)^n``, the latter accurate for tiny ``eta``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        hit = np.where(n == 0, 0.0, -np.expm1(n * np.log1p(-eta)))
    return 1.0 - hit, np.asarray(hit, dtype=np.float64)


def _h2(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Binary entropy without argument checks (``xlogy`` makes ``0 log 0 = 0``)."""
    # "+ 0.0" turns the -0.0 of h2(0) and h2(1) into 0.0
    return np.asarray(-(xlogy(p, p) + xlogy(1.0 - p, 1.0 - p)) / _LN2 + 0.0, dtype=np.float64)


# --------------------------------------------------------------------------- entropy, bound
def binary_entropy(p: ArrayLike) -> FloatOrArray:
    r"""Binary Shannon entropy :math:`h_2(p)` in bits.

    Parameters
    ----------
    p
        Probability, or array of probabilities, in [0, 1].

    Returns
    -------
    float or ndarray
        :math:`h_2(p) = -p \log_2 p - (1-p) \log_2 (1-p)`, with :math:`h_2(0) = h_2(1) = 0`.

    Raises
    ------
    ConfigError
        If any ``p`` is outside [0, 1] or not finite.

    Examples
    --------
    >>> binary_entropy(0.5)
    1.0
    >>> binary_entropy(0.0)
    0.0
    >>> round(binary_entropy(0.11), 4)
    0.4999

    Notes
    -----
    Symmetric, :math:`h_2(p) = h_2(1 - p)`, concave, maximal (1 bit) at 1/2.
    """
    a = _arr("p", p, 0.0, 1.0)
    return _out(_h2(a), p)


def plob_bound(transmittance: ArrayLike) -> FloatOrArray:
    r"""Pirandola-Laurenza-Ottaviani-Banchi (PLOB) repeaterless bound, bits per channel use.

    Parameters
    ----------
    transmittance
        Channel transmittance :math:`\eta` in [0, 1] (fibre and insertion loss; the detector
        sits in Bob's trusted lab and is not part of the channel).

    Returns
    -------
    float or ndarray
        :math:`-\log_2(1-\eta)`; ``inf`` at :math:`\eta = 1` (a lossless channel has unbounded
        secret-key capacity).

    Raises
    ------
    ConfigError
        If the transmittance is outside [0, 1].

    Examples
    --------
    >>> plob_bound(0.5)
    1.0
    >>> round(plob_bound(0.01), 5)  # 100 km of 0.2 dB/km fibre
    0.0145

    Notes
    -----
    The secret-key capacity of the pure-loss bosonic channel,
    :math:`K(\eta) = -\log_2(1-\eta) \approx 1.44\,\eta` for :math:`\eta \ll 1`; no
    point-to-point protocol without a repeater can beat it. Computed with ``log1p`` so that it
    stays accurate at very small :math:`\eta`.

    References
    ----------
    S. Pirandola, R. Laurenza, C. Ottaviani, L. Banchi, "Fundamental limits of repeaterless
    quantum communications", Nat. Commun. 8, 15043 (2017), Eq. (3).
    """
    eta = _arr("transmittance", transmittance, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        k = -np.log1p(-eta) / _LN2
    return _out(np.asarray(k, dtype=np.float64), transmittance)


# --------------------------------------------------------------------------- weak coherent BB84
def wcp_gain(eta: ArrayLike, mu: ArrayLike, y0: ArrayLike) -> FloatOrArray:
    r"""Compute the expected gain :math:`Q_\mu` of phase-randomised weak coherent pulses.

    Parameters
    ----------
    eta
        Overall transmittance :math:`\eta = \eta_{ch}\,\eta_{Bob}`, in [0, 1].
    mu
        Mean photon number of the pulses (>= 0).
    y0
        Background yield :math:`Y_0` of Bob's detector pair per pulse, in [0, 1].

    Returns
    -------
    float or ndarray
        Probability that Bob's detector pair clicks,
        :math:`Q_\mu = 1 - (1 - Y_0)\,e^{-\eta\mu} = \sum_n Y_n\,e^{-\mu}\mu^n/n!`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> round(wcp_gain(0.045, 0.48, 1.7e-6), 6)
    0.02137

    Notes
    -----
    Lo-Ma-Chen and Ma-Qi-Zhao-Lo write :math:`Q_\mu = Y_0 + 1 - e^{-\eta\mu}`, dropping the
    term :math:`Y_0(1 - e^{-\eta\mu})` (a dark count *and* a photon click are one click). We
    keep it, so that :math:`Q_\mu` is exactly the no-click complement of two threshold
    detectors with dark-count probability :math:`p_d`, :math:`1 - Y_0 = (1-p_d)^2`, and exactly
    :math:`\sum_n P_\mu(n)\,Y_n` with :func:`photon_yield`; the two agree to
    :math:`O(Y_0\eta\mu)`.

    References
    ----------
    H.-K. Lo, X. Ma, K. Chen, PRL 94, 230504 (2005); X. Ma, B. Qi, Y. Zhao, H.-K. Lo,
    PRA 72, 012326 (2005), Sec. II.
    """
    e = _arr("eta", eta, 0.0, 1.0)
    m = _arr("mu", mu, 0.0)
    y = _arr("y0", y0, 0.0, 1.0)
    t = np.exp(-e * m)
    return _out(-np.expm1(-e * m) + y * t, eta, mu, y0)


def wcp_qber(
    eta: ArrayLike, mu: ArrayLike, y0: ArrayLike, e_d: ArrayLike, e0: ArrayLike = 0.5
) -> FloatOrArray:
    r"""Compute the expected quantum bit error rate :math:`E_\mu` of weak coherent BB84.

    Parameters
    ----------
    eta, mu, y0
        As in :func:`wcp_gain`.
    e_d
        Misalignment: probability that a detected photon hits the wrong detector, [0, 0.5].
    e0
        Error rate of background counts (1/2: a dark count is a random bit), [0, 0.5].

    Returns
    -------
    float or ndarray
        :math:`E_\mu = [e_0 Y_0 e^{-\eta\mu} + e_d (1 - e^{-\eta\mu})] / Q_\mu`; 1/2 where
        :math:`Q_\mu = 0`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> round(wcp_qber(0.045, 0.48, 1.7e-6, 0.033), 5)
    0.03304

    Notes
    -----
    The papers' :math:`E_\mu Q_\mu = e_0 Y_0 + e_d(1 - e^{-\eta\mu})` counts the background
    of pulses that also carried a detected photon twice; weighting it by
    :math:`e^{-\eta\mu}` makes :math:`E_\mu Q_\mu = \sum_n P_\mu(n)\,e_n Y_n` exactly with
    :func:`photon_error`, keeps :math:`E_\mu \le 1/2`, and changes nothing to first order in
    :math:`Y_0`.

    References
    ----------
    H.-K. Lo, X. Ma, K. Chen, PRL 94, 230504 (2005); X. Ma, B. Qi, Y. Zhao, H.-K. Lo,
    PRA 72, 012326 (2005), Sec. II.
    """
    e = _arr("eta", eta, 0.0, 1.0)
    m = _arr("mu", mu, 0.0)
    y = _arr("y0", y0, 0.0, 1.0)
    ed = _arr("e_d", e_d, 0.0, 0.5)
    ez = _arr("e0", e0, 0.0, 0.5)
    t = np.exp(-e * m)
    hit = -np.expm1(-e * m)
    q = hit + y * t
    eq = ez * y * t + ed * hit
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(q > 0, np.minimum(eq / np.where(q > 0, q, 1.0), 0.5), 0.5)
    return _out(np.asarray(err, dtype=np.float64), eta, mu, y0, e_d, e0)


def photon_yield(n: ArrayLike, eta: ArrayLike, y0: ArrayLike) -> FloatOrArray:
    r"""Yield :math:`Y_n`: probability of a click given that Alice sent ``n`` photons.

    Parameters
    ----------
    n
        Photon number (integer >= 0).
    eta
        Overall transmittance, in [0, 1].
    y0
        Background yield, in [0, 1].

    Returns
    -------
    float or ndarray
        :math:`Y_n = Y_0 + \eta_n - Y_0\eta_n = 1 - (1 - Y_0)(1 - \eta)^n`, with
        :math:`\eta_n = 1 - (1-\eta)^n`.

    Raises
    ------
    ConfigError
        If ``n`` is negative or not an integer, or another argument is out of range.

    Examples
    --------
    >>> photon_yield(1, 0.1, 0.0)
    0.1
    >>> round(photon_yield(2, 0.1, 0.0), 4)
    0.19

    References
    ----------
    X. Ma, B. Qi, Y. Zhao, H.-K. Lo, PRA 72, 012326 (2005), Sec. II (exact form, before the
    approximation :math:`Y_n \approx Y_0 + \eta_n`).
    """
    k = _arr("n", n, 0.0)
    if not np.all(k == np.round(k)):
        raise ConfigError(f"n must be an integer >= 0, got {n!r}", field="n", value=n)
    e = _arr("eta", eta, 0.0, 1.0)
    y = _arr("y0", y0, 0.0, 1.0)
    miss, hit = _miss_hit(k, e)
    return _out(hit + y * miss, n, eta, y0)


def photon_error(
    n: ArrayLike, eta: ArrayLike, y0: ArrayLike, e_d: ArrayLike, e0: ArrayLike = 0.5
) -> FloatOrArray:
    r"""Bit error rate :math:`e_n` of the clicks caused by ``n``-photon pulses.

    Parameters
    ----------
    n, eta, y0
        As in :func:`photon_yield`.
    e_d, e0
        Misalignment and background error rate, as in :func:`wcp_qber`.

    Returns
    -------
    float or ndarray
        :math:`e_n = [e_0 Y_0 (1-\eta)^n + e_d \eta_n] / Y_n`; :math:`e_0` for
        :math:`n = 0`; 1/2 where :math:`Y_n = 0`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> photon_error(1, 0.1, 0.0, 0.03)
    0.03

    Notes
    -----
    Ma-Qi-Zhao-Lo write :math:`e_n = (e_0 Y_0 + e_d\eta_n)/Y_n`; the factor
    :math:`(1-\eta)^n` on the background term (a background click only matters when no photon
    was detected) makes the decomposition exact, see :func:`wcp_qber`.

    References
    ----------
    X. Ma, B. Qi, Y. Zhao, H.-K. Lo, PRA 72, 012326 (2005), Sec. II.
    """
    k = _arr("n", n, 0.0)
    if not np.all(k == np.round(k)):
        raise ConfigError(f"n must be an integer >= 0, got {n!r}", field="n", value=n)
    e = _arr("eta", eta, 0.0, 1.0)
    y = _arr("y0", y0, 0.0, 1.0)
    ed = _arr("e_d", e_d, 0.0, 0.5)
    ez = _arr("e0", e0, 0.0, 0.5)
    miss, hit = _miss_hit(k, e)
    yn = hit + y * miss
    en_yn = ez * y * miss + ed * hit
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(yn > 0, np.minimum(en_yn / np.where(yn > 0, yn, 1.0), 0.5), 0.5)
    return _out(np.asarray(err, dtype=np.float64), n, eta, y0, e_d, e0)


# --------------------------------------------------------------------------- GLLP family
def gllp_rate(
    q_mu: ArrayLike,
    e_mu: ArrayLike,
    q1: ArrayLike,
    e1: ArrayLike,
    f: ArrayLike,
    sifting: ArrayLike = 0.5,
) -> FloatOrArray:
    r"""GLLP secret-key rate from the signal and single-photon observables (decoy-state BB84).

    Parameters
    ----------
    q_mu, e_mu
        Gain and QBER of the signal pulses.
    q1, e1
        Gain :math:`Q_1 = Y_1 \mu e^{-\mu}` and error rate of the single-photon pulses (true
        values with infinitely many decoys, bounds with finitely many).
    f
        Error-correction inefficiency (>= 1).
    sifting
        Basis-sifting factor ``q``: 1/2 for symmetric BB84.

    Returns
    -------
    float or ndarray
        :math:`R = q\,[-Q_\mu f\,h_2(E_\mu) + Q_1 (1 - h_2(e_1))]`, clipped at 0; bits per
        signal pulse.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> gllp_rate(0.02, 0.0, 0.01, 0.0, 1.2)
    0.005

    References
    ----------
    D. Gottesman, H.-K. Lo, N. Lütkenhaus, J. Preskill, Quantum Inf. Comput. 4, 325 (2004);
    H.-K. Lo, X. Ma, K. Chen, PRL 94, 230504 (2005), Eq. (1); X. Ma, B. Qi, Y. Zhao, H.-K. Lo,
    PRA 72, 012326 (2005), Eq. (1).
    """
    q = _arr("q_mu", q_mu, 0.0, 1.0)
    e = _arr("e_mu", e_mu, 0.0, 0.5)
    qq1 = _arr("q1", q1, 0.0, 1.0)
    ee1 = _arr("e1", e1, 0.0, 0.5)
    ff = _arr("f", f, 1.0)
    s = _arr("sifting", sifting, 0.0, 1.0)
    r = s * (-q * ff * _h2(e) + qq1 * (1.0 - _h2(ee1)))
    return _out(np.maximum(r, 0.0), q_mu, e_mu, q1, e1, f, sifting)


def gllp_no_decoy_rate(
    mu: ArrayLike,
    q_mu: ArrayLike,
    e_mu: ArrayLike,
    f: ArrayLike,
    sifting: ArrayLike = 0.5,
) -> FloatOrArray:
    r"""GLLP rate of weak coherent BB84 without decoys: every multi-photon click is insecure.

    Parameters
    ----------
    mu
        Signal mean photon number (> 0).
    q_mu, e_mu
        Observed gain and QBER.
    f
        Error-correction inefficiency (>= 1).
    sifting
        Basis-sifting factor (1/2 for BB84).

    Returns
    -------
    float or ndarray
        With :math:`\Delta = P_{multi}(\mu)/Q_\mu`,
        :math:`P_{multi} = 1 - e^{-\mu} - \mu e^{-\mu}`:
        :math:`R = q\,Q_\mu[-f h_2(E_\mu) + (1-\Delta)(1 - h_2(E_\mu/(1-\Delta)))]`,
        clipped at 0, and 0 whenever :math:`\Delta \ge 1` (the PNS attack could then
        suppress every single-photon click).

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> gllp_no_decoy_rate(0.48, 0.02, 0.03, 1.22)  # GYS at 0 km: multi-photons dominate
    0.0
    >>> round(gllp_no_decoy_rate(0.01, 4.5e-4, 0.033, 1.22), 7)
    9.69e-05

    Notes
    -----
    Worst case of the PNS attack: the clicks of the :math:`P_{multi}` multi-photon pulses are
    assumed to carry no secrecy and no errors, so the single-photon clicks are a fraction
    :math:`1-\Delta` of all clicks with error rate :math:`E_\mu/(1-\Delta)` (capped at 1/2).
    The optimum intensity is :math:`\mu = O(\eta)`, hence the :math:`O(\eta^2)` scaling.

    References
    ----------
    D. Gottesman, H.-K. Lo, N. Lütkenhaus, J. Preskill, Quantum Inf. Comput. 4, 325 (2004);
    H. Inamori, N. Lütkenhaus, D. Mayers, Eur. Phys. J. D 41, 599 (2007).
    """
    m = _arr("mu", mu, 0.0, low_open=True)
    q = _arr("q_mu", q_mu, 0.0, 1.0)
    e = _arr("e_mu", e_mu, 0.0, 0.5)
    ff = _arr("f", f, 1.0)
    s = _arr("sifting", sifting, 0.0, 1.0)
    p_multi = -np.expm1(-m) - m * np.exp(-m)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(q > 0, p_multi / np.where(q > 0, q, 1.0), np.inf)
        single = np.clip(1.0 - delta, 0.0, 1.0)
        e1 = np.where(single > 0, np.minimum(e / np.where(single > 0, single, 1.0), 0.5), 0.5)
    r = s * q * (-ff * _h2(e) + single * (1.0 - _h2(e1)))
    r = np.where(delta < 1.0, r, 0.0)
    return _out(np.maximum(r, 0.0), mu, q_mu, e_mu, f, sifting)


def shor_preskill_rate(
    q: ArrayLike, e: ArrayLike, f: ArrayLike = 1.0, sifting: ArrayLike = 0.5
) -> FloatOrArray:
    r"""Shor-Preskill rate of BB84 with a single-photon source.

    Parameters
    ----------
    q
        Gain (probability of a click per pulse).
    e
        QBER, [0, 0.5].
    f
        Error-correction inefficiency (>= 1); ``f = 1`` is the Shannon limit.
    sifting
        Basis-sifting factor (1/2 for BB84).

    Returns
    -------
    float or ndarray
        :math:`R = q_s\,Q\,[1 - f h_2(E) - h_2(E)]`, clipped at 0.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> shor_preskill_rate(1.0, 0.0)
    0.5
    >>> shor_preskill_rate(1.0, 0.12)
    0.0

    Notes
    -----
    With ``f = 1`` the rate vanishes where :math:`1 - 2h_2(E) = 0`, at :math:`E \approx 11.0\%`
    (0.110028).

    References
    ----------
    P. W. Shor, J. Preskill, "Simple proof of security of the BB84 quantum key distribution
    protocol", PRL 85, 441 (2000).
    """
    qq = _arr("q", q, 0.0, 1.0)
    ee = _arr("e", e, 0.0, 0.5)
    ff = _arr("f", f, 1.0)
    s = _arr("sifting", sifting, 0.0, 1.0)
    h = _h2(ee)
    return _out(np.maximum(s * qq * (1.0 - ff * h - h), 0.0), q, e, f, sifting)


def vacuum_weak_decoy_bounds(
    mu: float,
    nu: float,
    q_mu: float,
    q_nu: float,
    e_nu: float,
    y0: float,
    e0: float = 0.5,
) -> tuple[float, float]:
    r"""Lower bound on :math:`Y_1` and upper bound on :math:`e_1` from vacuum + weak decoys.

    Parameters
    ----------
    mu
        Signal intensity (> ``nu``).
    nu
        Weak decoy intensity (> 0).
    q_mu, q_nu
        Measured gains of the signal and of the weak decoy.
    e_nu
        Measured QBER of the weak decoy.
    y0
        Background yield measured with the vacuum decoy (its gain :math:`Q_0 = Y_0`).
    e0
        Error rate of background counts (1/2).

    Returns
    -------
    tuple of float
        ``(y1_lower, e1_upper)`` with

        .. math::

            Y_1^L = \frac{\mu}{\mu\nu - \nu^2}\left(Q_\nu e^{\nu}
                    - Q_\mu e^{\mu}\frac{\nu^2}{\mu^2} - \frac{\mu^2-\nu^2}{\mu^2}Y_0\right),
            \qquad
            e_1^U = \frac{E_\nu Q_\nu e^{\nu} - e_0 Y_0}{Y_1^L\,\nu},

        :math:`Y_1^L` clipped to [0, 1] and :math:`e_1^U` to [0, 1/2]; when
        :math:`Y_1^L \le 0` the pair is ``(0.0, 0.5)`` and no key can be distilled.

    Raises
    ------
    ConfigError
        If ``nu`` is not in (0, ``mu``) or another argument is out of range.

    Examples
    --------
    GYS link at 50 km (eta = 4.0e-3), weak decoy nu = 0.05:

    >>> eta, y0 = 0.045 * 10 ** (-0.21 * 50 / 10), 1.7e-6
    >>> q_mu, q_nu = wcp_gain(eta, 0.48, y0), wcp_gain(eta, 0.05, y0)
    >>> e_nu = wcp_qber(eta, 0.05, y0, 0.033)
    >>> y1, e1 = vacuum_weak_decoy_bounds(0.48, 0.05, q_mu, q_nu, e_nu, y0)
    >>> round(y1 / photon_yield(1, eta, y0), 3), round(e1, 4)  # true e1 = 0.0332
    (0.986, 0.0354)

    Notes
    -----
    Both bounds drop the non-negative multi-photon terms of the decoy's gain and error
    expansions :math:`Q_\nu e^\nu = \sum_n Y_n\nu^n/n!`; the :math:`Y_1^L` bound uses the
    signal to bound the :math:`n \ge 2` contribution, which needs :math:`0 < \nu < \mu`.
    As :math:`\nu \to 0` they approach the true :math:`Y_1, e_1` (infinite-decoy limit).

    References
    ----------
    X. Ma, B. Qi, Y. Zhao, H.-K. Lo, "Practical decoy state for quantum key distribution",
    PRA 72, 012326 (2005), Sec. IV A (vacuum + weak decoy state): the :math:`Y_1^{L,\nu,0}`
    and :math:`e_1^{U,\nu,0}` estimates.
    """
    m = v.in_range("mu", mu, 0.0, None, low_open=True)
    n = v.in_range("nu", nu, 0.0, m, low_open=True, high_open=True)
    qm = v.probability("q_mu", q_mu)
    qn = v.probability("q_nu", q_nu)
    en = v.in_range("e_nu", e_nu, 0.0, 0.5)
    y = v.probability("y0", y0)
    ez = v.in_range("e0", e0, 0.0, 0.5)
    y1 = (
        m
        / (m * n - n * n)
        * (qn * math.exp(n) - qm * math.exp(m) * n * n / (m * m) - (m * m - n * n) / (m * m) * y)
    )
    if y1 <= 0.0:
        return 0.0, 0.5
    y1 = min(y1, 1.0)
    e1 = (en * qn * math.exp(n) - ez * y) / (y1 * n)
    return y1, min(max(e1, 0.0), 0.5)


# --------------------------------------------------------------------------- SARG04
class Sarg04Observables(NamedTuple):
    r"""Expected SARG04 sifted observables of a weak coherent source (per pulse sent).

    Attributes
    ----------
    gain
        Overall sifted gain :math:`Q_\mu`: probability that a pulse gives a conclusive result.
    qber
        Bit error rate :math:`E_\mu` of the conclusive results.
    q1, e1
        Sifted gain :math:`Q_1 = P_\mu(1)\,Y_1` and bit error rate of single-photon pulses.
    q2, e2
        Same for two-photon pulses.
    """

    gain: FloatOrArray
    qber: FloatOrArray
    q1: FloatOrArray
    e1: FloatOrArray
    q2: FloatOrArray
    e2: FloatOrArray


def _sarg04_fock(
    n: int, eta: NDArray[np.float64], pd: NDArray[np.float64], e_d: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(correct, wrong) conclusive probability of an ``n``-photon pulse in each basis case."""
    both_dark_free = (1.0 - pd) ** 2 * (1.0 - eta) ** n
    right = (1.0 - pd) * (1.0 - eta / 2.0) ** n - both_dark_free
    wrong = (1.0 - pd) * (1.0 - eta * (1.0 - e_d)) ** n - both_dark_free
    return right, wrong


def sarg04_expected(
    eta: ArrayLike, mu: ArrayLike, y0: ArrayLike, e_d: ArrayLike
) -> Sarg04Observables:
    r"""Compute the expected SARG04 observables of phase-randomised weak coherent pulses.

    Parameters
    ----------
    eta
        Overall transmittance (channel times Bob's detection efficiency), [0, 1].
    mu
        Mean photon number (>= 0).
    y0
        Background yield of Bob's detector pair, [0, 1); each detector has
        :math:`p_d = 1 - \sqrt{1 - Y_0}`.
    e_d
        Misalignment (probability a photon of the matching basis hits the wrong detector).

    Returns
    -------
    Sarg04Observables
        ``(gain, qber, q1, e1, q2, e2)``, all per pulse sent.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> obs = sarg04_expected(1.0, 1e-9, 0.0, 0.0)  # one noiseless photon: conclusive 1/4
    >>> round(obs.q1 / 1e-9, 6), obs.e1
    (0.25, 0.0)

    Notes
    -----
    SARG04 sifting: Alice sends one of the four BB84 states (bit = basis) and announces a
    pair of non-orthogonal states, one per basis, that contains it; Bob measures in a random
    basis and keeps a *conclusive* result, one orthogonal to exactly one state of the pair.
    Per pulse, Bob measures with probability 1/2 in the basis not containing Alice's state:
    each detected photon then goes to either detector with probability 1/2, and a click of
    the detector orthogonal to the *other* state is a correct conclusive result. With
    probability 1/2 he measures in the basis of Alice's state: a photon reaches the wrong
    (conclusive, erroneous) detector with probability :math:`e_d`. A result is conclusive when
    exactly that detector clicks; double clicks are inconclusive and discarded. For ``n``
    photons (per-photon routing independent, dark counts :math:`p_d` per detector):

    .. math::

        A_n = (1-p_d)(1-\eta/2)^n - (1-p_d)^2(1-\eta)^n, \quad
        B_n = (1-p_d)(1-\eta(1-e_d))^n - (1-p_d)^2(1-\eta)^n,

        Q_n = P_\mu(n)\,(A_n + B_n)/2, \qquad e_n = B_n / (A_n + B_n),

    and :math:`Q_\mu, E_\mu` follow by replacing :math:`x^n` with :math:`e^{-\mu(1-x)}`.
    A noiseless single photon is conclusive with probability :math:`\eta/4`, and
    :math:`e_1 = 2e_d/(1+2e_d)` without dark counts.

    References
    ----------
    V. Scarani, A. Acín, G. Ribordy, N. Gisin, PRL 92, 057901 (2004); C.-H. F. Fung,
    K. Tamaki, H.-K. Lo, "Performance of two quantum key distribution protocols",
    PRA 73, 012337 (2006), Sec. IV (decoy-state SARG04).
    """
    e = _arr("eta", eta, 0.0, 1.0)
    m = _arr("mu", mu, 0.0)
    y = _arr("y0", y0, 0.0, 1.0, high_open=True)
    ed = _arr("e_d", e_d, 0.0, 0.5)
    pd = 1.0 - np.sqrt(1.0 - y)
    dark_free = (1.0 - pd) ** 2 * np.exp(-e * m)
    right = (1.0 - pd) * np.exp(-e * m / 2.0) - dark_free
    wrong = (1.0 - pd) * np.exp(-e * m * (1.0 - ed)) - dark_free
    gain = (right + wrong) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        qber = np.where(gain > 0, wrong / np.where(gain > 0, 2.0 * gain, 1.0), 0.5)
    out: list[NDArray[np.float64]] = [gain, qber]
    for n in (1, 2):
        a, b = _sarg04_fock(n, e, pd, ed)
        p_n = np.exp(-m) * m**n / math.factorial(n)
        yn = (a + b) / 2.0
        with np.errstate(divide="ignore", invalid="ignore"):
            en = np.where(yn > 0, b / np.where(yn > 0, 2.0 * yn, 1.0), 0.5)
        out += [p_n * yn, en]
    ins = (eta, mu, y0, e_d)
    g, qb, q1, e1, q2, e2 = (_out(np.asarray(x, dtype=np.float64), *ins) for x in out)
    return Sarg04Observables(g, qb, q1, e1, q2, e2)


def sarg04_phase_error_bound(n: int, bit_error: ArrayLike) -> FloatOrArray:
    r"""Upper bound on the phase error rate of SARG04's ``n``-photon part from its bit errors.

    Parameters
    ----------
    n
        Photon number, 1 or 2 (three or more photons give no SARG04 key).
    bit_error
        Bit error rate :math:`e_n` of the conclusive results of ``n``-photon pulses, [0, 1].

    Returns
    -------
    float or ndarray
        :math:`e_{p1} = \min(3e_1/2,\ 1/2)` for single photons;
        :math:`e_{p2} = \min_{x\ge0}\{x e_2 + [3 - 2x + \sqrt{6 - 6\sqrt2 x + 4x^2}]/6\}`,
        in closed form :math:`\tfrac12 - \tfrac{\sqrt2}{8}s + \tfrac1{24}\sqrt{6(4-s^2)}`
        with :math:`s = 2 - 6e_2`, for two photons (1/2 from :math:`e_2 \ge 1/6`).

    Raises
    ------
    ConfigError
        If ``n`` is not 1 or 2 or the bit error is outside [0, 1].

    Examples
    --------
    >>> sarg04_phase_error_bound(1, 0.02)
    0.03
    >>> round(sarg04_phase_error_bound(2, 0.0), 5)  # sin^2(pi/8): Eve's two-photon advantage
    0.14645

    Notes
    -----
    Both are worst cases over every attack in the entanglement-distillation picture of
    Tamaki-Lo: Alice's virtual qubit is entangled with the two announced states, Bob's
    conclusive POVM is a filter followed by a qubit measurement, and Alice's random choice
    among the four symmetric pairs twirls Eve's channel. Maximising the phase error at a
    given bit error over all channels is a small semidefinite program; its value is exactly
    :math:`3e_1/2` for one photon (attained by a depolarising channel) and the
    Tamaki-Lo/Fung-Tamaki-Lo expression above for two photons (whose threshold in
    :func:`sarg04_rate` is the published 2.71 %).

    References
    ----------
    K. Tamaki, H.-K. Lo, "Unconditionally secure key distillation from multiphotons",
    PRA 73, 010302(R) (2006); C.-H. F. Fung, K. Tamaki, H.-K. Lo, PRA 73, 012337 (2006).
    """
    if n not in (1, 2):
        raise ConfigError(
            f"SARG04 phase-error bounds exist for n = 1 or 2 photons, got {n!r}",
            field="n",
            value=n,
            allowed="1, 2",
        )
    e = _arr("bit_error", bit_error, 0.0, 1.0)
    if n == 1:
        return _out(np.minimum(1.5 * e, 0.5), bit_error)
    s = np.clip(2.0 - 6.0 * e, 0.0, 2.0)
    ep = 0.5 - math.sqrt(2.0) / 8.0 * s + np.sqrt(6.0 * (4.0 - s * s)) / 24.0
    return _out(np.where(e < 1.0 / 6.0, np.minimum(ep, 0.5), 0.5), bit_error)


def sarg04_rate(
    q: ArrayLike,
    e: ArrayLike,
    q1: ArrayLike,
    e1: ArrayLike,
    q2: ArrayLike,
    e2: ArrayLike,
    f: ArrayLike,
) -> FloatOrArray:
    r"""SARG04 secret-key rate with key from single- and two-photon pulses (decoy states).

    Parameters
    ----------
    q, e
        Sifted (conclusive) gain and QBER of the signal, per pulse sent.
    q1, e1
        Sifted gain and bit error rate of single-photon pulses.
    q2, e2
        Sifted gain and bit error rate of two-photon pulses.
    f
        Error-correction inefficiency (>= 1).

    Returns
    -------
    float or ndarray
        :math:`R = -Q f h_2(E) + Q_1[1 - h_2(e_{p1})] + Q_2[1 - h_2(e_{p2})]`, clipped at 0,
        with the phase error rates of :func:`sarg04_phase_error_bound`. No further sifting
        factor: the gains already count conclusive results per pulse.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> round(sarg04_rate(0.25, 0.0, 0.25, 0.0, 0.0, 0.0, 1.0), 6)  # ideal single photons
    0.25

    Notes
    -----
    For a pure single-photon source the rate vanishes where
    :math:`1 - h_2(e) - h_2(3e/2) = 0`, at :math:`e \approx 8.90\%`; this rigorous
    Shor-Preskill-type bound ignores the correlation between bit and phase errors and is
    below the one-way thresholds quoted in the literature for depolarising channels (9.68 %,
    Branciard et al.; 10.95 %, Tamaki-Lo). The two-photon part alone vanishes at
    :math:`e_2 \approx 2.71\%`, the Tamaki-Lo value.

    References
    ----------
    C.-H. F. Fung, K. Tamaki, H.-K. Lo, "Performance of two quantum key distribution
    protocols", PRA 73, 012337 (2006); K. Tamaki, H.-K. Lo, PRA 73, 010302(R) (2006);
    C. Branciard, N. Gisin, B. Kraus, V. Scarani, PRA 72, 032301 (2005).
    """
    qq = _arr("q", q, 0.0, 1.0)
    ee = _arr("e", e, 0.0, 0.5)
    qq1 = _arr("q1", q1, 0.0, 1.0)
    ee1 = _arr("e1", e1, 0.0, 1.0)
    qq2 = _arr("q2", q2, 0.0, 1.0)
    ee2 = _arr("e2", e2, 0.0, 1.0)
    ff = _arr("f", f, 1.0)
    ep1 = np.asarray(sarg04_phase_error_bound(1, ee1), dtype=np.float64)
    ep2 = np.asarray(sarg04_phase_error_bound(2, ee2), dtype=np.float64)
    r = -qq * ff * _h2(ee) + qq1 * (1.0 - _h2(ep1)) + qq2 * (1.0 - _h2(ep2))
    return _out(np.maximum(r, 0.0), q, e, q1, e1, q2, e2, f)


# --------------------------------------------------------------------------- BBM92
def bbm92_expected(
    eta_a: ArrayLike,
    eta_b: ArrayLike,
    mu: ArrayLike,
    y0a: ArrayLike,
    y0b: ArrayLike,
    e_d: ArrayLike,
    e0: ArrayLike = 0.5,
) -> tuple[FloatOrArray, FloatOrArray]:
    r"""Coincidence gain and QBER of BBM92 with a parametric down-conversion source.

    Parameters
    ----------
    eta_a, eta_b
        Transmittance from the source to Alice's and to Bob's detector clicks (fibre arm times
        detection efficiency), [0, 1].
    mu
        Mean number of photon pairs per pulse, :math:`\mu = 2\lambda` (> 0).
    y0a, y0b
        Background yields of Alice's and Bob's detector pairs, [0, 1].
    e_d
        Intrinsic (misalignment) error rate of correlated coincidences, [0, 0.5].
    e0
        Error rate of random coincidences (1/2).

    Returns
    -------
    tuple
        ``(Q, E)``: probability per pulse that both Alice and Bob click, and its QBER
        (before basis sifting).

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> q, e = bbm92_expected(1.0, 1.0, 0.2, 0.0, 0.0, 0.0)
    >>> round(q, 6), round(e, 6)  # Q = 1 - 1/1.1^2, E Q = lam^2 / (2 (1 + lam)^2), lam = 0.1
    (0.173554, 0.02381)

    Notes
    -----
    With :math:`\lambda = \mu/2` (thermal pair statistics
    :math:`P(n) = (n+1)\lambda^n/(1+\lambda)^{n+2}`),

    .. math::

        Q = 1 - \frac{1-Y_{0A}}{(1+\eta_A\lambda)^2} - \frac{1-Y_{0B}}{(1+\eta_B\lambda)^2}
            + \frac{(1-Y_{0A})(1-Y_{0B})}{(1+\eta_A\lambda+\eta_B\lambda
            -\eta_A\eta_B\lambda)^2},

        E Q = e_0 Q - \frac{2(e_0-e_d)\,\eta_A\eta_B\lambda(1+\lambda)}
              {(1+\eta_A\lambda)(1+\eta_B\lambda)(1+\eta_A\lambda+\eta_B\lambda
              -\eta_A\eta_B\lambda)}.

    :math:`Q` is exact for threshold detectors; the second term of :math:`EQ` is the
    Alice-Bob correlation of clicks without dark counts (exact when :math:`Y_0 = 0`,
    double clicks assigned a random bit), scaled by :math:`1 - 2e_d`.

    References
    ----------
    X. Ma, C.-H. F. Fung, H.-K. Lo, "Quantum key distribution with entangled photon
    sources", PRA 76, 012307 (2007), Sec. III (gain and QBER of the PDC source).
    """
    ea = _arr("eta_a", eta_a, 0.0, 1.0)
    eb = _arr("eta_b", eta_b, 0.0, 1.0)
    m = _arr("mu", mu, 0.0, low_open=True)
    ya = _arr("y0a", y0a, 0.0, 1.0)
    yb = _arr("y0b", y0b, 0.0, 1.0)
    ed = _arr("e_d", e_d, 0.0, 0.5)
    ez = _arr("e0", e0, 0.0, 0.5)
    lam = m / 2.0
    da, db = 1.0 + ea * lam, 1.0 + eb * lam
    dab = 1.0 + ea * lam + eb * lam - ea * eb * lam
    q = 1.0 - (1.0 - ya) / da**2 - (1.0 - yb) / db**2 + (1.0 - ya) * (1.0 - yb) / dab**2
    corr = ea * eb * lam * (1.0 + lam) / (da * db * dab)
    eq = ez * q - 2.0 * (ez - ed) * corr
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(q > 0, np.clip(eq / np.where(q > 0, q, 1.0), 0.0, 0.5), 0.5)
    ins = (eta_a, eta_b, mu, y0a, y0b, e_d, e0)
    return _out(np.asarray(q, dtype=np.float64), *ins), _out(e, *ins)


def bbm92_rate(q: ArrayLike, e: ArrayLike, f: ArrayLike, sifting: ArrayLike = 0.5) -> FloatOrArray:
    r"""BBM92 / E91 secret-key rate from the coincidence gain and QBER.

    Parameters
    ----------
    q
        Coincidence gain per pulse (per sifted pulse when ``sifting = 1``).
    e
        QBER, [0, 0.5].
    f
        Error-correction inefficiency (>= 1).
    sifting
        Basis-sifting factor (1/2 for BBM92 with symmetric bases).

    Returns
    -------
    float or ndarray
        :math:`R = q_s\,Q\,[1 - f h_2(E) - h_2(E)]`, clipped at 0.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> bbm92_rate(0.01, 0.0, 1.1)
    0.005

    Notes
    -----
    Valid for an untrusted source: with a squashing model for the threshold detectors the
    multi-pair emissions need no separate treatment (Ma-Fung-Lo, Sec. II), so the rate is
    Shor-Preskill's with the measured :math:`Q, E`.

    References
    ----------
    X. Ma, C.-H. F. Fung, H.-K. Lo, PRA 76, 012307 (2007); C. H. Bennett, G. Brassard,
    N. D. Mermin, PRL 68, 557 (1992).
    """
    return shor_preskill_rate(q, e, f, sifting)


# --------------------------------------------------------------------------- CV-QKD (GG02)
@dataclass(frozen=True)
class CvParameters:
    """Parameters of a Gaussian-modulated coherent-state CV-QKD system (GG02).

    The hardware defaults are those of the 25 km all-fibre experiment of Lodewyck et al.
    (2007), as also used by Fossier et al. (2009): excess noise ``xi = 0.005`` (channel input),
    homodyne efficiency ``eta = 0.606``, electronic noise ``v_el = 0.041`` and reconciliation
    efficiency ``beta = 0.898``, with homodyne detection and reverse reconciliation. The
    modulation variance is a setting, not hardware: by default it is **optimised per distance**
    (``"optimal"``, :func:`optimal_v_a`), as the discrete-variable intensities are; the
    experiment's fixed ``V_A = 18.5`` is one choice (``v_a=18.5``), the best one near 25 km
    only. With ``beta < 1`` a large ``V_A`` costs more in reconciliation than it gains, so the
    optimum falls with distance and the reach is set by ``beta`` and ``xi``.

    Attributes
    ----------
    v_a
        Alice's modulation variance in shot-noise units (> 0), or ``"optimal"`` (default).
    xi
        Excess noise referred to the channel input, in shot-noise units (>= 0).
    eta_det
        Efficiency of Bob's coherent detector, (0, 1].
    v_el
        Electronic noise of Bob's detector, in shot-noise units (>= 0).
    beta
        Reconciliation efficiency, (0, 1].
    detection
        ``"homodyne"`` or ``"heterodyne"``.

    References
    ----------
    J. Lodewyck et al., "Quantum key distribution over 25 km with an all-fiber
    continuous-variable system", PRA 76, 042305 (2007); S. Fossier et al., "Improvement of
    continuous-variable quantum key distribution systems by using optical preamplifiers",
    J. Phys. B 42, 114014 (2009).
    """

    v_a: float | Literal["optimal"] = "optimal"
    xi: float = 0.005
    eta_det: float = 0.606
    v_el: float = 0.041
    beta: float = 0.898
    detection: Literal["homodyne", "heterodyne"] = "homodyne"

    def __post_init__(self) -> None:
        if isinstance(self.v_a, str):
            if self.v_a != "optimal":
                raise ConfigError(
                    f"v_a must be a number > 0 or 'optimal', got {self.v_a!r}",
                    field="v_a",
                    value=self.v_a,
                    allowed="> 0, optimal",
                )
        else:
            v.in_range("v_a", self.v_a, 0.0, None, low_open=True)
        v.in_range("xi", self.xi, 0.0)
        v.in_range("eta_det", self.eta_det, 0.0, 1.0, low_open=True)
        v.in_range("v_el", self.v_el, 0.0)
        v.in_range("beta", self.beta, 0.0, 1.0, low_open=True)
        if self.detection not in ("homodyne", "heterodyne"):
            raise ConfigError(
                f"detection must be 'homodyne' or 'heterodyne', got {self.detection!r}",
                field="detection",
                value=self.detection,
                allowed="homodyne, heterodyne",
            )


def _g(nu: NDArray[np.float64]) -> NDArray[np.float64]:
    """Von Neumann entropy (bits) of a thermal mode with symplectic eigenvalue ``nu >= 1``."""
    x = np.maximum((nu - 1.0) / 2.0, 0.0)
    return np.asarray((xlogy(x + 1.0, x + 1.0) - xlogy(x, x)) / _LN2, dtype=np.float64)


def gg02_rate(
    transmittance: ArrayLike,
    v_a: float = 18.5,
    xi: float = 0.005,
    eta_det: float = 0.606,
    v_el: float = 0.041,
    beta: float = 0.898,
    detection: str = "homodyne",
) -> FloatOrArray:
    r"""Asymptotic GG02 key rate, collective attacks, reverse reconciliation, bits per symbol.

    Parameters
    ----------
    transmittance
        Channel transmittance :math:`T`, (0, 1].
    v_a
        Modulation variance :math:`V_A` (shot-noise units, SNU).
    xi
        Excess noise :math:`\xi` referred to the channel input (SNU).
    eta_det
        Detector efficiency :math:`\eta` (trusted).
    v_el
        Electronic noise :math:`v_{el}` (SNU, trusted).
    beta
        Reconciliation efficiency :math:`\beta`.
    detection
        ``"homodyne"`` (one quadrature) or ``"heterodyne"`` (both).

    Returns
    -------
    float or ndarray
        :math:`K = \beta I_{AB} - \chi_{BE}`, clipped at 0.

    Raises
    ------
    ConfigError
        If an argument is out of range or ``detection`` unknown.

    Examples
    --------
    >>> round(gg02_rate(10 ** (-0.2 * 25 / 10)), 4)  # Lodewyck et al. parameters, 25 km
    0.0411

    Notes
    -----
    With :math:`V = V_A + 1`, :math:`\chi_{line} = 1/T - 1 + \xi`,
    :math:`\chi_{hom} = (1-\eta+v_{el})/\eta`,
    :math:`\chi_{het} = (2-\eta+2v_{el})/\eta` and
    :math:`\chi_{tot} = \chi_{line} + \chi_{det}/T`:

    * :math:`I_{AB} = \frac{\kappa}{2}\log_2\frac{V+\chi_{tot}}{1+\chi_{tot}}`,
      :math:`\kappa = 1` (homodyne) or 2 (heterodyne);
    * :math:`\chi_{BE} = G(\tfrac{\lambda_1-1}{2}) + G(\tfrac{\lambda_2-1}{2})
      - G(\tfrac{\lambda_3-1}{2}) - G(\tfrac{\lambda_4-1}{2})`,
      :math:`G(x) = (x+1)\log_2(x+1) - x\log_2 x`;
    * :math:`\lambda_{1,2}^2 = \tfrac12[A \pm \sqrt{A^2-4B}]`,
      :math:`A = V^2(1-2T) + 2T + T^2(V+\chi_{line})^2`,
      :math:`B = T^2(V\chi_{line}+1)^2`;
    * :math:`\lambda_{3,4}^2 = \tfrac12[C \pm \sqrt{C^2-4D}]` with, for homodyne,
      :math:`C = \frac{V\sqrt B + T(V+\chi_{line}) + A\chi_{hom}}{T(V+\chi_{tot})}`,
      :math:`D = \sqrt B\,\frac{V + \sqrt B\chi_{hom}}{T(V+\chi_{tot})}`, and for heterodyne
      :math:`C = \frac{A\chi_{het}^2 + B + 1 + 2\chi_{het}(V\sqrt B + T(V+\chi_{line}))
      + 2T(V^2-1)}{T^2(V+\chi_{tot})^2}`,
      :math:`D = \left(\frac{V+\sqrt B\chi_{het}}{T(V+\chi_{tot})}\right)^2`.

    The detector's inefficiency and electronic noise are trusted (not given to Eve).
    For a pure-loss channel with ideal detection and :math:`V_A \to \infty` the homodyne
    rate tends to :math:`-\tfrac12\log_2(1-T)`, half the PLOB bound.

    References
    ----------
    F. Grosshans, P. Grangier, PRL 88, 057902 (2002); J. Lodewyck et al., PRA 76, 042305
    (2007), Sec. II; S. Fossier et al., J. Phys. B 42, 114014 (2009); F. Laudenbach et al.,
    "Continuous-variable quantum key distribution with Gaussian modulation — the theory of
    practical implementations", Adv. Quantum Technol. 1, 1800011 (2018), Sec. 4.
    """
    t = _arr("transmittance", transmittance, 0.0, 1.0, low_open=True)
    if np.any(t < GG02_MIN_TRANSMITTANCE):
        raise ConfigError(
            f"transmittance {float(t.min()):.3g} is below the GG02 model's numerical range "
            f"(>= {GG02_MIN_TRANSMITTANCE:g}, 500 km of 0.2 dB/km fibre)",
            field="transmittance",
            value=float(t.min()),
            allowed=f">= {GG02_MIN_TRANSMITTANCE:g}",
        )
    params = CvParameters(v_a, xi, eta_det, v_el, beta, detection)  # type: ignore[arg-type]
    if isinstance(params.v_a, str):
        raise ConfigError(
            "gg02_rate needs a numeric v_a (optimal_v_a finds the best one)",
            field="v_a",
            value=params.v_a,
        )
    big_v = params.v_a + 1.0
    eta = params.eta_det
    chi_line = 1.0 / t - 1.0 + params.xi
    if params.detection == "homodyne":
        chi_det = (1.0 - eta + params.v_el) / eta
    else:
        chi_det = (2.0 - eta + 2.0 * params.v_el) / eta
    chi_tot = chi_line + chi_det / t
    kappa = 1.0 if params.detection == "homodyne" else 2.0
    i_ab = kappa / 2.0 * np.log2((big_v + chi_tot) / (1.0 + chi_tot))
    a = big_v**2 * (1.0 - 2.0 * t) + 2.0 * t + t**2 * (big_v + chi_line) ** 2
    b = t**2 * (big_v * chi_line + 1.0) ** 2
    sb = np.sqrt(b)
    disc = np.sqrt(np.maximum(a * a - 4.0 * b, 0.0))
    # larger root directly, smaller one from the product l1^2 l2^2 = B (no cancellation)
    l1_sq = (a + disc) / 2.0
    l1 = np.sqrt(np.maximum(l1_sq, 1.0))
    l2 = np.sqrt(np.maximum(b / l1_sq, 1.0))
    if params.detection == "homodyne":
        c = (big_v * sb + t * (big_v + chi_line) + a * chi_det) / (t * (big_v + chi_tot))
        d = sb * (big_v + sb * chi_det) / (t * (big_v + chi_tot))
    else:
        c = (
            a * chi_det**2
            + b
            + 1.0
            + 2.0 * chi_det * (big_v * sb + t * (big_v + chi_line))
            + 2.0 * t * (big_v**2 - 1.0)
        ) / (t**2 * (big_v + chi_tot) ** 2)
        d = ((big_v + sb * chi_det) / (t * (big_v + chi_tot))) ** 2
    disc2 = np.sqrt(np.maximum(c * c - 4.0 * d, 0.0))
    l3_sq = (c + disc2) / 2.0
    l3 = np.sqrt(np.maximum(l3_sq, 1.0))
    l4 = np.sqrt(np.maximum(d / l3_sq, 1.0))
    chi_be = _g(l1) + _g(l2) - _g(l3) - _g(l4)
    k = params.beta * i_ab - chi_be
    return _out(np.maximum(k, 0.0), transmittance)


#: Search interval of :func:`optimal_v_a`, shot-noise units.
V_A_BOUNDS = (0.05, 100.0)
#: Smallest transmittance at which :func:`gg02_rate` is computed (500 km of 0.2 dB/km fibre).
#: The rate is a small difference of entropies that grow like ``log2(1/T)``; below ~1e-12
#: the rounding error of that difference exceeds the rate (checked: ``K/T`` drifts smoothly
#: to 5e-11 and jumps about below 1e-12), so the model stops two decades earlier.
GG02_MIN_TRANSMITTANCE = 1e-10


def optimal_v_a(
    transmittance: float,
    params: CvParameters | None = None,
    *,
    bounds: tuple[float, float] = V_A_BOUNDS,
) -> tuple[float, float]:
    r"""Modulation variance that maximises :func:`gg02_rate` at one transmittance.

    Parameters
    ----------
    transmittance
        Channel transmittance :math:`T`, (0, 1].
    params
        The CV system (its ``v_a`` is ignored); default :class:`CvParameters`.
    bounds
        Search interval of :math:`V_A`, SNU, ``0 < low < high``.

    Returns
    -------
    (float, float)
        The optimal :math:`V_A` and the rate there (bits per symbol). Where no :math:`V_A`
        gives key, the rate is 0 and :math:`V_A` the grid point with the largest (zero)
        rate, which is meaningless.

    Examples
    --------
    >>> va, k = optimal_v_a(10 ** (-0.2 * 25 / 10))
    >>> k >= gg02_rate(10 ** (-0.2 * 25 / 10), 18.5) > 0
    True

    Notes
    -----
    As :func:`optimal_mu`: a logarithmic grid of 61 points over ``bounds``, then a bounded
    Brent refinement (``scipy.optimize.minimize_scalar``) in :math:`\log V_A` around the best
    grid point. The rate is unimodal in :math:`V_A` for the parameters here (checked against
    a dense grid in the tests).
    """
    p = params if params is not None else CvParameters()
    t = v.in_range("transmittance", transmittance, 0.0, 1.0, low_open=True)
    lo = v.in_range("bounds[0]", bounds[0], 0.0, None, low_open=True)
    hi = v.in_range("bounds[1]", bounds[1], lo, None, low_open=True)

    def rate(log_va: NDArray[np.float64] | float) -> NDArray[np.float64]:
        return np.asarray(
            gg02_rate(t, np.exp(log_va), p.xi, p.eta_det, p.v_el, p.beta, p.detection)  # type: ignore[arg-type]
        )

    grid = np.linspace(math.log(lo), math.log(hi), 61)
    values = np.array([float(rate(float(x))) for x in grid])
    i = int(np.argmax(values))
    if values[i] <= 0.0:
        return float(math.exp(grid[i])), 0.0
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(
        lambda x: -float(rate(float(x))), bounds=(a, b), method="bounded", options={"xatol": 1e-7}
    )
    if -float(res.fun) >= values[i]:
        return float(math.exp(float(res.x))), -float(res.fun)
    return float(math.exp(grid[i])), float(values[i])


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class KeyRate:
    """The analytic key rate of one protocol over one link.

    Attributes
    ----------
    protocol
        Canonical protocol name.
    distance_km
        Fibre length of the link.
    rate_per_pulse
        Secret bits per (signal) pulse, per symbol for ``cv-gg02``, per channel use for
        ``plob``.
    rate_bps
        ``rate_per_pulse`` times the link's repetition rate, bit/s.
    gain
        The signal gain behind the rate (sifted, conclusive gain for ``sarg04``; coincidence
        gain for ``bbm92``/``e91``), ``None`` for ``cv-gg02`` and ``plob``.
    qber
        The QBER behind the rate, ``None`` for ``cv-gg02`` and ``plob``.
    v_a
        ``cv-gg02`` only: the modulation variance used, SNU (the optimum when the
        parameters ask for ``"optimal"``); ``None`` otherwise.
    """

    protocol: str
    distance_km: float
    rate_per_pulse: float
    rate_bps: float
    gain: float | None
    qber: float | None
    v_a: float | None = None


_DECOY_METHODS = ("infinite", "vacuum+weak")


def _wcp(protocol: str, model: LinkModel) -> WeakCoherentSource:
    if not isinstance(model.source, WeakCoherentSource):
        raise ConfigError(
            f"{protocol} needs a weak coherent source, got {type(model.source).__name__}",
            field="source",
            value=type(model.source).__name__,
            allowed="WeakCoherentSource",
        )
    return model.source


def _prepare_measure_params(model: LinkModel) -> tuple[float, float, float, float]:
    det = model.detector
    return model.eta, det.background_yield, det.misalignment, model.ec_efficiency


def _bb84(model: LinkModel) -> tuple[float, float, float]:
    eta, y0, e_d, f = _prepare_measure_params(model)
    src = model.source
    if isinstance(src, SinglePhotonSource):
        # one photon with probability p_src, else vacuum: Y = 1 - (1 - Y0)(1 - p_src eta)
        miss = 1.0 - src.efficiency * eta
        q = 1.0 - (1.0 - y0) * miss
        e = (0.5 * y0 * miss + e_d * (1.0 - miss)) / q if q > 0 else 0.5
        return float(shor_preskill_rate(q, e, f)), q, e
    wcp = _wcp("bb84", model)
    q = float(wcp_gain(eta, wcp.mu, y0))
    e = float(wcp_qber(eta, wcp.mu, y0, e_d))
    return float(gllp_no_decoy_rate(wcp.mu, q, e, f)), q, e


def _decoy_bb84(model: LinkModel, decoys: str) -> tuple[float, float, float]:
    eta, y0, e_d, f = _prepare_measure_params(model)
    wcp = _wcp("decoy-bb84", model)
    mu = wcp.mu
    q = float(wcp_gain(eta, mu, y0))
    e = float(wcp_qber(eta, mu, y0, e_d))
    if decoys == "infinite":
        y1 = float(photon_yield(1, eta, y0))
        e1 = float(photon_error(1, eta, y0, e_d))
    else:
        weak = [d for d in wcp.decoys if d > 0.0]
        if not weak:
            raise ConfigError(
                "the vacuum+weak decoy analysis needs a weak decoy intensity > 0",
                field="decoys",
                value=wcp.decoys,
                allowed="e.g. (0.1, 0.0)",
            )
        nu = weak[0]
        # The vacuum decoy measures Y0 directly; without one the calibrated Y0 of the model
        # is used as if it had been measured.
        q_nu = float(wcp_gain(eta, nu, y0))
        e_nu = float(wcp_qber(eta, nu, y0, e_d))
        y1, e1 = vacuum_weak_decoy_bounds(mu, nu, q, q_nu, e_nu, y0)
        if y1 <= 0.0:
            return 0.0, q, e
    q1 = y1 * mu * math.exp(-mu)
    return float(gllp_rate(q, e, q1, e1, f)), q, e


def _sarg04(model: LinkModel) -> tuple[float, float, float]:
    eta, y0, e_d, f = _prepare_measure_params(model)
    src = model.source
    if isinstance(src, SinglePhotonSource):
        pd = 1.0 - math.sqrt(1.0 - y0)
        a0, b0 = _sarg04_fock(0, np.asarray(eta), np.asarray(pd), np.asarray(e_d))
        a1, b1 = _sarg04_fock(1, np.asarray(eta), np.asarray(pd), np.asarray(e_d))
        p1 = src.efficiency
        q1 = p1 * float(a1 + b1) / 2.0
        e1 = float(b1 / (a1 + b1)) if float(a1 + b1) > 0 else 0.5
        q = q1 + (1.0 - p1) * float(a0 + b0) / 2.0
        e = ((1.0 - p1) * float(b0) / 2.0 + p1 * float(b1) / 2.0) / q if q > 0 else 0.5
        return float(sarg04_rate(q, e, q1, e1, 0.0, 0.0, f)), q, e
    wcp = _wcp("sarg04", model)
    obs = sarg04_expected(eta, wcp.mu, y0, e_d)
    return float(sarg04_rate(*obs, f)), float(obs.gain), float(obs.qber)


def _bbm92(protocol: str, model: LinkModel) -> tuple[float, float, float]:
    src = model.source
    if not isinstance(src, EntangledPairSource):
        raise ConfigError(
            f"{protocol} needs an entangled pair source, got {type(src).__name__}",
            field="source",
            value=type(src).__name__,
            allowed="EntangledPairSource",
        )
    det = model.detector
    t_a, t_b = model.arm_transmittances()
    y0 = det.background_yield
    q, e = bbm92_expected(
        t_a * det.efficiency, t_b * det.efficiency, src.mu, y0, y0, det.misalignment
    )
    # BBM92: both sides pick 0 or 45 degrees, half the coincidences have matching settings.
    # E91: three angles per side, only (22.5, 22.5) and (45, 45) make key: 2 of 9 pairs.
    sifting = 0.5 if protocol == "bbm92" else 2.0 / 9.0
    return float(bbm92_rate(q, e, model.ec_efficiency, sifting=sifting)), float(q), float(e)


def analytic_key_rate(
    protocol: str,
    model: LinkModel,
    *,
    decoys: str = "vacuum+weak",
    cv: CvParameters | None = None,
) -> KeyRate:
    r"""Asymptotic secret-key rate of ``protocol`` over ``model``, from the matching formula.

    Parameters
    ----------
    protocol
        ``bb84``, ``decoy-bb84``, ``sarg04``, ``bbm92``, ``e91``, ``cv-gg02`` or ``plob``
        (aliases accepted, see :func:`~qkdtwin.qkd.protocols.canonical_protocol`).
    model
        The link. Prepare-and-measure protocols use ``model.eta`` (channel times Bob's
        detection efficiency), ``model.detector.background_yield`` (:math:`Y_0`),
        ``model.detector.misalignment`` (:math:`e_d`), ``model.ec_efficiency`` and the source
        intensity ``model.source.mu``.
    decoys
        ``decoy-bb84`` only: ``"vacuum+weak"`` (default) bounds :math:`Y_1, e_1` with the
        first non-zero decoy intensity of ``model.source.decoys`` as the weak decoy and the
        vacuum decoy's gain as :math:`Y_0` (without a vacuum decoy, the model's calibrated
        :math:`Y_0` is used as if measured); ``"infinite"`` uses the true single-photon
        yield and error rate.
    cv
        ``cv-gg02`` only: the CV system; defaults to :class:`CvParameters` (Lodewyck 2007
        hardware, modulation variance optimised at this distance).
        The transmittance is ``model.transmittance``; the single-photon detector of the model
        plays no role.

    Returns
    -------
    KeyRate
        Rate per pulse and in bit/s (``rate_per_pulse * model.repetition_rate_hz``), with the
        gain and QBER behind it.

    Raises
    ------
    UnknownNameError
        If the protocol is unknown.
    ConfigError
        If the source does not fit the protocol (e.g. ``decoy-bb84`` without a weak coherent
        source, ``bbm92`` without a pair source) or ``decoys`` is not a known method.

    Examples
    --------
    >>> from qkdtwin.qkd.model import build_link_model
    >>> kr = analytic_key_rate("decoy-bb84", build_link_model("decoy-bb84", 50.0, "gys"))
    >>> kr.rate_per_pulse > 0, kr.protocol
    (True, 'decoy-bb84')

    Notes
    -----
    Formulas: ``bb84`` — GLLP without decoys (:func:`gllp_no_decoy_rate`), or Shor-Preskill
    (:func:`shor_preskill_rate`) for a :class:`SinglePhotonSource` of efficiency
    :math:`p`, whose gain is :math:`1 - (1-Y_0)(1 - p\eta)`; ``decoy-bb84`` —
    :func:`gllp_rate` with :math:`Q_1 = Y_1\mu e^{-\mu}`; ``sarg04`` — infinitely many
    decoys, :func:`sarg04_rate` with the true one- and two-photon observables;
    ``bbm92``/``e91`` — :func:`bbm92_rate` with arms ``model.arm_transmittances()`` times the
    detector efficiency, sifting 1/2 for BBM92 and 2/9 for E91 (two of its nine
    setting pairs make key; the other seven estimate the CHSH value); ``cv-gg02`` —
    :func:`gg02_rate`; ``plob`` — :func:`plob_bound` of the channel transmittance.
    Decoy rates are per signal pulse (decoys a vanishing fraction, Lo-Ma-Chen's convention).
    """
    name = canonical_protocol(protocol)
    if decoys not in _DECOY_METHODS:
        raise ConfigError(
            f"decoys must be one of {', '.join(_DECOY_METHODS)}, got {decoys!r}",
            field="decoys",
            value=decoys,
            allowed=", ".join(_DECOY_METHODS),
        )
    gain: float | None
    qber: float | None
    if name == "bb84":
        rate, gain, qber = _bb84(model)
    elif name == "decoy-bb84":
        rate, gain, qber = _decoy_bb84(model, decoys)
    elif name == "sarg04":
        rate, gain, qber = _sarg04(model)
    elif name in ("bbm92", "e91"):
        rate, gain, qber = _bbm92(name, model)
    elif name == "cv-gg02":
        p = cv if cv is not None else CvParameters()
        if p.v_a == "optimal":
            v_a, rate = optimal_v_a(model.transmittance, p)
        else:
            v_a = float(p.v_a)
            rate = float(
                gg02_rate(model.transmittance, v_a, p.xi, p.eta_det, p.v_el, p.beta, p.detection)
            )
        gain = qber = None
    else:  # plob
        rate = float(plob_bound(model.transmittance))
        gain = qber = None
    return KeyRate(
        protocol=name,
        distance_km=model.distance_km,
        rate_per_pulse=rate,
        rate_bps=rate * model.repetition_rate_hz,
        gain=gain,
        qber=qber,
        v_a=v_a if name == "cv-gg02" else None,
    )


def _with_mu(model: LinkModel, mu: float, keep_decoys: bool) -> LinkModel:
    src = model.source
    if isinstance(src, EntangledPairSource):
        return replace(model, source=EntangledPairSource(mu))
    if isinstance(src, WeakCoherentSource):
        if keep_decoys:
            return replace(model, source=replace(src, mu=mu))
        return replace(model, source=WeakCoherentSource(mu))
    raise ConfigError(
        "the intensity of a single-photon source cannot be optimised",
        field="source",
        value=type(src).__name__,
        allowed="WeakCoherentSource, EntangledPairSource",
    )


def optimal_mu(
    protocol: str,
    model: LinkModel,
    *,
    decoys: str = "infinite",
    bounds: tuple[float, float] = (1e-5, 1.5),
) -> float:
    r"""Source intensity that maximises the analytic key rate of ``protocol`` over ``model``.

    Parameters
    ----------
    protocol
        A protocol whose rate depends on a source intensity: ``bb84``, ``decoy-bb84``,
        ``sarg04`` (weak coherent sources) or ``bbm92``/``e91`` (mean pair number).
    model
        The link; only its source intensity is varied.
    decoys
        For ``decoy-bb84``: ``"infinite"`` (default, as in Lo-Ma-Chen's optimisation) or
        ``"vacuum+weak"``, which keeps the model's decoys and searches above the weak decoy.
    bounds
        Search interval of the intensity, ``0 < low < high``.

    Returns
    -------
    float
        The optimal intensity; at a distance with no key for any intensity, the value with the
        largest (zero) rate, which is meaningless.

    Raises
    ------
    ConfigError
        If the protocol has no intensity to optimise or ``bounds`` is not an interval.

    Examples
    --------
    >>> from qkdtwin.qkd.model import build_link_model
    >>> mu = optimal_mu("decoy-bb84", build_link_model("decoy-bb84", 50.0, "gys"))
    >>> 0.4 < mu < 0.6
    True

    Notes
    -----
    A coarse logarithmic grid (the no-decoy rate is non-zero only in a narrow window
    :math:`\mu = O(\eta)`) followed by a bounded Brent refinement
    (``scipy.optimize.minimize_scalar``) in :math:`\log\mu` around the best grid point.
    """
    name = canonical_protocol(protocol)
    if name not in ("bb84", "decoy-bb84", "sarg04", "bbm92", "e91"):
        raise ConfigError(
            f"{name} has no source intensity to optimise",
            field="protocol",
            value=protocol,
            allowed="bb84, decoy-bb84, sarg04, bbm92, e91",
        )
    lo = v.in_range("bounds[0]", bounds[0], 0.0, None, low_open=True)
    hi = v.in_range("bounds[1]", bounds[1], lo, None, low_open=True)
    keep = name == "decoy-bb84" and decoys == "vacuum+weak"
    if keep:
        src = _wcp(name, model)
        weak = max(src.decoys, default=0.0)
        lo = max(lo, weak * (1.0 + 1e-9) + 1e-12)
        if lo >= hi:
            raise ConfigError(
                f"no intensity above the weak decoy {weak:g} within bounds {bounds!r}",
                field="bounds",
                value=bounds,
            )

    def rate(log_mu: float) -> float:
        m = _with_mu(model, math.exp(log_mu), keep)
        return analytic_key_rate(name, m, decoys=decoys).rate_per_pulse

    grid = np.linspace(math.log(lo), math.log(hi), 61)
    values = [rate(float(x)) for x in grid]
    i = int(np.argmax(values))
    if values[i] <= 0.0:
        return float(math.exp(grid[i]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(
        lambda x: -rate(float(x)), bounds=(a, b), method="bounded", options={"xatol": 1e-6}
    )
    best = float(res.x) if -float(res.fun) >= values[i] else float(grid[i])
    return float(math.exp(best))


def gg02_range_km(model: LinkModel) -> float:
    """Fibre length at which ``model``'s transmittance reaches :data:`GG02_MIN_TRANSMITTANCE`.

    Where :func:`gg02_rate` stops being computed; ``inf`` for a lossless fibre.
    """
    t0 = model.with_distance(0.0).transmittance
    loss_db_per_km = model.channel.attenuation_db_per_km
    if loss_db_per_km <= 0:
        return math.inf
    return max(0.0, 10.0 * math.log10(t0 / GG02_MIN_TRANSMITTANCE) / loss_db_per_km)


def max_distance(
    protocol: str,
    model: LinkModel,
    *,
    optimize_mu: bool = False,
    search_limit_km: float = 1000.0,
    tolerance_km: float = 1e-4,
    **kw: object,
) -> float | None:
    """Longest fibre, in km, over which ``protocol`` still yields a positive key rate.

    Parameters
    ----------
    protocol
        Protocol name, as in :func:`analytic_key_rate`.
    model
        The link; its fibre length is varied with :meth:`LinkModel.with_distance`, keeping the
        attenuation and insertion loss.
    optimize_mu
        Re-optimise the source intensity at every distance (:func:`optimal_mu`) instead of
        using the model's.
    search_limit_km
        Upper end of the search (> 0).
    tolerance_km
        Width of the final bracket.
    **kw
        Passed to :func:`analytic_key_rate` (``decoys``, ``cv``).

    Returns
    -------
    float or None
        The distance where the rate drops to zero (0.0 if there is no key even at 0 km);
        ``None`` for ``plob``, which is positive at every finite distance.

    Raises
    ------
    SimulationError
        If the rate is still positive at ``search_limit_km`` (e.g. a lossless fibre).
    ConfigError
        For an unknown protocol or a source that does not fit it.

    Examples
    --------
    >>> from qkdtwin.qkd.model import build_link_model
    >>> d = max_distance("decoy-bb84", build_link_model("decoy-bb84", 0.0, "gys"))
    >>> 130 < d < 145
    True

    Notes
    -----
    Every rate here is non-increasing in distance, so the transition from positive to zero
    rate is found by bisection on the sign of the (clipped) rate, ~25 evaluations.
    """
    name = canonical_protocol(protocol)
    if name == "plob":
        return None
    limit = v.in_range("search_limit_km", search_limit_km, 0.0, None, low_open=True)
    tol = v.in_range("tolerance_km", tolerance_km, 0.0, None, low_open=True)
    decoys = str(kw.get("decoys", "vacuum+weak"))
    cv = kw.get("cv")
    if cv is not None and not isinstance(cv, CvParameters):
        raise ConfigError("cv must be a CvParameters", field="cv", value=cv)
    unknown = set(kw) - {"decoys", "cv"}
    if unknown:
        raise ConfigError(
            f"unexpected keyword arguments {sorted(unknown)}",
            field="kw",
            value=sorted(unknown),
            allowed="decoys, cv",
        )

    def positive(d: float) -> bool:
        m = model.with_distance(d)
        if optimize_mu:
            m = _with_mu(
                m,
                optimal_mu(name, m, decoys=decoys),
                name == "decoy-bb84" and decoys == "vacuum+weak",
            )
        return analytic_key_rate(name, m, decoys=decoys, cv=cv).rate_per_pulse > 0.0

    if name == "cv-gg02":
        # the GG02 formula is computed down to GG02_MIN_TRANSMITTANCE only
        reach = gg02_range_km(model)
        if reach < limit:
            limit = reach
            if positive(limit):
                raise SimulationError(
                    f"cv-gg02 still has a positive key rate at {limit:.0f} km, where the GG02 "
                    f"model's numerical range ends (transmittance {GG02_MIN_TRANSMITTANCE:g}); "
                    "with constant input-referred excess noise the reach is set by xi and beta "
                    "(e.g. xi = 0.03 ends it before 200 km)"
                )
    if not positive(0.0):
        return 0.0
    if positive(limit):
        raise SimulationError(
            f"{name} still has a positive key rate at {limit:g} km; raise search_limit_km"
        )
    lo, hi = 0.0, limit
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if positive(mid):
            lo = mid
        else:
            hi = mid
    return lo
