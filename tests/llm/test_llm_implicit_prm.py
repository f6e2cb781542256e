"""Implicit PRM: PRIME token rewards, CE and OPRL-DPO losses, advantages, and online learning of a
planted per-turn signal."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import creditlab as cl
from creditlab.llm import (
    ImplicitPRM,
    implicit_token_rewards,
    implicit_turn_rewards,
    oprl_advantages,
    oprl_dpo_loss,
    prime_advantages,
    prime_ce_loss,
    token_log_probs,
    turn_ids_from_response_mask,
)

torch.set_num_threads(1)


def test_token_log_probs_shift():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])  # position 1 predicts token 2
    ids = torch.tensor([[1, 1, 0]])
    out = token_log_probs(logits, ids)
    # token 1 after position 0: log(1/2); token 0 after position 1: log(3/4)
    np.testing.assert_allclose(out.numpy(), [[0.0, math.log(0.5), math.log(0.75)]], atol=1e-6)


def test_token_and_turn_rewards_by_hand():
    lp = np.log([[0.5, 0.5, 0.2, 0.9, 0.1]])
    ref = np.log([[0.5, 0.25, 0.4, 0.3, 0.1]])
    resp = np.array([[0, 1, 1, 0, 1]], bool)
    lp[0, 3] = -np.inf  # an observation token: not read
    out = implicit_token_rewards(lp, ref, resp, beta=0.5)
    # 0.5 * log(2) on token 1, 0.5 * log(0.5) on token 2, 0 on token 4 (equal), 0 off the mask
    np.testing.assert_allclose(out.rewards, [[0.0, 0.5 * math.log(2), 0.5 * math.log(0.5), 0.0, 0.0]], atol=1e-12)
    ids, _ = turn_ids_from_response_mask(resp)
    turns = implicit_turn_rewards(lp, ref, ids, resp, beta=0.5)
    np.testing.assert_allclose(turns.rewards, [[0.0, 0.0]], atol=1e-12)  # turn 0: log 2 + log 0.5 = 0
    with pytest.raises(cl.NonFiniteError):
        implicit_token_rewards(lp, ref, np.ones((1, 5), bool))


def test_losses_by_hand():
    lp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -0.5]], requires_grad=True)
    ref = torch.tensor([[0.0, -1.5, -2.0], [0.0, -0.5, -1.5]])
    resp = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    # sums of log-ratios: S = [0.5, 1.0]; beta = 0.2 -> scores [0.1, 0.2]
    ce = prime_ce_loss(lp, ref, resp, torch.tensor([1.0, 0.0]), beta=0.2)
    expected = (-math.log(1 / (1 + math.exp(-0.1))) - math.log(1 - 1 / (1 + math.exp(-0.2)))) / 2
    assert abs(float(ce.detach()) - expected) < 1e-6
    ce.backward()
    assert lp.grad is not None and torch.all(lp.grad[:, 0] == 0)  # prompt tokens get no gradient
    # DPO: trajectory 0 has the better outcome: -log sigmoid(0.2 * (0.5 - 1.0))
    dpo = oprl_dpo_loss(lp, ref, resp, torch.tensor([1.0, 0.0]), [0, 0], beta=0.2)
    assert abs(float(dpo.detach()) + math.log(1 / (1 + math.exp(0.1)))) < 1e-6
    # no pair with different outcomes -> 0
    assert float(oprl_dpo_loss(lp, ref, resp, torch.tensor([1.0, 1.0]), [0, 0]).detach()) == 0.0
    assert float(oprl_dpo_loss(lp, ref, resp, torch.tensor([1.0, 0.0]), [0, 1]).detach()) == 0.0


def test_dpo_best_worst_uses_one_pair_per_group():
    s = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])  # log-ratio sums 1, 2, 3 (ref = 0)
    resp = torch.tensor([[0, 1]] * 3, dtype=torch.bool)
    out = torch.tensor([1.0, 0.5, 0.0])
    bw = oprl_dpo_loss(s, torch.zeros_like(s), resp, out, [0, 0, 0], beta=1.0, pairs="best_worst")
    assert abs(float(bw) + float(torch.nn.functional.logsigmoid(torch.tensor(1.0 - 3.0)))) < 1e-6
    allp = oprl_dpo_loss(s, torch.zeros_like(s), resp, out, [0, 0, 0], beta=1.0)
    pairs = [(1.0 - 2.0), (1.0 - 3.0), (2.0 - 3.0)]
    assert abs(float(allp) - np.mean([-math.log(1 / (1 + math.exp(-m))) for m in pairs])) < 1e-6


def test_prime_advantages_by_hand():
    # K = 2 samples of one prompt; gamma = 1; no whitening.
    #   sample 0: tokens [prompt, a, b], token rewards a = 0.2, b = 0.4 (rbar 0.3), outcome 1
    #   sample 1: tokens [prompt, c, pad], reward c = -0.1 (rbar -0.1), outcome 0
    tr = np.array([[0.0, 0.2, 0.4], [0.0, -0.1, 0.0]])
    resp = np.array([[0, 1, 1], [0, 1, 0]], bool)
    out = prime_advantages(tr, [1.0, 0.0], [0, 0], resp, whiten=False)
    # outcome RLOO: +1 / -1 on every response token (gamma = 1)
    # process (paper): sample 0: [0.2, 0.4] - rbar_1 (-0.1) = [0.3, 0.5] -> returns-to-go [0.8, 0.5]
    #                  sample 1: [-0.1] - rbar_0 (0.3) = [-0.4]
    np.testing.assert_allclose(out.advantages, [[0.0, 1.8, 1.5], [0.0, -1.4, 0.0]], atol=1e-12)
    code = prime_advantages(tr, [1.0, 0.0], [0, 0], resp, whiten=False, leave_one_out="code")
    # code: r * K/(K-1) - sum_j rbar_j/(K-1) = 2 r - 0.2 -> sample 0 [0.2, 0.6] -> [0.8, 0.6]; sample 1 [-0.4]
    np.testing.assert_allclose(code.advantages, [[0.0, 1.8, 1.6], [0.0, -1.4, 0.0]], atol=1e-12)
    white = prime_advantages(tr, [1.0, 0.0], [0, 0], resp)
    vals = white.advantages[resp]
    assert abs(vals.mean()) < 1e-9 and abs(vals.std(ddof=1) - 1) < 1e-6
    # tool tokens are skipped, not discounted: with gamma 0.5 an observation token in between changes nothing
    resp2 = np.array([[0, 1, 0, 1]], bool)
    a = prime_advantages(np.array([[0.0, 0.2, 0.0, 0.4]]), [1.0], [0], resp2, gamma=0.5, whiten=False)
    b = prime_advantages(np.array([[0.0, 0.2, 0.4]]), [1.0], [0], np.array([[0, 1, 1]], bool), gamma=0.5, whiten=False)
    np.testing.assert_allclose(a.advantages[0, [1, 3]], b.advantages[0, [1, 2]])


def test_oprl_advantages_by_hand():
    # group of two; turn rewards [[1, 3], [2, pad]]; outcomes [1, 0]; mean_norm episode term
    r = np.array([[1.0, 3.0], [2.0, 0.0]])
    mask = np.array([[1, 1], [1, 0]], bool)
    out = oprl_advantages(r, [1.0, 0.0], [0, 0], mask=mask, mode="mean_norm", eps=0.0)
    # A^E = [0.5, -0.5]; step stats over all 3 turns {1, 3, 2}: mean 2, std 1 -> A^S = [-1, 1 | 0]
    np.testing.assert_allclose(out.advantages, [[-0.5, 1.5], [-0.5, 0.0]], atol=1e-12)
    rl = oprl_advantages(r, [1.0, 0.0], [0, 0], mask=mask, mode="rloo", step_weight=0.0)
    np.testing.assert_allclose(rl.advantages, [[1.0, 1.0], [-1.0, 0.0]])


class Unigram(torch.nn.Module):
    """A context-free LM: the same next-token distribution everywhere (enough to learn token credit)."""

    def __init__(self, vocab):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, input_ids, attention_mask=None):
        return self.bias.expand(*input_ids.shape, -1)


def _planted_batch(rng, n, turns=3, per_turn=4, vocab=8):
    """Token 6 is a good step, token 7 a bad one; success ~ Bernoulli(sigmoid(2 (#good - #bad)))."""
    ids = rng.integers(0, 6, size=(n, 1 + turns * (per_turn + 1)))
    resp = np.zeros(ids.shape, bool)
    planted = np.zeros((n, turns))
    for k in range(turns):
        start = 1 + k * (per_turn + 1)
        resp[:, start : start + per_turn] = True
        good = rng.uniform(size=n) < 0.3
        bad = rng.uniform(size=n) < 0.3
        ids[good, start] = 6
        ids[bad, start + 1] = 7
        planted[:, k] = good.astype(float) - bad.astype(float)
    p = 1 / (1 + np.exp(-2 * planted.sum(1)))
    outcome = (rng.uniform(size=n) < p).astype(float)
    return torch.from_numpy(ids), torch.from_numpy(resp), torch.from_numpy(outcome).float(), planted


@pytest.mark.parametrize("objective", ["ce", "dpo"])
def test_online_prm_learns_planted_turn_credit(objective):
    rng = np.random.default_rng(0)
    prm = ImplicitPRM(Unigram(8), Unigram(8), beta=0.5, objective=objective, optimizer=None, lr=0.05)
    groups = np.repeat(np.arange(64), 8)
    for _ in range(60):
        ids, resp, outcome, _ = _planted_batch(rng, 512)
        metrics = prm.update(ids, None, resp, outcome, group_ids=groups)
    assert metrics["prm/loss"] < math.log(2)  # better than chance
    ids, resp, outcome, planted = _planted_batch(rng, 512)
    turn_ids, _ = turn_ids_from_response_mask(resp)
    turns = prm.turn_rewards(ids, None, resp, turn_ids, num_turns=3).numpy()
    # CE learns the good and bad steps with different magnitudes (about +0.4 and -1.9 in log-ratio
    # here), so the linear agreement is lower than DPO's; the ordering is exact for both.
    r = np.corrcoef(turns.ravel(), planted.ravel())[0, 1]
    assert r > (0.8 if objective == "ce" else 0.95), r
    by = [turns[planted == v].mean() for v in (-1, 0, 1)]
    assert by[0] < by[1] < by[2], by
    tok = prm.token_rewards(ids, None, resp)
    assert float(tok[ids == 6].mean()) > 0 > float(tok[ids == 7].mean())
    # the learned turn rewards feed OPRL's advantages
    adv = oprl_advantages(turns, outcome.numpy(), groups, mask=np.ones((512, 3), bool))
    assert adv.advantages.shape == (512, 3)


def test_hf_model_smoke_and_state():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=16, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    policy = transformers.GPT2LMHeadModel(cfg)
    prm = ImplicitPRM.from_policy(policy, beta=0.05, lr=1e-3)
    ids = torch.randint(0, 16, (4, 10))
    resp = torch.zeros(4, 10, dtype=torch.bool)
    resp[:, 4:] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = prm.token_rewards(ids, torch.ones_like(ids), resp)
        assert torch.allclose(before, torch.zeros_like(before), atol=1e-6)  # PRM == reference at init
        m = prm.update(ids, torch.ones_like(ids), resp, [1.0, 0.0, 1.0, 0.0])
        after = prm.token_rewards(ids, torch.ones_like(ids), resp)
    assert math.isfinite(m["prm/loss"]) and not torch.allclose(after, before)
    state = prm.state_dict()
    prm2 = ImplicitPRM.from_policy(policy, beta=0.05, lr=1e-3)
    prm2.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(prm2.token_rewards(ids, torch.ones_like(ids), resp), after)
