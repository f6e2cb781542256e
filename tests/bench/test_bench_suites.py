"""Suites, tasks and run specs: validation, selection, round trips."""

import pytest

from creditlab.bench.config import get_suite, list_suites
from creditlab.bench.suites import ANCHORS, AgentConfig, RunSpec, Suite, TaskSpec, expand_runs
from creditlab.errors import RangeError, UnknownMethodError
from tests.helpers.bench_toy import TOY_AGENT, toy_suite, toy_task


def test_builtin_suites_validate_and_expand():
    assert list_suites() == ["smoke", "standard", "long", "full", "exploration", "multiagent"]
    for name in list_suites():
        suite = get_suite(name)
        assert set(ANCHORS) <= set(suite.methods)
        runs = expand_runs(suite)
        # dense is skipped only on tasks without a dense twin
        no_twin = sum(1 for t in suite.tasks if not t.dense_twin)
        # a method listed with only_tasks runs on those tasks only
        skipped = sum(len(suite.tasks) - len(only) for only in suite.only_tasks.values())
        assert len(runs) == (len(suite.tasks) * len(suite.methods) - no_twin - skipped) * len(suite.seeds)
        assert len({r.run_id for r in runs}) == len(runs)
        for task in suite.tasks:  # gamma is recorded for every task
            assert 0 < task.agent.gamma <= 1
    standard = get_suite("standard")
    assert {t.env_id for t in standard.tasks} >= {
        "CartPole-v1",
        "LunarLander-v3",
        "Hopper-v5",
        "HalfCheetah-v5",
        "Walker2d-v5",
        "MiniGrid-DoorKey-6x6-v0",
        "umbrella_length",
        "discounting_chain",
    }
    assert len(standard.seeds) >= 3
    assert any(t.agent.algo == "sac" for t in get_suite("full").tasks)


def test_validation_messages():
    with pytest.raises(RangeError, match="gamma"):
        AgentConfig("ppo", {"n_steps": 8})
    with pytest.raises(RangeError, match="algo"):
        AgentConfig("dqn", {"gamma": 0.9})
    with pytest.raises(RangeError, match="steps must be an int >= 1"):
        TaskSpec("t", "CartPole-v1", "gymnasium", 0, 1, TOY_AGENT)
    with pytest.raises(RangeError, match="bsuite_settings"):
        TaskSpec("u", "umbrella_length", "bsuite", 10, 10, TOY_AGENT)
    with pytest.raises(RangeError, match="not ids of experiment"):
        TaskSpec("u", "umbrella_length", "bsuite", 10, 10, TOY_AGENT, bsuite_settings=("deep_sea/0",))
    with pytest.raises(RangeError, match="anchors"):
        Suite("s", "", tasks=(toy_task(),), methods=("dense",), seeds=(0,))
    with pytest.raises(RangeError, match="duplicate task"):
        Suite("s", "", tasks=(toy_task(), toy_task()), methods=ANCHORS, seeds=(0,))
    with pytest.raises(UnknownMethodError, match="not_a_method"):
        expand_runs(toy_suite().select(methods=["not_a_method"]))


def test_select_keeps_anchors_and_scales_eval_period():
    suite = get_suite("standard").select(tasks=["hopper"], seeds=2, steps=30_000, methods=[])
    assert suite.methods == ANCHORS and suite.seeds == (0, 1)
    (task,) = suite.tasks
    # 60k steps with eval every 12k -> 30k steps with eval every 6k
    assert task.steps == 30_000 and task.eval_every == 6_000
    with pytest.raises(RangeError, match="no task"):
        get_suite("smoke").select(tasks=["nope"])


def test_runspec_round_trip_and_hash():
    run = expand_runs(get_suite("standard"))[-1]
    again = RunSpec.from_dict(run.to_dict())
    assert again == run and again.config_hash() == run.config_hash()
    other = RunSpec(run.task.with_steps(run.task.steps + 1), run.method, run.seed)
    assert other.config_hash() != run.config_hash()
    assert run.run_id == f"{run.task.name}/{run.method}/seed{run.seed}"
