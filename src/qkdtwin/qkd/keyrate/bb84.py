"""Weak coherent and decoy-state BB84: the Lo-Ma-Chen channel model and the GLLP rates.

* the expected observables of phase-randomised weak coherent pulses over a lossy channel
  (:func:`wcp_gain`, :func:`wcp_qber`) and of their ``n``-photon parts (:func:`photon_yield`,
  :func:`photon_error`): Lo, Ma, Chen, PRL 94, 230504 (2005); Ma, Qi, Zhao, Lo, PRA 72,
  012326 (2005);
* the GLLP rate with decoy states (:func:`gllp_rate`) and without (:func:`gllp_no_decoy_rate`,
  every multi-photon click insecure): Gottesman, Lo, Lütkenhaus, Preskill, Quantum Inf.
  Comput. 4, 325 (2004);
* the vacuum + weak decoy bounds on :math:`Y_1` and :math:`e_1` of Ma-Qi-Zhao-Lo
  (:func:`vacuum_weak_decoy_bounds`);
* the Shor-Preskill rate of single-photon BB84 (:func:`shor_preskill_rate`), PRL 85, 441
  (2000).

Units: gains and yields are probabilities per pulse, error rates fractions in [0, 1/2],
rates secret bits per (signal) pulse, clipped at zero.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from qkdtwin import _validate as v
from qkdtwin.errors import ConfigError
from qkdtwin.qkd.keyrate.common import FloatOrArray, _arr, _h2, _miss_hit, _out

__all__ = [
    "gllp_no_decoy_rate",
    "gllp_rate",
    "photon_error",
    "photon_yield",
    "shor_preskill_rate",
    "vacuum_weak_decoy_bounds",
    "wcp_gain",
    "wcp_qber",
]


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
