"""Privacy amplification: FFT Toeplitz hashing against the explicit matrix product."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdtwin.errors import ConfigError
from qkdtwin.qkd.postprocess import ToeplitzHasher, toeplitz_hash, toeplitz_hash_naive
from qkdtwin.qkd.postprocess.amplify import fft_backend_name, toeplitz_seed_length


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 400), st.data())
def test_fft_equals_naive_product(n, data):
    m = data.draw(st.integers(0, n))
    seed_int = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed_int)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    out = toeplitz_hash(x, s, m, backend="scipy")
    assert out.size == m
    assert np.array_equal(out, toeplitz_hash_naive(x, s, m))


def test_matrix_is_toeplitz_and_linear():
    rng = np.random.default_rng(3)
    n, m = 50, 20
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    # column j of T is T @ e_j; check T[i, j] == T[i + 1, j + 1] (constant diagonals)
    cols = np.stack([toeplitz_hash(np.eye(n, dtype=np.uint8)[j], s, m) for j in range(n)], 1)
    assert np.array_equal(cols[1:, 1:], cols[:-1, :-1])
    x, y = rng.integers(0, 2, (2, n), dtype=np.uint8)
    assert np.array_equal(
        toeplitz_hash(x ^ y, s, m), toeplitz_hash(x, s, m) ^ toeplitz_hash(y, s, m)
    )


def test_large_block_matches_blockwise_reference():
    # 2e5 bits: compare a slice of outputs with rows of the explicit product
    rng = np.random.default_rng(8)
    n, m = 200_000, 120_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    y = toeplitz_hash(x, s, m)
    for i in (0, 1, 59_999, m - 1):
        row = s[i + n - 1 - np.arange(n)]
        assert y[i] == int(row.astype(np.int64) @ x) & 1


def test_fftw_and_scipy_backends_agree():
    assert fft_backend_name() == "fftw"  # the dev extra installs pyFFTW
    rng = np.random.default_rng(1)
    n, m = 30_000, 10_000
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    assert np.array_equal(ToeplitzHasher(n, m, s, "fftw")(x), ToeplitzHasher(n, m, s, "scipy")(x))


def test_output_is_balanced():
    rng = np.random.default_rng(2)
    n, m = 100_000, 50_000
    y = toeplitz_hash(
        rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n + m - 1, dtype=np.uint8), m
    )
    assert abs(y.mean() - 0.5) < 5 * 0.5 / np.sqrt(m)


@pytest.mark.parametrize(
    ("n", "m", "seed_len", "match"),
    [(10, 11, 20, "output_bits"), (10, 5, 13, "seed"), (10, -1, 8, "output_bits")],
)
def test_bad_sizes(n, m, seed_len, match):
    with pytest.raises(ConfigError, match=match):
        toeplitz_hash(np.zeros(n, np.uint8), np.zeros(seed_len, np.uint8), m)


def test_non_binary_and_empty_input():
    with pytest.raises(ConfigError, match="0 and 1"):
        toeplitz_hash(np.array([0, 2, 1], np.uint8), np.zeros(4, np.uint8), 2)
    with pytest.raises(ConfigError, match="empty"):
        toeplitz_hash(np.zeros(0, np.uint8), np.zeros(0, np.uint8), 0)


def test_fftw_measured_plans_are_cached_and_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rng = np.random.default_rng(9)
    n, m = 4096, 1500
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    y = ToeplitzHasher(n, m, s, "fftw", "measure")(x)
    assert np.array_equal(y, toeplitz_hash_naive(x, s, m))
    assert (tmp_path / "qkdtwin" / "fftw-wisdom.pickle").stat().st_size > 0
