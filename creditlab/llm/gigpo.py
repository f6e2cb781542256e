"""GiGPO: Group-in-Group Policy Optimization (Feng et al. 2025, arXiv 2505.10978).

Two nested group baselines, no critic:

* **episode level** (macro): ``A^E_i = (R_i - mean_g R) / F`` over the episode group g of
  trajectory i (same task / prompt / start state);
* **step level** (micro): turns of the same episode group whose *anchor state* (the environment
  state without history) is the same form a step group; ``A^S_{i,t} = (G_{i,t} - mean_s G) / F``
  with ``G_{i,t} = sum_{k >= t} gamma^(k-t) r_{i,k}`` the discounted return from turn t;
* combined: ``A_{i,t} = A^E_i + step_weight * A^S_{i,t}``.

``F`` is the group's std plus ``eps`` (``mode="mean_std_norm"``) or 1 (``"mean_norm"``).

Grouping is one hash (or one vectorized ``unique``) per turn: O(N) in the number of turns, never
a per-sample search (the reference implementation runs ``np.where`` over the whole batch once per
sample and per group; see benchmarks/bench_gigpo.py for the measured difference).

Deviations from verl-agent, on purpose:

* ``episode_stats="trajectory"`` (default) counts each trajectory once in its group's mean and
  std, the paper's definition. verl-agent's default (``compute_mean_std_cross_all_data=True``)
  counts every *turn row*, so long trajectories weigh more; that is ``episode_stats="step"``.
* An episode group with a single trajectory gets ``A^E = 0``; verl-agent uses mean 0 and std 1
  there, i.e. hands the raw episode reward out as an advantage.
* A missing episode reward (None) gets ``A^E = 0`` and is left out of its group's statistics;
  its step-level term is kept (its per-turn rewards are still valid).
* A ``None`` anchor means "no comparable state": the turn is never grouped (step term 0);
  verl-agent raises a TypeError. Anchors compare by value as in verl-agent (an int array and a
  float array with equal entries are one state), but the shape is kept (verl-agent flattens).

Step groups of size 1 get ``A^S = 0`` (mean = own value), as in verl-agent; so do step groups
whose returns are all equal. Neither is suspicious in GiGPO (most anchors are visited once), so
no warning is issued; the counts are in ``metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from .._adapters import outcomes_or_none
from .._arrays import ArrayLike, Backend, GroupIndex, as_group_index, as_scores, check_positive, check_unit
from .._steps import step_inputs
from ..errors import MissingColumnError, RangeError, ShapeError
from ..outputs import AdvantageOutput
from ..registry import register_method
from ..segments import GroupStats, group_stats
from ._common import group_normalize, turn_returns
from .anchors import anchor_ids, hash_ids, similarity_clusters

__all__ = ["gigpo", "gigpo_rows", "step_groups"]

Mode = Literal["mean_std_norm", "mean_norm"]


def gigpo(
    episode_rewards: ArrayLike | None,
    step_rewards: ArrayLike,
    anchors: Any,
    group_ids: ArrayLike | GroupIndex,
    *,
    mask: ArrayLike | None,
    gamma: float = 0.95,
    step_weight: float = 1.0,
    mode: Mode = "mean_std_norm",
    episode_stats: Literal["trajectory", "step"] = "trajectory",
    similarity: float | None = None,
    similarity_fn: Callable[[Any, Any], float] | None = None,
    eps: float = 1e-6,
    unbiased: bool = True,
    episode_present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """GiGPO advantages per turn: episode-group term plus anchor-state step-group term.

    Args:
        episode_rewards: float[B] -- outcome of each trajectory (None = missing). ``None`` for
            the whole argument uses the undiscounted sum of ``step_rewards`` (verl-agent's choice).
        step_rewards: float[B, T] -- environment reward received after turn t; 0 is a valid
            reward (the turn still counts), padding is ignored.
        anchors: the anchor state of every turn: a sequence of B sequences of hashable keys (one
            per valid turn; strings, tuples, NumPy arrays, ...; None = no comparable state), or
            an ``int[B, T]`` / ``str[B, T]`` array.
        group_ids: int[B] -- episode group of each trajectory (same task / prompt / seed).
        mask: bool[B, T] -- prefix mask of valid turns (None: all valid).
        gamma: discount of the step-level returns (paper: 0.95).
        step_weight: weight ``omega`` of the step-level term (paper: 1).
        mode: "mean_std_norm" (divide by group std + eps; ALFWorld recipe) or "mean_norm"
            (centre only; WebShop recipe).
        episode_stats: "trajectory" (each trajectory once; the paper) or "step" (each turn
            row once; verl-agent's default).
        similarity: None for exact anchor matching, or a threshold in (0, 1]: distinct text
            anchors of one episode group whose difflib ratio reaches it share a step group.
        similarity_fn: ``f(a, b) -> float`` replacing the text ratio (with ``similarity``).
        eps: added to the std in "mean_std_norm" (verl-agent: 1e-6).
        unbiased: N-1 std (torch, verl-agent) or N.
        episode_present: bool[B] -- optional, False marks a missing episode reward.
        nan_is_missing: read NaN episode rewards as missing.

    Returns:
        AdvantageOutput(advantages float[B, T] (0 on padding), returns float[B, T] (the
        discounted step returns G, 0 on padding), metrics). Same array kind as ``step_rewards``.

    Example (one group of two trajectories; turn 0 shares anchor "s"; gamma = 1, mean_norm):
        >>> import numpy as np
        >>> out = gigpo([1.0, 0.0], np.array([[0.0, 1.0], [0.0, 0.0]]), [["s", "a"], ["s", "b"]],
        ...             [0, 0], mask=None, gamma=1.0, mode="mean_norm")
        >>> out.advantages   # A^E = +-0.5; turn 0: G = [1, 0] -> A^S = +-0.5; turn 1: singletons
        array([[ 1. ,  0.5],
               [-1. , -0.5]])
    """
    if mode not in ("mean_std_norm", "mean_norm"):
        raise RangeError(f"mode must be 'mean_std_norm' or 'mean_norm'; got {mode!r}")
    if episode_stats not in ("trajectory", "step"):
        raise RangeError(f"episode_stats must be 'trajectory' or 'step'; got {episode_stats!r}")
    gamma = check_unit(gamma, "gamma")
    eps = check_positive(eps, "eps", allow_zero=True)
    step_weight = _finite(step_weight, "step_weight")
    backend = Backend.of(step_rewards, episode_rewards)
    s = step_inputs(step_rewards, mask=mask, rewards_name="step_rewards")
    b, t = s.shape
    dev = s.rewards.device
    if episode_rewards is None:
        if episode_present is not None:
            raise RangeError(
                "episode_present needs episode_rewards; with episode_rewards=None every episode has a reward"
            )
        r_ep = s.rewards.to(torch.float64).sum(dim=1)
        present = torch.ones(b, dtype=torch.bool, device=dev)
    else:
        r_ep, present = as_scores(
            episode_rewards, "episode_rewards", present=episode_present, nan_is_missing=nan_is_missing, device=dev
        )
        if r_ep.shape != (b,):
            raise ShapeError(
                f"episode_rewards has shape {tuple(r_ep.shape)} but step_rewards has {b} episodes; expected ({b},)"
            )
    groups = as_group_index(group_ids, "group_ids", b, device=dev)
    returns = turn_returns(s.rewards, s.lengths, gamma)
    flat_b, flat_t = torch.nonzero(s.mask, as_tuple=True)  # row-major: episode 0's turns first
    ids, keys = anchor_ids(anchors, s.lengths.cpu().numpy(), t)
    steps = step_groups(groups.index[flat_b], ids, keys, similarity=similarity, similarity_fn=similarity_fn)
    a_ep, ep_st = episode_advantages(
        r_ep, present, groups, s.lengths, mode=mode, episode_stats=episode_stats, eps=eps, unbiased=unbiased
    )
    g_flat = returns[flat_b, flat_t]
    a_step_flat, st = _normalize(g_flat, torch.ones_like(flat_b, dtype=torch.bool), steps, mode, eps, unbiased)
    a_step = torch.zeros((b, t), dtype=torch.float64, device=dev)
    a_step[flat_b, flat_t] = a_step_flat
    adv = s.zero_pad(a_ep[:, None] + step_weight * a_step)
    metrics = _metrics(a_ep, a_step_flat, st, steps, ep_st, groups, present, step_weight, b, flat_b.numel())
    return AdvantageOutput(backend.out(adv.to(s.rewards.dtype)), backend.out(returns), metrics)


def gigpo_rows(
    episode_rewards: ArrayLike,
    step_returns: ArrayLike,
    anchors: Any,
    group_ids: ArrayLike,
    traj_ids: ArrayLike,
    *,
    step_weight: float = 1.0,
    mode: Mode = "mean_norm",
    episode_stats: Literal["trajectory", "step"] = "trajectory",
    similarity: float | None = None,
    similarity_fn: Callable[[Any, Any], float] | None = None,
    eps: float = 1e-6,
    unbiased: bool = True,
) -> AdvantageOutput:
    """GiGPO on verl-agent's layout: one row per turn, flat arrays, any row order.

    Args:
        episode_rewards: float[N] -- the episode reward carried by each turn row (verl-agent puts
            the trajectory's reward on every row; each row's own value is normalized).
        step_returns: float[N] -- the discounted return from each turn (verl-agent's
            ``step_rewards``, already discounted).
        anchors: N hashable anchor keys (or an int[N] / str[N] array); None = never grouped.
        group_ids: [N] -- episode group (verl's ``uid``), ints or strings.
        traj_ids: [N] -- trajectory id (verl-agent's ``traj_uid``), unique within a group.
        step_weight, mode, episode_stats, similarity, similarity_fn, eps, unbiased: as in
            :func:`gigpo` (mode default "mean_norm", verl-agent's default).

    Returns:
        AdvantageOutput(advantages float[N], None, metrics).

    Example (two trajectories of one group, rows interleaved; turn 0 shares anchor "s"):
        >>> gigpo_rows([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], ["s", "s", "a", "b"],
        ...            ["q", "q", "q", "q"], ["t1", "t2", "t1", "t2"]).advantages.tolist()
        [1.0, -1.0, 0.5, -0.5]
    """
    if mode not in ("mean_std_norm", "mean_norm"):
        raise RangeError(f"mode must be 'mean_std_norm' or 'mean_norm'; got {mode!r}")
    if episode_stats not in ("trajectory", "step"):
        raise RangeError(f"episode_stats must be 'trajectory' or 'step'; got {episode_stats!r}")
    eps = check_positive(eps, "eps", allow_zero=True)
    step_weight = _finite(step_weight, "step_weight")
    backend = Backend.of(step_returns, episode_rewards)
    g_ret, _ = as_scores(step_returns, "step_returns")
    n = g_ret.shape[0]
    if n == 0:
        raise ShapeError("step_returns is empty; expected one value per turn row")
    dev = g_ret.device
    r_rows, present = as_scores(episode_rewards, "episode_rewards", device=dev)
    if r_rows.shape != (n,):
        raise ShapeError(f"episode_rewards has shape {tuple(r_rows.shape)}; expected ({n},) like step_returns")
    groups = _factorize(group_ids, "group_ids", n, dev)
    traj = _factorize(traj_ids, "traj_ids", n, dev)
    # one episode per (group, trajectory) pair
    _, ep_index = torch.unique(groups.index * max(traj.num_groups, 1) + traj.index, return_inverse=True)
    scale = mode == "mean_std_norm"
    if episode_stats == "step":
        a_ep, ep_st = group_normalize(r_rows, present, groups, scale=scale, eps=eps, unbiased=unbiased)
    else:
        b = int(ep_index.max()) + 1
        first = torch.full((b,), n, dtype=torch.int64, device=dev).scatter_reduce(
            0, ep_index, torch.arange(n, device=dev), reduce="amin"
        )
        ep_groups = GroupIndex(groups.index[first], groups.num_groups)
        ep_st = group_stats(r_rows[first], present[first], ep_groups, unbiased=unbiased)
        gi = groups.index
        centered = r_rows.to(torch.float64) - ep_st.mean[gi]
        if scale:
            sd = ep_st.std[gi] + eps
            centered = centered / torch.where(sd > 0, sd, torch.ones_like(sd))
        a_ep = torch.where(ep_st.constant[gi] | ~present, torch.zeros_like(centered), centered)
    if len(anchors) != n:
        raise ShapeError(f"anchors has {len(anchors)} entries; expected {n} (one per turn row)")
    if isinstance(anchors, torch.Tensor) or (isinstance(anchors, np.ndarray) and anchors.dtype != object):
        ids, keys = anchor_ids(anchors.reshape(-1, 1), np.ones(n, dtype=np.int64), 1)
    else:
        ids, keys = hash_ids(anchors.tolist() if isinstance(anchors, np.ndarray) else list(anchors))
    steps = step_groups(groups.index, ids, keys, similarity=similarity, similarity_fn=similarity_fn)
    a_step, st = group_normalize(
        g_ret, torch.ones(n, dtype=torch.bool, device=dev), steps, scale=scale, eps=eps, unbiased=unbiased
    )
    adv = a_ep + step_weight * a_step
    sizes = st.count[st.count > 0].to(torch.float64)
    metrics = {
        "num_turns": float(n),
        "num_episodes": float(int(ep_index.max()) + 1),
        "num_missing": float((~present).sum()),
        "gigpo/num_step_groups": float(sizes.numel()),
        "gigpo/step_group_size_mean": float(sizes.mean()) if sizes.numel() else 0.0,
        "gigpo/frac_turns_in_shared_step_groups": float((st.count[steps.index] > 1).to(torch.float64).mean()),
        "gigpo/episode_advantage_abs_mean": float(a_ep.abs().mean()),
        "gigpo/step_advantage_abs_mean": float(a_step.abs().mean()),
    }
    return AdvantageOutput(backend.out(adv.to(g_ret.dtype)), None, metrics)


def step_groups(
    turn_groups: torch.Tensor,
    anchor_id: np.ndarray,
    keys: list[Any] | None = None,
    *,
    similarity: float | None = None,
    similarity_fn: Callable[[Any, Any], float] | None = None,
) -> GroupIndex:
    """Step groups = (episode group, anchor) pairs, factorized in one vectorized pass.

    Args:
        turn_groups: int64[N] -- dense episode-group index of each turn.
        anchor_id: int64[N] -- anchor id of each turn (from :func:`anchor_ids`).
        keys: anchor of each id (needed with ``similarity``).
        similarity: None (exact) or a threshold in (0, 1] for text-similarity clustering: within
            each episode group, distinct anchors are visited in the order of their first turn
            (the group's own order, as verl-agent), so a group's clusters never depend on the
            rest of the batch.

    Returns:
        GroupIndex over the N turns.
    """
    a = torch.from_numpy(np.ascontiguousarray(anchor_id, dtype=np.int64)).to(turn_groups.device)
    n = a.numel()
    if n == 0:
        return GroupIndex(a, 0)
    width = int(a.max()) + 1
    combined = turn_groups.to(torch.int64) * width + a
    pairs, inverse = torch.unique(combined, return_inverse=True)
    if similarity is None:
        return GroupIndex(inverse, int(pairs.numel()))
    if keys is None:
        raise RangeError("similarity grouping needs the anchor keys (pass anchors as strings or objects)")
    pair_group = (pairs // width).cpu().numpy()
    pair_anchor = (pairs % width).cpu().numpy()
    # verl-agent's leader rule visits a group's turns in batch order. Order each group's distinct
    # anchors by their first turn in the batch: anchor ids number anchors by first appearance in
    # the *whole* batch, so ordering by id would let other groups decide which anchor leads.
    first_turn = torch.full((pairs.numel(),), n, dtype=torch.int64, device=inverse.device)
    first = first_turn.scatter_reduce(0, inverse, torch.arange(n, device=inverse.device), reduce="amin").cpu().numpy()
    order = np.lexsort((first, pair_group))
    cluster = np.empty(pairs.numel(), dtype=np.int64)
    cluster[order] = similarity_clusters(
        pair_group[order], [keys[i] for i in pair_anchor[order].tolist()], float(similarity), similarity_fn
    )
    idx = torch.from_numpy(cluster).to(inverse.device)[inverse]
    return GroupIndex(idx, int(cluster.max()) + 1)


def episode_advantages(
    rewards: torch.Tensor,
    present: torch.Tensor,
    groups: GroupIndex,
    lengths: torch.Tensor,
    *,
    mode: Mode,
    episode_stats: str,
    eps: float,
    unbiased: bool,
) -> tuple[torch.Tensor, GroupStats]:
    """Episode-level GiGPO term, float64[B]; 0 for missing rewards and degenerate groups."""
    if episode_stats == "trajectory":
        return _normalize(rewards, present, groups, mode, eps, unbiased)
    # verl-agent: every turn row carries its trajectory's reward, so a trajectory weighs by its length.
    rows = torch.repeat_interleave(torch.arange(rewards.shape[0], device=rewards.device), lengths)
    row_groups = GroupIndex(groups.index[rows], groups.num_groups)
    st = group_stats(rewards[rows], present[rows], row_groups, unbiased=unbiased)
    gi = groups.index
    centered = rewards.to(torch.float64) - st.mean[gi]
    dead = st.constant[gi] | ~present
    if mode == "mean_std_norm":
        scale = st.std[gi] + eps
        centered = centered / torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(dead, torch.zeros_like(centered), centered), st


def _factorize(ids: Any, name: str, n: int, dev: torch.device) -> GroupIndex:
    """Ids -> dense GroupIndex; string/object ids are hashed (O(N)) instead of sorted."""
    if isinstance(ids, (list, tuple)) or (isinstance(ids, np.ndarray) and ids.dtype.kind in "OUS"):
        values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if len(values) != n:
            raise ShapeError(f"{name} has {len(values)} entries; expected {n} (one per turn row)")
        if values and not isinstance(values[0], (str, bytes)) and isinstance(values[0], (int, np.integer)):
            return as_group_index(np.asarray(values), name, n, device=dev)
        codes, uniq = hash_ids(values)
        return GroupIndex(torch.from_numpy(codes).to(dev), len(uniq))
    return as_group_index(ids, name, n, device=dev)


def _normalize(values, present, groups: GroupIndex, mode: str, eps: float, unbiased: bool):
    return group_normalize(values, present, groups, scale=mode == "mean_std_norm", eps=eps, unbiased=unbiased)


def _finite(x: float, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError) as exc:
        raise RangeError(f"{name} must be a number; got {x!r}") from exc
    if not math.isfinite(v):
        raise RangeError(f"{name} must be finite; got {x!r}")
    return v


def _metrics(
    a_ep, a_step, st: GroupStats, steps: GroupIndex, ep_st: GroupStats, groups, present, w, b, n
) -> dict[str, float]:
    sizes = st.count[st.count > 0].to(torch.float64)
    in_shared = (st.count[steps.index] > 1) if n else torch.zeros(0, dtype=torch.bool)
    ep_abs = float(a_ep[present].abs().mean()) if bool(present.any()) else 0.0
    step_abs = float(a_step.abs().mean()) if n else 0.0
    total = ep_abs + abs(w) * step_abs
    ep_count = group_stats(torch.zeros_like(present, dtype=torch.float64), present, groups).count
    return {
        "num_episodes": float(b),
        "num_turns": float(n),
        "num_missing": float((~present).sum()),
        "groups/num": float((ep_count > 0).sum()),
        "groups/num_singleton": float((ep_count == 1).sum()),
        "groups/num_zero_std": float((ep_st.constant & (ep_st.count > 1)).sum()),
        "gigpo/num_step_groups": float(sizes.numel()),
        "gigpo/step_group_size_mean": float(sizes.mean()) if sizes.numel() else 0.0,
        "gigpo/step_group_size_max": float(sizes.max()) if sizes.numel() else 0.0,
        "gigpo/frac_turns_in_shared_step_groups": float(in_shared.to(torch.float64).mean()) if n else 0.0,
        "gigpo/episode_advantage_abs_mean": ep_abs,
        "gigpo/step_advantage_abs_mean": step_abs,
        "gigpo/step_advantage_share": abs(w) * step_abs / total if total > 0 else 0.0,
    }


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "gigpo",
    family="llm",
    kind="advantages",
    needs=("rewards", "group_ids", "extras.anchors"),
    summary="GiGPO: episode-group advantage + anchor-state step-group advantage per turn",
    source="Feng et al. 2025, arXiv 2505.10978",
)
def _run_gigpo(
    episodes,
    *,
    gamma: float = 0.95,
    step_weight: float = 1.0,
    mode: Mode = "mean_std_norm",
    episode_stats: Literal["trajectory", "step"] = "trajectory",
    similarity: float | None = None,
) -> AdvantageOutput:
    """Turns are the steps; anchor-state keys per turn in ``episodes.extras["anchors"]``."""
    episodes.require("group_ids", method="gigpo")
    if "anchors" not in episodes.extras:
        raise MissingColumnError("method 'gigpo' needs per-turn anchor-state keys in episodes.extras['anchors']")
    o, p = outcomes_or_none(episodes)
    return gigpo(
        o,
        episodes.rewards,
        episodes.extras["anchors"],
        episodes.group_ids,
        mask=episodes.mask,
        gamma=gamma,
        step_weight=step_weight,
        mode=mode,
        episode_stats=episode_stats,
        similarity=similarity,
        episode_present=p,
    )
