"""GiGPO speed: creditlab's O(N) grouping vs a per-sample search loop like the reference code.

The reference implementation (verl-agent ``gigpo/core_gigpo.py``) groups turn rows with one
``np.where(index == uid)`` over the whole batch per episode group, clusters anchors with a dict,
gives each cluster a uuid string, then normalizes with per-sample Python loops; its step returns
search the batch once per sample (``np.where`` inside a loop over rows: O(N^2)). The baseline
below re-implements that algorithm pattern (written here, same structure and complexity) and the
script times it against :func:`creditlab.llm.gigpo_rows` on the same rows, in the same run,
checking that both give the same advantages.

Run (about a minute on a 2-core machine; one torch thread):

    nice -n 10 .venv/bin/python benchmarks/bench_gigpo.py            # 100k turns, 1k groups
    nice -n 10 .venv/bin/python benchmarks/bench_gigpo.py --turns 20000 --groups 200

Results go to ``results/bench_gigpo.json`` (atomic write) with the config, versions and git commit.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from creditlab.atomic import write_json  # noqa: E402
from creditlab.llm import gigpo, gigpo_rows  # noqa: E402
from creditlab.llm.anchors import hash_ids  # noqa: E402
from creditlab.llm.gigpo import step_groups  # noqa: E402

# ------------------------------------------------------------------------------ the baseline


def baseline_step_groups(anchors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One np.where over the batch per episode group, dict clustering, a uuid per cluster."""
    out = np.empty(len(anchors), dtype=object)
    for uid in np.unique(index):
        rows = np.where(index == uid)[0]
        clusters = defaultdict(list)
        for i, obs in enumerate(anchors[rows]):
            clusters[obs].append(rows[i])
        for members in clusters.values():
            cid = str(uuid.uuid4())
            for r in members:
                out[r] = cid
    return out


def _norm_loop(values: np.ndarray, keys, remove_std: bool, eps: float, singleton_mean_zero: bool) -> np.ndarray:
    by = defaultdict(list)
    for i in range(len(values)):
        by[keys[i]].append(values[i])
    mean, std = {}, {}
    for k, vals in by.items():
        v = np.asarray(vals)
        if len(v) == 1:
            mean[k], std[k] = (0.0 if singleton_mean_zero else v[0]), 1.0
        else:
            mean[k], std[k] = v.mean(), v.std(ddof=1)
    out = np.empty(len(values))
    for i in range(len(values)):
        k = keys[i]
        out[i] = values[i] - mean[k] if remove_std else (values[i] - mean[k]) / (std[k] + eps)
    return out


def baseline_gigpo(scores, step_returns, anchors, index, traj, mode="mean_norm", eps=1e-6) -> np.ndarray:
    """Episode term over trajectories (first row of each), step term over (group, anchor) clusters."""
    remove_std = mode == "mean_norm"
    seen, first = set(), []
    for i in range(len(scores)):
        if (index[i], traj[i]) not in seen:
            seen.add((index[i], traj[i]))
            first.append(i)
    first = np.asarray(first)
    by = defaultdict(list)
    for i in first:
        by[index[i]].append(scores[i])
    ep = np.empty(len(scores))
    stats = {}
    for k, vals in by.items():
        v = np.asarray(vals)
        stats[k] = (v[0], 1.0, True) if len(v) == 1 else (v.mean(), v.std(ddof=1), v.max() == v.min())
    for i in range(len(scores)):
        m, s, const = stats[index[i]]
        ep[i] = 0.0 if const else (scores[i] - m if remove_std else (scores[i] - m) / (s + eps))
    groups = baseline_step_groups(anchors, index)
    step = _norm_loop(step_returns, groups, remove_std, eps, singleton_mean_zero=False)
    return ep + step


