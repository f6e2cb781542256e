# ruff: noqa: B023  (closures are timed immediately inside the loop that defines them)
"""Speed of creditlab's estimators next to the implementations users run today, in one process.

    .venv/bin/python benchmarks/bench_estimators.py            # ~1 minute
    .venv/bin/python benchmarks/bench_estimators.py --quick    # smaller shapes, a few seconds

Baselines, each measured in the same run on the same data:
* GAE: Stable-Baselines3 ``RolloutBuffer.compute_returns_and_advantage`` (NumPy loop over time),
  a reverse loop over T of whole-batch torch ops (what verl and most LLM trainers do), and verl's
  ``compute_gae_advantage_return`` when verl is importable;
* GRPO / RLOO / GDPO: a per-group Python loop (the structure of verl's default GRPO path: a dict
  from group id to scores, then per-group mean/std), and verl's vectorized GRPO/RLOO when verl is
  importable. Token-level pipeline as in LLM trainers: rewards [bs, L] -> scores -> advantages
  broadcast back to [bs, L].

Ratios > 1 mean creditlab is faster. Times are the median of several repeats after a warm-up,
single torch thread. The machine is shared: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import numpy as np
import torch

import creditlab as cl
from creditlab.errors import DegenerateGroupWarning

warnings.simplefilter("ignore", DegenerateGroupWarning)
torch.set_num_threads(1)

try:  # optional peer
    from verl.trainer.ppo import core_algos as verl_algos
except Exception:  # pragma: no cover - verl is not a dependency
    verl_algos = None


def timeit(fn, repeats: int = 5) -> float:
    fn()  # warm-up (JIT, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------ baselines


def sb3_gae(rewards_tb, values_tb, episode_starts_tb, last_values, dones, gamma, lam):
    """SB3's RolloutBuffer GAE on [T, N] arrays (the real SB3 method, buffer filled directly)."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    t, n = rewards_tb.shape
    buf = RolloutBuffer(t, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), device="cpu", gae_lambda=lam, gamma=gamma, n_envs=n)
    buf.rewards[:] = rewards_tb
    buf.values[:] = values_tb
    buf.episode_starts[:] = episode_starts_tb

    def run():
        buf.compute_returns_and_advantage(torch.as_tensor(last_values), dones)
        return buf.advantages

    return run


def torch_loop_gae(rewards, values, mask, gamma, lam):
    """Reverse loop over T with whole-batch torch ops (verl/OpenRLHF style), [B, T]."""

    def run():
        nextvalues = 0.0
        lastgaelam = 0.0
        out = torch.zeros_like(rewards)
        for t in reversed(range(rewards.shape[1])):
            delta = rewards[:, t] + gamma * nextvalues - values[:, t]
            lastgaelam_ = delta + gamma * lam * lastgaelam
            nextvalues = values[:, t] * mask[:, t] + (1 - mask[:, t]) * nextvalues
            lastgaelam = lastgaelam_ * mask[:, t] + (1 - mask[:, t]) * lastgaelam
            out[:, t] = lastgaelam
        return out

    return run


def loop_grpo(token_rewards, mask, index, eps=1e-6):
    """Per-group Python loop (verl's default GRPO structure)."""
    scores = token_rewards.sum(dim=-1)
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    for idx, vals in id2score.items():
        if len(vals) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            t = torch.stack(vals)
            id2mean[idx], id2std[idx] = t.mean(), t.std()
    for i in range(scores.shape[0]):
        scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
    return scores.unsqueeze(-1) * mask


def loop_rloo(token_rewards, mask, index):
    scores = token_rewards.sum(dim=-1)
    id2score = defaultdict(list)
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    id2mean = {k: torch.stack(v).mean() for k, v in id2score.items()}
    for i in range(scores.shape[0]):
        n = len(id2score[index[i]])
        if n > 1:
            scores[i] = scores[i] * n / (n - 1) - id2mean[index[i]] * n / (n - 1)
    return scores.unsqueeze(-1) * mask


def loop_gdpo(components, mask, index, eps=1e-4):
    n, k = components.shape
    summed = torch.zeros(n, dtype=components.dtype)
    for j in range(k):
        col = components[:, j].clone()
        id2 = defaultdict(list)
        for i in range(n):
            id2[index[i]].append(col[i])
        stats = {g: (torch.stack(v).mean(), torch.stack(v).std() if len(v) > 1 else torch.tensor(0.0)) for g, v in id2.items()}
        for i in range(n):
            m, s = stats[index[i]]
            summed[i] += (col[i] - m) / (s + eps)
    adv = (summed - summed.mean()) / (summed.std() + eps)
    return adv.unsqueeze(-1) * mask


# ------------------------------------------------------------------------------ creditlab pipelines


def cl_grpo(token_rewards, mask, index):
    scores = token_rewards.sum(dim=-1)  # as verl: token rewards are 0 outside the response
    return cl.grpo(scores, index).advantages.unsqueeze(-1) * mask


def cl_rloo(token_rewards, mask, index):
    scores = token_rewards.sum(dim=-1)
    return cl.rloo(scores, index).advantages.unsqueeze(-1) * mask


