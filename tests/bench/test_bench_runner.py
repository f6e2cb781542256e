"""The sweep runner on a toy task: in-process and on Ray, crash recording, kill-and-resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from creditlab.bench.executors import InProcessExecutor
from creditlab.bench.runner import execute_run, run_sweep
from creditlab.bench.store import ResultsStore
from creditlab.bench.suites import Suite, expand_runs
from tests.helpers.bench_toy import toy_suite, toy_task

ROOT = Path(__file__).resolve().parents[2]


def test_toy_sweep_two_methods_two_seeds(tmp_path):
    runs = expand_runs(toy_suite(steps=256))
    assert len(runs) == 4
    events = []
    t0 = time.perf_counter()
    summary = run_sweep(runs, tmp_path, executor=InProcessExecutor(), on_event=events.append, meta={"suite": "toy"})
    assert time.perf_counter() - t0 < 60
    assert sorted(summary.done) == sorted(r.run_id for r in runs) and not summary.failed
    assert [e.kind for e in events].count("start") == 4 and events[0].kind == "plan"
    results = ResultsStore(tmp_path).load_results()
    assert len(results) == 4
    for rec in results:
        m = rec["metrics"]
        # 256 steps with 2 envs x 64-step rollouts -> evaluations at 0, 128 and 256 steps
        assert rec["curve"]["x"] == [0, 128, 256]
        assert m["final_return"] == rec["curve"]["mean"][-1] and m["steps"] == 256
        assert m["time/train_seconds"] > 0 and m["gamma"] == 0.99
        assert rec["versions"]["stable-baselines3"] != "not installed" and "commit" in rec["git"]
    # resuming the same sweep runs nothing
    again = run_sweep(runs, tmp_path, executor=InProcessExecutor())
    assert again.done == [] and len(again.skipped) == 4


def test_same_seed_same_results_in_process(tmp_path):
    run = expand_runs(toy_suite(steps=256, seeds=(3,)))[0]
    a, b = execute_run(run.to_dict()), execute_run(run.to_dict())
    assert a["status"] == b["status"] == "ok"
    assert a["curve"] == b["curve"]


def test_crash_is_recorded_and_sweep_goes_on(tmp_path):
    broken = toy_task(name="broken", env_id="NoSuchEnv-v0")
    suite = Suite("toy", "", tasks=(broken, toy_task()), methods=("episodic", "dense"), seeds=(0,))
    summary = run_sweep(expand_runs(suite), tmp_path)
    assert sorted(summary.failed) == ["broken/dense/seed0", "broken/episodic/seed0"]
    assert sorted(summary.done) == ["toy/dense/seed0", "toy/episodic/seed0"]
    err = json.loads((tmp_path / "runs/broken/dense/seed0/error.json").read_text())
    assert err["status"] == "failed" and "NoSuchEnv" in err["traceback"] and "Traceback" in err["traceback"]
    assert len(ResultsStore(tmp_path).load_failures()) == 2


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from creditlab.bench.runner import run_sweep
    from creditlab.bench.suites import expand_runs
    from tests.helpers.bench_toy import toy_suite
    run_sweep(expand_runs(toy_suite(steps=1024, seeds=(0, 1, 2))), {out!r})
    """
)


def test_kill_midway_and_resume_loses_nothing(tmp_path):
    out = tmp_path / "sweep"
    script = _KILL_SCRIPT.format(root=str(ROOT), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(out.glob("runs/*/*/*/result.json"))) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("runs/*/*/*/result.json")}
    assert 2 <= len(before) < 6
    summary = run_sweep(expand_runs(toy_suite(steps=1024, seeds=(0, 1, 2))), out)
    assert len(summary.skipped) == len(before) and len(summary.done) == 6 - len(before)
    for p, (mtime, data) in before.items():  # finished runs were not redone
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    results = ResultsStore(out).load_results()
    assert sorted(r["run_id"] for r in results) == sorted({r["run_id"] for r in results})  # none twice
    assert len(results) == 6
    assert not list(out.glob("runs/**/.*tmp*"))


@pytest.fixture
def ray_env(monkeypatch):
    pytest.importorskip("ray")
    home = Path(tempfile.mkdtemp(prefix="crl-home-"))
    temp = Path(tempfile.mkdtemp(prefix="crl-ray-", dir="/tmp"))
    monkeypatch.setenv("HOME", str(home))  # anything Ray writes under ~ goes to a throwaway folder
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    yield temp, home
    for key in ("RAY_AUTH_MODE", "RAY_worker_niceness"):  # set by RayExecutor for its local Ray
        os.environ.pop(key, None)
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(temp, ignore_errors=True)


def test_ray_and_in_process_give_the_same_results(tmp_path, ray_env):
    from creditlab.bench.executors import RayExecutor

    temp, home = ray_env
    runs = expand_runs(toy_suite(steps=256, seeds=(0, 1)))
    run_sweep(runs, tmp_path / "local", executor=InProcessExecutor())
    with RayExecutor(num_cpus=2, temp_dir=str(temp)) as executor:
        assert executor.slots == 2
        summary = run_sweep(runs, tmp_path / "ray", executor=executor)
    assert len(summary.done) == 4
    local = {r["run_id"]: r for r in ResultsStore(tmp_path / "local").load_results()}
    remote = {r["run_id"]: r for r in ResultsStore(tmp_path / "ray").load_results()}
    assert local.keys() == remote.keys()
    for rid in local:
        assert local[rid]["curve"] == remote[rid]["curve"], rid
        assert local[rid]["metrics"]["final_return"] == remote[rid]["metrics"]["final_return"]
    assert {r["pid"] for r in remote.values()} != {os.getpid()}  # ran in Ray workers
    assert not (home / ".ray" / "auth_token").exists()  # local Ray ran with RAY_AUTH_MODE=disabled


def test_run_config_maps_a_spec_to_the_sb3_runner():
    from creditlab.bench.config import get_suite
    from creditlab.bench.training import run_config

    standard = get_suite("standard")
    umbrella = next(t for t in standard.tasks if t.name == "umbrella_length")
    cfg = run_config(expand_runs(toy_suite(seeds=(4,)))[0])  # the episodic anchor of the toy task
    assert (cfg.reward, cfg.seed, cfg.n_envs, cfg.gamma, cfg.eval_every, cfg.eval_at_start) == (
        "episodic",
        4,
        2,
        0.99,
        128,
        True,
    )
    assert cfg.algo_kwargs == {"n_steps": 64, "batch_size": 64, "n_epochs": 1}  # gamma is the config's own field
    assert cfg.env_id().observation_space.shape == (4,)  # the task's env factory
    dense = run_config(
        next(r for r in expand_runs(standard) if r.task == umbrella and r.method == "dense"),
        setting=umbrella.bsuite_settings[0],
        integration={"update_ratio": 0.5},
    )
    assert (dense.reward, dense.eval_every, dense.eval_at_start, dense.update_ratio) == ("dense", 0, False, 0.5)
    smoke = get_suite("smoke")
    assert smoke.tasks[0].eval_every == run_config(expand_runs(smoke)[0]).eval_every


def test_delayed_task_reward_reaches_every_method_but_the_dense_anchor():
    import dataclasses

    from creditlab.bench.training import run_config

    task = dataclasses.replace(toy_suite().tasks[0], reward="delayed:5")
    runs = expand_runs(toy_suite(tasks=(task,)).select(methods=["rrd"]))
    rewards = {r.method: run_config(r).reward for r in runs}
    assert rewards == {"episodic": "delayed:5", "dense": "dense", "rrd": "delayed:5"}
