"""`creditlab bench` and `creditlab report` from the command line."""

import json

from creditlab.cli import main


def test_bench_dry_run_lists_runs(capsys):
    assert main(["bench", "--suite", "standard", "--tasks", "doorkey,hopper", "--seeds", "2", "--dry-run"]) == 0
    ids = {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()}
    # doorkey has no dense twin: every method but dense; hopper: all 7 (2 anchors + 5 assigners), 2 seeds each
    assert len(ids) == (6 + 7) * 2
    assert (
        "doorkey/dense/seed0" not in ids and {"hopper/dense/seed1", "doorkey/episodic/seed1", "hopper/rrd/seed0"} <= ids
    )
    assert (
        main(["bench", "--suite", "standard", "--tasks", "hopper", "--methods", "rrd", "--seeds", "0,4", "--dry-run"])
        == 0
    )
    ids = {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()}
    assert ids == {f"hopper/{m}/seed{s}" for m in ("episodic", "dense", "rrd") for s in (0, 4)}
    # a pettingzoo task's budget counts agent-steps, and the listing says so
    assert main(["bench", "--suite", "multiagent", "--tasks", "spread3", "--methods", "team_rrd", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "spread3/team_rrd/seed0\t900,000 agent-steps" in captured.out.splitlines()
    assert "15 runs, 13,500,000 agent-steps ->" in captured.err


def test_bench_then_report_no_ray(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(
        [
            "bench",
            "--suite",
            "smoke",
            "--tasks",
            "cartpole",
            "--methods",
            "uniform",
            "--seeds",
            "1",
            "--steps",
            "2048",
            "--no-ray",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["suite"] == "smoke" and set(manifest["runs"]) == {
        "cartpole/episodic/seed0",
        "cartpole/dense/seed0",
        "cartpole/uniform/seed0",
    }
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--title", "T"]) == 0
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# T")
    assert (tmp_path / "rep" / "figures" / "cartpole.png").exists()
    # issue 12: a report outside its sweep folder is not overwritten without --force; inside, it is rewritten
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--title", "U"]) == 2
    assert "already holds report.md, report.html, runs.jsonl; pass --force" in capsys.readouterr().err
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# T")
    assert main(["report", str(out), "--out", str(tmp_path / "rep"), "--title", "U", "--force"]) == 0
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# U")
    assert main(["report", str(out)]) == 0  # DIR/report again


def test_cli_errors(tmp_path, capsys):
    assert main(["bench", "--suite", "smoke", "--tasks", "nope", "--dry-run"]) == 2
    assert "no task(s) ['nope']" in capsys.readouterr().err
    assert main(["bench", "--methods", "no_such_method", "--dry-run"]) == 2
    assert "no_such_method" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_bench_env_id_quick_path_and_show_config(tmp_path, capsys):
    assert (
        main(
            [
                "bench",
                "--env-id",
                "CartPole-v1",
                "--reward",
                "delayed:5",
                "--steps",
                "2048",
                "--seeds",
                "1",
                "--methods",
                "uniform",
                "--show-config",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(text)
    # the printed suite is a valid suite file: run it
    out = tmp_path / "sweep"
    assert main(["bench", "--config", str(cfg), "--steps", "512", "--no-ray", "--no-report", "--out", str(out)]) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert set(manifest["runs"]) == {
        "cartpole-v1/episodic/seed0",
        "cartpole-v1/dense/seed0",
        "cartpole-v1/uniform/seed0",
    }
    result = json.loads((out / "runs" / "cartpole-v1" / "uniform" / "seed0" / "result.json").read_text())
    assert result["config"]["task"]["reward"] == "delayed:5" and result["config"]["task"]["steps"] == 512


def test_bench_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nseeds: 1\nmethods: [rrd]\ntasks:\n  - {name: a, env: CartPole-v1, steps: 10, eval_every: 5,\n"
        "     agent: {algo: ppo, hyperparams: {gamma: 0.99}}, rewrd: episodic}\n"
    )
    assert main(["bench", "--config", str(bad), "--dry-run"]) == 2
    assert "tasks[0].rewrd: unknown key" in capsys.readouterr().err
    assert main(["bench", "--reward", "delayed:3", "--dry-run"]) == 2
    assert "go with --env-id" in capsys.readouterr().err


def test_environment_typos_fail_before_any_run(capsys, tmp_path):
    # checked once, before the sweep (no run folder is created), with the fix in the message
    out = tmp_path / "sweep"
    assert main(["bench", "--env-id", "CartPol-v1", "--seeds", "1", "--no-ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'CartPol-v1' is not a registered Gymnasium id (did you mean 'CartPole-v1'" in err and not out.exists()
    assert main(["bench", "--env-id", "no_such_module_xyz:Env", "--dry-run"]) == 2
    assert "module 'no_such_module_xyz' cannot be imported" in capsys.readouterr().err
    assert main(["bench", "--env-id", "gymnasium.envs.classic_control:CartPoleEnvv", "--dry-run"]) == 2
    assert "has no attribute 'CartPoleEnvv'" in capsys.readouterr().err
    # a PettingZoo env given to --env-id: pointed to the pettingzoo family
    assert main(["bench", "--env-id", "mpe2.simple_spread_v3:parallel_env", "--dry-run"]) == 2
    assert "is a PettingZoo (multi-agent) env; a team needs a suite file task with family: pettingzoo" in (
        capsys.readouterr().err
    )


def test_every_shipped_suite_passes_the_environment_check():
    from creditlab.bench.config import get_suite
    from creditlab.bench.tasks import check_environment

    for name in ("smoke", "standard", "long", "exploration", "multiagent", "full"):
        for task in get_suite(name).tasks:
            check_environment(task)