def cl_gdpo(components, mask, index):
    return cl.gdpo(components, index).advantages.unsqueeze(-1) * mask


# ------------------------------------------------------------------------------ main


def bench_gae(shapes, rows):
    rng = np.random.default_rng(0)
    for b, t in shapes:
        rewards = rng.normal(size=(b, t)).astype(np.float32)
        values = rng.normal(size=(b, t)).astype(np.float32)
        mask = np.ones((b, t), bool)
        gamma, lam = 0.99, 0.95
        ours = timeit(lambda: cl.gae(rewards, values, gamma=gamma, lambda_=lam, mask=mask, terminated=np.ones(b, bool)))
        # SB3 layout is time-major [T, N]: one env per episode row, episode start at t = 0.
        starts = np.zeros((t, b), np.float32)
        starts[0] = 1
        sb3 = timeit(sb3_gae(rewards.T.copy(), values.T.copy(), starts, np.zeros(b, np.float32), np.ones(b, bool), gamma, lam))
        tr, tv, tm = torch.from_numpy(rewards), torch.from_numpy(values), torch.ones(b, t)
        loop = timeit(torch_loop_gae(tr, tv, tm, gamma, lam), repeats=3)
        row = {"estimator": "gae", "shape": f"{b}x{t}", "creditlab_ms": ours * 1e3, "sb3_ms": sb3 * 1e3, "torch_loop_ms": loop * 1e3}
        if verl_algos is not None:
            row["verl_ms"] = 1e3 * timeit(lambda: verl_algos.compute_gae_advantage_return(tr, tv, tm, gamma, lam), repeats=3)
        rows.append(row)


def bench_groups(shapes, group_size, rows):
    rng = np.random.default_rng(1)
    for bs, length in shapes:
        token_rewards = torch.from_numpy(rng.normal(size=(bs, length)).astype(np.float32))
        mask = torch.ones(bs, length)
        index = np.repeat(np.arange(bs // group_size), group_size)
        uids = np.array([f"uid-{i}" for i in index], dtype=object)  # what verl passes
        comps = torch.from_numpy(rng.integers(0, 2, size=(bs, 3)).astype(np.float32))
        n_groups = bs // group_size
        specs = [
            ("grpo", lambda: cl_grpo(token_rewards, mask, index), lambda: loop_grpo(token_rewards.clone(), mask, index)),
            ("rloo", lambda: cl_rloo(token_rewards, mask, index), lambda: loop_rloo(token_rewards.clone(), mask, index)),
            ("gdpo", lambda: cl_gdpo(comps, mask, index), lambda: loop_gdpo(comps, mask, index)),
        ]
        for name, ours_fn, loop_fn in specs:
            ours = timeit(ours_fn)
            loop = timeit(loop_fn, repeats=1 if bs * 3 > 50_000 else 3)
            row = {"estimator": name, "shape": f"{bs}x{length}", "groups": n_groups, "creditlab_ms": ours * 1e3, "loop_ms": loop * 1e3}
            if verl_algos is not None and name in ("grpo", "rloo"):
                vfn = {
                    "grpo": verl_algos.compute_grpo_vectorized_outcome_advantage,
                    "rloo": verl_algos.compute_rloo_vectorized_outcome_advantage,
                }[name]
                row["verl_vectorized_ms"] = 1e3 * timeit(lambda: vfn(token_rewards, mask, index))
                # creditlab with the string uids verl receives (factorized by creditlab)
                row["creditlab_str_ids_ms"] = 1e3 * timeit(lambda: cl_grpo(token_rewards, mask, uids) if name == "grpo" else cl_rloo(token_rewards, mask, uids))
                row["verl_str_ids_ms"] = 1e3 * timeit(lambda: vfn(token_rewards, mask, uids))
            rows.append(row)


def print_rows(rows):
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, verl {'yes' if verl_algos else 'not installed'}")
    print()
    print("| estimator | shape | groups | creditlab ms | baseline | baseline ms | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        baselines = [(k[:-3], v) for k, v in r.items() if k.endswith("_ms") and not k.startswith("creditlab") and "str_ids" not in k]
        for i, (name, ms) in enumerate(baselines):
            first = i == 0
            print(
                f"| {r['estimator'] if first else ''} | {r['shape'] if first else ''} | {r.get('groups', '') if first else ''} | "
                f"{r['creditlab_ms']:.2f} | {name} | {ms:.2f} | {ms / r['creditlab_ms']:.1f}x |"
            )
        if "creditlab_str_ids_ms" in r:
            ours, theirs = r["creditlab_str_ids_ms"], r["verl_str_ids_ms"]
            print(f"| | | (string uids) | {ours:.2f} | verl_vectorized (string uids) | {theirs:.2f} | {theirs / ours:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows: list[dict] = []
    if args.quick:
        bench_gae([(256, 256), (8192, 16)], rows)
        bench_groups([(4096, 16)], 8, rows)
    else:
        bench_gae([(1024, 1024), (65536, 16), (512, 512), (2048, 256), (16384, 16)], rows)
        bench_groups([(1024, 1024), (65536, 16), (131072, 8)], 8, rows)  # 128, 8192 and 16384 groups
    print_rows(rows)


if __name__ == "__main__":
    main()
