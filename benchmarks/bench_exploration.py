"""Speed of the exploration bonuses: E3B's batched update, and each bonus's share of PPO wall time.

    .venv/bin/python benchmarks/bench_exploration.py [--repeat 7] [--steps 16384] [--threads 1]

1. **E3B per-step update, vectorized vs a per-env loop.** One time step of E3B for E envs is a
   bonus ``phi^T C^{-1} phi`` and a Sherman-Morrison update of each env's ``C^{-1}`` (d x d). The
   batched kernel (``creditlab.exploration.functional.sherman_morrison_kernel``: one ``bmm`` and one
   ``baddbmm`` over ``[E, d, d]``) is timed against the per-env Python loop of the e3b actors
   (``mv``, ``dot``, ``outer``-and-add per env), on the same tensors, ``--repeat`` times each,
   alternating; the ratio loop/vectorized is printed as median [min, max] over the repeats.
2. **Bonus overhead in training.** A short PPO run (MiniGrid MultiRoom-N4-S5-v1, 8 envs, 128 steps
   per env per rollout, one torch thread) per bonus, next to a run without a bonus, in the same
   process: printed are the callback's share of the training wall time (its own timer) and the
   wall time relative to the no-bonus run. The issue's target is a share <= 20%.

The 5-min load average is printed: the machine is shared, so compare ratios within one run, not
absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from creditlab.exploration.functional import sherman_morrison_kernel


def loop_step(cinv: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """The per-env reference (e3b's actor code, once per env)."""
    out = torch.empty(phi.shape[0])
    for e in range(phi.shape[0]):
        u = torch.mv(cinv[e], phi[e])
        b = torch.dot(phi[e], u)
        cinv[e].add_(torch.outer(u, u), alpha=-1.0 / (1.0 + float(b)))
        out[e] = b
    return out


def time_steps(fn, cinv: torch.Tensor, phis: torch.Tensor) -> float:
    t0 = time.perf_counter()
    for k in range(phis.shape[0]):
        fn(cinv, phis[k])
    return (time.perf_counter() - t0) / phis.shape[0]


def bench_e3b(repeat: int, steps: int) -> None:
    print(f"\nE3B update per time step (float32, {steps} steps per timing, {repeat} repeats, alternating)")
    print(f"{'envs':>5}{'d':>6}{'vectorized (us)':>18}{'per-env loop (us)':>20}{'loop / vectorized':>28}")
    rng = np.random.default_rng(0)
    for e, d in ((8, 64), (8, 128), (16, 128), (8, 512), (32, 128), (8, 1024)):
        phis = torch.from_numpy(rng.normal(size=(steps, e, d)).astype(np.float32)) / np.sqrt(d)
        fast, slow = [], []
        for _ in range(repeat):
            c1 = torch.eye(d).repeat(e, 1, 1) * 10.0
            c2 = c1.clone()
            fast.append(time_steps(lambda c, p: sherman_morrison_kernel(c, p, None), c1, phis))
            slow.append(time_steps(loop_step, c2, phis))
            if not torch.allclose(c1, c2, rtol=1e-3, atol=1e-4):
                raise AssertionError("vectorized and per-env updates disagree")
        ratio = np.asarray(slow) / np.asarray(fast)
        print(
            f"{e:5d}{d:6d}{np.median(fast) * 1e6:18.1f}{np.median(slow) * 1e6:20.1f}"
            f"{np.median(ratio):12.2f}x [{ratio.min():.2f}, {ratio.max():.2f}]"
        )


def bench_overhead(steps: int, methods: list[str]) -> None:
    """Each bonus through the benchmark's own path (the SB3 runner with the bonus callback)."""
    from creditlab.bench.config import suite_from_dict
    from creditlab.bench.runner import execute_run
    from creditlab.bench.suites import expand_runs

    task = "MiniGrid-MultiRoom-N4-S5-v1"
    agent = {
        "algo": "ppo",
        "n_envs": 8,
        "normalize": "obs",
        "hyperparams": {"n_steps": 128, "batch_size": 256, "n_epochs": 4, "gamma": 0.99, "ent_coef": 0.01},
    }
    suite = suite_from_dict(
        {
            "name": "overhead",
            "seeds": 1,
            "methods": methods,
            "tasks": [
                {
                    "name": "multiroom",
                    "env": task,
                    "family": "minigrid",
                    "steps": steps,
                    "eval_every": steps,
                    "eval_episodes": 1,
                    "agent": agent,
                    "dense_twin": False,
                    "state_key": "pos",
                }
            ],
        }
    )
    print(f"\nBonus overhead in PPO training ({task}, {steps:,} steps, 8 envs x 128 steps, 1 torch thread)")
    print(f"{'bonus':<22}{'train (s)':>10}{'steps/s':>10}{'callback share':>16}{'train / no bonus':>17}")
    base = None
    for run in [r for r in expand_runs(suite) if r.method != "dense"]:
        out = execute_run(run.to_dict())
        if out["status"] != "ok":
            raise RuntimeError(out["error"])
        m = out["metrics"]
        wall = m["time/train_seconds"]
        base = wall if run.method == "episodic" else base
        name = "none" if run.method == "episodic" else run.method
        print(
            f"{name:<22}{wall:10.1f}{m['steps'] / wall:10.0f}"
            f"{m.get('exploration/time_share', 0.0):15.1%}{wall / base:16.2f}x",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--e3b-steps", type=int, default=200, help="time steps per E3B timing")
    p.add_argument("--steps", type=int, default=16_384, help="PPO steps per overhead run (0 skips the training part)")
    p.add_argument(
        "--methods", default="episodic_count,global_count,episodic_x_global,episodic_plus_global,rnd,noveld,e3b"
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch threads {args.threads}, load average (5 min) {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores, torch {torch.__version__}"
    )
    bench_e3b(args.repeat, args.e3b_steps)
    if args.steps:
        bench_overhead(args.steps, args.methods.split(","))


if __name__ == "__main__":
    main()
