"""Input conversion and validation shared by every public function.

All numerical work in creditlab runs on ``torch`` tensors. NumPy inputs are wrapped without a
copy (``torch.from_numpy``) and results are handed back as NumPy arrays; torch inputs come back as
tensors on the same device. Python lists are treated like NumPy arrays.

Every check raises a :mod:`creditlab.errors` exception whose message names the argument, what
was expected and what was received.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import (
    DtypeError,
    EmptyBatchError,
    GroupError,
    MaskError,
    NonFiniteError,
    RangeError,
    ShapeError,
)

ArrayLike = Any  # numpy array, torch tensor or (nested) Python list

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a torch tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


@dataclass(frozen=True)
class Backend:
    """Where the results of a call go back to: NumPy, or torch on a device.

    The first array-like argument decides (``Backend.of(rewards, ...)``).
    """

    is_torch: bool
    device: torch.device

    @staticmethod
    def of(*xs: Any) -> Backend:
        for x in xs:
            if isinstance(x, torch.Tensor):
                return Backend(True, x.device)
        return Backend(False, torch.device("cpu"))

    def out(self, t: torch.Tensor | None) -> Any:
        """Convert a result tensor to the caller's kind (detached)."""
        if t is None:
            return None
        if self.is_torch:
            return t.detach().to(self.device)
        if t.device.type != "cpu":
            t = t.cpu()
        return t.detach().numpy() if t.requires_grad else t.numpy()


def _ragged_lengths(x: Sequence[Any]) -> list[int] | None:
    lengths = []
    for row in x:
        if isinstance(row, (list, tuple, np.ndarray, torch.Tensor)):
            lengths.append(len(row))
        else:
            return None
    return lengths if len(set(lengths)) > 1 else None


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # numpy >= 1.24 refuses ragged nested lists
        lengths = _ragged_lengths(x) if isinstance(x, (list, tuple)) else None
        detail = f" (rows have lengths {sorted(set(lengths))})" if lengths else ""
        raise ShapeError(
            f"{name} is ragged{detail}; expected a rectangular array (every row the same length). "
            "For per-step data [B, T], pad the rows (creditlab.pad) and pass a mask, or build an Episodes "
            "with Episodes.from_lists."
        ) from exc
    if arr.dtype == object and isinstance(x, (list, tuple)):
        lengths = _ragged_lengths(x)
        if lengths:
            raise ShapeError(
                f"{name} is ragged (rows have lengths {sorted(set(lengths))}); expected a rectangular "
                "array (every row the same length). For per-step data [B, T], pad the rows and pass a "
                "mask, or build an Episodes with Episodes.from_lists."
            )
    return arr


def as_float(
    x: ArrayLike,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Convert ``x`` to a floating tensor and validate it.

    Integer and boolean inputs become ``dtype`` (default: float64 for NumPy/lists, the
    tensor's float type otherwise). NaN and inf raise :class:`NonFiniteError` when ``finite``.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = _to_numpy(x, name)
        if arr.dtype == object:
            if any(v is None for v in arr.ravel().tolist()):
                raise DtypeError(
                    f"{name} contains None; None ('not applicable') is only accepted for "
                    "per-episode scores (outcomes, components, group-estimator rewards). "
                    "Use 0 for a step without reward."
                )
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DtypeError(
                    f"{name} must hold numbers; got values of type "
                    f"{sorted({type(v).__name__ for v in arr.ravel().tolist()})}"
                ) from exc
        if arr.dtype.kind in "US":
            raise DtypeError(f"{name} must hold numbers; got strings (numpy dtype {arr.dtype})")
        if arr.dtype.kind == "c":
            raise DtypeError(f"{name} must be real; got complex numbers (dtype {arr.dtype})")
        if arr.dtype.kind not in "fiub":
            raise DtypeError(f"{name} must hold numbers; got numpy dtype {arr.dtype}")
        if arr.dtype.kind == "f" and arr.dtype.itemsize == 2:
            arr = arr.astype(np.float32)
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr).copy() if not arr.flags.writeable else np.ascontiguousarray(arr)
        t = torch.from_numpy(arr)
    if t.is_complex():
        raise DtypeError(f"{name} must be real; got complex dtype {t.dtype}")
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)  # half precision accumulates badly (a 1024-step bf16 return is off by 3x)
    if t.dtype not in _FLOAT_DTYPES:
        if t.dtype == torch.bool or not t.dtype.is_floating_point:
            target = dtype or (torch.float64 if not isinstance(x, torch.Tensor) else torch.get_default_dtype())
            t = t.to(target)
    elif dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device is not None and t.device != device:
        t = t.to(device)
    check_shape(t, name, ndim=ndim, shape=shape)
    if finite:
        check_finite(t, name)
    return t


