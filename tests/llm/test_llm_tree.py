"""Tree advantages: hand-computed forests, chains reduce to the flat estimators, Monte Carlo
unbiasedness of the sibling baseline, construction and validation, tokens, registry."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import creditlab as cl
from creditlab.errors import DegenerateGroupWarning
from creditlab.llm import Forest, tree_grpo, tree_rloo, tree_token_layout, treerl, treerpo


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateGroupWarning)
        yield


def _forest():
    """One prompt, two trees.

    T1: a -> {b, c}; b -> {d: 1, e: 0}; c: 1 (leaf)      T2: f -> g: 0 (a chain)
    Leaves (rows in node order): d = 1, e = 0, c = 1, g = 0.
    V: d 1, e 0, b 0.5, c 1, a (1 + 0 + 1) / 3 = 2/3, g 0, f 0; prompt root (1 + 0 + 1 + 0) / 4 = 0.5.
    """
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    parents = [None, "a", "a", "b", "b", None, "f"]
    rewards = [None, None, 1.0, 1.0, 0.0, None, 0.0]
    return Forest.from_parents(ids, parents, rewards)


# ------------------------------------------------------------------------------ tier 1: hand-computed


def test_forest_structure():
    f = _forest()
    assert f.node_ids[f.leaves[0]] == "c" and [f.node_ids[i] for i in f.leaves] == ["c", "d", "e", "g"]
    assert f.paths.tolist() == [[0, 2, -1], [0, 1, 3], [0, 1, 4], [5, 6, -1]]
    assert f.depth.tolist() == [0, 1, 1, 2, 2, 0, 1] and f.num_trees == 2 and f.num_groups == 1
    v, n = f.node_values()
    np.testing.assert_allclose(v, [2 / 3, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert n.tolist() == [3, 2, 1, 1, 1, 1, 1]


def test_tree_rloo_hand_computed():
    out = tree_rloo(_forest())
    # first segments a (2/3) and f (0) are siblings under the prompt: A = +-2/3
    # b (0.5) and c (1): A(b) = 0.5 - 1 = -0.5, A(c) = 0.5; d, e: +-1
    # g is f's only child: it inherits A(f) = -2/3
    np.testing.assert_allclose(out.node_advantages, [2 / 3, -0.5, 0.5, 1.0, -1.0, -2 / 3, -2 / 3])
    # rows c, d, e, g along their paths
    np.testing.assert_allclose(
        out.advantages, [[2 / 3, 0.5, 0], [2 / 3, -0.5, 1.0], [2 / 3, -0.5, -1.0], [-2 / 3, -2 / 3, 0]]
    )
    assert out.mask.tolist() == [[True, True, False], [True, True, True], [True, True, True], [True, True, False]]
    # node credit = value x rows through the node: a is in 3 rows
    np.testing.assert_allclose(out.node_credit, [2.0, -1.0, 0.5, 1.0, -1.0, -2 / 3, -2 / 3])


def test_treerl_hand_computed():
    # LOO leaves over the prompt's 4 leaves [c 1, d 1, e 0, g 0]: mean of the others = 1/3, 1/3, 2/3, 2/3
    #   -> c 2/3, d 2/3, e -2/3, g -2/3 ; V~: a (2/3 + 2/3 - 2/3) / 3 = 2/9, b 0, c 2/3, d 2/3, e -2/3, f -2/3, g -2/3; root 0
    out = treerl(_forest(), leaf_scale="none")
    v = {"a": 2 / 9, "b": 0.0, "c": 2 / 3, "d": 2 / 3, "e": -2 / 3, "f": -2 / 3, "g": -2 / 3}
    par = {"a": 0.0, "b": v["a"], "c": v["a"], "d": v["b"], "e": v["b"], "f": 0.0, "g": v["f"]}
    expected = [2 * v[n] - par[n] for n in "abcdefg"]  # global (V - 0) + local (V - V(parent))
    np.testing.assert_allclose(out.node_advantages, expected, atol=1e-12)
    sq = treerl(_forest())  # / sqrt(|L(n)|): a has 3 leaves, b 2
    np.testing.assert_allclose(sq.node_advantages, np.array(expected) / np.sqrt([3, 2, 1, 1, 1, 1, 1]), atol=1e-12)
    value_only = treerl(_forest(), local_weight=0.0, leaf_scale="none")
    np.testing.assert_allclose(value_only.node_advantages, [v[n] for n in "abcdefg"], atol=1e-12)


def test_treerpo_hand_computed():
    out = treerpo(_forest(), eps=0.0)
    # siblings {a: 2/3, f: 0}: mean 1/3, std sqrt(2 (1/3)^2) = 0.4714 -> +-0.7071
    # {b: 0.5, c: 1}: +-0.7071 ; {d: 1, e: 0}: +-0.7071 ; g alone: 0
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(out.node_advantages, [s, -s, s, s, -s, -s, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        treerpo(_forest(), std_scale="none").node_advantages, [1 / 3, -0.25, 0.25, 0.5, -0.5, -1 / 3, 0.0]
    )


def test_tree_grpo_hand_computed():
    # rows c 1, d 1, e 0, g 0 (trees T1 = {c, d, e}, T2 = {g})
    # across: mean 0.5, unbiased std sqrt(1/3) -> +-0.8660; within T1: mean 2/3, std sqrt(1/3) -> 0.5774, 0.5774, -1.1547; T2: 0
    out = tree_grpo(_forest(), eps=0.0)
    a = np.array([0.5, 0.5, -0.5, -0.5]) / math.sqrt(1 / 3) + np.array([1 / 3, 1 / 3, -2 / 3, 0.0]) / math.sqrt(1 / 3)
    np.testing.assert_allclose(out.advantages[:, 0], a)
    np.testing.assert_allclose(out.advantages * out.mask, a[:, None] * out.mask)
    assert np.isnan(out.node_advantages).all()
    np.testing.assert_allclose(
        tree_grpo(_forest(), across=False, eps=0.0).advantages[:, 0],
        [1 / 3 / math.sqrt(1 / 3)] * 2 + [-2 / 3 / math.sqrt(1 / 3), 0],
    )
    seq = tree_grpo(_forest(), sequential=True, eps=0.0).advantages[:, 0]  # z within T1 of the across z-scores
    z = np.array([0.5, 0.5, -0.5]) / math.sqrt(1 / 3)
    np.testing.assert_allclose(seq[:3], (z - z.mean()) / z.std(ddof=1))
    assert seq[3] == 0.0


def test_missing_leaf_reward_is_left_out():
    # d's reward is missing: b keeps only e (V = 0); d's row gets 0 where its node has no present leaf
    f = Forest.from_parents(["a", "b", "c", "d", "e"], [None, "a", "a", "b", "b"], [None, None, 1.0, None, 0.0])
    assert f.present.tolist() == [True, False, True]
    out = tree_rloo(f)
    # a alone at the top -> 0; b (V 0) vs c (1): -1, +1; e is b's only child with a leaf -> inherits -1; d -> 0
    np.testing.assert_allclose(out.node_advantages, [0.0, -1.0, 1.0, 0.0, -1.0])


# ------------------------------------------------------------------------------ chains reduce to flat estimators


def _chains(seed: int, n_groups: int = 3, per_group: int = 4, depth: int = 3):
    rng = np.random.default_rng(seed)
    ids, parents, rewards, groups, flat_r, flat_g = [], [], [], [], [], []
    for g in range(n_groups):
        for k in range(per_group):
            r = float(rng.integers(0, 4))
            for d in range(depth):
                ids.append(f"{g}-{k}-{d}")
                parents.append(None if d == 0 else f"{g}-{k}-{d - 1}")
                rewards.append(r if d == depth - 1 else None)
                groups.append(g)
            flat_r.append(r)
            flat_g.append(g)
    return Forest.from_parents(ids, parents, rewards, group_ids=groups), np.array(flat_r), np.array(flat_g)


@pytest.mark.parametrize("seed", range(4))
def test_chains_reduce_to_flat_estimators(seed):
    f, r, g = _chains(seed)
    mask = f.path_mask
    rloo = cl.rloo(r, g).advantages
    np.testing.assert_allclose(tree_rloo(f).advantages, rloo[:, None] * mask, atol=1e-12)
    np.testing.assert_allclose(tree_grpo(f).advantages, cl.grpo(r, g).advantages[:, None] * mask, atol=1e-12)
    np.testing.assert_allclose(
        treerl(f, local_weight=0.0, leaf_scale="none").advantages, rloo[:, None] * mask, atol=1e-12
    )
    # local advantages telescope: along a path they sum to the (LOO-centred) flat advantage, all on the first node
    local = treerl(f, global_weight=0.0, leaf_scale="none").advantages
    np.testing.assert_allclose(local.sum(1), rloo, atol=1e-12)
    np.testing.assert_allclose(local[:, 1:], 0.0, atol=1e-12)
    rpo = treerpo(f).advantages
    np.testing.assert_allclose(rpo[:, 0], cl.grpo(r, g).advantages, atol=1e-12)
    np.testing.assert_allclose(rpo[:, 1:], 0.0)


@pytest.mark.parametrize("seed", range(3))
def test_local_advantages_telescope_on_any_tree(seed):
    """sum over a path of V(n) - V(p(n)) = R_leaf - V(root): local credit splits the flat advantage."""
    rng = np.random.default_rng(seed)
    ids, parents, rewards = ["r0"], [None], [None]
    frontier = ["r0"]
    for i in range(1, 25):
        p = frontier[int(rng.integers(0, len(frontier)))]
        ids.append(f"n{i}")
        parents.append(p)
        rewards.append(None)
        frontier.append(f"n{i}")
    has_child = set(parents)
    rewards = [None if n in has_child else float(rng.integers(0, 3)) for n in ids]
    f = Forest.from_parents(ids, parents, rewards)
    local = treerl(f, global_weight=0.0, leaf_scale="none", leaf_centering="none").advantages
    np.testing.assert_allclose(local.sum(1), f.rewards - f.rewards.mean(), atol=1e-12)


# ------------------------------------------------------------------------------ Monte Carlo unbiasedness


def _simulate(n_prompts: int, k1: int, k2: int, seed: int):
    """Prompts -> k1 first segments (a1 ~ Bernoulli(sigmoid th1)) -> k2 leaves each
    (a2 ~ Bernoulli(sigmoid th2[a1])); reward ~ Bernoulli(q[a1, a2])."""
    rng = np.random.default_rng(seed)
    th1, th2 = 0.3, np.array([-0.5, 0.8])
    q = np.array([[0.2, 0.6], [0.7, 0.3]])
    s1, s2 = 1 / (1 + np.exp(-th1)), 1 / (1 + np.exp(-th2))
    a1 = (rng.random((n_prompts, k1)) < s1).astype(int)
    a2 = (rng.random((n_prompts, k1, k2)) < s2[a1][..., None]).astype(int)
    rew = (rng.random((n_prompts, k1, k2)) < q[a1[..., None], a2]).astype(float)
    n_first = n_prompts * k1
    first_ids = np.arange(n_first)
    leaf_ids = n_first + np.arange(n_first * k2)
    ids = np.concatenate([first_ids, leaf_ids]).tolist()
    parents = [None] * n_first + np.repeat(first_ids, k2).tolist()
    rewards = [None] * n_first + rew.reshape(-1).tolist()
    groups = np.concatenate([np.repeat(np.arange(n_prompts), k1), np.repeat(np.arange(n_prompts), k1 * k2)]).tolist()
    forest = Forest.from_parents(ids, parents, rewards, group_ids=groups)
    # true gradient of J = E[R]
    e_r = (np.stack([1 - s2, s2], 1) * q).sum(1)  # E[R | a1]
    p1 = np.array([1 - s1, s1])
    g1 = sum(p1[a] * (a - s1) * e_r[a] for a in (0, 1))
    g2 = np.array([p1[j] * sum((1 - s2[j], s2[j])[b] * (b - s2[j]) * q[j, b] for b in (0, 1)) for j in (0, 1)])
    true = np.array([g1, g2[0], g2[1]])
    score1 = (a1 - s1).reshape(-1)
    score2 = (a2 - s2[a1][..., None]).reshape(-1)
    par_a = np.repeat(a1.reshape(-1), k2)
    return forest, true, score1, score2, par_a


def _per_prompt_gradients(node_adv, n_prompts, k1, k2, score1, score2, par_a):
    n_first = n_prompts * k1
    a_first = node_adv[:n_first] * score1
    a_leaf = node_adv[n_first:] * score2
    g1 = a_first.reshape(n_prompts, k1).sum(1) / k1
    g2 = np.stack([np.where(par_a == j, a_leaf, 0.0).reshape(n_prompts, k1 * k2).sum(1) / (k1 * k2) for j in (0, 1)], 1)
    return np.column_stack([g1, g2])


def test_sibling_baseline_is_unbiased_and_the_parent_mean_is_not():
    """Gradient of E[R] by Monte Carlo over 30,000 prompts (2 first segments x 2 leaves each).

    Stated tolerance: every component within 4 standard errors of the true gradient. The
    baseline V(p(n)) includes n's own leaves and shrinks the expected gradient to (k - 1)/k = 1/2."""
    n, k1, k2 = 30_000, 2, 2
    forest, true, s1, s2, par_a = _simulate(n, k1, k2, seed=0)
    unbiased = _per_prompt_gradients(np.asarray(tree_rloo(forest).node_advantages), n, k1, k2, s1, s2, par_a)
    mean, se = unbiased.mean(0), unbiased.std(0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(mean - true) < 4 * se), (mean, true, se)
    parent = treerl(forest, global_weight=0.0, leaf_centering="none", leaf_scale="none")  # V(n) - V(p(n))
    biased = _per_prompt_gradients(np.asarray(parent.node_advantages), n, k1, k2, s1, s2, par_a)
    bmean, bse = biased.mean(0), biased.std(0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(bmean - 0.5 * true) < 4 * bse), (bmean, true)
    assert np.any(np.abs(bmean - true) > 8 * bse)


