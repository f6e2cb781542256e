"""verl-shaped speed: creditlab's verl estimators on ``[bs, L]`` token tensors.

Where verl computes the same thing (one turn per row with an outcome reward: RLOO), the script
times ``creditlab_turn_rloo`` next to verl's ``compute_rloo_outcome_advantage`` (per-group loop)
and ``compute_rloo_vectorized_outcome_advantage`` in the same run and checks they agree. It also
times the multi-turn case (turns found from runs of the response mask, rewards attributed to
turns), which verl has no estimator for. verl is optional: without it only creditlab is timed.

    nice -n 10 .venv/bin/python benchmarks/bench_verl_shapes.py            # --rounds 7 by default

Timing as benchmarks/bench_estimators.py (benchmarks/_timing.py): warm-up, interleaved rounds,
median CPU milliseconds per call and the median ratio peer / creditlab with its min-max over the
rounds, for CPU time and wall time; one torch thread.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _timing import Contender, measure, ms, ratio_text  # noqa: E402  (benchmarks/_timing.py)

from creditlab.integrations.verl import compute_turn_rloo_advantage  # noqa: E402


def single_turn(bs, length, group, rng):
    lengths = rng.integers(length // 4, length + 1, size=bs)
    rm = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float32))
    tl = torch.zeros(bs, length)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(
        rng.integers(0, 2, size=bs).astype(np.float32)
    )
    index = np.array([f"uid-{i // group}" for i in range(bs)], dtype=object)
    return tl, rm, index


def multi_turn(bs, length, group, turns, rng):
    rm = np.zeros((bs, length), np.float32)
    tl = np.zeros((bs, length), np.float32)
    seg = length // (2 * turns)
    for k in range(turns):  # turn k: seg policy tokens, then seg observation tokens
        start = 2 * k * seg
        rm[:, start : start + seg] = 1
        tl[:, start + seg - 1] = rng.integers(0, 2, size=bs)
    index = np.array([f"uid-{i // group}" for i in range(bs)], dtype=object)
    return torch.from_numpy(tl), torch.from_numpy(rm), index


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="512x512,2048x256,16384x16")
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--loop-rounds", type=int, default=3, help="rounds for verl's per-group loop")
    p.add_argument("--min-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        from verl.trainer.ppo import core_algos
    except Exception:  # noqa: BLE001
        core_algos = None
    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, verl {'yes' if core_algos else 'not installed'}, "
        f"{args.rounds} rounds (loop: {args.loop_rounds}), load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print()
    print(
        "| bs x L | case | creditlab CPU ms | peer | peer CPU ms | ratio, CPU time: median (min-max) | ratio, wall time | max abs diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in args.shapes.split(","):
        bs, length = (int(x) for x in shape.split("x"))
        run_shape(shape, bs, length, args, rng, core_algos)


def run_shape(shape, bs, length, args, rng, core_algos):
    tl, rm, index = single_turn(bs, length, args.group, rng)
    ours = Contender("creditlab_turn_rloo", lambda: compute_turn_rloo_advantage(tl, rm, index=index)[0])
    group = [ours]
    if core_algos is not None:
        loop = Contender(
            "verl RLOO loop",
            lambda: core_algos.compute_rloo_outcome_advantage(tl, rm, index)[0],
            rounds=args.loop_rounds,
        )
        vec = Contender(
            "verl RLOO vectorized", lambda: core_algos.compute_rloo_vectorized_outcome_advantage(tl, rm, index)[0]
        )
        group += [loop, vec]
    multi = None
    if length >= 2 * args.turns:
        tl2, rm2, index2 = multi_turn(bs, length, args.group, args.turns, rng)
        multi = Contender(
            f"creditlab_turn_rloo, {args.turns} turns", lambda: compute_turn_rloo_advantage(tl2, rm2, index=index2)[0]
        )
        group.append(multi)
    measure(group, args.rounds, args.min_ms / 1e3)
    a = ours.fn()
    for peer in group[1:3]:
        diff = float((a - peer.fn()).abs().max())
        print(
            f"| {shape} | 1 turn | {ms(ours, len(peer.cpu))} | {peer.name} | {ms(peer)} | "
            f"{ratio_text(peer.cpu, ours.cpu)} | {ratio_text(peer.wall, ours.wall)} | {diff:.1e} |"
        )
    if core_algos is None:
        print(f"| {shape} | 1 turn | {ms(ours)} | - | - | - | - | - |")
    if multi is not None:
        print(f"| {shape} | {args.turns} turns | {ms(multi)} | (no verl equivalent) | - | - | - | - |")


if __name__ == "__main__":
    main()
