"""Group estimators: GRPO, Dr. GRPO, RLOO, REINFORCE++(-baseline), GDPO, sum-then-normalize, CTAN."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.errors import DegenerateGroupWarning
from tests.helpers.reference import gdpo_loop, grpo_loop, rloo_loop
from tests.helpers.strategies import grouped_scores


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateGroupWarning)
        yield


# ------------------------------------------------------------------------------ tier 1


def test_grpo_hand_computed():
    # group 0: [1, 0, 2] mean 1, unbiased std sqrt(((0)^2 + 1 + 1) / 2) = 1 -> A = [0, -1, 1] / (1 + eps)
    # group 1: [5, 5] zero spread -> 0
    out = cl.grpo([1.0, 0.0, 2.0, 5.0, 5.0], [0, 0, 0, 1, 1], eps=0.0)
    np.testing.assert_allclose(out.advantages, [0.0, -1.0, 1.0, 0.0, 0.0])
    assert out.metrics["groups/num_zero_std"] == 1 and out.metrics["groups/num"] == 2


def test_grpo_batch_and_none_scaling():
    r = [1.0, 0.0, 4.0, 2.0]
    g = [0, 0, 1, 1]
    # group means: 0.5, 3 -> centred [0.5, -0.5, 1, -1]
    np.testing.assert_allclose(cl.grpo(r, g, std_scale="none").advantages, [0.5, -0.5, 1.0, -1.0])
    np.testing.assert_allclose(cl.dr_grpo(r, g).advantages, [0.5, -0.5, 1.0, -1.0])
    # batch std of [1, 0, 4, 2]: mean 1.75, unbiased var = (0.5625 + 3.0625 + 5.0625 + 0.0625) / 3 = 2.9166..
    s = math.sqrt(8.75 / 3)
    np.testing.assert_allclose(cl.grpo(r, g, std_scale="batch", eps=0.0).advantages, np.array([0.5, -0.5, 1, -1]) / s)


def test_rloo_hand_computed_and_singleton():
    # group [3, 1, 2]: 3 - 1.5 = 1.5, 1 - 2.5 = -1.5, 2 - 2 = 0 ; singleton group [9] -> 0
    out = cl.rloo([3.0, 1.0, 2.0, 9.0], [7, 7, 7, 8])
    np.testing.assert_allclose(out.advantages, [1.5, -1.5, 0.0, 0.0])
    assert out.metrics["groups/num_singleton"] == 1


def test_missing_rewards_are_excluded_and_get_zero():
    # group 0 = [1, None, 3]: stats over [1, 3] -> mean 2, std sqrt(2); None gets 0.
    out = cl.grpo([1.0, None, 3.0], [0, 0, 0], eps=0.0)
    np.testing.assert_allclose(out.advantages, [-1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)])
    assert out.metrics["num_missing"] == 1
    # NaN as missing (TRL converts None to NaN)
    out2 = cl.grpo(np.array([1.0, np.nan, 3.0]), [0, 0, 0], eps=0.0, nan_is_missing=True)
    np.testing.assert_allclose(out2.advantages, out.advantages)
    # present mask
    out3 = cl.grpo(np.array([1.0, 42.0, 3.0]), [0, 0, 0], eps=0.0, present=[True, False, True])
    np.testing.assert_allclose(out3.advantages, out.advantages)
    # all missing: zeros, no NaN
    out4 = cl.rloo([None, None], [0, 0])
    np.testing.assert_array_equal(out4.advantages, [0.0, 0.0])


def test_one_warning_per_call_for_degenerate_groups():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cl.grpo([1.0, 1.0, 2.0, 0.0, 5.0], [0, 0, 1, 1, 2])
    degenerate = [x for x in w if issubclass(x.category, DegenerateGroupWarning)]
    assert len(degenerate) == 1
    assert "zero reward spread or a single member" in str(degenerate[0].message)
    assert degenerate[0].filename == __file__  # points at the caller, not at creditlab
    out = cl.grpo([1.0, 1.0, 2.0, 0.0, 5.0], [0, 0, 1, 1, 2])
    assert out.metrics["groups/num_zero_std"] == 1 and out.metrics["groups/num_singleton"] == 1


def test_float32_constant_group_is_exactly_zero():
    # 0.1 is not representable; a float32 mean of equal values may round. The result must be exactly 0.
    r = np.full(7, 0.1, dtype=np.float32)
    for fn in (cl.grpo, cl.rloo, cl.dr_grpo):
        out = fn(r, np.zeros(7, int))
        assert out.advantages.dtype == np.float32
        assert np.all(out.advantages == 0.0)


def test_float32_leave_one_out_has_no_cancellation_residue():
    # Large offset + tiny differences: a float32 "sum minus self" baseline loses the signal.
    base = np.float32(1e4)
    r = (base + np.array([0.0, 0.0, 0.0, 0.001], dtype=np.float32)).astype(np.float32)
    out = cl.rloo(r, np.zeros(4, int))
    ref = rloo_loop([float(x) for x in r], [0] * 4)  # float64 arithmetic on the float32 inputs
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-5, atol=1e-9)
    naive = r - (r.sum(dtype=np.float32) - r) / np.float32(3)
    assert np.abs(naive - ref).max() > 1e-4  # the naive float32 formula is visibly wrong here


def test_reinforce_pp_baseline_hand_computed():
    # centred: group 0 [1, 0] -> [0.5, -0.5]; group 1 [1, 0.5] -> [0.25, -0.25]
    # whiten over batch: mean 0, unbiased var = (0.25 + 0.25 + 0.0625 + 0.0625) / 3 = 0.208333
    out = cl.reinforce_pp_baseline([1.0, 0.0, 1.0, 0.5], [0, 0, 1, 1], eps=0.0)
    expected = np.array([0.5, -0.5, 0.25, -0.25]) / math.sqrt(0.625 / 3)
    np.testing.assert_allclose(out.advantages, expected)


def test_reinforce_pp_returns_whitened():
    # rewards [[0, 1], [0, 0]] gamma 1: returns [[1, 1], [0, 0]] -> whitened: mean 0.5, unbiased std sqrt(1/3)
    out = cl.reinforce_pp(np.array([[0.0, 1.0], [0.0, 0.0]]), eps=0.0)
    np.testing.assert_allclose(out.returns, [[1.0, 1.0], [0.0, 0.0]])
    s = math.sqrt(1 / 3)
    np.testing.assert_allclose(out.advantages, [[0.5 / s, 0.5 / s], [-0.5 / s, -0.5 / s]])
    # KL folded into the reward: r' = r - 0.5 * kl
    out2 = cl.reinforce_pp(np.array([[0.0, 1.0]]), kl=np.array([[1.0, 0.0]]), kl_coef=0.5, eps=0.0)
    np.testing.assert_allclose(out2.returns, [[0.5, 1.0]])


def test_gdpo_hand_computed_and_separates_combinations():
    # one group of 4, components (correct, format):
    # correct [1, 0, 1, 0] -> mean .5, std sqrt(1/3) -> z = [+a, -a, +a, -a] with a = .5 / sqrt(1/3)
    # format  [1, 1, 0, 0] -> z = [+a, +a, -a, -a]
    # sum: [2a, 0, 0, -2a] -> batch norm: mean 0, std = sqrt((4a^2 + 4a^2) / 3)
    comps = [[1, 1], [0, 1], [1, 0], [0, 0]]
    out = cl.gdpo(comps, [0] * 4, eps=0.0)
    a = 0.5 / math.sqrt(1 / 3)
    s = math.sqrt(8 * a * a / 3)
    np.testing.assert_allclose(out.advantages, np.array([2 * a, 0, 0, -2 * a]) / s)
    # sum-then-normalize collapses (1,0) and (0,1) together as GDPO does here, but GDPO keeps
    # different scales apart: component 2 with 100x scale does not swamp component 1.
    comps2 = np.array([[1, 100.0], [0, 100.0], [1, 0.0], [0, 0.0]])
    g = cl.gdpo(comps2, [0] * 4, eps=0.0).advantages
    s2 = cl.sum_then_normalize(comps2, [0] * 4, eps=0.0).advantages
    assert g[0] > g[1] > g[3] and g[0] > g[2] > g[3]  # both components matter
    assert abs(s2[0] - s2[1]) < 0.02 * abs(s2[0] - s2[2])  # the large component swamps correctness


def test_gdpo_missing_component_and_weights():
    # component 1 missing for episode 1: its stats use episodes 0, 2 only; episode 1 gets z=0 there.
    comps = [[1.0, 2.0], [0.0, None], [0.0, 0.0]]
    out = cl.gdpo(comps, [0, 0, 0], weights=[1.0, 0.5], names=["c", "f"])
    ref = gdpo_loop([[1, 2], [0, 0], [0, 0]], [0, 0, 0], [1.0, 0.5], present=[[1, 1], [1, 0], [1, 1]])
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-9)
    assert out.metrics["rewards/f/num_missing"] == 1
    assert not np.isnan(out.advantages).any()


def test_sum_then_normalize_matches_grpo_of_weighted_sum():
    comps = np.array([[1.0, 0.5], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    w = [2.0, 1.0]
    out = cl.sum_then_normalize(comps, [0, 0, 1, 1], weights=w)
    ref = cl.grpo(comps @ np.array(w), [0, 0, 1, 1], eps=1e-4)
    np.testing.assert_allclose(out.advantages, ref.advantages)


def test_combine_step_episode():
    out = cl.combine_step_episode(
        np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([10.0, 20.0]), step_weight=0.5, mask=[[1, 1], [1, 0]]
    )
    np.testing.assert_allclose(out, [[10.5, 11.0], [21.5, 0.0]])


def test_ctan_state_roundtrip_and_freeze():
    norm = cl.CrossTaskEMANormalizer(beta=0.5, eps=0.0)
    # first batch: sigma = std([1, 3]) = sqrt(2)
    a1 = norm([1.0, 3.0], [0, 0]).advantages
    np.testing.assert_allclose(a1, [-1 / math.sqrt(2), 1 / math.sqrt(2)])
    # second batch std([0, 4]) = sqrt(8): sigma = 0.5 sqrt(2) + 0.5 sqrt(8) = 1.5 sqrt(2)
    a2 = norm([0.0, 4.0], [5, 5]).advantages
    np.testing.assert_allclose(a2, np.array([-2, 2]) / (1.5 * math.sqrt(2)))
    state = norm.state_dict()
    other = cl.CrossTaskEMANormalizer()
    other.load_state_dict(state)
    frozen = other([0.0, 4.0], [0, 0], update=False).advantages
    np.testing.assert_allclose(frozen, a2)
    assert other.state_dict() == state  # update=False left the statistics alone


def test_ctan_zero_spread_first_batch_does_not_initialize():
    norm = cl.CrossTaskEMANormalizer(beta=0.9, eps=0.0)
    out = norm([1.0, 1.0], [0, 0])
    np.testing.assert_array_equal(out.advantages, [0.0, 0.0])
    assert norm.state_dict()["sigma"] == {}
    norm([0.0, 2.0], [0, 0])
    assert norm.state_dict()["sigma"]["*"] == pytest.approx(math.sqrt(2))


def test_ctan_per_task():
    norm = cl.CrossTaskEMANormalizer(beta=0.0, eps=0.0, per_task=True)
    out = norm([0.0, 2.0, 0.0, 200.0], [0, 0, 1, 1], task_ids=["a", "a", "b", "b"])
    # each task keeps its own scale: both pairs get +-1/sqrt(2)
    np.testing.assert_allclose(out.advantages, np.array([-1, 1, -1, 1]) / math.sqrt(2))
    assert set(norm.state_dict()["sigma"]) == {"a", "b"}


def test_torch_inputs_return_torch():
    out = cl.grpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert isinstance(out.advantages, torch.Tensor) and out.advantages.dtype == torch.float32
    out = cl.gdpo(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), torch.tensor([0, 0]))
    assert out.advantages.dtype == torch.float64


def test_string_and_sparse_group_ids():
    a = cl.grpo([1.0, 0.0, 2.0, 3.0], ["p1", "p1", "p2", "p2"]).advantages
    b = cl.grpo([1.0, 0.0, 2.0, 3.0], [10**12, 10**12, -5, -5]).advantages
    c = cl.grpo([1.0, 0.0, 2.0, 3.0], [0, 0, 1, 1]).advantages
    np.testing.assert_allclose(a, c)
    np.testing.assert_allclose(b, c)


# ------------------------------------------------------------------------------ tier 2: properties


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=grouped_scores(), std_scale=st.sampled_from(["group", "batch", "none"]))
def test_grpo_matches_reference_and_is_zero_mean(kernel_backend, data, std_scale):
    r, g, p = data["rewards"], data["groups"], data["present"]
    scores = [float(x) if ok else None for x, ok in zip(r, p)]
    out = cl.grpo(scores, g, std_scale=std_scale)
    ref = grpo_loop([float(x) for x in r], list(g), list(p), std_scale=std_scale)
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-7, atol=1e-9)
    assert np.isfinite(out.advantages).all()
    for gid in np.unique(g):
        members = (g == gid) & p
        if members.sum():
            assert abs(out.advantages[members].sum()) <= 1e-6 * max(1.0, np.abs(out.advantages[members]).sum())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=grouped_scores())
def test_rloo_matches_reference_and_is_zero_mean(kernel_backend, data):
    r, g, p = data["rewards"], data["groups"], data["present"]
    out = cl.rloo(r, g, present=p)
    ref = rloo_loop([float(x) for x in r], list(g), list(p))
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-5, atol=1e-5 * (1 + np.abs(r).max()))
    for gid in np.unique(g):
        members = (g == gid) & p
        if members.sum():
            assert abs(float(out.advantages[members].astype(np.float64).sum())) <= 1e-5 * (1 + np.abs(r).max())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=grouped_scores(), k=st.integers(1, 4), seed=st.integers(0, 1000))
def test_gdpo_matches_reference(kernel_backend, data, k, seed):
    rng = np.random.default_rng(seed)
    n = len(data["rewards"])
    comps = rng.integers(0, 3, size=(n, k)).astype(float)
    present = rng.uniform(size=(n, k)) > 0.15
    w = rng.uniform(0.1, 2, size=k)
    out = cl.gdpo(comps, data["groups"], weights=w, present=present)
    ref = gdpo_loop(comps, list(data["groups"]), w, present=present)
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------ agreement with TRL's formulas


def _trl_sum_then_normalize(rewards_per_func, weights, num_generations, scale_rewards="group"):
    """TRL GRPOTrainer (1.16) advantage code for multi_objective_aggregation="sum_then_normalize"."""
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    mean_grouped = rewards.view(-1, num_generations).mean(dim=1).repeat_interleave(num_generations, dim=0)
    if scale_rewards == "group":
        std = rewards.view(-1, num_generations).std(dim=1).repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    advantages = rewards - mean_grouped
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return advantages


def _trl_nanstd(t, dim, keepdim=False):
    mean = torch.nanmean(t, dim=dim, keepdim=True)
    var = torch.nanmean((t - mean) ** 2, dim=dim, keepdim=keepdim)
    count = torch.sum(~torch.isnan(t), dim=dim, keepdim=keepdim)
    return torch.sqrt(var * count / (count - 1))


def _trl_normalize_then_sum(rewards_per_func, weights, num_generations):
    """TRL GRPOTrainer (1.16) advantage code for multi_objective_aggregation="normalize_then_sum" (GDPO)."""
    k = rewards_per_func.shape[1]
    grouped = rewards_per_func.view(-1, num_generations, k)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = _trl_nanstd(grouped, dim=1, keepdim=True)
    reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, k)
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    return (rewards - rewards.mean()) / (rewards.std() + 1e-4)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_groups=st.integers(1, 6), g=st.integers(2, 8), k=st.integers(1, 3))
def test_agrees_with_trl_grpo_formulas(seed, n_groups, g, k):
    """eps = 1e-4 added to the unbiased std, as TRL does. TRL divides 0 by (0 + 1e-4) in zero-spread
    groups, which is 0 too, so outputs agree exactly on continuous rewards (no ties)."""
    rng = np.random.default_rng(seed)
    comps = torch.tensor(rng.normal(size=(n_groups * g, k)))
    w = torch.tensor(rng.uniform(0.5, 2.0, size=k))
    ids = np.repeat(np.arange(n_groups), g)
    for scale in ("group", "batch", "none"):
        ours = cl.sum_then_normalize(comps, ids, weights=w, std_scale=scale, eps=1e-4).advantages
        theirs = _trl_sum_then_normalize(comps, w, g, scale)
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    ours = cl.gdpo(comps, ids, weights=w, eps=1e-4).advantages
    theirs = _trl_normalize_then_sum(comps, w, g)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_trl_differs_only_where_documented():
    """Where TRL and creditlab differ on purpose: a singleton group (TRL: NaN std) gets 0 here."""
    out = cl.grpo([1.0, 2.0, 3.0], [0, 0, 1], eps=1e-4)
    assert out.advantages[2] == 0.0
    trl = _trl_sum_then_normalize(torch.tensor([[3.0]]), torch.tensor([1.0]), 1)
    assert torch.isnan(trl).all()  # what TRL would produce for a group of one


# ------------------------------------------------------------------------------ errors


def test_group_errors():
    with pytest.raises(cl.GroupError, match="3 episodes"):
        cl.grpo([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(cl.DtypeError, match="integer"):
        cl.grpo([1.0, 2.0], [0.5, 1.0])
    with pytest.raises(cl.NonFiniteError, match="None"):
        cl.rloo([1.0, float("inf")], [0, 0])
    with pytest.raises(cl.NonFiniteError):
        cl.grpo(np.array([1.0, np.inf]), [0, 0], nan_is_missing=True)  # inf is never missing
    with pytest.raises(cl.RangeError, match="std_scale"):
        cl.grpo([1.0], [0], std_scale="global")
    with pytest.raises(cl.ShapeError, match="weights"):
        cl.gdpo([[1, 2], [3, 4]], [0, 0], weights=[1.0])
    with pytest.raises(cl.EmptyBatchError):
        cl.grpo([], [])
    with pytest.raises(cl.DtypeError, match="must hold numbers"):
        cl.grpo(["a", 1.0], [0, 0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_prompts=st.integers(1, 6), k=st.integers(2, 8))
def test_rloo_agrees_with_trl_rloo_formula(seed, n_prompts, k):
    """TRL's RLOOTrainer: rewards laid out [k, n_prompts]; baseline = (sum - self) / (k - 1)."""
    rng = np.random.default_rng(seed)
    rlhf_reward = torch.tensor(rng.normal(size=(k, n_prompts)))
    baseline = (rlhf_reward.sum(0) - rlhf_reward) / (k - 1)
    trl_adv = (rlhf_reward - baseline).flatten()
    ids = np.tile(np.arange(n_prompts), k)  # flatten of [k, n_prompts]: prompt id varies fastest
    ours = cl.rloo(rlhf_reward.flatten(), ids).advantages
    torch.testing.assert_close(ours, trl_adv, rtol=1e-9, atol=1e-12)