# ------------------------------------------------------------------------------ construction and validation


def test_from_paths_equals_from_parents():
    f1 = _forest()
    rows = [[f1.node_ids[i] for i in row if i >= 0] for row in f1.paths.tolist()]
    f2 = Forest.from_paths(rows, f1.rewards)
    for fn in (tree_rloo, treerl, treerpo, tree_grpo):
        np.testing.assert_allclose(fn(f2).advantages, fn(f1).advantages, atol=1e-12)
    # array paths with a mask, groups per row
    arr = np.array([["a", "c", ""], ["a", "b", "d"], ["a", "b", "e"], ["f", "g", ""]])
    f3 = Forest.from_paths(arr, [1.0, 1.0, 0.0, 0.0], mask=arr != "", group_ids=["p", "p", "p", "p"])
    np.testing.assert_allclose(tree_rloo(f3).advantages, tree_rloo(f1).advantages)


def test_groups_are_separate_prompts():
    # the same tree twice under two prompts: identical advantages, nothing shared across prompts
    ids = ["a", "b", "c", "x", "y", "z"]
    parents = [None, "a", "a", None, "x", "x"]
    rewards = [None, 1.0, 0.0, None, 1.0, 0.0]
    f = Forest.from_parents(ids, parents, rewards, group_ids=[0, 0, 0, 1, 1, 1])
    out = tree_rloo(f)
    np.testing.assert_allclose(out.node_advantages, [0.0, 1.0, -1.0, 0.0, 1.0, -1.0])
    assert f.num_groups == 2


