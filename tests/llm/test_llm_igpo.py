"""IGPO: information-gain turn rewards, telescoping, group z-normalization, returns-to-go."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.llm import igpo, igpo_rewards


def test_rewards_by_hand():
    # beliefs p = [0.2, 0.4, 0.9, (0.95 after the answer turn, ignored)], outcome 0.7
    # turn 0: 0.4 - 0.2 = 0.2; turn 1: 0.9 - 0.4 = 0.5; turn 2 (last): outcome 0.7
    lp = np.log([[0.2, 0.4, 0.9, 0.95]])
    out = igpo_rewards(lp, [0.7], mask=None)
    np.testing.assert_allclose(out.rewards, [[0.2, 0.5, 0.7]])
    # outcome_weight scales only the last turn
    np.testing.assert_allclose(igpo_rewards(lp, [0.7], mask=None, outcome_weight=2.0).rewards, [[0.2, 0.5, 1.4]])


def test_advantages_by_hand():
    # Group of two rollouts, gamma = 0.5, eps = 0.
    #   rollout 0: 2 turns, p = [0.5, 0.75] -> rewards [0.25, outcome 1.0]
    #   rollout 1: 1 turn (answers at once)  -> rewards [outcome 0.0]
    # pooled turn rewards [0.25, 1.0, 0.0]: mean 5/12, unbiased std s
    lp = np.log([[0.5, 0.75, 1.0], [0.5, 1.0, 1.0]])
    mask = np.array([[1, 1], [1, 0]], bool)
    out = igpo(lp, [1.0, 0.0], [3, 3], mask=mask, gamma=0.5, eps=0.0)
    r = np.array([0.25, 1.0, 0.0])
    z = (r - r.mean()) / r.std(ddof=1)
    expected = np.array([[z[0] + 0.5 * z[1], z[1]], [z[2], 0.0]])
    np.testing.assert_allclose(out.advantages, expected, atol=1e-12)
    assert out.returns is None


def test_equal_outcomes_still_separate_rollouts():
    # Every rollout is right (GRPO advantage would be 0 for all); the one whose search turn raised
    # the belief gets the higher advantage on that turn.
    lp = np.log([[0.1, 0.8, 0.8], [0.1, 0.1, 0.1], [0.1, 0.4, 0.4]])
    out = igpo(lp, [1.0, 1.0, 1.0], [0, 0, 0], mask=None)
    with pytest.warns(cl.DegenerateGroupWarning):
        assert np.all(cl.grpo([1.0, 1.0, 1.0], [0, 0, 0]).advantages == 0)
    first = out.advantages[:, 0]
    assert first[0] > first[2] > first[1]


def test_columns_past_the_episode_are_ignored():
    lp = np.log([[0.3, 0.6, 0.9], [0.2, 0.5, 0.5]])
    mask = np.array([[1, 1], [1, 0]], bool)
    base = igpo(lp, [1.0, 0.0], [0, 0], mask=mask)
    garbage = lp.copy()
    garbage[1, 1:] = [np.nan, 7.0]  # rollout 1 has one turn: columns 1.. are not read
    garbage[0, 2] = np.inf  # rollout 0 has two turns: column 2 (after the answer) is not read
    np.testing.assert_array_equal(igpo(garbage, [1.0, 0.0], [0, 0], mask=mask).advantages, base.advantages)


def test_torch_in_torch_out():
    lp = torch.log(torch.tensor([[0.5, 0.75, 1.0], [0.5, 0.5, 0.5]], dtype=torch.float32))
    out = igpo(lp, torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask=None)
    assert isinstance(out.advantages, torch.Tensor) and out.advantages.dtype == torch.float32
    ref = igpo(lp.double().numpy(), [1.0, 0.0], [0, 0], mask=None)
    np.testing.assert_allclose(out.advantages.numpy(), ref.advantages, atol=1e-6)


def test_errors():
    with pytest.raises(cl.RangeError, match=r"belief_log_probs\[0, 0\].*Pass log p"):
        igpo(np.array([[0.5, 0.6, 0.7]]), [1.0], [0], mask=None)
    with pytest.raises(cl.ShapeError, match=r"\[B, T\+1\]"):
        igpo(np.zeros((2, 1)), [1.0, 0.0], [0, 0], mask=None)
    with pytest.raises(cl.ShapeError, match="outcomes"):
        igpo(np.zeros((2, 3)), [1.0], [0, 0], mask=None)
    with pytest.raises(cl.NonFiniteError):
        igpo(np.array([[np.nan, 0.0, 0.0]]), [1.0], [0], mask=None)
    with pytest.raises(cl.ShapeError, match="mask"):
        igpo(np.zeros((1, 3)), [1.0], [0], mask=np.ones((1, 3), bool))


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 12),
    t=st.integers(1, 7),
    gamma=st.sampled_from([1.0, 0.9, 0.1]),
    weight=st.sampled_from([1.0, 0.5]),
)
def test_telescoping_and_returns_to_go(seed, b, t, gamma, weight):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    p = rng.uniform(0.01, 1.0, size=(b, t + 1))
    lp = np.log(p)
    outcomes = rng.uniform(size=b)
    groups = rng.integers(0, 3, size=b)
    rew = igpo_rewards(lp, outcomes, mask=mask, outcome_weight=weight).rewards
    rows = np.arange(b)
    last = lengths - 1
    # the information gains of turns 0..T_b-2 telescope to p[T_b - 1] - p[0]
    gains = np.where(np.arange(t)[None, :] < last[:, None], rew, 0.0).sum(1)
    np.testing.assert_allclose(gains, p[rows, last] - p[:, 0], atol=1e-12)
    np.testing.assert_allclose(rew[rows, last], weight * outcomes)
    assert np.all(rew[~mask] == 0)
    # advantages are returns-to-go of the group-z-normalized rewards: A_t - gamma A_{t+1} = z_t
    adv = igpo(lp, outcomes, groups, mask=mask, gamma=gamma, outcome_weight=weight).advantages
    z = np.zeros((b, t))
    for g in np.unique(groups):
        sel = (groups[:, None] == g) & mask
        vals = rew[sel]
        if len(vals) > 1 and vals.max() != vals.min():
            z[sel] = (vals - vals.mean()) / (vals.std(ddof=1) + 1e-6)
    nxt = np.concatenate([adv[:, 1:], np.zeros((b, 1))], axis=1) * mask
    np.testing.assert_allclose(adv - gamma * nxt * mask, z, atol=1e-9)
    # z-normalized turn rewards sum to 0 over each group
    for g in np.unique(groups):
        assert abs(z[(groups[:, None] == g) & mask].sum()) < 1e-9
