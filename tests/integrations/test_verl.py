"""verl adapter: estimators on verl-shaped tensors, agreement with verl's RLOO, registration."""

from __future__ import annotations

import importlib
import sys
import types
from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.integrations import verl as cv
from creditlab.llm import turn_rloo


def _rollouts(rng, bs, max_turns, turn_len=(1, 4), obs_len=(1, 3)):
    """Multi-turn rows: turns of policy tokens separated by observation tokens;
    reward at each turn's last token (sometimes exactly 0), padding at the end."""
    masks, rewards, turn_rewards = [], [], []
    for _ in range(bs):
        k = int(rng.integers(1, max_turns + 1))
        mask, rew, tr = [], [], []
        for j in range(k):
            n = int(rng.integers(*turn_len))
            r = float(rng.choice([0.0, 0.5, 1.0]))
            mask += [1] * n
            rew += [0.0] * (n - 1) + [r]
            tr.append(r)
            if j < k - 1:
                m = int(rng.integers(*obs_len))
                mask += [0] * m
                rew += [0.0] * m
        masks.append(mask)
        rewards.append(rew)
        turn_rewards.append(tr)
    length = max(len(m) for m in masks) + 2
    rm = np.zeros((bs, length), np.int64)
    tl = np.zeros((bs, length))
    for i, (m, r) in enumerate(zip(masks, rewards)):
        rm[i, : len(m)] = m
        tl[i, : len(r)] = r
    return torch.from_numpy(tl).float(), torch.from_numpy(rm), turn_rewards


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), bs=st.integers(2, 12), gamma=st.sampled_from([1.0, 0.9]))
def test_turn_rloo_on_verl_tensors(seed, bs, gamma):
    rng = np.random.default_rng(seed)
    tl, rm, turn_rewards = _rollouts(rng, bs, 4)
    index = np.array([f"uid-{i % 3}" for i in range(bs)], dtype=object)
    adv, ret = cv.compute_turn_rloo_advantage(tl, rm, index=index, config={"gamma": gamma})
    assert adv.shape == tl.shape and adv.dtype == torch.float32
    assert torch.all(adv[rm == 0] == 0) and torch.all(ret[rm == 0] == 0)
    # reference: per-turn rewards by hand, padded, turn_rloo, then each policy token gets its turn's value
    t = max(len(r) for r in turn_rewards)
    r = np.zeros((bs, t))
    mask = np.zeros((bs, t), bool)
    for i, tr in enumerate(turn_rewards):
        r[i, : len(tr)] = tr
        mask[i, : len(tr)] = True
    groups = np.array([i % 3 for i in range(bs)])
    ref = turn_rloo(r, groups, mask=mask, gamma=gamma)
    for i in range(bs):
        turn = -1
        for j in range(rm.shape[1]):
            if rm[i, j] and (j == 0 or not rm[i, j - 1]):
                turn += 1
            if rm[i, j]:
                assert adv[i, j].item() == pytest.approx(ref.advantages[i, turn], abs=1e-5)
                assert ret[i, j].item() == pytest.approx(ref.returns[i, turn], abs=1e-5)


def test_reward_on_an_observation_token_belongs_to_the_turn_before():
    # row 0: turn A (tokens 0-1), observation (2-3) carrying the env reward 1.0, turn B (4)
    # row 1: one turn (0-1) with reward 0 at its end
    tl = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    rm = torch.tensor([[1, 1, 0, 0, 1], [1, 1, 0, 0, 0]])
    adv, ret = cv.compute_turn_rloo_advantage(tl, rm, index=np.array([0, 0]))
    # turn rewards: row 0 = [1, 0], row 1 = [0]; gamma 1 -> G = [1, 0 | 0]
    np.testing.assert_allclose(ret.numpy(), [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    # baseline for row 0 turn 0 and turn 1: row 1's G at min(t, 0) = 0 -> A = G; row 1: 0 - G_0,0 = -1
    np.testing.assert_allclose(adv.numpy(), [[1, 1, 0, 0, 0], [-1, -1, 0, 0, 0]])


def test_single_turn_outcome_agrees_with_verls_rloo():
    core = pytest.importorskip("verl.trainer.ppo.core_algos")
    rng = np.random.default_rng(0)
    bs, length = 24, 12
    lengths = rng.integers(1, length + 1, size=bs)
    rm = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.int64))
    tl = torch.zeros(bs, length)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(
        rng.integers(0, 3, size=bs).astype(np.float32)
    )
    index = np.array([f"p{i // 4}" for i in range(bs)], dtype=object)
    ours, _ = cv.compute_turn_rloo_advantage(tl, rm, index=index)
    theirs, _ = core.compute_rloo_outcome_advantage(tl, rm, index)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


