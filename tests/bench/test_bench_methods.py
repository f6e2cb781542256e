"""How the benchmark builds a run's method: LaRe feature programs, variants, seeds, untrained models, custom envs."""

import dataclasses
import sys
import textwrap

import numpy as np
import pytest

from creditlab.bench.executors import InProcessExecutor
from creditlab.bench.runner import execute_run, run_sweep
from creditlab.bench.store import ResultsStore
from creditlab.bench.suites import RunSpec, Suite, expand_runs
from creditlab.bench.training import method_config
from tests.helpers.bench_toy import TOY_AGENT, toy_task

FACTORS = """
import numpy as np


def evaluation_func(observation, action):
    return [observation[:, 0:1], np.abs(observation[:, 2:3]), np.sum(action ** 2, axis=1, keepdims=True)]
"""


def _suite(methods, params=None, variants=None, task=None, task_params=None):
    return Suite(
        "t",
        "",
        tasks=(task or toy_task(steps=256),),
        methods=("episodic", "dense", *methods),
        seeds=(3,),
        method_params=params or {},
        variants=variants or {},
        task_params=task_params or {},
    )


def _program(tmp_path):
    from creditlab.programs.program import Program

    return Program(FACTORS, "factors", obs_dim=4, act_dim=2, num_factors=3, origin="hand-written").save(
        tmp_path / "cp_factors"
    )


def test_lare_without_features_is_an_error_not_rrd():
    (run,) = [r for r in expand_runs(_suite(["lare"])) if r.method == "lare"]
    out = execute_run(run.to_dict())
    assert out["status"] == "failed"
    assert "needs a feature source" in out["error"] and "lare" in out["error"]


def test_lare_with_a_program_folder_runs_it_in_the_sandbox(tmp_path):
    folder = _program(tmp_path)
    suite = _suite(["lare"], task_params={"lare": {"toy": {"features": str(folder)}}})
    (run,) = [r for r in expand_runs(suite) if r.method == "lare"]
    out = execute_run(run.to_dict())
    assert out["status"] == "ok", out.get("error")
    assert out["metrics"]["credit/total_updates"] > 0
    from creditlab.programs.program import load_program

    assert out["method_config"]["program_sha256"] == load_program(folder).sha256


def test_variant_runs_its_base_method_with_its_parameters_and_the_run_seed():
    suite = _suite(
        ["rrd_unbiased"],
        params={"rrd_unbiased": {"bias_correction": True, "subset_size": 8}},
        variants={"rrd_unbiased": "rrd"},
    )
    (run,) = [r for r in expand_runs(suite) if r.method == "rrd_unbiased"]
    cfg = method_config(run)
    assert cfg["method"] == "rrd"
    # the assigner's seed follows the run seed (3), so seeds vary the reward model too
    assert (
        cfg["assigner"]["seed"] == 3
        and cfg["assigner"]["bias_correction"] is True
        and cfg["assigner"]["subset_size"] == 8
    )
    pinned = dataclasses.replace(run, method_params={**run.method_params, "seed": 11})
    assert method_config(pinned)["assigner"]["seed"] == 11


def test_a_reward_model_that_never_trains_fails_the_run(tmp_path):
    # update_ratio 0: the model takes no gradient step, so PPO would train on a random network
    suite = _suite(["rrd"], params={"rrd": {"update_ratio": 0.0}})
    summary = run_sweep([r for r in expand_runs(suite) if r.method == "rrd"], tmp_path, executor=InProcessExecutor())
    assert summary.failed == ["toy/rrd/seed3"]
    (failure,) = ResultsStore(tmp_path).load_failures()
    assert "never trained" in failure["error"] and "not a result" in failure["error"]


def test_custom_env_module_from_imports(tmp_path, monkeypatch):
    mod = tmp_path / "my_envs_for_creditlab.py"
    mod.write_text(
        textwrap.dedent("""
        import gymnasium as gym
        from gymnasium.envs.classic_control import CartPoleEnv

        class ShortPole(CartPoleEnv):
            pass

        gym.register("ShortPole-v0", entry_point=ShortPole, max_episode_steps=50)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_envs_for_creditlab", None)
    by_id = dataclasses.replace(toy_task(steps=128), env_id="ShortPole-v0", imports=("my_envs_for_creditlab",))
    by_class = dataclasses.replace(toy_task(steps=128, name="cls"), env_id="my_envs_for_creditlab:ShortPole")
    for task in (by_id, by_class):
        out = execute_run(RunSpec(task, "dense", 0).to_dict())
        assert out["status"] == "ok", out.get("error")
        assert np.isfinite(out["metrics"]["final_return"])
    missing = dataclasses.replace(toy_task(steps=128), env_id="ShortPole-v0", imports=("no_such_module_xyz",))
    out = execute_run(RunSpec(missing, "dense", 0).to_dict())
    assert out["status"] == "failed" and "no_such_module_xyz" in out["error"]


@pytest.mark.parametrize("reward", ["delayed:4"])
def test_delayed_task_trains(reward):
    task = dataclasses.replace(toy_task(steps=256), reward=reward)
    out = execute_run(RunSpec(task, "uniform", 0).to_dict())
    assert out["status"] == "ok", out.get("error")
    assert TOY_AGENT.algo == "ppo"