def baseline_step_returns(rewards: np.ndarray, traj: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns per trajectory, then each row located by a search (O(N^2))."""
    by_traj = {}
    for uid in np.unique(traj):
        rows = np.where(traj == uid)[0]
        acc, ret = 0.0, np.zeros(len(rows))
        for t in reversed(range(len(rows))):
            acc = rewards[rows[t]] + gamma * acc
            ret[t] = acc
        by_traj[uid] = ret
    out = np.zeros(len(rewards))
    for i, uid in enumerate(traj):
        rows = np.where(traj == uid)[0]
        out[i] = by_traj[uid][np.where(rows == i)[0][0]]
    return out


# ------------------------------------------------------------------------------ data


def make_rows(n_turns: int, n_groups: int, traj_per_group: int, states_per_group: int, seed: int):
    """Turn rows of n_groups groups x traj_per_group trajectories, shuffled like a real batch."""
    rng = np.random.default_rng(seed)
    n_traj = n_groups * traj_per_group
    lengths = rng.multinomial(n_turns - n_traj, np.ones(n_traj) / n_traj) + 1  # >= 1 turn each
    traj_of_row = np.repeat(np.arange(n_traj), lengths)
    group_of_row = traj_of_row // traj_per_group
    index = np.array([f"uid-{g}" for g in group_of_row], dtype=object)
    traj = np.array([f"traj-{t}" for t in traj_of_row], dtype=object)
    anchors = np.array(
        [
            f"room {g}/{s}: you see a desk and a lamp"
            for g, s in zip(group_of_row, rng.integers(0, states_per_group, size=n_turns))
        ],
        dtype=object,
    )
    rewards = rng.integers(-1, 2, size=n_turns).astype(np.float64)
    scores = np.repeat(rng.integers(0, 2, size=n_traj).astype(np.float64) * 10, lengths)
    return dict(
        index=index,
        traj=traj,
        anchors=anchors,
        rewards=rewards,
        scores=scores,
        lengths=lengths,
        group_of_row=group_of_row,
        traj_of_row=traj_of_row,
    )


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# ------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=100_000)
    p.add_argument("--groups", type=int, default=1_000)
    p.add_argument("--traj-per-group", type=int, default=8)
    p.add_argument("--states-per-group", type=int, default=20)
    p.add_argument("--returns-turns", default="5000,20000", help="sizes for the O(N^2) step-returns comparison")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results" / "bench_gigpo.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    d = make_rows(args.turns, args.groups, args.traj_per_group, args.states_per_group, args.seed)
    gamma = 0.95
    # step returns are an input to the grouping comparison (computed once, vectorized)
    order = np.argsort(d["traj_of_row"], kind="stable")
    step_ret = np.empty(args.turns)
    from creditlab import discounted_returns

    b = len(d["lengths"])
    t_max = int(d["lengths"].max())
    pos = np.arange(args.turns) - np.repeat(np.cumsum(d["lengths"]) - d["lengths"], d["lengths"])
    padded = np.zeros((b, t_max))
    padded[d["traj_of_row"][order], pos[order]] = d["rewards"][order]
    mask = np.arange(t_max)[None, :] < d["lengths"][:, None]
    g_pad = discounted_returns(padded, gamma=gamma, mask=mask)
    step_ret[order] = g_pad[d["traj_of_row"][order], pos[order]]

    results: dict = {"config": vars(args), "rows": []}

    # 1) grouping alone
    t_base, base_groups = timed(lambda: baseline_step_groups(d["anchors"], d["index"]), max(1, args.repeat - 2))

    def ours_groups():
        gi, _ = hash_ids(d["index"].tolist())
        ids, keys = hash_ids(d["anchors"].tolist())
        return step_groups(torch.from_numpy(gi), ids, keys)

    t_ours, ours = timed(ours_groups, args.repeat)
    same = _same_partition(base_groups, ours.index.numpy())
    results["rows"].append(_row("step grouping", args.turns, t_base, t_ours, f"same partition: {same}"))

    # 2) full advantage (episode + step terms), verl-agent layout
    t_base, a_base = timed(
        lambda: baseline_gigpo(d["scores"], step_ret, d["anchors"], d["index"], d["traj"]), max(1, args.repeat - 2)
    )
    t_ours, out = timed(lambda: gigpo_rows(d["scores"], step_ret, d["anchors"], d["index"], d["traj"]), args.repeat)
    diff = float(np.max(np.abs(a_base - out.advantages)))
    results["rows"].append(_row("gigpo advantages (rows)", args.turns, t_base, t_ours, f"max |diff| {diff:.1e}"))

    # 3) the padded public function from per-turn rewards (returns + grouping + both terms)
    anchors_pad = [
        list(d["anchors"][order][np.cumsum(d["lengths"])[i] - d["lengths"][i] : np.cumsum(d["lengths"])[i]])
        for i in range(b)
    ]
    groups_pad = np.arange(b) // args.traj_per_group
    t_pad, _ = timed(
        lambda: gigpo(
            d["scores"][order][np.cumsum(d["lengths"]) - d["lengths"]],
            padded,
            anchors_pad,
            groups_pad,
            mask=mask,
            gamma=gamma,
            mode="mean_norm",
        ),
        args.repeat,
    )
    results["rows"].append(_row("gigpo (padded, from rewards)", args.turns, None, t_pad, "includes discounted returns"))

    # 4) step discounted returns: the reference's per-sample search is O(N^2): smaller N
    for n_small in [min(int(x), args.turns) for x in str(args.returns_turns).split(",")]:
        small = make_rows(
            n_small,
            max(1, n_small * args.groups // args.turns),
            args.traj_per_group,
            args.states_per_group,
            args.seed + 1,
        )
        t_base, r_base = timed(lambda small=small: baseline_step_returns(small["rewards"], small["traj"], gamma), 1)
        t_ours, r_ours = timed(lambda small=small: _ours_step_returns(small, gamma), args.repeat)
        diff = float(np.max(np.abs(r_base - r_ours)))
        results["rows"].append(
            _row("step returns (per-row search vs scan)", n_small, t_base, t_ours, f"max |diff| {diff:.1e}")
        )

    results["environment"] = _environment()
    _print(results)
    _write(results, Path(args.out))
    return results


def _ours_step_returns(d, gamma):
    """Rows -> padded trajectories (one stable sort), compiled backward scan, back to rows."""
    from creditlab import discounted_returns
    from creditlab.llm import TurnBatch

    tb = TurnBatch.from_rows(np.zeros(len(d["traj"]), np.int64), d["traj"], d["rewards"])
    return tb.to_rows(discounted_returns(tb.rewards, gamma=gamma, mask=tb.mask))


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    _, ia = np.unique(a.astype(str), return_inverse=True)
    pairs = np.unique(np.stack([ia.reshape(-1), b]), axis=1)
    return pairs.shape[1] == len(np.unique(ia)) == len(np.unique(b))


def _row(name, n, t_base, t_ours, note):
    return {
        "what": name,
        "turns": n,
        "baseline_s": t_base,
        "creditlab_s": t_ours,
        "speedup": (t_base / t_ours) if t_base else None,
        "note": note,
    }


def _environment() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "git_commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _print(results: dict) -> None:
    print(f"{'what':40s} {'turns':>8s} {'baseline':>10s} {'creditlab':>10s} {'speedup':>9s}  note")
    for r in results["rows"]:
        base = f"{r['baseline_s'] * 1e3:8.1f}ms" if r["baseline_s"] else "         -"
        sp = f"{r['speedup']:8.1f}x" if r["speedup"] else "        -"
        print(f"{r['what']:40s} {r['turns']:8d} {base} {r['creditlab_s'] * 1e3:8.1f}ms {sp}  {r['note']}")


def _write(results: dict, path: Path) -> None:
    write_json(path, results, indent=2)


if __name__ == "__main__":
    main()