def test_huge_finite_rewards_are_accepted_and_nan_is_caught():
    # The finiteness check sums first: 1e38 + 1e38 overflows float32 to inf, yet every entry is
    # finite, so the entrywise check must take over rather than report a NaN/inf reward.
    big = torch.tensor([3e38, 3e38, -3e38, 1.0], dtype=torch.float32)
    assert not torch.isfinite(big.sum())  # the fast check alone would reject it
    out = cl.grpo(big, [0, 0, 1, 1], std_scale="none")
    assert torch.isfinite(out.advantages).all()
    with pytest.raises(cl.errors.NonFiniteError, match="rewards"):
        cl.grpo(torch.tensor([1.0, float("nan"), 0.0, 1.0]), [0, 0, 1, 1])
    with pytest.raises(cl.errors.NonFiniteError, match="rewards"):
        cl.grpo(torch.tensor([1.0, float("inf"), 0.0, 1.0]), [0, 0, 1, 1])
    from creditlab._arrays import all_finite

    assert all_finite(big) and not all_finite(torch.tensor([1.0, float("-inf")]))


# ------------------------------------------------------------------------------ issue 10: defects 2-4


def test_rpp_baseline_token_weights_use_verls_unbiased_token_variance():
    # One group [1, 0] with 4 and 3 tokens: centred [0.5, -0.5]. Over the 7 tokens:
    # mean = (4 * 0.5 - 3 * 0.5) / 7 = 1/14; deviations 3/7 and -4/7;
    # verl's masked_whiten variance = (4 (3/7)^2 + 3 (4/7)^2) / (7 - 1) = (84/49) / 6 = 2/7
    # (the population variance, /7, is 12/49: 8% smaller std at 7 tokens).
    out = cl.reinforce_pp_baseline([1.0, 0.0], [0, 0], weights=[4, 3], eps=0.0)
    std = math.sqrt(2 / 7)
    np.testing.assert_allclose(out.advantages, [(3 / 7) / std, (-4 / 7) / std], rtol=1e-12)
    pop = cl.reinforce_pp_baseline([1.0, 0.0], [0, 0], weights=[4, 3], eps=0.0, unbiased=False)
    np.testing.assert_allclose(
        pop.advantages, [(3 / 7) / math.sqrt(12 / 49), (-4 / 7) / math.sqrt(12 / 49)], rtol=1e-12
    )


