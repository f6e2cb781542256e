"""Turn-level returns with a group baseline that stays unbiased when turn counts differ.

The estimator (``turn_rloo``):

    G_{i,t} = sum_{k >= t} gamma^(k-t) r_{i,k}            (return-to-go from turn t)
    b_{i,t} = mean_{j != i in i's group} G_{j, min(t, T_j - 1)}
    A_{i,t} = G_{i,t} - b_{i,t}

Why this baseline. A baseline keeps the policy gradient unbiased iff it does not depend on the
actions of the trajectory it is subtracted from (at or after turn t). Here ``b_{i,t}`` is built
from the *other* trajectories of the group only, and each of them contributes exactly once to every
turn's baseline (its return-to-go from the same turn index, or from its last turn if it already
ended). Nothing in it depends on trajectory i, in particular not on how many turns i takes.

What goes wrong elsewhere (and why we don't do it):

* Normalizing *rewards* per turn index and summing (MT-GRPO style) subtracts one group mean per
  turn the trajectory itself takes: ``A_{i,t} = sum_{k=t}^{T_i-1} (r_{i,k} - mean_k r)``. The number
  of subtracted terms is the trajectory's own length, an action-dependent baseline: every "take
  another turn" decision gets a hidden bonus of ``-mean_k r`` (verl-project/verl#7244).
* Statistics over turn rows (each trajectory weighted by its length) make the baseline depend on
  the trajectory's own length.

``tests/llm/test_llm_turn_returns.py`` checks this by Monte Carlo: an extra turn that changes nothing
gets mean advantage 0 within 4 standard errors under this estimator, while the per-turn-index
reward normalization fails the same test.

With ``gamma = 1`` and only an outcome reward, ``G_{i,t} = R_i`` for every t and the estimator is
exactly RLOO broadcast to every turn. With ``gamma < 1`` an extra turn really does lower the
discounted return of earlier turns: that is the discounted objective, not a baseline bias.
"""

from __future__ import annotations

from typing import Literal

import torch

from .._adapters import outcomes_or_zero
from .._arrays import ArrayLike, GroupIndex, as_float, as_group_index, check_positive, check_unit
from .._steps import step_inputs
from ..errors import RangeError, ShapeError
from ..outputs import AdvantageOutput
from ..registry import register_method
from ..segments import segment_count
from ._common import turn_returns

__all__ = ["turn_rloo"]


