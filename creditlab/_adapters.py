"""What the registry adapters read from an :class:`~creditlab.episodes.Episodes` batch.

Every registered method of kind ``"advantages"`` or ``"rewards"`` is a thin adapter
``run(episodes, **params)`` placed beside its pure function (``creditlab.advantage``,
``creditlab.shaping``, ``creditlab.llm``). The few rules they share live here, once.

Which reward a method reads (documented in docs/data-format.md):

* per-episode methods (GRPO, RLOO, ...) score an episode by its ``outcome``; without outcomes,
  by the sum of its named ``components``; without either, by the sum of its per-step ``rewards``
  (:func:`episode_scores`);
* per-step methods (GAE, Monte Carlo, REINFORCE++) use the per-step ``rewards`` with the
  episode-level feedback (outcome, else the sum of components) added on the last step
  (:func:`step_rewards`).

The metrics say which source was used (``input/...`` keys).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .episodes import Episodes
from .outputs import RewardOutput

__all__ = [
    "add_on_last_step",
    "episode_scores",
    "like",
    "last_step_values",
    "outcomes_or_none",
    "outcomes_or_zero",
    "step_kwargs",
    "step_rewards",
    "to_numpy",
]


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view of an array or tensor (CPU copy for tensors)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def like(ep: Episodes, arr: np.ndarray) -> Any:
    """A NumPy result in the array kind (and device) of the batch."""
    if ep.is_torch:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(ep.rewards.device)
    return arr


def _last(ep: Episodes) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of each episode's last valid step."""
    return np.arange(ep.num_episodes), to_numpy(ep.lengths) - 1


def last_step_values(ep: Episodes, x: Any) -> np.ndarray:
    """float[B] -- a per-step ``[B, T]`` array read at each episode's last valid step."""
    return to_numpy(x)[_last(ep)]


def episode_scores(ep: Episodes) -> tuple[Any, Any, dict[str, float]]:
    """(scores[B], present[B] or None, metrics naming the source).

    Example:
        >>> ep = Episodes.from_lists([[0.0, 1.0], [2.0]], outcomes=[None, 3.0])
        >>> scores, present, meta = episode_scores(ep)
        >>> scores.tolist(), present.tolist(), meta
        ([0.0, 3.0], [False, True], {'input/score_from_outcome': 1.0})
    """
    if ep.outcomes is not None:
        return ep.outcomes, ep.outcome_present, {"input/score_from_outcome": 1.0}
    if ep.components is not None:
        c, p = to_numpy(ep.components), to_numpy(ep.component_present)
        scores = np.where(p, c, 0.0).sum(axis=1).astype(c.dtype)
        return like(ep, scores), like(ep, np.asarray(p.any(axis=1))), {"input/score_from_components": 1.0}
    return ep.returns(), None, {"input/score_from_rewards": 1.0}


def step_rewards(ep: Episodes) -> tuple[Any, dict[str, float]]:
    """Per-step rewards with the episode-level feedback (if any) added on the last step.

    Example (outcome 3 added to the last step; a missing outcome adds nothing):
        >>> ep = Episodes.from_lists([[0.0, 1.0], [2.0]], outcomes=[3.0, None])
        >>> r, meta = step_rewards(ep)
        >>> r.tolist()
        [[0.0, 4.0], [2.0, 0.0]]
    """
    if ep.outcomes is None and ep.components is None:
        return ep.rewards, {"input/rewards_per_step": 1.0}
    scores, present, meta = episode_scores(ep)
    r = to_numpy(ep.rewards).copy()
    s = np.where(to_numpy(present), to_numpy(scores), 0.0) if present is not None else to_numpy(scores)
    r[_last(ep)] += s.astype(r.dtype)
    meta = {k.replace("score_from", "last_step_from"): v for k, v in meta.items()}
    meta["input/rewards_per_step"] = 1.0
    return like(ep, r), meta


def add_on_last_step(ep: Episodes, penalty: RewardOutput, meta: dict[str, float] | None = None) -> RewardOutput:
    """:func:`step_rewards` plus a per-episode ``penalty.rewards[B]`` on each episode's last step."""
    base, step_meta = step_rewards(ep)
    r = to_numpy(base).copy()
    r[_last(ep)] += to_numpy(penalty.rewards).astype(r.dtype)
    return RewardOutput(like(ep, r), {**penalty.metrics, **step_meta, **(meta or {})})


def step_kwargs(ep: Episodes) -> dict[str, Any]:
    """The step layout keywords of the return estimators: ``mask``, ``discounts``, ``bootstrap_value``."""
    return dict(mask=ep.mask, discounts=ep.discounts, bootstrap_value=ep.bootstrap_value)


def outcomes_or_none(ep: Episodes) -> tuple[Any, Any]:
    """``(outcomes, outcome_present)``, or ``(None, None)`` for a batch without outcomes."""
    if ep.outcomes is None:
        return None, None
    return ep.outcomes, ep.outcome_present


def outcomes_or_zero(ep: Episodes) -> np.ndarray | None:
    """float64[B] -- the outcomes with 0 where an outcome is missing (None without outcomes)."""
    if ep.outcomes is None:
        return None
    return np.where(to_numpy(ep.outcome_present), to_numpy(ep.outcomes), 0.0)
