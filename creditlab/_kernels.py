"""Compiled kernels for the hot paths, with torch fallbacks.

A backward linear recurrence ``y_t = x_t + a_t * y_{t+1}`` has a dependency chain along time, so it
cannot be written as a handful of whole-array operations without either a Python loop over T
(what SB3 and verl do) or a numerically fragile closed form (cumulative products that underflow).
On CPU we compile the loop with numba, in the input's dtype, for any per-step discounts,
accumulating the statistics the caller reports (and, through NaN propagation in those sums,
detecting non-finite inputs at no extra cost): one pass over memory, or for GAE three passes over
blocks of rows that stay in L1 (``_gae_kernel``). Group statistics are one pass too (count, sum,
min, max per group, then centred sum of squares).

On other devices (CUDA) the fallbacks use whole-batch torch operations. Kernels are private:
public functions validate their inputs first.
"""

from __future__ import annotations

import os
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

Kernels = dict[str, Any]  # name -> numba dispatcher
_NUMBA: Kernels | Literal[False] | None = None  # resolved lazily (None); False: numba unavailable or disabled


def _numba_kernels() -> Kernels | None:
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA or None
    if os.environ.get("CREDITLAB_DISABLE_NUMBA") or BACKEND == "torch":
        _NUMBA = False
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
        _NUMBA = False
        return None

    # 'contract' lets LLVM fuse a*b + c into one FMA: the backward recurrences are latency-bound
    # on that chain (about 30% faster here). It keeps IEEE NaN/inf semantics (unlike full fastmath),
    # which the finiteness checks through running sums rely on.
    njit = numba.njit(cache=True, nogil=True, fastmath={"contract"})

    from ._gae_kernel import gae  # module-level parts, so the disk cache works (see there)

    @njit
    def returns(rewards, discounts, use_discounts, last_discount, lengths, bootstrap, gamma):
        n_rows, n_cols = rewards.shape
        out = np.empty_like(rewards)
        tot = np.zeros(3)  # sums over valid steps of r, G, G^2
        for b in range(n_rows):
            n = lengths[b]
            acc = float(bootstrap[b])
            d_last = float(last_discount[b])
            s_r = 0.0
            s_g = 0.0
            s_g2 = 0.0
            for t in range(n - 1, -1, -1):
                if use_discounts:
                    d = float(discounts[b, t])
                elif t == n - 1:
                    d = d_last
                else:
                    d = 1.0
                r = float(rewards[b, t])
                acc = r + gamma * d * acc
                out[b, t] = acc
                s_r += r
                s_g += acc
                s_g2 += acc * acc
            for t in range(n, n_cols):
                out[b, t] = 0.0
            tot[0] += s_r
            tot[1] += s_g
            tot[2] += s_g2
        return out, tot

    @njit
    def scan(x, coef, lengths):
        n_rows = x.shape[0]
        out = np.zeros_like(x)
        for b in range(n_rows):
            acc = 0.0
            for t in range(lengths[b] - 1, -1, -1):
                acc = x[b, t] + coef[b, t] * acc
                out[b, t] = acc
        return out

    @njit
    def mask_lengths(mask):
        m = mask.view(np.uint8)
        n_rows, n_cols = m.shape
        lengths = np.empty(n_rows, np.int64)
        hole_b = -1
        hole_t = -1
        for b in range(n_rows):
            s = 0
            for t in range(n_cols):  # branch-free, vectorized
                s += m[b, t]
            ok = 1
            for t in range(s):  # a prefix mask has its s ones first
                ok &= m[b, t]
            lengths[b] = s
            if ok == 0 and hole_b < 0:
                for t in range(1, n_cols):
                    if m[b, t] and not m[b, t - 1]:
                        hole_b = b
                        hole_t = t - 1
                        break
        return lengths, hole_b, hole_t

    @njit
    def numeric_mask(mask):
        # A float or integer [B, T] mask in one pass: the boolean mask, valid steps per row, whether
        # some entry is neither 0 nor 1, the first hole (b, t) (padding at t, valid at t + 1) and
        # whether every row is full. The per-row loop is branch-free (vectorized). An all-ones mask
        # (no padding, the usual case) is recognized first in one flat vectorized pass.
        n_rows, n_cols = mask.shape
        flat = mask.reshape(-1)
        ones = 0
        for i in range(np.uint64(0), np.uint64(flat.size)):
            ones += 1 if flat[i] == 1 else 0
        if ones == flat.size:
            return np.ones((n_rows, n_cols), np.uint8), np.full(n_rows, n_cols, np.int64), False, True, -1, -1
        out = np.empty((n_rows, n_cols), np.uint8)
        lengths = np.empty(n_rows, np.int64)
        bad = False
        full = True
        hole_b = -1
        hole_t = -1
        for b in range(n_rows):
            s = 0
            good = 0
            for t in range(n_cols):
                x = mask[b, t]
                o = 1 if x == 1 else 0
                z = 1 if x == 0 else 0
                out[b, t] = o
                s += o
                good += o + z
            bad |= good != n_cols
            full &= s == n_cols
            lengths[b] = s
            ok = 1
            for t in range(s):  # a prefix row has its s ones first
                ok &= out[b, t]
            if ok == 0 and hole_b < 0:
                for t in range(1, n_cols):
                    if out[b, t] and not out[b, t - 1]:
                        hole_b = b
                        hole_t = t - 1
                        break
        return out, lengths, bad, full, hole_b, hole_t

    @njit
    def group_moments(values, present, index, num_groups, unbiased):
        # Items of one group usually sit next to each other (GRPO samples a prompt's responses
        # together): accumulate each run of equal ids in registers and flush once per run, which
        # removes the store-to-load dependency of updating the same group slot item after item.
        n = values.shape[0]
        count = np.zeros(num_groups, np.int64)
        total = np.zeros(num_groups)
        vmin = np.full(num_groups, np.inf)
        vmax = np.full(num_groups, -np.inf)
        i = 0
        while i < n:
            g = index[i]
            c = 0
            s = 0.0
            lo = np.inf
            hi = -np.inf
            while i < n and index[i] == g:
                if present[i]:
                    v = float(values[i])
                    c += 1
                    s += v
                    lo = min(lo, v)
                    hi = max(hi, v)
                i += 1
            count[g] += c
            total[g] += s
            vmin[g] = min(vmin[g], lo)
            vmax[g] = max(vmax[g], hi)
        mean = np.zeros(num_groups)
        constant = np.ones(num_groups, np.bool_)
        for g in range(num_groups):
            if count[g] > 0:
                mean[g] = total[g] / count[g]
            constant[g] = count[g] <= 1 or vmax[g] == vmin[g]
        centered = np.zeros(n)
        ss = np.zeros(num_groups)
        i = 0
        while i < n:
            g = index[i]
            acc = 0.0
            if constant[g]:
                while i < n and index[i] == g:
                    i += 1
                continue
            m = mean[g]
            while i < n and index[i] == g:
                if present[i]:
                    c2 = float(values[i]) - m
                    centered[i] = c2
                    acc += c2 * c2
                i += 1
            ss[g] += acc
        std = np.zeros(num_groups)
        for g in range(num_groups):
            if not constant[g]:
                denom = count[g] - 1 if unbiased else count[g]
                std[g] = np.sqrt(ss[g] / denom)
        return count, mean, std, constant, centered

    @njit
    def group_advantages(values, present, index, num_groups, unbiased, mode, eps, out):
        # group_moments (same sums in the same order, so the same float64 statistics), then the
        # per-item advantage written in out's dtype, and the sums the caller's metrics need.
        # mode 0: centred / (std + eps) where std > 0 (GRPO); 1: centred (Dr. GRPO);
        # 2: centred * n / max(n - 1, 1) (RLOO). tot: n_present, sum r, sum r^2, sum a, sum a^2,
        # sum of the written (cast) a, groups non-empty, singleton, zero spread, members of both.
        n = values.shape[0]
        count = np.zeros(num_groups, np.int64)
        total = np.zeros(num_groups)
        vmin = np.full(num_groups, np.inf)
        vmax = np.full(num_groups, -np.inf)
        s_r = 0.0
        s_r2 = 0.0
        i = 0
        while i < n:
            g = index[i]
            c = 0
            s = 0.0
            lo = np.inf
            hi = -np.inf
            while i < n and index[i] == g:
                if present[i]:
                    v = float(values[i])
                    c += 1
                    s += v
                    lo = min(lo, v)
                    hi = max(hi, v)
                    s_r2 += v * v
                i += 1
            count[g] += c
            total[g] += s
            s_r += s
            vmin[g] = min(vmin[g], lo)
            vmax[g] = max(vmax[g], hi)
        mean = np.zeros(num_groups)
        constant = np.ones(num_groups, np.bool_)
        n_present = 0
        n_nonempty = 0
        n_single = 0
        n_zero = 0
        in_degenerate = 0
        for g in range(num_groups):
            k = count[g]
            if k > 0:
                mean[g] = total[g] / k
                n_nonempty += 1
                n_present += k
            constant[g] = k <= 1 or vmax[g] == vmin[g]
            if k == 1:
                n_single += 1
            elif k > 1 and constant[g]:
                n_zero += 1
            if constant[g]:
                in_degenerate += k
        centered = np.zeros(n)
        ss = np.zeros(num_groups)
        i = 0
        while i < n:
            g = index[i]
            acc = 0.0
            if constant[g]:
                while i < n and index[i] == g:
                    i += 1
                continue
            m = mean[g]
            while i < n and index[i] == g:
                if present[i]:
                    c2 = float(values[i]) - m
                    centered[i] = c2
                    acc += c2 * c2
                i += 1
            ss[g] += acc
        scale = np.ones(num_groups)
        stats_ok = True
        for g in range(num_groups):
            std = 0.0
            if not constant[g]:
                denom = count[g] - 1 if unbiased else count[g]
                std = np.sqrt(ss[g] / denom)
            if not (np.isfinite(mean[g]) and np.isfinite(std)):
                stats_ok = False
            if mode == 0:  # divisor
                scale[g] = std + eps if std > 0 else 1.0
            elif mode == 2:  # factor
                k = float(count[g])
                scale[g] = k / max(k - 1.0, 1.0)
        s_a = 0.0
        s_a2 = 0.0
        s_out = 0.0
        for i in range(n):
            c2 = centered[i]
            g = index[i]
            if mode == 0:
                a = c2 / scale[g]
            elif mode == 2:
                a = c2 * scale[g]
            else:
                a = c2
            out[i] = a
            s_out += float(out[i])
            s_a += a
            s_a2 += a * a
        tot = np.array(
            [
                float(n_present),
                s_r,
                s_r2,
                s_a,
                s_a2,
                s_out,
                float(n_nonempty),
                float(n_single),
                float(n_zero),
                float(in_degenerate),
            ]
        )
        return tot, stats_ok

    _NUMBA = {
        "group_advantages": group_advantages,
        "gae": gae,
        "returns": returns,
        "scan": scan,
        "mask_lengths": mask_lengths,
        "numeric_mask": numeric_mask,
        "group_moments": group_moments,
    }
    return _NUMBA


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


