"""Per-step cost of the SB3 runner's callbacks: time in ``_on_step`` as a share of training time.

    nice -n 10 .venv/bin/python benchmarks/bench_sb3_callbacks.py [--steps 20480] [--tasks cartpole,hopper]

One PPO run per task through :func:`creditlab.integrations.sb3.train` (8 envs x 256 steps, one
torch thread, episodic reward, the ``uniform`` assigner: its fit/assign cost is negligible, so
what is measured is the bookkeeping the callbacks do on every vector step). Every callback's
``on_step`` is timed (``BaseCallback.on_step`` wrapped, per class); the table gives seconds, the
share of ``time/train_seconds`` (``learn`` minus evaluations) of the same run, and microseconds
per vector step. ``credit/overhead_pct`` (all credit work, including the rollout-end relabel) is
printed beside it. Compare shares within a run; absolute times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from creditlab.integrations.sb3 import RunConfig, train

TASKS = {
    "cartpole": dict(env_id="CartPole-v1"),
    "hopper": dict(env_id="Hopper-v5", normalize_observations=True, normalize_rewards=True),
}


def timed_run(task: str, steps: int) -> tuple[dict[str, float], dict[str, float], int]:
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    original = BaseCallback.on_step

    def on_step(self: BaseCallback) -> bool:
        if isinstance(self, CallbackList):
            return original(self)
        t0 = time.perf_counter()
        out = original(self)
        seconds[type(self).__name__] += time.perf_counter() - t0
        calls[type(self).__name__] += 1
        return out

    BaseCallback.on_step = on_step
    try:
        cfg = RunConfig(
            **TASKS[task],
            assigner="uniform",
            total_timesteps=steps,
            n_envs=8,
            eval_every=0,
            eval_episodes=2,
            algo_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 10},
        )
        res = train(cfg)
    finally:
        BaseCallback.on_step = original
    return dict(seconds), res.metrics, max(calls.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20_480)
    p.add_argument("--tasks", default="cartpole,hopper")
    args = p.parse_args()
    print(f"load average (1/5 min): {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f}")
    print("| task | callback | seconds | share of training time | us per vector step |")
    print("| --- | --- | --- | --- | --- |")
    for task in args.tasks.split(","):
        seconds, metrics, n = timed_run(task, args.steps)
        train_s = metrics["time/train_seconds"]
        for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
            print(f"| {task} | {name} | {s:.3f} | {100 * s / train_s:.2f} % | {1e6 * s / n:.1f} |")
        total = sum(seconds.values())
        print(f"| {task} | all `_on_step` | {total:.3f} | {100 * total / train_s:.2f} % | {1e6 * total / n:.1f} |")
        print(
            f"| {task} | (credit/overhead_pct, all credit work; training {train_s:.1f} s) | | {metrics['credit/overhead_pct']:.2f} % | |"
        )


if __name__ == "__main__":
    main()
