"""Size the multi-agent suite: throughput of parameter-shared PPO on MPE simple_spread and when the dense oracle separates.

One run of the SB3 runner on a PettingZoo team (creditlab.integrations.pettingzoo), one torch thread; prints each
evaluation as it happens (``EVAL agent-steps team-return cpu-seconds``) and a JSON summary at the end, with the
throughput in agent-steps per CPU-second (process time: on a shared machine wall time says little).

    nice -n 10 .venv/bin/python scripts/marl_feasibility.py --n 3 --reward dense --steps 1000000
    nice -n 10 .venv/bin/python scripts/marl_feasibility.py --n 3 --reward episodic --steps 1000000 \
        --env creditlab.bench.multiagent:spread_individual
    nice -n 10 .venv/bin/python scripts/marl_feasibility.py --n 3 --reward episodic --steps 100000 --assigner team_lare \
        --params '{"features": "creditlab.credit.multiagent:simple_spread_features"}'

Defaults are the multiagent suite's PPO (n_steps 100, batch 240, 10 epochs, lr 7e-4, ent 0.01, VecNormalize).
The outputs of the runs behind docs/credit.md ("Multi-agent") are in docs/results/multiagent/feasibility/.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="mpe2.simple_spread_v3:parallel_env", help="PettingZoo parallel-env factory")
    p.add_argument("--n", type=int, default=3, help="agents (and landmarks)")
    p.add_argument("--reward", default="episodic", choices=["episodic", "dense"])
    p.add_argument("--steps", type=int, default=300_000, help="agent-steps")
    p.add_argument("--assigner", default=None, help="a multi-agent credit assigner (registry name)")
    p.add_argument("--params", default="{}", help="assigner parameters (JSON)")
    p.add_argument("--n-envs", type=int, default=8, help="team copies")
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--evals", type=int, default=12, help="evaluations during training")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from creditlab.integrations.pettingzoo import PettingZooEnvs
    from creditlab.integrations.sb3 import RunConfig, train

    torch.set_num_threads(1)
    hp = {
        "n_steps": 100,
        "batch_size": 240,
        "n_epochs": 10,
        "learning_rate": args.lr,
        "ent_coef": 0.01,
        "gae_lambda": 0.95,
    }
    cfg = RunConfig(
        args.env,
        env_kwargs={"N": args.n, "max_cycles": 25},
        reward=args.reward,
        assigner=args.assigner,
        assigner_params=json.loads(args.params),
        total_timesteps=args.steps,
        n_envs=args.n_envs,
        eval_every=args.steps // args.evals,
        eval_episodes=20,
        gamma=0.99,
        seed=args.seed,
        normalize_observations=True,
        normalize_rewards=True,
        algo_kwargs=hp,
    )
    t0, c0 = time.time(), time.process_time()

    def show(ev, model) -> None:
        print("EVAL", ev.timesteps, round(ev.mean, 1), round(time.process_time() - c0, 1), flush=True)

    res = train(cfg, envs=PettingZooEnvs(), on_evaluation=show)
    wall, cpu = time.time() - t0, time.process_time() - c0
    episodes = res.train_episodes
    k = max(1, len(episodes) // 10)
    train_curve = [round(float(np.mean([r for _, r, _ in episodes[i : i + k]])), 1) for i in range(0, len(episodes), k)]
    summary = dict(
        env=args.env,
        N=args.n,
        reward=args.reward,
        assigner=args.assigner,
        steps=args.steps,
        hp=hp,
        wall=round(wall, 1),
        cpu=round(cpu, 1),
        cpu_steps_per_s=round(args.steps / cpu),
        evals=[round(x, 1) for x in res.eval_returns],
        train_curve=train_curve,
        metrics={k: round(v, 3) for k, v in res.metrics.items() if k.startswith(("quality", "credit/overhead"))},
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
