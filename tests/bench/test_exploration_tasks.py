"""Exploration tasks: context sets, state keys in info, deep_sea through the bsuite adapter and its score."""

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid ids)
import numpy as np
import pandas as pd
import pytest
from stable_baselines3.common.env_util import make_vec_env

from creditlab.bench.exploration_tasks import (
    deep_sea_score,
    deep_sea_size,
    deep_sea_solved_episode,
    make_exploration_env,
    make_minigrid_env,
)
from creditlab.errors import RangeError
from creditlab.exploration import ContextSetWrapper, StateKeyWrapper, full_state_key, position_key, to_key
from creditlab.exploration.wrappers import CONTEXT_INFO, STATE_KEY_INFO, context_seeds

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENV = "MiniGrid-MultiRoom-N2-S4-v0"


def _layout(env):
    return env.unwrapped.grid.encode().tobytes()


def test_one_context_is_one_layout_unlimited_are_many():
    one = ContextSetWrapper(gym.make(ENV), [123], rng_seed=0)
    layouts = set()
    for _ in range(5):
        _, info = one.reset()
        layouts.add(_layout(one))
        assert info[CONTEXT_INFO] == 123
    assert len(layouts) == 1
    many = ContextSetWrapper(gym.make(ENV), None, rng_seed=0)
    layouts = set()
    for _ in range(8):
        many.reset()
        layouts.add(_layout(many))
    assert len(layouts) >= 6

    # unlimited contexts are reproducible from rng_seed
    def layouts_of(env, n=3):
        out = []
        for _ in range(n):
            env.reset()
            out.append(_layout(env))
        return out

    assert layouts_of(ContextSetWrapper(gym.make(ENV), None, rng_seed=0)) == layouts_of(
        ContextSetWrapper(gym.make(ENV), None, rng_seed=0)
    )


def test_context_set_draws_only_its_seeds_and_cycles():
    seeds = context_seeds(3, 7)
    env = ContextSetWrapper(gym.make(ENV), seeds, rng_seed=1)
    drawn = {env.reset()[1][CONTEXT_INFO] for _ in range(30)}
    assert drawn == set(seeds)
    cyc = ContextSetWrapper(gym.make(ENV), seeds, mode="cycle")
    assert [cyc.reset()[1][CONTEXT_INFO] for _ in range(4)] == seeds + seeds[:1]
    # a reset seed re-seeds the draws: the same seed gives the same sequence of levels
    a = ContextSetWrapper(gym.make(ENV), seeds)
    b = ContextSetWrapper(gym.make(ENV), seeds)
    seq_a = [a.reset(seed=5)[1][CONTEXT_INFO]] + [a.reset()[1][CONTEXT_INFO] for _ in range(5)]
    seq_b = [b.reset(seed=5)[1][CONTEXT_INFO]] + [b.reset()[1][CONTEXT_INFO] for _ in range(5)]
    assert seq_a == seq_b
    # the step info carries the episode's context
    assert a.step(0)[4][CONTEXT_INFO] == seq_a[-1]
    with pytest.raises(RangeError):
        ContextSetWrapper(gym.make(ENV), [])
    with pytest.raises(RangeError):
        ContextSetWrapper(gym.make(ENV), [1], mode="random")
    with pytest.raises(RangeError):
        context_seeds(0, 0)


def test_state_keys_by_hand():
    env = gym.make("MiniGrid-Empty-5x5-v0")
    env.reset(seed=0)
    u = env.unwrapped
    x, y = u.agent_pos
    assert position_key(env) == x * 65536 + y
    assert position_key(env, direction=True) == (x * 65536 + y) * 4 + u.agent_dir
    assert full_state_key(env) == np.array(int(u.hash(), 16), dtype=np.uint64).view(np.int64)
    with pytest.raises(Exception, match="agent_pos"):
        position_key(gym.make("CartPole-v1"))
    assert to_key("a") == to_key("a") != to_key("b")
    assert to_key(np.array([1, 2])) != to_key(np.array([1.0, 2.0]))  # dtype is part of the key
    with pytest.raises(Exception, match="state key"):
        to_key(object())


def test_terminal_state_key_is_reported_before_the_auto_reset():
    # in a vector env, the step that ends an episode reports the key of the terminal state (the
    # goal cell), the reset info the key of the new start
    from minigrid.wrappers import ImgObsWrapper

    def make():
        return StateKeyWrapper(ImgObsWrapper(gym.make("MiniGrid-Empty-5x5-v0", max_steps=3)), "pos")

    venv = make_vec_env(make, n_envs=1, seed=0)
    venv.reset()
    start_key = venv.reset_infos[0][STATE_KEY_INFO]
    keys = []
    for _ in range(3):
        _, _, done, infos = venv.step(np.array([2]))  # forward
        keys.append(infos[0][STATE_KEY_INFO])
    assert done[0]
    # forward from (1, 1) facing east: (2, 1), (3, 1), then a wall: (3, 1) -- the terminal state is (3, 1)
    assert keys == [2 * 65536 + 1, 3 * 65536 + 1, 3 * 65536 + 1]
    assert start_key == 1 * 65536 + 1 and venv.reset_infos[0][STATE_KEY_INFO] == start_key


