"""LaRe with a program file: latent factors from a program folder, run in the sandbox, on episodic Hopper.

    python examples/lare_program.py                    # 30k PPO steps, LaRe and RRD, about 5-10 minutes
    python examples/lare_program.py --tiny             # seconds (what CI runs)
    python examples/lare_program.py --program my_prog  # your own folder from `creditlab program generate`

A program folder is what ``creditlab program generate SPEC --kind factors --out DIR`` writes:
``program.py`` (``evaluation_func(observation, action) -> list of [B, 1] factors``), ``program.json``
(its kind, sizes and hash) and ``provenance.json`` (the LLM conversation). This script uses
``examples/programs/hopper_factors``, hand-written in the style of a LaRe answer for
``examples/programs/hopper.yaml``; to ask a model for your own:

    creditlab llm serve --port 8000 &                                      # the shipped SmolLM2, or any OpenAI-compatible endpoint
    creditlab program generate examples/programs/hopper.yaml --kind factors --out my_prog \\
        --base-url http://127.0.0.1:8000/v1 --model smollm2

Steps:

1. check the program as ``creditlab program check`` does (static rules, then a probe batch run in
   the sandboxed worker): the factors it returns and their shapes;
2. train PPO on episodic Hopper-v5 with :class:`~creditlab.credit.LaReAssigner`, whose feature
   function is the program, called through the sandbox (``creditlab.programs.lare_features``),
   and with RRD on raw (s, a) for comparison; print the final true return, the credit's
   correlation with the hidden per-step reward and the time spent in the sandbox.

The benchmark takes the same folder as a method parameter (a suite file)::

    methods:
      - name: lare
        params: {features: examples/programs/hopper_factors}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


class Timed:
    """Count the sandboxed feature function's calls, rows and seconds."""

    def __init__(self, phi):
        self.phi, self.calls, self.rows, self.seconds = phi, 0, 0, 0.0
        self.needs_next_observations = phi.needs_next_observations
        self.__name__ = phi.__name__

    def __call__(self, observations, actions, next_observations=None):
        t0 = time.perf_counter()
        out = self.phi(observations, actions, next_observations)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.rows += int(observations.shape[0])
        return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    from creditlab.credit import LaReAssigner, RRDAssigner
    from creditlab.integrations.sb3 import RunConfig, train
    from creditlab.programs import check_program, lare_features, load_program, load_spec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--program",
        default=str(HERE / "programs" / "hopper_factors"),
        help="program folder (default: the Hopper factors)",
    )
    p.add_argument("--steps", type=int, default=30_000, help="PPO steps per run (default 30,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="seconds: 1,024 steps, 2 envs, LaRe only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    program = load_program(args.program)
    spec = load_spec(HERE / "programs" / "hopper.yaml")
    obs, act = spec.probe_batch(16, 0)
    report = check_program(program.code, "factors", obs, act)
    print(
        f"1. {args.program}: {program.kind}, {program.num_factors} factors, origin {program.origin}, sha256 {program.sha256[:12]}"
    )
    print(f"   check (static rules + a 16-row probe in the sandbox): ok={report.ok}, factors {report.num_factors}")
    if not report.ok:
        raise SystemExit("the program did not pass: " + "; ".join(report.problems))

    steps, n_envs = (1024, 2) if args.tiny else (args.steps, 8)
    cfg = dict(
        env_id="Hopper-v5",
        reward="episodic",
        total_timesteps=steps,
        n_envs=n_envs,
        seed=args.seed,
        eval_every=steps // 2,
        eval_episodes=2 if args.tiny else 10,
        normalize_observations=True,
        normalize_rewards=True,
        algo_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 2 if args.tiny else 10},
    )
    print(f"2. PPO on episodic Hopper-v5, {steps} steps, seed {args.seed}")
    results: dict[str, dict[str, float]] = {}
    methods = ["lare"] if args.tiny else ["lare", "rrd"]
    for method in methods:
        phi = None
        try:
            if method == "lare":
                phi = Timed(lare_features(program))
                assigner = LaReAssigner(features=phi, seed=args.seed)
            else:
                assigner = RRDAssigner(seed=args.seed)
            res = train(RunConfig(**cfg), assigner=assigner)
        finally:
            if phi is not None:
                phi.phi.close()
        row = {
            "final_return": res.final_eval_return,
            "quality/pearson": res.metrics.get("quality/pearson", float("nan")),
            "credit/updates": res.metrics.get("credit/updates", 0.0),
            "credit/overhead_pct": res.metrics["credit/overhead_pct"],
        }
        line = (
            f"   {method:>5}: final true return {res.final_eval_return:7.1f}, credit correlation with the hidden reward "
            f"{row['quality/pearson']:.2f}, {row['credit/updates']:.0f} reward-model updates, credit {row['credit/overhead_pct']:.0f} % "
            "of training time"
        )
        if phi is not None:
            row.update(
                {"sandbox/calls": float(phi.calls), "sandbox/rows": float(phi.rows), "sandbox/seconds": phi.seconds}
            )
            line += f"; sandbox: {phi.calls} calls, {phi.rows} rows, {phi.seconds:.1f} s"
        print(line)
        results[method] = row
    return results


if __name__ == "__main__":
    main()
