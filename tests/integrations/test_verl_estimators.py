"""Outcome estimators side by side with verl 0.9.1's (``verl.trainer.ppo.core_algos``) on random inputs.

verl is installed by scripts/install.sh (``--no-deps``, as docs/llm.md tells users); without it
these tests skip.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import creditlab as cl
import creditlab.advantage as cla
from creditlab.errors import DegenerateGroupWarning

core = pytest.importorskip("verl.trainer.ppo.core_algos")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateGroupWarning)
        yield


def _batch(rng, n_groups, min_size=2, max_size=6, length=9, values=(0.0, 0.5, 1.0, 2.0)):
    """verl-shaped rows: right-padded response masks, the score on the last valid token."""
    sizes = rng.integers(min_size, max_size + 1, size=n_groups)
    index = np.repeat(np.array([f"uid-{g}" for g in range(n_groups)], dtype=object), sizes)
    perm = rng.permutation(index.shape[0])
    index = index[perm]
    bs = index.shape[0]
    lengths = rng.integers(1, length + 1, size=bs)
    mask = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float32))
    scores = rng.choice(np.asarray(values), size=bs).astype(np.float32)
    tl = torch.zeros(bs, length)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(scores)
    return tl, mask, index, scores, lengths


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6))
def test_reinforce_pp_baseline_with_token_weights_equals_verl(seed, n_groups):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups)
    theirs, _ = core.compute_reinforce_plus_plus_baseline_outcome_advantage(tl, mask, index)
    ours = cl.reinforce_pp_baseline(scores.astype(np.float64), index, weights=lengths)
    # verl whitens tokens: each row carries its value on every valid token
    expected = theirs.numpy()[np.arange(len(lengths)), lengths - 1]
    # groups without spread: verl moves them to -mean/std, creditlab keeps them at exactly 0
    _, inv = np.unique(index.astype(str), return_inverse=True)
    spread = np.array([np.ptp(scores[inv == inv[i]]) > 0 for i in range(len(scores))])
    np.testing.assert_allclose(ours.advantages[spread], expected[spread], rtol=2e-5, atol=2e-5)
    assert np.all(ours.advantages[~spread] == 0.0)


def _per_row(adv: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
    """verl's per-row outcome advantage: its value on each row's last valid token."""
    return adv.numpy()[np.arange(len(lengths)), lengths - 1]


def _spread(index: np.ndarray, scores: np.ndarray) -> np.ndarray:
    _, inv = np.unique(index.astype(str), return_inverse=True)
    return np.array([np.ptp(scores[inv == inv[i]]) > 0 for i in range(len(scores))])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6))
def test_remax_equals_verl(seed, n_groups):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups)
    tl = tl + torch.from_numpy(rng.normal(size=tl.shape).astype(np.float32)) * mask  # rewards on every token
    base = torch.from_numpy(rng.normal(size=len(lengths)).astype(np.float32))
    theirs, their_ret = core.compute_remax_outcome_advantage(tl, base, mask)
    ours = cla.remax(tl, base, mask=mask.bool())
    np.testing.assert_allclose(ours.advantages.numpy(), theirs.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.returns.numpy(), their_ret.numpy(), atol=1e-5)
    # outcome form: one score per response
    per = cla.remax(tl.sum(-1).numpy(), base.numpy())
    np.testing.assert_allclose(per.advantages, theirs[:, 0].numpy(), atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6))
def test_opo_equals_verl(seed, n_groups):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups)
    theirs, _ = core.compute_opo_outcome_advantage(tl, mask, index)
    ours = cla.opo(scores, index, lengths)
    keep = _spread(index, scores)
    np.testing.assert_allclose(ours.advantages[keep], _per_row(theirs, lengths)[keep], atol=1e-5)
    assert np.all(ours.advantages[~keep] == 0.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6), norm=st.booleans())
def test_grpo_passk_equals_verl(seed, n_groups, norm):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups, values=(0.0, 0.25, 0.5, 1.0, 1.5, 3.0))
    from verl.trainer.config import AlgoConfig

    theirs, _ = core.compute_grpo_passk_outcome_advantage(
        tl, mask, index, config=AlgoConfig(norm_adv_by_std_in_grpo=norm)
    )
    ours = cla.grpo_passk(scores, index, std_scale="group" if norm else "none")
    np.testing.assert_allclose(ours.advantages, _per_row(theirs, lengths), atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6))
def test_gpg_equals_verl(seed, n_groups):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups)
    theirs, _ = core.compute_gpg_outcome_advantage(tl, mask, index)
    ours = cla.gpg(scores, index)
    np.testing.assert_allclose(ours.advantages, _per_row(theirs, lengths), atol=1e-5)


def _skyrl_maxrl(token_level_rewards, response_mask, index, epsilon=1e-6):
    """SkyRL's compute_maxrl_advantage (skyrl/backends/skyrl_train/utils/ppo_utils.py), restated:
    per uid, mean over the group; a group of one keeps its score; (s - mean) / (mean + eps)."""
    scores = token_level_rewards.sum(dim=-1)
    id2score = {}
    for i in range(scores.shape[0]):
        id2score.setdefault(index[i], []).append(scores[i])
    id2mean = {k: (torch.tensor(0.0) if len(v) == 1 else torch.mean(torch.stack(v))) for k, v in id2score.items()}
    out = scores.clone()
    for i in range(scores.shape[0]):
        if len(id2score[index[i]]) > 1:
            out[i] = (scores[i] - id2mean[index[i]]) / (id2mean[index[i]] + epsilon)
    adv = out.unsqueeze(-1) * response_mask
    return adv, adv


def test_maxrl_skyrl_test_vector():
    # SkyRL's test_compute_maxrl_advantage: groups [6, 3] and [9, 12]
    tl = torch.tensor([[0.0, 6.0], [0.0, 3.0], [0.0, 9.0], [0.0, 12.0]])
    mask = torch.ones_like(tl)
    index = np.array(["a", "a", "b", "b"], dtype=object)
    theirs, _ = _skyrl_maxrl(tl, mask, index)
    expected = torch.tensor([1.5 / (4.5 + 1e-6), -1.5 / (4.5 + 1e-6), -1.5 / (10.5 + 1e-6), 1.5 / (10.5 + 1e-6)])
    np.testing.assert_allclose(theirs[:, 0].numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(cla.maxrl(tl.sum(-1), index).advantages.numpy(), expected.numpy(), rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6))
def test_maxrl_equals_skyrl(seed, n_groups):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups)
    theirs, _ = _skyrl_maxrl(tl, mask, index)
    ours = cla.maxrl(scores, index)
    np.testing.assert_allclose(ours.advantages, _per_row(theirs, lengths), rtol=1e-5, atol=1e-6)


def _otb_inputs(rng, n_groups, holes):
    tl, mask, index, scores, lengths = _batch(rng, n_groups, length=10)
    bs, length = tl.shape
    tl = tl + torch.from_numpy(rng.choice([0.0, 0.0, 0.5, -1.0], size=(bs, length)).astype(np.float32)) * mask
    if holes:  # tool tokens inside the response (mask 0), never the first token
        holes_at = torch.from_numpy(rng.random(size=(bs, length)) < 0.25)
        holes_at[:, 0] = False
        mask = mask * (~holes_at).float()
    logits = torch.from_numpy(rng.normal(size=(bs, length, 5)))
    probs = torch.softmax(logits, -1)
    tok = torch.from_numpy(rng.integers(0, 5, size=(bs, length)))
    old_lp = torch.log(probs.gather(-1, tok[..., None])[..., 0]).float()
    spsq = (probs**2).sum(-1).float()
    rho = torch.from_numpy(rng.uniform(0.5, 1.5, size=(bs, length)).astype(np.float32))
    return tl, mask, index, old_lp, spsq, rho


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_groups=st.integers(1, 5),
    tail=st.booleans(),
    use_is=st.booleans(),
    holes=st.booleans(),
)
def test_optimal_token_baseline_equals_verl(kernel_backend, seed, n_groups, tail, use_is, holes):
    rng = np.random.default_rng(seed)
    tl, mask, index, old_lp, spsq, rho = _otb_inputs(rng, n_groups, holes=holes)
    rho = rho if use_is else None
    theirs, their_ret = core.compute_optimal_token_baseline_advantage(
        tl, mask, index, old_lp, spsq, rollout_is_weights=rho, handle_zero_tail=tail
    )
    ours = cla.optimal_token_baseline(tl, mask.bool(), index, old_lp, spsq, is_weights=rho, handle_zero_tail=tail)
    np.testing.assert_allclose(ours.returns.numpy(), their_ret.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.advantages.numpy(), theirs.numpy(), atol=2e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 5), tail=st.booleans())
def test_tir_optimal_token_baseline_equals_verl(kernel_backend, seed, n_groups, tail):
    rng = np.random.default_rng(seed)
    tl, mask, index, old_lp, spsq, _ = _otb_inputs(rng, n_groups, holes=True)
    theirs, their_ret = core.compute_multi_turn_optimal_token_baseline_advantage(
        tl, mask, index, old_lp, spsq, handle_zero_tail=tail
    )
    ours = cla.optimal_token_baseline(tl, mask.bool(), index, old_lp, spsq, align="policy_token", handle_zero_tail=tail)
    np.testing.assert_allclose(ours.advantages.numpy(), theirs.numpy(), atol=2e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 5))
def test_tree_grpo_equals_tree_grpos_two_verl_grpo_calls(seed, n_groups):
    """AMAP-ML/Tree-GRPO's adv_estimator=tree is verl's GRPO by prompt uid plus verl's GRPO by tree uid."""
    from creditlab.integrations.verl import compute_tree_advantage

    rng = np.random.default_rng(seed)
    rows_uid, rows_tree = [], []
    for g in range(n_groups):
        for t in range(int(rng.integers(1, 4))):
            for _ in range(int(rng.integers(2, 4))):  # >= 2 leaves per tree (Tree-GRPO samples k = 3)
                rows_uid.append(f"uid-{g}")
                rows_tree.append(f"tree-{g}-{t}")
    bs = len(rows_uid)
    index, tree_uid = np.array(rows_uid, dtype=object), np.array(rows_tree, dtype=object)
    lengths = rng.integers(1, 7, size=bs)
    mask = torch.from_numpy((np.arange(6)[None, :] < lengths[:, None]).astype(np.float32))
    tl = torch.zeros(bs, 6)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(
        rng.integers(0, 3, size=bs).astype(np.float32)
    )
    a, _ = core.compute_grpo_outcome_advantage(tl, mask, index)
    b, _ = core.compute_grpo_outcome_advantage(tl, mask, tree_uid)
    ours, _ = compute_tree_advantage(tl, mask, index, tree_uid=tree_uid, tree_method="tree_grpo")
    np.testing.assert_allclose(ours.numpy(), (a + b).numpy(), atol=2e-5)
