"""Potential-based reward shaping (Ng, Harada & Russell, ICML 1999)."""

from __future__ import annotations

import torch

from .._adapters import last_step_values, like
from .._arrays import ArrayLike, as_float, check_unit
from .._steps import per_step, step_inputs
from ..errors import MissingColumnError
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = ["potential_shaping"]


def potential_shaping(
    rewards: ArrayLike,
    potentials: ArrayLike,
    *,
    gamma: float,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_potential: ArrayLike | None = None,
) -> RewardOutput:
    """Add ``F_t = gamma * d_t * Phi(s_{t+1}) - Phi(s_t)`` to each step's reward.

    Episode ends follow the termination/truncation split: at termination ``d = 0``, i.e. the
    terminal state's potential is 0, which keeps optimal policies unchanged; at truncation the
    potential of the state reached after the last step is taken from ``bootstrap_potential[b]``
    (default 0). Then the shaped discounted return from step t equals the original one minus
    ``Phi(s_t)`` for terminated episodes (plus ``gamma^(T-t) Phi(s_T)`` for truncated ones), so the
    ordering of actions by return-to-go from a state is unchanged.

    Args:
        rewards: float[B, T] -- reward after the action at step t.
        potentials: float[B, T] -- Phi(s_t) of the state at step t.
        gamma: discount in [0, 1]; use the agent's gamma.
        mask: bool[B, T] -- prefix mask.
        discounts: float[B, T] -- continuation in [0, 1] (0 at termination).
        terminated: bool[B] -- alternative to ``discounts``.
        bootstrap_potential: float[B] -- Phi of the state after the last valid step (truncation).

    Returns:
        RewardOutput(rewards[B, T], metrics) with 0 on padding.

    Example (gamma = 1, Phi = [1, 2, 3], terminated): F = [2-1, 3-2, 0-3] = [1, 1, -3]
        >>> import numpy as np
        >>> potential_shaping(np.zeros((1, 3)), np.array([[1.0, 2.0, 3.0]]), gamma=1.0,
        ...                   terminated=[True]).rewards
        array([[ 1.,  1., -3.]])
    """
    gamma = check_unit(gamma, "gamma")
    s = step_inputs(rewards, mask=mask, discounts=discounts, terminated=terminated)
    phi = per_step(potentials, "potentials", s)
    b, t = s.shape
    if bootstrap_potential is None:
        boot = torch.zeros(b, dtype=phi.dtype, device=phi.device)
    else:
        boot = as_float(bootstrap_potential, "bootstrap_potential", shape=(b,), dtype=phi.dtype, device=phi.device)
    nxt = torch.zeros_like(phi)
    nxt[:, :-1] = phi[:, 1:]
    rows = torch.arange(b, device=phi.device)
    nxt[rows, s.lengths - 1] = boot
    bonus = s.zero_pad(gamma * s.full_discounts() * nxt - phi)
    shaped = s.rewards + bonus
    metrics = {
        "shaping/bonus_mean": float(bonus[s.mask].to(torch.float64).mean()),
        "shaping/bonus_abs_max": float(bonus[s.mask].abs().max()),
    }
    return RewardOutput(s.backend.out(shaped), metrics)


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "potential_shaping",
    family="shaping",
    kind="rewards",
    needs=("rewards", "extras.potential"),
    summary="Potential-based shaping gamma*Phi(s') - Phi(s); Phi = 0 at termination",
    source="Ng, Harada & Russell 1999",
)
def _run_potential_shaping(episodes, *, gamma: float = 0.99, key: str = "potential") -> RewardOutput:
    """Phi(s_t) from the per-step column ``key``; Phi(s_T) of truncated episodes from
    ``bootstrap_potential`` read on each episode's last row."""
    if key not in episodes.extras:
        raise MissingColumnError(f"potential shaping needs a per-step potential column {key!r} (Phi(s_t))")
    boot = None
    if "bootstrap_potential" in episodes.extras:
        boot = like(episodes, last_step_values(episodes, episodes.extras["bootstrap_potential"]))
    return potential_shaping(
        episodes.rewards,
        episodes.extras[key],
        gamma=gamma,
        mask=episodes.mask,
        discounts=episodes.discounts,
        bootstrap_potential=boot,
    )
