"""The multi-agent benchmark: the pettingzoo task family, the multiagent suite, a tiny sweep end to end."""

import numpy as np
import pytest

from creditlab.bench.config import ConfigError, get_suite, suite_from_dict
from creditlab.bench.executors import InProcessExecutor
from creditlab.bench.multiagent import make_parallel_env, spread_individual
from creditlab.bench.runner import run_sweep
from creditlab.bench.store import ResultsStore
from creditlab.bench.suites import AgentConfig, Suite, TaskSpec, expand_runs
from creditlab.credit.multiagent import simple_spread_features
from creditlab.errors import RangeError

TINY_AGENT = AgentConfig("ppo", {"gamma": 0.99, "n_steps": 10, "batch_size": 40, "n_epochs": 1}, n_envs=2)


def tiny_task(**kw) -> TaskSpec:
    # 2 team copies of 2 agents: 4 agent-steps per vector step; 80 agent-steps = 4 team episodes of 5 steps per copy
    return TaskSpec(
        "spread2",
        "mpe2.simple_spread_v3:parallel_env",
        "pettingzoo",
        80,
        40,
        TINY_AGENT,
        eval_episodes=2,
        env_kwargs={"N": 2, "max_cycles": 5},
        **kw,
    )


def test_the_multiagent_suite_validates():
    suite = get_suite("multiagent")
    assert {t.family for t in suite.tasks} == {"pettingzoo"}
    assert {t.env_id for t in suite.tasks} == {"creditlab.bench.multiagent:spread_individual"}
    assert sorted(t.env_kwargs["N"] for t in suite.tasks) == [3, 6]
    assert {"episodic", "dense", "team_uniform", "team_rrd", "team_lare"} <= set(suite.methods)
    assert len(suite.seeds) >= 5
    runs = expand_runs(suite)
    assert len(runs) == len(suite.tasks) * len(suite.methods) * len(suite.seeds)
    lare = [r for r in runs if r.method == "team_lare"]
    assert all(r.method_params["features"] == "creditlab.credit.multiagent:simple_spread_features" for r in lare)


def test_a_pettingzoo_task_in_a_suite_file():
    suite = suite_from_dict(
        {
            "name": "s",
            "seeds": 1,
            "methods": ["team_uniform"],
            "tasks": [
                {
                    "name": "spread",
                    "env": "mpe2.simple_spread_v3:parallel_env",
                    "family": "pettingzoo",
                    "steps": 100,
                    "eval_every": 50,
                    "env_kwargs": {"N": 3},
                    "agent": {"algo": "ppo", "hyperparams": {"gamma": 0.99}},
                }
            ],
        }
    )
    assert suite.tasks[0].family == "pettingzoo" and suite.methods == ("episodic", "dense", "team_uniform")
    with pytest.raises(ConfigError, match="family: expected one of .*'pettingzoo'"):
        suite_from_dict(
            {
                "name": "s",
                "seeds": 1,
                "methods": [],
                "tasks": [
                    {
                        "name": "x",
                        "env": "a:b",
                        "family": "petting",
                        "steps": 1,
                        "eval_every": 1,
                        "agent": {"algo": "ppo", "hyperparams": {"gamma": 0.9}},
                    }
                ],
            }
        )


def test_a_pettingzoo_task_needs_a_parallel_env_factory():
    with pytest.raises(RangeError, match="did not return a PettingZoo ParallelEnv"):
        make_parallel_env(TaskSpec("cp", "gymnasium.envs.classic_control:CartPoleEnv", "pettingzoo", 10, 5, TINY_AGENT))
    with pytest.raises(RangeError, match="'module:parallel_env_factory'"):
        make_parallel_env(TaskSpec("cp", "CartPole-v1", "pettingzoo", 10, 5, TINY_AGENT))


