"""Reward transforms: potential-based shaping, PAR, Clip/Delta, gated accumulation, length penalties."""

from .gated import gated_accumulation, gated_levels
from .length import group_length_penalty, overlong_penalty
from .par import par
from .potential import potential_shaping
from .process import clip_process_rewards, delta_process_rewards

__all__ = [
    "clip_process_rewards",
    "delta_process_rewards",
    "gated_accumulation",
    "gated_levels",
    "group_length_penalty",
    "overlong_penalty",
    "par",
    "potential_shaping",
]