def test_errors_name_the_problem():
    with pytest.raises(cl.errors.DataFormatError, match="twice"):
        Forest.from_parents(["a", "a"], [None, None], [1.0, 1.0])
    with pytest.raises(cl.errors.DataFormatError, match="not among node_ids"):
        Forest.from_parents(["a", "b"], [None, "zz"], [None, 1.0])
    with pytest.raises(cl.errors.DataFormatError, match="cycle"):
        Forest.from_parents(["a", "b", "c"], [None, "c", "b"], [1.0, None, None])
    with pytest.raises(cl.errors.DataFormatError, match="rewards belong to leaves"):
        Forest.from_parents(["a", "b"], [None, "a"], [0.5, 1.0])
    with pytest.raises(cl.errors.GroupError, match="group_ids"):
        Forest.from_parents(["a", "b"], [None, "a"], [None, 1.0], group_ids=[0, 1])
    with pytest.raises(cl.errors.DataFormatError, match="one parent"):
        Forest.from_paths([["a", "b"], ["c", "b"]], [1.0, 0.0])
    with pytest.raises(cl.errors.DataFormatError, match="continues"):
        Forest.from_paths([["a", "b"], ["a"]], [1.0, 0.0])
    with pytest.raises(cl.errors.ShapeError, match="rewards"):
        Forest.from_paths([["a", "b"], ["a", "c"]], [1.0])
    with pytest.raises(cl.errors.NonFiniteError, match="rewards"):
        Forest.from_parents(["a", "b"], [None, "a"], [None, float("inf")])
    with pytest.raises(cl.errors.EmptyBatchError):
        Forest.from_paths([], [])
    with pytest.raises(cl.errors.RangeError, match="leaf_scale"):
        treerl(_forest(), leaf_scale="log")