# Which implementation runs: "auto" (numba on CPU for batches worth compiling for, torch
# otherwise), "numba" or "torch" (environment variable CREDITLAB_KERNELS). Small inputs skip
# numba until it is loaded: importing it and loading the cached kernels costs ~0.5 s of CPU
# (1-1.5 s wall) per process, more than a torch path over a few thousand elements costs in a
# one-off call. It is loaded by the first large input, or by the SMALL_CALLS-th small call (a
# loop: the torch path costs ~0.2 ms more per call, so a training loop soon pays the load back);
# once loaded, every CPU input uses it.
BACKEND = os.environ.get("CREDITLAB_KERNELS", "auto")
SMALL = 20_000  # elements
SMALL_CALLS = 64
_small_calls = 0


def _numba_for(numel: int, ndim: int, last_dim: int) -> Kernels | None:
    """The compiled kernels for a CPU input of this size (None: take the torch path)."""
    global _small_calls
    if BACKEND == "auto" and not _NUMBA and numel < SMALL and (ndim < 2 or last_dim <= 256):
        _small_calls += 1
        if _small_calls <= SMALL_CALLS:
            return None  # small and numba not loaded yet: not worth the load (once loaded, always used)
    return _numba_kernels()


def _use_numba(t: torch.Tensor) -> Kernels | None:
    if (
        BACKEND == "torch"
        or t.device.type != "cpu"
        or t.dtype not in (torch.float32, torch.float64, torch.bool, torch.int64)
    ):
        return None
    return _numba_for(t.numel(), t.ndim, t.shape[-1] if t.ndim else 0)


