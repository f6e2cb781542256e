"""Pure functions of the exploration bonuses: nothing here is learned or kept between calls.

* count bonuses from visit counts: the episodic first-visit indicator ``1[N_ep(s) = 1]``, the
  episodic ``1 / sqrt(N_ep(s))`` and the global ``1 / sqrt(N(s))``;
* E3B's elliptical bonus with the Sherman-Morrison update of the inverse covariance, batched over
  envs (``[E, d, d]``);
* NovelD's clipped novelty difference ``max(n(s') - alpha n(s), 0)`` with its first-visit gate;
* the episodic x global combination (product, the ICML 2023 paper's proposal, or a weighted sum);
* running moments (count, mean, M2) merged batch by batch, and division of the intrinsic reward
  by their std (e3b's ``reward_norm='int'``).

Sources: Henaff, Jiang & Raileanu, "A Study of Global and Episodic Bonuses for Exploration in
Contextual MDPs", ICML 2023 (arXiv 2306.03236); Henaff et al., "Exploration via Elliptical
Episodic Bonuses", NeurIPS 2022 (arXiv 2210.05805); Zhang et al., "NovelD", NeurIPS 2021
(arXiv 2012.08621); the authors' code (facebookresearch/e3b, tianjunz/NovelD).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from .._arrays import Backend, as_float, check_positive, check_real
from ..errors import DtypeError, RangeError, ShapeError

__all__ = [
    "EPISODIC_MODES",
    "COMBINE_MODES",
    "first_visit_bonus",
    "inverse_sqrt_bonus",
    "episodic_count_bonus",
    "global_count_bonus",
    "EllipticalStep",
    "sherman_morrison_step",
    "sherman_morrison_kernel",
    "noveld_bonus",
    "combine_bonuses",
    "RunningMoments",
    "update_moments",
    "moments_std",
    "normalize_by_std",
]

EPISODIC_MODES = ("first_visit", "inv_sqrt")
COMBINE_MODES = ("product", "sum")


# ------------------------------------------------------------------------------ counts


def _counts(counts: Any, name: str = "counts") -> np.ndarray:
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if c.dtype.kind == "f":
        if not np.all(np.isfinite(c)) or np.any(c != np.round(c)):
            raise DtypeError(f"{name} must hold whole visit counts; got fractional or non-finite values")
    elif c.dtype.kind not in "iub":
        raise DtypeError(f"{name} must hold integer visit counts; got dtype {c.dtype}")
    if c.size and c.min() < 0:
        raise RangeError(f"{name} must be >= 0 (0 marks a padding step); got {c.min()}")
    return c


def first_visit_bonus(counts: Any) -> Any:
    """Episodic first-visit indicator ``1[N_ep(s) = 1]``.

    Args:
        counts: int[...] -- visits of the state in the current episode, *including* this visit
            (so a first visit has count 1); 0 marks padding and gets 0.

    Returns:
        float32[...] -- 1.0 on first visits, else 0.0 (NumPy in, NumPy out; torch in, torch out).

    Example (an episode visits a, b, a, c: counts 1, 1, 2, 1):
        >>> first_visit_bonus(np.array([1, 1, 2, 1])).tolist()
        [1.0, 1.0, 0.0, 1.0]
    """
    c = _counts(counts)
    return Backend.of(counts).out(torch.from_numpy((c == 1).astype(np.float32)))


def inverse_sqrt_bonus(counts: Any) -> Any:
    """``1 / sqrt(N)`` of visit counts N (including this visit); 0 where N = 0 (padding).

    Example (counts 1, 4, 0): 1/sqrt(1) = 1, 1/sqrt(4) = 0.5, padding 0
        >>> inverse_sqrt_bonus(np.array([1, 4, 0])).tolist()
        [1.0, 0.5, 0.0]
    """
    c = _counts(counts).astype(np.float64)
    out = np.zeros(c.shape, dtype=np.float32)
    np.divide(1.0, np.sqrt(c), out=out, where=c > 0, casting="unsafe")
    return Backend.of(counts).out(torch.from_numpy(out))


def episodic_count_bonus(counts: Any, mode: str = "first_visit") -> Any:
    """Episodic count bonus: ``"first_visit"`` gives ``1[N_ep = 1]``, ``"inv_sqrt"`` gives ``1/sqrt(N_ep)``.

    The e3b code stores ``1/sqrt(N_ep)`` and its learner keeps only the value 1 (a first-visit
    indicator); both readings are offered, first visit is the default.

    Example (counts 1, 2, 4 in one episode):
        >>> episodic_count_bonus(np.array([1, 2, 4])).tolist()
        [1.0, 0.0, 0.0]
        >>> episodic_count_bonus(np.array([1, 2, 4]), "inv_sqrt").round(4).tolist()
        [1.0, 0.7071, 0.5]
    """
    if mode == "first_visit":
        return first_visit_bonus(counts)
    if mode == "inv_sqrt":
        return inverse_sqrt_bonus(counts)
    raise RangeError(f"episodic mode must be one of {EPISODIC_MODES}; got {mode!r}")


def global_count_bonus(counts: Any) -> Any:
    """Global count bonus ``1 / sqrt(N(s))``, N the visits over all of training (never reset).

    Example (a state seen for the 1st, 4th and 16th time):
        >>> global_count_bonus(np.array([1, 4, 16])).tolist()
        [1.0, 0.5, 0.25]
    """
    return inverse_sqrt_bonus(counts)


# ------------------------------------------------------------------------------ E3B


class EllipticalStep(NamedTuple):
    """Result of :func:`sherman_morrison_step`.

    Attributes:
        bonus: float[E] -- ``phi^T C^{-1} phi`` with the inverse *before* the update; 0 where
            ``mask`` is False.
        cov_inverse: float[E, d, d] -- ``C^{-1}`` after adding ``phi phi^T`` to C (unchanged
            where ``mask`` is False).
    """

    bonus: Any
    cov_inverse: Any


def sherman_morrison_step(cov_inverse: Any, phi: Any, mask: Any = None, *, inplace: bool = False) -> EllipticalStep:
    """E3B's elliptical bonus and rank-one update of ``C^{-1}``, for all envs at once.

    With ``u = C^{-1} phi`` and ``b = phi^T u``, the Sherman-Morrison formula gives the inverse of
    ``C + phi phi^T`` as ``C^{-1} - u u^T / (1 + b)``. E3B starts each episode from
    ``C = lambda I`` (``C^{-1} = I / lambda``, ridge lambda = 0.1) and pays ``b`` for each new
    embedding before adding it.

    Args:
        cov_inverse: float[E, d, d] -- the current inverse covariance of each env (symmetric
            positive definite).
        phi: float[E, d] -- this step's embedding in each env.
        mask: bool[E] or None -- envs to update (others keep their inverse and get bonus 0).
        inplace: update ``cov_inverse`` in place (a torch tensor; saves an ``[E, d, d]`` copy per
            step). The default returns a new array and leaves the input untouched.

    Returns:
        :class:`EllipticalStep` ``(bonus[E], cov_inverse[E, d, d])``, NumPy or torch like
        ``cov_inverse``.

    Example (d = 1, lambda = 0.1, so C^{-1} = 10; phi = 1: u = 10, b = 10,
    new C^{-1} = 10 - 100 / 11 = 10/11, the inverse of C = 0.1 + 1 = 1.1):
        >>> step = sherman_morrison_step(np.array([[[10.0]]]), np.array([[1.0]]))
        >>> round(float(step.bonus[0]), 6), round(float(step.cov_inverse[0, 0, 0]), 6)
        (10.0, 0.909091)
    """
    be = Backend.of(cov_inverse)
    c = as_float(cov_inverse, "cov_inverse", ndim=3)
    p = as_float(phi, "phi", ndim=2, dtype=c.dtype, device=c.device)
    e, d, d2 = c.shape
    if d != d2 or p.shape != (e, d):
        raise ShapeError(f"cov_inverse must be [E, d, d] and phi [E, d]; got {tuple(c.shape)} and {tuple(p.shape)}")
    if inplace and not isinstance(cov_inverse, torch.Tensor):
        raise DtypeError("inplace=True needs cov_inverse as a torch tensor (a NumPy input is converted, not updated)")
    m = None
    if mask is not None:
        m = torch.as_tensor(mask.detach() if isinstance(mask, torch.Tensor) else np.asarray(mask), device=c.device)
        if m.shape != (e,):
            raise ShapeError(f"mask must be bool[E] = ({e},); got shape {tuple(m.shape)}")
        m = m.to(torch.bool)
    b, new = sherman_morrison_kernel(c if inplace else c.clone(), p, m)
    return EllipticalStep(be.out(b), cov_inverse if inplace else be.out(new))


def sherman_morrison_kernel(
    cov_inverse: torch.Tensor, phi: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unchecked batched step behind :func:`sherman_morrison_step`; updates ``cov_inverse`` in place.

    For callers that validated their tensors once (E3B's per-step loop). Returns
    ``(bonus[E], cov_inverse)``.
    """
    # u = C^{-1} phi, computed as the row phi^T C^{-1} (C^{-1} is symmetric): the row-vector
    # product reads C^{-1} row by row and is the faster batched kernel on CPU
    u = torch.bmm(phi.unsqueeze(1), cov_inverse).squeeze(1)  # [E, d]
    b = (phi * u).sum(-1)  # [E]
    scale = 1.0 / (1.0 + b)
    if mask is not None:
        b = torch.where(mask, b, torch.zeros_like(b))
        scale = torch.where(mask, scale, torch.zeros_like(scale))
    # C^{-1} -= u u^T / (1 + b), as one batched rank-one update
    cov_inverse.baddbmm_(u.unsqueeze(-1), (u * scale.unsqueeze(-1)).unsqueeze(-2), alpha=-1.0)
    return b, cov_inverse


