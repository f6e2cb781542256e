"""Helpers shared by the turn-level estimators."""

from __future__ import annotations

import torch

from .._arrays import GroupIndex
from ..segments import GroupStats, group_stats


def turn_returns(rewards: torch.Tensor, lengths: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns-to-go within each row's valid prefix (no bootstrap); 0 on padding.

    ``rewards`` must already be validated (finite on valid steps, 0 on padding) and ``lengths``
    come from its prefix mask: this is the compiled scan without a second round of validation.
    """
    from .._kernels import returns_scan

    b = rewards.shape[0]
    ones = torch.ones(b, dtype=rewards.dtype, device=rewards.device)
    zeros = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    return returns_scan(rewards.contiguous(), None, ones, lengths, zeros, gamma).out


def group_normalize(
    values: torch.Tensor,
    present: torch.Tensor,
    groups: GroupIndex,
    *,
    scale: bool,
    eps: float,
    unbiased: bool = True,
) -> tuple[torch.Tensor, GroupStats]:
    """``(x - mean_g) / (std_g + eps)`` (or centred only without ``scale``), float64.

    Groups of one and zero-spread groups give exactly 0 (never 0/0, even with ``eps = 0``);
    items not ``present`` give 0 and are left out of the statistics.
    """
    st = group_stats(values, present, groups, unbiased=unbiased)
    out = st.centered
    if scale:
        s = st.std.index_select(0, groups.index) + eps
        out = out / torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(present, out, torch.zeros_like(out)), st