_PLAIN_NUMPY = (np.dtype(np.float32), np.dtype(np.float64))
_PLAIN_TORCH = (torch.float32, torch.float64)


def plain_float(x: ArrayLike, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """``x`` as a tensor, without a copy, when it already is what :func:`as_float` returns.

    That is a C-contiguous float32 or float64 CPU array of this ``shape`` (and ``dtype``, when
    given): a writeable NumPy array or a torch tensor (detached). Anything else gives None and the
    caller takes :func:`as_float`, which converts and reports. Nothing is checked beyond that
    (no finiteness): this is the no-op case of the conversion, for hot paths.
    """
    if type(x) is np.ndarray:
        if x.dtype not in _PLAIN_NUMPY or x.shape != shape or not (x.flags.c_contiguous and x.flags.writeable):
            return None
        t = torch.from_numpy(x)
    elif isinstance(x, torch.Tensor):
        if x.dtype not in _PLAIN_TORCH or x.device.type != "cpu" or tuple(x.shape) != shape or not x.is_contiguous():
            return None
        t = x.detach()
    else:
        return None
    if dtype is not None and t.dtype != dtype:
        return None
    return t


def check_shape(
    t: torch.Tensor,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    shape: tuple[int | None, ...] | None = None,
    hint: str = "",
) -> None:
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ShapeError(f"{name} must be {want}; got shape {tuple(t.shape)}{hint}")
    if shape is not None:
        if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ShapeError(f"{name} has shape {tuple(t.shape)}; expected {want}{hint}")


def all_finite(t: torch.Tensor) -> bool:
    """True when every entry of ``t`` is finite (integer tensors always are).

    A finite sum proves every entry finite (one NaN or inf makes the sum NaN or inf), and a sum
    costs a tenth of ``isfinite(t).all()`` on CPU; only a non-finite sum (a bad entry or an
    overflow of huge finite values) pays for the entrywise check.
    """
    if not t.is_floating_point() or t.numel() == 0:
        return True
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def check_finite(t: torch.Tensor, name: str, *, where: torch.Tensor | None = None, hint: str = "") -> None:
    if all_finite(t):
        return  # fast path: one reduction, no temporaries
    bad = ~torch.isfinite(t)
    if where is not None:
        bad = bad & where
    if bool(bad.any()):
        idx = torch.nonzero(bad)[0].tolist()
        value = t[tuple(idx)].item()
        n_bad = int(bad.sum())
        loc = f"{name}[{', '.join(map(str, idx))}]" if idx else name
        raise NonFiniteError(
            f"{loc} is {value} ({n_bad} non-finite entr{'y' if n_bad == 1 else 'ies'} in {name}); "
            f"expected finite numbers{hint}"
        )


def _scalar(value: Any, name: str, expected: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise RangeError(f"{name} must be {expected}; got {value!r}")
    if isinstance(value, (torch.Tensor, np.ndarray)) and getattr(value, "size", 1) not in (1,) and np.size(value) != 1:
        raise RangeError(f"{name} must be a single number ({expected}); got an array of shape {tuple(np.shape(value))}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RangeError(f"{name} must be {expected}; got {value!r}") from exc


def check_unit(value: float, name: str) -> float:
    """Check a scalar hyper-parameter lies in [0, 1] (gamma, lambda_)."""
    v = _scalar(value, name, "a number in [0, 1]")
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise RangeError(f"{name} must lie in [0, 1]; got {value!r}")
    return v


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Check a scalar is finite and > 0 (or >= 0 with ``allow_zero``)."""
    v = _scalar(value, name, "a finite number " + (">= 0" if allow_zero else "> 0"))
    ok = v >= 0 if allow_zero else v > 0
    if not ok or not math.isfinite(v):
        raise RangeError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite; got {value!r}")
    return v


def check_real(value: float, name: str) -> float:
    """Check a scalar is a finite real number (thresholds, weights, coefficients)."""
    v = _scalar(value, name, "a finite number")
    if not math.isfinite(v):
        raise RangeError(f"{name} must be a finite number; got {value!r}")
    return v


def as_mask(
    mask: ArrayLike | None,
    name: str,
    shape: tuple[int, int],
    *,
    device: torch.device,
    prefix: bool = True,
    allow_empty_rows: bool = False,
    like: str = "rewards",
) -> torch.Tensor:
    """Validate a ``[B, T]`` mask (bool or 0/1). ``None`` means every step is valid.

    With ``prefix`` the mask must be 1 on a prefix of each row (padding only at the end); a 0
    followed by a 1 is a hole inside an episode and raises :class:`MaskError`.
    """
    return mask_and_lengths(
        mask, name, shape, device=device, prefix=prefix, allow_empty_rows=allow_empty_rows, like=like
    )[0]


def mask_and_lengths(
    mask: ArrayLike | None,
    name: str,
    shape: tuple[int, int],
    *,
    device: torch.device,
    prefix: bool = True,
    allow_empty_rows: bool = False,
    like: str = "rewards",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`as_mask` that also returns ``lengths: int64[B]`` (valid steps per row)."""
    m, lengths, _ = mask_info(
        mask, name, shape, device=device, prefix=prefix, allow_empty_rows=allow_empty_rows, like=like
    )
    return m, lengths


def mask_info(
    mask: ArrayLike | None,
    name: str,
    shape: tuple[int, int],
    *,
    device: torch.device,
    prefix: bool = True,
    allow_empty_rows: bool = False,
    like: str = "rewards",
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`mask_and_lengths` plus ``full``: True when no row has padding."""
    if mask is None:
        if shape[1] == 0 and not allow_empty_rows:
            raise EmptyBatchError("the batch has T = 0 steps per episode; every episode needs >= 1 step")
        return (
            torch.ones(shape, dtype=torch.bool, device=device),
            torch.full((shape[0],), shape[1], dtype=torch.int64, device=device),
            True,
        )
    m = (
        mask.detach()
        if isinstance(mask, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(_to_numpy(mask, name)))
    )
    hint = f" (the [B, T] shape of {like})"
    if m.dtype != torch.bool:
        if not (m.is_floating_point() or m.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise MaskError(f"{name} must be boolean or 0/1; got dtype {m.dtype}")
        read = None
        if device.type == "cpu" and m.ndim == 2 and tuple(m.shape) == tuple(shape):
            from ._kernels import numeric_mask

            read = numeric_mask(m)  # one compiled pass instead of five whole-array operations
        if read is not None:
            if read.bad:
                raise MaskError(f"{name} must be boolean or 0/1; got values other than 0 and 1 (dtype {m.dtype})")
            if prefix and read.hole is not None:
                raise _hole_error(name, read.mask, *read.hole)
            return _checked_lengths(read.mask, read.lengths, name, allow_empty_rows, read.full)
        if bool(((m != 0) & (m != 1)).any()):
            raise MaskError(f"{name} must be boolean or 0/1; got values other than 0 and 1 (dtype {m.dtype})")
        m = m != 0
    m = m.to(device)
    check_shape(m, name, shape=shape, hint=hint)
    if m.device.type == "cpu" and m.numel() and bool(m.numpy().all()):
        # No padding (every rollout of a vectorized env, most benchmarks): NumPy's bool all() is
        # ~10x cheaper than torch's, and then there is nothing to scan.
        return m, torch.full((shape[0],), shape[1], dtype=torch.int64, device=device), True
    if prefix:
        from ._kernels import mask_lengths

        lengths, hole = mask_lengths(m.contiguous())
        lengths = lengths.to(m.device)
        if hole is not None:
            raise _hole_error(name, m, *hole)
    else:
        lengths = m.sum(dim=1, dtype=torch.int64)
    return _checked_lengths(m, lengths, name, allow_empty_rows, False)


def _checked_lengths(
    m: torch.Tensor, lengths: torch.Tensor, name: str, allow_empty_rows: bool, full: bool
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if not full and not allow_empty_rows and m.shape[0] and bool((lengths == 0).any()):
        b = int(torch.nonzero(lengths == 0)[0])
        raise EmptyBatchError(f"episode {b} is empty: {name} row {b} has no valid step; every episode needs >= 1 step")
    if full and not allow_empty_rows and m.shape[1] == 0 and m.shape[0]:
        raise EmptyBatchError(f"episode 0 is empty: {name} row 0 has no valid step; every episode needs >= 1 step")
    return m, lengths, full


def _hole_error(name: str, m: torch.Tensor, b: int, t: int) -> MaskError:
    valid = torch.nonzero(m[b]).flatten().tolist()
    return MaskError(
        f"{name} row {b} has a hole: step {t} is padding but step {t + 1} is valid "
        f"(valid steps {valid[:12]}{'...' if len(valid) > 12 else ''}); padding must come after "
        "the last step of each episode (tool/observation tokens inside an LLM turn belong in a "
        "token-level response_mask, see broadcast_to_tokens, not in the step mask)."
    )


def check_nonempty(n: int, name: str) -> None:
    if n == 0:
        raise EmptyBatchError(f"{name} is empty; expected at least one episode")


def as_scores(
    x: ArrayLike,
    name: str,
    *,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
    ndim: int | tuple[int, ...] = 1,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    where: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read per-episode scores that may be missing.

    Missing entries are ``None`` in a Python list, ``False`` in ``present``, or NaN when
    ``nan_is_missing``. Returns ``(values, present)``: values are 0 where missing, so a missing
    score can never turn into NaN further down.
    """
    if isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.dtype == object):
        arr = _to_numpy(x, name)
        if arr.dtype == object:
            flat = arr.ravel().tolist()
            none_mask = np.array([v is None for v in flat], dtype=bool).reshape(arr.shape)
            filled = np.array([0.0 if v is None else v for v in flat], dtype=object).reshape(arr.shape)
            try:
                arr = filled.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DtypeError(
                    f"{name} must hold numbers or None; got {sorted({type(v).__name__ for v in flat})}"
                ) from exc
        else:
            none_mask = np.zeros(arr.shape, dtype=bool)
        values = as_float(arr, name, ndim=ndim, device=device, dtype=dtype, finite=False)
        is_present = ~torch.from_numpy(none_mask).to(values.device)
        x_is_dense = False
    else:
        values = as_float(x, name, ndim=ndim, device=device, dtype=dtype, finite=False)
        is_present = torch.ones(values.shape, dtype=torch.bool, device=values.device)
        x_is_dense = True
    if present is not None:
        if isinstance(present, torch.Tensor):
            p = present.detach()
        else:
            p_np = _to_numpy(present, f"present (for {name})")
            if p_np.dtype.kind not in "biuf":
                raise MaskError(f"present (for {name}) must be boolean or 0/1; got dtype {p_np.dtype}")
            p = torch.from_numpy(np.ascontiguousarray(p_np))
        if p.dtype != torch.bool:
            if bool(((p != 0) & (p != 1)).any()):
                raise MaskError(f"present (for {name}) must be boolean or 0/1; got other values")
            p = p != 0
        p = p.to(values.device)
        check_shape(p, f"present (for {name})", shape=tuple(values.shape))
        is_present = is_present & p
    if where is not None:
        check_shape(where, "mask", shape=tuple(values.shape), hint=f" (the shape of {name})")
    if present is None and not nan_is_missing and (x_is_dense or bool(is_present.all())) and all_finite(values):
        return values, is_present  # fast path: nothing missing, nothing to zero
    if nan_is_missing:
        is_present = is_present & ~torch.isnan(values)
    if where is not None:  # entries outside `where` (padding) may hold anything
        is_present = is_present & where.to(values.device)
    check_finite(
        values,
        name,
        where=is_present,
        hint=". Pass None for rewards that do not apply, or nan_is_missing=True to read NaN as None (inf is never accepted).",
    )
    values = torch.where(is_present, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return values, is_present


@dataclass(frozen=True)
class GroupIndex:
    """Group ids factorized to dense indices ``0..num_groups-1``.

    Attributes:
        index: int64[N] -- dense group index of each item.
        num_groups: number of dense slots (some may be empty when ids were used directly).
    """

    index: torch.Tensor
    num_groups: int


def as_group_index(group_ids: ArrayLike | GroupIndex, name: str, n: int, *, device: torch.device) -> GroupIndex:
    """Factorize group ids (ints or strings) into a :class:`GroupIndex` in O(N).

    Small non-negative integer ids are used as they are (no sort); anything else is factorized
    with a hash/sort based ``unique``.
    """
    if isinstance(group_ids, GroupIndex):
        if group_ids.index.shape != (n,):
            raise GroupError(f"{name} has {group_ids.index.shape[0]} entries but the batch has {n} episodes")
        return GroupIndex(group_ids.index.to(device), group_ids.num_groups)
    if isinstance(group_ids, torch.Tensor):
        g = group_ids.detach()
        if g.is_floating_point():
            if bool((g != torch.round(g)).any()):
                raise DtypeError(f"{name} must hold integer ids; got fractional floats (dtype {g.dtype})")
            g = g.to(torch.int64)
        elif g.dtype == torch.bool:
            g = g.to(torch.int64)
    else:
        arr = _to_numpy(group_ids, name) if not isinstance(group_ids, np.ndarray) else group_ids
        if arr.dtype.kind in "USO":
            if arr.ndim != 1 or arr.shape[0] != n:
                raise GroupError(f"{name} has shape {arr.shape} but the batch has {n} episodes; expected ({n},)")
            return factorize_ids(arr, name, device=device)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise DtypeError(
                    f"{name} must hold integer ids; got fractional or non-finite floats (dtype {arr.dtype})"
                )
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iub":
            raise DtypeError(f"{name} must hold integer or string ids; got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr.astype(np.int64, copy=False))
        g = torch.from_numpy(arr)
    if g.ndim != 1 or g.shape[0] != n:
        raise GroupError(
            f"{name} has shape {tuple(g.shape)} but the batch has {n} episodes; expected one id per episode, shape ({n},)"
        )
    g = g.to(device=device, dtype=torch.int64)
    if n == 0:
        return GroupIndex(g, 0)
    if not isinstance(group_ids, torch.Tensor):
        lo, hi = int(arr.min()), int(arr.max())  # NumPy's integer min/max are ~5x faster than torch's
    else:
        lo, hi = (int(x) for x in torch.aminmax(g))
    if lo >= 0 and hi < 4 * n + 1024:
        return GroupIndex(g, hi + 1)
    uniq, inv = torch.unique(g, return_inverse=True)
    return GroupIndex(inv, int(uniq.numel()))


def factorize_ids(arr: np.ndarray, name: str, *, device: torch.device | None = None) -> GroupIndex:
    """Dense codes for string (or mixed object) ids, by hashing (pyarrow), O(N).

    ``None`` ids and ids of mixed types (e.g. ``1`` and ``"1"``) are errors: they would silently
    merge or split groups.
    """
    import pyarrow as pa

    if arr.dtype == object and arr.size and isinstance(arr[0], str):
        # Fast path for string ids (verl's uids): pyarrow reads the objects directly. Anything it
        # refuses (a non-string id) or a None takes the checked path below for the named error.
        try:
            enc = pa.array(arr, type=pa.string()).dictionary_encode()
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            enc = None
        if enc is not None and enc.null_count == 0:
            codes = enc.indices.to_numpy(zero_copy_only=False)
            idx = torch.from_numpy(codes.astype(np.int64))
            return GroupIndex(idx if device is None else idx.to(device), len(enc.dictionary))
    if arr.dtype == object:
        kinds = {type(v) for v in arr.tolist()}
        if type(None) in kinds:
            i = next(i for i, v in enumerate(arr.tolist()) if v is None)
            raise GroupError(f"{name}[{i}] is None; every episode needs an id (use a string or an integer)")
        if (
            len(
                {
                    str if issubclass(k, (str, np.str_)) else int if issubclass(k, (int, np.integer)) else k
                    for k in kinds
                }
            )
            > 1
        ):
            raise GroupError(
                f"{name} mixes id types {sorted(k.__name__ for k in kinds)}; use one type (all strings or all integers)"
            )
        if all(issubclass(k, (int, np.integer)) for k in kinds):
            return as_group_index(
                np.asarray(arr.tolist(), dtype=np.int64), name, arr.shape[0], device=device or torch.device("cpu")
            )
    try:
        codes = (
            pa.array(arr.astype(str) if arr.dtype.kind != "U" else arr)
            .dictionary_encode()
            .indices.to_numpy(zero_copy_only=False)
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # pragma: no cover - exotic objects
        raise DtypeError(f"{name} must hold integer or string ids") from exc
    idx = torch.from_numpy(codes.astype(np.int64))
    if device is not None:
        idx = idx.to(device)
    return GroupIndex(idx, int(codes.max()) + 1 if codes.size else 0)


def shape_bt(x: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """``(B, T)`` of a ``[B, T]`` array; a :class:`ShapeError` for any other number of axes."""
    if x.ndim != 2:
        raise ShapeError(f"expected a [B, T] array; got shape {tuple(x.shape)}")
    return int(x.shape[0]), int(x.shape[1])


def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    """int64[B] -- number of valid steps in each row of a prefix mask."""
    return mask.sum(dim=1, dtype=torch.int64)
