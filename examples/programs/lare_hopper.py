"""LaRe end to end on episodic Hopper-v5: sandboxed latent factors + RRD decoder, next to RRD on raw (s, a).

    nice -n 10 .venv/bin/python examples/programs/lare_hopper.py --out results/lare_hopper.json
    .venv/bin/python examples/programs/lare_hopper.py --quick        # 20k steps, 1 seed: a smoke run

The factor function is ``examples/programs/hopper_factors/program.py`` (hand-written in the
style of a LaRe answer; see its header). It never runs in this process: the LaRe decoder calls
:func:`creditlab.programs.lare_features`, a batched callable backed by a sandboxed worker.

Methods, all PPO on the episodic task (the return is paid at the last step) with the same
seeds and budget:

* ``lare``: :class:`creditlab.credit.LaReAssigner` on the program's factors phi(s_t, a_t) (RRD loss,
  bias-corrected), LaRe's MuJoCo setting;
* ``lare_next``: the same factors of the next state, phi(s_{t+1}, a_t) (LaRe's ``use_next_state``);
* ``rrd``: :class:`creditlab.credit.RRDAssigner` on raw (s, a, s' - s) -- LaRe's fallback;
* ``episodic``: no credit assignment (lower anchor);
* ``dense``: the task's own dense reward (upper anchor, not available to methods).

Results (one JSON record per run, written atomically after each run; finished runs are skipped
on restart): final deterministic evaluation return on the true reward (10 episodes), the
evaluation curve, credit quality (per-episode Pearson correlation of assigned vs hidden true
per-step rewards, mean over the last quarter of training), wall time and the share spent in
credit assignment, and the time spent inside the sandbox.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from creditlab.atomic import write_json

HERE = Path(__file__).resolve().parent
PROGRAM = HERE / "hopper_factors"


class TimedFeatures:
    """Wrap the sandboxed phi to count calls, rows and seconds (the sandbox's cost in the run)."""

    def __init__(self, phi):
        self.phi = phi
        self.calls = 0
        self.rows = 0
        self.seconds = 0.0
        self.needs_next_observations = phi.needs_next_observations
        self.__name__ = phi.__name__

    def __call__(self, observations, actions, next_observations=None):
        t0 = time.perf_counter()
        out = self.phi(observations, actions, next_observations)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.rows += int(observations.shape[0])
        return out


def run_one(method: str, seed: int, timesteps: int, eval_every: int) -> dict:
    import torch

    from creditlab.credit import LaReAssigner, RRDAssigner
    from creditlab.integrations.sb3 import RunConfig, train
    from creditlab.programs import lare_features, load_program

    torch.set_num_threads(1)
    cfg = RunConfig(
        "Hopper-v5",
        reward="dense" if method == "dense" else "episodic",
        total_timesteps=timesteps,
        n_envs=8,
        seed=seed,
        normalize_observations=True,
        normalize_rewards=method in ("dense", "episodic"),
        eval_every=eval_every,
        eval_episodes=10,
    )
    extra: dict = {}
    phi = None
    if method in ("lare", "lare_next"):
        program = load_program(PROGRAM)
        phi = TimedFeatures(lare_features(program, state="next" if method == "lare_next" else "current"))
        extra["sandbox_layers"] = phi.phi.sandbox.layers
        extra["program_sha256"] = program.sha256
        extra["program_origin"] = program.origin
        assigner = LaReAssigner(features=phi, seed=seed)
    elif method == "rrd":
        assigner = RRDAssigner(seed=seed)
    else:
        assigner = None
    try:
        res = train(cfg, assigner=assigner)
    finally:
        if phi is not None:
            phi.phi.close()
    rec = {
        "method": method,
        "seed": seed,
        "timesteps": timesteps,
        **res.record(),
        "config": cfg.to_dict(),
        **extra,
    }
    if phi is not None:
        rec["sandbox"] = {
            "calls": phi.calls,
            "rows": phi.rows,
            "seconds": phi.seconds,
            "rows_per_second": phi.rows / phi.seconds if phi.seconds else None,
        }
    return rec


def _save(path: Path, data: dict) -> None:
    write_json(path, data, indent=1)


def summarize(runs: list[dict]) -> str:
    lines = [
        "| method | seeds | final eval return (mean +/- std over seeds) | per seed | credit quality (Pearson) | credit share of wall time | wall min/run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in ("lare", "lare_next", "rrd", "episodic", "dense"):
        rs = [r for r in runs if r["method"] == method]
        if not rs:
            continue
        finals = np.array([r["final_eval_return"] for r in rs])
        pear = [
            q
            for r in rs
            if (q := r["metrics"].get("quality/pearson_last", r["metrics"].get("quality/pearson"))) is not None
        ]
        share = [
            r["metrics"].get("credit/overhead_pct") for r in rs if r["metrics"].get("credit/overhead_pct") is not None
        ]
        wall = np.mean([r["metrics"]["time/wall_seconds"] for r in rs]) / 60
        lines.append(
            f"| {method} | {len(rs)} | {finals.mean():.0f} +/- {finals.std():.0f} | {', '.join(f'{v:.0f}' for v in finals)} | "
            f"{np.mean(pear):.2f} | {np.mean(share):.0f}% | {wall:.1f} |"
            if pear
            else f"| {method} | {len(rs)} | {finals.mean():.0f} +/- {finals.std():.0f} | {', '.join(f'{v:.0f}' for v in finals)} | - | - | {wall:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/lare_hopper.json")
    ap.add_argument("--timesteps", type=int, default=300_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["lare", "rrd", "episodic", "dense"])
    ap.add_argument("--eval-every", type=int, default=50_000)
    ap.add_argument("--quick", action="store_true", help="20k steps, seed 0, lare and rrd only")
    args = ap.parse_args()
    if args.quick:
        args.timesteps, args.seeds, args.methods, args.eval_every = 20_000, [0], ["lare", "rrd"], 0
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"runs": []}
    from creditlab.bench.runner import git_commit, package_versions

    data["environment"] = {"versions": package_versions(), "git": git_commit()}
    for seed in args.seeds:
        for method in args.methods:
            if any(
                r["method"] == method and r["seed"] == seed and r["timesteps"] == args.timesteps for r in data["runs"]
            ):
                continue
            t0 = time.perf_counter()
            rec = run_one(method, seed, args.timesteps, args.eval_every)
            data["runs"].append(rec)
            _save(out, data)
            print(
                f"{method:9s} seed {seed}: final eval return {rec['final_eval_return']:8.1f}  "
                f"pearson {rec['metrics'].get('quality/pearson', float('nan')):.3f}  ({(time.perf_counter() - t0) / 60:.1f} min)",
                flush=True,
            )
    runs = [r for r in data["runs"] if r["timesteps"] == args.timesteps]
    print(summarize(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
