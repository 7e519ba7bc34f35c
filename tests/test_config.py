from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkdtwin.config import parse_count, parse_float_list, parse_range
from qkdtwin.errors import ConfigError, RangeSyntaxError


def test_range_includes_stop():
    assert parse_range("0:150:10").size == 16
    assert parse_range("1:10").tolist() == [float(i) for i in range(1, 11)]
    assert parse_range("0:1:0.1").size == 11  # floating step still lands on STOP


@given(
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(1, 50),
)
def test_range_count_matches_arithmetic(start, span, step):
    r = parse_range(f"{start}:{start + span}:{step}")
    assert r.size == span // step + 1
    assert r[0] == start
    assert r[-1] <= start + span
    assert np.all(np.diff(r) > 0)


@pytest.mark.parametrize(
    "spec", ["", "a:b", "1:", ":5", "1:2:3:4", "5:1", "0:10:0", "0:10:-1", "0:inf", "0:1e9:1e-3"]
)
def test_malformed_ranges_are_rejected(spec):
    with pytest.raises(RangeSyntaxError):
        parse_range(spec)


def test_counts():
    assert parse_count("1e9") == 10**9
    assert parse_count("1_000") == 1000
    assert parse_count(7) == 7
    for bad in ("0", "-5", "1.5", "abc", "nan", "inf"):
        with pytest.raises(ConfigError):
            parse_count(bad)


def test_float_lists():
    assert parse_float_list("0.1, 0", field="decoys") == (0.1, 0.0)
    with pytest.raises(ConfigError, match="decoys"):
        parse_float_list("0.1,x", field="decoys")
