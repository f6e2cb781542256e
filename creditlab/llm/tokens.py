"""Map between turns ``[B, T]`` and tokens ``[B, L]``.

A multi-turn rollout is one token row per trajectory: prompt, then for each turn the policy's
tokens followed by the environment's (tool / observation) tokens. ``response_mask[b, l]`` is 1 on
tokens the policy generated and 0 elsewhere; ``turn_ids[b, l]`` says which turn a policy token
belongs to. From there:

* :func:`turn_ids_from_response_mask` -- each maximal run of policy tokens is one turn;
* :func:`creditlab.broadcast_to_tokens` -- a per-turn value onto every policy token of its turn
  (advantages);
* :func:`place_on_last_token` -- a per-turn value onto the last policy token of its turn only
  (token-level rewards for PPO/GAE-style trainers such as verl);
* :func:`turn_values_from_tokens` -- reduce token values to turns (sum of token log-ratios per
  turn, rewards a trainer placed on tokens, ...).

Masked tokens never receive a value, and a turn whose value is exactly 0 is still a turn: turns
are read from the masks, never inferred from non-zero values.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .._arrays import ArrayLike, Backend, as_float, as_mask, shape_bt
from ..errors import DtypeError, RangeError, ShapeError

__all__ = ["turn_ids_from_response_mask", "place_on_last_token", "turn_values_from_tokens"]


def turn_ids_from_response_mask(response_mask: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """Number the maximal runs of policy tokens: each run is one turn.

    Args:
        response_mask: bool[B, L] -- 1 on policy tokens; 0 on prompt, tool/observation tokens
            and padding.

    Returns:
        ``(turn_ids, num_turns)``: int64[B, L] with the turn index on policy tokens and -1
        elsewhere, and int64[B] turns per row. Same array kind as ``response_mask``.

    Example (two turns separated by two observation tokens):
        >>> import numpy as np
        >>> ids, n = turn_ids_from_response_mask(np.array([[0, 1, 1, 0, 0, 1, 0]]))
        >>> ids.tolist(), n.tolist()
        ([[-1, 0, 0, -1, -1, 1, -1]], [2])
    """
    backend = Backend.of(response_mask)
    rm = _mask2d(response_mask, "response_mask")
    starts = rm.clone()
    starts[:, 1:] &= ~rm[:, :-1]
    run = torch.cumsum(starts.to(torch.int64), dim=1) - 1
    ids = torch.where(rm, run, torch.full_like(run, -1))
    return backend.out(ids), backend.out(starts.sum(dim=1))


def place_on_last_token(
    turn_values: ArrayLike,
    turn_ids: ArrayLike,
    response_mask: ArrayLike,
    *,
    step_mask: ArrayLike | None = None,
) -> ArrayLike:
    """Put each turn's value on the last policy token of that turn; 0 everywhere else.

    This is the token-level reward layout PPO/GAE trainers expect (verl's
    ``token_level_rewards``): a per-turn reward lands where the turn ends, and a turn whose
    reward is 0 still has its (zero) entry.

    Args:
        turn_values: float[B, T] -- one value per turn.
        turn_ids: int[B, L] -- turn of each policy token (any value off the response mask).
        response_mask: bool[B, L] -- 1 on policy tokens.
        step_mask: bool[B, T] -- valid turns; a valid turn with no policy token raises.

    Returns:
        float[B, L], same kind as ``turn_values``.

    Example:
        >>> import numpy as np
        >>> place_on_last_token(np.array([[1.0, 2.0]]), np.array([[0, 0, -1, 1, 1]]),
        ...                     np.array([[1, 1, 0, 1, 1]]))
        array([[0., 1., 0., 0., 2.]])
    """
    backend = Backend.of(turn_values)
    v, tid, rm = _turn_token_inputs(turn_values, turn_ids, response_mask)
    b, t = v.shape
    pos = torch.arange(tid.shape[1], device=v.device).expand_as(tid)
    last = torch.full((b, t), -1, dtype=torch.int64, device=v.device)
    safe = torch.where(rm, tid, torch.zeros_like(tid))
    last = last.scatter_reduce(1, safe, torch.where(rm, pos, torch.full_like(pos, -1)), reduce="amax")
    has = last >= 0
    if step_mask is not None:
        sm = as_mask(step_mask, "step_mask", (b, t), device=v.device)
        missing = sm & ~has
        if bool(missing.any()):
            i, j = torch.nonzero(missing)[0].tolist()
            raise ShapeError(f"turn {j} of row {i} is valid in step_mask but has no policy token in response_mask")
    out = torch.zeros(tid.shape, dtype=v.dtype, device=v.device)
    rows = torch.arange(b, device=v.device)[:, None].expand(b, t)
    out[rows[has], last[has]] = v[has]
    return backend.out(out)


def turn_values_from_tokens(
    token_values: ArrayLike,
    turn_ids: ArrayLike,
    response_mask: ArrayLike,
    *,
    num_turns: int | None = None,
    reduce: Literal["sum", "mean", "last"] = "sum",
    include_masked: bool = False,
) -> ArrayLike:
    """Reduce token values to one value per turn.

    Args:
        token_values: float[B, L] -- e.g. per-token log-ratios, or rewards a trainer put on tokens.
        turn_ids: int[B, L] -- turn of each policy token (non-decreasing along a row).
        response_mask: bool[B, L] -- 1 on policy tokens.
        num_turns: T of the output (default: the largest turn id + 1).
        reduce: "sum", "mean" or "last" (the value on the turn's last policy token).
        include_masked: with "sum", also count tokens *off* the response mask toward the turn
            they follow (a reward a trainer put on an observation token belongs to the turn that
            caused it); tokens before the first turn are dropped.

    Returns:
        float[B, T], 0 for turns without tokens; same kind as ``token_values``.

    Example:
        >>> import numpy as np
        >>> turn_values_from_tokens(np.array([[1.0, 2.0, 5.0, 3.0]]), np.array([[0, 0, -1, 1]]),
        ...                         np.array([[1, 1, 0, 1]]))
        array([[3., 3.]])
    """
    if reduce not in ("sum", "mean", "last"):
        raise RangeError(f"reduce must be 'sum', 'mean' or 'last'; got {reduce!r}")
    backend = Backend.of(token_values)
    x = as_float(token_values, "token_values", ndim=2)
    tid, rm = _ids_and_mask(turn_ids, response_mask, x.shape, x.device)
    b, n_tok = x.shape
    ids = torch.where(rm, tid, torch.full_like(tid, -1))
    t = int(ids.max()) + 1 if num_turns is None else int(num_turns)
    if t < 0 or (ids.numel() and int(ids.max()) >= t):
        raise RangeError(f"num_turns = {num_turns} but turn_ids reaches {int(ids.max())}")
    t = max(t, 0)
    if include_masked:
        if reduce != "sum":
            raise RangeError("include_masked is only defined for reduce='sum'")
        filled = torch.cummax(ids, dim=1).values
        if bool((rm & (tid < filled)).any()):
            raise RangeError(
                "turn_ids must be non-decreasing along each row to attach masked tokens to the preceding turn"
            )
        ids = filled
    use = ids >= 0
    # One slot per (row, turn) plus a trash slot for unused tokens: no boolean indexing.
    trash = b * t
    flat = torch.where(use, torch.arange(b, device=x.device)[:, None] * t + ids, torch.full_like(ids, trash)).reshape(
        -1
    )
    if reduce == "last":
        pos = torch.arange(n_tok, device=x.device).expand(b, n_tok).reshape(-1)
        last = torch.full((trash + 1,), -1, dtype=torch.int64, device=x.device).scatter_reduce(
            0, flat, pos, reduce="amax"
        )[:trash]
        ok = last >= 0
        rows = torch.arange(trash, device=x.device) // max(t, 1)
        vals = x[rows, last.clamp(min=0)].to(torch.float64)
        out = torch.where(ok, vals, torch.zeros((), dtype=torch.float64, device=x.device))
    else:
        out = torch.zeros(trash + 1, dtype=torch.float64, device=x.device).index_add_(
            0, flat, x.reshape(-1).to(torch.float64)
        )[:trash]
        if reduce == "mean":
            cnt = torch.bincount(flat, minlength=trash + 1)[:trash].to(torch.float64)
            out = out / cnt.clamp(min=1)
    return backend.out(out.reshape(b, t).to(x.dtype))


def _mask2d(m: ArrayLike, name: str) -> torch.Tensor:
    raw = m.detach() if isinstance(m, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(m)))
    if raw.ndim != 2:
        raise ShapeError(f"{name} must be [B, L]; got shape {tuple(raw.shape)}")
    return as_mask(raw, name, shape_bt(raw), device=raw.device, prefix=False, allow_empty_rows=True)


def _ids_and_mask(turn_ids, response_mask, shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    tid = turn_ids.detach() if isinstance(turn_ids, torch.Tensor) else torch.from_numpy(np.asarray(turn_ids))
    if tid.is_floating_point() or tid.dtype == torch.bool:
        raise DtypeError(f"turn_ids must be an integer array [B, L]; got dtype {tid.dtype}")
    tid = tid.to(device=device, dtype=torch.int64)
    if tuple(tid.shape) != tuple(shape):
        raise ShapeError(f"turn_ids has shape {tuple(tid.shape)}; expected {tuple(shape)}")
    rm = as_mask(response_mask, "response_mask", tuple(shape), device=device, prefix=False, allow_empty_rows=True)
    bad = rm & (tid < 0)
    if bool(bad.any()):
        i, j = torch.nonzero(bad)[0].tolist()
        raise RangeError(f"turn_ids[{i}, {j}] = {int(tid[i, j])} on a policy token; expected a turn index >= 0")
    return tid, rm


def _turn_token_inputs(turn_values, turn_ids, response_mask):
    v = as_float(turn_values, "turn_values", ndim=2)
    b, t = v.shape
    tid_raw = turn_ids.detach() if isinstance(turn_ids, torch.Tensor) else torch.from_numpy(np.asarray(turn_ids))
    if tid_raw.ndim != 2 or tid_raw.shape[0] != b:
        raise ShapeError(
            f"turn_ids has shape {tuple(tid_raw.shape)}; expected [{b}, L] (one row per row of turn_values)"
        )
    tid, rm = _ids_and_mask(tid_raw, response_mask, tuple(tid_raw.shape), v.device)
    bad = rm & (tid >= t)
    if bool(bad.any()):
        i, j = torch.nonzero(bad)[0].tolist()
        raise RangeError(f"turn_ids[{i}, {j}] = {int(tid[i, j])} on a policy token; expected a turn index in [0, {t})")
    return v, tid, rm
