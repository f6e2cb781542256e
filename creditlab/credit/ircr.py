"""IRCR guidance rewards (Gangwani, Zhou & Peng, NeurIPS 2020, arXiv 2010.12718).

Iterative Relative Credit Refinement gives every transition the normalized per-step average
return of its own trajectory (the non-parametric estimate of "the expected return of the
trajectories through (s, a)"):

    c(tau) = R(tau) / T(tau),      r_g = (c - c_min) / (c_max - c_min)  in [0, 1],

where ``c_min``/``c_max`` run over the trajectories held in a FIFO buffer (a capacity in steps,
3e5 in the paper) *and* a top-K heap of the highest-return trajectories seen so far (K = 10),
as in the authors' code (tgangwani/GuidanceRewards, ``SACAgent.compute_rg``). The batch's own
complete episodes are included too, so assigned rewards always lie in [0, 1]. When
``c_max == c_min`` every step gets ``degenerate_value`` (0.5).

The reference agent also draws half of each SAC batch from the heap; that is a property of
the RL loop, not of the reward, and is not reproduced here (see docs/credit.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..episodes import Episodes
from ..errors import ShapeError
from ..outputs import RewardOutput
from ..registry import register_method
from .base import AssignerConfig, ConfiguredAssigner, complete_episodes, episode_arrays, reward_output

__all__ = ["ircr_rewards", "IRCRConfig", "IRCRAssigner"]


def ircr_rewards(
    credits: Any,
    mask: Any,
    *,
    c_min: float,
    c_max: float,
    has_return: Any | None = None,
    degenerate_value: float = 0.5,
) -> RewardOutput:
    """Guidance reward ``(c_b - c_min) / (c_max - c_min)`` on every step of episode b.

    Args:
        credits: float[B] -- per-step average return ``c_b = R_b / T_b``.
        mask: bool[B, T] -- valid steps.
        c_min, c_max: normalization range (over the buffer, the heap and the batch).
        has_return: bool[B] -- episodes without a return get 0 and ``present`` False.
        degenerate_value: reward of every step when ``c_max == c_min``.

    Returns:
        RewardOutput(rewards[B, T] float64, metrics, present[B, T]).

    Example (c = [1, 3, 2], range [1, 3]): [0, 1, 0.5] on every step of each episode
        >>> ircr_rewards(np.array([1.0, 3.0, 2.0]), np.ones((3, 2), bool), c_min=1.0, c_max=3.0).rewards
        array([[0. , 0. ],
               [1. , 1. ],
               [0.5, 0.5]])
    """
    c = np.asarray(credits, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or c.shape != (m.shape[0],):
        raise ShapeError(f"credits {c.shape} and mask {m.shape} must be [B] and [B, T]")
    has = np.ones(c.shape, bool) if has_return is None else np.asarray(has_return, dtype=bool)
    span = float(c_max) - float(c_min)
    degenerate = not span > 0
    g = np.full(c.shape, float(degenerate_value)) if degenerate else (c - float(c_min)) / span
    present = m & has[:, None]
    out = np.where(present, g[:, None], 0.0)
    return RewardOutput(
        out,
        {
            "credit/ircr_degenerate": float(degenerate),
            "credit/ircr_c_min": float(c_min),
            "credit/ircr_c_max": float(c_max),
        },
        present,
    )


@dataclass(frozen=True, kw_only=True)
class IRCRConfig(AssignerConfig):
    """IRCR: the credit buffers (the official code's sizes)."""

    capacity_steps: int = 300_000
    """FIFO buffer size in steps (oldest trajectories evicted first)."""
    top_k: int = 10
    """Size of the heap of highest-return trajectories."""
    degenerate_value: float = 0.5
    """Reward of every step when all credits are equal (``c_max == c_min``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("capacity_steps", self.capacity_steps >= 1, ">= 1")
        self._check("top_k", self.top_k >= 0, ">= 0")


@register_method(
    "ircr",
    family="credit",
    kind="assigner",
    needs=("outcomes|rewards",),
    summary="IRCR guidance reward: per-step average return min-max normalized over a buffer + top-K heap",
    source="Gangwani et al. 2020, arXiv 2010.12718",
)
class IRCRAssigner(ConfiguredAssigner):
    """IRCR guidance rewards as a credit assigner (see the module docstring).

    ``fit`` adds the batch's complete episodes' credits to the FIFO buffer and the heap (no
    gradient steps: nothing is learned). ``assign`` normalizes each episode's credit with the
    current range. Parameters: :class:`IRCRConfig` (``include_truncated``: also take truncated
    episodes into the buffers).

    Example (credits 1 and 3 in the buffer; a new episode with R = 4 over 2 steps has c = 2):
        >>> ircr = IRCRAssigner()
        >>> _ = ircr.fit(Episodes.from_lists([[1.0], [0.0, 0.0, 9.0]]))
        >>> ircr.assign(Episodes.from_lists([[0.0, 4.0]])).rewards
        array([[0.5, 0.5]])
    """

    Config = IRCRConfig
    name = "ircr"
    scope = "episode"

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        self._credits = np.zeros(0)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._heap_returns = np.zeros(0)
        self._heap_credits = np.zeros(0)

    def fit(self, episodes: Episodes | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """Add complete episodes to the FIFO buffer and the top-K heap."""
        metrics: dict[str, float] = {"credit/updates": 0.0}
        if episodes is not None:
            arr = episode_arrays(episodes)
            keep, m = complete_episodes(arr, include_truncated=self.config.include_truncated)
            metrics.update(m)
            lens = arr.lengths[keep]
            rets = arr.returns[keep]
            credits = rets / lens
            self._credits = np.concatenate([self._credits, credits])
            self._lengths = np.concatenate([self._lengths, lens])
            over = int(self._lengths.sum()) - self.config.capacity_steps
            if over > 0:
                n_evict = int(np.searchsorted(np.cumsum(self._lengths), over) + 1)
                self._credits, self._lengths = self._credits[n_evict:], self._lengths[n_evict:]
            hr = np.concatenate([self._heap_returns, rets])
            hc = np.concatenate([self._heap_credits, credits])
            top = np.argsort(-hr, kind="stable")[: self.config.top_k]
            self._heap_returns, self._heap_credits = hr[top], hc[top]
        metrics.update({"store/episodes": float(self._credits.size), "store/steps": float(self._lengths.sum())})
        return metrics

    def credit_range(self, extra: np.ndarray | None = None) -> tuple[float, float]:
        """(c_min, c_max) over the buffer, the heap and ``extra`` credits."""
        parts = [self._credits, self._heap_credits] + ([extra] if extra is not None else [])
        allc = np.concatenate(parts)
        if allc.size == 0:
            return 0.0, 0.0
        return float(allc.min()), float(allc.max())

    def assign(self, episodes: Episodes) -> RewardOutput:
        arr = episode_arrays(episodes)
        credits = np.where(arr.has_return, arr.returns / np.maximum(arr.lengths, 1), 0.0)
        c_min, c_max = self.credit_range(credits[arr.has_return])
        out = ircr_rewards(
            credits,
            arr.mask,
            c_min=c_min,
            c_max=c_max,
            has_return=arr.has_return,
            degenerate_value=self.config.degenerate_value,
        )
        return reward_output(episodes, arr, out)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.saved_config(),
            "credits": self._credits.copy(),
            "lengths": self._lengths.copy(),
            "heap_returns": self._heap_returns.copy(),
            "heap_credits": self._heap_credits.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._credits = np.asarray(state["credits"], dtype=np.float64)
        self._lengths = np.asarray(state["lengths"], dtype=np.int64)
        self._heap_returns = np.asarray(state["heap_returns"], dtype=np.float64)
        self._heap_credits = np.asarray(state["heap_credits"], dtype=np.float64)

    def __repr__(self) -> str:
        return f"IRCRAssigner(buffer={self._credits.size} episodes, heap={self._heap_credits.size})"
