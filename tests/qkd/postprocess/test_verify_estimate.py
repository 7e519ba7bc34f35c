"""Verification hash and QBER estimation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.postprocess import polynomial_hash, sample_qber, serfling_deviation, verify_keys
from qkdtwin.qkd.postprocess.verify import MERSENNE_61


def test_polynomial_hash_matches_direct_evaluation():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, 1000, dtype=np.uint8)
    r = 123456789
    # independent evaluation: 60-bit big-endian words, zero-padded, then the length
    padded = np.concatenate([bits, np.zeros((-bits.size) % 60, np.uint8)])
    words = [int("".join(map(str, w)), 2) for w in padded.reshape(-1, 60)] + [bits.size]
    expected = sum(w * pow(r, len(words) - 1 - i, MERSENNE_61) for i, w in enumerate(words))
    assert polynomial_hash(bits, r) == expected % MERSENNE_61


def test_equal_keys_verify_and_any_single_flip_is_caught():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 5000, dtype=np.uint8)
    assert verify_keys(a, a.copy(), rng).verified
    for pos in (0, 59, 60, 4999):
        b = a.copy()
        b[pos] ^= 1
        res = verify_keys(a, b, rng)
        assert not res.verified
        assert res.failure_probability < 1e-15
        assert res.tag_bits % 61 == 0


def test_verify_rejects_bad_input():
    with pytest.raises(ConfigError):
        verify_keys(np.zeros(0, np.uint8), np.zeros(0, np.uint8), np.random.default_rng(0))
    with pytest.raises(ConfigError):
        verify_keys(np.zeros(3, np.uint8), np.zeros(4, np.uint8), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="eps_cor"):
        verify_keys(
            np.zeros(3, np.uint8), np.zeros(3, np.uint8), np.random.default_rng(0), eps_cor=1.5
        )


def test_serfling_bound_holds_for_sampling_without_replacement():
    # independent check: the hypergeometric law of the sample errors
    total, errors_total, k, eps = 20_000, 600, 2_000, 1e-3
    n = total - k
    mu = serfling_deviation(n, k, eps)
    # P(rest rate > sample rate + mu) summed exactly over the hypergeometric distribution
    e = np.arange(0, min(k, errors_total) + 1)
    p = stats.hypergeom.pmf(e, total, errors_total, k)
    rest_rate = (errors_total - e) / n
    fail = p[rest_rate > e / k + mu].sum()
    assert fail <= eps


def test_sample_qber_estimates_and_keeps_the_rest():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, 100_000, dtype=np.uint8)
    b = a ^ (rng.random(a.size) < 0.03).astype(np.uint8)
    est = sample_qber(a, b, rng, sample_fraction=0.1)
    assert est.sample_size == 10_000
    assert est.keep.size == 90_000
    assert abs(est.qber - 0.03) < 5 * math.sqrt(0.03 * 0.97 / 10_000)
    assert est.qber_upper > est.qber
    assert not est.aborted


def test_sample_qber_aborts_above_threshold():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2, 50_000, dtype=np.uint8)
    b = a ^ (rng.random(a.size) < 0.15).astype(np.uint8)
    assert sample_qber(a, b, rng).aborted


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_sample_qber_bad_fraction(frac):
    a = np.zeros(100, np.uint8)
    with pytest.raises(ConfigError, match="sample_fraction"):
        sample_qber(a, a, np.random.default_rng(0), sample_fraction=frac)


def test_sample_qber_mismatched():
    with pytest.raises(ConfigError):
        sample_qber(np.zeros(10, np.uint8), np.zeros(9, np.uint8), np.random.default_rng(0))
