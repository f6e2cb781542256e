# ruff: noqa: B023  (closures are timed immediately inside the loop that defines them)
"""Speed of the estimators verl ships (ReMax, OPO, GRPO pass@k, GPG, REINFORCE++-baseline, optimal
token baseline, KL penalty) in creditlab next to verl 0.9.1's own, measured in the same run.

    .venv/bin/python benchmarks/bench_llm_estimators.py            # a few minutes
    .venv/bin/python benchmarks/bench_llm_estimators.py --quick    # small shapes, seconds

Both sides take verl's tensors (``token_level_rewards[bs, L]``, ``response_mask[bs, L]``, string
``uid``s in groups of ``n``) and return per-token advantages ``[bs, L]``: creditlab's per-response
estimators are timed with the score sum and the broadcast back to tokens included. MaxRL has no
installable peer (SkyRL); it is timed against SkyRL's formula restated as its per-uid loop.
Tree-GRPO's ``tree`` estimator is verl's GRPO by prompt uid plus by tree uid; creditlab's
``creditlab_tree`` (``tree_method="tree_grpo"``) is timed on the same rows, forest construction
included.

Each round times creditlab and the peer back to back (interleaved, after a warm-up); a round's
ratio is peer time / creditlab time (> 1: creditlab is faster). Printed: the median time of each
over the rounds, and the median ratio with its min-max over the rounds. One torch thread. The
machine is shared: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import creditlab as cl
import creditlab.advantage as cla
from creditlab.errors import DegenerateGroupWarning
from creditlab.integrations.verl import compute_tree_advantage

warnings.simplefilter("ignore", DegenerateGroupWarning)
torch.set_num_threads(1)

try:
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo import core_algos as verl_algos
except Exception:  # pragma: no cover - verl is not a dependency
    verl_algos = None


def verl_batch(bs: int, length: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=bs)
    mask = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float32))
    tl = torch.zeros(bs, length)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(
        rng.integers(0, 2, size=bs).astype(np.float32)
    )
    index = np.array([f"uid-{i // n}" for i in range(bs)], dtype=object)
    logits = torch.from_numpy(rng.normal(size=(bs, length, 4)).astype(np.float32))
    probs = torch.softmax(logits, -1)
    old_lp = torch.log(probs[..., 0])
    spsq = (probs**2).sum(-1)
    ref_lp = old_lp + torch.from_numpy(rng.normal(0, 0.1, size=(bs, length)).astype(np.float32))
    base = torch.from_numpy(rng.integers(0, 2, size=bs).astype(np.float32))
    tree_uid = np.array([f"tree-{i // (n // 2)}" for i in range(bs)], dtype=object)  # 2 trees per prompt
    return dict(
        tl=tl,
        mask=mask,
        index=index,
        lengths=torch.from_numpy(lengths),
        old_lp=old_lp,
        spsq=spsq,
        ref_lp=ref_lp,
        base=base,
        tree_uid=tree_uid,
    )


def per_response(fn):
    """creditlab's per-response estimator on verl's tensors: scores, estimator, broadcast to tokens."""

    def run(d):
        scores = d["tl"].sum(-1)
        adv = fn(scores, d)
        return adv[:, None] * d["mask"]

    return run


def skyrl_maxrl(tl, mask, index, epsilon=1e-6):
    """SkyRL's compute_maxrl_advantage, restated (per-uid dict loop)."""
    scores = tl.sum(dim=-1)
    id2score = {}
    for i in range(scores.shape[0]):
        id2score.setdefault(index[i], []).append(scores[i])
    id2mean = {k: (torch.tensor(0.0) if len(v) == 1 else torch.mean(torch.stack(v))) for k, v in id2score.items()}
    for i in range(scores.shape[0]):
        if len(id2score[index[i]]) > 1:
            scores[i] = (scores[i] - id2mean[index[i]]) / (id2mean[index[i]] + epsilon)
    return scores.unsqueeze(-1) * mask


def tree_grpo_peer(d):
    """Tree-GRPO's ``adv_estimator=tree`` (AMAP-ML/Tree-GRPO ray_trainer_ts.py): verl's GRPO z-score by
    prompt uid plus by tree uid."""
    a, _ = verl_algos.compute_grpo_outcome_advantage(d["tl"], d["mask"], d["index"])
    b, _ = verl_algos.compute_grpo_outcome_advantage(d["tl"], d["mask"], d["tree_uid"])
    return a + b


