"""The PettingZoo integration: team episodic reward, SuperSuit vectorization, team grouping in the SB3 callback, runner."""

import functools

import numpy as np
import pytest
from gymnasium import spaces
from mpe2 import simple_spread_v3
from pettingzoo.utils.env import ParallelEnv

from creditlab.credit.multiagent import TeamUniformAssigner
from creditlab.errors import DataFormatError, RangeError
from creditlab.integrations import TRUE_REWARD_KEY
from creditlab.integrations.pettingzoo import PettingZooEnvs, TeamEvaluator, TeamReward, make_team_vec_env
from creditlab.integrations.sb3 import CreditAssignmentCallback, RunConfig, train

spread = functools.partial(simple_spread_v3.parallel_env, N=3, max_cycles=3)


def _play(env, steps, seed=0):
    env.reset(seed=seed)
    out = []
    for _ in range(steps):
        out.append(env.step({a: 1 for a in env.agents}))
    return out


def test_team_episodic_reward_pays_the_team_sum_at_the_last_step():
    steps = _play(TeamReward(spread()), 3)
    true = [[info[a][TRUE_REWARD_KEY] for a in sorted(info)] for *_, info in steps]
    team_return = float(np.sum(true))  # sum over agents and steps of the hidden rewards
    paid = [[r[a] for a in sorted(r)] for _, r, *_ in steps]
    assert paid[0] == paid[1] == [0.0, 0.0, 0.0]
    assert paid[2] == pytest.approx([team_return] * 3)
    # the team's true return is logged once per team episode, on the first agent's info
    infos = steps[-1][4]
    assert infos["agent_0"]["episode"]["r"] == pytest.approx(team_return) and infos["agent_0"]["episode"]["l"] == 3
    assert "episode" not in infos["agent_1"] and "episode" not in steps[1][4]["agent_0"]


def test_split_pays_a_share_and_dense_pays_each_agent_its_own():
    split = _play(TeamReward(spread(), split=True), 3)
    dense = _play(TeamReward(spread(), reward="dense"), 3)
    team_return = sum(info[a][TRUE_REWARD_KEY] for *_, info in split for a in info)
    assert [split[2][1][a] for a in sorted(split[2][1])] == pytest.approx([team_return / 3] * 3)  # R / N each
    for _, r, *_, info in dense:
        assert all(r[a] == info[a][TRUE_REWARD_KEY] for a in r)
    # the env's own rewards: the same seed gives the same hidden rewards under both wrappers
    assert [i[a][TRUE_REWARD_KEY] for *_, i in dense for a in i] == [
        i[a][TRUE_REWARD_KEY] for *_, i in split for a in i
    ]