class ScanResult(NamedTuple):
    out: torch.Tensor  # advantages (GAE) or returns
    returns: torch.Tensor | None  # GAE: advantages + values; None for returns_scan
    stats: dict[str, float]  # sums over valid steps (see keys)


def _discounts_args(discounts: torch.Tensor | None, last_discount: torch.Tensor, like: np.ndarray):
    if discounts is None:
        return np.zeros((1, 1), like.dtype), False
    return _np(discounts), True


def gae_scan(
    rewards: torch.Tensor,
    values: torch.Tensor,
    discounts: torch.Tensor | None,
    last_discount: torch.Tensor,
    lengths: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lambda_: float,
    num_valid: int | None = None,
) -> ScanResult:
    """GAE advantages and lambda-returns (0 on padding) plus sums over valid steps.

    ``discounts`` None means 1 on every step except ``last_discount[b]`` on the last valid one.
    ``stats``: ``sum_adv``, ``sum_adv2``, ``sum_ret``, ``sum_ret2`` (float64 sums over valid steps
    of the advantages and returns and their squares; NaN or inf when a valid input is not finite,
    or on overflow) and ``n`` (valid steps; ``num_valid`` when the caller knows it).
    """
    if num_valid is None:
        num_valid = int(lengths.sum())
    k = _use_numba(rewards)
    if k is not None:
        flat_d = None if discounts is None else _np(discounts).reshape(-1)
        adv, ret, tot = k["gae"](
            _np(rewards), _np(values), flat_d, _np(last_discount), _np(lengths), _np(bootstrap), gamma, lambda_
        )
        stats = {
            "sum_adv": float(tot[0]),
            "sum_adv2": float(tot[1]),
            "sum_ret": float(tot[2]),
            "sum_ret2": float(tot[3]),
            "n": float(num_valid),
        }
        return ScanResult(torch.from_numpy(adv), torch.from_numpy(ret), stats)
    n_rows, n_cols = rewards.shape
    mask = torch.arange(n_cols, device=rewards.device)[None, :] < lengths[:, None]
    d = full_discounts(discounts, last_discount, lengths, mask, rewards.dtype)
    v = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    r = torch.where(mask, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))
    next_values = torch.zeros_like(v)
    next_values[:, :-1] = v[:, 1:]
    rows = torch.arange(n_rows, device=rewards.device)
    next_values[rows, (lengths - 1).clamp(min=0)] = bootstrap
    deltas = (r + gamma * d * next_values - v) * mask
    adv = _loop_scan(deltas, gamma * lambda_ * d * mask)
    ret = (adv + v) * mask
    return ScanResult(adv, ret, _torch_stats(adv, ret, num_valid))