def cases():
    """(name, creditlab(d), peer name, peer(d))."""
    cfg = AlgoConfig(norm_adv_by_std_in_grpo=True) if verl_algos else None
    out = [
        (
            "remax",
            lambda d: cla.remax(d["tl"], d["base"], mask=d["mask"].bool()).advantages,
            "verl remax",
            lambda d: verl_algos.compute_remax_outcome_advantage(d["tl"], d["base"], d["mask"])[0],
        ),
        (
            "opo",
            per_response(lambda s, d: cla.opo(s, d["index"], d["lengths"]).advantages),
            "verl opo",
            lambda d: verl_algos.compute_opo_outcome_advantage(d["tl"], d["mask"], d["index"])[0],
        ),
        (
            "grpo_passk",
            per_response(lambda s, d: cla.grpo_passk(s, d["index"]).advantages),
            "verl grpo_passk",
            lambda d: verl_algos.compute_grpo_passk_outcome_advantage(d["tl"], d["mask"], d["index"], config=cfg)[0],
        ),
        (
            "gpg",
            per_response(lambda s, d: cla.gpg(s, d["index"]).advantages),
            "verl gpg",
            lambda d: verl_algos.compute_gpg_outcome_advantage(d["tl"], d["mask"], d["index"])[0],
        ),
        (
            "reinforce_pp_baseline (token weights)",
            per_response(lambda s, d: cl.reinforce_pp_baseline(s, d["index"], weights=d["lengths"]).advantages),
            "verl reinforce_plus_plus_baseline",
            lambda d: verl_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(d["tl"], d["mask"], d["index"])[
                0
            ],
        ),
        (
            "optimal_token_baseline",
            lambda d: (
                cla.optimal_token_baseline(d["tl"], d["mask"].bool(), d["index"], d["old_lp"], d["spsq"]).advantages
            ),
            "verl optimal_token_baseline",
            lambda d: verl_algos.compute_optimal_token_baseline_advantage(
                d["tl"], d["mask"], d["index"], d["old_lp"], d["spsq"]
            )[0],
        ),
        (
            "optimal_token_baseline (policy_token)",
            lambda d: (
                cla.optimal_token_baseline(
                    d["tl"], d["mask"].bool(), d["index"], d["old_lp"], d["spsq"], align="policy_token"
                ).advantages
            ),
            "verl tir_optimal_token_baseline",
            lambda d: verl_algos.compute_multi_turn_optimal_token_baseline_advantage(
                d["tl"], d["mask"], d["index"], d["old_lp"], d["spsq"]
            )[0],
        ),
        (
            "kl_penalty k3",
            lambda d: cla.kl_penalty(d["old_lp"], d["ref_lp"], kind="k3"),
            "verl kl_penalty low_var_kl",
            lambda d: verl_algos.kl_penalty(d["old_lp"], d["ref_lp"], "low_var_kl"),
        ),
        (
            "kl_in_reward k1",
            lambda d: cla.kl_in_reward(d["tl"], d["old_lp"], d["ref_lp"], d["mask"].bool(), coef=0.001).rewards,
            "verl k1 reward (kl_penalty * mask)",
            lambda d: d["tl"] - 0.001 * verl_algos.kl_penalty(d["old_lp"], d["ref_lp"], "kl") * d["mask"],
        ),
        (
            "maxrl",
            per_response(lambda s, d: cla.maxrl(s, d["index"]).advantages),
            "SkyRL's formula (restated loop)",
            lambda d: skyrl_maxrl(d["tl"], d["mask"], d["index"]),
        ),
        (
            "creditlab_tree (tree_grpo, tree_uid)",
            lambda d: compute_tree_advantage(
                d["tl"], d["mask"], d["index"], tree_uid=d["tree_uid"], tree_method="tree_grpo"
            )[0],
            "Tree-GRPO: verl grpo by uid + by tree_uid",
            lambda d: tree_grpo_peer(d),
        ),
    ]
    return out


def measure(fn_a, fn_b, d, rounds: int):
    fn_a(d)
    fn_b(d)
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn_a(d)
        t1 = time.perf_counter()
        fn_b(d)
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = [b / a for a, b in zip(ta, tb)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 rounds")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if verl_algos is None:
        raise SystemExit(
            "verl is not importable: pip install --no-deps verl==0.9.1 plus its import dependencies (docs/llm.md)"
        )
    shapes = [(256, 64, 8)] if args.quick else [(1024, 512, 8), (8192, 64, 8)]
    rounds = 3 if args.quick else args.rounds
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
        ).stdout.strip()
    except OSError:  # pragma: no cover
        commit = "?"
    import verl

    print(
        f"creditlab {cl.__version__} ({commit}), verl {verl.__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}, threads {torch.get_num_threads()}, rounds {rounds}"
    )
    print()
    print("| estimator | bs x L (group n) | creditlab ms | peer | peer ms | peer / creditlab: median (min-max) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for bs, length, n in shapes:
        d = verl_batch(bs, length, n)
        for name, ours, peer_name, peer in cases():
            a, b, r, lo, hi = measure(ours, peer, d, rounds)
            print(
                f"| {name} | {bs} x {length} ({n}) | {a * 1e3:.2f} | {peer_name} | {b * 1e3:.2f} | {r:.1f}x ({lo:.1f}-{hi:.1f}) |"
            )


if __name__ == "__main__":
    main()
