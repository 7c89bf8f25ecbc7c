import math

import numpy as np
import pytest

from tunewise.monitor.drift import binned_shares, mmd_test, psi, shares


def test_mmd_keeps_same_distribution_and_flags_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(60, 8))
    same = mmd_test(ref, rng.normal(size=(50, 8)), permutations=200)
    shifted = mmd_test(ref, rng.normal(loc=0.8, size=(50, 8)), permutations=200)
    assert same.p_value > 0.05
    assert shifted.p_value < 0.01 and shifted.mmd2 > same.mmd2


def test_mmd_p_value_is_roughly_uniform_under_the_null():
    rng = np.random.default_rng(1)
    ps = [mmd_test(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), permutations=99, seed=i).p_value
          for i in range(40)]
    assert 0.3 < np.mean(ps) < 0.7 and np.mean(np.array(ps) < 0.05) <= 0.15


def test_psi_matches_hand_computed_value():
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) == pytest.approx(expected)
    assert psi(shares(list("aabb")), shares(list("abab"))) == pytest.approx(0.0)


def test_binned_shares_cut_at_reference_quantiles():
    ref = list(range(100))
    r, a = binned_shares(ref, [200] * 10, bins=4)
    assert sorted(r.values()) == pytest.approx([0.25] * 4)
    assert a == {"3": pytest.approx(1.0)}
    assert psi(r, a) > 1


def test_mmd_needs_two_per_sample():
    with pytest.raises(ValueError, match="at least two"):
        mmd_test(np.zeros((1, 2)), np.zeros((5, 2)))