# ------------------------------------------------------------------------------ NovelD


def noveld_bonus(novelty_next: Any, novelty: Any, *, alpha: float = 0.5, first_visit: Any = None) -> Any:
    """NovelD: ``max(n(s') - alpha * n(s), 0) * 1[N_ep(s') = 1]``.

    Args:
        novelty_next: float[...] -- novelty ``n(s_{t+1}) = ||f(s') - f_rand(s')||`` of the state
            reached.
        novelty: float[...] -- novelty ``n(s_t)`` of the state left.
        alpha: scale of the subtracted novelty (NovelD's code: 0.5; e3b's E3B x NovelD: 0.1).
        first_visit: bool/0-1[...] or None -- the episodic gate ``1[N_ep(s') = 1]`` (None: no
            gate, as in e3b's E3B x NovelD product).

    Example (n(s') = [1, 1, 1], n(s) = [1, 4, 1], alpha = 0.5, gate [1, 1, 0]):
    1 - 0.5 = 0.5; 1 - 2 = -1 -> 0; gated -> 0
        >>> noveld_bonus(np.array([1.0, 1.0, 1.0]), np.array([1.0, 4.0, 1.0]), alpha=0.5,
        ...              first_visit=np.array([1, 1, 0])).tolist()
        [0.5, 0.0, 0.0]
    """
    be = Backend.of(novelty_next, novelty)
    a = check_real(alpha, "alpha")
    n1 = as_float(novelty_next, "novelty_next")
    n0 = as_float(novelty, "novelty", dtype=n1.dtype, device=n1.device)
    if n0.shape != n1.shape:
        raise ShapeError(f"novelty has shape {tuple(n0.shape)} but novelty_next has {tuple(n1.shape)}")
    out = torch.clamp(n1 - a * n0, min=0.0)
    if first_visit is not None:
        g = as_float(first_visit, "first_visit", dtype=n1.dtype, device=n1.device)
        if g.shape != n1.shape:
            raise ShapeError(f"first_visit has shape {tuple(g.shape)} but novelty_next has {tuple(n1.shape)}")
        out = out * (g != 0).to(out.dtype)
    return be.out(out)


