"""Secret key length of a finite block, from published finite-key analyses.

Two analyses, both secure against general (coherent) attacks and composable:

* :func:`tomamichel_key_length` — BB84 with single photons or entangled pairs (squashed
  detectors), Tomamichel, Lim, Gisin, Renner, "Tight finite-key analysis for quantum
  cryptography", Nat. Commun. 3, 634 (2012)::

      l = n (1 - h(Q + mu)) - leak_EC - log2(2 / (eps_sec^2 eps_cor)),
      mu = sqrt( (n + k) / (n k) * (k + 1) / k * ln(2 / eps_sec) )

  with ``n`` key bits, ``k`` bits of the other basis (or a random sample) for estimating the
  phase error rate, ``Q`` their observed error rate.

* :func:`lim_decoy_key_length` — decoy-state BB84 with three intensities (signal ``mu1``,
  ``mu2``, ``mu3`` with ``mu1 > mu2 + mu3``, ``mu2 > mu3 >= 0``), Lim, Curty, Walenta, Xu,
  Zbinden, "Concise security bounds for practical decoy-state quantum key distribution",
  PRA 89, 022307 (2014)::

      l = s0 + s1 (1 - h(phi)) - leak_EC - 6 log2(21 / eps_sec) - log2(2 / eps_cor)

  with the vacuum and single-photon detection lower bounds ``s0``, ``s1`` (Hoeffding-corrected
  counts ``n_k^± = e^mu_k / p_k (n_k ± sqrt(n / 2 ln(21 / eps_sec)))``) and the phase error
  upper bound ``phi = v1 / s1,X + gamma(...)``, the formulas of the paper's Eqs. (2)-(8) as
  read here (see ``docs/postprocess.md``).

Both return 0 when the formula is negative. As the block grows, the rate ``l / N`` tends to the
asymptotic GLLP / Shor-Preskill rate (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

from qkdtwin.errors import ConfigError

__all__ = ["DecoyCounts", "h2", "lim_decoy_key_length", "tomamichel_key_length"]


def h2(p: float) -> float:
    """Binary entropy in bits (0 at 0 and 1; argument clipped to [0, 1])."""
    p = min(max(p, 0.0), 1.0)
    if p in (0.0, 1.0):
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def _eps(name: str, value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ConfigError(
            f"{name} must be in (0, 1), got {value}", field=name, value=value, allowed="(0, 1)"
        )
    return value


def tomamichel_key_length(
    n: int,
    k: int,
    qber: float,
    leak_ec: float,
    *,
    eps_sec: float = 1e-10,
    eps_cor: float = 1e-15,
) -> int:
    """Secret key length (bits) of BB84 with single photons, Tomamichel et al. 2012.

    Parameters
    ----------
    n
        Key bits after sifting and sampling.
    k
        Bits used to estimate the phase error rate.
    qber
        Observed error rate of those ``k`` bits.
    leak_ec
        Bits disclosed by error correction and verification.
    eps_sec, eps_cor
        Secrecy and correctness parameters, in (0, 1).

    Raises
    ------
    ConfigError
        For negative sizes, a QBER outside [0, 0.5] or epsilons outside (0, 1).
    """
    _eps("eps_sec", eps_sec)
    _eps("eps_cor", eps_cor)
    if n < 0 or k < 0:
        raise ConfigError("n and k must be >= 0", field="n")
    if not 0.0 <= qber <= 0.5:
        raise ConfigError(f"qber must be in [0, 0.5], got {qber}", field="qber", value=qber)
    if n == 0 or k == 0:
        return 0
    mu = math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(2.0 / eps_sec))
    length = n * (1.0 - h2(min(qber + mu, 0.5))) - leak_ec - math.log2(2.0 / (eps_sec**2 * eps_cor))
    return max(0, math.floor(length))


@dataclass(frozen=True)
class DecoyCounts:
    """Observed counts of a three-intensity decoy-state run, per intensity (signal first).

    Attributes
    ----------
    intensities
        ``(mu1, mu2, mu3)``.
    probabilities
        Probability of choosing each intensity.
    n_z, n_x
        Detections in the key basis Z and the test basis X (both parties in that basis).
    m_x
        Errors among the X-basis detections.
    """

    intensities: tuple[float, float, float]
    probabilities: tuple[float, float, float]
    n_z: tuple[int, int, int]
    n_x: tuple[int, int, int]
    m_x: tuple[int, int, int]


def _tau(n: int, mus: tuple[float, ...], ps: tuple[float, ...]) -> float:
    return sum(math.exp(-m) * m**n * p for m, p in zip(mus, ps, strict=True)) / math.factorial(n)


def _bounds(
    counts: tuple[int, int, int], mus: tuple[float, ...], ps: tuple[float, ...], eps_sec: float
) -> tuple[list[float], list[float]]:
    total = sum(counts)
    delta = math.sqrt(total / 2.0 * math.log(21.0 / eps_sec))
    lo = [math.exp(m) / p * (c - delta) for m, p, c in zip(mus, ps, counts, strict=True)]
    hi = [math.exp(m) / p * (c + delta) for m, p, c in zip(mus, ps, counts, strict=True)]
    return lo, hi


def _s0_s1(
    counts: tuple[int, int, int], mus: tuple[float, ...], ps: tuple[float, ...], eps_sec: float
) -> tuple[float, float]:
    mu1, mu2, mu3 = mus
    lo, hi = _bounds(counts, mus, ps, eps_sec)
    tau0, tau1 = _tau(0, mus, ps), _tau(1, mus, ps)
    s0 = max(0.0, tau0 * (mu2 * lo[2] - mu3 * hi[1]) / (mu2 - mu3))
    s1 = (
        tau1
        * mu1
        * (lo[1] - hi[2] - (mu2**2 - mu3**2) / mu1**2 * (hi[0] - s0 / tau0))
        / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
    )
    return s0, max(0.0, s1)


def _gamma(a: float, b: float, c: float, d: float) -> float:
    if b <= 0.0 or b >= 1.0:
        return 0.0
    return math.sqrt(
        (c + d)
        * (1 - b)
        * b
        / (c * d * math.log(2))
        * math.log2((c + d) / (c * d * (1 - b) * b) * 21.0**2 / a**2)
    )


class LimBounds(TypedDict):
    """The bounds a Lim et al. 2014 key length used (:func:`lim_decoy_key_length`)."""

    s0: float
    s1: float
    s1_x: float
    v1: float
    phi: float


def lim_decoy_key_length(
    counts: DecoyCounts,
    leak_ec: float,
    *,
    eps_sec: float = 1e-10,
    eps_cor: float = 1e-15,
) -> tuple[int, LimBounds]:
    """Secret key length of decoy-state BB84, Lim et al. 2014.

    Returns
    -------
    tuple
        ``(length_bits, details)`` with ``s0``, ``s1``, ``v1``, ``phi`` (the bounds used).

    Raises
    ------
    ConfigError
        If the intensities do not satisfy ``mu1 > mu2 + mu3`` and ``mu2 > mu3 >= 0``, or the
        epsilons are outside (0, 1).
    """
    _eps("eps_sec", eps_sec)
    _eps("eps_cor", eps_cor)
    mus, ps = counts.intensities, counts.probabilities
    mu1, mu2, mu3 = mus
    if not (mu1 > mu2 + mu3 and mu2 > mu3 >= 0.0):
        raise ConfigError(
            f"intensities {mus} must satisfy mu1 > mu2 + mu3 and mu2 > mu3 >= 0 (Lim et al. 2014)",
            field="decoys",
            value=mus,
        )
    s0z, s1z = _s0_s1(counts.n_z, mus, ps, eps_sec)
    _, s1x = _s0_s1(counts.n_x, mus, ps, eps_sec)
    lo_m, hi_m = _bounds(counts.m_x, mus, ps, eps_sec)
    tau1 = _tau(1, mus, ps)
    v1 = max(0.0, tau1 * (hi_m[1] - lo_m[2]) / (mu2 - mu3))
    details: LimBounds = {"s0": s0z, "s1": s1z, "s1_x": s1x, "v1": v1, "phi": 0.5}
    if s1z <= 0.0 or s1x <= 0.0:
        return 0, details
    ratio = min(v1 / s1x, 0.5)
    phi = min(0.5, ratio + _gamma(eps_sec, ratio, s1z, s1x))
    details["phi"] = phi
    length = (
        s0z
        + s1z * (1.0 - h2(phi))
        - leak_ec
        - 6.0 * math.log2(21.0 / eps_sec)
        - math.log2(2.0 / eps_cor)
    )
    return max(0, math.floor(length)), details
