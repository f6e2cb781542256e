"""IGPO: information-gain turn rewards (Wang et al. 2025, arXiv 2510.14967).

After each turn t of a multi-turn (e.g. search) rollout, the policy's belief in the ground-truth
answer is ``p_t = exp(mean_j log pi(a_j | prompt, history after turn t, a_<j))``: the
geometric-mean probability of the answer tokens when the answer is appended by teacher forcing.
``p_0`` uses the prompt only. The user computes these log-probs (with the behaviour policy, no
gradient) and passes them in; this module turns them into turn rewards and advantages:

* ``r_t = p_t - p_{t-1}`` for every turn but the last (information gain; turns are 1-based in
  the paper, 0-based here: turn k's reward is ``p[k+1] - p[k]`` in column terms);
* the last turn gets ``outcome_weight * outcome`` (the answer's score, e.g. F1);
* all turn rewards of a group are z-normalized jointly (each turn counts once);
* ``A_t = sum_{k >= t} gamma^(k-t) rhat_k``, broadcast to every token of turn t.

When all outcomes of a group are equal (where GRPO's advantage collapses to 0), the
information-gain rewards still differ between rollouts, which is the method's point.

The released trainer differs from the paper (token-level returns, z-scored per token position);
we implement the paper's turn-level form.
"""

from __future__ import annotations

import torch

from .. import _kernels
from .._adapters import outcomes_or_zero
from .._arrays import (
    ArrayLike,
    Backend,
    GroupIndex,
    as_float,
    as_group_index,
    as_mask,
    check_finite,
    check_nonempty,
    check_positive,
    check_unit,
    lengths_of,
)
from ..errors import MissingColumnError, RangeError, ShapeError
from ..outputs import AdvantageOutput, RewardOutput
from ..registry import register_method
from ._common import group_normalize

__all__ = ["igpo", "igpo_rewards"]

_LOGP_TOL = 1e-6  # per-token mean log-probs are <= 0; allow rounding


def igpo_rewards(
    belief_log_probs: ArrayLike,
    outcomes: ArrayLike,
    *,
    mask: ArrayLike | None,
    outcome_weight: float = 1.0,
) -> RewardOutput:
    """Per-turn IGPO rewards: information gain on every turn but the last, the outcome on the last.

    Args:
        belief_log_probs: float[B, T+1] -- column t is the per-token mean log-prob of the
            ground-truth answer given the prompt and the history after turn t (column 0: prompt
            only). Columns at or past an episode's number of turns are ignored (may be anything).
        outcomes: float[B] -- score of the final answer (e.g. F1 in [0, 1]).
        mask: bool[B, T] -- prefix mask of valid turns (None: all valid).
        outcome_weight: weight of the outcome on the last turn (paper: 1).

    Returns:
        RewardOutput(rewards float[B, T] (0 on padding), metrics). The information-gain part
        telescopes: the sum over the first ``T_b - 1`` turns equals ``p_{T_b-1} - p_0``.

    Example (beliefs 0.25 -> 0.5 -> 1.0, three turns, outcome 1):
        >>> import numpy as np
        >>> igpo_rewards(np.log([[0.25, 0.5, 1.0, 1.0]]), [1.0], mask=None).rewards
        array([[0.25, 0.5 , 1.  ]])
    """
    backend, p, used, o, m, lengths = _read(belief_log_probs, outcomes, mask)
    rewards = _turn_rewards(p, o, m, lengths, outcome_weight)
    b = p.shape[0]
    rows = torch.arange(b, device=p.device)
    gain = p[rows, (lengths - 1).clamp(min=0)] - p[:, 0]
    multi = lengths > 1
    metrics = {
        "igpo/belief_initial_mean": float(p[:, 0][multi].mean()) if bool(multi.any()) else 0.0,
        "igpo/info_gain_sum_mean": float(gain[multi].mean()) if bool(multi.any()) else 0.0,
        "igpo/outcome_mean": float(o.to(torch.float64).mean()),
    }
    return RewardOutput(backend.out(rewards), metrics)