# ------------------------------------------------------------------------------ tokens and registry


def test_token_layout_and_broadcast():
    f = _forest()
    counts = [2, 1, 3, 1, 2, 1, 2]  # a b c d e f g
    obs = [[1, 1], [1], [1, 0, 1], [1], [1, 1], [1], [1, 0]]  # c and g hold an observation token
    turn_ids, rm = tree_token_layout(f, counts, policy_masks=obs)
    out = tree_rloo(f)
    tokens = cl.broadcast_to_tokens(out.advantages, turn_ids, rm)
    # row c: a a c c(obs) c -> 2/3 2/3 0.5 0 0.5
    np.testing.assert_allclose(tokens[0, :5], [2 / 3, 2 / 3, 0.5, 0.0, 0.5])
    # row g: f g g(obs) -> -2/3 -2/3 0
    np.testing.assert_allclose(tokens[3, :3], [-2 / 3, -2 / 3, 0.0])
    assert rm.sum(1).tolist() == [4, 4, 5, 2]


def test_registered_methods_run_on_episodes():
    names = cl.registry.method_names()
    for name in ("tree_rloo", "treerl", "tree_grpo", "treerpo"):
        assert name in names
    f = _forest()
    rows = [[f.node_ids[i] for i in row if i >= 0] for row in f.paths.tolist()]
    width = max(len(r) for r in rows)
    node_ids = np.array([r + [""] * (width - len(r)) for r in rows], dtype=object)
    ep = cl.Episodes.from_lists(
        [[0.0] * len(r) for r in rows], outcomes=list(f.rewards), group_ids=[0, 0, 0, 0], extras={"node_ids": node_ids}
    )
    out = cl.registry.get_method("tree_rloo")(ep)
    np.testing.assert_allclose(out.advantages, tree_rloo(f).advantages)
    out = cl.registry.get_method("treerl")(ep, leaf_scale="none")
    np.testing.assert_allclose(out.advantages, treerl(f, leaf_scale="none").advantages)


