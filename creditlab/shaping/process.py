"""Clip and Delta transforms for process-reward (PRM) step scores (Gao et al. 2024, arXiv 2410.15115)."""

from __future__ import annotations

import numpy as np
import torch

from .._arrays import ArrayLike, Backend, as_mask, as_scores, check_nonempty, check_real, shape_bt
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = ["clip_process_rewards", "delta_process_rewards"]


def _read(scores: ArrayLike, mask: ArrayLike | None, present: ArrayLike | None, nan_is_missing: bool):
    backend = Backend.of(scores)
    shape = tuple(np.shape(scores)) if not hasattr(scores, "shape") else tuple(scores.shape)
    m = (
        as_mask(mask, "mask", (shape[0], shape[1]), device=torch.device("cpu"), like="scores")
        if len(shape) == 2
        else None
    )
    s, p = as_scores(scores, "scores", present=present, nan_is_missing=nan_is_missing, ndim=2, where=m)
    check_nonempty(s.shape[0], "scores")
    if m is None:
        m = as_mask(mask, "mask", shape_bt(s), device=s.device, like="scores")
    m = m.to(s.device)
    return backend, s, p & m, m


def clip_process_rewards(
    scores: ArrayLike,
    *,
    eta: float,
    mask: ArrayLike | None = None,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> RewardOutput:
    """Clip: ``r_k = min(s_k - eta, 0)``.

    Step rewards are never positive, so adding more steps can never farm reward. Steps without
    a score (None / ``present`` False) get 0. Add the outcome reward at the last step yourself.

    Args:
        scores: float[B, T] -- PRM score of each reasoning step / turn (None allowed).
        eta: threshold; scores above it are not rewarded, scores below are penalized.
        mask: bool[B, T] -- prefix mask of real steps.

    Returns:
        RewardOutput(rewards[B, T], metrics).

    Example:
        >>> clip_process_rewards([[0.9, 0.2, 0.6]], eta=0.5).rewards.round(6).tolist()
        [[0.0, -0.3, 0.0]]
    """
    eta = check_real(eta, "eta")
    backend, s, p, m = _read(scores, mask, present, nan_is_missing)
    r = torch.clamp(s - eta, max=0.0)
    r = torch.where(p, r, torch.zeros_like(r))
    metrics = {"process/num_missing": float((m & ~p).sum()), "process/num_penalized": float((p & (r < 0)).sum())}
    return RewardOutput(backend.out(r), metrics)


def delta_process_rewards(
    scores: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> RewardOutput:
    """Delta: ``r_k = s_k - s_{k+1}`` for k < K and ``r_K = s_K``.

    The undiscounted return from step k telescopes to ``s_k``: it is bounded by the score range
    whatever the number of steps. Steps without a score get reward 0 and the difference is taken
    to the next scored step, so the return from any scored step k is still ``s_k`` (and from an
    unscored step it is the next scored step's score).

    Args:
        scores: float[B, T] -- PRM score of each step (None allowed).
        mask: bool[B, T] -- prefix mask.

    Returns:
        RewardOutput(rewards[B, T], metrics).

    Example:
        >>> delta_process_rewards([[0.9, 0.2, 0.6]]).rewards.round(6).tolist()
        [[0.7, -0.4, 0.6]]
    """
    backend, s, p, m = _read(scores, mask, present, nan_is_missing)
    b, t = s.shape
    pos = torch.arange(t, device=s.device).expand(b, t)
    big = torch.full_like(pos, t)
    # next_idx[b, j] = smallest scored position > j (t if none): reverse cumulative min, shifted.
    marked = torch.where(p, pos, big)
    rev_min = torch.flip(torch.cummin(torch.flip(marked, [1]), dim=1).values, [1])
    next_idx = torch.cat([rev_min[:, 1:], torch.full((b, 1), t, device=s.device, dtype=pos.dtype)], dim=1)
    has_next = next_idx < t
    padded = torch.cat([s, torch.zeros((b, 1), dtype=s.dtype, device=s.device)], dim=1)
    nxt = torch.gather(padded, 1, next_idx.clamp(max=t))
    r = torch.where(has_next, s - nxt, s)
    r = torch.where(p, r, torch.zeros_like(r))
    metrics = {"process/num_missing": float((m & ~p).sum())}
    return RewardOutput(backend.out(r), metrics)


# ---------------------------------------------------------------------- registry adapters


@register_method(
    "clip_process",
    family="shaping",
    kind="rewards",
    needs=("rewards",),
    summary="Clip PRM step scores: min(s - eta, 0), never positive",
    source="Gao et al. 2024, arXiv 2410.15115",
)
def _run_clip_process(episodes, *, eta: float = 0.5) -> RewardOutput:
    return clip_process_rewards(episodes.rewards, eta=eta, mask=episodes.mask, present=episodes.reward_present)


@register_method(
    "delta_process",
    family="shaping",
    kind="rewards",
    needs=("rewards",),
    summary="Delta PRM step scores: s_k - s_{k+1}; return from step k equals s_k",
    source="Gao et al. 2024, arXiv 2410.15115",
)
def _run_delta_process(episodes) -> RewardOutput:
    return delta_process_rewards(episodes.rewards, mask=episodes.mask, present=episodes.reward_present)
