"""Validation of the padded ``[B, T]`` step layout shared by step-level estimators and transforms."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._arrays import ArrayLike, Backend, as_float, as_mask, check_nonempty, lengths_of
from .errors import RangeError, ShapeError


@dataclass(frozen=True)
class Steps:
    """Validated step inputs; all tensors share dtype and device.

    Attributes:
        rewards: float[B, T], 0 on padding.
        mask: bool[B, T] prefix mask.
        lengths: int64[B] valid steps per episode.
        discounts: float[B, T] continuation factor in [0, 1]; 0 where the episode terminated.
        bootstrap: float[B] value of the state after the last valid step (0 if not given).
        backend: where results go back to.
    """

    rewards: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    discounts: torch.Tensor
    bootstrap: torch.Tensor
    backend: Backend

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.rewards.shape)  # type: ignore[return-value]

    def zero_pad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def step_inputs(
    rewards: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_value: ArrayLike | None = None,
    rewards_name: str = "rewards",
) -> Steps:
    """Read and validate the common step arguments.

    ``discounts`` and ``terminated`` are two spellings of the same fact: ``terminated[b]`` True
    sets the discount of episode b's last valid step to 0. Passing both is an error.
    """
    backend = Backend.of(rewards)
    r = as_float(rewards, rewards_name, ndim=2, finite=False)
    if r.ndim != 2:
        raise ShapeError(f"{rewards_name} must be [B, T]; got shape {tuple(r.shape)}")
    check_nonempty(r.shape[0], rewards_name)
    m = as_mask(mask, "mask", tuple(r.shape), device=r.device)
    from ._arrays import check_finite

    check_finite(r, rewards_name, where=m, hint=" on valid steps; expected finite rewards (use 0 for a step without reward)")
    r = torch.where(m, r, torch.zeros((), dtype=r.dtype, device=r.device))
    lengths = lengths_of(m)
    if discounts is not None and terminated is not None:
        raise RangeError("pass either discounts or terminated, not both (terminated[b] sets the last discount to 0)")
    if discounts is not None:
        d = as_float(discounts, "discounts", shape=tuple(r.shape), dtype=r.dtype, device=r.device, finite=False)
        check_finite(d, "discounts", where=m)
        bad = m & ((d < 0) | (d > 1))
        if bool(bad.any()):
            b, t = torch.nonzero(bad)[0].tolist()
            raise RangeError(
                f"discounts[{b}, {t}] = {d[b, t].item()}; discounts are continuation factors in [0, 1] "
                "(1 = the episode continues, 0 = it terminated here); gamma is passed separately"
            )
        d = torch.where(m, d, torch.zeros((), dtype=r.dtype, device=r.device))
    else:
        d = m.to(r.dtype)
        if terminated is not None:
            term = as_float(terminated, "terminated", shape=(r.shape[0],), device=r.device, finite=True)
            if bool(((term != 0) & (term != 1)).any()):
                raise RangeError("terminated must be boolean per episode, shape [B]")
            rows = torch.arange(r.shape[0], device=r.device)
            d[rows, lengths - 1] = 1 - term.to(r.dtype)
    if bootstrap_value is None:
        boot = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    else:
        boot = as_float(
            bootstrap_value,
            "bootstrap_value",
            shape=(r.shape[0],),
            dtype=r.dtype,
            device=r.device,
        )
    return Steps(r, m, lengths, d.contiguous(), boot, backend)


def per_step(x: ArrayLike, name: str, steps: Steps, *, finite: bool = True) -> torch.Tensor:
    """Read another ``[B, T]`` array aligned with ``steps`` (values, potentials, ...)."""
    t = as_float(
        x,
        name,
        shape=steps.shape,
        dtype=steps.rewards.dtype,
        device=steps.rewards.device,
        finite=False,
    )
    if finite:
        from ._arrays import check_finite

        check_finite(t, name, where=steps.mask, hint=" on valid steps")
    return steps.zero_pad(t).contiguous()
