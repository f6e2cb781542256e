"""ReMax, OPO, GRPO pass@k, GPG, MaxRL and the optimal token baseline: hand-computed cases,
creditlab's missing / singleton / zero-spread rules, errors, properties. (Agreement with verl and
SkyRL on random inputs: tests/integrations/test_verl_estimators.py.)"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.advantage import gpg, grpo_passk, maxrl, opo, optimal_token_baseline, remax
from creditlab.errors import DegenerateGroupWarning


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateGroupWarning)
        yield


# ------------------------------------------------------------------------------ ReMax


def test_remax_hand_computed_and_missing():
    # A = r - b; a missing reward or a missing greedy baseline gives 0
    out = remax([1.0, 0.0, None, 2.0], [0.5, 0.5, 0.5, None])
    np.testing.assert_allclose(out.advantages, [0.5, -0.5, 0.0, 0.0])
    assert out.metrics["remax/num_missing_baseline"] == 1.0 and out.metrics["num_missing"] == 1.0


def test_remax_per_step_returns_minus_baseline():
    # rewards [[0, 1, 2], [3, pad, pad]]: returns-to-go [[3, 3, 2], [3]]; baselines [1, 4]
    out = remax(np.array([[0.0, 1.0, 2.0], [3.0, 9.0, 9.0]]), [1.0, 4.0], mask=[[1, 1, 1], [1, 0, 0]])
    np.testing.assert_allclose(out.returns, [[3.0, 3.0, 2.0], [3.0, 0.0, 0.0]])
    np.testing.assert_allclose(out.advantages, [[2.0, 2.0, 1.0], [-1.0, 0.0, 0.0]])


def test_remax_errors():
    with pytest.raises(cl.errors.ShapeError, match="greedy_rewards"):
        remax([1.0, 0.0], [0.5])


# ------------------------------------------------------------------------------ OPO


def test_opo_hand_computed():
    # group 0: rewards [1, 0, 0.5], lengths [1, 3, 4]: b = (1 + 0 + 2) / 8 = 0.375
    # group 1: singleton -> 0; group 2: zero spread [2, 2] -> exactly 0
    out = opo([1.0, 0.0, 0.5, 7.0, 2.0, 2.0], [0, 0, 0, 1, 2, 2], [1, 3, 4, 5, 1, 9])
    np.testing.assert_allclose(out.advantages, [0.625, -0.375, 0.125, 0.0, 0.0, 0.0])
    assert out.metrics["groups/num_singleton"] == 1 and out.metrics["groups/num_zero_std"] == 1


def test_opo_equal_lengths_is_dr_grpo_and_zero_lengths_fall_back_to_the_mean():
    rng = np.random.default_rng(0)
    r = rng.normal(size=12)
    g = np.repeat(np.arange(3), 4)
    np.testing.assert_allclose(opo(r, g, np.full(12, 7.0)).advantages, cl.dr_grpo(r, g).advantages, atol=1e-12)
    np.testing.assert_allclose(opo([1.0, 0.0], [0, 0], [0, 0]).advantages, [0.5, -0.5])  # verl: NaN


def test_opo_missing_reward_is_left_out_of_the_baseline():
    # member 2 missing: b = (2 * 1 + 2 * 0) / 4 = 0.5
    out = opo([1.0, 0.0, None], [0, 0, 0], [2, 2, 100])
    np.testing.assert_allclose(out.advantages, [0.5, -0.5, 0.0])


def test_opo_negative_lengths_are_an_error():
    with pytest.raises(cl.errors.RangeError, match=r"lengths\[1\]"):
        opo([1.0, 0.0], [0, 0], [3, -1])


# ------------------------------------------------------------------------------ pass@k


def test_grpo_passk_hand_computed():
    # group 0: [1, 0, 0.5] -> best 1, runner-up 0.5, margin 0.5; unbiased std = 0.5 -> 1.0
    # group 1: tie at the top [2, 2, 1] -> all 0; group 2 singleton -> 0; group 3 zero spread -> 0
    r = [1.0, 0.0, 0.5, 2.0, 2.0, 1.0, 5.0, 3.0, 3.0]
    g = [0, 0, 0, 1, 1, 1, 2, 3, 3]
    out = grpo_passk(r, g, eps=0.0)
    np.testing.assert_allclose(out.advantages, [1.0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert out.metrics["passk/num_ties"] == 1 and out.metrics["passk/num_learning"] == 1
    np.testing.assert_allclose(grpo_passk(r, g, std_scale="none").advantages, [0.5, 0, 0, 0, 0, 0, 0, 0, 0])


def test_grpo_passk_missing_best_is_ignored():
    # the missing member would have been the best; the present ones are [0, 0.5]
    out = grpo_passk([None, 0.0, 0.5], [0, 0, 0], std_scale="none")
    np.testing.assert_allclose(out.advantages, [0.0, 0.0, 0.5])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_grpo_passk_only_the_best_learns_and_its_gradient_is_the_max(seed):
    rng = np.random.default_rng(seed)
    n = 8
    r = rng.integers(0, 4, size=n).astype(float)
    a = grpo_passk(r, np.zeros(n, int), std_scale="none").advantages
    assert (a != 0).sum() <= 1
    if (a != 0).any():
        i = int(np.flatnonzero(a)[0])
        assert r[i] == r.max() and a[i] == r.max() - np.sort(r)[-2]


# ------------------------------------------------------------------------------ GPG


def test_gpg_hand_computed():
    # 6 present rewards, 2 non-zero -> alpha = 3; group 0 [1, 0, 0] mean 1/3; group 1 [0, 1]; group 2 [0] singleton
    out = gpg([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, None], [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(out.advantages, [2.0, -1.0, -1.0, -1.5, 1.5, 0.0, 0.0])
    assert out.metrics["gpg/alpha"] == 3.0
    np.testing.assert_allclose(gpg([1.0, 0.0], [0, 0], f_norm=2.0).advantages, [0.5, -0.5])  # alpha 2, /2
    with pytest.raises(cl.errors.RangeError, match="f_norm"):
        gpg([1.0, 0.0], [0, 0], f_norm=0.0)


# ------------------------------------------------------------------------------ MaxRL


def test_maxrl_hand_computed_and_edges():
    # group 0: [1, 0, 0, 0] mean 0.25 -> (1 - .25) / .25 = 3, (0 - .25) / .25 = -1
    # group 1: all 0 -> 0; group 2: singleton -> 0
    out = maxrl([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0, 0, 0, 0, 1, 1, 2], eps=0.0)
    np.testing.assert_allclose(out.advantages, [3.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0])
    with pytest.raises(cl.errors.RangeError, match="rewards >= 0"):
        maxrl([1.0, -0.5], [0, 0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_maxrl_is_grpo_centring_divided_by_the_mean(seed):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 2, size=16).astype(float)
    g = np.repeat(np.arange(4), 4)
    mean = np.array([r[g == k].mean() for k in range(4)])[g]
    expected = np.where(mean > 0, (r - mean) / np.where(mean > 0, mean + 1e-6, 1.0), 0.0)
    np.testing.assert_allclose(maxrl(r, g).advantages, expected, atol=1e-12)


# ------------------------------------------------------------------------------ optimal token baseline


def test_optimal_token_baseline_hand_computed(kernel_backend):
    # Two rows of one group, one reward at the end: G = [[1, 1], [0, 0]].
    # pi(y) = 0.5 everywhere, sum pi^2 = 0.5 -> w = 1 - 1 + 0.5 = 0.5; W = [[0.5, 1], [0.5, 1]]
    # B_t = (1 * W + 0 * W) / (2 W) = 0.5 -> A = [[0.5, 0.5], [-0.5, -0.5]]
    r = np.array([[0.0, 1.0], [0.0, 0.0]])
    lp = np.full((2, 2), math.log(0.5))
    sp = np.full((2, 2), 0.5)
    out = optimal_token_baseline(r, np.ones((2, 2), bool), [0, 0], lp, sp, eps=0.0)
    np.testing.assert_allclose(out.returns, [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(out.advantages, [[0.5, 0.5], [-0.5, -0.5]])


def test_optimal_token_baseline_weights_rows_by_gradient_variance(kernel_backend):
    # Row 0 is confident (pi = 0.9, sum pi^2 = 0.82 -> w = 0.02), row 1 uncertain (pi = 0.5,
    # sum pi^2 = 0.5 -> w = 0.5). One token each: B = (1 * 0.02 + 0 * 0.5) / 0.52.
    r = np.array([[1.0], [0.0]])
    lp = np.log(np.array([[0.9], [0.5]]))
    sp = np.array([[0.82], [0.5]])
    out = optimal_token_baseline(r, np.ones((2, 1), bool), [0, 0], lp, sp, eps=0.0)
    b = 0.02 / 0.52
    np.testing.assert_allclose(out.advantages, [[1 - b], [-b]], rtol=1e-9)


def test_optimal_token_baseline_zero_tail_singleton_and_constant_positions(kernel_backend):
    # group 0: row 0 has 3 tokens, row 1 has 1 -> positions 1, 2 of row 0 have no comparison:
    # with handle_zero_tail their baseline is 0 (A = G), without it A = G eps/(W + eps) ~ 0.
    # group 1: a single row -> 0. Position 0 of group 0: G = [2, 2] equal -> exactly 0.
    r = np.array([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    m = np.array([[1, 1, 1], [1, 0, 0], [1, 0, 0]], bool)
    lp = np.full((3, 3), math.log(0.5))
    sp = np.full((3, 3), 0.5)
    out = optimal_token_baseline(r, m, [0, 0, 1], lp, sp)
    np.testing.assert_allclose(out.advantages, [[0.0, 2.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    no_tail = optimal_token_baseline(r, m, [0, 0, 1], lp, sp, handle_zero_tail=False)
    np.testing.assert_allclose(no_tail.advantages, np.zeros((3, 3)), atol=1e-7)


def test_optimal_token_baseline_policy_token_alignment_ignores_tool_tokens(kernel_backend):
    # Row 0 has a tool token (mask 0) at position 1: G = [1, -, 1]; row 1: G = [1, 1, 0].
    # By policy token, row 0's tokens (columns 0, 2) meet row 1's first two: equal returns, exactly
    # 0; row 1's third token is its strict tail (baseline 0, A = G = 0). By column, column 2 pairs
    # row 0's second token (G 1, W = 2 * 0.5) with row 1's third (G 0, W = 3 * 0.5):
    # B = (1 * 1 + 0 * 1.5) / 2.5 = 0.4, A = 0.6 for row 0.
    r = np.array([[0.0, 9.0, 1.0], [0.0, 1.0, 0.0]])
    m = np.array([[1, 0, 1], [1, 1, 1]], bool)
    lp = np.full((2, 3), math.log(0.5))
    sp = np.full((2, 3), 0.5)
    tok = optimal_token_baseline(r, m, [0, 0], lp, sp, align="policy_token")
    np.testing.assert_allclose(tok.advantages, np.zeros((2, 3)))
    col = optimal_token_baseline(r, m, [0, 0], lp, sp, align="column")
    assert col.advantages[0, 2] == pytest.approx(0.6)


def test_optimal_token_baseline_errors(kernel_backend):
    ones = np.ones((2, 2))
    with pytest.raises(cl.errors.RangeError, match="log_probs"):
        optimal_token_baseline(ones, ones, [0, 0], ones, ones * 0.5)
    with pytest.raises(cl.errors.RangeError, match="sum_pi_squared"):
        optimal_token_baseline(ones, ones, [0, 0], -ones, ones * 2)
    with pytest.raises(cl.errors.RangeError, match="align"):
        optimal_token_baseline(ones, ones, [0, 0], -ones, ones * 0.5, align="row")
    with pytest.raises(cl.errors.ShapeError, match="log_probs"):
        optimal_token_baseline(ones, ones, [0, 0], -np.ones((2, 3)), ones * 0.5)


def test_torch_in_torch_out():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=torch.float32)
    g = torch.tensor([0, 0, 1, 1])
    for fn in (
        lambda: opo(r, g, torch.tensor([1.0, 2.0, 3.0, 4.0])),
        lambda: grpo_passk(r, g),
        lambda: gpg(r, g),
        lambda: maxrl(r, g),
        lambda: remax(r, r),
    ):
        out = fn().advantages
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


# ------------------------------------------------------------------------------ registry


def test_registered_and_run_on_episodes():
    names = cl.registry.method_names()
    for name in ("remax", "opo", "grpo_passk", "gpg", "maxrl", "optimal_token_baseline"):
        assert name in names
    ep = cl.Episodes.from_lists(
        [[0.0, 1.0], [0.0, 0.0], [1.0], [0.0]],
        outcomes=[1.0, 0.0, 1.0, 0.0],
        group_ids=[0, 0, 1, 1],
        extras={"greedy_reward": np.array([0.5, 0.5, 0.0, 0.0])},
    )
    out = cl.registry.get_method("remax")(ep)
    np.testing.assert_allclose(out.advantages, [[0.5, 0.5], [-0.5, -0.5], [1.0, 0.0], [0.0, 0.0]])
    out = cl.registry.get_method("maxrl")(ep)
    np.testing.assert_allclose(out.advantages, [[1.0, 1.0], [-1.0, -1.0], [1.0, 0.0], [-1.0, 0.0]], atol=1e-5)
    out = cl.registry.get_method("opo")(ep)  # lengths = steps: group 0 equal lengths -> +-0.5; group 1 -> +-0.5
    np.testing.assert_allclose(out.advantages, [[0.5, 0.5], [-0.5, -0.5], [0.5, 0.0], [-0.5, 0.0]])
    with pytest.raises(cl.errors.MissingColumnError, match="greedy_reward"):
        cl.registry.get_method("remax")(ep.replace(extras={}))
