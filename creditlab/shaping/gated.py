"""Gated reward accumulation (G-RA, arXiv 2508.10548) and its multi-level form."""

from __future__ import annotations

import torch

from .._arrays import ArrayLike, Backend, as_float, as_scores, check_real
from .._steps import step_inputs
from ..errors import ShapeError
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = ["gated_accumulation", "gated_levels"]


def gated_accumulation(
    step_rewards: ArrayLike,
    outcomes: ArrayLike,
    *,
    gate: float,
    mask: ArrayLike | None = None,
    add_outcome: bool = True,
    outcome_present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> RewardOutput:
    """Step rewards count only when the outcome reaches the gate.

    ``r'_t = 1[R >= gate] * r_t`` and, with ``add_outcome``, ``R`` is added at the last valid step,
    so the episode's return is ``R + 1[R >= gate] * sum_t r_t`` (the paper's accumulated return;
    plain summation, D-RA, is what collapsed in their experiments).

    A missing outcome (None) closes the gate (immediate rewards are dropped) and adds nothing;
    such episodes are counted in ``metrics["gated/num_missing_outcome"]``.

    Args:
        step_rewards: float[B, T] -- immediate rewards (e.g. verifier checks on tool calls).
        outcomes: float[B] -- the high-level reward R (e.g. task completion); None allowed.
        gate: threshold g.
        mask: bool[B, T] -- prefix mask.
        add_outcome: also place R on the last valid step.

    Returns:
        RewardOutput(rewards[B, T], metrics).

    Example (gate 1: the failed episode keeps only its outcome):
        >>> gated_accumulation([[0.1, 0.1], [0.1, 0.1]], [1.0, 0.0], gate=1.0).rewards.tolist()
        [[0.1, 1.1], [0.0, 0.0]]
    """
    gate = check_real(gate, "gate")
    s = step_inputs(step_rewards, mask=mask, rewards_name="step_rewards")
    b = s.shape[0]
    o, op = as_scores(
        outcomes, "outcomes", present=outcome_present, nan_is_missing=nan_is_missing, device=s.rewards.device
    )
    if o.shape != (b,):
        raise ShapeError(f"outcomes has shape {tuple(o.shape)} but step_rewards has {b} episodes; expected ({b},)")
    o = o.to(s.rewards.dtype)
    open_ = op & (o >= float(gate))
    out = torch.where(open_[:, None], s.rewards, torch.zeros_like(s.rewards))
    if add_outcome:
        rows = torch.arange(b, device=out.device)
        out[rows, s.lengths - 1] += torch.where(op, o, torch.zeros_like(o))
    out = s.zero_pad(out)
    metrics = {
        "gated/frac_open": float(open_.to(torch.float64).mean()),
        "gated/num_missing_outcome": float((~op).sum()),
    }
    return RewardOutput(s.backend.out(out), metrics)


def gated_levels(
    levels: ArrayLike,
    *,
    gates: ArrayLike,
    weights: ArrayLike | None = None,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> RewardOutput:
    """Multi-level gated sum: ``r = sum_k w_k s_k prod_{j<k} 1[s_j >= tau_j]``.

    Level 0 is the highest priority (e.g. "the tool call parses"), later levels count only when
    every earlier level passed its gate (the recursive G-RA / progressive-shaping form). A missing
    level closes every later gate and contributes 0.

    Args:
        levels: float[N, K] -- per-episode scores by priority.
        gates: float[K-1] -- thresholds tau_0..tau_{K-2}.
        weights: float[K] -- default 1.

    Returns:
        RewardOutput(rewards[N], metrics).

    Example:
        >>> gated_levels([[1.0, 0.5, 1.0], [0.0, 1.0, 1.0]], gates=[1.0, 0.5]).rewards.tolist()
        [2.5, 0.0]
    """
    backend = Backend.of(levels)
    s, p = as_scores(levels, "levels", present=present, nan_is_missing=nan_is_missing, ndim=2)
    n, k = s.shape
    g = as_float(gates, "gates", ndim=1, dtype=s.dtype, device=s.device)
    if g.shape != (max(k - 1, 0),):
        raise ShapeError(f"gates has shape {tuple(g.shape)}; expected ({k - 1},) for K = {k} levels")
    w = (
        torch.ones(k, dtype=s.dtype, device=s.device)
        if weights is None
        else as_float(weights, "weights", shape=(k,), dtype=s.dtype, device=s.device)
    )
    passed = p[:, :-1] & (s[:, :-1] >= g[None, :])
    open_ = torch.cat(
        [torch.ones((n, 1), dtype=torch.bool, device=s.device), torch.cumprod(passed.to(torch.int64), dim=1).bool()],
        dim=1,
    )
    contrib = torch.where(open_ & p, s * w[None, :], torch.zeros_like(s))
    out = contrib.sum(dim=1)
    metrics = {f"gated/frac_open_level_{j}": float(open_[:, j].to(torch.float64).mean()) for j in range(k)}
    return RewardOutput(backend.out(out), metrics)


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "gated_accumulation",
    family="credit",
    kind="rewards",
    needs=("rewards", "outcomes"),
    summary="G-RA: step rewards count only if the outcome reaches the gate",
    source="arXiv 2508.10548",
)
def _run_gated_accumulation(episodes, *, gate: float = 1.0) -> RewardOutput:
    return gated_accumulation(
        episodes.rewards, episodes.outcomes, gate=gate, mask=episodes.mask, outcome_present=episodes.outcome_present
    )
