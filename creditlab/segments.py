"""Segment (group) primitives: sums, means and spreads over integer group ids, in O(N).

Groups are index arrays (any sizes, any order), never "contiguous blocks of G". Statistics are
accumulated in float64 whatever the input dtype, and centring is done in float64 before the
result is cast back: this is what keeps float32 leave-one-out baselines and zero-spread groups
exact (a group of identical rewards gets exactly 0, never a rounding residue divided by a tiny
std). Finite values whose squares or sums overflow float64 (``|x|`` past ~1e154) are handled by
scaling with an exact power of two; a spread that float64 cannot represent at all is a
:class:`~creditlab.errors.NonFiniteError`, never a silent 0 or NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._arrays import GroupIndex, all_finite
from .errors import NonFiniteError

__all__ = ["GroupStats", "group_stats", "segment_sum", "segment_count", "masked_whiten", "scaled_moments"]


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values[N]`` per group; float64 accumulation for floating input. Returns ``[G]``."""
    acc_dtype = torch.float64 if values.is_floating_point() else torch.int64
    out = torch.zeros(num_groups, dtype=acc_dtype, device=values.device)
    return out.index_add_(0, index, values.to(acc_dtype))


def segment_count(present: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Number of present items per group, ``int64[G]``."""
    return (
        torch.bincount(index[present], minlength=num_groups)
        if present.numel()
        else torch.zeros(num_groups, dtype=torch.int64, device=index.device)
    )


@dataclass(frozen=True)
class GroupStats:
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


def group_stats(
    values: torch.Tensor, present: torch.Tensor, groups: GroupIndex, *, unbiased: bool = True
) -> GroupStats:
    """Compute mean, std, counts and exact-constancy per group for ``values[N]``.

    ``present[N]`` marks the items that take part (missing rewards are excluded from their
    group's statistics).
    """
    from ._kernels import group_moments

    count, mean, std, constant, centered = group_moments(
        values.contiguous(), present.contiguous(), groups.index.contiguous(), groups.num_groups, unbiased
    )
    if not (all_finite(mean) and all_finite(std)):
        # Finite inputs whose sums overflowed (|x| ~ 1e155 squares past the float64 range): redo
        # the statistics on values scaled by an exact power of two, then scale back.
        count, mean, std, constant, centered = _scaled_group_moments(values, present, groups, unbiased)
    return GroupStats(mean=mean, std=std, count=count, constant=constant, centered=centered)


def _pow2_exponent(x: torch.Tensor) -> int:
    """``e`` with ``max|x| < 2**e`` (0 for an all-zero tensor): ``ldexp(x, -e)`` lies in (-1, 1) exactly."""
    m = float(x.abs().max()) if x.numel() else 0.0
    return math.frexp(m)[1] if m > 0 else 0


def _scaled_group_moments(values: torch.Tensor, present: torch.Tensor, groups: GroupIndex, unbiased: bool):
    from ._kernels import group_moments

    v = torch.where(present, values.to(torch.float64), torch.zeros((), dtype=torch.float64, device=values.device))
    e = _pow2_exponent(v)
    scaled = torch.ldexp(v, torch.tensor(-e, dtype=torch.float64, device=v.device))
    count, mean, std, constant, centered = group_moments(
        scaled.contiguous(), present.contiguous(), groups.index.contiguous(), groups.num_groups, unbiased
    )
    up = torch.tensor(e, dtype=torch.float64, device=v.device)
    mean, std, centered = torch.ldexp(mean, up), torch.ldexp(std, up), torch.ldexp(centered, up)
    if not (all_finite(mean) and all_finite(std) and all_finite(centered)):
        raise NonFiniteError(
            f"group statistics overflow float64: the values reach {float(v.abs().max()):.3g} and their spread is not "
            "representable; rescale the rewards (e.g. divide by their maximum) before estimating advantages"
        )
    return count, mean, std, constant, centered


def scaled_moments(x: torch.Tensor) -> tuple[float, float]:
    """Mean and population std of a 1-D tensor in float64, without overflow for finite values.

    ``sum(x * x)`` overflows once ``|x|`` passes ~1e154; this scales by an exact power of two first
    when the plain computation is not finite.
    """
    n = x.numel()
    if n == 0:
        return 0.0, 0.0
    x64 = x.reshape(-1).to(torch.float64)
    mean = float(x64.sum()) / n
    var = float(torch.dot(x64, x64)) / n - mean * mean
    if math.isfinite(mean) and math.isfinite(var):
        return mean, max(var, 0.0) ** 0.5
    e = _pow2_exponent(x64)
    xs = torch.ldexp(x64, torch.tensor(-e, dtype=torch.float64, device=x64.device))
    m = float(xs.mean())
    v = max(float(((xs - m) ** 2).mean()), 0.0)
    return math.ldexp(m, e), math.ldexp(v**0.5, e)


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
        if bool(torch.isfinite(var)) and bool(torch.isfinite(mean)):
            out = ((x - mean) if shift_mean else x) / torch.sqrt(var + eps)
            std = float(torch.sqrt(var))
        else:  # the squares (or the sum) overflowed: whiten values scaled by an exact power of two
            e = _pow2_exponent(xm)
            down = torch.tensor(-e, dtype=torch.float64, device=x.device)
            xs = torch.ldexp(x, down)
            ms = xs[m].mean()
            ds = xs[m] - ms
            sd = torch.sqrt((ds * ds).sum() / (n - 1 if unbiased else n))
            out = ((xs - ms) if shift_mean else xs) / torch.sqrt(sd * sd + math.ldexp(eps, -2 * e))
            mean = torch.ldexp(ms, -down)
            std = math.ldexp(float(sd), e)
    out = torch.where(m, out, torch.zeros_like(out))
    return out.to(values.dtype), float(mean), std
