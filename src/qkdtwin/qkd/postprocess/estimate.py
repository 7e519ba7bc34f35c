"""Parameter estimation: the QBER from a random sample, with a finite-size upper bound.

Alice and Bob disclose a uniformly random subset of ``k`` of their ``n + k`` sifted bits,
compare them and drop them from the key. The error rate of the ``n`` remaining bits is then,
with probability at least ``1 - eps``, below the sample's error rate plus

    mu(n, k, eps) = sqrt( (n + k) / (n k) * (k + 1) / k * ln(1 / eps) ),

the sampling-without-replacement (Serfling) bound in the form used by Tomamichel, Lim, Gisin,
Renner, Nat. Commun. 3, 634 (2012) (their ``mu`` with ``ln(1/eps)``). For BB84 the same bound
applies to the phase error rate of the key bits, estimated from bits measured in the other
basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError

__all__ = ["QberEstimate", "sample_qber", "serfling_deviation"]


def serfling_deviation(n: int, k: int, eps: float) -> float:
    """Return the finite-size deviation ``mu(n, k, eps)`` of the unseen bits' error rate.

    Parameters
    ----------
    n
        Bits kept (not disclosed).
    k
        Bits sampled and disclosed.
    eps
        Failure probability, in (0, 1).

    Examples
    --------
    >>> round(serfling_deviation(10**6, 10**5, 1e-10), 4)
    0.0159
    """
    if n < 1 or k < 1:
        raise ConfigError("both the sample and the rest must be non-empty", field="sample")
    if not 0.0 < eps < 1.0:
        raise ConfigError(
            f"eps must be in (0, 1), got {eps}", field="eps", value=eps, allowed="(0, 1)"
        )
    return math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(1.0 / eps))


@dataclass(frozen=True)
class QberEstimate:
    """Outcome of :func:`sample_qber`.

    Attributes
    ----------
    sample_size, sample_errors
        Bits disclosed and how many of them differed.
    qber
        Observed error rate of the sample.
    qber_upper
        Upper bound on the error rate of the kept bits (``qber + mu``), capped at 0.5.
    keep
        Indices of the bits that remain for the key, in order.
    aborted
        Whether ``qber_upper`` exceeded the abort threshold.
    """

    sample_size: int
    sample_errors: int
    qber: float
    qber_upper: float
    keep: NDArray[np.intp]
    aborted: bool


def sample_qber(
    alice: NDArray[np.uint8],
    bob: NDArray[np.uint8],
    rng: np.random.Generator,
    *,
    sample_fraction: float = 0.1,
    eps: float = 1e-10,
    abort_threshold: float = 0.11,
) -> QberEstimate:
    """Estimate the QBER on a random sample and bound it for the remaining bits.

    Parameters
    ----------
    alice, bob
        Sifted bits of equal length.
    rng
        Chooses the sample.
    sample_fraction
        Fraction of the bits disclosed, in (0, 1).
    eps
        Failure probability of the bound, in (0, 1).
    abort_threshold
        The protocol aborts when the bound exceeds it (11 % for BB84 with one-way
        post-processing, the Shor-Preskill limit).

    Raises
    ------
    ConfigError
        For empty or mismatched inputs, a fraction or eps outside (0, 1), or a sample or
        remainder that would be empty.
    """
    a = np.asarray(alice, dtype=np.uint8)
    b = np.asarray(bob, dtype=np.uint8)
    if a.size == 0 or a.size != b.size:
        raise ConfigError(
            f"sifted keys must be non-empty and of equal length, got {a.size} and {b.size}",
            field="sifted_bits",
        )
    if not 0.0 < sample_fraction < 1.0:
        raise ConfigError(
            f"sample_fraction must be in (0, 1), got {sample_fraction}",
            field="sample_fraction",
            value=sample_fraction,
            allowed="(0, 1)",
        )
    total = a.size
    k = max(1, round(total * sample_fraction))
    if k >= total:
        raise ConfigError(
            f"{total} sifted bits are too few to sample {sample_fraction:g}",
            field="sifted_bits",
            value=total,
        )
    sample = np.sort(rng.choice(total, size=k, replace=False))
    mask = np.ones(total, dtype=bool)
    mask[sample] = False
    errors = int(np.count_nonzero(a[sample] != b[sample]))
    q = errors / k
    upper = min(0.5, q + serfling_deviation(total - k, k, eps))
    return QberEstimate(k, errors, q, upper, np.flatnonzero(mask), upper > abort_threshold)