def igpo(
    belief_log_probs: ArrayLike,
    outcomes: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    mask: ArrayLike | None,
    gamma: float = 1.0,
    outcome_weight: float = 1.0,
    eps: float = 1e-6,
    unbiased: bool = True,
) -> AdvantageOutput:
    """IGPO advantages per turn: group-z-normalized information-gain rewards, then returns-to-go.

    Args:
        belief_log_probs: float[B, T+1] -- log p(answer | prompt, history after turn t) as a
            per-token mean; column 0 = prompt only; columns past an episode's length ignored.
        outcomes: float[B] -- final-answer score, placed on each episode's last turn.
        group_ids: int[B] -- rollouts of the same question share an id.
        mask: bool[B, T] -- prefix mask of valid turns (None: all valid).
        gamma: discount of the return-to-go over normalized turn rewards (contract default 1).
        outcome_weight: weight of the outcome reward.
        eps: added to the group std.
        unbiased: N-1 (torch) or N std.

    Returns:
        AdvantageOutput(advantages float[B, T] (0 on padding), None, metrics). The raw turn
        rewards are available from :func:`igpo_rewards`.

    Example (two rollouts, equal outcomes; only the information gain separates them):
        >>> import numpy as np
        >>> lp = np.log([[0.5, 1.0, 1.0], [0.5, 0.5, 0.5]])   # rollout 0 gains 0.5 on turn 0
        >>> out = igpo(lp, [1.0, 1.0], [0, 0], mask=None, eps=0.0)
        >>> out.advantages.round(4)   # rewards [0.5, 1 | 0, 1]: z over the 4 turns, then returns-to-go
        array([[ 0.5222,  0.7833],
               [-0.5222,  0.7833]])
    """
    gamma = check_unit(gamma, "gamma")
    eps = check_positive(eps, "eps", allow_zero=True)
    backend, p, used, o, m, lengths = _read(belief_log_probs, outcomes, mask)
    b, t = m.shape
    groups = as_group_index(group_ids, "group_ids", b, device=p.device)
    rewards = _turn_rewards(p, o, m, lengths, outcome_weight)
    flat_b, flat_t = torch.nonzero(m, as_tuple=True)
    r_flat = rewards[flat_b, flat_t]
    turn_groups = GroupIndex(groups.index[flat_b], groups.num_groups)
    z_flat, st = group_normalize(
        r_flat, torch.ones_like(flat_b, dtype=torch.bool), turn_groups, scale=True, eps=eps, unbiased=unbiased
    )
    z = torch.zeros((b, t), dtype=torch.float64, device=p.device)
    z[flat_b, flat_t] = z_flat
    adv = _kernels.reverse_scan(z.contiguous(), (gamma * m.to(torch.float64)).contiguous(), lengths)
    adv = torch.where(m, adv, torch.zeros_like(adv)).to(p.dtype)
    nonempty = st.count > 0
    metrics = {
        "num_episodes": float(b),
        "num_turns": float(flat_b.numel()),
        "groups/num": float(nonempty.sum()),
        "groups/num_zero_std": float((st.constant & nonempty).sum()),
        "igpo/reward_mean": float(r_flat.to(torch.float64).mean()) if r_flat.numel() else 0.0,
        "igpo/info_gain_abs_mean": _gain_abs_mean(rewards, m, lengths),
        "advantages/mean": float(adv[m].to(torch.float64).mean()),
        "advantages/std": float(adv[m].to(torch.float64).std(unbiased=False)),
    }
    return AdvantageOutput(backend.out(adv), None, metrics)


def _read(belief_log_probs, outcomes, mask):
    backend = Backend.of(belief_log_probs, outcomes)
    lp = as_float(belief_log_probs, "belief_log_probs", ndim=2, finite=False)
    b, t1 = lp.shape
    check_nonempty(b, "belief_log_probs")
    if t1 < 2:
        raise ShapeError(
            f"belief_log_probs has shape {tuple(lp.shape)}; expected [B, T+1] with T >= 1 turns "
            "(column 0 is the belief from the prompt alone)"
        )
    t = t1 - 1
    m = as_mask(mask, "mask", (b, t), device=lp.device)
    lengths = lengths_of(m)
    o = as_float(outcomes, "outcomes", device=lp.device, dtype=lp.dtype)
    if o.shape != (b,):
        raise ShapeError(f"outcomes has shape {tuple(o.shape)} but belief_log_probs has {b} episodes; expected ({b},)")
    # Column j is read iff j <= T_b - 1 and the episode has an information-gain turn (T_b >= 2).
    cols = torch.arange(t1, device=lp.device)[None, :]
    used = (cols < lengths[:, None]) & (lengths[:, None] > 1)
    check_finite(lp, "belief_log_probs", where=used, hint=" (a log-probability of the answer; must be finite)")
    too_big = used & (lp > _LOGP_TOL)
    if bool(too_big.any()):
        i, j = torch.nonzero(too_big)[0].tolist()
        raise RangeError(
            f"belief_log_probs[{i}, {j}] = {lp[i, j].item():.4g} > 0; expected a per-token mean log-probability (<= 0). "
            "Pass log p, not p."
        )
    p = torch.where(used, torch.exp(torch.clamp(lp, max=0.0)), torch.zeros_like(lp))
    return backend, p, used, o, m, lengths


def _turn_rewards(p, o, m, lengths, outcome_weight: float) -> torch.Tensor:
    b, t = m.shape
    gain = p[:, 1:] - p[:, :-1]  # [B, T]: turn k gains p[k+1] - p[k]
    cols = torch.arange(t, device=p.device)[None, :]
    before_last = cols < (lengths[:, None] - 1)
    r = torch.where(before_last, gain, torch.zeros_like(gain))
    rows = torch.arange(b, device=p.device)
    r[rows, lengths - 1] = float(outcome_weight) * o
    return torch.where(m, r, torch.zeros_like(r))


def _gain_abs_mean(rewards, m, lengths) -> float:
    cols = torch.arange(m.shape[1], device=m.device)[None, :]
    ig = cols < (lengths[:, None] - 1)
    return float(rewards[ig].abs().to(torch.float64).mean()) if bool(ig.any()) else 0.0


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "igpo",
    family="llm",
    kind="advantages",
    needs=("outcomes", "group_ids", "extras.belief_log_probs"),
    summary="IGPO: per-turn information gain in the answer's probability, group-z-scored, returns-to-go",
    source="Wang et al. 2025, arXiv 2510.14967",
)
def _run_igpo(episodes, *, gamma: float = 1.0, outcome_weight: float = 1.0) -> AdvantageOutput:
    """Beliefs ``log p(answer | history after turn t)`` in ``episodes.extras["belief_log_probs"]``, float[B, T+1]."""
    episodes.require("outcomes", "group_ids", method="igpo")
    if "belief_log_probs" not in episodes.extras:
        raise MissingColumnError("method 'igpo' needs episodes.extras['belief_log_probs'], float[B, T+1]")
    return igpo(
        episodes.extras["belief_log_probs"],
        outcomes_or_zero(episodes),
        episodes.group_ids,
        mask=episodes.mask,
        gamma=gamma,
        outcome_weight=outcome_weight,
    )