def test_rpp_baseline_degenerate_groups_are_exactly_zero_with_weights():
    # group 0 [1, 0] (spread), group 1 a singleton, group 2 zero spread [4, 4]; token weights
    # shift the weighted mean away from 0, which used to move groups 1 and 2 to -mean_w / std_w.
    out = cl.reinforce_pp_baseline([1.0, 0.0, 5.0, 4.0, 4.0], [0, 0, 1, 2, 2], weights=[3, 4, 5, 2, 2])
    assert out.advantages[2] == 0.0 and out.advantages[3] == 0.0 and out.advantages[4] == 0.0
    assert out.advantages[0] > 0 > out.advantages[1]


def test_rpp_baseline_negative_weights_are_a_named_error():
    with pytest.raises(cl.errors.RangeError, match=r"weights\[1\] = -2"):
        cl.reinforce_pp_baseline([1.0, 2.0, 3.0], [0, 0, 0], weights=[1, -2, 3])


def test_gdpo_and_sum_then_normalize_with_zero_components_are_named_errors():
    with pytest.raises(cl.errors.EmptyBatchError, match="K = 0"):
        cl.gdpo(np.zeros((4, 0)), [0, 0, 1, 1])
    with pytest.raises(cl.errors.EmptyBatchError, match="K = 0"):
        cl.sum_then_normalize(np.zeros((4, 0)), [0, 0, 1, 1])


