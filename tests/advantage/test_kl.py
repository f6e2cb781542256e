"""KL estimators and their placement: values, agreement with verl's ``kl_penalty`` (values and
gradients), and exact-enumeration checks of which gradient each placement gives (the claims of
docs/estimators.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.advantage.kl import KL_KINDS, adaptive_kl_coef, kl_in_loss, kl_in_reward, kl_penalty

BASE_KINDS = ("k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl")


# ------------------------------------------------------------------------------ tier 1


def test_values_hand_computed():
    # d = log 0.5 - log 0.25 = log 2: k1 = log 2, k2 = (log 2)^2 / 2, k3 = 1/2 - 1 + log 2
    lp, ref = np.log([[0.5]]), np.log([[0.25]])
    d = math.log(2)
    assert kl_penalty(lp, ref, kind="k1")[0, 0] == pytest.approx(d)
    assert kl_penalty(lp, ref, kind="abs")[0, 0] == pytest.approx(d)
    assert kl_penalty(ref, lp, kind="abs")[0, 0] == pytest.approx(d)
    assert kl_penalty(lp, ref, kind="k2")[0, 0] == pytest.approx(d * d / 2)
    assert kl_penalty(lp, ref, kind="k3")[0, 0] == pytest.approx(0.5 - 1 + d)
    for plus in ("k1+", "k3+"):  # "+" keeps the base value
        assert kl_penalty(lp, ref, kind=plus)[0, 0] == pytest.approx(kl_penalty(lp, ref, kind=plus[:-1])[0, 0])


def test_full_kl_equals_torch_distributions():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 3, 7), -1)
    ref = torch.log_softmax(torch.randn(2, 3, 7), -1)
    ours = kl_penalty(lp, ref, kind="full")
    theirs = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=lp), torch.distributions.Categorical(logits=ref)
    )
    torch.testing.assert_close(ours, theirs)


def test_errors():
    with pytest.raises(cl.errors.RangeError, match="kind"):
        kl_penalty([[0.0]], [[0.0]], kind="k4")
    with pytest.raises(cl.errors.ShapeError, match="ref_log_probs"):
        kl_penalty([[0.0, 0.0]], [[0.0]])
    with pytest.raises(cl.errors.ShapeError, match="full"):
        kl_penalty([[0.0]], [[0.0]], kind="full")
    with pytest.raises(cl.errors.DtypeError, match="torch tensor"):
        kl_in_loss(np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1)), coef=0.1)
    with pytest.raises(cl.errors.NonFiniteError, match="log_probs"):
        kl_in_reward([[1.0]], [[float("nan")]], [[0.0]], [[1]], coef=0.1)


def test_kl_in_reward_masks_and_metrics():
    # row 0: two policy tokens d = [log 2, 0] -> k1 = [log 2, 0]; row 1: one policy token d = -log 2
    lp = np.log([[0.5, 0.3, 0.9], [0.25, 0.9, 0.9]])
    ref = np.log([[0.25, 0.3, 0.1], [0.5, 0.9, 0.9]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    out = kl_in_reward(np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]), lp, ref, mask, coef=0.5)
    d = math.log(2)
    np.testing.assert_allclose(out.rewards, [[-0.5 * d, 1.0, 0.0], [2.0 + 0.5 * d, 0.0, 0.0]])
    # per-row masked means: (d + 0) / 2 and -d -> batch mean -d / 4
    assert out.metrics["kl/mean"] == pytest.approx(-d / 4, rel=1e-6)


def test_adaptive_kl_coef_clips_the_error():
    # KL 10x the target: the error is clipped at +0.2
    assert adaptive_kl_coef(1.0, 1.0, target_kl=0.1, horizon=10, n_steps=10) == pytest.approx(1.2)
    assert adaptive_kl_coef(1.0, 0.0, target_kl=0.1, horizon=10, n_steps=10) == pytest.approx(0.8)
    with pytest.raises(cl.errors.RangeError, match="target_kl"):
        adaptive_kl_coef(1.0, 0.1, target_kl=0.0, horizon=10, n_steps=1)


# ------------------------------------------------------------------------------ which gradient each placement gives


def _one_step(seed: int, v: int = 5):
    g = torch.Generator().manual_seed(seed)
    theta = (torch.randn(v, generator=g, dtype=torch.float64) * 0.7).requires_grad_(True)
    ref_logp = torch.log_softmax(torch.randn(v, generator=g, dtype=torch.float64) * 0.7, -1)
    return theta, ref_logp


def _grad(f, theta):
    (g,) = torch.autograd.grad(f, theta, retain_graph=True)
    return g


@pytest.mark.parametrize("seed", range(5))
def test_placement_gradients_by_exact_enumeration(seed):
    """E over y ~ pi of each placement's gradient, summed exactly over the V tokens."""
    theta, ref = _one_step(seed)
    logp = torch.log_softmax(theta, -1)
    p = logp.exp().detach()  # sampling weights (on-policy: the sampling policy is pi)
    reverse = _grad((logp.exp() * (logp - ref)).sum(), theta)  # grad KL(pi || ref)
    forward = _grad((ref.exp() * (ref - logp)).sum(), theta)  # grad KL(ref || pi)

    def in_reward(kind):  # score function: E[k (detached) * grad log pi(y)]
        lp = torch.log_softmax(theta, -1)
        k = kl_penalty(lp.detach(), ref, kind=kind)
        return _grad((p * k * lp).sum(), theta)

    def in_loss(kind):  # pathwise: E[grad k(log pi(y))]
        lp = torch.log_softmax(theta, -1)
        return _grad((p * kl_penalty(lp, ref, kind=kind)).sum(), theta)

    torch.testing.assert_close(in_reward("k1"), reverse)
    torch.testing.assert_close(in_loss("k2"), reverse)
    torch.testing.assert_close(in_loss("k3+"), reverse)
    torch.testing.assert_close(in_loss("k1+"), reverse)
    torch.testing.assert_close(in_loss("k3"), forward)
    torch.testing.assert_close(in_loss("k1"), torch.zeros_like(reverse), atol=1e-7, rtol=0)
    assert not torch.allclose(in_reward("k3"), reverse, atol=1e-4)
    assert not torch.allclose(in_reward("k2"), reverse, atol=1e-4)
    assert not torch.allclose(forward, reverse, atol=1e-4)
    # values: k1 and k3 are unbiased for KL(pi || ref), k2 is not
    kl = float((p * (logp.detach() - ref)).sum())
    assert float((p * kl_penalty(logp.detach(), ref, kind="k1")).sum()) == pytest.approx(kl, rel=1e-9)
    assert float((p * kl_penalty(logp.detach(), ref, kind="k3")).sum()) == pytest.approx(kl, rel=1e-9)
    assert float((p * kl_penalty(logp.detach(), ref, kind="k2")).sum()) != pytest.approx(kl, rel=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_loss_placement_misses_the_effect_on_later_states(seed):
    """Two tokens, y2 ~ pi(. | y1): the sequence KL's gradient also moves the distribution of y1.

    k1 in the reward with returns-to-go gets it (REINFORCE on the sequence KL); k2 in the loss
    gives the gradient of each state's KL with the state distribution held fixed."""
    g = torch.Generator().manual_seed(100 + seed)
    v = 3
    th1 = (torch.randn(v, generator=g)).requires_grad_(True)
    th2 = (torch.randn(v, v, generator=g)).requires_grad_(True)
    ref1 = torch.log_softmax(torch.randn(v, generator=g), -1)
    ref2 = torch.log_softmax(torch.randn(v, v, generator=g), -1)
    params = (th1, th2)

    def grads(f):
        return torch.cat([x.reshape(-1) for x in torch.autograd.grad(f, params, retain_graph=True)])

    lp1, lp2 = torch.log_softmax(th1, -1), torch.log_softmax(th2, -1)  # lp2[y1, y2]
    p1, p2 = lp1.exp(), lp2.exp()
    kl2 = (p2 * (lp2 - ref2)).sum(-1)  # per-state KL at step 2
    seq_kl = (p1 * ((lp1 - ref1) + kl2)).sum()
    true = grads(seq_kl)
    joint = (p1[:, None] * p2).detach()  # P(y1, y2)
    k1_1 = kl_penalty(lp1.detach(), ref1, kind="k1")[:, None].expand(v, v)
    k1_2 = kl_penalty(lp2.detach(), ref2, kind="k1")
    reward = (joint * (lp1[:, None] * (k1_1 + k1_2) + lp2 * k1_2)).sum()  # returns-to-go
    torch.testing.assert_close(grads(reward), true)
    loss = (
        joint
        * (
            kl_penalty(lp1[:, None].expand(v, v), ref1[:, None].expand(v, v), kind="k2")
            + kl_penalty(lp2, ref2, kind="k2")
        )
    ).sum()
    per_state = grads((p1 * (lp1 - ref1)).sum() + (p1.detach() * kl2).sum())
    torch.testing.assert_close(grads(loss), per_state)
    assert not torch.allclose(grads(loss), true, atol=1e-4)


# ------------------------------------------------------------------------------ agreement with verl

core = pytest.importorskip("verl.trainer.ppo.core_algos")  # installed by scripts/install.sh


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from([k for k in KL_KINDS if k != "full"]))
def test_kl_penalty_equals_verl_in_value_and_gradient(seed, kind):
    rng = np.random.default_rng(seed)
    shape = (4, 7)
    lp = torch.tensor(rng.normal(-1.5, 1.0, size=shape) * rng.choice([1.0, 15.0], size=shape), requires_grad=True)
    ref = torch.tensor(rng.normal(-1.5, 1.0, size=shape) * rng.choice([1.0, 15.0], size=shape))
    up = torch.tensor(rng.normal(size=shape))
    ours = kl_penalty(lp, ref, kind=kind)
    (g_ours,) = torch.autograd.grad((ours * up).sum(), lp)
    lp2 = lp.detach().clone().requires_grad_(True)
    theirs = core.kl_penalty(lp2, ref, kind)
    (g_theirs,) = torch.autograd.grad((theirs * up).sum(), lp2)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)
    np.testing.assert_allclose(kl_penalty(lp.detach().numpy(), ref.numpy(), kind=kind), theirs.detach().numpy())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["kl", "k2", "low_var_kl"]))
