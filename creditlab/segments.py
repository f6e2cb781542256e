"""Segment (group) primitives: sums, means and spreads over integer group ids, in O(N).

Groups are index arrays (any sizes, any order), never "contiguous blocks of G". Statistics are
accumulated in float64 whatever the input dtype, and centring is done in float64 before the
result is cast back: this is what keeps float32 leave-one-out baselines and zero-spread groups
exact (a group of identical rewards gets exactly 0, never a rounding residue divided by a tiny
std).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._arrays import GroupIndex

__all__ = ["GroupStats", "group_stats", "segment_sum", "segment_count", "masked_whiten"]


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values[N]`` per group; float64 accumulation for floating input. Returns ``[G]``."""
    acc_dtype = torch.float64 if values.is_floating_point() else torch.int64
    out = torch.zeros(num_groups, dtype=acc_dtype, device=values.device)
    return out.index_add_(0, index, values.to(acc_dtype))


def segment_count(present: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Number of present items per group, ``int64[G]``."""
    return torch.bincount(index[present], minlength=num_groups) if present.numel() else torch.zeros(
        num_groups, dtype=torch.int64, device=index.device
    )


class GroupStats(NamedTuple):
    """Per-group statistics of the present items (float64).

    Attributes:
        mean: float64[G] -- mean of present items (0 for empty groups).
        std: float64[G] -- standard deviation (unbiased or population); 0 when undefined.
        count: int64[G] -- number of present items.
        constant: bool[G] -- True when the group's present items are all exactly equal
            (including groups of one); such groups carry no learning signal.
        centered: float64[N] -- ``value - mean`` of the item's group (0 for missing items, and
            exactly 0 in constant groups).
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: torch.Tensor
    constant: torch.Tensor
    centered: torch.Tensor


def group_stats(values: torch.Tensor, present: torch.Tensor, groups: GroupIndex, *, unbiased: bool = True) -> GroupStats:
    """Compute mean, std, counts and exact-constancy per group for ``values[N]``.

    ``present[N]`` marks the items that take part (missing rewards are excluded from their
    group's statistics).
    """
    from ._kernels import group_moments

    count, mean, std, constant, centered = group_moments(
        values.contiguous(), present.contiguous(), groups.index.contiguous(), groups.num_groups, unbiased
    )
    return GroupStats(mean, std, count, constant, centered)


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps: float = 1e-8,
    shift_mean: bool = True,
    unbiased: bool = True,
) -> tuple[torch.Tensor, float, float]:
    """Whiten ``values`` over the entries where ``mask`` is true: ``(x - mean) / sqrt(var + eps)``.

    This is verl's ``masked_whiten``. Masked-out entries come back as 0. Statistics in float64.
    Returns ``(whitened, mean, std)``. A batch with fewer than 2 entries or zero spread is
    centred only (no division by ~0).
    """
    x = values.to(torch.float64)
    m = mask.to(torch.bool)
    n = int(m.sum())
    if n == 0:
        return torch.zeros_like(values), 0.0, 0.0
    xm = x[m]
    mean = xm.mean()
    constant = n < 2 or bool(xm.max() == xm.min())
    if constant:
        # No spread: whitening is undefined. Centred values are exactly 0; unshifted ones pass through.
        out = torch.zeros_like(x) if shift_mean else x
        std = 0.0
    else:
        dev = xm - mean
        var = (dev * dev).sum() / (n - 1 if unbiased else n)
        out = ((x - mean) if shift_mean else x) / torch.sqrt(var + eps)
        std = float(torch.sqrt(var))
    out = torch.where(m, out, torch.zeros_like(out))
    return out.to(values.dtype), float(mean), std
