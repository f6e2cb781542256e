"""Reward transforms: potential shaping, PAR, Clip/Delta, gated accumulation, length penalties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from tests.helpers.reference import returns_loop
from tests.helpers.strategies import padded_batches

# ------------------------------------------------------------------------------ potential shaping


def test_pbrs_hand_computed_truncated():
    # gamma = 0.1, Phi = [1, 2], truncated with Phi(s_2) = 10:
    # F_0 = 0.1 * 2 - 1 = -0.8 ; F_1 = 0.1 * 10 - 2 = -1.0
    out = cl.potential_shaping(np.array([[1.0, 1.0]]), np.array([[1.0, 2.0]]), gamma=0.1, bootstrap_potential=[10.0])
    np.testing.assert_allclose(out.rewards, [[0.2, 0.0]])


@settings(max_examples=80, deadline=None)
@given(batch=padded_batches(general_discounts=False), gamma=st.sampled_from([0.5, 0.9, 1.0]))
def test_pbrs_changes_returns_only_by_potential(batch, gamma):
    """G'_t = G_t - Phi(s_t) + gamma^(T-t) d Phi(s_T): at t = 0 only -Phi(s_0) for terminated episodes,
    and at every t the shaped return-to-go is the original minus a function of the state alone, so
    the ordering of returns-to-go from a state is unchanged."""
    r, m, d = batch["rewards"].astype(np.float64), batch["mask"], batch["discounts"].astype(np.float64)
    rng = np.random.default_rng(0)
    phi = np.where(m, rng.normal(size=r.shape), 0.0)
    boot_phi = rng.normal(size=r.shape[0])
    shaped = cl.potential_shaping(r, phi, gamma=gamma, mask=m, discounts=d, bootstrap_potential=boot_phi).rewards
    zero = np.zeros(r.shape[0])
    g = returns_loop(r, m, d, zero, gamma)
    g_shaped = returns_loop(shaped, m, d, zero, gamma)
    n = m.sum(1)
    for b in range(r.shape[0]):
        for t in range(n[b]):
            tail = gamma ** (n[b] - t) * d[b, n[b] - 1] * boot_phi[b]
            assert g_shaped[b, t] == pytest.approx(g[b, t] - phi[b, t] + tail, abs=1e-9)
        if d[b, n[b] - 1] == 0:  # terminated: only -Phi(s_0)
            assert g_shaped[b, 0] == pytest.approx(g[b, 0] - phi[b, 0], abs=1e-9)


def test_pbrs_leaves_greedy_policy_unchanged_on_tabular_mdp():
    """Value iteration on a random MDP with and without shaping picks the same greedy actions."""
    rng = np.random.default_rng(3)
    n_s, n_a, gamma = 6, 3, 0.9
    p = rng.dirichlet(np.ones(n_s), size=(n_s, n_a))  # P[s, a, s']
    r = rng.normal(size=(n_s, n_a, n_s))
    phi = rng.normal(size=n_s) * 5
    # shaped reward of every transition (s, a, s'): one-step "episodes", truncated, Phi(s') bootstrapped
    s_idx, a_idx, s2_idx = np.meshgrid(np.arange(n_s), np.arange(n_a), np.arange(n_s), indexing="ij")
    out = cl.potential_shaping(
        r.reshape(-1, 1), phi[s_idx.reshape(-1, 1)], gamma=gamma, bootstrap_potential=phi[s2_idx.reshape(-1)]
    )
    r_shaped = out.rewards.reshape(n_s, n_a, n_s)

    def q_values(rew):
        v = np.zeros(n_s)
        for _ in range(2000):
            q = (p * (rew + gamma * v[None, None, :])).sum(-1)
            v = q.max(1)
        return q

    q, q_s = q_values(r), q_values(r_shaped)
    np.testing.assert_array_equal(q.argmax(1), q_s.argmax(1))
    np.testing.assert_allclose(q_s, q - phi[:, None], atol=1e-6)  # Q' = Q - Phi(s)


# ------------------------------------------------------------------------------ PAR


def test_par_hand_computed():
    # r = 1, refs [0, 2]: mean(sigmoid(1), sigmoid(-1)) = 0.5 exactly (symmetry)
    out = cl.par([1.0, 3.0], [[0.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(out.rewards, [0.5, 0.5])
    # k = 2, r = 1, ref 0: sigmoid(2)
    np.testing.assert_allclose(cl.par([1.0], [0.0], k=2.0).rewards, [1 / (1 + math.exp(-2))])


def test_par_missing_and_bounds():
    out = cl.par([None, 100.0, -100.0, 1.0], [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [None, None]])
    assert out.present.tolist() == [False, True, True, False]
    assert out.rewards[0] == 0.0 and out.rewards[3] == 0.0
    assert 0.0 < out.rewards[2] < out.rewards[1] <= 1.0
    with pytest.raises(cl.ShapeError, match="reference_rewards"):
        cl.par([1.0, 2.0], [[0.0]])


# ------------------------------------------------------------------------------ Clip / Delta


def test_clip_and_delta_hand_computed():
    s = [[0.9, 0.2, 0.6]]
    # clip eta = 0.5: min(0.4, 0) = 0, min(-0.3, 0) = -0.3, min(0.1, 0) = 0
    np.testing.assert_allclose(cl.clip_process_rewards(s, eta=0.5).rewards, [[0.0, -0.3, 0.0]])
    # delta: 0.9 - 0.2, 0.2 - 0.6, 0.6
    np.testing.assert_allclose(cl.delta_process_rewards(s).rewards, [[0.7, -0.4, 0.6]])


def test_delta_with_missing_scores():
    # scores [0.9, None, 0.6, None]: r = [0.9 - 0.6, 0, 0.6, 0]
    out = cl.delta_process_rewards([[0.9, None, 0.6, None]])
    np.testing.assert_allclose(out.rewards, [[0.3, 0.0, 0.6, 0.0]])


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 5), t=st.integers(1, 10))
def test_delta_return_from_step_k_equals_score_k(seed, b, t):
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=(b, t))
    lengths = rng.integers(1, t + 1, size=b)
    m = np.arange(t)[None, :] < lengths[:, None]
    present = (rng.uniform(size=(b, t)) > 0.3) & m
    r = cl.delta_process_rewards(s, mask=m, present=present).rewards
    ret = returns_loop(r, m, m.astype(float), np.zeros(b), 1.0)
    for i in range(b):
        scored = np.nonzero(present[i])[0]
        for k in range(lengths[i]):
            nxt = scored[scored >= k]
            expected = s[i, nxt[0]] if nxt.size else 0.0
            assert ret[i, k] == pytest.approx(expected, abs=1e-12)
        # bounded: every return lies in the score range whatever the number of steps
        assert np.all(np.abs(ret[i]) <= 1.0 + 1e-12)
    clipped = cl.clip_process_rewards(s, eta=0.5, mask=m, present=present).rewards
    assert np.all(clipped <= 0)


# ------------------------------------------------------------------------------ gated accumulation


def test_gated_accumulation_hand_computed():
    # gate 1: episode 0 outcome 1 >= 1 -> keeps [0.1, 0.1] + outcome 1 on the last step
    #         episode 1 outcome 0 < 1  -> [0, 0] + 0 ; episode 2 outcome None -> closed, adds nothing
    out = cl.gated_accumulation(
        [[0.1, 0.1], [0.1, 0.1], [0.5, 0.0]], [1.0, 0.0, None], gate=1.0, mask=[[1, 1], [1, 1], [1, 0]]
    )
    np.testing.assert_allclose(out.rewards, [[0.1, 1.1], [0.0, 0.0], [0.0, 0.0]])
    assert out.metrics["gated/num_missing_outcome"] == 1
    # episode return = R + 1[R >= g] sum r
    assert out.rewards[0].sum() == pytest.approx(1.0 + 0.2)


def test_gated_levels():
    # levels (format, correct, style), gates [1, 0.5]:
    # row 0: format 1 passes -> correct 0.5 counts and passes 0.5 -> style 1 counts: 1 + .5 + 1 = 2.5
    # row 1: format 0 fails -> only format (0) counts
    out = cl.gated_levels([[1.0, 0.5, 1.0], [0.0, 1.0, 1.0]], gates=[1.0, 0.5])
    np.testing.assert_allclose(out.rewards, [2.5, 0.0])


# ------------------------------------------------------------------------------ length penalties


def test_overlong_penalty():
    out = cl.overlong_penalty([10, 15, 20, 30], max_length=20, cache_length=10)
    np.testing.assert_allclose(out.rewards, [0.0, -0.5, -1.0, -1.0])
    with pytest.raises(cl.RangeError, match="cache_length"):
        cl.overlong_penalty([1], max_length=10, cache_length=20)


def test_group_length_penalty_relative_to_correct():
    # group 0 lengths [10, 20, 30, 40], correct [1, 1, 0, 0]
    # reference "group": lam = 0.5 - (L - 10) / 30 = [0.5, 0.1667, -0.1667, -0.5];
    #   correct keep lam, incorrect min(0, lam) -> [0.5, 0.1667, -0.1667, -0.5]
    out = cl.group_length_penalty([10, 20, 30, 40], [0, 0, 0, 0], correct=[1, 1, 0, 0])
    np.testing.assert_allclose(out.rewards, [0.5, 1 / 6, -1 / 6, -0.5])
    # reference "correct": L_min, L_max over correct ones = 10, 20 -> lam = 0.5 - (L - 10) / 10
    #   = [0.5, -0.5, -1.5, -2.5], clipped to [-0.5, 0.5]; incorrect -> min(0, lam)
    out = cl.group_length_penalty([10, 20, 30, 40], [0, 0, 0, 0], correct=[1, 1, 0, 0], reference="correct")
    np.testing.assert_allclose(out.rewards, [0.5, -0.5, -0.5, -0.5])
    # a group with no correct answer gets 0 under reference="correct"
    out = cl.group_length_penalty([10, 20], [0, 0], correct=[0, 0], reference="correct")
    np.testing.assert_allclose(out.rewards, [0.0, 0.0])


@settings(max_examples=40, deadline=None)
@given(batch=padded_batches())
def test_padding_never_leaks_into_step_transforms(batch):
    """Whatever sits on padding steps, outputs there are 0 and valid outputs do not change."""
    m = batch["mask"]
    noise = np.where(m, 0.0, 1e6).astype(batch["dtype"])
    for fn in (
        lambda r, p: cl.potential_shaping(r, p, gamma=0.9, mask=m).rewards,
        lambda r, p: cl.discounted_returns(r, gamma=0.9, mask=m),
        lambda r, p: cl.reinforce_pp(r, mask=m).advantages,
        lambda r, p: cl.delta_process_rewards(r, mask=m).rewards,
        lambda r, p: cl.clip_process_rewards(r, eta=0.1, mask=m).rewards,
    ):
        clean = fn(batch["rewards"], batch["values"])
        dirty = fn(batch["rewards"] + noise, batch["values"] + noise)
        assert np.all(dirty[~m] == 0)
        np.testing.assert_allclose(clean, dirty, rtol=1e-6, atol=1e-6)
