"""Compiled backward scans over padded ``[B, T]`` episodes.

A backward linear recurrence ``y_t = x_t + a_t * y_{t+1}`` has a dependency chain along time, so
it cannot be written as a handful of whole-array NumPy/torch operations without either a
Python loop over T (what SB3 and verl do) or a numerically fragile closed form (cumulative
products that underflow). On CPU we compile the loop with numba: one pass over memory, in the
input's dtype, for any per-step discounts. On other devices (CUDA) we fall back to a loop over T
of whole-batch tensor operations, which is what a GPU wants anyway.

Kernels take C-contiguous NumPy arrays and ``lengths[B]`` (valid steps per row); outputs are 0 on
padding. They are private: public functions validate their inputs first.
"""

from __future__ import annotations

import os

import numpy as np
import torch

_NUMBA = None  # resolved lazily: numba import costs ~0.3 s


def _numba_kernels():
    global _NUMBA
    if _NUMBA is not None:
        return _NUMBA or None
    if os.environ.get("CREDITLAB_DISABLE_NUMBA"):
        _NUMBA = False
        return None
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
        _NUMBA = False
        return None

    njit = numba.njit(cache=True, nogil=True)

    @njit
    def gae(rewards, values, discounts, lengths, bootstrap, gamma, lam):
        n_rows, n_cols = rewards.shape
        out = np.zeros_like(rewards)
        for b in range(n_rows):
            n = lengths[b]
            acc = rewards.dtype.type(0.0)
            next_v = bootstrap[b]
            for t in range(n - 1, -1, -1):
                d = discounts[b, t]
                v = values[b, t]
                delta = rewards[b, t] + gamma * d * next_v - v
                acc = delta + gamma * lam * d * acc
                out[b, t] = acc
                next_v = v
        return out

    @njit
    def returns(rewards, discounts, lengths, bootstrap, gamma):
        n_rows, n_cols = rewards.shape
        out = np.zeros_like(rewards)
        for b in range(n_rows):
            acc = bootstrap[b]
            for t in range(lengths[b] - 1, -1, -1):
                acc = rewards[b, t] + gamma * discounts[b, t] * acc
                out[b, t] = acc
        return out

    @njit
    def scan(x, coef, lengths):
        n_rows, n_cols = x.shape
        out = np.zeros_like(x)
        for b in range(n_rows):
            acc = x.dtype.type(0.0)
            for t in range(lengths[b] - 1, -1, -1):
                acc = x[b, t] + coef[b, t] * acc
                out[b, t] = acc
        return out

    _NUMBA = {"gae": gae, "returns": returns, "scan": scan}
    return _NUMBA


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


def _use_numba(t: torch.Tensor) -> dict | None:
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return None
    return _numba_kernels()


def gae_scan(
    rewards: torch.Tensor,
    values: torch.Tensor,
    discounts: torch.Tensor,
    lengths: torch.Tensor,
    bootstrap: torch.Tensor,
    gamma: float,
    lambda_: float,
) -> torch.Tensor:
    """Advantages of generalized advantage estimation; 0 on padding. See :func:`creditlab.gae`."""
    k = _use_numba(rewards)
    if k is not None:
        dt = rewards.numpy().dtype.type
        out = k["gae"](
            _np(rewards), _np(values), _np(discounts), _np(lengths), _np(bootstrap), dt(gamma), dt(lambda_)
        )
        return torch.from_numpy(out)
    # Device fallback: whole-batch operations, one loop over T.
    n_rows, n_cols = rewards.shape
    mask = torch.arange(n_cols, device=rewards.device)[None, :] < lengths[:, None]
    next_values = torch.zeros_like(values)
    next_values[:, :-1] = values[:, 1:]
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(n_rows, device=rewards.device)
    next_values[rows, last] = bootstrap
    deltas = (rewards + gamma * discounts * next_values - values) * mask
    coef = gamma * lambda_ * discounts * mask
    return _loop_scan(deltas, coef)


def returns_scan(
    rewards: torch.Tensor, discounts: torch.Tensor, lengths: torch.Tensor, bootstrap: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Discounted returns-to-go with bootstrap after the last valid step; 0 on padding."""
    k = _use_numba(rewards)
    if k is not None:
        dt = rewards.numpy().dtype.type
        return torch.from_numpy(k["returns"](_np(rewards), _np(discounts), _np(lengths), _np(bootstrap), dt(gamma)))
    n_rows, n_cols = rewards.shape
    mask = torch.arange(n_cols, device=rewards.device)[None, :] < lengths[:, None]
    x = rewards * mask
    rows = torch.arange(n_rows, device=rewards.device)
    last = (lengths - 1).clamp(min=0)
    x = x.clone()
    x[rows, last] += gamma * discounts[rows, last] * bootstrap * (lengths > 0)
    return _loop_scan(x, gamma * discounts * mask)


def reverse_scan(x: torch.Tensor, coef: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``y_t = x_t + coef_t * y_{t+1}`` within each row's valid prefix; 0 on padding."""
    k = _use_numba(x)
    if k is not None:
        return torch.from_numpy(k["scan"](_np(x), _np(coef.to(x.dtype)), _np(lengths)))
    mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return _loop_scan(x * mask, coef * mask)


def _loop_scan(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    acc = torch.zeros_like(x[:, 0]) if x.shape[1] else None
    for t in range(x.shape[1] - 1, -1, -1):
        acc = x[:, t] + coef[:, t] * acc
        out[:, t] = acc
    return out