@pytest.mark.parametrize("std_scale", ["group", "batch"])
def test_grpo_on_huge_rewards_equals_grpo_on_rescaled_rewards(kernel_backend, std_scale):
    # 1e155 squared overflows float64: the std used to become inf and every advantage 0.
    r = np.array([1.0, 2.0, 3.0, 5.0, 7.0, 7.5])
    g = [0, 0, 0, 0, 1, 1]
    big = cl.grpo(r * 1e155, g, std_scale=std_scale, eps=0.0)
    ref = cl.grpo(r, g, std_scale=std_scale, eps=0.0)
    np.testing.assert_allclose(big.advantages, ref.advantages, rtol=1e-12)
    assert np.abs(big.advantages).max() > 0.5
    for key in ("rewards/std", "advantages/std", "advantages/mean", "rewards/mean"):
        assert math.isfinite(big.metrics[key]), key
    np.testing.assert_allclose(big.metrics["advantages/std"], ref.metrics["advantages/std"], rtol=1e-12)
    np.testing.assert_allclose(cl.rloo(r * 1e155, g).advantages, cl.rloo(r, g).advantages * 1e155, rtol=1e-12)
    np.testing.assert_allclose(
        cl.reinforce_pp_baseline(r * 1e155, g, eps=0.0).advantages,
        cl.reinforce_pp_baseline(r, g, eps=0.0).advantages,
        rtol=1e-12,
    )


