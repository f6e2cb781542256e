# ruff: noqa: B023  (closures are timed immediately inside the loop that defines them)
"""Speed of creditlab's estimators next to the implementations users run today, in one process.

    .venv/bin/python benchmarks/bench_estimators.py --rounds 9      # 3-5 minutes on the shared 2-core box
    .venv/bin/python benchmarks/bench_estimators.py --no-loops      # skip the slow per-group loops
    .venv/bin/python benchmarks/bench_estimators.py --quick         # small shapes, seconds

Peers, each measured in the same run on the same data:
* GAE: Stable-Baselines3 ``RolloutBuffer.compute_returns_and_advantage`` (a NumPy loop over time
  into preallocated buffers; creditlab gets the same float32 NumPy arrays), verl 0.9.1's
  ``compute_gae_advantage_return`` (torch tensors and a float ``response_mask``; creditlab gets
  the same tensors), and a reverse loop over T of whole-batch torch ops (what most LLM trainers do);
* GRPO / RLOO: verl's ``compute_grpo_vectorized_outcome_advantage`` /
  ``compute_rloo_vectorized_outcome_advantage`` with integer uids and with the string uids verl
  actually receives, and a per-group Python loop (the structure of verl's default GRPO path);
  GDPO: the per-group, per-component loop. Token-level pipeline as in LLM trainers: rewards
  [bs, L] -> scores -> advantages broadcast back to [bs, L], on both sides.

Method (benchmarks/_timing.py): every contender is warmed up (JIT, caches), then timed in
``--rounds`` rounds; a round runs each contender back to back (order rotated every round) for
enough calls to last about ``--min-ms`` and records the time per call. A round's ratio is peer
time / creditlab time in that round (> 1: creditlab is faster). Printed: the median CPU time per
call of each contender, and the median ratio with its min-max over the rounds, both for the
thread's CPU time and for wall time. On a shared machine, wall time includes the time other
processes held the core; CPU time does not (it is what a quiet machine would show as wall time,
up to cache effects). One torch thread. The per-group loops run in ``--loop-rounds`` rounds
(seconds per call). The last column is the largest difference between creditlab's and the
peer's advantages (agreement check; for verl's GAE the returns, as verl whitens its advantages).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

# Steady state of a training process: the compiled kernels are loaded from the first call (in
# the default "auto" mode creditlab loads them at the first large input or the 64th small call;
# before that, small inputs take the torch path). CREDITLAB_KERNELS=auto in the environment
# measures the other mode.
os.environ.setdefault("CREDITLAB_KERNELS", "numba")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import Contender, measure, ms, ratio_text  # noqa: E402  (benchmarks/_timing.py)

import creditlab as cl  # noqa: E402
from creditlab.errors import DegenerateGroupWarning  # noqa: E402

warnings.simplefilter("ignore", DegenerateGroupWarning)
torch.set_num_threads(1)

try:  # peer installed by scripts/install.sh (pip install --no-deps verl==0.9.1)
    from verl.trainer.ppo import core_algos as verl_algos
except Exception:  # pragma: no cover - verl is not a dependency
    verl_algos = None


# ------------------------------------------------------------------------------ timing


def row(case: str, shape: str, ids: str, ours: Contender, peer: Contender, diff: float | None) -> str:
    diff_txt = "-" if diff is None else f"{diff:.1e}"
    return (
        f"| {case} | {shape} | {ids} | {peer.name} | {ms(ours, len(peer.cpu))} | {ms(peer)} | "
        f"{ratio_text(peer.cpu, ours.cpu)} | {ratio_text(peer.wall, ours.wall)} | {diff_txt} |"
    )


def max_diff(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ------------------------------------------------------------------------------ peers


def sb3_gae(rewards_tb, values_tb, episode_starts_tb, last_values, dones, gamma, lam):
    """SB3's RolloutBuffer GAE on [T, N] arrays (the real SB3 method, buffer filled directly)."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    t, n = rewards_tb.shape
    buf = RolloutBuffer(
        t, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), device="cpu", gae_lambda=lam, gamma=gamma, n_envs=n
    )
    buf.rewards[:] = rewards_tb
    buf.values[:] = values_tb
    buf.episode_starts[:] = episode_starts_tb
    last = torch.as_tensor(last_values)

    def run():
        buf.compute_returns_and_advantage(last, dones)
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
        stats = {
            g: (torch.stack(v).mean(), torch.stack(v).std() if len(v) > 1 else torch.tensor(0.0))
            for g, v in id2.items()
        }
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


