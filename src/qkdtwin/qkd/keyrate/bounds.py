r"""Bounds that no protocol can beat: the PLOB repeaterless bound.

:func:`plob_bound` is the secret-key capacity of the pure-loss channel,
:math:`-\log_2(1-\eta)` bits per channel use (Pirandola, Laurenza, Ottaviani, Banchi,
Nat. Commun. 8, 15043 (2017)); every rate of the package stays below it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from qkdtwin.qkd.keyrate.common import _LN2, FloatOrArray, _arr, _out

__all__ = [
    "plob_bound",
]


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
