"""Suite files: validation errors name the key path, round trips, variants and per-task parameters, stable hashes."""

import dataclasses

import pytest
import yaml

from creditlab.bench.config import ConfigError, dump_suite, get_suite, list_suites, load_suite, suite_from_dict
from creditlab.bench.suites import RunSpec, expand_runs

AGENT = {"algo": "ppo", "n_envs": 2, "hyperparams": {"gamma": 0.99, "n_steps": 64}}


def _suite(**changes):
    data = {
        "name": "s",
        "seeds": 2,
        "agents": {"small": AGENT},
        "tasks": [{"name": "cp", "env": "CartPole-v1", "steps": 1000, "eval_every": 500, "agent": "small"}],
        "methods": ["uniform"],
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "tasks": [
                    {"name": "cp", "env": "CartPole-v1", "steps": 1000, "eval_every": 500, "agent": "small", "stpes": 3}
                ]
            },
            r"tasks\[0\]\.stpes: unknown key; allowed keys here: agent, bsuite_settings, contexts, dense_twin",
        ),
        (
            {"tasks": [{"name": "cp", "env": "CartPole-v1", "steps": 0, "eval_every": 500, "agent": "small"}]},
            r"tasks\[0\]\.steps: expected an integer >= 1; got 0",
        ),
        (
            {"tasks": [{"name": "cp", "env": "CartPole-v1", "steps": 10, "eval_every": 5, "agent": "big"}]},
            r"tasks\[0\]\.agent: no agent named 'big'; define it under `agents` \(defined: small\)",
        ),
        (
            {
                "tasks": [
                    {
                        "name": "cp",
                        "env": "CartPole-v1",
                        "steps": 10,
                        "eval_every": 5,
                        "agent": "small",
                        "reward": "delayed:0",
                    }
                ]
            },
            r"tasks\[0\]\.reward must be 'episodic' or 'delayed:K' with an integer K >= 1; got 'delayed:0'",
        ),
        (
            {
                "tasks": [
                    {
                        "name": "cp",
                        "env": "CartPole-v1",
                        "steps": 10,
                        "eval_every": 5,
                        "agent": "small",
                        "family": "atari",
                    }
                ]
            },
            r"tasks\[0\]\.family: expected one of 'gymnasium', 'minigrid', 'bsuite', 'pettingzoo'; got 'atari'",
        ),
        (
            {"agents": {"small": {"algo": "ppo", "hyperparams": {"n_steps": 8}}}},
            r"agents\.small\.hyperparams\.gamma: expected a number in \[0, 1\]",
        ),
        ({"seeds": [0, -1]}, r"seeds\[1\]: expected an integer >= 0; got -1"),
        ({"methods": ["not_a_method"]}, r"methods: method\(s\) \['not_a_method'\] are neither anchors"),
        (
            {"methods": [{"name": "v", "method": "rrd", "tasks": {"nope": {}}}]},
            r"methods\[0\]\.tasks\.nope: no such task; tasks are cp",
        ),
        (
            {"methods": [{"name": "dense", "params": {}}]},
            r"methods\[0\]\.name: the anchors episodic, dense take no parameters",
        ),
        ({"colour": "red"}, r"^colour: unknown key; allowed keys here: agents, description"),
    ],
)
def test_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        suite_from_dict(_suite(**change))


def test_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(bad)
    with pytest.raises(ConfigError, match="cannot read suite file"):
        load_suite(tmp_path / "missing.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(_suite(seeds="many")))
    with pytest.raises(ConfigError, match=r"wrong\.yaml: seeds: expected a count or a list"):
        load_suite(wrong)


def test_only_tasks():
    data = _suite(methods=[{"name": "rrd", "only_tasks": ["cp"]}, {"name": "uniform", "only_tasks": []}])
    data["tasks"].append({"name": "cp2", "env": "CartPole-v1", "steps": 1000, "eval_every": 500, "agent": "small"})
    runs = {r.run_id for r in expand_runs(suite_from_dict(data))}
    assert "cp/rrd/seed0" in runs and "cp2/rrd/seed0" not in runs
    assert not any("/uniform/" in r for r in runs)
    assert "cp2/episodic/seed1" in runs and "cp2/dense/seed1" in runs
    with pytest.raises(ConfigError, match=r"methods\[0\]\.only_tasks\[0\]: no task named 'x'"):
        suite_from_dict(_suite(methods=[{"name": "rrd", "only_tasks": ["x"]}]))


def test_variants_and_task_params_expand():
    suite = suite_from_dict(
        _suite(
            methods=[
                "uniform",
                {
                    "name": "rrd_unbiased",
                    "method": "rrd",
                    "params": {"bias_correction": True, "subset_size": 8},
                    "tasks": {"cp": {"subset_size": 4}},
                },
            ]
        )
    )
    assert suite.methods == ("episodic", "dense", "uniform", "rrd_unbiased")
    runs = {r.run_id: r for r in expand_runs(suite)}
    run = runs["cp/rrd_unbiased/seed1"]
    assert run.registry_name == "rrd" and run.base_method == "rrd"
    # the per-task value overrides the suite-wide one
    assert dict(run.method_params) == {"bias_correction": True, "subset_size": 4}
    assert runs["cp/uniform/seed0"].registry_name == "uniform"
    assert RunSpec.from_dict(run.to_dict()) == run


@pytest.mark.parametrize("name", ["smoke", "standard", "full"])
def test_builtin_suites_round_trip(name, tmp_path):
    assert name in list_suites()
    suite = get_suite(name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_suite(suite))
    again = load_suite(path)
    assert again.tasks == suite.tasks and again.methods == suite.methods and again.seeds == suite.seeds
    assert [r.config_hash() for r in expand_runs(again)] == [r.config_hash() for r in expand_runs(suite)]


def test_hash_ignores_notes_and_new_defaults():
    run = expand_runs(get_suite("standard"))[0]
    noted = dataclasses.replace(run, task=dataclasses.replace(run.task, notes="other words"))
    assert noted.config_hash() == run.config_hash()
    # a field at its default is left out, so a field added later with a default keeps old hashes
    canon = run.canonical()
    assert "reward" not in canon["task"] and "imports" not in canon["task"] and "base_method" not in canon
    delayed = dataclasses.replace(run, task=dataclasses.replace(run.task, reward="delayed:10"))
    assert delayed.config_hash() != run.config_hash()
