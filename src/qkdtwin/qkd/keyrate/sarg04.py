"""SARG04 with a weak coherent source and key from single- and two-photon pulses.

* :func:`sarg04_expected` gives the expected sifted (conclusive) gain and error rate of the
  signal and of its one- and two-photon parts (:class:`Sarg04Observables`);
* :func:`sarg04_phase_error_bound` bounds the phase error rate of the ``n``-photon part
  from its bit error rate (Tamaki-Lo);
* :func:`sarg04_rate` is the decoy-state SARG04 rate of Fung, Tamaki, Lo, PRA 73, 012337
  (2006).

Protocol: Scarani, Acín, Ribordy, Gisin, PRL 92, 057901 (2004). Units: gains per pulse
sent (conclusive results only), rates secret bits per pulse, clipped at zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.keyrate.common import FloatOrArray, _arr, _h2, _out

__all__ = [
    "Sarg04Observables",
    "sarg04_expected",
    "sarg04_phase_error_bound",
    "sarg04_rate",
]


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
