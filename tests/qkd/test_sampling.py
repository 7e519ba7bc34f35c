from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from qkdtwin.qkd.sampling import bernoulli_positions


@pytest.mark.parametrize("p", [1e-5, 1e-3, 0.2])
def test_bernoulli_positions_count_is_binomial(p):
    n = 2_000_000
    rng = np.random.default_rng(11)
    counts = [bernoulli_positions(rng, n, p).size for _ in range(20)]
    mean = np.mean(counts)
    sd = math.sqrt(n * p * (1 - p) / 20)
    assert abs(mean - n * p) < 5 * sd


def test_bernoulli_positions_are_uniform_and_sorted():
    rng = np.random.default_rng(5)
    pos = bernoulli_positions(rng, 1_000_000, 1e-3)
    assert np.all(np.diff(pos) > 0)
    assert pos.min() >= 0
    assert pos.max() < 1_000_000
    # positions of a Bernoulli process are uniform on [0, n): Kolmogorov-Smirnov test
    assert stats.kstest(pos / 1_000_000, "uniform").pvalue > 1e-3


def test_bernoulli_positions_edge_cases():
    rng = np.random.default_rng(0)
    assert bernoulli_positions(rng, 0, 0.5).size == 0
    assert bernoulli_positions(rng, 10, 0.0).size == 0
    assert bernoulli_positions(rng, 10, 1.0).tolist() == list(range(10))