def returns_scan(
    rewards: torch.Tensor,
    discounts: torch.Tensor | None,
    last_discount: torch.Tensor,
    lengths: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
) -> ScanResult:
    """Discounted returns-to-go with bootstrap after the last valid step; 0 on padding."""
    k = _use_numba(rewards)
    if k is not None:
        rn = _np(rewards)
        d, use_d = _discounts_args(discounts, last_discount, rn)
        out, s = k["returns"](rn, d, use_d, _np(last_discount), _np(lengths), _np(bootstrap), gamma)
        stats = {"sum_rewards": float(s[0]), "sum_ret": float(s[1]), "sum_ret2": float(s[2]), "n": float(lengths.sum())}
        return ScanResult(torch.from_numpy(out), None, stats)
    n_rows, n_cols = rewards.shape
    mask = torch.arange(n_cols, device=rewards.device)[None, :] < lengths[:, None]
    d = full_discounts(discounts, last_discount, lengths, mask, rewards.dtype)
    x = torch.where(mask, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device)).clone()
    rows = torch.arange(n_rows, device=rewards.device)
    last = (lengths - 1).clamp(min=0)
    x[rows, last] += gamma * d[rows, last] * bootstrap * (lengths > 0)
    out = _loop_scan(x, gamma * d * mask)
    m = mask.to(torch.float64)
    o = out.to(torch.float64)
    stats = {
        "sum_rewards": float((x.to(torch.float64) * m).sum()),
        "n": float(m.sum()),
        "sum_ret": float(o.sum()),
        "sum_ret2": float((o * o).sum()),
    }
    return ScanResult(out, None, stats)


