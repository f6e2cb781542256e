"""On-policy distillation credit and Monte Carlo prefix values (VinePPO, SPO): hand-computed cases,
agreement with the reference code's loops (restated below), the gradient each distillation mode
gives (exact enumeration), registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.advantage.kl import kl_penalty
from creditlab.llm import mc_values, opd_advantages, opd_token_rewards, spo_advantages, spo_cutpoints, vine_advantages

# ------------------------------------------------------------------------------ on-policy distillation


def test_opd_token_rewards_are_minus_k1():
    rng = np.random.default_rng(0)
    s = np.log(rng.uniform(0.05, 1, size=(3, 5)))
    t = np.log(rng.uniform(0.05, 1, size=(3, 5)))
    m = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    out = opd_token_rewards(s, t, m, coef=0.5)
    np.testing.assert_allclose(out.rewards, -0.5 * kl_penalty(s, t, kind="k1") * m)
    assert out.metrics["opd/reverse_kl_mean"] == pytest.approx(float((s - t)[m].mean()))


def _slime_apply_opd(advantages, student, teacher, coef):
    """slime's apply_opd_kl_to_advantages, restated: adv_i -= coef * (student_i - teacher_i)."""
    return [a - coef * (s - t) for a, s, t in zip(advantages, student, teacher)]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), coef=st.sampled_from([0.1, 1.0, 2.5]))
def test_opd_token_mode_equals_slimes_blend(seed, coef):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, size=4)
    width = int(lengths.max())
    m = np.arange(width)[None, :] < lengths[:, None]
    s = np.where(m, np.log(rng.uniform(0.01, 1, size=(4, width))), 0.0)
    t = np.where(m, np.log(rng.uniform(0.01, 1, size=(4, width))), 0.0)
    base = np.where(m, rng.normal(size=(4, width)), 0.0)
    ref = _slime_apply_opd(
        [base[i, : lengths[i]] for i in range(4)],
        [s[i, : lengths[i]] for i in range(4)],
        [t[i, : lengths[i]] for i in range(4)],
        coef,
    )
    out = opd_advantages(s, t, m, advantages=base, coef=coef)
    for i in range(4):
        np.testing.assert_allclose(out.advantages[i, : lengths[i]], ref[i], atol=1e-12)
    assert np.all(out.advantages[~m] == 0)


def test_opd_returns_mode_skips_tool_tokens_and_whitens():
    # credits c = [log 2, (tool), -log 2, log 2]: returns-to-go over policy tokens = [log 2, 0, 0, log 2]
    d = math.log(2)
    s = np.log([[0.5, 0.9, 0.5, 0.5]])
    t = np.log([[1.0, 0.1, 0.25, 1.0]])
    m = np.array([[1, 0, 1, 1]], bool)
    out = opd_advantages(s, t, m, mode="returns")
    np.testing.assert_allclose(out.advantages, [[d, 0.0, 0.0, d]], atol=1e-12)
    w = opd_advantages(s, t, m, mode="returns", whiten=True, eps=0.0).advantages
    vals = np.array([d, 0.0, d])
    np.testing.assert_allclose(w[0, [0, 2, 3]], (vals - vals.mean()) / vals.std(ddof=1), atol=1e-12)
    assert w[0, 1] == 0


def test_opd_returns_mode_is_the_sequence_reverse_kl_gradient():
    """Two tokens, y2 ~ pi(. | y1). Distillation credit with returns-to-go is REINFORCE on
    -KL(student || teacher) of the sequence; token mode gives only the per-state gradients."""
    g = torch.Generator().manual_seed(3)
    v = 3
    th1 = torch.randn(v, generator=g, dtype=torch.float64).requires_grad_(True)
    th2 = torch.randn(v, v, generator=g, dtype=torch.float64).requires_grad_(True)
    t1 = torch.log_softmax(torch.randn(v, generator=g, dtype=torch.float64), -1)
    t2 = torch.log_softmax(torch.randn(v, v, generator=g, dtype=torch.float64), -1)
    lp1, lp2 = torch.log_softmax(th1, -1), torch.log_softmax(th2, -1)
    p1, p2 = lp1.exp(), lp2.exp()
    seq_kl = (p1 * ((lp1 - t1) + (p2 * (lp2 - t2)).sum(-1))).sum()
    true = torch.cat([x.reshape(-1) for x in torch.autograd.grad(-seq_kl, (th1, th2), retain_graph=True)])
    joint = (p1[:, None] * p2).detach()
    # every (y1, y2) sequence as a row of 2 tokens
    s_lp = torch.stack([lp1[:, None].expand(v, v), lp2], -1).reshape(v * v, 2)
    t_lp = torch.stack([t1[:, None].expand(v, v), t2], -1).reshape(v * v, 2)
    m = np.ones((v * v, 2), bool)

    def expected_grad(mode):
        a = torch.as_tensor(opd_advantages(s_lp.detach(), t_lp, m, mode=mode).advantages)
        f = (joint.reshape(-1, 1) * a * s_lp).sum()
        return torch.cat([x.reshape(-1) for x in torch.autograd.grad(f, (th1, th2), retain_graph=True)])

    torch.testing.assert_close(expected_grad("returns"), true)
    assert not torch.allclose(expected_grad("token"), true, atol=1e-4)


