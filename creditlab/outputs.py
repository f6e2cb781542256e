"""Named results returned by creditlab functions (never bare tuples)."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["AdvantageOutput", "RewardOutput"]


class AdvantageOutput(NamedTuple):
    """Result of an advantage estimator.

    Attributes:
        advantages: float[B, T] for step-level estimators (0 on padding), or float[N] for
            per-episode group estimators (0 for episodes whose reward is missing).
        returns: float[B, T] value targets where the estimator defines them (GAE: A + V;
            returns-based estimators: the returns), else ``None``.
        metrics: diagnostics as plain floats under documented keys (see docs/metrics.md).
    """

    advantages: Any
    returns: Any
    metrics: dict[str, float]


class RewardOutput(NamedTuple):
    """Result of a reward transform or credit assigner.

    Attributes:
        rewards: float[B, T] per-step rewards (0 on padding) or float[N] per-episode rewards.
        metrics: diagnostics as plain floats.
        present: bool[N] (or [B, T]) -- False where the reward is "not applicable" (its input
            was None); ``None`` when every reward is present.
    """

    rewards: Any
    metrics: dict[str, float]
    present: Any = None