def reverse_scan(x: torch.Tensor, coef: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``y_t = x_t + coef_t * y_{t+1}`` within each row's valid prefix; 0 on padding."""
    k = _use_numba(x)
    if k is not None:
        return torch.from_numpy(k["scan"](_np(x), _np(coef.to(x.dtype)), _np(lengths)))
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return _loop_scan(x * mask, coef * mask)


def mask_lengths(mask: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """Valid steps per row of a bool ``[B, T]`` mask and the first hole ``(b, t)`` (padding at t,
    valid at t + 1), or None when every row is a prefix."""
    k = _use_numba(mask)
    if k is not None:
        lengths, hb, ht = k["mask_lengths"](_np(mask))
        return torch.from_numpy(lengths), (None if hb < 0 else (int(hb), int(ht)))
    lengths = mask.sum(dim=1, dtype=torch.int64)
    hole = None
    if mask.shape[1] > 1:
        holes = (~mask[:, :-1]) & mask[:, 1:]
        if bool(holes.any()):
            b, t = torch.nonzero(holes)[0].tolist()
            hole = (b, t)
    return lengths, hole


class NumericMask(NamedTuple):
    mask: torch.Tensor  # bool[B, T]
    lengths: torch.Tensor  # int64[B], ones per row
    bad: bool  # some entry is neither 0 nor 1
    full: bool  # every entry is 1
    hole: tuple[int, int] | None  # first (b, t) with padding at t and a valid step at t + 1


_MASK_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def numeric_mask(mask: torch.Tensor) -> NumericMask | None:
    """Read a float or integer CPU ``[B, T]`` mask in one compiled pass (None: no compiled kernels)."""
    if mask.dtype not in _MASK_DTYPES or mask.ndim != 2 or mask.device.type != "cpu" or BACKEND == "torch":
        return None
    k = _numba_for(mask.numel(), mask.ndim, mask.shape[-1])
    if k is None:
        return None
    out, lengths, bad, full, hb, ht = k["numeric_mask"](_np(mask))
    return NumericMask(
        torch.from_numpy(out.view(np.bool_)),
        torch.from_numpy(lengths),
        bool(bad),
        bool(full),
        None if hb < 0 else (int(hb), int(ht)),
    )


def group_moments(values: torch.Tensor, present: torch.Tensor, index: torch.Tensor, num_groups: int, unbiased: bool):
    """Per-group (count, mean, std, constant) and per-item centred values, float64.

    ``constant[g]`` is True when the group's present values are all exactly equal (or it has at
    most one); such groups get centred value exactly 0 and std 0.
    """
    k = _use_numba(values)
    if k is not None and index.dtype == torch.int64:
        count, mean, std, constant, centered = k["group_moments"](
            _np(values), _np(present), _np(index), num_groups, unbiased
        )
        return (
            torch.from_numpy(count),
            torch.from_numpy(mean),
            torch.from_numpy(std),
            torch.from_numpy(constant),
            torch.from_numpy(centered),
        )
    return _torch_group_moments(values, present, index, num_groups, unbiased)


_GROUP_MODES = {"group": 0, "none": 1, "rloo": 2}


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # [N] in the values' dtype
    num_present: int
    sum_rewards: float  # sums over present items, float64
    sum_rewards2: float
    sum_adv: float  # of the float64 advantages (0 for missing items)
    sum_adv2: float
    num_groups: int  # non-empty groups
    num_singleton: int
    num_zero_std: int  # more than one present member, all equal
    num_in_degenerate: int  # present members of singleton and zero-spread groups


def group_advantages(
    values: torch.Tensor,
    present: torch.Tensor,
    index: torch.Tensor,
    num_groups: int,
    unbiased: bool,
    mode: str,
    eps: float,
) -> GroupAdvantages | None:
    """GRPO / Dr. GRPO / RLOO advantages and their metric sums in one compiled call (CPU).

    ``mode``: "group" (centred / (std + eps), std > 0), "none" (centred), "rloo" (centred * n / (n - 1)).
    The statistics are :func:`group_moments`' (same float64 sums in the same order). Returns None
    where the caller must take the general path: no compiled kernels for this input, or
    statistics, sums or advantages that are not finite (huge values, which the general path
    rescales or reports).
    """
    k = _use_numba(values)
    if k is None or index.dtype != torch.int64 or values.dtype not in (torch.float32, torch.float64):
        return None
    out = np.empty(values.shape[0], dtype=np.float32 if values.dtype == torch.float32 else np.float64)
    tot, ok = k["group_advantages"](
        _np(values), _np(present), _np(index), num_groups, unbiased, _GROUP_MODES[mode], float(eps), out
    )
    if not (ok and np.isfinite(tot[:6]).all()):
        return None
    return GroupAdvantages(
        torch.from_numpy(out),
        int(tot[0]),
        float(tot[1]),
        float(tot[2]),
        float(tot[3]),
        float(tot[4]),
        int(tot[6]),
        int(tot[7]),
        int(tot[8]),
        int(tot[9]),
    )


def _torch_group_moments(values, present, index, num_groups, unbiased):
    dev = values.device
    f64 = torch.float64
    v = torch.where(present, values.to(f64), torch.zeros((), dtype=f64, device=dev))
    count = (
        torch.bincount(index[present], minlength=num_groups)
        if present.numel()
        else torch.zeros(num_groups, dtype=torch.int64, device=dev)
    )
    total = torch.zeros(num_groups, dtype=f64, device=dev).index_add_(0, index, v)
    mean = total / count.clamp(min=1)
    big = torch.finfo(f64).max
    vmax = torch.full((num_groups,), -big, dtype=f64, device=dev).scatter_reduce(
        0, index, torch.where(present, v, torch.full_like(v, -big)), reduce="amax"
    )
    vmin = torch.full((num_groups,), big, dtype=f64, device=dev).scatter_reduce(
        0, index, torch.where(present, v, torch.full_like(v, big)), reduce="amin"
    )
    constant = (vmax == vmin) | (count <= 1)
    centered = torch.where(present & ~constant[index], v - mean[index], torch.zeros((), dtype=f64, device=dev))
    ss = torch.zeros(num_groups, dtype=f64, device=dev).index_add_(0, index, centered * centered)
    denom = (count - 1) if unbiased else count
    std = torch.where(constant, torch.zeros_like(ss), torch.sqrt(ss / denom.clamp(min=1)))
    return count, mean, std, constant, centered


def full_discounts(discounts, last_discount, lengths, mask, dtype) -> torch.Tensor:
    """Materialize ``[B, T]`` discounts (1 on valid steps, ``last_discount`` at the last one)."""
    if discounts is not None:
        return discounts
    d = mask.to(dtype)
    rows = torch.arange(d.shape[0], device=d.device)
    d[rows, (lengths - 1).clamp(min=0)] = last_discount.to(dtype)
    return d * mask


def _torch_stats(adv: torch.Tensor, ret: torch.Tensor, num_valid: int) -> dict[str, float]:
    a = adv.to(torch.float64)
    g = ret.to(torch.float64)
    return {
        "sum_adv": float(a.sum()),
        "sum_adv2": float((a * a).sum()),
        "sum_ret": float(g.sum()),
        "sum_ret2": float((g * g).sum()),
        "n": float(num_valid),
    }


def _loop_scan(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    if x.shape[1] == 0:
        return out
    acc = torch.zeros_like(x[:, 0])
    for t in range(x.shape[1] - 1, -1, -1):
        acc = x[:, t] + coef[:, t] * acc
        out[:, t] = acc
    return out
