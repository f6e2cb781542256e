"""Evidence for return decomposition with SB3 PPO on episodic-reward tasks (not run in CI).

    nice -n 10 .venv/bin/python scripts/evidence_decomposition.py            # all runs, then the report
    nice -n 10 .venv/bin/python scripts/evidence_decomposition.py --report   # only rebuild the report

Tasks: episodic CartPole-v1 and episodic Hopper-v5 (the episode's summed reward paid on its last
step; :class:`~creditlab.integrations.gymnasium.EpisodicReward`). Configurations, all SB3 PPO
with 8 envs x 256 steps per rollout, gamma 0.99, one torch thread:

* ``episodic``  -- the baseline: PPO on the episodic reward as is;
* ``dense``     -- the oracle: PPO on the task's own per-step reward;
* ``ircr``, ``rrd``, ``rudder``, ``lare`` -- PPO on credit-assigned rewards
  (:class:`~creditlab.integrations.sb3.CreditAssignmentCallback`); LaRe uses the hand-written
  factors of :mod:`creditlab.credit.features`.

Every run goes through the SB3 runner (:func:`creditlab.integrations.sb3.train`): its
evaluation (10 deterministic episodes on the true reward, the same start states at every
checkpoint, from step 0 every ``eval_every`` steps and at the end) and its metrics (credit
quality averaged over training as ``creditlab bench`` does; the report uses the last quarter of
training, ``quality/*_last``). Hopper runs use VecNormalize on observations and rewards (the
credit runs replace the rewards and scale the assigned ones the same way inside the callback).
Learned assigners
train on time-limit-truncated episodes too (``include_truncated=True``): the wrapper pays the
accumulated sum at a truncation, so their return is exact.

Each run's result is written atomically to ``<out>/runs/<task>/<config>/seed<k>.json`` with the
config, package versions and git commit; a re-run skips finished runs, so an interrupted sweep
resumes where it stopped. The report (``<out>/summary.md`` and ``summary.json``) gives per task
and configuration: the final deterministic evaluation return on the true reward (mean +/- std
over seeds), the fraction of the dense-vs-episodic gap recovered, credit quality against the
hidden per-step reward, and the reward model's share of the training wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from creditlab import atomic

TASKS = {
    "cartpole": dict(env_id="CartPole-v1", total_timesteps=100_000, normalize_observations=False, eval_every=25_000),
    "hopper": dict(env_id="Hopper-v5", total_timesteps=300_000, normalize_observations=True, eval_every=50_000),
}

CONFIGS: dict[str, dict[str, Any]] = {
    "episodic": dict(reward="episodic"),
    "dense": dict(reward="dense"),
    "ircr": dict(assigner="ircr", assigner_params={"include_truncated": True}),
    "rrd": dict(assigner="rrd", assigner_params={"include_truncated": True}),
    "rudder": dict(assigner="rudder", assigner_params={"include_truncated": True}, update_ratio=1 / 256),
    "lare": dict(assigner="lare", assigner_params={"include_truncated": True, "features": "@env"}),
}


def write_json(path: Path, data: Any) -> None:
    atomic.write_json(path, data, indent=1)


def provenance() -> dict[str, Any]:
    from creditlab.bench.runner import git_commit, package_versions

    return {"versions": package_versions(), "git": git_commit(), "cpu_count": os.cpu_count()}


def run_one(task: str, config: str, seed: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from creditlab.integrations.sb3 import RunConfig, train

    t = dict(TASKS[task])
    if task == "cartpole" and args.cartpole_steps:
        t["total_timesteps"] = args.cartpole_steps
    if task == "hopper" and args.hopper_steps:
        t["total_timesteps"] = args.hopper_steps
    c = json.loads(json.dumps(CONFIGS[config]))
    params = c.pop("assigner_params", {})
    if params.get("features") == "@env":
        params["features"] = t["env_id"]
    cfg = RunConfig(
        env_id=t["env_id"],
        total_timesteps=t["total_timesteps"],
        n_envs=8,
        seed=seed,
        gamma=0.99,
        normalize_observations=t["normalize_observations"],
        normalize_rewards=t["normalize_observations"],
        eval_every=t["eval_every"],
        eval_episodes=10,
        assigner_params=params,
        **c,
    )
    load0 = os.getloadavg()[1]
    res = train(cfg)
    hist = res.credit
    keep = hist[:: max(1, len(hist) // 50)]
    return {
        "task": task,
        "config": config,
        "seed": seed,
        "run_config": cfg.to_dict(),
        **res.record(),
        "credit_history": keep,
        "load_average_5min": [load0, os.getloadavg()[1]],
        "provenance": provenance(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def mean_std(xs: list[float]) -> tuple[float, float, int]:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt(m: float, s: float, n: int, digits: int = 0) -> str:
    if n == 0 or not math.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def _late_quality(metrics: dict[str, float], key: str) -> float:
    """Credit quality late in training: the last quarter's mean (older result files: the second half's)."""
    return metrics.get(f"quality/{key}_last", metrics.get(f"quality/{key}", float("nan")))


def report(out: Path) -> str:
    rows = []
    summary: dict[str, Any] = {}
    for task in TASKS:
        res = {
            c: [json.loads(p.read_text()) for p in sorted((out / "runs" / task / c).glob("seed*.json"))]
            for c in CONFIGS
        }
        ep = mean_std([r["final_eval_return"] for r in res["episodic"]])[0]
        de = mean_std([r["final_eval_return"] for r in res["dense"]])[0]
        summary[task] = {}
        for c, runs in res.items():
            if not runs:
                continue
            ev = mean_std([r["final_eval_return"] for r in runs])
            tr = mean_std([r["train_return"] for r in runs])
            gap = (
                [(r["final_eval_return"] - ep) / (de - ep) for r in runs]
                if math.isfinite(ep) and math.isfinite(de) and de != ep
                else []
            )
            gp = mean_std(gap)
            q = {
                k: mean_std([_late_quality(r["metrics"], k) for r in runs])
                for k in ("pearson", "spearman", "pearson_pooled", "decomposition_error")
            }
            ov = (
                mean_std([r["metrics"].get("credit/overhead_pct", float("nan")) for r in runs])
                if c not in ("episodic", "dense")
                else (float("nan"), 0.0, 0)
            )
            wall = mean_std([r["metrics"]["time/wall_seconds"] / 60 for r in runs])
            steps = runs[0]["run_config"]["total_timesteps"]
            summary[task][c] = {
                "seeds": [r["seed"] for r in runs],
                "total_timesteps": steps,
                "final_eval_return": ev[:2],
                "train_return": tr[:2],
                "gap_recovered": gp[:2],
                "quality": {k: v[:2] for k, v in q.items()},
                "overhead_pct": ov[:2],
                "wall_minutes": wall[:2],
                "eval_curve_mean": np.mean([r["eval_returns"] for r in runs], axis=0).tolist()
                if len({len(r["eval_returns"]) for r in runs}) == 1
                else None,
                "eval_timesteps": runs[0]["eval_timesteps"],
            }
            rows.append(
                f"| {TASKS[task]['env_id']} | {steps // 1000}k | {c} | {len(runs)} | {fmt(*ev)} | {fmt(*tr)} | {fmt(*gp, digits=2)} | "
                f"{fmt(*q['pearson'], digits=2)} | {fmt(*q['spearman'], digits=2)} | {fmt(*q['pearson_pooled'], digits=2)} | "
                f"{fmt(*q['decomposition_error'], digits=2)} | "
                f"{fmt(*ov, digits=1)} | {fmt(*wall, digits=1)} |"
            )
    head = (
        "| task | steps | config | seeds | eval return (true reward) | train return (last 100 ep.) | gap recovered | "
        "Pearson | Spearman | pooled Pearson | decomposition error | credit overhead % | wall (min) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    table = head + "\n" + "\n".join(rows) + "\n"
    write_json(out / "summary.json", summary)
    tmp = out / "summary.md"
    tmp.write_text(table)
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/results/decomposition")
    p.add_argument("--tasks", default="cartpole,hopper")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cartpole-steps", type=int, default=0, help="override the CartPole budget")
    p.add_argument("--hopper-steps", type=int, default=0, help="override the Hopper budget")
    p.add_argument("--report", action="store_true", help="only rebuild the report from finished runs")
    args = p.parse_args()
    out = Path(args.out)
    if not args.report:
        for task in args.tasks.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                for config in args.configs.split(","):
                    path = out / "runs" / task / config / f"seed{seed}.json"
                    if path.exists():
                        print(f"skip {path} (done)", flush=True)
                        continue
                    t0 = time.perf_counter()
                    result = run_one(task, config, seed, out, args)
                    write_json(path, result)
                    m = result["metrics"]
                    print(
                        f"{task} {config} seed {seed}: eval {result['final_eval_return']:.1f}, train {result['train_return']:.1f}, "
                        f"pearson {m.get('quality/pearson', float('nan')):.3f}, overhead {m['credit/overhead_pct']:.1f}%, "
                        f"{(time.perf_counter() - t0) / 60:.1f} min",
                        flush=True,
                    )
    print(report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
