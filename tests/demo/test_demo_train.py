"""The demo trainer: credit adapters, the clipped loss, one iteration per method, resume, sweep, CLI."""

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import creditlab
from creditlab.errors import RangeError
from creditlab.llm import gigpo, igpo
from creditlab_demo.experiment import load_results, run_config
from creditlab_demo.train import TrainConfig, Trainer, policy_loss, turn_advantages

torch.set_num_threads(1)

TINY = {"d_model": 16, "n_heads": 2, "d_ff": 32, "groups": 3, "group_size": 4, "minibatches": 2, "eval_episodes": 8}


def tiny(env="secret", method="grpo", **kw):
    env_kwargs = {"n": 4, "max_turns": 3} if env == "secret" else {"spots": 1, "pool": 1, "max_turns": 10}
    return TrainConfig.from_dict({"env": env, "env_kwargs": env_kwargs, "method": method, **TINY, **kw})


def test_policy_loss_hand_computed():
    # token 0: ratio 1.5, A = +1 -> min(1.5 * 1, 1.2 * 1) = 1.2
    # token 1: ratio 0.5, A = -2 -> min(0.5 * -2, 0.8 * -2) = min(-1.0, -1.6) = -1.6
    # token 2: masked out (an observation token). loss = -(1.2 - 1.6) / 2 = 0.2
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 9.0]]))
    adv = torch.tensor([[1.0, -2.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    loss, info = policy_loss(new, old, adv, mask, clip=0.2)
    assert math.isclose(float(loss), 0.2, rel_tol=1e-6)
    assert info["loss/clipfrac"] == 1.0  # both response tokens are outside [0.8, 1.2]


def test_policy_loss_gradient_is_the_policy_gradient_at_ratio_one():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = policy_loss(lp, lp.detach(), torch.tensor([[3.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool), clip=0.2)
    loss.backward()
    # d/dlp of -(ratio * A) / 2 at ratio 1 = -A / 2
    assert torch.allclose(lp.grad, torch.tensor([[-1.5, 0.5]]))


@pytest.fixture(scope="module")
def batch():
    trainer = Trainer(tiny(method="igpo", env_kwargs={"n": 4, "max_turns": 3, "early_guess": True}, groups=4))
    rollout, group_ids = trainer.collect()
    return trainer, rollout, group_ids


def test_grpo_credit_is_the_episode_advantage_on_every_turn(batch):
    trainer, rollout, group_ids = batch
    adv, metrics = turn_advantages("grpo", rollout, group_ids, trainer.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", creditlab.DegenerateGroupWarning)
        expected = creditlab.grpo(rollout.success.double().numpy(), group_ids).advantages
    for b in range(adv.shape[0]):
        n = int(rollout.num_turns[b])
        assert torch.allclose(adv[b, :n], torch.full((n,), float(expected[b])))
        assert (adv[b, n:] == 0).all()
    # The estimator's diagnostics are passed through under "credit/" (degenerate groups are counted, not warned).
    assert metrics and all(k.startswith("credit/") for k in metrics)


def test_gigpo_credit_puts_the_outcome_on_the_last_turn(batch):
    trainer, rollout, group_ids = batch
    adv, _ = turn_advantages("gigpo", rollout, group_ids, trainer.config)
    b, t = rollout.turn_mask.shape
    step_rewards = np.zeros((b, t))
    for i in range(b):
        step_rewards[i, int(rollout.num_turns[i]) - 1] = float(rollout.success[i])
    direct = gigpo(
        rollout.success.double().numpy(),
        step_rewards,
        rollout.anchors.numpy(),
        group_ids,
        mask=rollout.turn_mask.numpy(),
        gamma=0.95,
    )
    assert np.allclose(adv.numpy(), direct.advantages, atol=1e-6)


def test_igpo_credit_uses_the_rollout_beliefs(batch):
    trainer, rollout, group_ids = batch
    assert rollout.beliefs is not None and rollout.beliefs.shape == (
        rollout.turn_mask.shape[0],
        rollout.turn_mask.shape[1] + 1,
    )
    adv, _ = turn_advantages("igpo", rollout, group_ids, trainer.config)
    direct = igpo(
        rollout.beliefs.double().numpy(), rollout.success.double().numpy(), group_ids, mask=rollout.turn_mask.numpy()
    )
    assert np.allclose(adv.numpy(), direct.advantages, atol=1e-6)


@pytest.mark.parametrize(
    ("env", "method"), [("secret", "grpo"), ("secret", "igpo"), ("keydoor", "gigpo"), ("keydoor", "grpo")]
)
def test_one_iteration_updates_the_policy(env, method):
    trainer = Trainer(tiny(env, method, lr=1e-2))
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    # Train until some group has a non-zero advantage (at most a few iterations on these tiny tasks).
    for _ in range(5):
        metrics = trainer.train_iteration()
        if metrics["advantages/token_abs_mean"] > 0:
            break
    assert metrics["advantages/token_abs_mean"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    for key in ("train/success", "loss/policy", "loss/entropy", "loss/approx_kl", "time/rollout"):
        assert math.isfinite(metrics[key]), key
    ev = trainer.evaluate()
    assert 0.0 <= ev["eval/success"] <= 1.0 and 0.0 <= ev["eval/greedy_success"] <= 1.0


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    cfg = tiny("keydoor", "gigpo", iterations=3, eval_every=2)
    straight = Trainer(cfg)
    straight.run()
    ckpt = tmp_path / "ckpt.pt"
    first = Trainer(cfg)
    first.run(checkpoint=ckpt, stop_after=2)
    assert first.iteration == 2 and ckpt.exists()
    resumed = Trainer(cfg)
    resumed.run(checkpoint=ckpt)
    assert resumed.iteration == 3
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    assert strip(straight.evals) == strip(resumed.evals)
    assert strip(straight.history) == strip(resumed.history)


def test_run_config_writes_the_result_once_and_resumes(tmp_path):
    cfg = tiny(iterations=3, eval_every=1)
    run_dir = tmp_path / "secret" / "grpo" / "seed0"
    assert run_config(cfg, run_dir, stop_after=1) is None  # interrupted: checkpoint, no result
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()
    result = run_config(cfg, run_dir)
    assert [e["iteration"] for e in result["evals"]] == [0.0, 1.0, 2.0, 3.0]
    assert len(result["history"]) == 3 and result["environment"]["torch"] == torch.__version__
    mtime = (run_dir / "result.json").stat().st_mtime_ns
    again = run_config(cfg, run_dir)  # complete: read back, not retrained
    assert again["final"] == result["final"] and (run_dir / "result.json").stat().st_mtime_ns == mtime
    rows = load_results(tmp_path)
    assert [(r["task"], r["method"], r["seed"]) for r in rows] == [("secret", "grpo", 0)]
    assert not list(run_dir.glob("*.tmp*"))


def test_checkpoint_of_another_config_is_refused(tmp_path):
    ckpt = tmp_path / "c.pt"
    Trainer(tiny(iterations=1)).run(checkpoint=ckpt)
    with pytest.raises(creditlab.CreditlabError, match="different TrainConfig"):
        Trainer(tiny(iterations=1, lr=0.5)).run(checkpoint=ckpt)


def test_train_config_validation():
    with pytest.raises(RangeError, match="method must be one of"):
        tiny(method="ppo")
    with pytest.raises(RangeError, match="must divide groups"):
        tiny(minibatches=5)
    with pytest.raises(RangeError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"env": "secret", "learning_rate": 1.0})
    with pytest.raises(RangeError, match="group_size must be >= 2"):
        tiny(group_size=1)
    with pytest.raises(RangeError, match="spots <= pool"):
        TrainConfig(env="keydoor", env_kwargs={"spots": 9, "pool": 3})


def test_cli_sweep_and_report(tmp_path, capsys):
    from creditlab.cli import main

    out, docs = tmp_path / "runs", tmp_path / "docs"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "iterations": 2, "eval_every": 1}.items()]
    argv = [
        "demo",
        "all",
        "--tasks",
        "secret",
        "--seeds",
        "0",
        "1",
        "--out",
        str(out),
        "--docs",
        str(docs),
        "--nice",
        "0",
        "--quiet",
        *sets,
    ]
    assert main(argv) == 0
    table = (docs / "results.md").read_text()
    for method in ("grpo", "igpo"):
        assert f"| secret | {method} | 2 |" in table
    assert (docs / "secret.png").stat().st_size > 1000
    summary = json.loads((docs / "results.json").read_text())
    assert {r["method"] for r in summary["rows"]} == {"grpo", "igpo"}
    (cmp,) = summary["comparisons"]  # igpo vs grpo, 2 seeds each: statistics, no verdict
    assert (cmp["method"], cmp["baseline"]) == ("igpo", "grpo")
    assert cmp["final_success"]["verdict"] == "too few seeds (2 vs 2; need 5)"
    assert "| secret | igpo vs grpo | 2 vs 2 |" in table
    assert "| secret | grpo |" in capsys.readouterr().out
    assert main(["demo", "show", str(out / "secret" / "igpo" / "seed1"), "--episodes", "2"]) == 0
    shown = capsys.readouterr().out
    assert "episode 1:" in shown and "> less" in shown and "> guess" in shown and "<bos> secret below 16" in shown
    # `python -m creditlab_demo report` reads the same runs.
    proc = subprocess.run(
        [sys.executable, "-m", "creditlab_demo", "report", "--out", str(out), "--docs", str(tmp_path / "d2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d2" / "results.md").read_text() == table


def test_compare_uses_the_benchmark_statistics_and_the_seed_rule():
    from creditlab_demo.report import compare, comparison_table

    def row(method, finals, aucs):
        return {"task": "secret", "method": method, "final_success_per_seed": finals, "auc_per_seed": aucs}

    # final: igpo beats grpo on every pair of seeds -> P = 1; 5 seeds each -> a verdict.
    # auc: the same values on both sides -> P = 0.5, "no better (within noise)".
    rows = [
        row("grpo", [0.20, 0.22, 0.24, 0.26, 0.28], [0.1] * 5),
        row("igpo", [0.30, 0.32, 0.34, 0.36, 0.38], [0.1] * 5),
        row("gigpo", [0.30, 0.32], [0.1, 0.1]),
    ]
    igpo, gigpo = compare(rows, reps=200)
    f, a = igpo["final_success"], igpo["auc"]
    assert f["p_improvement"][0] == 1.0 and f["verdict"] == "better"
    # IQM of 5 values: the middle 3 after trimming 25 % per side (rliable's scipy trim_mean): 0.34
    assert abs(f["iqm"][0] - 0.34) < 1e-12 and abs(f["baseline_iqm"][0] - 0.24) < 1e-12
    assert f["iqm"][1] <= f["iqm"][0] <= f["iqm"][2]
    assert a["p_improvement"][0] == 0.5 and a["verdict"] == "no better (within noise)"
    assert gigpo["final_success"]["verdict"] == "too few seeds (2 vs 5; need 5)"
    assert "| secret | igpo vs grpo | 5 vs 5 | 34.0 [" in comparison_table([igpo, gigpo])


def test_demo_package_exports():
    import creditlab_demo as demo

    for name in demo.__all__:
        assert getattr(demo, name) is not None
    assert Path(demo.__file__).parent.name == "creditlab_demo"


def test_demo_tasks_build_valid_configs():
    from creditlab_demo.experiment import TASKS

    for name, task in TASKS.items():
        for variant in task.variants:
            cfg = task.config(variant, seed=2)
            assert cfg.seed == 2 and cfg.method in ("grpo", "gigpo", "igpo"), (name, variant)
    assert TASKS["keydoor"].config("gigpo-gamma1", 0).gamma == 1.0
    with pytest.raises(RangeError, match="unknown variant"):
        TASKS["secret"].config("spa", 0)


def test_episodes_to_target_interpolates_between_evaluations():
    from creditlab_demo.report import episodes_to

    run = {
        "config": {"groups": 2, "group_size": 2},  # 4 episodes per iteration
        "evals": [
            {"iteration": 0, "eval/success": 0.0},
            {"iteration": 10, "eval/success": 0.4},
            {"iteration": 20, "eval/success": 0.8},
        ],
    }
    # 0.5 lies a quarter of the way from 0.4 (it 10) to 0.8 (it 20): iteration 12.5 -> 50 episodes
    assert episodes_to(run, 0.5) == 50.0
    assert episodes_to(run, 0.0) == 0.0
    assert episodes_to(run, 0.9) is None


def test_sweep_rejects_a_method_no_selected_task_offers(tmp_path):
    from creditlab_demo.experiment import run_sweep

    with pytest.raises(RangeError, match="igpo"):
        run_sweep(tmp_path, tasks=["keydoor"], methods=["igpo"], seeds=[0])
    assert not any(tmp_path.iterdir())  # nothing started


def test_demo_report_writes_into_the_run_folder_by_default(tmp_path, monkeypatch, capsys):
    # Run from a repository root, `creditlab demo report` used to overwrite docs/results/llm-demo.
    from creditlab.cli import main

    run_config(tiny(iterations=1, eval_every=1), tmp_path / "runs" / "llm-demo" / "secret" / "grpo" / "seed0")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "report"]) == 0
    assert (tmp_path / "runs" / "llm-demo" / "results.md").exists()
    assert (tmp_path / "runs" / "llm-demo" / "secret.png").exists()
    assert not (tmp_path / "docs").exists()
    assert main(["demo", "report", str(tmp_path / "empty")]) == 2  # the run folder is the argument
    assert "no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()


def test_demo_train_rejects_a_task_method_pair_that_does_not_go_together(capsys):
    from creditlab.cli import main

    # keydoor has no belief query: igpo used to start and crash inside the first rollout
    assert main(["demo", "train", "--env", "keydoor", "--method", "igpo", "--nice", "0"]) == 2
    err = capsys.readouterr().err
    assert "task 'keydoor' has no method 'igpo'" in err
    assert "keydoor: grpo, gigpo, gigpo-gamma1; secret: grpo, igpo; secret-free: grpo, igpo" in err
    with pytest.raises(RangeError, match="env 'keydoor' cannot"):
        TrainConfig(env="keydoor", method="igpo")  # the same pair through the Python API or --set method=igpo


def test_demo_train_uses_the_sweep_settings(tmp_path, capsys):
    from creditlab.cli import main
    from creditlab_demo.experiment import TASKS, task_config

    small = {**TINY, "iterations": 1, "eval_every": 1}
    sets = [f"--set={k}={v}" for k, v in small.items()]
    run = tmp_path / "run"
    assert main(["demo", "train", "--task", "secret", "--method", "igpo", "--out", str(run), "--nice", "0", *sets]) == 0
    config = json.loads((run / "result.json").read_text())["config"]
    assert config == task_config("secret", "igpo", 0, **small).to_dict()
    # the documented sweep: 16 numbers, 5 turns, Adam 3e-4, entropy bonus 0.01 (not the old 1e-3 / 0 / env defaults)
    assert config["env_kwargs"] == TASKS["secret"].env_kwargs == {"n": 16, "max_turns": 5}
    assert (config["lr"], config["entropy_coef"]) == (3e-4, 0.01)
    assert task_config("keydoor", "gigpo").to_dict() == TASKS["keydoor"].config("gigpo", 0).to_dict()