def test_opd_errors():
    with pytest.raises(cl.errors.ShapeError, match="teacher_log_probs"):
        opd_token_rewards(np.zeros((1, 2)) - 1, np.zeros((1, 3)) - 1, [[1, 1]])
    with pytest.raises(cl.errors.RangeError, match="log-probabilities"):
        opd_token_rewards([[0.5]], [[-1.0]], [[1]])
    with pytest.raises(cl.errors.RangeError, match="mode"):
        opd_advantages([[-1.0]], [[-1.0]], [[1]], mode="gae")


# ------------------------------------------------------------------------------ Monte Carlo values


def test_mc_values():
    v, n = mc_values(np.array([[1.0, 0.0, 1.0, np.nan], [np.nan] * 4]))
    assert v[0] == pytest.approx(2 / 3) and n.tolist() == [3, 0] and np.isnan(v[1])
    v2, _ = mc_values(np.array([[1.0, 0.0]]), mask=np.array([[True, False]]))
    assert v2.tolist() == [1.0]
    with pytest.raises(cl.errors.NonFiniteError, match="continuation_returns"):
        mc_values(np.array([[1.0, np.inf]]))


def _vineppo_reference(step_rewards, values):
    """McGill-NLP/VinePPO _compute_step_advantages, restated (values has len(steps) + 1 entries,
    None = unknown, the last one the terminal state)."""
    values = list(values)
    values[-1] = 0.0
    for i in range(len(values) - 2, -1, -1):
        if values[i] is not None:
            break
        values[i] = step_rewards[i] + values[i + 1]
    return [step_rewards[i] + values[i + 1] - values[i] for i in range(len(step_rewards))]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_vine_advantages_equal_vineppos_loop(seed):
    rng = np.random.default_rng(seed)
    b, t = 5, 6
    lengths = rng.integers(1, t + 1, size=b)
    rewards = np.zeros((b, t))
    values = np.full((b, t), np.nan)
    mask = np.arange(t)[None, :] < lengths[:, None]
    ref = []
    for i in range(b):
        n = int(lengths[i])
        r = [0.0] * n
        r[-1] = float(rng.integers(0, 2))
        rewards[i, :n] = r
        known = int(rng.integers(0, n + 1))  # VinePPO estimates a prefix of the states
        v = [float(rng.uniform(0, 1)) for _ in range(known)] + [None] * (n + 1 - known)
        values[i, :known] = v[:known]
        ref.append(_vineppo_reference(r, v))
    out = vine_advantages(rewards, values, mask=mask)
    for i in range(b):
        np.testing.assert_allclose(out.advantages[i, : lengths[i]], ref[i], atol=1e-12)
    assert np.all(out.advantages[~mask] == 0)


def test_vine_unknown_value_between_known_ones_merges_steps():
    # V = [0.2, ?, 0.6], rewards [0, 0, 1], gamma 1: V_1 = 0 + 0.6 -> A = [0.4, 0, 0.4]
    out = vine_advantages(np.array([[0.0, 0.0, 1.0]]), np.array([[0.2, np.nan, 0.6]]))
    np.testing.assert_allclose(out.advantages, [[0.4, 0.0, 0.4]])
    np.testing.assert_allclose(out.returns, [[0.2, 0.6, 0.6]])
    g = vine_advantages(np.array([[0.0, 1.0]]), np.array([[0.5, np.nan]]), gamma=0.5)
    np.testing.assert_allclose(g.advantages, [[0.5 * 1.0 - 0.5, 0.0]])  # V_1 = 1 (backfilled), A_0 = 0 + .5 * 1 - .5


