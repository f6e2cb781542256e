"""Logging where users look (issue 12): SB3's logger -> TensorBoard / W&B, bench --track, progress, torch threads."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from creditlab.credit import UniformAssigner
from creditlab.errors import PluginError, RangeError
from creditlab.integrations.sb3 import CreditAssignmentCallback, CreditReplayBuffer, RunConfig, make_env, train

TINY_PPO = dict(
    total_timesteps=512,
    n_envs=2,
    eval_every=256,
    eval_episodes=2,
    algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1},
)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_the_credit_metrics(tmp_path, one_torch_thread):
    res = train(
        RunConfig(
            "CartPole-v1", assigner="rrd", assigner_params={"subset_size": 8}, tensorboard_log=str(tmp_path), **TINY_PPO
        )
    )
    (run_dir,) = glob.glob(str(tmp_path / "PPO_*"))
    tb = scalars(run_dir)
    assert {
        "credit/loss",
        "credit/updates",
        "store/episodes",
        "quality/decomposition_error",
        "eval/mean_reward",
        "rollout/ep_rew_mean",
        "train/value_loss",
    } <= set(tb)
    # the logged values are the callback's, at the step of each rollout (2 rollouts of 2 x 128 steps)
    history = {int(h["timesteps"]): h for h in res.credit}
    assert [s for s, _ in tb["credit/loss"]] == sorted(history) == [256, 512]
    for step, value in tb["credit/loss"]:
        assert value == pytest.approx(history[step]["credit/loss"], rel=1e-6)
    # evaluations on the true reward: at 0 and 256 (rollout starts) and at the end (512)
    assert [v for _, v in tb["eval/mean_reward"]][-1] == pytest.approx(res.final_eval_return)


@pytest.mark.slow
def test_sac_buffer_metrics_reach_tensorboard(tmp_path, one_torch_thread):
    res = train(
        RunConfig(
            "Pendulum-v1",
            algo="sac",
            assigner="rrd",
            assigner_params={"subset_size": 8},
            total_timesteps=600,
            n_envs=1,
            eval_every=0,
            eval_episodes=1,
            tensorboard_log=str(tmp_path),
            algo_kwargs={"learning_starts": 200, "batch_size": 32, "policy_kwargs": {"net_arch": [16]}},
        )
    )
    (run_dir,) = glob.glob(str(tmp_path / "SAC_*"))
    tb = scalars(run_dir)
    assert {"credit/loss", "store/episodes", "train/critic_loss"} <= set(tb)
    assert res.model.replay_buffer.metrics["credit/total_updates"] > 0
    assert all(np.isfinite(v) for _, v in tb["credit/loss"])


# ------------------------------------------------------------------------------ torch threads


class ThreadSpy(UniformAssigner):
    """Uniform credit that records the torch threads it ran with."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def fit(self, episodes=None, *, num_updates=None):
        self.seen.append(torch.get_num_threads())
        return super().fit(episodes, num_updates=num_updates)

    def assign(self, episodes):
        self.seen.append(torch.get_num_threads())
        return super().assign(episodes)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_callback_bounds_the_assigners_threads_and_restores_the_callers(two_threads):
    from stable_baselines3 import PPO

    env = make_env("CartPole-v1", n_envs=2, reward="episodic", seed=0)
    for threads, expected in ((1, 1), (None, 2)):
        spy = ThreadSpy()
        model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0)
        model.learn(128, callback=CreditAssignmentCallback(spy, torch_threads=threads))
        assert spy.seen and set(spy.seen) == {expected}
        assert torch.get_num_threads() == 2  # the caller's setting, restored
    with pytest.raises(RangeError, match="torch_threads"):
        CreditAssignmentCallback(ThreadSpy(), torch_threads=0)


def test_replay_buffer_bounds_the_assigners_threads(two_threads):
    from stable_baselines3 import SAC

    spy = ThreadSpy()
    env = make_env("Pendulum-v1", n_envs=1, reward="episodic", seed=0)
    model = SAC(
        "MlpPolicy",
        env,
        learning_starts=200,
        batch_size=16,
        policy_kwargs={"net_arch": [8]},
        seed=0,
        replay_buffer_class=CreditReplayBuffer,
        replay_buffer_kwargs={"assigner": spy},
    )
    model.learn(260)
    assert spy.seen and set(spy.seen) == {1}
    assert torch.get_num_threads() == 2
    with pytest.raises(RangeError, match="torch_threads"):
        CreditReplayBuffer(100, env.observation_space, env.action_space, assigner=spy, torch_threads=True)


