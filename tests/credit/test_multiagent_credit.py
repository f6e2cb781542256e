"""Multi-agent credit: team structure, team-uniform, agent-wise RD/RRD and LaRe's multi-agent decoder.

Rows are (team episode, agent) pairs; ``group_ids`` is the team episode (creditlab.credit.multiagent).
"""

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlab import Episodes, get_method
from creditlab.credit import (
    LaReAssigner,
    RDAssigner,
    RRDAssigner,
    credit_quality,
    load_assigner,
    rd_loss,
    save_assigner,
)
from creditlab.credit.multiagent import (
    TeamLaReAssigner,
    TeamRDAssigner,
    TeamRRDAssigner,
    TeamUniformAssigner,
    simple_spread_features,
    team_arrays,
    team_residual,
    team_uniform_rewards,
)
from creditlab.errors import DataFormatError, RangeError, ShapeError

# ------------------------------------------------------------------------------ team structure


def test_team_arrays_shared_and_sum_by_hand():
    # rows: team 5 = rows 0, 2 (3 + 2 steps); team 3 = row 1 (4 steps)
    # shared: each row of team 5 carries R = 6 -> R_5 = 6; sum: 6 + 6 = 12
    ta = team_arrays([6.0, 1.0, 6.0], [3, 4, 2], [5, 3, 5])
    assert ta.team.tolist() == [0, 1, 0]  # teams numbered in order of first appearance
    assert ta.order.tolist() == [0, 2, 1]  # rows sorted by team, agents keep their order
    assert ta.returns.tolist() == [6.0, 1.0]
    assert ta.lengths.tolist() == [5, 4] and ta.num_agents.tolist() == [2, 1]
    assert team_arrays([6.0, 1.0, 6.0], [3, 4, 2], [5, 3, 5], team_return="sum").returns.tolist() == [12.0, 1.0]


def test_team_arrays_without_group_ids_every_row_is_a_team():
    ta = team_arrays([1.0, 2.0], [3, 1], None)
    assert ta.team.tolist() == [0, 1] and ta.returns.tolist() == [1.0, 2.0] and ta.lengths.tolist() == [3, 1]


def test_shared_team_return_rows_must_agree():
    with pytest.raises(DataFormatError, match="group_id 4.*different returns.*team_return='sum'"):
        team_arrays([1.0, 2.0], [2, 2], [4, 4])


def test_rows_of_a_team_agree_on_known_return():
    with pytest.raises(DataFormatError, match="disagree on whether the team's return is known"):
        team_arrays([1.0, 1.0], [2, 2], [0, 0], has_return=[True, False])


def test_team_arrays_shapes_checked():
    with pytest.raises(ShapeError, match="group_ids has 3 rows"):
        team_arrays([1.0, 1.0], [2, 2], [0, 0, 0])


# ------------------------------------------------------------------------------ team-uniform (tier 1)