def _spo_reference(score, cutpoints, cut_values, response_prob, n):
    """AIFrameResearch/SPO _compute_token_advantages, restated."""
    token_values = [None] * n
    token_values[-1] = score
    advantages = [None] * n
    base = None
    if len(cutpoints) == 0:
        return [0] * n
    if cutpoints[0] == -1:
        base = cut_values[0]
        cutpoints, cut_values = cutpoints[1:], cut_values[1:]
    for idx, value in zip(cutpoints, cut_values):
        token_values[idx] = value
    for i in range(n):
        if token_values[i] is not None:
            advantages[i] = 0 if base is None else token_values[i] - base
            base = token_values[i]
    for i in range(n - 1, -1, -1):
        if advantages[i] is None:
            advantages[i] = advantages[i + 1]
    return [0 if response_prob[i] > 0.9 else a for i, a in enumerate(advantages)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), interval=st.integers(1, 3))
def test_spo_equals_the_reference_loop(seed, interval):
    rng = np.random.default_rng(seed)
    b, width = 4, 12
    lengths = rng.integers(1, width + 1, size=b)
    mask = np.arange(width)[None, :] < lengths[:, None]
    probs = np.where(
        rng.random((b, width)) < 0.4, rng.uniform(0.05, 0.9, size=(b, width)), rng.uniform(0.91, 1.0, size=(b, width))
    )
    lp = np.log(probs)
    cuts, prompt_cut = spo_cutpoints(lp, mask=mask, interval=interval)
    scores = rng.integers(0, 2, size=b).astype(float)
    prefix = np.where(cuts, rng.uniform(0, 1, size=(b, width)), np.nan)
    prompt = np.where(prompt_cut, rng.uniform(0, 1, size=b), np.nan)
    out = spo_advantages(scores, prefix, mask=mask, prompt_values=prompt, log_probs=lp)
    for i in range(b):
        n = int(lengths[i])
        # SPO's cut points: p < 0.9 -> index - 1 -> every interval-th
        ref_cuts = (np.flatnonzero(probs[i, :n] < 0.9) - 1)[::interval].tolist()
        got = ([-1] if prompt_cut[i] else []) + np.flatnonzero(cuts[i]).tolist()
        assert got == ref_cuts
        vals = [prompt[i] if c == -1 else prefix[i, c] for c in ref_cuts]
        keep = [(c, v) for c, v in zip(ref_cuts, vals) if c != n - 1]  # a cut on the last token: the score wins
        ref = _spo_reference(scores[i], [c for c, _ in keep], [v for _, v in keep], probs[i, :n], n)
        np.testing.assert_allclose(out.advantages[i, :n], ref, atol=1e-12)
    assert np.all(out.advantages[~mask] == 0)


def test_spo_hand_computed_without_prompt_value():
    # cuts after tokens 1 (V 0.4) and 3 (V 0.9), score 0: no base for the first cut -> 0;
    # tokens 2-3: 0.9 - 0.4; tokens 4-5: 0 - 0.9
    nan = np.nan
    out = spo_advantages([0.0], np.array([[nan, 0.4, nan, 0.9, nan, nan]]))
    np.testing.assert_allclose(out.advantages, [[0.0, 0.0, 0.5, 0.5, -0.9, -0.9]])


def test_prefix_value_errors():
    with pytest.raises(cl.errors.RangeError, match="interval"):
        spo_cutpoints(np.log([[0.5]]), interval=0)
    with pytest.raises(cl.errors.ShapeError, match="scores"):
        spo_advantages([1.0, 0.0], np.array([[np.nan]]))
    with pytest.raises(cl.errors.ShapeError, match="values"):
        vine_advantages(np.zeros((1, 2)), np.zeros((1, 3)))


# ------------------------------------------------------------------------------ registry


def test_registered_and_run_on_episodes():
    names = cl.registry.method_names()
    for name in ("opd", "vineppo", "spo"):
        assert name in names
    d = math.log(2)
    ep = cl.Episodes.from_lists(
        [[0.0, 0.0], [0.0]],
        extras={"log_probs": np.log([[0.5, 0.5], [0.5, 0.5]]), "teacher_log_probs": np.log([[1.0, 0.25], [0.25, 0.5]])},
    )
    np.testing.assert_allclose(cl.registry.get_method("opd")(ep).advantages, [[d, -d], [-d, 0.0]])
    ep2 = cl.Episodes.from_lists(
        [[0.0, 0.0, 1.0]], extras={"mc_returns": np.array([[[1.0, 0.0], [1.0, 1.0], [np.nan, np.nan]]])}
    )
    np.testing.assert_allclose(cl.registry.get_method("vineppo")(ep2).advantages, [[0.5, 0.0, 0.0]])
    ep3 = cl.Episodes.from_lists(
        [[0.0, 0.0, 0.0]], outcomes=[1.0], extras={"prefix_values": np.array([[np.nan, 0.25, np.nan]])}
    )
    np.testing.assert_allclose(cl.registry.get_method("spo")(ep3).advantages, [[0.0, 0.0, 0.75]])
