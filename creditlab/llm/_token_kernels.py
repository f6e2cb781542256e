"""Compiled passes over token rows for the trainer adapters (turns = runs of policy tokens).

``turn_sums`` attributes every token's value to the turn it belongs to or follows (-1 before the
first turn is dropped) and counts the turns; ``turn_broadcast`` writes a per-turn value onto the
turn's policy tokens (0 elsewhere). One pass per row on CPU with numba; the torch path (any device)
does the same with whole-tensor operations.
"""

from __future__ import annotations

import os

import numpy as np
import torch

_NUMBA = None


def _kernels():
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA or None
    if os.environ.get("CREDITLAB_DISABLE_NUMBA"):
        _NUMBA = False
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover
        _NUMBA = False
        return None

    @numba.njit(cache=True, nogil=True)
    def count(rm):
        b, n = rm.shape
        out = np.zeros(b, dtype=np.int64)
        for i in range(b):
            prev = False
            k = 0
            for j in range(n):
                cur = rm[i, j]
                if cur and not prev:
                    k += 1
                prev = cur
            out[i] = k
        return out

    @numba.njit(cache=True, nogil=True)
    def sums(rm, x, t):
        b, n = rm.shape
        out = np.zeros((b, t), dtype=np.float64)
        for i in range(b):
            prev = False
            k = -1
            acc = 0.0
            for j in range(n):
                cur = rm[i, j]
                if cur and not prev:
                    if k >= 0:
                        out[i, k] = acc
                    k += 1
                    acc = 0.0
                prev = cur
                acc += x[i, j]
            if k >= 0:
                out[i, k] = acc
        return out

    @numba.njit(cache=True, nogil=True)
    def broadcast(rm, v, out):
        # Walk each row run by run: a run of policy tokens is filled with its turn's value (a
        # tight store loop), everything else with 0; no per-token branch on turn starts.
        b, n = rm.shape
        for i in range(b):
            j = 0
            k = -1
            while j < n:
                if rm[i, j]:
                    k += 1
                    val = v[i, k]
                    while j < n and rm[i, j]:
                        out[i, j] = val
                        j += 1
                else:
                    out[i, j] = 0.0
                    j += 1
        return out

    _NUMBA = {"count": count, "sums": sums, "broadcast": broadcast}
    return _NUMBA


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


def turn_sums(rm: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums float64[B, T], num_turns int64[B])``; rows without a policy token count one empty turn."""
    k = _kernels() if rm.device.type == "cpu" and x.device.type == "cpu" else None
    if k is not None:
        m = _np(rm.bool())
        n = k["count"](m)
        t = max(int(n.max()) if n.size else 1, 1)
        xx = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float64)
        out = k["sums"](m, _np(xx), t)
        return torch.from_numpy(out), torch.from_numpy(np.maximum(n, 1))
    run = _runs(rm)
    bs, length = rm.shape
    n = (run[:, -1] + 1) if length else torch.zeros(bs, dtype=torch.int64, device=rm.device)
    t = max(int(n.max()), 1) if bs else 1
    trash = bs * t
    flat = torch.where(run >= 0, torch.arange(bs, device=rm.device)[:, None] * t + run, torch.full_like(run, trash))
    out = torch.zeros(trash + 1, dtype=torch.float64, device=rm.device)
    out.index_add_(0, flat.reshape(-1), x.reshape(-1).to(torch.float64))
    return out[:trash].reshape(bs, t), n.clamp(min=1)


def turn_broadcast(rm: torch.Tensor, values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float[B, L]: each policy token gets its turn's value; 0 on every other token."""
    k = _kernels() if rm.device.type == "cpu" and values.device.type == "cpu" else None
    if k is not None:
        np_dtype = np.float32 if dtype in (torch.float32, torch.float16, torch.bfloat16) else np.float64
        out = np.empty(tuple(rm.shape), dtype=np_dtype)
        k["broadcast"](_np(rm.bool()), _np(values).astype(np_dtype, copy=False), out)
        return torch.from_numpy(out).to(dtype)
    run = _runs(rm)
    vals = torch.gather(values.to(dtype), 1, run.clamp(min=0))
    return torch.where(rm.bool(), vals, torch.zeros((), dtype=dtype, device=vals.device))


def _runs(rm: torch.Tensor) -> torch.Tensor:
    m = rm.bool()
    starts = m.clone()
    starts[:, 1:] &= ~m[:, :-1]
    return torch.cumsum(starts, dim=1, dtype=torch.int64) - 1