# ------------------------------------------------------------------------------ creditlab bench --track


@pytest.fixture(autouse=True)
def _restore_import_path(monkeypatch):
    """`creditlab bench` puts the current folder on sys.path and PYTHONPATH (for user modules): undo it after each test."""
    import os

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))


def _bench(argv):
    from creditlab.cli import main

    return main(
        [
            "bench",
            "--env-id",
            "CartPole-v1",
            "--steps",
            "512",
            "--seeds",
            "1",
            "--methods",
            "uniform",
            "--no-ray",
            "--no-report",
            "--no-progress",
            *argv,
        ]
    )


@pytest.mark.slow
def test_bench_track_tensorboard_and_wandb_offline(tmp_path, monkeypatch, capsys, one_torch_thread):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # ignored: the run folder wins
    out = tmp_path / "sweep"
    assert _bench(["--track", "tensorboard,wandb", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[3/3]" in err and f"tensorboard --logdir {out / 'runs'}" in err
    for method in ("episodic", "dense", "uniform"):
        run = out / "runs" / "cartpole-v1" / method / "seed0"
        result = json.loads((run / "result.json").read_text())
        assert "tracking_files" not in result
        tb = scalars(run / "tensorboard")
        assert tb["bench/final_return"][-1][1] == pytest.approx(result["metrics"]["final_return"])
        assert "eval/mean_reward" in tb and "rollout/ep_rew_mean" in tb
        (wandb_file,) = glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))
        data = Path(wandb_file).read_bytes()
        assert b"bench/final_return" in data and b"eval/mean_reward" in data
        if method == "uniform":
            assert "credit/frac_unassigned" in tb and b"credit/frac_unassigned" in data
    assert not (tmp_path / "elsewhere").exists()


class RemoteLikeExecutor:
    """In-process, but its workers do not share the sweep folder's disk (as a Ray cluster joined by address)."""

    name = "remote-like"
    slots = 1
    shares_disk = False

    def imap_unordered(self, fn, items, on_start=None):
        for item in items:
            assert item["tracking"]["dir"] is None  # the worker is not told the driver's folder
            if on_start is not None:
                on_start(item)
            yield item, fn(item)


@pytest.mark.slow
def test_remote_workers_return_their_logs_to_the_driver(tmp_path, one_torch_thread):
    from creditlab.bench import expand_runs, run_sweep
    from creditlab.bench.cli import env_suite

    runs = expand_runs(env_suite("CartPole-v1", steps=512).select(methods=[], seeds=[0]))
    summary = run_sweep(runs, tmp_path, executor=RemoteLikeExecutor(), track=["tensorboard"])
    assert len(summary.done) == 2
    for r in runs:
        folder = tmp_path / "runs" / r.run_id
        assert "tracking_files" not in json.loads((folder / "result.json").read_text())
        assert "bench/final_return" in scalars(folder / "tensorboard")


def test_unknown_or_missing_tracker_is_a_named_error(tmp_path, monkeypatch, capsys):
    assert _bench(["--track", "mlflow", "--out", str(tmp_path / "a")]) == 2
    assert "--track must name trackers from tensorboard, wandb; got 'mlflow'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    assert _bench(["--track", "wandb", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "needs the wandb package" in err and "pip install wandb" in err
    assert not (tmp_path / "b" / "runs").exists()  # refused before any run
    with pytest.raises(PluginError, match="wandb"):
        from creditlab.integrations.sb3.tracking import start_wandb

        start_wandb(tmp_path, project="p", name="n")


@pytest.mark.slow
def test_run_sweep_progress_is_opt_in(tmp_path, capsys, one_torch_thread):
    from creditlab.bench import expand_runs, run_sweep
    from creditlab.bench.cli import env_suite

    runs = expand_runs(env_suite("CartPole-v1", steps=256).select(methods=[], seeds=[0]))
    run_sweep(runs[:1], tmp_path / "quiet")
    assert capsys.readouterr().err == ""  # library calls print nothing by default
    events = []
    run_sweep(runs[:1], tmp_path / "shown", progress=True, on_event=events.append)
    err = capsys.readouterr().err
    assert "1/1 done" in err and "ETA" in err
    assert [e.kind for e in events] == ["plan", "start", "done"]