def test_group_statistics_that_float64_cannot_hold_are_a_named_error():
    with pytest.raises(cl.errors.NonFiniteError, match="rescale"):
        cl.grpo([1.7e308, -1.7e308, 1e308], [0, 0, 0])
    with pytest.raises(cl.errors.NonFiniteError, match="float32"):
        cl.dr_grpo(np.array([3.4e38, -3.4e38, -3.4e38], dtype=np.float32), [0, 0, 0])


# ------------------------------------------------------------------------------ issue 10: the compiled GRPO / RLOO path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=grouped_scores(),
    variant=st.sampled_from(
        [
            ("grpo", {}),
            ("grpo", {"std_scale": "none"}),
            ("grpo", {"eps": 0.0}),
            ("grpo", {"unbiased": False}),
            ("rloo", {}),
        ]
    ),
    float32=st.booleans(),
)
def test_compiled_grpo_rloo_path_equals_the_general_path(monkeypatch, data, variant, float32):
    # grpo/rloo run one compiled call (statistics, advantages and metric sums) on CPU; the general
    # path (group_stats, then torch) is what every other estimator uses. Same advantages bit for
    # bit, same metrics up to the order of float64 summation.
    from creditlab import _kernels

    name, kw = variant
    fn = getattr(cl, name)
    r = data["rewards"].astype(np.float32 if float32 else np.float64)
    g, p = data["groups"], data["present"]
    monkeypatch.setattr(_kernels, "BACKEND", "numba")
    fast = fn(r, g, present=p, **kw)
    monkeypatch.setattr(_kernels, "group_advantages", lambda *a, **k: None)
    general = fn(r, g, present=p, **kw)
    assert fast.advantages.dtype == general.advantages.dtype == r.dtype
    np.testing.assert_array_equal(fast.advantages, general.advantages)
    assert list(fast.metrics) == list(general.metrics)
    for key, value in general.metrics.items():
        assert fast.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-9 * (1 + float(np.abs(r).max()))), key


def test_compiled_grpo_path_hands_huge_rewards_to_the_general_path(monkeypatch):
    # Squares past the float64 range make the compiled call decline (None); the general path
    # rescales by a power of two. Float32 advantages past 3.4e38 are a named error either way.
    from creditlab import _kernels

    monkeypatch.setattr(_kernels, "BACKEND", "numba")
    r = np.array([1.0, 2.0, 3.0, 5.0])
    assert (
        _kernels.group_advantages(
            torch.tensor(r * 1e155),
            torch.ones(4, dtype=torch.bool),
            torch.zeros(4, dtype=torch.int64),
            1,
            True,
            "group",
            1e-6,
        )
        is None
    )
    np.testing.assert_allclose(
        cl.grpo(r * 1e155, [0, 0, 0, 0], eps=0.0).advantages, cl.grpo(r, [0, 0, 0, 0], eps=0.0).advantages, rtol=1e-12
    )
    with pytest.raises(cl.errors.NonFiniteError, match="overflow"):
        cl.rloo(np.array([3e38, -3e38, 0.0], np.float32), [0, 0, 0])