def _verl_agent_loop(scores, step_rewards, anchors, index, traj, mode, cross_all_data, eps=1e-6):
    """verl-agent's GiGPO (episode_norm_reward + build_step_group + step_norm_reward) as plain loops,
    with one deliberate change: a single-trajectory episode group gets 0, not the raw score."""
    n = len(scores)
    id2score = defaultdict(list)
    seen = set()
    for i in range(n):
        if (index[i], traj[i]) in seen:
            continue
        id2score[index[i]].append(scores[i])
        if not cross_all_data:
            seen.add((index[i], traj[i]))

    def norm(x, vals):
        vals = np.asarray(vals, float)
        if len(vals) < 2 or vals.max() == vals.min():
            return 0.0
        return x - vals.mean() if mode == "mean_norm" else (x - vals.mean()) / (vals.std(ddof=1) + eps)

    step = defaultdict(list)
    for i in range(n):
        step[(index[i], anchors[i])].append(step_rewards[i])
    return np.array(
        [norm(scores[i], id2score[index[i]]) + norm(step_rewards[i], step[(index[i], anchors[i])]) for i in range(n)]
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_groups=st.integers(1, 4),
    mode=st.sampled_from(["mean_norm", "mean_std_norm"]),
    stats=st.sampled_from(["trajectory", "step"]),
)
def test_gigpo_rows_match_verl_agent(seed, n_groups, mode, stats):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        for k in range(int(rng.integers(1, 5))):
            score = float(rng.integers(0, 3))
            for _ in range(int(rng.integers(1, 5))):
                rows.append((f"uid{g}", f"traj{g}-{k}", score, float(rng.integers(-1, 3)), f"obs{rng.integers(0, 3)}"))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    index, traj, scores, step_r, anchors = (np.array(c, dtype=object) for c in zip(*rows))
    bs, length = len(rows), 5
    rm = torch.ones(bs, length)
    tl = torch.zeros(bs, length, dtype=torch.float64)
    tl[:, -1] = torch.tensor(scores.astype(float))
    adv, same = cv.compute_gigpo_advantage(
        tl,
        rm,
        index=index,
        anchor_obs=anchors,
        traj_index=traj,
        step_rewards=torch.tensor(step_r.astype(float)),
        mode=mode,
        episode_stats=stats,
    )
    ref = _verl_agent_loop(scores.astype(float), step_r.astype(float), anchors, index, traj, mode, stats == "step")
    np.testing.assert_allclose(adv[:, 0].numpy(), ref, atol=1e-9)
    assert adv is same and torch.all(adv == adv[:, :1])


def test_gigpo_needs_verl_agent_fields():
    with pytest.raises(cl.MissingColumnError, match="anchor_obs"):
        cv.compute_gigpo_advantage(torch.zeros(2, 3), torch.ones(2, 3), index=np.array([0, 0]))