def turn_rloo(
    step_rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    mask: ArrayLike | None,
    gamma: float = 1.0,
    outcomes: ArrayLike | None = None,
    baseline: Literal["turn", "episode"] = "turn",
    scale: Literal["none", "group"] = "none",
    eps: float = 1e-6,
) -> AdvantageOutput:
    """Turn-level returns-to-go minus a leave-one-out group baseline (unbiased for any turn counts).

    Args:
        step_rewards: float[B, T] -- reward received after turn t (0 is a valid reward; padding
            ignored).
        group_ids: int[B] -- trajectories of the same task / prompt share an id.
        mask: bool[B, T] -- prefix mask of valid turns (None: all valid).
        gamma: turn-level discount in [0, 1].
        outcomes: float[B] -- optional episode outcome, added to each trajectory's last turn.
        baseline: "turn": ``b_{i,t} = mean_{j != i} G_{j, min(t, T_j - 1)}`` (default);
            "episode": ``b_i = mean_{j != i} G_{j, 0}`` for every turn.
        scale: "none" (default) or "group": divide by the std of the group's episode returns
            ``G_{j,0}`` (each trajectory once) plus ``eps``. Dividing by a std that includes the
            trajectory's own return is GRPO's usual (small) bias; leave it off for exact
            unbiasedness.
        eps: added to the std with ``scale="group"``.

    Returns:
        AdvantageOutput(advantages float[B, T], returns float[B, T] (``G``), metrics); 0 on
        padding. Trajectories alone in their group have no baseline and get advantage 0.

    Example (gamma = 1; trajectory 0 has 2 turns, trajectory 1 has 1):
        >>> import numpy as np
        >>> out = turn_rloo(np.array([[0.5, 1.0], [2.0, 0.0]]), [0, 0], mask=[[1, 1], [1, 0]])
        >>> out.returns          # G = [1.5, 1 | 2]
        array([[1.5, 1. ],
               [2. , 0. ]])
        >>> out.advantages       # b_0 = [G_1,0 = 2, G_1,0 = 2 (clamped)], b_1 = [G_0,0 = 1.5]
        array([[-0.5, -1. ],
               [ 0.5,  0. ]])
    """
    if baseline not in ("turn", "episode"):
        raise RangeError(f"baseline must be 'turn' or 'episode'; got {baseline!r}")
    if scale not in ("none", "group"):
        raise RangeError(f"scale must be 'none' or 'group'; got {scale!r}")
    gamma = check_unit(gamma, "gamma")
    eps = check_positive(eps, "eps", allow_zero=True)
    s = step_inputs(step_rewards, mask=mask, rewards_name="step_rewards")
    b, t = s.shape
    dev = s.rewards.device
    r = s.rewards
    if outcomes is not None:
        o = as_float(outcomes, "outcomes", device=dev, dtype=r.dtype)
        if o.shape != (b,):
            raise ShapeError(f"outcomes has shape {tuple(o.shape)} but step_rewards has {b} episodes; expected ({b},)")
        r = r.clone()
        r[torch.arange(b, device=dev), s.lengths - 1] += o
    groups = as_group_index(group_ids, "group_ids", b, device=dev)
    returns = turn_returns(r, s.lengths, gamma)
    g64 = returns.to(torch.float64)
    last = (s.lengths - 1)[:, None]
    if baseline == "turn":
        cols = torch.minimum(torch.arange(t, device=dev)[None, :], last)
        aligned = torch.gather(g64, 1, cols)  # G_{j, min(t, T_j - 1)}
    else:
        aligned = g64[:, :1].expand(b, t)
    total = torch.zeros((groups.num_groups, t), dtype=torch.float64, device=dev).index_add_(0, groups.index, aligned)
    count = segment_count(torch.ones(b, dtype=torch.bool, device=dev), groups.index, groups.num_groups)
    n = count[groups.index].to(torch.float64)[:, None]
    others = (total[groups.index] - aligned) / (n - 1).clamp(min=1)
    adv = torch.where(n > 1, g64 - others, torch.zeros_like(g64))
    if scale == "group":
        ep = g64[:, 0]
        mean = torch.zeros(groups.num_groups, dtype=torch.float64, device=dev).index_add_(
            0, groups.index, ep
        ) / count.clamp(min=1)
        dev2 = (ep - mean[groups.index]) ** 2
        var = torch.zeros(groups.num_groups, dtype=torch.float64, device=dev).index_add_(0, groups.index, dev2)
        std = torch.sqrt(var / (count - 1).clamp(min=1))[groups.index] + eps
        adv = adv / torch.where(std > 0, std, torch.ones_like(std))[:, None]
    adv = s.zero_pad(adv)
    single = count == 1
    valid = adv[s.mask]
    metrics = {
        "num_episodes": float(b),
        "num_turns": float(s.lengths.sum()),
        "groups/num": float((count > 0).sum()),
        "groups/num_singleton": float(single.sum()),
        "turns/mean_per_episode": float(s.lengths.to(torch.float64).mean()),
        "advantages/mean": float(valid.mean()) if valid.numel() else 0.0,
        "advantages/std": float(valid.std(unbiased=False)) if valid.numel() else 0.0,
        "returns/mean": float(g64[s.mask].mean()) if valid.numel() else 0.0,
    }
    return AdvantageOutput(s.backend.out(adv.to(r.dtype)), s.backend.out(returns), metrics)


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "turn_rloo",
    family="llm",
    kind="advantages",
    needs=("rewards", "group_ids"),
    summary="Turn-level returns-to-go minus a leave-one-out group baseline (unbiased for any turn counts)",
    source="creditlab; cf. verl-project/verl#7244",
)
def _run_turn_rloo(episodes, *, gamma: float = 1.0, baseline: Literal["turn", "episode"] = "turn") -> AdvantageOutput:
    """A missing outcome counts as 0 on the last turn."""
    episodes.require("group_ids", method="turn_rloo")
    return turn_rloo(
        episodes.rewards,
        episodes.group_ids,
        mask=episodes.mask,
        gamma=gamma,
        outcomes=outcomes_or_zero(episodes),
        baseline=baseline,
    )
