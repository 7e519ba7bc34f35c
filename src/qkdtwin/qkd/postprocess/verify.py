"""Key verification with an almost-universal polynomial hash over GF(p), p = 2^61 - 1.

After reconciliation Alice and Bob compare a short tag of their keys. The key is cut into
``L`` words of 60 bits, read as elements of GF(p) with the Mersenne prime ``p = 2^61 - 1``, and
the tag is the polynomial ``sum_i w_i r^(L - i) mod p`` evaluated at a public random point
``r``. For two different keys the tags collide for at most ``L`` values of ``r`` (a non-zero
polynomial of degree ``L`` has at most ``L`` roots), so with ``t`` independent points the
probability that unequal keys pass is at most ``(L / p)^t`` — the ``eps_cor`` of the
correctness definition (Tomamichel et al., Nat. Commun. 3, 634 (2012)). Every tag bit sent
is public and counted as leaked (``61 t`` bits).

A frame that fails verification is discarded and counted, never passed on as key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from qkdtwin.errors import ConfigError

__all__ = ["MERSENNE_61", "VerificationResult", "polynomial_hash", "verify_keys"]

MERSENNE_61 = (1 << 61) - 1
_WORD_BITS = 60


def _words(bits: NDArray[np.uint8]) -> list[int]:
    """Pack bits into 60-bit words (big-endian within a word), plus the length as last word."""
    n = bits.size
    pad = (-n) % _WORD_BITS
    b = np.concatenate([bits.astype(np.uint8), np.zeros(pad, dtype=np.uint8)])
    b = b.reshape(-1, _WORD_BITS)
    # two 30-bit halves keep the dot products exact in int64
    weights = 1 << np.arange(29, -1, -1, dtype=np.int64)
    hi = b[:, :30].astype(np.int64) @ weights
    lo = b[:, 30:].astype(np.int64) @ weights
    words: list[int] = ((hi << 30) | lo).tolist()
    words.append(n)  # binds the length, so keys of different lengths never collide
    return words


def polynomial_hash(bits: NDArray[np.uint8], point: int) -> int:
    """Evaluate the key polynomial at ``point`` in GF(2^61 - 1) (Horner's rule).

    The bits are packed into 60-bit words (big-endian, zero-padded) followed by the bit count,
    and the words are the polynomial's coefficients, highest power first.

    Examples
    --------
    >>> word = 0b101 << 57  # the bits 1, 0, 1 at the top of a 60-bit word
    >>> polynomial_hash(np.array([1, 0, 1], dtype=np.uint8), 5) == (word * 5 + 3) % MERSENNE_61
    True
    """
    if not 0 <= point < MERSENNE_61:
        raise ConfigError("hash point must be in [0, 2^61 - 1)", field="point", value=point)
    acc = 0
    for w in _words(np.asarray(bits, dtype=np.uint8)):
        acc = (acc * point + w) % MERSENNE_61
    return acc


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of :func:`verify_keys`.

    Attributes
    ----------
    verified
        Whether all tags matched.
    tag_bits
        Bits disclosed (61 per tag).
    failure_probability
        Upper bound on the probability that different keys pass, ``(L / p)^t``.
    """

    verified: bool
    tag_bits: int
    failure_probability: float


def verify_keys(
    alice: NDArray[np.uint8],
    bob: NDArray[np.uint8],
    rng: np.random.Generator,
    *,
    eps_cor: float = 1e-15,
) -> VerificationResult:
    """Compare Alice's and Bob's keys through polynomial-hash tags.

    Parameters
    ----------
    alice, bob
        The reconciled keys (same length, 0/1 values).
    rng
        Draws the public evaluation points.
    eps_cor
        Target probability that unequal keys pass, in (0, 1); the number of tags ``t`` is the
        smallest with ``(L / p)^t <= eps_cor``.

    Returns
    -------
    VerificationResult

    Raises
    ------
    ConfigError
        For empty or mismatched keys, or ``eps_cor`` outside (0, 1).
    """
    a = np.asarray(alice, dtype=np.uint8)
    b = np.asarray(bob, dtype=np.uint8)
    if a.size == 0 or a.size != b.size:
        raise ConfigError(
            f"keys must be non-empty and of equal length, got {a.size} and {b.size}", field="key"
        )
    if not 0.0 < eps_cor < 1.0:
        raise ConfigError(
            f"eps_cor must be in (0, 1), got {eps_cor}",
            field="eps_cor",
            value=eps_cor,
            allowed="(0, 1)",
        )
    n_words = math.ceil(a.size / _WORD_BITS) + 1
    per_tag = n_words / MERSENNE_61
    tags = max(1, math.ceil(math.log(eps_cor) / math.log(per_tag)))
    ok = True
    for _ in range(tags):
        point = int(rng.integers(0, MERSENNE_61))
        ok &= polynomial_hash(a, point) == polynomial_hash(b, point)
    return VerificationResult(bool(ok), 61 * tags, per_tag**tags)
