"""Validation of the padded ``[B, T]`` step layout shared by step-level estimators and transforms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import _kernels
from ._arrays import (
    ArrayLike,
    Backend,
    all_finite,
    as_float,
    check_finite,
    check_nonempty,
    check_shape,
    mask_info,
    plain_float,
    shape_bt,
)
from .errors import RangeError, ShapeError


@dataclass(frozen=True)
class Steps:
    """Validated step inputs; all tensors share dtype and device.

    Attributes:
        rewards: float[B, T], 0 on padding.
        mask: bool[B, T] prefix mask.
        lengths: int64[B] valid steps per episode.
        discounts: float[B, T] continuation in [0, 1] (0 on padding), or None when the only
            non-unit discount is ``last_discount`` at each episode's last step (the usual case:
            kernels then avoid materializing a [B, T] array).
        last_discount: float[B] continuation after the last valid step (0 = terminated).
        bootstrap: float[B] value of the state after the last valid step (0 if not given).
        full: True when no row has padding.
        backend: where results go back to.
        num_valid: number of valid steps (``lengths.sum()``).
    """

    rewards: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    discounts: torch.Tensor | None
    last_discount: torch.Tensor
    bootstrap: torch.Tensor
    full: bool
    backend: Backend
    num_valid: int

    @property
    def shape(self) -> tuple[int, int]:
        return shape_bt(self.rewards)

    def zero_pad(self, x: torch.Tensor) -> torch.Tensor:
        if self.full:
            return x
        return torch.where(self.mask, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def full_discounts(self) -> torch.Tensor:
        """float[B, T] discounts, materialized."""
        return _kernels.full_discounts(self.discounts, self.last_discount, self.lengths, self.mask, self.rewards.dtype)


def step_inputs(
    rewards: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_value: ArrayLike | None = None,
    rewards_name: str = "rewards",
    check_rewards: bool = True,
) -> Steps:
    """Read and validate the common step arguments.

    ``discounts`` and ``terminated`` are two spellings of the same fact: ``terminated[b]`` True
    sets the discount of episode b's last valid step to 0. Passing both is an error.
    With ``check_rewards=False`` the caller takes over the finiteness check (the compiled kernels
    detect NaN/inf through their running sums and then call :func:`check_finite`).

    The usual call (see :func:`_plain_steps`) is read in a few operations; any other input, and
    any input to reject, goes through the general reading below, which names what is wrong.
    """
    if discounts is None:
        s = _plain_steps(rewards, mask, terminated, bootstrap_value, check_rewards)
        if s is not None:
            return s
    backend = Backend.of(rewards)
    r = as_float(rewards, rewards_name, ndim=2, finite=False)
    if r.ndim != 2:
        raise ShapeError(f"{rewards_name} must be [B, T]; got shape {tuple(r.shape)}")
    check_nonempty(r.shape[0], rewards_name)
    m, lengths, full = mask_info(mask, "mask", shape_bt(r), device=r.device)
    hint = " on valid steps (use 0 for a step without reward)"
    if check_rewards:
        check_finite(r, rewards_name, where=None if full else m, hint=hint)
    if not full:
        r = torch.where(m, r, torch.zeros((), dtype=r.dtype, device=r.device))
    r = r.contiguous()
    if discounts is not None and terminated is not None:
        raise RangeError("pass either discounts or terminated, not both (terminated[b] sets the last discount to 0)")
    d = None
    if discounts is not None:
        d = as_float(discounts, "discounts", shape=tuple(r.shape), dtype=r.dtype, device=r.device, finite=False)
        check_finite(d, "discounts", where=None if full else m)
        bad = (d < 0) | (d > 1)
        if not full:
            bad &= m
        if bool(bad.any()):
            b, t = torch.nonzero(bad)[0].tolist()
            raise RangeError(
                f"discounts[{b}, {t}] = {d[b, t].item()}; discounts are continuation factors in [0, 1] "
                "(1 = the episode continues, 0 = it terminated here); gamma is passed separately"
            )
        if not full:
            d = torch.where(m, d, torch.zeros((), dtype=r.dtype, device=r.device))
        d = d.contiguous()
        last = d[torch.arange(r.shape[0], device=r.device), lengths - 1]
    else:
        if terminated is None:
            last = torch.ones(r.shape[0], dtype=r.dtype, device=r.device)
        else:
            if getattr(terminated, "dtype", None) in (np.bool_, torch.bool):  # nothing to check
                term = torch.as_tensor(terminated, device=r.device)
                check_shape(term, "terminated", shape=(r.shape[0],))
                last = (~term).to(r.dtype)
            else:
                term = as_float(terminated, "terminated", shape=(r.shape[0],), device=r.device, finite=True)
                if bool(((term != 0) & (term != 1)).any()):
                    raise RangeError("terminated must be boolean per episode, shape [B]")
                last = (1 - term).to(r.dtype)
    if bootstrap_value is None:
        boot = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    else:
        boot = as_float(bootstrap_value, "bootstrap_value", shape=(r.shape[0],), dtype=r.dtype, device=r.device)
    num_valid = r.shape[0] * r.shape[1] if full else int(lengths.sum())
    return Steps(r, m, lengths, d, last.contiguous(), boot.contiguous(), full, backend, num_valid)


def per_step(x: ArrayLike, name: str, steps: Steps, *, finite: bool = True, hint: str = "") -> torch.Tensor:
    """Read another ``[B, T]`` array aligned with ``steps`` (values, potentials, ...), zero on padding."""
    t = as_float(
        x,
        name,
        shape=steps.shape,
        dtype=steps.rewards.dtype,
        device=steps.rewards.device,
        finite=False,
    )
    if t.shape != steps.rewards.shape:
        raise ShapeError(f"{name} has shape {tuple(t.shape)} but rewards has {steps.shape}{hint}")
    if finite:
        check_finite(t, name, where=None if steps.full else steps.mask, hint=" on valid steps")
    return steps.zero_pad(t).contiguous()


_NUMPY = Backend(False, torch.device("cpu"))
_TORCH_CPU = Backend(True, torch.device("cpu"))
_MASK_DTYPES = tuple(  # NumPy masks the compiled mask readers take
    np.dtype(t) for t in (np.bool_, np.float32, np.float64, np.int64, np.int32, np.int16, np.int8, np.uint8)
)


def _plain_steps(
    rewards: ArrayLike,
    mask: ArrayLike | None,
    terminated: ArrayLike | None,
    bootstrap_value: ArrayLike | None,
    check_rewards: bool,
) -> Steps | None:
    """:func:`step_inputs` for the usual call, in a few operations, or None.

    The usual call: float32/float64 rewards ``[B, T]`` on the CPU (NumPy or torch, C-contiguous,
    B, T > 0), a bool prefix mask of the same shape without empty rows (or none), no
    ``discounts``, a bool ``terminated[B]`` (or none), a finite ``bootstrap_value[B]`` of the
    rewards' dtype (or none), finite rewards when they are to be checked. For anything else,
    including every input the general path rejects, this returns None without raising, and
    :func:`step_inputs` reads the arguments again the general way (which raises the named error).
    The ``Steps`` returned are the general path's for the same input. New arrays are made with
    NumPy and wrapped (``torch.from_numpy``): a torch factory call costs several times more here.
    """
    r = plain_float(rewards, tuple(getattr(rewards, "shape", ())))
    if r is None or r.ndim != 2 or r.shape[0] == 0 or r.shape[1] == 0:
        return None
    n_rows, n_cols = r.shape
    np_dtype = np.float32 if r.dtype == torch.float32 else np.float64
    read = _plain_mask(mask, (n_rows, n_cols))
    if read is None:
        return None
    m, lengths, full = read
    if terminated is None:
        last = torch.from_numpy(np.ones(n_rows, np_dtype))
    elif type(terminated) is np.ndarray and terminated.dtype == np.bool_ and terminated.shape == (n_rows,):
        last = torch.from_numpy((~terminated).astype(np_dtype))
    elif (
        isinstance(terminated, torch.Tensor)
        and terminated.dtype == torch.bool
        and terminated.device.type == "cpu"
        and tuple(terminated.shape) == (n_rows,)
    ):
        last = torch.from_numpy((~terminated.detach().numpy()).astype(np_dtype))
    else:
        return None
    boot = torch.from_numpy(np.zeros(n_rows, np_dtype)) if bootstrap_value is None else None
    if boot is None:
        boot = plain_float(bootstrap_value, (n_rows,), r.dtype)
        if boot is None or not all_finite(boot):
            return None
    if not full:
        r = torch.where(m, r, torch.zeros((), dtype=r.dtype))
    if check_rewards and not all_finite(r):
        return None
    num_valid = n_rows * n_cols if full else int(lengths.sum())
    return Steps(
        r, m, lengths, None, last, boot, full, _TORCH_CPU if isinstance(rewards, torch.Tensor) else _NUMPY, num_valid
    )


def _plain_mask(mask: ArrayLike | None, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, bool] | None:
    """``(mask, lengths, full)`` of no mask, or of a valid CPU prefix mask without empty rows: bool,
    or float/integer 0/1 (verl's ``response_mask``) read in one compiled pass; else None."""
    if mask is None:
        return torch.from_numpy(np.ones(shape, np.bool_)), torch.from_numpy(np.full(shape[0], shape[1], np.int64)), True
    if type(mask) is np.ndarray:
        if (
            mask.dtype not in _MASK_DTYPES
            or mask.shape != shape
            or not (mask.flags.c_contiguous and mask.flags.writeable)
        ):
            return None
        m = torch.from_numpy(mask)
    elif isinstance(mask, torch.Tensor):
        if mask.device.type != "cpu" or tuple(mask.shape) != shape or not mask.is_contiguous():
            return None
        m = mask.detach()
    else:
        return None
    if m.dtype != torch.bool:
        read = _kernels.numeric_mask(m)
        if read is None or read.bad or read.hole is not None or (not read.full and bool((read.lengths == 0).any())):
            return None
        return read.mask, read.lengths, read.full
    if m.numpy().all():  # NumPy's bool all() is ~10x cheaper than torch's
        return m, torch.from_numpy(np.full(shape[0], shape[1], np.int64)), True
    lengths, hole = _kernels.mask_lengths(m)
    if hole is not None or bool((lengths == 0).any()):
        return None
    return m, lengths, False