# ------------------------------------------------------------------------------ cases


def bench_gae(shapes, args, lines):
    rng = np.random.default_rng(0)
    gamma, lam = 0.99, 0.95
    for b, t in shapes:
        rewards = rng.normal(size=(b, t)).astype(np.float32)
        values = rng.normal(size=(b, t)).astype(np.float32)
        mask = np.ones((b, t), bool)
        term = np.ones(b, bool)
        # SB3 layout is time-major [T, N]: one env per episode row, episode start at t = 0.
        starts = np.zeros((t, b), np.float32)
        starts[0] = 1
        ours = Contender(
            "creditlab", lambda: cl.gae(rewards, values, gamma=gamma, lambda_=lam, mask=mask, terminated=term)
        )
        sb3_fn = sb3_gae(
            rewards.T.copy(), values.T.copy(), starts, np.zeros(b, np.float32), np.ones(b, bool), gamma, lam
        )
        sb3 = Contender("sb3", sb3_fn)
        tr, tv, tm = torch.from_numpy(rewards), torch.from_numpy(values), torch.ones(b, t)
        tterm = torch.ones(b, dtype=torch.bool)
        ours_t = Contender("creditlab", lambda: cl.gae(tr, tv, gamma=gamma, lambda_=lam, mask=tm, terminated=tterm))
        loop = Contender("torch_loop", torch_loop_gae(tr, tv, tm, gamma, lam), rounds=args.loop_rounds)
        group = [ours, sb3, ours_t]
        if not args.no_loops:
            group.append(loop)
        verl = None
        if verl_algos is not None:
            verl = Contender("verl", lambda: verl_algos.compute_gae_advantage_return(tr, tv, tm, gamma, lam))
            group.append(verl)
        measure(group, args.rounds, args.min_ms / 1e3)
        shape = f"{b}x{t}"
        out = ours.fn()
        ref = out.advantages
        lines.append(row("gae", shape, "", ours, sb3, max_diff(ref, sb3_fn().T)))
        if verl is not None:  # verl whitens its advantages; its returns (A + V) are comparable
            lines.append(row("gae (torch in)", shape, "", ours_t, verl, max_diff(out.returns, verl.fn()[1])))
        if not args.no_loops:
            lines.append(row("gae (torch in)", shape, "", ours_t, loop, max_diff(ref, loop.fn())))


