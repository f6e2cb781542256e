"""Pure functions of the exploration bonuses: hand-computed values and properties against slow loops."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlab.errors import DtypeError, NonFiniteError, RangeError, ShapeError
from creditlab.exploration.functional import (
    RunningMoments,
    combine_bonuses,
    episodic_count_bonus,
    first_visit_bonus,
    global_count_bonus,
    inverse_sqrt_bonus,
    moments_std,
    normalize_by_std,
    noveld_bonus,
    sherman_morrison_kernel,
    sherman_morrison_step,
    update_moments,
)

# ------------------------------------------------------------------------------ counts


def test_first_visit_and_inverse_sqrt_by_hand():
    # an episode visits a, b, a, a, c: counts including the visit 1, 1, 2, 3, 1; padding 0
    counts = np.array([1, 1, 2, 3, 1, 0])
    assert first_visit_bonus(counts).tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    # 1/sqrt(1) = 1, 1/sqrt(2) = 0.70711, 1/sqrt(3) = 0.57735, padding 0
    np.testing.assert_allclose(episodic_count_bonus(counts, "inv_sqrt"), [1, 1, 0.70711, 0.57735, 1, 0], atol=1e-5)
    # global: 1/sqrt(N) with N = 1, 4, 9, 100 -> 1, 1/2, 1/3, 1/10
    np.testing.assert_allclose(global_count_bonus(np.array([1, 4, 9, 100])), [1, 0.5, 1 / 3, 0.1], rtol=1e-6)


def test_count_bonuses_keep_the_array_kind():
    out = inverse_sqrt_bonus(torch.tensor([[1, 4]]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.tolist() == [[1.0, 0.5]]
    assert isinstance(first_visit_bonus([1, 2]), np.ndarray)


@pytest.mark.parametrize(
    "bad, err", [(np.array([-1, 2]), RangeError), (np.array([1.5]), DtypeError), (np.array(["a"]), DtypeError)]
)
def test_count_bonuses_reject_bad_counts(bad, err):
    with pytest.raises(err):
        inverse_sqrt_bonus(bad)


def test_episodic_mode_is_checked():
    with pytest.raises(RangeError, match="first_visit"):
        episodic_count_bonus(np.array([1]), "log")


# ------------------------------------------------------------------------------ Sherman-Morrison


def test_sherman_morrison_by_hand_against_the_direct_inverse():
    # lambda = 0.1: C = 0.1 I, C^{-1} = 10 I; phi = (1, 2)
    # u = C^{-1} phi = (10, 20); b = phi.u = 1*10 + 2*20 = 50
    # new C^{-1} = 10 I - u u^T / 51 = [[10 - 100/51, -200/51], [-200/51, 10 - 400/51]]
    cinv = np.eye(2)[None] * 10.0
    phi = np.array([[1.0, 2.0]])
    step = sherman_morrison_step(cinv, phi)
    assert step.bonus.tolist() == [50.0]
    expected = np.array([[10 - 100 / 51, -200 / 51], [-200 / 51, 10 - 400 / 51]])
    np.testing.assert_allclose(step.cov_inverse[0], expected, rtol=1e-12)
    # the direct inverse of C + phi phi^T = [[1.1, 2], [2, 4.1]] (det 1.1*4.1 - 4 = 0.51)
    direct = np.linalg.inv(np.array([[1.1, 2.0], [2.0, 4.1]]))
    np.testing.assert_allclose(step.cov_inverse[0], direct, rtol=1e-12)
    np.testing.assert_allclose(direct, np.array([[4.1, -2.0], [-2.0, 1.1]]) / 0.51, rtol=1e-12)
    # the input was not modified (not inplace)
    np.testing.assert_array_equal(cinv, np.eye(2)[None] * 10.0)


def test_sherman_morrison_sequence_equals_direct_inverse_of_the_episode():
    # bonus of phi_k is phi_k^T (lambda I + sum_{j<k} phi_j phi_j^T)^{-1} phi_k
    rng = np.random.default_rng(0)
    lam, d = 0.1, 4
    phis = rng.normal(size=(6, d))
    cinv = torch.eye(d, dtype=torch.float64)[None] / lam
    cov = lam * np.eye(d)
    for phi in phis:
        expected = phi @ np.linalg.solve(cov, phi)
        step = sherman_morrison_step(cinv, torch.from_numpy(phi[None]))
        assert float(step.bonus[0]) == pytest.approx(expected, rel=1e-9)
        cov = cov + np.outer(phi, phi)
        cinv = step.cov_inverse
        np.testing.assert_allclose(cinv[0].numpy(), np.linalg.inv(cov), rtol=1e-7, atol=1e-9)


def test_sherman_morrison_mask_leaves_env_alone_and_pays_zero():
    cinv = torch.eye(2, dtype=torch.float64).repeat(2, 1, 1) * 10
    step = sherman_morrison_step(cinv, torch.ones(2, 2, dtype=torch.float64), torch.tensor([True, False]))
    # env 0: b = phi^T 10 I phi = 10 * 2 = 20; env 1 masked: 0 and unchanged
    assert step.bonus.tolist() == [20.0, 0.0]
    assert torch.equal(step.cov_inverse[1], cinv[1])
    assert not torch.equal(step.cov_inverse[0], cinv[0])


def test_sherman_morrison_inplace_only_for_tensors_and_shapes_checked():
    c = torch.eye(3).repeat(2, 1, 1)
    out = sherman_morrison_step(c, torch.ones(2, 3), inplace=True)
    assert out.cov_inverse is c and c[0, 0, 0] < 1  # updated in place
    with pytest.raises(DtypeError, match="inplace"):
        sherman_morrison_step(np.eye(3)[None], np.ones((1, 3)), inplace=True)
    with pytest.raises(ShapeError):
        sherman_morrison_step(np.eye(3)[None], np.ones((2, 3)))
    with pytest.raises(ShapeError):
        sherman_morrison_step(np.ones((1, 2, 3)), np.ones((1, 2)))
    with pytest.raises(ShapeError, match="mask"):
        sherman_morrison_step(np.eye(3)[None], np.ones((1, 3)), mask=np.ones(2, bool))
    with pytest.raises(NonFiniteError):
        sherman_morrison_step(np.eye(3)[None], np.array([[np.nan, 0, 0]]))


def _per_env_loop(cinv: np.ndarray, phis: np.ndarray, masks: np.ndarray):
    """Slow reference: one env at a time, one step at a time."""
    cinv = cinv.copy()
    bonus = np.zeros(masks.shape)
    for t in range(phis.shape[0]):
        for e in range(phis.shape[1]):
            if not masks[t, e]:
                continue
            u = cinv[e] @ phis[t, e]
            b = phis[t, e] @ u
            bonus[t, e] = b
            cinv[e] = cinv[e] - np.outer(u, u) / (1 + b)
    return bonus, cinv


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 5),
    e=st.integers(1, 4),
    d=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    lam=st.sampled_from([0.1, 1.0, 3.0]),
)
def test_batched_sherman_morrison_equals_per_env_loop(t, e, d, seed, lam):
    rng = np.random.default_rng(seed)
    phis = rng.normal(size=(t, e, d))
    masks = rng.random((t, e)) < 0.8
    ref_bonus, ref_cinv = _per_env_loop(np.eye(d)[None].repeat(e, 0) / lam, phis, masks)
    cinv = torch.eye(d, dtype=torch.float64).repeat(e, 1, 1) / lam
    bonus = np.zeros((t, e))
    for k in range(t):
        bonus[k] = sherman_morrison_kernel(cinv, torch.from_numpy(phis[k]), torch.from_numpy(masks[k]))[0].numpy()
    np.testing.assert_allclose(bonus, ref_bonus, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cinv.numpy(), ref_cinv, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ NovelD


def test_noveld_clips_at_zero_by_hand():
    # alpha = 0.5: n(s') - 0.5 n(s): 2 - 0.5*2 = 1; 1 - 0.5*4 = -1 -> 0; 3 - 0.5*0 = 3; 1 - 0.5*2 = 0
    n1, n0 = np.array([2.0, 1.0, 3.0, 1.0]), np.array([2.0, 4.0, 0.0, 2.0])
    assert noveld_bonus(n1, n0, alpha=0.5).tolist() == [1.0, 0.0, 3.0, 0.0]
    # the first-visit gate zeroes the third step (a revisit): [1, 0, 0, 0]
    assert noveld_bonus(n1, n0, alpha=0.5, first_visit=np.array([True, True, False, True])).tolist() == [
        1.0,
        0.0,
        0.0,
        0.0,
    ]
    # alpha = 0.1 (e3b's E3B x NovelD): 2 - 0.2 = 1.8, 1 - 0.4 = 0.6, 3, 1 - 0.2 = 0.8
    np.testing.assert_allclose(noveld_bonus(n1, n0, alpha=0.1), [1.8, 0.6, 3.0, 0.8])
    assert noveld_bonus(torch.tensor([1.0]), torch.tensor([3.0]), alpha=1.0).tolist() == [0.0]
    with pytest.raises(ShapeError):
        noveld_bonus(n1, n0[:2])
    with pytest.raises(ShapeError):
        noveld_bonus(n1, n0, first_visit=np.ones(3))


# ------------------------------------------------------------------------------ combination


def test_combine_product_and_sum_by_hand():
    ep, gl = np.array([1.0, 0.0, 1.0]), np.array([0.5, 0.25, 1.0])
    assert combine_bonuses(ep, gl).tolist() == [0.5, 0.0, 1.0]  # 1*0.5, 0*0.25, 1*1
    assert combine_bonuses(ep, gl, combine="sum", weight=0.5).tolist() == [1.25, 0.125, 1.5]  # e + 0.5 g
    with pytest.raises(RangeError, match="product"):
        combine_bonuses(ep, gl, combine="max")
    with pytest.raises(ShapeError):
        combine_bonuses(ep, gl[:2])


# ------------------------------------------------------------------------------ normalization


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=5), seed=st.integers(0, 1000))
def test_running_moments_equal_the_concatenation(sizes, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(3.0, 2.0, size=n) for n in sizes]
    m = RunningMoments()
    for p in parts:
        m = update_moments(m, p)
    allv = np.concatenate(parts)
    assert m.count == allv.size
    if allv.size:
        assert float(m.mean) == pytest.approx(allv.mean(), abs=1e-9)
        assert moments_std(m) == pytest.approx(allv.std(), abs=1e-9)


def test_per_feature_moments_and_errors():
    x = np.array([[1.0, 10.0], [3.0, 10.0]])
    m = update_moments(RunningMoments(), x, axis=0)
    np.testing.assert_allclose(m.mean, [2.0, 10.0])
    np.testing.assert_allclose(moments_std(m), [1.0, 0.0])
    with pytest.raises(RangeError):
        update_moments(RunningMoments(), np.array([1.0, np.inf]))
    with pytest.raises(ShapeError):
        update_moments(RunningMoments(), np.ones(3), axis=0)


def test_normalize_by_std_divides_without_centering():
    # values 0 and 4: mean 2, population std 2; 3 -> 1.5 (no mean subtracted: 0 stays 0)
    m = update_moments(RunningMoments(), np.array([0.0, 4.0]))
    assert normalize_by_std(np.array([3.0, 0.0]), m).tolist() == [1.5, 0.0]
    # a constant stream has std 0: values pass through unchanged (e3b: divide only if std > 0)
    m0 = update_moments(RunningMoments(), np.array([5.0, 5.0]))
    assert normalize_by_std(np.array([5.0]), m0).tolist() == [5.0]
    with pytest.raises(ShapeError):
        normalize_by_std(np.ones(2), update_moments(RunningMoments(), np.ones((2, 2)), axis=0))