@pytest.mark.slow
def test_tiny_multiagent_sweep(tmp_path, one_torch_thread):
    suite = Suite(
        "tiny",
        "",
        tasks=(tiny_task(),),
        methods=("episodic", "dense", "team_uniform", "team_rrd"),
        seeds=(0,),
        method_params={"team_rrd": {"subset_size": 4}},
    )
    runs = expand_runs(suite)
    summary = run_sweep(runs, tmp_path, executor=InProcessExecutor())
    assert not summary.failed and len(summary.done) == 4
    results = {r["run_id"]: r for r in ResultsStore(tmp_path).load_results()}
    for rec in results.values():
        assert rec["curve"]["x"] == [0, 40, 80] and rec["curve"]["x_name"].startswith("agent-steps")
        assert rec["metrics"]["steps"] == 80 and rec["metrics"]["episodes"] == 8  # team episodes
    rrd = results["spread2/team_rrd/seed0"]["metrics"]
    assert rrd["credit/updates"] > 0 and "quality/pearson" in rrd
    assert (
        "quality/pearson" in results["spread2/episodic/seed0"]["metrics"]
    )  # the delayed team reward vs the hidden one
    from creditlab.bench.report import write_report

    paths = write_report(tmp_path)
    text = paths["markdown"].read_text()
    assert "spread2" in text and "team_rrd" in text
    assert " agent-steps |" in text and "team copies" in text  # the task table names the units of a team task


def test_individual_spread_reward_by_hand():
    # N = 2, agents at (0, 0) and (0.2, 0), landmarks at (1, 0) and (0, -2):
    #   agent 0: nearest landmark 1.0, agent 1 is 0.2 < 0.3 away -> -1.0 - 1 = -2.0
    #   agent 1: nearest landmark |(0.8, 0)| = 0.8, one collision  -> -0.8 - 1 = -1.8
    env = spread_individual(N=2, max_cycles=5)
    env.reset(seed=0)
    world = env.unwrapped.world
    for agent, p in zip(world.agents, [(0.0, 0.0), (0.2, 0.0)]):
        agent.state.p_pos = np.array(p)
        agent.state.p_vel = np.zeros(2)
    for mark, p in zip(world.landmarks, [(1.0, 0.0), (0.0, -2.0)]):
        mark.state.p_pos = np.array(p)
    _, rewards, *_ = env.step({"agent_0": 0, "agent_1": 0})  # no action; contact forces push them apart a little
    pos = np.array([a.state.p_pos for a in world.agents])
    nearest = [min(np.linalg.norm(pos[i] - np.array(m)) for m in [(1.0, 0.0), (0.0, -2.0)]) for i in range(2)]
    touching = float(np.linalg.norm(pos[0] - pos[1]) < 0.3)
    assert rewards["agent_0"] == pytest.approx(-nearest[0] - touching) and rewards["agent_1"] == pytest.approx(
        -nearest[1] - touching
    )
    assert touching == 1.0 and nearest[0] == pytest.approx(1.0, abs=0.05) and nearest[1] == pytest.approx(0.8, abs=0.05)