def test_team_uniform_by_hand_with_padding_and_unknown_team():
    # team 0: agents with 3 and 2 steps, R = 10 on each row -> L = 5, 10 / 5 = 2 per agent-step
    # team 1: one agent of 4 steps without an outcome -> 0, present False
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    out = team_uniform_rewards([10.0, 10.0, 0.0], mask, [0, 0, 1], has_return=[True, True, False])
    np.testing.assert_array_equal(out.rewards, [[2, 2, 2, 0], [2, 2, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out.present, mask & np.array([[True], [True], [False]]))
    assert out.metrics["credit/num_no_outcome"] == 1.0 and out.metrics["credit/num_teams"] == 2.0


def test_team_uniform_split_payment_sums_shares():
    # LaRe's sparse setting: each of 3 agents is paid R / N = 2 of a team return 6, 2 steps each:
    # team_return="sum": R = 6 over 6 agent-steps -> 1 each
    ep = Episodes.from_lists([[0, 2.0]] * 3, group_ids=[1, 1, 1])
    np.testing.assert_array_equal(TeamUniformAssigner(team_return="sum").assign(ep).rewards, np.ones((3, 2)))
    # with "shared" the team return would be 2 (every row's) -> 2 / 6 per agent-step
    np.testing.assert_allclose(TeamUniformAssigner().assign(ep).rewards, np.full((3, 2), 1 / 3))


def test_team_uniform_keeps_torch():
    ep = Episodes.from_lists([[0, 4.0], [0, 4.0]], group_ids=[0, 0]).torch()
    out = TeamUniformAssigner().assign(ep)
    assert isinstance(out.rewards, torch.Tensor) and out.rewards.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_team_residual_by_hand():
    # team 0 (rows 0, 1): predictions 1 + 0 + 2 + 0 = 3, R = 7, L = 4 -> residual +1 per agent-step
    # team 1 (row 2, 1 step): prediction 5, R = 2 -> residual -3
    ta = team_arrays([7.0, 7.0, 2.0], [2, 2, 1], [0, 0, 1])
    mask = np.array([[1, 1], [1, 1], [1, 0]], bool)
    out, resid = team_residual(np.array([[1.0, 0.0], [2.0, 0.0], [5.0, 9.0]]), mask, ta)
    np.testing.assert_array_equal(out, [[2, 1], [3, 1], [2, 0]])  # padding stays 0
    np.testing.assert_array_equal(resid, [1.0, -3.0])


# ------------------------------------------------------------------------------ hypothesis: uniform


@st.composite
def team_batches(draw, max_teams=4, max_agents=4, max_t=6):
    """A padded batch of (team episode, agent) rows in shuffled order, the team return on each row."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_teams = draw(st.integers(1, max_teams))
    agents = rng.integers(1, max_agents + 1, size=n_teams)
    team = np.repeat(np.arange(n_teams), agents)
    t = draw(st.integers(1, max_t))
    lengths = rng.integers(1, t + 1, size=team.size)
    mask = np.arange(t)[None, :] < lengths[:, None]
    team_r = rng.normal(size=n_teams) * 5
    perm = rng.permutation(team.size)
    team, mask = team[perm], mask[perm]
    gid = team * 7 + 3  # arbitrary, non-contiguous ids
    obs = rng.normal(size=(team.size, t, 3)).astype(np.float32)
    acts = rng.integers(0, 4, size=(team.size, t))
    return dict(team=team, gid=gid, mask=mask, R=team_r, obs=obs, acts=acts, rng=rng)


def _episodes(b, R=None, obs=None, acts=None, mask=None, gid=None):
    mask = b["mask"] if mask is None else mask
    R = b["R"][b["team"]] if R is None else R
    return Episodes.from_padded(
        np.zeros(mask.shape),
        mask,
        outcomes=R,
        observations=b["obs"] if obs is None else obs,
        actions=b["acts"] if acts is None else acts,
        group_ids=b["gid"] if gid is None else gid,
    )


def _team_sums(rewards, mask, team, n_teams):
    return np.bincount(team, weights=np.where(mask, rewards, 0.0).sum(1), minlength=n_teams)


@settings(max_examples=60, deadline=None)
@given(team_batches())
def test_team_uniform_sums_to_the_team_return_and_equals_a_slow_loop(b):
    out = TeamUniformAssigner().assign(_episodes(b)).rewards
    np.testing.assert_allclose(_team_sums(out, b["mask"], b["team"], b["R"].size), b["R"], rtol=1e-12, atol=1e-12)
    # slow reference: every valid step of every agent of team g gets R_g / (its agents' steps)
    ref = np.zeros(out.shape)
    for i in range(out.shape[0]):
        steps_of_team = sum(b["mask"][j].sum() for j in range(out.shape[0]) if b["team"][j] == b["team"][i])
        for t in range(out.shape[1]):
            if b["mask"][i, t]:
                ref[i, t] = b["R"][b["team"][i]] / steps_of_team
    np.testing.assert_allclose(out, ref, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(team_batches())
def test_team_uniform_permuting_agents_permutes_credit(b):
    perm = b["rng"].permutation(b["team"].size)
    ep = _episodes(b)
    out = TeamUniformAssigner().assign(ep).rewards
    permuted = TeamUniformAssigner().assign(ep.select(perm)).rewards
    np.testing.assert_array_equal(permuted, out[perm][:, : permuted.shape[1]])


# ------------------------------------------------------------------------------ agent-wise RD / RRD / LaRe


def test_team_rd_stores_one_pooled_episode_per_team(one_torch_thread):
    # two teams given interleaved: rows (team a, agent 0), (team b, agent 0), (team a, agent 1)
    obs = np.arange(3 * 2 * 1, dtype=np.float32).reshape(3, 2, 1)  # distinct per step
    mask = np.array([[1, 1], [1, 0], [1, 1]], bool)
    ep = Episodes.from_padded(
        np.zeros((3, 2)),
        mask,
        outcomes=[4.0, 1.0, 4.0],
        observations=obs,
        actions=np.zeros((3, 2, 1)),
        group_ids=[10, 20, 10],
    )
    rd = TeamRDAssigner(seed=0)
    m = rd.fit(ep, num_updates=1)
    assert m["store/episodes"] == 2.0 and m["store/steps"] == 5.0
    assert rd.store.lengths.tolist() == [4, 1] and rd.store.returns.tolist() == [4.0, 1.0]
    # the team's stored steps are agent 0's then agent 1's: s = 0, 1 (row 0) then 4, 5 (row 2)
    team_a = rd.store.episodes(np.array([0])).inputs[0]
    assert team_a[:, 0].tolist() == [0.0, 1.0, 4.0, 5.0]


def test_team_rd_loss_is_the_team_decomposition_loss(one_torch_thread):
    # the RD loss on a pooled team episode is ((sum_{i,t} r_hat - R) / L)^2
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 3, 2)).astype(np.float32)
    ep = Episodes.from_padded(
        np.zeros((2, 3)), outcomes=[5.0, 5.0], observations=obs, actions=np.zeros((2, 3, 1)), group_ids=[0, 0]
    )
    rd = TeamRDAssigner(seed=0, batch_episodes=1)
    rd.fit(ep, num_updates=0)
    rd._build(rd.store.feature_dim)
    batch = rd.store.episodes(np.array([0]))
    with torch.no_grad():
        per_step = rd.model(rd.norm.normalize(torch.from_numpy(batch.inputs))).squeeze(-1)
        expected = ((per_step.sum() - 5.0) / 6) ** 2  # L = 2 agents x 3 steps
        assert float(rd.loss(batch).value) == pytest.approx(float(expected), rel=1e-6)
        # and it is rd_loss on the [G, L] pooled batch
        assert float(rd_loss(per_step, torch.tensor([5.0]), torch.from_numpy(batch.mask))) == pytest.approx(
            float(expected), rel=1e-6
        )


def test_team_rrd_draws_agent_step_pairs_of_the_team(one_torch_thread):
    obs = np.arange(2 * 4, dtype=np.float32).reshape(2, 4, 1)
    ep = Episodes.from_padded(
        np.zeros((2, 4)), outcomes=[1.0, 1.0], observations=obs, actions=np.zeros((2, 4, 1)), group_ids=[0, 0]
    )
    rrd = TeamRRDAssigner(subset_size=8, seed=0)
    rrd.fit(ep, num_updates=0)
    sub = rrd.store.subsets(np.array([0]), 8, rrd.rng)
    # K = L = 8: every (agent, step) pair of the team exactly once
    assert sorted(sub.inputs[0, :, 0].tolist()) == list(range(8)) and sub.lengths.tolist() == [8]


def _learned(name, **kw):
    return get_method(name).factory(seed=0, **kw)


@settings(max_examples=25, deadline=None)
@given(team_batches())
def test_team_rd_residual_makes_team_sums_exact(b):
    torch.set_num_threads(1)
    ep = _episodes(b)
    rd = TeamRDAssigner(seed=0, num_actions=4)
    rd.fit(ep, num_updates=2)
    out = rd.assign(ep).rewards
    np.testing.assert_allclose(_team_sums(out, b["mask"], b["team"], b["R"].size), b["R"], rtol=1e-5, atol=1e-4)
    assert (out[~b["mask"]] == 0).all()


@pytest.mark.parametrize("residual", [True, None])  # None: each method's default (raw predictions for RRD, LaRe)
@pytest.mark.parametrize("name", ["team_rd", "team_rrd", "team_lare"])
@settings(max_examples=10, deadline=None)
@given(b=team_batches(max_t=5))
def test_permuting_agents_permutes_learned_credit(name, residual, b):
    # for a fixed (fitted) model: training itself samples batches by row order
    torch.set_num_threads(1)
    obs = np.tile(b["obs"], (1, 1, 6))  # 18 values: a simple_spread-shaped observation for LaRe's factors
    ep = _episodes(b, obs=obs)
    kw = {"features": simple_spread_features} if name == "team_lare" else {}
    if residual is not None:
        kw["correct_residual"] = residual
    a = _learned(name, num_actions=4, **kw)
    a.fit(ep, num_updates=2)
    out = a.assign(ep).rewards
    perm = b["rng"].permutation(b["team"].size)
    permuted = a.assign(ep.select(perm)).rewards
    np.testing.assert_allclose(permuted, out[perm][:, : permuted.shape[1]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["team_uniform", "team_rd", "team_rrd", "team_lare"])
@settings(max_examples=10, deadline=None)
@given(b=team_batches(max_t=5))
def test_padding_never_leaks(name, b):
    torch.set_num_threads(1)
    obs = np.tile(b["obs"], (1, 1, 6))
    ep = _episodes(b, obs=obs)
    junk_obs = np.where(b["mask"][..., None], obs, 1e3)  # padding holds garbage
    junk_acts = np.where(b["mask"], b["acts"], 3)
    junk = _episodes(b, obs=junk_obs, acts=junk_acts)
    kw = {"features": simple_spread_features} if name == "team_lare" else {}
    a = get_method(name).factory(**({"seed": 0, "num_actions": 4, **kw} if name != "team_uniform" else {}))
    a.fit(ep, num_updates=2)
    out, out_junk = a.assign(ep).rewards, a.assign(junk).rewards
    np.testing.assert_allclose(out, out_junk, rtol=1e-6, atol=1e-7)
    assert (np.asarray(out)[~b["mask"]] == 0).all()


@pytest.mark.parametrize(
    "team_cls,single_cls",
    [(TeamRDAssigner, RDAssigner), (TeamRRDAssigner, RRDAssigner), (TeamLaReAssigner, LaReAssigner)],
)
def test_without_group_ids_a_team_assigner_is_its_single_agent_twin(team_cls, single_cls, one_torch_thread):
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(6, 7, 18)).astype(np.float32)  # simple_spread-shaped, for LaRe's factors
    lengths = np.array([7, 3, 5, 7, 1, 4])
    mask = np.arange(7)[None, :] < lengths[:, None]
    ep = Episodes.from_padded(
        np.zeros((6, 7)), mask, outcomes=rng.normal(size=6), observations=obs, actions=rng.normal(size=(6, 7, 2))
    )
    kw = {
        TeamRRDAssigner: {"subset_size": 4},
        TeamLaReAssigner: {"features": simple_spread_features},
        TeamRDAssigner: {},
    }[team_cls]
    a = team_cls(seed=1, **kw)
    # the same settings (team_lare's defaults follow LaRe's MPE code, lare's its MuJoCo code)
    same = {f.name: getattr(a.config, f.name) for f in dataclasses.fields(a.config) if f.name != "team_return"}
    b = single_cls(**same)
    ma, mb = a.fit(ep, num_updates=5), b.fit(ep, num_updates=5)
    assert ma["credit/loss"] == mb["credit/loss"]
    np.testing.assert_array_equal(a.assign(ep).rewards, b.assign(ep).rewards)


@pytest.mark.slow
def test_team_rd_learns_who_earned_the_team_reward(one_torch_thread):
    """Synthetic team task: agent i's hidden reward is its first observation; only the team sum is
    seen. Agent-wise RD recovers per-agent credit; team-uniform cannot (constant within a row)."""
    rng = np.random.default_rng(0)
    n_teams, n_agents, t = 300, 3, 10
    obs = rng.normal(size=(n_teams * n_agents, t, 2)).astype(np.float32)
    true = obs[..., 0] ** 2 - obs[..., 1]  # per-agent, per-step
    team = np.repeat(np.arange(n_teams), n_agents)
    R = np.bincount(team, weights=true.sum(1))[team]
    ep = Episodes.from_padded(
        np.zeros((n_teams * n_agents, t)),
        outcomes=R,
        observations=obs,
        actions=np.zeros((n_teams * n_agents, t, 1)),
        group_ids=team,
    )
    rd = TeamRDAssigner(seed=0, batch_episodes=16)
    rd.fit(ep, num_updates=1500)
    out = rd.assign(ep).rewards
    q = credit_quality(out, true, np.ones_like(true, bool))
    assert q.metrics["quality/pearson"] > 0.9
    # per-agent totals follow the hidden per-agent returns (what a split across agents must get right)
    assert np.corrcoef(out.sum(1), true.sum(1))[0, 1] > 0.9
    uni = TeamUniformAssigner().assign(ep).rewards
    assert np.isnan(credit_quality(uni, true, np.ones_like(true, bool)).metrics["quality/pearson"])


def test_team_lare_defaults_follow_lare_mpe_code():
    cfg = TeamLaReAssigner().config
    assert cfg.hidden == (64, 64, 64, 64) and cfg.loss == "rd" and cfg.use_next_observations
    assert cfg.lr == 5e-4 and cfg.weight_decay == 1e-5 and not cfg.correct_residual and cfg.team_return == "shared"


def test_team_configs_check_team_return():
    with pytest.raises(RangeError, match="team_return must be 'shared' or 'sum'"):
        TeamRRDAssigner(team_return="mean")
    with pytest.raises(RangeError, match="has no parameter 'team_retrun'"):
        TeamUniformAssigner(team_retrun="sum")


def test_inconsistent_team_data_is_a_named_error_in_fit(one_torch_thread):
    ep = Episodes.from_padded(
        np.zeros((2, 2)),
        outcomes=[1.0, 2.0],
        observations=np.zeros((2, 2, 1)),
        actions=np.zeros((2, 2, 1)),
        group_ids=[0, 0],
    )
    with pytest.raises(DataFormatError, match="different returns"):
        TeamRDAssigner().fit(ep)
    TeamRDAssigner(team_return="sum").fit(ep)  # shares of a team return: fine


def test_team_checkpoint_round_trip(tmp_path, one_torch_thread):
    rng = np.random.default_rng(0)
    ep = Episodes.from_padded(
        np.zeros((4, 3)),
        outcomes=[1.0, 1.0, 2.0, 2.0],
        observations=rng.normal(size=(4, 3, 2)),
        actions=np.zeros((4, 3, 1)),
        group_ids=[0, 0, 1, 1],
    )
    a = TeamRRDAssigner(subset_size=3, team_return="shared")
    a.fit(ep, num_updates=3)
    path = save_assigner(a, tmp_path / "team.pt")
    b = load_assigner(path)
    assert type(b) is TeamRRDAssigner and b.store.num_episodes == 2
    np.testing.assert_array_equal(a.assign(ep).rewards, b.assign(ep).rewards)
    assert a.fit(num_updates=2)["credit/loss"] == b.fit(num_updates=2)["credit/loss"]


# ------------------------------------------------------------------------------ simple_spread factors


def test_simple_spread_features_by_hand():
    # N = 2: obs = vel(2), pos(2), landmarks rel. self (4), other agent rel. self (2), comm (2)
    # landmarks at (0, 0) and (1, 0) relative to self; the other agent at (0.2, 0):
    #   landmark 0: self 0, other 0.2 -> 0;  landmark 1: self 1, other |(1, 0) - (0.2, 0)| = 0.8 -> 0.8
    #   coverage 0.8; the other agent is 0.2 < 0.3 away: 1 collision; nearest landmark 0
    o = np.array([[0, 0, 0, 0, 0.0, 0.0, 1.0, 0.0, 0.2, 0.0, 0, 0]], np.float32)
    cov, col, near = simple_spread_features(o, np.zeros((1, 5), np.float32), o)
    assert cov[0] == pytest.approx(0.8) and col[0] == 1.0 and near[0] == 0.0
    with pytest.raises(ShapeError, match="6N values"):
        simple_spread_features(np.zeros((1, 7)), np.zeros((1, 5)), np.zeros((1, 7)))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_simple_spread_factors_contain_the_true_reward(n):
    """Against the environment itself: agent i's reward = -0.5 collisions_i - 0.5 coverage (local_ratio 0.5)."""
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=n, max_cycles=25)
    env.reset(seed=n)
    rng = np.random.default_rng(0)
    for _ in range(25):
        obs, rew, _, _, _ = env.step({a: int(rng.integers(5)) for a in env.agents})
        if not env.agents:
            break
        o = np.stack([obs[a] for a in sorted(obs)])
        cov, col, _ = simple_spread_features(o, np.zeros((n, 5), np.float32), o)
        np.testing.assert_allclose(-0.5 * col - 0.5 * cov, [rew[a] for a in sorted(obs)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [TeamRDAssigner, TeamRRDAssigner])
def test_a_team_with_a_truncated_agent_is_left_out_whole(cls, one_torch_thread):
    # team 0: agent 0 terminated, agent 1 truncated (the team hit the time limit); team 1: both terminated.
    # include_truncated=False leaves out team 0 whole: storing agent 0 alone against R = 3 would regress
    # part of the team's steps onto the team's return
    obs = np.arange(4 * 3, dtype=np.float32).reshape(4, 3, 1)
    ep = Episodes.from_padded(
        np.zeros((4, 3)),
        outcomes=[3.0, 3.0, 5.0, 5.0],
        observations=obs,
        actions=np.zeros((4, 3, 1)),
        group_ids=[0, 0, 1, 1],
    ).replace(terminated=np.array([True, False, True, True]), truncated=np.array([False, True, False, False]))
    kw = {"subset_size": 2} if cls is TeamRRDAssigner else {}
    a = cls(seed=0, include_truncated=False, **kw)
    m = a.fit(ep, num_updates=0)
    assert a.store.returns.tolist() == [5.0] and a.store.lengths.tolist() == [6]
    assert m["store/skipped_truncated"] == 1.0 and m["store/skipped_partial_team"] == 1.0
    b = cls(seed=0, include_truncated=True, **kw)  # the default: both teams, whole
    b.fit(ep, num_updates=0)
    assert b.store.returns.tolist() == [3.0, 5.0] and b.store.lengths.tolist() == [6, 6]


@pytest.mark.parametrize("name", ["team_rd", "team_rrd", "team_lare"])
def test_split_team_return_is_stored_as_the_sum_of_shares(name, one_torch_thread):
    # team_return="sum": R_g = the agents' shares added up (TeamReward(split=True) pays R / N each)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 4, 18)).astype(np.float32)
    mask = np.arange(4)[None, :] < np.array([4, 4, 4, 2, 2])[:, None]
    shares = np.array([2.0, 2.0, 2.0, -1.5, -1.5])  # team 7: R = 6 over 3 agents; team 9: R = -3 over 2
    ep = Episodes.from_padded(
        np.zeros((5, 4)),
        mask,
        outcomes=shares,
        observations=obs,
        actions=np.zeros((5, 4), np.int64),
        group_ids=[7, 7, 7, 9, 9],
    )
    kw = {"features": simple_spread_features} if name == "team_lare" else {}
    a = _learned(name, num_actions=2, team_return="sum", correct_residual=True, **kw)
    a.fit(ep, num_updates=3)
    assert a.store.returns.tolist() == [6.0, -3.0] and a.store.lengths.tolist() == [12, 4]
    out = np.asarray(a.assign(ep).rewards)
    np.testing.assert_allclose([out[:3][mask[:3]].sum(), out[3:][mask[3:]].sum()], [6.0, -3.0], rtol=1e-5, atol=1e-5)
