"""Uniform redistribution: every step of an episode gets R / T (the baseline of the IRCR and RRD papers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..episodes import Episodes
from ..errors import ShapeError
from ..outputs import RewardOutput
from ..registry import register_method
from .base import AssignerConfig, StatelessAssigner, episode_arrays, reward_output

__all__ = ["uniform_rewards", "UniformConfig", "UniformAssigner"]


def uniform_rewards(returns: Any, mask: Any, *, has_return: Any | None = None) -> RewardOutput:
    """Spread each episode's return evenly over its steps: ``r_t = R / T``.

    Args:
        returns: float[B] -- episodic return R.
        mask: bool[B, T] -- valid steps (prefix).
        has_return: bool[B] -- False for episodes whose return is unknown (outcome None): their
            steps get 0 and ``present`` False.

    Returns:
        RewardOutput(rewards[B, T] float64 (0 on padding), metrics, present[B, T]).

    Example (R = 6 over 3 steps, R = 1 over 2 steps): [2, 2, 2] and [0.5, 0.5]
        >>> uniform_rewards(np.array([6.0, 1.0]), np.array([[1, 1, 1], [1, 1, 0]], bool)).rewards
        array([[2. , 2. , 2. ],
               [0.5, 0.5, 0. ]])
    """
    r = np.asarray(returns, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or r.shape != (m.shape[0],):
        raise ShapeError(f"returns {r.shape} and mask {m.shape} must be [B] and [B, T]")
    has = np.ones(r.shape, bool) if has_return is None else np.asarray(has_return, dtype=bool)
    lengths = np.maximum(m.sum(1), 1)
    per = np.where(has, r / lengths, 0.0)
    present = m & has[:, None]
    out = np.where(present, per[:, None], 0.0)
    return RewardOutput(out, {"credit/num_no_outcome": float((~has).sum())}, present)


@dataclass(frozen=True, kw_only=True)
class UniformConfig(AssignerConfig):
    """Uniform redistribution has no parameters of its own. The shared ones are accepted so that
    one parameter set works across assigners; ``include_truncated`` has no effect here (uniform
    keeps no memory; ``assign`` spreads every known return, truncated or not)."""


@register_method(
    "uniform",
    family="credit",
    kind="assigner",
    needs=("outcomes|rewards",),
    summary="Uniform redistribution: every step of an episode gets R / T",
    source="baseline in the IRCR and RRD papers",
)
class UniformAssigner(StatelessAssigner):
    """Uniform redistribution as a credit assigner (nothing is learned; ``fit`` is a no-op).

    Episodes without an outcome (``outcome_present`` False) cannot be credited yet: their steps
    get 0 and ``present`` False.

    Example:
        >>> ep = Episodes.from_lists([[0.0, 0.0, 6.0], [0.0, 1.0]])
        >>> UniformAssigner().assign(ep).rewards
        array([[2. , 2. , 2. ],
               [0.5, 0.5, 0. ]])
    """

    Config = UniformConfig
    name = "uniform"
    scope = "episode"

    def assign(self, episodes: Episodes) -> RewardOutput:
        arr = episode_arrays(episodes)
        out = uniform_rewards(arr.returns, arr.mask, has_return=arr.has_return)
        return reward_output(episodes, arr, out)