def test_registration_with_a_verl_like_registry(monkeypatch):
    registry = {}

    def register_adv_est(name):
        def deco(fn):
            if name in registry and registry[name] is not fn:
                raise ValueError(f"Adv estimator {name} has already been registered")
            registry[name] = fn
            return fn

        return deco

    fake = types.ModuleType("verl.trainer.ppo.core_algos")
    fake.ADV_ESTIMATOR_REGISTRY = registry
    fake.register_adv_est = register_adv_est
    for name in ("verl", "verl.trainer", "verl.trainer.ppo"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.core_algos", fake)
    assert cv.register_with_verl() == ["creditlab_turn_rloo", "creditlab_gigpo", "creditlab_tree"]
    assert registry["creditlab_turn_rloo"] is cv.compute_turn_rloo_advantage
    cv.register_with_verl()  # idempotent
    registry["creditlab_gigpo"] = lambda **kw: None  # a stale function from an older import is replaced
    cv.register_with_verl()
    assert registry["creditlab_gigpo"] is cv.compute_gigpo_advantage


def test_registered_in_real_verl_and_called_like_compute_advantage():
    core = pytest.importorskip("verl.trainer.ppo.core_algos")
    mod = importlib.reload(cv)  # importing registers the estimators
    fn = core.get_adv_estimator_fn("creditlab_turn_rloo")
    assert fn is mod.compute_turn_rloo_advantage
    # verl's compute_advantage passes exactly these keywords
    from verl.trainer.config import AlgoConfig

    tl, rm, _ = _rollouts(np.random.default_rng(1), 8, 3)
    adv, ret = fn(
        token_level_rewards=tl,
        response_mask=rm,
        config=AlgoConfig(gamma=1.0),
        index=np.array(["a", "b"] * 4, dtype=object),
    )
    assert adv.shape == tl.shape and torch.all(adv[rm == 0] == 0)


# ------------------------------------------------------------------------------ tree rollouts


def _tree_rows():
    """Two prompts. p0: a -> {b: 1, c: 0} and d: 1 (second tree); p1: x -> {y: 0, z: 0}.
    Rows are multi-turn: each path node is one run of response tokens, 2 tokens each, separated
    by an observation token; the leaf reward is on the row's last token."""
    paths = [["a", "b"], ["a", "c"], ["d"], ["x", "y"], ["x", "z"]]
    rewards = [1.0, 0.0, 1.0, 0.0, 0.0]
    length = 6
    rm = torch.zeros(len(paths), length)
    tl = torch.zeros(len(paths), length)
    for i, p in enumerate(paths):
        pos = 0
        for _ in p:
            rm[i, pos : pos + 2] = 1
            pos += 3
        tl[i, pos - 2] = rewards[i]
    return tl, rm, np.array(["p0", "p0", "p0", "p1", "p1"], dtype=object), np.array(paths, dtype=object)


def test_tree_estimator_on_verl_rows_equals_the_library_function():
    from creditlab.llm import Forest, tree_rloo, treerl

    tl, rm, index, paths = _tree_rows()
    adv, same = cv.compute_tree_advantage(tl, rm, index=index, tree_path=paths)
    assert adv is same and torch.all(adv[rm == 0] == 0)
    ref = tree_rloo(Forest.from_paths(list(paths), [1.0, 0.0, 1.0, 0.0, 0.0], group_ids=index)).advantages
    # row 0: node a on tokens 0-1, node b on tokens 3-4
    np.testing.assert_allclose(adv[0, [0, 1, 3, 4]].numpy(), [ref[0, 0]] * 2 + [ref[0, 1]] * 2)
    # a (V 0.5) vs d (V 1): -0.5 / +0.5; b vs c: +-1; p1 has zero spread: 0
    np.testing.assert_allclose(adv[:, [0, 3]].numpy(), [[-0.5, 1.0], [-0.5, -1.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # explicit spans give the same; non_tensor_batch carries the fields; the config picks the method
    spans = np.array([[3, 3], [3, 3], [3], [3, 3], [3, 3]], dtype=object)
    adv2, _ = cv.compute_tree_advantage(tl, rm, index=index, non_tensor_batch={"tree_path": paths, "tree_span": spans})
    torch.testing.assert_close(adv2, adv)
    rl, _ = cv.compute_tree_advantage(tl, rm, index=index, config={"tree_method": "treerl"}, tree_path=paths)
    ref_rl = treerl(Forest.from_paths(list(paths), [1.0, 0.0, 1.0, 0.0, 0.0], group_ids=index)).advantages
    np.testing.assert_allclose(
        rl[:, [0, 3]].numpy(), ref_rl * np.array([[1, 1], [1, 1], [1, 0], [1, 1], [1, 1]]), atol=1e-6
    )


def test_tree_grpo_needs_only_tree_uid():
    from creditlab.llm import Forest, tree_grpo

    tl, rm, index, paths = _tree_rows()
    uid = np.array(["t0", "t0", "t1", "t2", "t2"], dtype=object)
    adv, _ = cv.compute_tree_advantage(tl, rm, index=index, tree_uid=uid, tree_method="tree_grpo")
    ref = tree_grpo(
        Forest.from_paths(list(paths), [1.0, 0.0, 1.0, 0.0, 0.0], group_ids=index, tree_ids=uid)
    ).advantages[:, 0]
    np.testing.assert_allclose(adv[:, 0].numpy(), ref, atol=1e-6)
    assert torch.all(adv[rm.bool()] == adv[:, :1].expand_as(adv)[rm.bool()])


def test_tree_estimator_errors():
    tl, rm, index, paths = _tree_rows()
    with pytest.raises(cl.MissingColumnError, match="tree_path"):
        cv.compute_tree_advantage(tl, rm, index=index)
    with pytest.raises(cl.errors.RangeError, match="runs of response tokens"):
        cv.compute_tree_advantage(tl, torch.ones_like(rm), index=index, tree_path=paths)
    with pytest.raises(cl.errors.RangeError, match="tree_method"):
        cv.compute_tree_advantage(tl, rm, index=index, tree_path=paths, tree_method="mcts")
