"""Speed of the multiagent suite's environment: ``spread_individual`` vs mpe2's own simple_spread.

    .venv/bin/python benchmarks/bench_multiagent_env.py [--rounds 7] [--steps 500]

The multiagent suite trains on mpe2's cooperative navigation paying LaRe's per-agent reward
(``creditlab.bench.multiagent.spread_individual``: mpe2's scenario and raw env subclassed, so mpe2's
own mixed reward is never computed). Timed per environment step (N agents acting, uniformly random
discrete actions, resets included), for N = 3 and 6, against two peers in the same run:

* ``mpe2``: mpe2's ``simple_spread_v3.parallel_env`` as shipped (its own reward: per-agent
  collisions plus the shared coverage term);
* ``mpe2 + reward wrapper``: the same env with LaRe's reward recomputed in a parallel wrapper from
  the positions after the step (what the suite did before; identical observations and rewards).

Timing as benchmarks/bench_estimators.py (benchmarks/_timing.py): warm-up, interleaved rounds, the
ratio peer / ours per round as median (min-max), on thread CPU time. The 5-min load average is
printed: the machine is shared, so compare ratios within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Contender, measure, ms, ratio_text  # noqa: E402  (benchmarks/_timing.py)


def recomputed_reward(N: int):
    """The earlier construction: mpe2's parallel env plus a wrapper that recomputes LaRe's reward."""
    from mpe2 import simple_spread_v3
    from pettingzoo.utils.wrappers import BaseParallelWrapper

    class Recompute(BaseParallelWrapper):
        def step(self, actions):
            obs, rewards, terms, truncs, infos = self.env.step(actions)
            world = self.env.unwrapped.world
            pos = np.array([a.state.p_pos for a in world.agents])
            marks = np.array([m.state.p_pos for m in world.landmarks])
            nearest = np.linalg.norm(pos[:, None] - marks[None], axis=2).min(axis=1)
            apart = np.linalg.norm(pos[:, None] - pos[None], axis=2)
            size = np.array([a.size for a in world.agents])
            collisions = (apart < size[:, None] + size[None, :]).sum(axis=1) - 1
            own = {a.name: float(-nearest[i] - collisions[i]) for i, a in enumerate(world.agents)}
            return obs, {a: own[a] for a in rewards}, terms, truncs, infos

    return Recompute(simple_spread_v3.parallel_env(N=N, max_cycles=25))


def stepper(env, steps: int, seed: int):
    """A callable that plays ``steps`` environment steps with random actions (resetting at episode end)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    actions = rng.integers(5, size=(steps, 64))

    def run() -> None:
        for k in range(steps):
            if not env.agents:
                env.reset()
            env.step({a: int(actions[k, i]) for i, a in enumerate(env.agents)})

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=500, help="environment steps per call")
    args = ap.parse_args()
    from mpe2 import simple_spread_v3

    from creditlab.bench.multiagent import spread_individual

    print(f"load average (5 min): {os.getloadavg()[1]:.2f}; {args.rounds} rounds, {args.steps} env steps per call")
    print(f"{'N':>3}{'ours (ms/step)':>16}{'mpe2':>10}{'+wrapper':>10}{'mpe2 / ours':>24}{'+wrapper / ours':>24}")
    for n in (3, 6):
        ours = Contender("ours", stepper(spread_individual(N=n, max_cycles=25), args.steps, 0))
        peer = Contender("mpe2", stepper(simple_spread_v3.parallel_env(N=n, max_cycles=25), args.steps, 0))
        wrapped = Contender("wrapper", stepper(recomputed_reward(n), args.steps, 0))
        measure([ours, peer, wrapped], args.rounds, min_s=0.2)
        per = 1.0 / args.steps
        print(
            f"{n:>3}{float(ms(ours)) * per:>16.4f}{float(ms(peer)) * per:>10.4f}{float(ms(wrapped)) * per:>10.4f}"
            f"{ratio_text(peer.cpu, ours.cpu):>24}{ratio_text(wrapped.cpu, ours.cpu):>24}"
        )


if __name__ == "__main__":
    main()
