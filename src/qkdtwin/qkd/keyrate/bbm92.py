"""Entanglement-based QKD (BBM92, E91) with a parametric down-conversion pair source.

* :func:`bbm92_expected` gives the coincidence gain and QBER of a PDC source between two
  lossy arms with threshold detectors (Ma, Fung, Lo, "Quantum key distribution with
  entangled photon sources", PRA 76, 012307 (2007), Sec. III);
* :func:`bbm92_rate` is the Shor-Preskill-type rate with the measured gain and QBER, valid
  for an untrusted source (Bennett, Brassard, Mermin, PRL 68, 557 (1992)).

Units: the gain is the probability per pump pulse that both Alice and Bob click; rates are
secret bits per pulse, clipped at zero.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from qkdtwin.qkd.keyrate.bb84 import shor_preskill_rate
from qkdtwin.qkd.keyrate.common import FloatOrArray, _arr, _out

__all__ = [
    "bbm92_expected",
    "bbm92_rate",
]


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