def test_minigrid_factory_observation_and_info():
    env = make_minigrid_env(ENV, num_contexts=1, context_seed=3, key="full")
    obs, info = env.reset(seed=0)
    assert obs.shape == (147,) and obs.dtype == np.float32
    assert info[CONTEXT_INFO] == context_seeds(1, 3)[0] and isinstance(info[STATE_KEY_INFO], int)
    obs2, info2 = env.reset()
    np.testing.assert_array_equal(obs, obs2)  # one context: the same start every episode
    with pytest.raises(RangeError):
        make_exploration_env("CartPole-v1")


def test_deep_sea_through_the_bsuite_adapter():
    env = make_exploration_env("deep_sea/0", seed=0)
    n = deep_sea_size("deep_sea/0")
    obs, info = env.reset(seed=0)
    assert n == 10 and obs.shape == (n * n,) and STATE_KEY_INFO in info
    steps, done = 0, False
    while not done:
        obs, r, term, trunc, info = env.step(0)
        steps, done = steps + 1, term or trunc
    assert steps == n and term and info["total_bad_episodes"] in (0, 1)
    with pytest.raises(RangeError):
        make_exploration_env("deep_sea/0", num_contexts=1)


def _bsuite_find_solution_score(bad_by_size):
    """bsuite's own deep_sea analysis.score, run with a shim for pandas.Series.append (removed in pandas 2)."""
    from bsuite.experiments.deep_sea import analysis

    frames = []
    for size, bad in bad_by_size.items():
        b = np.asarray(bad, dtype=float)
        frames.append(
            pd.DataFrame({"episode": np.arange(1, b.size + 1), "total_bad_episodes": np.cumsum(b), "size": size})
        )
    df = pd.concat(frames, ignore_index=True)
    had = hasattr(pd.Series, "append")
    if not had:
        pd.Series.append = lambda self, other: pd.concat([self, other])
    try:
        return float(analysis.score(df))
    finally:
        if not had:
            del pd.Series.append


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:The inplace keyword")
def test_deep_sea_score_matches_bsuite_analysis():
    rng = np.random.default_rng(0)
    logs = {
        10: [True] * 20 + [False] * 200,  # 20 bad, then good: below 0.9 at episode 23
        12: [True] * 300,  # never solved
        14: list(rng.random(500) < 0.95),  # mostly bad
        16: [True] * 5000 + [False] * 1000,  # solved late (episode 5556)
        20: [False] * 10,  # solved at episode 1
    }
    assert deep_sea_score(logs) == pytest.approx(_bsuite_find_solution_score(logs))
    # by hand: size 10 first below 0.9 at episode 23 (20/23 = 0.87) < 2^10 + 100;
    # size 16 at 5556 (5000/5556 = 0.8999) < 65636; size 20 at 1; 12 and (likely) 14 never
    assert deep_sea_solved_episode(logs[10]) == 23 and deep_sea_solved_episode(logs[16]) == 5556
    assert deep_sea_solved_episode(logs[12]) is None


_AGENT = {
    "algo": "ppo",
    "n_envs": 2,
    "normalize": "obs",
    "hyperparams": {"n_steps": 32, "batch_size": 64, "n_epochs": 1, "gamma": 0.99, "ent_coef": 0.01},
}


def test_bench_runs_a_bonus_on_deep_sea_and_scores_it():
    """An exploration method through `creditlab bench`'s worker: the bonus callback on the one runner,
    bsuite's deep_sea score from the per-episode "bad" flags."""
    from creditlab.bench.config import suite_from_dict
    from creditlab.bench.runner import execute_run
    from creditlab.bench.suites import expand_runs

    suite = suite_from_dict(
        {
            "name": "x",
            "seeds": 1,
            "methods": [{"name": "episodic_x_global", "params": {"beta": 0.05}}],
            "tasks": [
                {
                    "name": "deep_sea",
                    "env": "deep_sea",
                    "family": "bsuite",
                    "steps": 640,
                    "eval_every": 640,
                    "eval_episodes": 2,
                    "agent": _AGENT,
                    "dense_twin": False,
                    "state_key": "obs",
                    "bsuite_settings": ["deep_sea/0"],
                }
            ],
        }
    )
    (run,) = [r for r in expand_runs(suite) if r.method == "episodic_x_global"]
    out = execute_run(run.to_dict())
    assert out["status"] == "ok", out.get("error")
    m = out["metrics"]
    assert 0.0 <= m["bsuite/score"] <= 1.0 and m["episodes"] >= 60
    assert m["exploration/unique_states"] > 10 and m["exploration/bonus_mean"] > 0
    assert out["method_config"]["callback"] == {"beta": 0.05}


def test_bench_minigrid_contexts_and_success_metrics():
    from creditlab.bench.config import suite_from_dict
    from creditlab.bench.runner import execute_run
    from creditlab.bench.suites import expand_runs

    suite = suite_from_dict(
        {
            "name": "x",
            "seeds": 1,
            "methods": ["episodic_count"],
            "tasks": [
                {
                    "name": "mr",
                    "env": "MiniGrid-MultiRoom-N2-S4-v0",
                    "family": "minigrid",
                    "steps": 256,
                    "eval_every": 256,
                    "eval_episodes": 2,
                    "agent": _AGENT,
                    "dense_twin": False,
                    "contexts": 2,
                    "state_key": "pos",
                }
            ],
        }
    )
    for run in expand_runs(suite):
        out = execute_run(run.to_dict())
        assert out["status"] == "ok", out.get("error")
        assert "success_rate_last" in out["metrics"] and "steps_to_success" in out["metrics"]
