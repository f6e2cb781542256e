"""Credit quality: how well assigned per-step rewards match the hidden true per-step rewards.

For evaluation only (the true rewards come from a delayed task's hidden dense reward, e.g. the
``creditlab/true_reward`` info key of the Gymnasium wrappers; no assigner may read them).

Per episode b with valid steps t < T_b:

* Pearson correlation of ``assigned[b, :T_b]`` with ``true[b, :T_b]``;
* Spearman correlation (Pearson of average ranks, ties shared);
* decomposition error ``|sum_t assigned[b, t] - R_b|`` (R_b defaults to the sum of the true
  rewards).

A correlation is undefined for an episode of one step or where either side is constant (e.g.
CartPole, whose true reward is +1 on every step, or any episode under uniform credit); such
episodes are left out of the correlation means and counted in ``quality/num_undefined``. The
``quality/pearson_pooled`` entry correlates all valid steps of the batch at once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.stats import rankdata

from ..errors import ShapeError

__all__ = ["QualityOutput", "credit_quality"]


class QualityOutput(NamedTuple):
    """Result of :func:`credit_quality`.

    Attributes:
        pearson: float64[B] -- per-episode Pearson correlation (NaN where undefined).
        spearman: float64[B] -- per-episode Spearman correlation (NaN where undefined).
        decomposition_error: float64[B] -- ``|sum_t assigned - R|``.
        metrics: ``quality/pearson``, ``quality/spearman`` (means over defined episodes),
            ``quality/pearson_pooled``, ``quality/decomposition_error`` (mean),
            ``quality/num_episodes``, ``quality/num_undefined``.
    """

    pearson: np.ndarray
    spearman: np.ndarray
    decomposition_error: np.ndarray
    metrics: dict[str, float]


def _rowwise_pearson(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n = mask.sum(1).astype(np.float64)
    safe_n = np.maximum(n, 1)
    xm = np.where(mask, x, 0.0).sum(1) / safe_n
    ym = np.where(mask, y, 0.0).sum(1) / safe_n
    dx = np.where(mask, x - xm[:, None], 0.0)
    dy = np.where(mask, y - ym[:, None], 0.0)
    sxx = (dx * dx).sum(1)
    syy = (dy * dy).sum(1)
    sxy = (dx * dy).sum(1)
    # Spreads below float64 rounding relative to the values' size count as constant.
    scale_x = np.where(mask, np.abs(x), 0.0).max(1, initial=0.0)
    scale_y = np.where(mask, np.abs(y), 0.0).max(1, initial=0.0)
    tol_x = (1e-12 * np.maximum(scale_x, 1e-300)) ** 2 * n
    tol_y = (1e-12 * np.maximum(scale_y, 1e-300)) ** 2 * n
    ok = (n >= 2) & (sxx > tol_x) & (syy > tol_y)
    out = np.full(x.shape[0], np.nan)
    out[ok] = np.clip(sxy[ok] / np.sqrt(sxx[ok] * syy[ok]), -1.0, 1.0)
    return out


def _rowwise_ranks(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    filled = np.where(mask, x, np.nan)
    return rankdata(filled, method="average", axis=1, nan_policy="omit")


def credit_quality(assigned: Any, true_rewards: Any, mask: Any, *, returns: Any | None = None) -> QualityOutput:
    """Per-episode correlation and decomposition error of assigned vs true per-step rewards.

    Args:
        assigned: float[B, T] -- per-step rewards an assigner gave.
        true_rewards: float[B, T] -- hidden true per-step rewards (evaluation only).
        mask: bool[B, T] -- valid steps.
        returns: float[B] -- R_b for the decomposition error (default: the sum of the true rewards).

    Returns:
        QualityOutput (see its attributes).

    Example (a perfect affine match, a reversed order and a constant true reward):
        >>> a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
        >>> t = np.array([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
        >>> q = credit_quality(a, t, np.ones((3, 3), bool))
        >>> q.pearson.tolist()[:2], bool(np.isnan(q.pearson[2])), q.decomposition_error.tolist()
        ([1.0, -1.0], True, [6.0, 0.0, 3.0])
    """
    a = np.asarray(assigned, dtype=np.float64)
    t = np.asarray(true_rewards, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if a.shape != t.shape or a.shape != m.shape or a.ndim != 2:
        raise ShapeError(f"assigned {a.shape}, true_rewards {t.shape} and mask {m.shape} must all be [B, T]")
    r = np.where(m, t, 0.0).sum(1) if returns is None else np.asarray(returns, dtype=np.float64)
    if r.shape != (a.shape[0],):
        raise ShapeError(f"returns has shape {r.shape}; expected ({a.shape[0]},)")
    pearson = _rowwise_pearson(a, t, m)
    if a.shape[0]:
        ra, rt = _rowwise_ranks(a, m), _rowwise_ranks(t, m)
        spearman = _rowwise_pearson(np.nan_to_num(ra), np.nan_to_num(rt), m)
        spearman = np.where(np.isnan(pearson), np.nan, spearman)
    else:
        spearman = pearson.copy()
    err = np.abs(np.where(m, a, 0.0).sum(1) - r)
    defined = ~np.isnan(pearson)
    pooled = _rowwise_pearson(a[m][None, :], t[m][None, :], np.ones((1, int(m.sum())), bool))[0] if m.any() else np.nan
    metrics = {
        "quality/pearson": float(pearson[defined].mean()) if defined.any() else float("nan"),
        "quality/spearman": float(spearman[defined].mean()) if defined.any() else float("nan"),
        "quality/pearson_pooled": float(pooled),
        "quality/decomposition_error": float(err.mean()) if err.size else float("nan"),
        "quality/num_episodes": float(a.shape[0]),
        "quality/num_undefined": float((~defined).sum()),
    }
    return QualityOutput(pearson, spearman, err, metrics)