class _TwoAgents(ParallelEnv):
    """Toy two-agent parallel envs: agents, spaces (a 2-vector observation within +-bound, 2 actions)."""

    possible_agents = ["agent_0", "agent_1"]
    render_mode = None
    bound = 1.0

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return {a: np.zeros(2, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def observation_space(self, agent):
        return spaces.Box(-self.bound, self.bound, (2,), np.float32)

    def action_space(self, agent):
        return spaces.Discrete(2)


class _EarlyExit(_TwoAgents):
    """Two agents; agent_0 terminates after one step, agent_1 after two."""

    metadata = {"name": "early_exit"}

    def step(self, actions):
        self.t += 1
        done = {"agent_0": self.t >= 1, "agent_1": self.t >= 2}
        agents = list(self.agents)
        self.agents = [a for a in agents if not done[a]]
        z = {a: np.zeros(2, np.float32) for a in agents}
        return (
            z,
            dict.fromkeys(agents, 1.0),
            {a: done[a] for a in agents},
            dict.fromkeys(agents, False),
            {a: {} for a in agents},
        )


def test_agents_ending_at_different_steps_is_a_named_error():
    env = TeamReward(_EarlyExit())
    env.reset()
    with pytest.raises(
        DataFormatError, match=r"every agent of a team to end at the same step; agents \['agent_0'\] ended at step 1"
    ):
        env.step({"agent_0": 0, "agent_1": 0})


def test_team_reward_arguments_are_checked():
    with pytest.raises(RangeError, match="'episodic', 'dense'"):
        TeamReward(spread(), reward="delayed:3")


# ------------------------------------------------------------------------------ vectorization


def test_team_vec_env_slots_teams_and_seeding():
    venv = make_team_vec_env(spread, n_teams=3, seed=5)
    assert venv.num_envs == 9 and venv.num_agents == 3 and venv.slot_teams.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    obs = venv.reset()
    # copies are cloudpickled from one env: without reseeding they would start identically
    assert not np.allclose(obs[0:3], obs[3:6]) and not np.allclose(obs[3:6], obs[6:9])
    again = make_team_vec_env(spread, n_teams=3, seed=5).reset()
    np.testing.assert_array_equal(obs, again)  # reproducible
    # SB3's seed() then reset() reseeds: copy i from seed + i, as DummyVecEnv does
    venv.step(np.zeros(9, np.int64))
    assert venv.seed(5) == [5, 6, 7]
    np.testing.assert_array_equal(venv.reset(), obs)
    one = make_team_vec_env(spread, n_teams=1, seed=6).reset()
    np.testing.assert_array_equal(one, obs[3:6])
    venv.close()


def test_vec_env_pays_each_team_its_own_sum_and_reports_terminal_observations():
    venv = make_team_vec_env(spread, n_teams=2, seed=0)
    venv.reset()
    true = np.zeros(6)
    for t in range(3):
        _, rew, dones, infos = venv.step(np.full(6, 2, np.int64))
        true += [info[TRUE_REWARD_KEY] for info in infos]
        if t < 2:
            assert not dones.any() and (rew == 0).all()
    assert dones.all()
    for team in (0, 1):
        slots = slice(3 * team, 3 * team + 3)
        np.testing.assert_allclose(rew[slots], true[slots].sum(), rtol=1e-5)  # the team's own return, to each agent
        assert infos[3 * team]["episode"]["r"] == pytest.approx(true[slots].sum())
    assert all("terminal_observation" in info for info in infos)
    venv.close()


# ------------------------------------------------------------------------------ the SB3 callback with teams


class _Recording(TeamUniformAssigner):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.assigned = []

    def assign(self, episodes):
        out = super().assign(episodes)
        self.assigned.append((episodes, np.asarray(out.rewards)))
        return out


@pytest.mark.slow
def test_callback_groups_slots_into_team_episodes(one_torch_thread):
    from stable_baselines3 import PPO

    env_fn = functools.partial(simple_spread_v3.parallel_env, N=2, max_cycles=5)
    venv = make_team_vec_env(env_fn, n_teams=3, seed=0)
    rec = _Recording()
    cb = CreditAssignmentCallback(rec, reward_scale="none")
    # rollouts of 7 vector steps: team episodes of 5 steps span rollouts
    PPO("MlpPolicy", venv, n_steps=7, batch_size=42, n_epochs=1, seed=0).learn(7 * 6 * 4, callback=cb)
    assert cb._teams.tolist() == [0, 0, 1, 1, 2, 2]
    for episodes, rewards in rec.assigned:
        gid = np.asarray(episodes.group_ids)
        complete = np.asarray(episodes.outcome_present)
        for g in np.unique(gid):
            rows = np.nonzero(gid == g)[0]
            assert len(rows) == 2  # both agents of one team copy
            assert len(set(np.asarray(episodes.lengths)[rows].tolist())) == 1  # they ended together
            if complete[rows].all():
                R = float(np.asarray(episodes.outcomes)[rows[0]])  # the team's sum, paid to every agent
                assert rewards[rows].sum() == pytest.approx(R, rel=1e-5)  # team-uniform credit sums to it
    last = cb.history[-1]
    assert np.isfinite(last["quality/decomposition_error"]) and last["credit/complete_episodes"] > 0
    venv.close()


def test_callback_team_map_must_fit_the_env(one_torch_thread):
    from stable_baselines3 import PPO

    venv = make_team_vec_env(spread, n_teams=1, seed=0)
    cb = CreditAssignmentCallback(TeamUniformAssigner(), teams=[0, 0])
    with pytest.raises(RangeError, match="teams maps 2 slots to teams but the training env has 3 slots"):
        PPO("MlpPolicy", venv, n_steps=4, batch_size=12, n_epochs=1).learn(12, callback=cb)


# ------------------------------------------------------------------------------ evaluation and the runner


def test_team_evaluator_same_start_states_and_team_returns(one_torch_thread):
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", make_team_vec_env(spread, n_teams=1, seed=0), n_steps=8, seed=0)
    ev = TeamEvaluator(spread, episodes=3, seed=100)
    a, b = ev(model), ev(model)
    assert a.returns == b.returns and len(a.returns) == 3 and a.lengths == [3, 3, 3]
    # the same start states as a dense team env seeded the same way, under the same deterministic policy
    venv = make_team_vec_env(spread, n_teams=3, seed=100, reward="dense")
    obs, total = venv.reset(), np.zeros(9)
    for _ in range(3):
        obs, rew, _, _ = venv.step(model.predict(obs, deterministic=True)[0])
        total += rew
    np.testing.assert_allclose(a.returns, total.reshape(3, 3).sum(1), rtol=1e-5)
    ev.close()
    venv.close()


def test_runner_trains_a_team_with_credit_and_counts_agent_steps(one_torch_thread):
    cfg = RunConfig(
        "mpe2.simple_spread_v3:parallel_env",
        env_kwargs={"N": 2, "max_cycles": 5},
        assigner="team_rrd",
        assigner_params={"subset_size": 4},
        total_timesteps=80,
        n_envs=2,
        eval_every=40,
        eval_episodes=2,
        normalize_observations=True,
        normalize_rewards=True,
        algo_kwargs={"n_steps": 10, "batch_size": 40, "n_epochs": 1},
    )
    res = train(cfg, envs=PettingZooEnvs())
    assert res.eval_timesteps == [0, 40, 80]  # agent-steps: 2 teams x 2 agents per vector step
    # 80 agent-steps = 20 vector steps of 2 teams x 2 agents: 4 episodes of 5 steps per team copy
    assert len(res.train_episodes) == 8 and all(length == 5 for _, _, length in res.train_episodes)  # team episodes
    assert res.assigner.trained and res.assigner.store.num_episodes == 8  # one pooled episode per team episode
    assert res.assigner.store.lengths.tolist() == [10] * 8  # 2 agents x 5 steps
    assert res.metrics["steps"] == 80


def test_runner_rejects_delayed_rewards_for_teams():
    cfg = RunConfig(spread, reward="delayed:2", total_timesteps=12, n_envs=1)
    with pytest.raises(RangeError, match="'episodic' or 'dense'"):
        train(cfg, envs=PettingZooEnvs())


class _Reordered(_TwoAgents):
    """Two agents whose step dicts list agent_1 before agent_0 (the order of possible_agents differs)."""

    metadata = {"name": "reordered"}

    def step(self, actions):
        self.t += 1
        agents = ["agent_1", "agent_0"]
        if self.t >= 2:
            self.agents = []
        return (
            {a: np.zeros(2, np.float32) for a in agents},
            {"agent_1": 2.0, "agent_0": 1.0},
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, self.t >= 2),
            {a: {} for a in agents},
        )


def test_team_episode_record_sits_on_the_first_possible_agent():
    # the evaluator and SB3's episode statistics read slot k * N (possible_agents[0]) of each copy
    env = TeamReward(_Reordered())
    env.reset()
    env.step({"agent_0": 0, "agent_1": 0})
    *_, infos = env.step({"agent_0": 0, "agent_1": 0})
    assert infos["agent_0"]["episode"]["r"] == 6.0 and "episode" not in infos["agent_1"]
    evaluate = TeamEvaluator(lambda: _Reordered(), n_teams=2, episodes=3, seed=0)

    class _Const:
        def predict(self, obs, deterministic=True):
            return np.zeros(len(obs), np.int64), None

        def get_env(self):
            return None

        num_timesteps = 0

    result = evaluate(_Const())  # before the fix this never returned: the record sat on slot 1
    assert result.returns == [6.0, 6.0, 6.0] and result.lengths == [2, 2, 2]


@pytest.mark.parametrize("split,team_return,ok", [(True, "sum", True), (True, "shared", False), (False, "sum", False)])
def test_callback_checks_team_return_against_the_envs_payment(split, team_return, ok, one_torch_thread):
    from stable_baselines3 import PPO

    venv = make_team_vec_env(spread, n_teams=1, seed=0, split=split)
    assert venv.team_split is split
    cb = CreditAssignmentCallback(TeamUniformAssigner(team_return=team_return))
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=12, n_epochs=1)
    if ok:
        model.learn(12, callback=cb)
    else:
        want = "sum" if split else "shared"
        with pytest.raises(
            RangeError, match=f"team_return must be '{want}' for this env.*got team_return='{team_return}'"
        ):
            model.learn(12, callback=cb)
    venv.close()