# ------------------------------------------------------------------------------ combination


def combine_bonuses(episodic: Any, global_: Any, *, combine: str = "product", weight: float = 1.0) -> Any:
    """Episodic x global bonus: ``"product"`` gives ``b_ep * b_gl`` (the ICML 2023 proposal),
    ``"sum"`` gives ``b_ep + weight * b_gl``.

    Args:
        episodic: float[...] -- the episodic bonus of each step.
        global_: float[...] -- the global bonus of each step (same shape).
        combine: "product" or "sum".
        weight: weight of the global term in the sum (ignored by the product).

    Example (first visit 1, 0 and global 1/sqrt(N) = 0.5, 0.25):
        >>> combine_bonuses(np.array([1.0, 0.0]), np.array([0.5, 0.25])).tolist()
        [0.5, 0.0]
        >>> combine_bonuses(np.array([1.0, 0.0]), np.array([0.5, 0.25]), combine="sum", weight=2.0).tolist()
        [2.0, 0.5]
    """
    be = Backend.of(episodic, global_)
    e = as_float(episodic, "episodic")
    g = as_float(global_, "global_", dtype=e.dtype, device=e.device)
    if e.shape != g.shape:
        raise ShapeError(f"episodic has shape {tuple(e.shape)} but global_ has {tuple(g.shape)}")
    if combine == "product":
        return be.out(e * g)
    if combine == "sum":
        return be.out(e + check_real(weight, "weight") * g)
    raise RangeError(f"combine must be one of {COMBINE_MODES}; got {combine!r}")


