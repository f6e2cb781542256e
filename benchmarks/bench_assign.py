"""Speed of credit assignment: ``assign`` on 1M steps, and one reward-model update.

    .venv/bin/python benchmarks/bench_assign.py [--episodes 1000] [--steps 1000] [--threads 1]

Batch: ``episodes x steps`` Hopper-sized steps (11 observation values, 3 action values). Each
MLP assigner's batched ``assign`` is timed (best of ``--repeat``) and compared, in the same run,
with the obvious per-episode loop over the same trained model (one forward pass per episode):
the ratio is what batching buys. Also printed: uniform/IRCR (no model), RUDDER (LSTM, not an MLP
assigner), and the wall time of one gradient step of each reward model. The 5-min load average
is printed because the machine is shared; compare ratios within a run, not absolute times
across runs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from creditlab import Episodes
from creditlab.credit import IRCRAssigner, LaReAssigner, RDAssigner, RRDAssigner, RUDDERAssigner, UniformAssigner


def batch(n_ep: int, t: int, seed: int = 0) -> Episodes:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n_ep, t, 11)).astype(np.float32)
    obs[..., 0] = np.abs(obs[..., 0]) + 0.8  # healthy-looking heights for the Hopper features
    nobs = obs + 0.01 * rng.normal(size=obs.shape).astype(np.float32)
    acts = rng.uniform(-1, 1, size=(n_ep, t, 3)).astype(np.float32)
    rewards = np.zeros((n_ep, t), np.float32)
    rewards[:, -1] = rng.normal(size=n_ep)
    return Episodes.from_padded(
        rewards, terminated=np.ones(n_ep, bool), observations=obs, actions=acts, next_observations=nobs
    )


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def per_episode_loop(assigner, ep: Episodes) -> np.ndarray:
    """The naive baseline: ``assign`` one episode at a time (same model, same work per step)."""
    out = np.zeros(ep.rewards.shape, np.float32)
    for b in range(ep.num_episodes):
        r = np.asarray(assigner.assign(ep.select([b])).rewards)
        out[b, : r.shape[1]] = r[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ep = batch(args.episodes, args.steps)
    small = batch(64, args.steps, seed=1)
    n = ep.num_steps
    print(
        f"assign on {n:,} steps ({args.episodes} episodes x {args.steps} steps), torch threads {args.threads}, "
        f"load average (5 min) {os.getloadavg()[1]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'assigner':<26}{'batched assign (s)':>20}{'per-episode loop (s)':>22}{'speed-up':>10}{'one update (ms)':>17}"
    )
    mlp = {
        "rd (MLP 128-128)": RDAssigner(),
        "rrd (MLP 128-128, K=64)": RRDAssigner(),
        "rrd (MLP 256-256, paper)": RRDAssigner(hidden=(256, 256)),
        "lare (Hopper factors)": LaReAssigner(features="Hopper-v5"),
    }
    for name, a in mlp.items():
        a.fit(small, num_updates=2)
        upd = best_of(lambda a=a: a.fit(None, num_updates=10), args.repeat) / 10 * 1e3
        fast = best_of(lambda a=a: a.assign(ep), args.repeat)
        loop = best_of(lambda a=a: per_episode_loop(a, ep), 1)
        np.testing.assert_allclose(
            per_episode_loop(a, ep.select(np.arange(3))),
            np.asarray(a.assign(ep.select(np.arange(3))).rewards),
            rtol=1e-5,
            atol=1e-6,
        )
        print(f"{name:<26}{fast:>20.3f}{loop:>22.3f}{loop / fast:>9.1f}x{upd:>17.2f}")
    for name, a in {"uniform": UniformAssigner(), "ircr": IRCRAssigner()}.items():
        a.fit(small)
        fast = best_of(lambda a=a: a.assign(ep), args.repeat)
        print(f"{name:<26}{fast:>20.3f}{'-':>22}{'-':>10}{'-':>17}")
    rudder = RUDDERAssigner()
    rudder.fit(small, num_updates=1)
    upd = best_of(lambda: rudder.fit(None, num_updates=3), 1) / 3 * 1e3
    fast = best_of(lambda: rudder.assign(ep), 1)
    print(f"{'rudder (LSTM 64)':<26}{fast:>20.3f}{'-':>22}{'-':>10}{upd:>17.2f}")


if __name__ == "__main__":
    main()
