"""Per-turn process scores -> turn rewards: Clip / Delta (Gao et al. 2024) and gated accumulation.

A process reward model (or a verifier, or a judge) scores each turn. Added to the outcome as they
are, such scores invite reward hacking: the policy repeats correct-but-useless turns to farm
them. The foundation's transforms fix that per step; this module applies them to turns and puts
the outcome on each trajectory's last turn, ready for :func:`~creditlab.llm.turn_rloo`, GAE or
:func:`~creditlab.llm.gigpo`:

* ``"clip"``: ``r_t = min(s_t - eta, 0)``: never positive, so extra turns cannot earn reward;
* ``"delta"``: ``r_t = s_t - s_{t+1}`` (last: ``s_T``): the return from turn t telescopes to
  ``s_t``, bounded whatever the number of turns;
* ``"clip_delta"``: clip the scores, then Delta;
* ``gate``: gated reward accumulation (G-RA): the turn rewards count only when the outcome
  reaches the gate.
"""

from __future__ import annotations

from typing import Literal

import torch

from .._adapters import outcomes_or_none
from .._arrays import ArrayLike, Backend, as_mask, as_scores
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method
from ..shaping import clip_process_rewards, delta_process_rewards, gated_accumulation

__all__ = ["process_turn_rewards"]


def process_turn_rewards(
    scores: ArrayLike,
    outcomes: ArrayLike | None = None,
    *,
    mask: ArrayLike | None,
    transform: Literal["clip", "delta", "clip_delta", "none"] = "delta",
    eta: float = 0.5,
    gate: float | None = None,
    process_weight: float = 1.0,
    present: ArrayLike | None = None,
    outcome_present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> RewardOutput:
    """Turn rewards from per-turn process scores plus the outcome on the last turn.

    Args:
        scores: float[B, T] -- process score of each turn (None / ``present`` False: unscored).
        outcomes: float[B] -- episode outcome added on the last turn (None allowed per episode).
        mask: bool[B, T] -- prefix mask of valid turns.
        transform: "clip", "delta", "clip_delta" or "none".
        eta: Clip threshold.
        gate: if given, the process part counts only where ``outcome >= gate`` (G-RA; an
            episode with a missing outcome keeps no process reward).
        process_weight: weight of the process part.
        present: bool[B, T] -- which turns were scored.
        outcome_present: bool[B] -- which outcomes are present.
        nan_is_missing: read NaN scores / outcomes as missing.

    Returns:
        RewardOutput(rewards float[B, T] (0 on padding), metrics).

    Example (Delta: returns from each turn are 0.9, 0.2, 0.6 plus the outcome 1):
        >>> process_turn_rewards([[0.9, 0.2, 0.6]], [1.0], mask=None).rewards.round(6).tolist()
        [[0.7, -0.4, 1.6]]
    """
    if transform not in ("clip", "delta", "clip_delta", "none"):
        raise RangeError(f"transform must be 'clip', 'delta', 'clip_delta' or 'none'; got {transform!r}")
    backend = Backend.of(scores)
    s, p = as_scores(scores, "scores", present=present, nan_is_missing=nan_is_missing, ndim=2)
    b, t = s.shape
    m = as_mask(mask, "mask", (b, t), device=s.device)
    p = p & m
    metrics: dict[str, float] = {}
    if transform == "none":
        r = torch.where(p, s, torch.zeros_like(s))
    elif transform == "clip":
        out = clip_process_rewards(s, eta=eta, mask=m, present=p)
        r, metrics = out.rewards, dict(out.metrics)
    elif transform == "delta":
        out = delta_process_rewards(s, mask=m, present=p)
        r, metrics = out.rewards, dict(out.metrics)
    else:
        clipped = clip_process_rewards(s, eta=eta, mask=m, present=p)
        out = delta_process_rewards(clipped.rewards, mask=m, present=p)
        r, metrics = out.rewards, {**clipped.metrics, **out.metrics}
    r = r * float(process_weight)
    if outcomes is None:
        if gate is not None:
            raise RangeError("gate needs outcomes (the process reward counts only when the outcome reaches the gate)")
        return RewardOutput(backend.out(torch.where(m, r, torch.zeros_like(r))), metrics)
    o, op = as_scores(outcomes, "outcomes", present=outcome_present, nan_is_missing=nan_is_missing, device=s.device)
    if o.shape != (b,):
        raise ShapeError(f"outcomes has shape {tuple(o.shape)} but scores has {b} episodes; expected ({b},)")
    if gate is not None:
        g = gated_accumulation(r, o.to(r.dtype), gate=gate, mask=m, outcome_present=op)
        return RewardOutput(backend.out(g.rewards), {**metrics, **g.metrics})
    r = r.clone()
    rows = torch.arange(b, device=s.device)
    lengths = m.sum(dim=1)
    r[rows, lengths - 1] += torch.where(op, o, torch.zeros_like(o)).to(r.dtype)
    metrics["process/num_missing_outcome"] = float((~op).sum())
    return RewardOutput(backend.out(torch.where(m, r, torch.zeros_like(r))), metrics)


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "process_turn_rewards",
    family="llm",
    kind="rewards",
    needs=("rewards", "outcomes?"),
    summary="Per-turn process scores through Clip/Delta (and a G-RA gate), outcome on the last turn",
    source="Gao et al. 2024, arXiv 2410.15115; arXiv 2508.10548",
)
def _run_process_turn_rewards(
    episodes,
    *,
    transform: Literal["clip", "delta", "clip_delta", "none"] = "delta",
    eta: float = 0.5,
    gate: float | None = None,
) -> RewardOutput:
    """The per-turn process scores are ``episodes.rewards`` (``reward_present`` marks missing ones)."""
    o, p = outcomes_or_none(episodes)
    return process_turn_rewards(
        episodes.rewards,
        o,
        mask=episodes.mask,
        transform=transform,
        eta=eta,
        gate=gate,
        present=episodes.reward_present,
        outcome_present=p,
    )