def bench_groups(shapes, args, lines):
    rng = np.random.default_rng(1)
    for bs, length, group_size in shapes:
        token_rewards = torch.from_numpy(rng.normal(size=(bs, length)).astype(np.float32))
        mask = torch.ones(bs, length)
        index = np.repeat(np.arange(bs // group_size), group_size)
        uids = np.array([f"uid-{i}" for i in index], dtype=object)  # what verl passes
        comps = torch.from_numpy(rng.integers(0, 2, size=(bs, 3)).astype(np.float32))
        shape = f"{bs}x{length}"
        ids_int, ids_str = f"{bs // group_size} (int)", f"{bs // group_size} (str)"
        loop_rounds = args.loop_rounds if bs * length < 2_000_000 else max(1, args.loop_rounds // 2)
        for name, ours_fn, loop_fn, vname in (
            ("grpo", cl_grpo, loop_grpo, "compute_grpo_vectorized_outcome_advantage"),
            ("rloo", cl_rloo, loop_rloo, "compute_rloo_vectorized_outcome_advantage"),
        ):
            ours = Contender("creditlab", lambda: ours_fn(token_rewards, mask, index))
            ours_s = Contender("creditlab", lambda: ours_fn(token_rewards, mask, uids))
            group = [ours, ours_s]
            loop = Contender("loop", lambda: loop_fn(token_rewards.clone(), mask, index), rounds=loop_rounds)
            if not args.no_loops:
                group.append(loop)
            if verl_algos is not None:
                vfn = getattr(verl_algos, vname)
                verl = Contender("verl_vectorized", lambda: vfn(token_rewards, mask, index)[0])
                verl_s = Contender("verl_vectorized", lambda: vfn(token_rewards, mask, uids)[0])
                group += [verl, verl_s]
            measure(group, args.rounds, args.min_ms / 1e3)
            ref = ours.fn()
            if verl_algos is not None:
                lines.append(row(name, shape, ids_int, ours, verl, max_diff(ref, verl.fn())))
                lines.append(row(name, shape, ids_str, ours_s, verl_s, max_diff(ours_s.fn(), verl_s.fn())))
            if not args.no_loops:
                lines.append(row(name, shape, ids_int, ours, loop, max_diff(ref, loop.fn())))
        if not args.no_loops:
            ours = Contender("creditlab", lambda: cl_gdpo(comps, mask, index))
            loop = Contender("loop", lambda: loop_gdpo(comps, mask, index), rounds=loop_rounds)
            measure([ours, loop], args.rounds, args.min_ms / 1e3)
            lines.append(row("gdpo (K=3)", shape, ids_int, ours, loop, max_diff(ours.fn(), loop.fn())))


def header(args) -> str:
    pkg = Path(cl.__file__).parent
    try:  # the commit of the creditlab that is measured (not of this script)
        git = ["git", "-C", str(pkg)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True).stdout
        commit = (commit + (" + uncommitted changes" if dirty.strip() else "")) if commit else "not a git checkout"
    except OSError:  # pragma: no cover
        commit = "?"
    verl = "not installed"
    if verl_algos is not None:
        from importlib.metadata import version

        verl = version("verl")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    import numba
    import stable_baselines3

    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {' '.join(['python', *sys.argv])}\n"
        f"creditlab {pkg} (commit {commit}), torch {torch.__version__}, numpy {np.__version__}, "
        f"numba {numba.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
        f"verl {verl}, python {platform.python_version()}, torch threads {torch.get_num_threads()}, "
        f"{args.rounds} rounds of >= {args.min_ms:g} ms per contender (loops: {args.loop_rounds}), "
        f"CREDITLAB_KERNELS={os.environ['CREDITLAB_KERNELS']}, {os.cpu_count()} CPUs, nice {os.nice(0)}, "
        f"load average (1, 5, 15 min) {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loop-rounds", type=int, default=3, help="rounds for the slow per-group / per-step loops")
    parser.add_argument("--min-ms", type=float, default=20.0, help="each contender runs for about this long per round")
    parser.add_argument("--no-loops", action="store_true", help="skip the Python-loop baselines")
    parser.add_argument("--only", choices=("gae", "groups"), help="one family only")
    args = parser.parse_args()
    print(header(args))
    lines: list[str] = []
    if args.quick:
        gae_shapes, group_shapes = [(256, 256), (8192, 16)], [(4096, 16, 8)]
    else:
        # GAE: long episodes, and many short ones (SB3's layout: n_envs x n_steps rollouts)
        gae_shapes = [(1024, 1024), (512, 512), (2048, 256), (8192, 16), (16384, 16), (65536, 16)]
        # (responses, tokens, responses per prompt): 131,072 responses in 16,384 groups of 8 and
        # in 8,192 groups of 16
        group_shapes = [(1024, 1024, 8), (16384, 64, 8), (65536, 16, 8), (131072, 8, 8), (131072, 16, 16)]
    if args.only in (None, "gae"):
        bench_gae(gae_shapes, args, lines)
    if args.only in (None, "groups"):
        bench_groups(group_shapes, args, lines)
    print()
    print(
        "| estimator | shape | groups | peer | creditlab CPU ms | peer CPU ms | ratio, CPU time: median (min-max) | ratio, wall time | max abs diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for line in lines:
        print(line)
    print()
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