def test_torch_rewards_give_torch_outputs():
    f = Forest.from_paths([["a", "b"], ["a", "c"]], torch.tensor([1.0, 0.0]))
    out = tree_rloo(f)
    assert isinstance(out.advantages, torch.Tensor)
    np.testing.assert_allclose(out.advantages.numpy(), [[0.0, 1.0], [0.0, -1.0]])


# ------------------------------------------------------------------------------ against slow reference loops


def _random_forest(rng):
    """Random prompts, trees and branching; some leaf rewards missing."""
    ids, parents, groups = [], [], []
    for g in range(int(rng.integers(1, 4))):
        for t in range(int(rng.integers(1, 3))):
            root = f"g{g}t{t}r"
            ids.append(root)
            parents.append(None)
            groups.append(g)
            frontier = [root]
            for k in range(int(rng.integers(0, 7))):
                p = frontier[int(rng.integers(0, len(frontier)))]
                n = f"g{g}t{t}n{k}"
                ids.append(n)
                parents.append(p)
                groups.append(g)
                frontier.append(n)
    has_child = {p for p in parents if p is not None}
    rewards = [None if n in has_child else (None if rng.random() < 0.1 else float(rng.integers(0, 3))) for n in ids]
    return ids, parents, rewards, groups


def _reference(ids, parents, rewards, groups):
    """Per-node definitions as plain recursion over dicts."""
    children = {n: [c for c, p in zip(ids, parents) if p == n] for n in ids}
    reward = dict(zip(ids, rewards))
    group = dict(zip(ids, groups))

    def leaves(n):
        return [n] if not children[n] else [x for c in children[n] for x in leaves(c)]

    def v(n):
        vals = [reward[x] for x in leaves(n) if reward[x] is not None]
        return (sum(vals) / len(vals), len(vals)) if vals else (0.0, 0)

    def siblings(n):
        p = parents[ids.index(n)]
        return [c for c in ids if parents[ids.index(c)] == p and (p is not None or group[c] == group[n])]

    rloo, rpo = {}, {}
    for n in sorted(ids, key=lambda x: _depth(x, ids, parents)):
        vn, cn = v(n)
        sib = [s for s in siblings(n) if v(s)[1] > 0]
        others = [v(s)[0] for s in sib if s != n]
        if cn == 0:
            rloo[n] = 0.0
        elif others:
            rloo[n] = vn - sum(others) / len(others)
        else:
            p = parents[ids.index(n)]
            rloo[n] = rloo[p] if p is not None else 0.0
        vals = [v(s)[0] for s in sib]
        if cn == 0 or len(vals) < 2 or max(vals) == min(vals):
            rpo[n] = 0.0
        else:
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1))
            rpo[n] = (vn - mean) / (sd + 1e-6)
    return rloo, rpo


def _depth(n, ids, parents):
    d = 0
    while parents[ids.index(n)] is not None:
        n = parents[ids.index(n)]
        d += 1
    return d


@pytest.mark.parametrize("seed", range(25))
def test_tree_rloo_and_treerpo_match_reference_loops(seed):
    rng = np.random.default_rng(seed)
    ids, parents, rewards, groups = _random_forest(rng)
    f = Forest.from_parents(ids, parents, rewards, group_ids=groups)
    rloo, rpo = _reference(ids, parents, rewards, groups)
    np.testing.assert_allclose(tree_rloo(f).node_advantages, [rloo[n] for n in ids], atol=1e-12)
    np.testing.assert_allclose(treerpo(f).node_advantages, [rpo[n] for n in ids], atol=1e-9)
