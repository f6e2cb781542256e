"""PAR: Preference As Reward (Fu et al. 2025, arXiv 2502.18770)."""

from __future__ import annotations

import torch

from .._arrays import ArrayLike, Backend, as_scores, check_nonempty, check_positive
from ..errors import ShapeError
from ..outputs import RewardOutput

__all__ = ["par"]


def par(
    rewards: ArrayLike,
    reference_rewards: ArrayLike,
    *,
    k: float = 1.0,
    present: ArrayLike | None = None,
    reference_present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> RewardOutput:
    """Bounded, centred reward: ``r_PAR = mean_m sigmoid(k * (r - r_ref_m))``.

    ``r_ref_m`` are reward-model scores of M reference responses to the same prompt (sampled once
    from the reference policy). The result lies in (0, 1), rises fast near the reference and
    saturates, which is what makes reward hacking unprofitable.

    Missing values: a missing reward stays missing (``present`` False in the output, reward 0);
    missing references are left out of the mean; an episode with no present reference is
    missing.

    Args:
        rewards: float[N] -- reward-model score of each response (None allowed).
        reference_rewards: float[N, M] (or float[N] for M = 1) -- scores of the references.
        k: sigmoid slope (paper: 1).
        present: bool[N]; reference_present: bool[N, M] -- optional missing-value masks.
        nan_is_missing: read NaN as missing.

    Returns:
        RewardOutput(rewards[N] in (0, 1), metrics, present[N]).

    Example:
        >>> par([0.0, 2.0], [[0.0], [2.0]]).rewards.tolist()   # sigmoid(0) = 0.5 for both
        [0.5, 0.5]
    """
    k = check_positive(k, "k")
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    n = r.shape[0]
    check_nonempty(n, "rewards")
    ref, rp = as_scores(
        reference_rewards,
        "reference_rewards",
        present=reference_present,
        nan_is_missing=nan_is_missing,
        ndim=(1, 2),
        device=r.device,
    )
    if ref.ndim == 1:
        ref, rp = ref[:, None], rp[:, None]
    if ref.shape[0] != n:
        raise ShapeError(
            f"reference_rewards has {ref.shape[0]} rows but rewards has {n} entries; expected [{n}, M] (M references per response)"
        )
    sig = torch.sigmoid(k * (r.to(torch.float64)[:, None] - ref.to(torch.float64)))
    count = rp.sum(dim=1)
    mean = torch.where(rp, sig, torch.zeros_like(sig)).sum(dim=1) / count.clamp(min=1)
    out_present = p & (count > 0)
    out = torch.where(out_present, mean, torch.zeros_like(mean))
    metrics = {
        "par/mean": float(out[out_present].mean()) if bool(out_present.any()) else 0.0,
        "par/num_missing": float((~out_present).sum()),
    }
    return RewardOutput(backend.out(out.to(r.dtype)), metrics, backend.out(out_present))