@pytest.mark.parametrize("n", [3, 6])
def test_hand_written_factors_contain_the_individual_reward(n):
    # LaRe's per-agent reward = -nearest - collisions: two of the three hand-written factors
    env = spread_individual(N=n)
    env.reset(seed=n)
    rng = np.random.default_rng(1)
    for _ in range(24):
        obs, rew, *_ = env.step({a: int(rng.integers(5)) for a in env.agents})
        o = np.stack([obs[a] for a in sorted(obs)])
        _, col, near = simple_spread_features(o, np.zeros((n, 5), np.float32), o)
        np.testing.assert_allclose(-near - col, [rew[a] for a in sorted(obs)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [2, 6])
def test_individual_spread_is_mpe2s_world_with_lare_reward(n):
    # same seed, same actions: observations, terminations and truncations are mpe2's simple_spread step
    # for step (resets included); the reward is LaRe's, recomputed here from mpe2's world after each step
    from mpe2 import simple_spread_v3

    ours, ref = spread_individual(N=n, max_cycles=5), simple_spread_v3.parallel_env(N=n, max_cycles=5)
    o1, _ = ours.reset(seed=3)
    o2, _ = ref.reset(seed=3)
    rng = np.random.default_rng(0)
    for step in range(12):  # two resets on the way
        if not ours.agents:
            assert not ref.agents
            o1, _ = ours.reset(seed=step)
            o2, _ = ref.reset(seed=step)
        for a in o1:
            np.testing.assert_array_equal(o1[a], o2[a])
        actions = {a: int(rng.integers(5)) for a in ours.agents}
        o1, r1, te1, tr1, _ = ours.step(actions)
        o2, _, te2, tr2, _ = ref.step(actions)
        assert te1 == te2 and tr1 == tr2
        world = ref.unwrapped.world
        pos = np.array([a.state.p_pos for a in world.agents])
        marks = np.array([m.state.p_pos for m in world.landmarks])
        for i, a in enumerate(world.agents):
            nearest = min(np.linalg.norm(pos[i] - m) for m in marks)
            hits = sum(np.linalg.norm(pos[i] - pos[j]) < 0.3 for j in range(n) if j != i)
            assert r1[a.name] == pytest.approx(-nearest - hits, abs=1e-12)


def test_individual_spread_refuses_local_ratio():
    with pytest.raises(RangeError, match="local_ratio"):
        spread_individual(N=2, local_ratio=0.5)


def test_individual_spread_survives_supersuits_copies():
    # SuperSuit clones the env by pickling it (EzPickle rebuilds it from its constructor arguments)
    import cloudpickle

    from creditlab.integrations.pettingzoo import make_team_vec_env

    env = spread_individual(N=2, max_cycles=4)
    copy = cloudpickle.loads(cloudpickle.dumps(env))
    assert copy.possible_agents == env.possible_agents and copy.unwrapped.local_ratio is None
    venv = make_team_vec_env(lambda: spread_individual(N=2, max_cycles=4), n_teams=2, seed=0)
    venv.reset()
    for _ in range(5):
        _, rewards, _, _ = venv.step(np.zeros(venv.num_envs, dtype=np.int64))
    assert rewards.shape == (4,)
    venv.close()


def test_individual_spread_time_feature_appends_the_elapsed_fraction():
    # same seed, same actions: the observation is the plain env's plus steps / max_cycles (0, 1/4, ..., 1);
    # rewards are unchanged; the spaces and the state grow by one entry per agent; copies keep the option
    plain, timed = spread_individual(N=2, max_cycles=4), spread_individual(N=2, max_cycles=4, time_feature=True)
    assert timed.observation_space("agent_0").shape == (plain.observation_space("agent_0").shape[0] + 1,)
    assert timed.unwrapped.state_space.shape == (plain.unwrapped.state_space.shape[0] + 2,)
    o1, _ = plain.reset(seed=1)
    o2, _ = timed.reset(seed=1)
    for step in range(1, 5):
        for a in o1:
            np.testing.assert_array_equal(o2[a][:-1], o1[a])
            assert o2[a][-1] == pytest.approx((step - 1) / 4)
            assert timed.observation_space(a).contains(o2[a])
        assert timed.unwrapped.state().shape == timed.unwrapped.state_space.shape
        actions = {a: step % 5 for a in plain.agents}
        o1, r1, *_ = plain.step(actions)
        o2, r2, _, tr2, _ = timed.step(actions)
        assert r1 == r2
    assert all(tr2.values()) and all(o[-1] == 1.0 for o in o2.values())
    import cloudpickle

    assert cloudpickle.loads(cloudpickle.dumps(timed)).unwrapped.time_feature is True
    with pytest.raises(RangeError, match="time_feature"):
        spread_individual(N=2, time_feature="yes")
