"""verl-shaped speed: creditlab's verl estimators on ``[bs, L]`` token tensors.

Where verl computes the same thing (one turn per row with an outcome reward: RLOO), the script
times ``creditlab_turn_rloo`` next to verl's ``compute_rloo_outcome_advantage`` (per-group loop)
and ``compute_rloo_vectorized_outcome_advantage`` in the same run and checks they agree. It also
times the multi-turn case (turns found from runs of the response mask, rewards attributed to
turns), which verl has no estimator for. verl is optional: without it only creditlab is timed.

    nice -n 10 .venv/bin/python benchmarks/bench_verl_shapes.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from creditlab.integrations.verl import compute_turn_rloo_advantage  # noqa: E402


def best(fn, repeat):
    t_best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best, out


def single_turn(bs, length, group, rng):
    lengths = rng.integers(length // 4, length + 1, size=bs)
    rm = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float32))
    tl = torch.zeros(bs, length)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(rng.integers(0, 2, size=bs).astype(np.float32))
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
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        from verl.trainer.ppo import core_algos
    except Exception:  # noqa: BLE001
        core_algos = None
    rng = np.random.default_rng(0)
    print(f"{'shape':>10s} {'case':>12s} {'verl loop':>10s} {'verl vec':>10s} {'creditlab':>10s}  agree")
    for shape in args.shapes.split(","):
        bs, length = (int(x) for x in shape.split("x"))
        run_shape(shape, bs, length, args, rng, core_algos)


def run_shape(shape, bs, length, args, rng, core_algos):
    tl, rm, index = single_turn(bs, length, args.group, rng)
    t_ours, (ours, _) = best(lambda: compute_turn_rloo_advantage(tl, rm, index=index), args.repeat)
    loop = vec = "-"
    agree = ""
    if core_algos is not None:
        t_loop, (a_loop, _) = best(lambda: core_algos.compute_rloo_outcome_advantage(tl, rm, index), args.repeat)
        t_vec, (a_vec, _) = best(lambda: core_algos.compute_rloo_vectorized_outcome_advantage(tl, rm, index), args.repeat)
        loop, vec = f"{t_loop * 1e3:8.2f}ms", f"{t_vec * 1e3:8.2f}ms"
        agree = f"max |diff| {float((ours - a_loop).abs().max()):.1e}, {float((ours - a_vec).abs().max()):.1e}"
    print(f"{shape:>10s} {'1 turn':>12s} {loop:>10s} {vec:>10s} {t_ours * 1e3:8.2f}ms  {agree}")
    if length >= 2 * args.turns:
        tl2, rm2, index2 = multi_turn(bs, length, args.group, args.turns, rng)
        t_mt, _ = best(lambda: compute_turn_rloo_advantage(tl2, rm2, index=index2), args.repeat)
        print(f"{shape:>10s} {f'{args.turns} turns':>12s} {'-':>10s} {'-':>10s} {t_mt * 1e3:8.2f}ms  (no verl equivalent)")


if __name__ == "__main__":
    main()
