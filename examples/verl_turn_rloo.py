"""Per-turn advantages in verl: the bias of per-turn-index normalization (verl RFC 7244) and turn_rloo.

The setting. A multi-turn agent answers a task in 3 turns; each turn earns an intermediate
reward (0 or 1, mean 0.5) and the last turn also the outcome (0 or 1). At its first turn the
policy decides, with probability 1/2, to take one *extra* turn (another tool call) that earns 0
and changes nothing else. Taking it has no effect on the return, so the policy gradient for
that decision must be 0: the advantage at the decision turn must have the same mean whether or
not the extra turn was taken. We measure

    gap = mean A(turn 0 | extra turn taken) - mean A(turn 0 | not taken)

(for a Bernoulli(1/2) decision the expected gradient is proportional to it) with its standard
error, over groups of trajectories of the same task.

The rows are verl's: one row per trajectory, ``token_level_rewards[bs, L]`` and
``response_mask[bs, L]`` over the response (each turn = 2 policy tokens, then 1 observation token
with mask 0), ``index`` = the task uid. Two estimators with verl's estimator signature:

* ``per_turn_index``: the construction ported in the RFC (MT-GRPO style): normalize the rewards
  of turn index k across the group's trajectories that have a turn k, then sum them from turn t
  to the trajectory's end. The number of group means subtracted is the trajectory's own number
  of turns, so "take another turn" gets a hidden bonus of ``-E[reward]``.
* ``creditlab_turn_rloo`` (:func:`creditlab.integrations.verl.compute_turn_rloo_advantage`):
  return-to-go minus the leave-one-out mean of the other trajectories' returns from the same
  turn index; nothing in the baseline depends on the trajectory's own turns.

With verl installed (``pip install --no-deps verl==0.9.1`` plus its import dependencies, see
docs/llm.md) both are registered with verl's ``register_adv_est`` and called the way verl's
``compute_advantage`` calls an estimator; without it they are called directly.

    python examples/verl_turn_rloo.py                 # 2,000 groups of 8
    python examples/verl_turn_rloo.py --groups 200 --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch

from creditlab.advantage import broadcast_to_tokens
from creditlab.integrations.verl import compute_turn_rloo_advantage
from creditlab.llm import turn_ids_from_response_mask, turn_values_from_tokens

TOKENS_PER_TURN = 2  # policy tokens per turn; each turn is followed by one observation token


def make_rows(groups: int, group_size: int, seed: int):
    """verl-shaped rows. Returns (token_level_rewards, response_mask, index, took_extra_turn)."""
    rng = np.random.default_rng(seed)
    bs = groups * group_size
    extra = rng.random(bs) < 0.5
    turn_rewards = []
    for i in range(bs):
        r = (rng.random(3) < 0.5).astype(float)  # intermediate rewards of the 3 task turns
        r[-1] += float(rng.random() < 0.5)  # the outcome, on the last turn
        turn_rewards.append([r[0], 0.0, r[1], r[2]] if extra[i] else list(r))  # the extra turn earns 0
    length = 4 * (TOKENS_PER_TURN + 1)
    tl = torch.zeros(bs, length)
    rm = torch.zeros(bs, length, dtype=torch.int64)
    for i, rewards in enumerate(turn_rewards):
        for k, r in enumerate(rewards):
            start = k * (TOKENS_PER_TURN + 1)
            rm[i, start : start + TOKENS_PER_TURN] = 1
            tl[i, start + TOKENS_PER_TURN - 1] = r  # verl puts a turn's reward on its last token
    index = np.array([f"task-{i // group_size}" for i in range(bs)], dtype=object)
    return tl, rm, index, extra


def compute_per_turn_index_advantage(token_level_rewards, response_mask, index=None, config=None, **kwargs):
    """The per-turn-index construction of verl RFC 7244, in verl's estimator signature.

    ``z_{i,k} = r_{i,k} - mean_{j in group, T_j > k} r_{j,k}``;  ``A_{i,t} = sum_{k=t}^{T_i - 1} z_{i,k}``.
    """
    rm = response_mask.bool()
    turn_ids, num_turns = turn_ids_from_response_mask(rm)
    r = turn_values_from_tokens(token_level_rewards, turn_ids, rm, include_masked=True).double()  # [bs, T]
    t = r.shape[1]
    valid = torch.arange(t)[None, :] < num_turns[:, None]
    _, g = np.unique(np.asarray(index).astype(str), return_inverse=True)
    g = torch.from_numpy(g.reshape(-1))
    n_groups = int(g.max()) + 1
    total = torch.zeros(n_groups, t, dtype=torch.float64).index_add_(0, g, r * valid)
    count = torch.zeros(n_groups, t, dtype=torch.float64).index_add_(0, g, valid.double())
    z = torch.where(valid, r - (total / count.clamp(min=1))[g], torch.zeros_like(r))
    adv_turns = z.flip(1).cumsum(1).flip(1) * valid
    adv = broadcast_to_tokens(adv_turns, turn_ids, rm)
    return adv.to(token_level_rewards.dtype), adv.to(token_level_rewards.dtype)


def estimators() -> tuple[dict, str]:
    """The two estimators, fetched from verl's registry when verl is importable."""
    try:
        from verl.trainer.ppo import core_algos

        from creditlab.integrations.verl import register_with_verl
    except Exception:  # noqa: BLE001 - verl absent: call the functions directly
        return {
            "per_turn_index": compute_per_turn_index_advantage,
            "creditlab_turn_rloo": compute_turn_rloo_advantage,
        }, "direct calls"
    register_with_verl()
    if core_algos.ADV_ESTIMATOR_REGISTRY.get("per_turn_index") is not compute_per_turn_index_advantage:
        core_algos.ADV_ESTIMATOR_REGISTRY.pop("per_turn_index", None)
        core_algos.register_adv_est("per_turn_index")(compute_per_turn_index_advantage)
    fetch = core_algos.get_adv_estimator_fn
    return {name: fetch(name) for name in ("per_turn_index", "creditlab_turn_rloo")}, "verl's estimator registry"


