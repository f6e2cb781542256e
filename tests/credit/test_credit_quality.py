"""Credit-quality metrics: hand-computed, and equal to scipy per episode."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from creditlab.credit import credit_quality
from creditlab.errors import ShapeError


def test_hand_computed():
    # Episode 0: assigned [1, 2, 3] vs true [2, 4, 6]: Pearson 1, Spearman 1, |6 - 12| = 6.
    # Episode 1: assigned [3, 1, pad] vs true [1, 2, pad]: Pearson -1 (two points), |4 - 3| = 1.
    # Episode 2: one step: correlation undefined; |5 - 5| = 0.
    a = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 9.0], [5.0, 0.0, 0.0]])
    t = np.array([[2.0, 4.0, 6.0], [1.0, 2.0, 9.0], [5.0, 0.0, 0.0]])
    m = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], bool)
    q = credit_quality(a, t, m)
    np.testing.assert_allclose(q.pearson[:2], [1.0, -1.0])
    np.testing.assert_allclose(q.spearman[:2], [1.0, -1.0])
    assert np.isnan(q.pearson[2]) and np.isnan(q.spearman[2])
    np.testing.assert_allclose(q.decomposition_error, [6.0, 1.0, 0.0])
    assert q.metrics["quality/pearson"] == pytest.approx(0.0)
    assert q.metrics["quality/num_undefined"] == 1.0
    assert q.metrics["quality/decomposition_error"] == pytest.approx(7 / 3)


def test_ties_and_explicit_returns():
    # Spearman with ties uses average ranks: assigned [1, 1, 2] -> ranks [1.5, 1.5, 3].
    a = np.array([[1.0, 1.0, 2.0]])
    t = np.array([[1.0, 2.0, 3.0]])
    q = credit_quality(a, t, np.ones((1, 3), bool), returns=np.array([10.0]))
    assert q.spearman[0] == pytest.approx(stats.spearmanr([1, 1, 2], [1, 2, 3]).statistic)
    assert q.decomposition_error[0] == pytest.approx(6.0)


def test_constant_sides_are_undefined_not_nan_metrics():
    # CartPole: true reward +1 everywhere -> every correlation undefined, pooled too.
    q = credit_quality(np.random.default_rng(0).normal(size=(3, 4)), np.ones((3, 4)), np.ones((3, 4), bool))
    assert q.metrics["quality/num_undefined"] == 3.0
    assert np.isnan(q.metrics["quality/pearson"])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_matches_scipy_per_episode(seed):
    rng = np.random.default_rng(seed)
    b, t = int(rng.integers(1, 6)), int(rng.integers(1, 12))
    lengths = rng.integers(1, t + 1, size=b)
    m = np.arange(t)[None] < lengths[:, None]
    a = rng.normal(size=(b, t))
    tr = np.where(rng.uniform(size=(b, t)) < 0.3, 0.0, rng.normal(size=(b, t)))  # ties
    a[rng.uniform(size=(b, t)) < 0.2] = 1.0
    q = credit_quality(a, tr, m)
    for i in range(b):
        x, y = a[i, : lengths[i]], tr[i, : lengths[i]]
        if lengths[i] < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
            assert np.isnan(q.pearson[i])
            continue
        assert q.pearson[i] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-9)
        assert q.spearman[i] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-9)


def test_shape_errors():
    with pytest.raises(ShapeError):
        credit_quality(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool))
    with pytest.raises(ShapeError):
        credit_quality(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3), bool), returns=np.zeros(3))
