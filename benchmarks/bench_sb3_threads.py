"""Torch threads and the SB3 credit integration: wall time of the docs' snippets with and without a bound.

    nice -n 10 .venv/bin/python benchmarks/bench_sb3_threads.py [--repeats 3] [--ppo-steps 6144] [--sac-steps 1000]

Two runs as the README/docs snippets write them, on episodic Hopper-v5 with RRD:

* PPO (8 envs x 256 steps, batch 64, 10 epochs) + ``CreditAssignmentCallback(RRDAssigner())``;
* SAC (SB3 defaults, ``learning_starts`` 200) + ``CreditReplayBuffer(assigner=RRDAssigner())``.

each under three thread settings, interleaved and repeated (so a change of the machine's load
hits every setting alike):

* ``defaults``: PyTorch's default thread count (one per core) everywhere, and the integration
  leaving it alone (``torch_threads=None``: what the snippets did before this change);
* ``bounded``: the default thread count for SB3's own updates, the assigner's fit/assign on one
  thread (``torch_threads=1``, the integration's default now);
* ``one thread``: ``torch.set_num_threads(1)`` before training (what the docs' snippets now show).

Prints each run's seconds and, per setting, the median and its ratio to ``defaults``. The
absolute numbers depend on the machine's load (print ``os.getloadavg()`` beside them); the ratios
are measured in the same process and run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

SETTINGS = ("defaults", "bounded", "one thread")


def ppo_run(setting: str, steps: int, default_threads: int) -> float:
    from stable_baselines3 import PPO

    from creditlab.credit import RRDAssigner
    from creditlab.integrations.sb3 import CreditAssignmentCallback, make_env

    torch.set_num_threads(1 if setting == "one thread" else default_threads)
    env = make_env("Hopper-v5", n_envs=8, reward="episodic", seed=0)
    callback = CreditAssignmentCallback(
        RRDAssigner(include_truncated=True), torch_threads=None if setting == "defaults" else 1
    )
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=10, seed=0)
    t0 = time.perf_counter()
    model.learn(steps, callback=callback)
    seconds = time.perf_counter() - t0
    env.close()
    return seconds


def sac_run(setting: str, steps: int, default_threads: int) -> float:
    from stable_baselines3 import SAC

    from creditlab.credit import RRDAssigner
    from creditlab.integrations.sb3 import CreditReplayBuffer, make_env

    torch.set_num_threads(1 if setting == "one thread" else default_threads)
    env = make_env("Hopper-v5", n_envs=1, reward="episodic", seed=0)
    kwargs = {"assigner": RRDAssigner(include_truncated=True), "torch_threads": None if setting == "defaults" else 1}
    model = SAC(
        "MlpPolicy",
        env,
        learning_starts=200,
        seed=0,
        replay_buffer_class=CreditReplayBuffer,
        replay_buffer_kwargs=kwargs,
    )
    t0 = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - t0
    env.close()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ppo-steps", type=int, default=6144)
    p.add_argument("--sac-steps", type=int, default=1000)
    p.add_argument("--only", choices=["ppo", "sac"], help="one of the two runs")
    args = p.parse_args()
    default_threads = torch.get_num_threads()
    print(f"cores {os.cpu_count()}, torch default threads {default_threads}, load average {os.getloadavg()[0]:.1f}")
    runs = {"ppo": (ppo_run, args.ppo_steps), "sac": (sac_run, args.sac_steps)}
    for name, (fn, steps) in runs.items():
        if args.only and name != args.only:
            continue
        times: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for rep in range(args.repeats):
            for setting in SETTINGS:
                seconds = fn(setting, steps, default_threads)
                times[setting].append(seconds)
                print(
                    f"{name} {steps} steps, repeat {rep}, {setting:>10}: {seconds:7.1f} s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        base = statistics.median(times["defaults"])
        print(f"\n{name.upper()} + RRD, Hopper-v5, {steps} steps, median of {args.repeats}:")
        for setting in SETTINGS:
            med = statistics.median(times[setting])
            print(
                f"  {setting:>10}: {med:7.1f} s   defaults / this = {base / med:5.1f}x   (runs: {', '.join(f'{t:.1f}' for t in times[setting])})"
            )
        print(flush=True)
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