def test_kl_in_reward_equals_verls_apply_kl_penalty(seed, kind):
    from verl.utils.torch_functional import masked_mean

    rng = np.random.default_rng(seed)
    bs, length = 6, 9
    lengths = rng.integers(1, length + 1, size=bs)
    mask = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float32))
    scores = torch.from_numpy(rng.normal(size=(bs, length)).astype(np.float32)) * mask
    old = torch.from_numpy(rng.normal(-2, 1, size=(bs, length)).astype(np.float32))
    ref = torch.from_numpy(rng.normal(-2, 1, size=(bs, length)).astype(np.float32))
    beta = 0.05
    kld = core.kl_penalty(old, ref, kl_penalty=kind) * mask
    theirs = scores - beta * kld
    current_kl = torch.mean(masked_mean(kld, mask=mask, axis=-1), dim=0).item()
    ours = kl_in_reward(scores, old, ref, mask.bool(), coef=beta, kind=kind)
    torch.testing.assert_close(ours.rewards, theirs, atol=1e-6, rtol=1e-6)
    assert ours.metrics["kl/mean"] == pytest.approx(current_kl, rel=1e-5, abs=1e-7)
    if kind == "kl":
        torch.testing.assert_close(
            ours.rewards * mask, core.compute_rewards(scores, old, ref, beta) * mask, atol=1e-6, rtol=1e-6
        )


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    agg=st.sampled_from(
        ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
    ),
)
def test_kl_in_loss_equals_verls_kl_loss(seed, agg):
    rng = np.random.default_rng(seed)
    bs, length = 5, 8
    lengths = rng.integers(0, length + 1, size=bs)  # an empty row is possible
    mask = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float64))
    if mask.sum() == 0:
        mask[0, 0] = 1
    lp = torch.tensor(rng.normal(-2, 1, size=(bs, length)), requires_grad=True)
    ref = torch.tensor(rng.normal(-2, 1, size=(bs, length)))
    ours = kl_in_loss(lp, ref, mask.bool(), coef=0.3, kind="low_var_kl", agg=agg)
    (g_ours,) = torch.autograd.grad(ours, lp)
    lp2 = lp.detach().clone().requires_grad_(True)
    theirs = 0.3 * core.agg_loss(core.kl_penalty(lp2, ref, "low_var_kl"), mask, agg)
    (g_theirs,) = torch.autograd.grad(theirs, lp2)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)


def test_adaptive_kl_coef_equals_verls_controller():
    ctrl = core.AdaptiveKLController(init_kl_coef=0.01, target_kl=0.1, horizon=1000)
    coef = 0.01
    for kl, n in [(0.05, 64), (0.3, 64), (0.1, 128), (0.0, 32)]:
        ctrl.update(current_kl=kl, n_steps=n)
        coef = adaptive_kl_coef(coef, kl, target_kl=0.1, horizon=1000, n_steps=n)
        assert coef == pytest.approx(ctrl.value, rel=1e-12)


def test_registered_kl_in_reward_runs_on_tokens_as_steps():
    ep = cl.Episodes.from_lists(
        [[0.0, 1.0], [2.0]],
        extras={"log_probs": np.log([[0.5, 0.5], [0.25, 0.5]]), "ref_log_probs": np.log([[0.25, 0.5], [0.5, 0.5]])},
    )
    out = cl.registry.get_method("kl_in_reward")(ep, coef=1.0)
    d = math.log(2)
    np.testing.assert_allclose(out.rewards, [[-d, 1.0], [2.0 + d, 0.0]])
