"""Probe runs for designing the exploration suite: PPO with and without bonuses on candidate tasks.

Each (task, contexts, method, beta, seed) run trains PPO (one torch thread) and writes one JSON file
(per-episode training log, the callback's per-rollout metrics, wall time) into ``--out``; finished
runs are skipped, so an interrupted probe resumes. ``--summary`` prints, per configuration, the
steps at which the rolling success rate over 100 training episodes first reaches a threshold,
the final success rate and the throughput.

    nice -n 10 python scripts/probe_exploration.py --out runs/probe --tasks MiniGrid-MultiRoom-N2-S4-v0 \\
        --contexts inf,1 --methods none,episodic_x_global --seeds 0 --steps 200000
    python scripts/probe_exploration.py --out runs/probe --summary
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from creditlab.atomic import write_json
from creditlab.bench.exploration_tasks import (
    ExplorationRunConfig,
    deep_sea_size,
    deep_sea_solved_episode,
    steps_to_success,
    train_exploration,
)


def _contexts(text: str) -> int | None:
    return None if text in ("inf", "none", "-1") else int(text)


def _task(spec: str) -> tuple[str, dict]:
    """``ID`` or ``ID@key=value;key=value`` (MiniGrid keyword arguments, integer values)."""
    if "@" not in spec:
        return spec, {}
    env_id, rest = spec.split("@", 1)
    return env_id, {k: int(v) for k, v in (kv.split("=") for kv in rest.split(";"))}


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.tasks.split(","):
        task, env_kwargs = _task(spec)
        for ctx in args.contexts.split(","):
            nc = _contexts(ctx)
            if task.startswith("deep_sea/") and nc is not None:
                continue
            for method in args.methods.split(","):
                for beta in (float(b) for b in args.betas.split(",")):
                    for seed in (int(s) for s in args.seeds.split(",")):
                        tag = spec.replace("/", "_").replace("@", "_").replace(";", "_").replace("=", "")
                        name = f"{tag}__nc{ctx}__{method}__b{beta:g}__s{seed}__{args.steps}"
                        path = out / f"{name}.json"
                        if path.exists():
                            continue
                        cfg = ExplorationRunConfig(task, method=method, steps=args.steps, seed=seed, num_contexts=nc, beta=beta,
                                                   env_kwargs=env_kwargs)
                        t0 = time.time()
                        res = train_exploration(cfg)
                        write_json(path, {"config": res.config, "metrics": res.metrics, "history": res.history,
                                          "episodes": {k: v.tolist() for k, v in res.episodes.items()},
                                          "started": t0, "finished": time.time()})
                        print(name, json.dumps({k: round(v, 3) for k, v in res.metrics.items()}), flush=True)


def summary(args: argparse.Namespace) -> None:
    rows: dict[tuple, list[dict]] = {}
    for path in sorted(Path(args.out).glob("*.json")):
        d = json.loads(path.read_text())
        c = d["config"]
        kw = c.get("env_kwargs") or {}
        task = c["task_id"] + ("@" + ";".join(f"{k}={v}" for k, v in sorted(kw.items())) if kw else "")
        rows.setdefault((task, c["num_contexts"], c["method"], c["beta"], c["steps"]), []).append(d)
    print(f"{'task':60s} {'nc':>4s} {'method':22s} {'beta':>5s} {'steps':>7s} {'n':>2s} "
          f"{'reach50%':>16s} {'final succ':>10s} {'sps':>6s} {'share':>5s} {'uniq':>6s}")
    for (task, nc, method, beta, steps), ds in sorted(rows.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        reach = [steps_to_success(d["episodes"]["timestep"], d["episodes"]["return"], rate=args.threshold) for d in ds]
        succ = [d["metrics"]["success_rate_last"] for d in ds]
        sps = np.mean([d["metrics"]["time/steps_per_second"] for d in ds])
        share = np.nanmean([d["metrics"]["exploration/time_share"] for d in ds])
        uniq = np.mean([d["metrics"]["exploration/unique_states"] for d in ds])
        solved = [r for r in reach if np.isfinite(r)]
        rtxt = f"{len(solved)}/{len(ds)} med {np.median(solved)/1e3:.0f}k" if solved else f"0/{len(ds)}"
        extra = ""
        if task.startswith("deep_sea/"):
            eps = [deep_sea_solved_episode(np.asarray(d["episodes"]["bad"]) > 0) for d in ds]
            extra = f"  deep_sea N={deep_sea_size(task)} solved at episode {eps} (2^N+100 = {2 ** deep_sea_size(task) + 100})"
        print(f"{task:60s} {str(nc):>4s} {method:22s} {beta:5g} {steps:7d} {len(ds):2d} {rtxt:>16s} "
              f"{np.mean(succ):10.2f} {sps:6.0f} {share:5.2f} {uniq:6.0f}{extra}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default="MiniGrid-MultiRoom-N2-S4-v0")
    p.add_argument("--contexts", default="inf", help="comma list of level-set sizes; inf = unlimited")
    p.add_argument("--methods", default="none")
    p.add_argument("--betas", default="0.05")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--summary", action="store_true")
    p.add_argument("--threshold", type=float, default=0.5, help="rolling success rate that counts as reached")
    args = p.parse_args()
    summary(args) if args.summary else run(args)


if __name__ == "__main__":
    main()
