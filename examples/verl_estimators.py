"""creditlab's estimators in verl: the config file, verl's registry, and a call as verl makes it.

    python examples/verl_estimators.py             # needs verl (see docs/llm.md: pip install --no-deps verl==0.9.1 ...)

What a verl user does: name the estimator in the config (``examples/verl/creditlab_turn_rloo.yaml``:
``algorithm.adv_estimator: creditlab_turn_rloo``) and make every verl process import
``creditlab.integrations.verl`` (``VERL_USE_EXTERNAL_MODULES=creditlab.integrations.verl``: verl
imports the listed modules whenever verl itself is imported; that import registers
``creditlab_turn_rloo``, ``creditlab_gigpo`` and ``creditlab_tree`` with verl's
``register_adv_est``). This script checks both without a GPU or a model:

1. in a fresh interpreter with only ``VERL_USE_EXTERNAL_MODULES`` set, ``import verl`` registers
   the three names (nothing imports creditlab by hand);
2. the config file's ``algorithm`` section names a registered estimator;
3. each estimator is fetched with ``core_algos.get_adv_estimator_fn(name)`` and called with the
   keyword arguments verl's ``compute_advantage`` passes (``token_level_rewards`` and
   ``response_mask`` ``[bs, L]``, ``index`` = the uid array, ``config`` = the ``algorithm``
   section), on verl-shaped rows built here, and the result is checked against creditlab's own
   functions on the same episodes.

The worked example of what per-turn credit changes is ``examples/verl_turn_rloo.py`` (the bias of
per-turn-index normalization, verl RFC 7244).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import creditlab as cl

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "verl" / "creditlab_turn_rloo.yaml"


def registered_by_verl_alone() -> list[str]:
    """The creditlab names in verl's registry of a fresh interpreter that only imports verl."""
    code = (
        "import verl\nfrom verl.trainer.ppo import core_algos\n"
        "print(','.join(n for n in core_algos.ADV_ESTIMATOR_REGISTRY if n.startswith('creditlab')))"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "creditlab.integrations.verl"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"importing verl with VERL_USE_EXTERNAL_MODULES failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1].split(",")


def multi_turn_rows():
    """Two prompts x 3 trajectories, each 1-3 turns of 2 policy tokens + 1 observation token (mask 0);
    a turn's reward sits on its last policy token, as a multi-turn verl rollout puts it."""
    turn_rewards = [[1.0, 0.0, 2.0], [0.0, 1.0], [1.0], [0.0, 0.0, 1.0], [2.0, 1.0], [0.0]]
    uid = np.array(["p0", "p0", "p0", "p1", "p1", "p1"], dtype=object)
    length = 9
    tl, rm = torch.zeros(len(turn_rewards), length), torch.zeros(len(turn_rewards), length, dtype=torch.int64)
    for i, rewards in enumerate(turn_rewards):
        for k, r in enumerate(rewards):
            rm[i, 3 * k : 3 * k + 2] = 1
            tl[i, 3 * k + 1] = r
    return tl, rm, uid, turn_rewards


def main() -> dict[str, float]:
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    import creditlab.integrations.verl  # noqa: F401  (registers the estimators in this process too)

    names = registered_by_verl_alone()
    print(f"1. VERL_USE_EXTERNAL_MODULES=creditlab.integrations.verl; `import verl` registers: {', '.join(names)}")
    config = OmegaConf.load(CONFIG).algorithm
    assert config.adv_estimator in core_algos.ADV_ESTIMATOR_REGISTRY, config.adv_estimator
    print(f"2. {CONFIG.relative_to(HERE.parent)}: algorithm.adv_estimator = {config.adv_estimator} (registered)")
    out: dict[str, float] = {"registered": float(len(names))}

    # creditlab_turn_rloo on multi-turn rows, as verl's compute_advantage calls it
    tl, rm, uid, turn_rewards = multi_turn_rows()
    fn = core_algos.get_adv_estimator_fn("creditlab_turn_rloo")
    adv, returns = fn(token_level_rewards=tl, response_mask=rm, config=config, index=uid)
    t = max(map(len, turn_rewards))
    padded = np.zeros((len(turn_rewards), t))
    mask = np.zeros((len(turn_rewards), t), dtype=bool)
    for i, r in enumerate(turn_rewards):
        padded[i, : len(r)], mask[i, : len(r)] = r, True
    direct = cl.llm.turn_rloo(padded, np.array([0, 0, 0, 1, 1, 1]), mask=mask, gamma=1.0).advantages
    expected = torch.zeros_like(adv)
    for i, r in enumerate(turn_rewards):
        for k in range(len(r)):
            expected[i, 3 * k : 3 * k + 2] = float(direct[i, k])
    out["turn_rloo_max_diff"] = float((adv - expected).abs().max())
    print(
        f"3. creditlab_turn_rloo through verl's registry, {tuple(adv.shape)} tokens: max |difference| to "
        f"creditlab.llm.turn_rloo broadcast to the turns' tokens = {out['turn_rloo_max_diff']:.1e}"
    )
    print(
        "   advantages of trajectory 0 (turn rewards 1, 0, 2; observation tokens get 0):",
        [round(float(x), 3) for x in adv[0]],
    )

    # creditlab_gigpo on verl-agent rows (one row per turn) with the fields verl-agent's trainer passes
    rows = [(traj, k, r) for traj, rs in enumerate(turn_rewards) for k, r in enumerate(rs)]
    bs = len(rows)
    tl_rows = torch.zeros(bs, 3)
    episode_return = [sum(rs) for rs in turn_rewards]
    for j, (traj, _, _) in enumerate(rows):
        tl_rows[j, 1] = episode_return[traj]  # verl-agent: every step row carries the episode's reward
    step_returns = torch.tensor([sum(turn_rewards[traj][k:]) for traj, k, _ in rows])
    anchors = np.array([f"turn{k}" for _, k, _ in rows], dtype=object)
    fn = core_algos.get_adv_estimator_fn("creditlab_gigpo")
    adv_g, _ = fn(
        token_level_rewards=tl_rows,
        response_mask=torch.ones(bs, 3, dtype=torch.int64),
        config=config,
        index=np.array([uid[traj] for traj, _, _ in rows], dtype=object),
        anchor_obs=anchors,
        traj_index=np.array([traj for traj, _, _ in rows]),
        step_rewards=step_returns,
    )
    out["gigpo_rows"] = float(bs)
    out["gigpo_abs_mean"] = float(adv_g.abs().mean())
    print(
        f"   creditlab_gigpo through verl's registry on {bs} verl-agent step rows: mean |advantage| {out['gigpo_abs_mean']:.3f}"
    )

    # creditlab_tree on tree rows: 2 first turns x 2 second turns share prefixes
    tree_rows = 4
    tl_t = torch.zeros(tree_rows, 6)
    rm_t = torch.zeros(tree_rows, 6, dtype=torch.int64)
    rm_t[:, 0:2] = 1
    rm_t[:, 3:5] = 1
    leaf = [1.0, 0.0, 0.0, 0.0]
    tl_t[:, 4] = torch.tensor(leaf)
    paths = np.empty(tree_rows, dtype=object)
    for i, p in enumerate([["a", "a0"], ["a", "a1"], ["b", "b0"], ["b", "b1"]]):
        paths[i] = p
    fn = core_algos.get_adv_estimator_fn("creditlab_tree")
    adv_t, _ = fn(
        token_level_rewards=tl_t,
        response_mask=rm_t,
        config=config,
        index=np.array(["q"] * tree_rows, dtype=object),
        tree_path=paths,
    )
    # first turn "a" (leaves 1, 0: mean 0.5) vs "b" (0, 0): its sibling's mean is 0, so a's advantage is +0.5
    out["tree_first_turn_a"] = float(adv_t[0, 0])
    print(
        f"   creditlab_tree through verl's registry: first-turn advantages a {float(adv_t[0, 0]):+.2f}, b {float(adv_t[2, 0]):+.2f}; "
        f"second-turn a0 {float(adv_t[0, 3]):+.2f}, a1 {float(adv_t[1, 3]):+.2f}"
    )
    return out


if __name__ == "__main__":
    main()