def measure(groups: int = 2000, group_size: int = 8, seed: int = 0) -> dict:
    tl, rm, index, extra = make_rows(groups, group_size, seed)
    fns, how = estimators()
    config = {"gamma": 1.0}
    out = {"groups": groups, "group_size": group_size, "seed": seed, "called_through": how, "estimators": {}}
    for name, fn in fns.items():
        adv, _ = fn(token_level_rewards=tl, response_mask=rm, config=config, index=index)  # as verl's compute_advantage
        a0 = adv[:, 0].double().numpy()  # the decision turn's first token
        gap = a0[extra].mean() - a0[~extra].mean()
        se = math.sqrt(a0[extra].var(ddof=1) / extra.sum() + a0[~extra].var(ddof=1) / (~extra).sum())
        out["estimators"][name] = {"gap": float(gap), "se": float(se), "gap_in_se": float(gap / se)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=2000, help="tasks (groups)")
    parser.add_argument("--group-size", type=int, default=8, help="trajectories per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the measurement as JSON")
    args = parser.parse_args(argv)
    res = measure(args.groups, args.group_size, args.seed)
    if args.json:
        print(json.dumps(res))
        return 0
    print(
        f"{res['groups']} tasks x {res['group_size']} trajectories, estimators called through {res['called_through']}"
    )
    print("gap = mean advantage at the decision turn when the (useless) extra turn was taken minus when not;")
    print("an unbiased estimator gives 0 within a few standard errors.\n")
    print(f"{'estimator':<22} {'gap':>8} {'SE':>8} {'gap / SE':>9}")
    for name, r in res["estimators"].items():
        print(f"{name:<22} {r['gap']:>+8.3f} {r['se']:>8.3f} {r['gap_in_se']:>+9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
