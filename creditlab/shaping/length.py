"""Length penalties: DAPO's soft overlong punishment and a group-relative length penalty."""

from __future__ import annotations

import torch

from .._adapters import add_on_last_step, episode_scores, last_step_values, to_numpy
from .._arrays import (
    ArrayLike,
    Backend,
    GroupIndex,
    as_float,
    as_group_index,
    as_scores,
    check_nonempty,
    check_positive,
    check_real,
)
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = ["overlong_penalty", "group_length_penalty"]


def overlong_penalty(lengths: ArrayLike, *, max_length: int, cache_length: int) -> RewardOutput:
    """Soft overlong punishment (DAPO, arXiv 2503.14476).

    ``0`` if ``L <= max_length - cache_length``; ``((max_length - cache_length) - L) / cache_length``
    (a linear ramp down to -1) inside the cache window; ``-1`` beyond ``max_length``.

    Args:
        lengths: int[N] -- response lengths in tokens.
        max_length: the generation budget.
        cache_length: width of the soft window (> 0, <= max_length).

    Returns:
        RewardOutput(rewards[N] in [-1, 0], metrics).

    Example:
        >>> overlong_penalty([10, 15, 20, 30], max_length=20, cache_length=10).rewards.tolist()
        [0.0, -0.5, -1.0, -1.0]
    """
    backend = Backend.of(lengths)
    n_len = as_float(lengths, "lengths", ndim=1)
    check_nonempty(n_len.shape[0], "lengths")
    if bool((n_len < 0).any()):
        raise RangeError("lengths must be >= 0")
    cache = check_positive(cache_length, "cache_length")
    top = check_positive(max_length, "max_length")
    if cache > top:
        raise RangeError(f"cache_length ({cache_length}) must be <= max_length ({max_length})")
    start = top - cache
    ramp = (start - n_len) / cache
    out = torch.where(n_len <= start, torch.zeros_like(n_len), torch.clamp(ramp, min=-1.0))
    metrics = {
        "length/frac_overlong": float((n_len > top).to(torch.float64).mean()),
        "length/mean": float(n_len.mean()),
    }
    return RewardOutput(backend.out(out), metrics)


def group_length_penalty(
    lengths: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    correct: ArrayLike | None = None,
    coef: float = 1.0,
    reference: str = "group",
) -> RewardOutput:
    """Length penalty measured against the group (Kimi k1.5, arXiv 2501.12599).

    ``lam_i = 0.5 - (L_i - L_min) / (L_max - L_min)`` with ``L_min, L_max`` over the reference set
    of i's group; correct responses receive ``coef * lam_i`` (shorter than the group is rewarded),
    incorrect ones ``coef * min(0, lam_i)`` (only penalized). With ``reference="correct"`` the
    reference set is the group's *correct* responses, so length is judged against successful
    answers; ``lam`` is clipped to [-0.5, 0.5] so responses longer than every reference stay
    bounded. A group without any correct response (or with equal lengths) gets 0.

    Args:
        lengths: int[N] -- response lengths.
        group_ids: int[N].
        correct: bool[N] -- correctness; default all correct (pure relative length reward).
        coef: scale of the penalty.
        reference: "group" or "correct".

    Returns:
        RewardOutput(rewards[N] in [-coef/2, coef/2], metrics).

    Example (group lengths 10, 20, 30; all correct):
        >>> group_length_penalty([10, 20, 30], [0, 0, 0]).rewards.tolist()
        [0.5, 0.0, -0.5]
    """
    coef = check_real(coef, "coef")
    if reference not in ("group", "correct"):
        raise RangeError(f"reference must be 'group' or 'correct'; got {reference!r}")
    backend = Backend.of(lengths)
    ln = as_float(lengths, "lengths", ndim=1).to(torch.float64)
    n = ln.shape[0]
    check_nonempty(n, "lengths")
    groups = as_group_index(group_ids, "group_ids", n, device=ln.device)
    if correct is None:
        ok = torch.ones(n, dtype=torch.bool, device=ln.device)
    else:
        c, cp = as_scores(correct, "correct", device=ln.device)
        if c.shape != (n,):
            raise ShapeError(f"correct has shape {tuple(c.shape)}; expected ({n},)")
        ok = (c > 0) & cp
    ref = ok if reference == "correct" else torch.ones_like(ok)
    big = float("inf")
    g = groups.num_groups
    lo = torch.full((g,), big, dtype=torch.float64, device=ln.device).scatter_reduce(
        0, groups.index, torch.where(ref, ln, torch.full_like(ln, big)), reduce="amin"
    )
    hi = torch.full((g,), -big, dtype=torch.float64, device=ln.device).scatter_reduce(
        0, groups.index, torch.where(ref, ln, torch.full_like(ln, -big)), reduce="amax"
    )
    lo_i, hi_i = lo[groups.index], hi[groups.index]
    spread = hi_i - lo_i
    usable = torch.isfinite(spread) & (spread > 0)
    lam = torch.where(
        usable, 0.5 - (ln - lo_i) / torch.where(usable, spread, torch.ones_like(spread)), torch.zeros_like(ln)
    )
    lam = lam.clamp(-0.5, 0.5)  # responses outside the reference range (reference="correct") stay bounded
    out = float(coef) * torch.where(ok, lam, torch.clamp(lam, max=0.0))
    metrics = {"length/mean": float(ln.mean()), "length/penalty_mean": float(out.mean())}
    return RewardOutput(backend.out(out.to(as_float(lengths, "lengths").dtype)), metrics)


# ---------------------------------------------------------------------- registry adapters


def _episode_lengths(episodes, key: str):
    """Per-episode length: the ``key`` column (e.g. tokens) on the last step, else the step count."""
    if key in episodes.extras:
        return last_step_values(episodes, episodes.extras[key])
    return episodes.lengths


@register_method(
    "overlong_penalty",
    family="shaping",
    kind="rewards",
    needs=("rewards|outcomes|components", "extras.length?"),
    summary="DAPO soft overlong penalty added at the last step",
    source="Yu et al. 2025 (DAPO), arXiv 2503.14476",
)
def _run_overlong_penalty(
    episodes, *, max_length: int = 512, cache_length: int = 128, key: str = "length"
) -> RewardOutput:
    penalty = overlong_penalty(_episode_lengths(episodes, key), max_length=max_length, cache_length=cache_length)
    return add_on_last_step(episodes, penalty)


@register_method(
    "group_length_penalty",
    family="shaping",
    kind="rewards",
    needs=("rewards|outcomes|components", "group_ids", "extras.length?"),
    summary="Length penalty relative to the group's (correct) responses",
    source="Kimi k1.5, arXiv 2501.12599",
)
def _run_group_length_penalty(
    episodes, *, coef: float = 1.0, reference: str = "group", key: str = "length"
) -> RewardOutput:
    """Correct = an episode score above 0 (outcome, else the sum of components or rewards)."""
    r, p, meta = episode_scores(episodes)
    correct = to_numpy(r) > 0
    if p is not None:
        correct &= to_numpy(p)
    penalty = group_length_penalty(
        _episode_lengths(episodes, key), episodes.group_ids, correct=correct, coef=coef, reference=reference
    )
    return add_on_last_step(episodes, penalty, meta)