class _TeamPays(_TwoAgents):
    """Two agents on a line, 3 steps; the env pays the team's number -|x_0 - x_1| to both, at the end only.

    ``unequal=True`` pays the agents different rewards (not a team-paying env)."""

    metadata = {"name": "team_pays"}
    bound = 10.0

    def __init__(self, unequal=False):
        self.unequal = unequal

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t, self.x = 0, np.array([-2.0, 2.0])
        return self._obs(), {a: {} for a in self.agents}

    def _obs(self):
        return {a: np.array([self.x[i], self.t / 3], np.float32) for i, a in enumerate(self.agents)}

    def step(self, actions):
        self.t += 1
        self.x += np.array([1.0 if actions[a] else -1.0 for a in self.possible_agents])
        end = self.t >= 3
        team = -abs(self.x[0] - self.x[1]) if end else 0.0
        rewards = {"agent_0": team, "agent_1": team + (1.0 if self.unequal and end else 0.0)}
        obs = self._obs()
        if end:
            self.agents = []
        return obs, rewards, dict.fromkeys(rewards, False), dict.fromkeys(rewards, end), {a: {} for a in rewards}


def test_an_env_that_already_pays_the_team_counts_its_number_once():
    # agent 0 moves right 3 times, agent 1 left once then right twice: x = (1, 3) -> the team's number -2
    acts = [{"agent_0": 1, "agent_1": 0}, {"agent_0": 1, "agent_1": 1}, {"agent_0": 1, "agent_1": 1}]
    summed, team = TeamReward(_TeamPays()), TeamReward(_TeamPays(), env_pays="team")
    for env in (summed, team):
        env.reset()
        out = [env.step(a) for a in acts]
    _, paid, _, _, infos = out[-1]
    assert paid == {"agent_0": -2.0, "agent_1": -2.0} and infos["agent_0"]["episode"]["r"] == -2.0  # once, not N times
    assert TRUE_REWARD_KEY not in infos["agent_0"]  # no hidden per-agent reward to compare credit with
    assert summed.team_return == -4.0  # the default reads per-agent rewards and sums them: 2 x -2
    odd = TeamReward(_TeamPays(unequal=True), env_pays="team")
    odd.reset()
    odd.step(acts[0])
    odd.step(acts[1])
    with pytest.raises(DataFormatError, match=r"same team reward for every agent at a step; at step 3"):
        odd.step(acts[2])
    with pytest.raises(RangeError, match="env_pays must be one of"):
        TeamReward(_TeamPays(), env_pays="shared")


def test_training_on_an_env_that_already_pays_the_team(one_torch_thread):
    cfg = RunConfig(
        _TeamPays,
        assigner="team_rrd",
        total_timesteps=240,
        n_envs=4,
        eval_every=120,
        eval_episodes=4,
        algo_kwargs={"n_steps": 15, "batch_size": 40, "n_epochs": 1},
    )
    res = train(cfg, envs=PettingZooEnvs(env_pays="team"))
    # the team's number -|x_0 - x_1| is in {0, -2, ..., -10} and counted once per team episode (summing it
    # over the 2 agents would give -4, -8, ... down to -20)
    returns = [r for ev in res.evaluations for r in ev.returns] + [ep[1] for ep in res.train_episodes]
    assert res.train_episodes and all(r in (0.0, -2.0, -4.0, -6.0, -8.0, -10.0) for r in returns)
    assert min(ep[1] for ep in res.train_episodes) >= -10.0 and any(ep[1] in (-2.0, -6.0) for ep in res.train_episodes)