# ------------------------------------------------------------------------------ normalization


class RunningMoments(NamedTuple):
    """Running statistics of a stream of values (scalars, or feature vectors ``[..., F]``).

    Attributes:
        count: number of values merged.
        mean: float64 scalar or float64[F].
        m2: sum of squared deviations from the mean (float64, same shape as ``mean``).
    """

    # the field shadows tuple.count, which mypy reports as an incompatible override; renaming the
    # public field is the only other way out (python/mypy#3950), so this one error is silenced
    count: float = 0.0  # type: ignore[assignment]
    mean: Any = 0.0
    m2: Any = 0.0


def update_moments(moments: RunningMoments, values: Any, *, axis: int | None = None) -> RunningMoments:
    """Merge a batch into running moments (the parallel formula of Chan et al., in float64).

    Args:
        moments: the statistics so far (``RunningMoments()`` to start).
        values: float[N] (``axis=None``: every entry is one value) or float[N, F] with
            ``axis=0`` (per-feature moments). Non-finite values raise.
        axis: None for scalar moments, 0 for per-feature moments over the rows.

    Returns:
        New :class:`RunningMoments`; the input is not modified.

    Example (merging [1, 2] then [3, 4] equals [1, 2, 3, 4]: mean 2.5, population var 1.25):
        >>> m = update_moments(update_moments(RunningMoments(), np.array([1.0, 2.0])), np.array([3.0, 4.0]))
        >>> m.count, float(m.mean), float(m.m2 / m.count)
        (4.0, 2.5, 1.25)
    """
    x = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise RangeError("values hold NaN or inf; running moments need finite numbers")
    if axis is None:
        x = x.reshape(-1)
        n = float(x.size)
        if n == 0:
            return moments
        b_mean = float(x.mean())
        b_m2 = float(((x - b_mean) ** 2).sum())
    else:
        if axis != 0 or x.ndim != 2:
            raise ShapeError(f"per-feature moments need values [N, F] and axis=0; got shape {x.shape}, axis={axis}")
        n = float(x.shape[0])
        if n == 0:
            return moments
        b_mean = x.mean(axis=0)
        b_m2 = ((x - b_mean) ** 2).sum(axis=0)
    if moments.count == 0:
        return RunningMoments(n, b_mean, b_m2)
    total = moments.count + n
    delta = b_mean - moments.mean
    mean = moments.mean + delta * n / total
    m2 = moments.m2 + b_m2 + delta**2 * moments.count * n / total
    return RunningMoments(total, mean, m2)


def moments_std(moments: RunningMoments) -> Any:
    """Population standard deviation ``sqrt(M2 / count)`` (0 before any value)."""
    if moments.count == 0:
        return 0.0
    var = np.asarray(moments.m2, dtype=np.float64) / moments.count
    std = np.sqrt(np.maximum(var, 0.0))
    return float(std) if std.ndim == 0 else std


def normalize_by_std(values: Any, moments: RunningMoments, *, eps: float = 1e-8) -> Any:
    """Divide by the running std, as e3b's ``reward_norm='int'``: unchanged while the std is <= eps.

    The mean is not subtracted: a bonus stays >= 0 and keeps its zero.

    Example (values 1 and 3 seen so far: std 1, so 2 -> 2; a zero std leaves values alone):
        >>> m = update_moments(RunningMoments(), np.array([1.0, 3.0]))
        >>> normalize_by_std(np.array([2.0]), m).tolist(), normalize_by_std(np.array([2.0]), RunningMoments()).tolist()
        ([2.0], [2.0])
    """
    be = Backend.of(values)
    x = as_float(values, "values")
    check_positive(eps, "eps", allow_zero=True)
    std = moments_std(moments)
    if not isinstance(std, float):
        raise ShapeError("normalize_by_std needs scalar moments (update_moments with axis=None)")
    if std <= eps or not math.isfinite(std):
        return be.out(x)
    return be.out(x / std)
