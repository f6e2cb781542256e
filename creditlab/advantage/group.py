"""Group-relative advantage estimators: GRPO, Dr. GRPO, RLOO, REINFORCE++(-baseline), GDPO.

Every estimator takes one score per episode (``rewards[N]``, or named components ``[N, K]``)
and integer ``group_ids[N]`` (any group sizes, any order) and returns one advantage per episode.
Broadcast it to steps or tokens with :func:`creditlab.broadcast_to_steps` /
:func:`creditlab.broadcast_to_tokens`.

Missing rewards. A reward of ``None`` (or ``present[i] = False``, or NaN with
``nan_is_missing=True``) means "not applicable": the episode is left out of its group's
statistics and gets advantage exactly 0 (no gradient). It never becomes NaN.

Degenerate groups. A group whose present rewards are all equal (including a group of one)
carries no signal: its members get advantage exactly 0, they are counted in ``metrics`` and one
:class:`~creditlab.errors.DegenerateGroupWarning` is issued per call.

Numerics. Group statistics are accumulated in float64 and centring is done in float64, so
float32 inputs keep exact zeros in constant groups and leave-one-out baselines have no
cancellation residue. ``std`` is the unbiased (N-1) standard deviation by default, as in
``torch.std`` (verl, TRL); ``eps`` is added to the std (verl: 1e-6, TRL and GDPO: 1e-4).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

from .. import _kernels
from .._adapters import episode_scores, step_rewards
from .._arrays import (
    ArrayLike,
    Backend,
    GroupIndex,
    all_finite,
    as_float,
    as_group_index,
    as_scores,
    check_nonempty,
    check_positive,
    check_real,
)
from .._steps import step_inputs
from ..errors import DegenerateGroupWarning, EmptyBatchError, NonFiniteError, RangeError, ShapeError
from ..outputs import AdvantageOutput
from ..registry import register_method
from ..segments import GroupStats, group_stats, masked_whiten, scaled_moments
from .tokens import episode_output_to_steps

__all__ = [
    "grpo",
    "dr_grpo",
    "rloo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "gdpo",
    "sum_then_normalize",
    "combine_step_episode",
]

StdScale = Literal["group", "batch", "none"]


def grpo(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    std_scale: StdScale = "group",
    eps: float = 1e-6,
    unbiased: bool = True,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """Group-relative advantages (GRPO, Shao et al. 2024, arXiv 2402.03300).

    ``A_i = (r_i - mean_g r) / (s + eps)`` where ``s`` is the std of i's group
    (``std_scale="group"``, GRPO), the std of all present rewards in the batch (``"batch"``,
    as TRL's ``scale_rewards="batch"``), or ``s + eps = 1`` (``"none"``, Dr. GRPO).

    Args:
        rewards: float[N] -- one score per episode; ``None`` = not applicable.
        group_ids: int[N] (or strings) -- episodes sharing a prompt/task share an id.
        std_scale: "group", "batch" or "none".
        eps: added to the std before dividing.
        unbiased: N-1 (True, torch/verl/TRL) or N in the std.
        present: bool[N] -- optional, False marks a missing reward.
        nan_is_missing: read NaN rewards as missing instead of raising.

    Returns:
        AdvantageOutput(advantages[N], None, metrics).

    Example (group 0 = [1, 0], group 1 = [1, 1] has zero spread):
        >>> import warnings; warnings.simplefilter("ignore")
        >>> out = grpo([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], std_scale="none")
        >>> out.advantages.tolist()
        [0.5, -0.5, 0.0, 0.0]
    """
    if std_scale not in ("group", "batch", "none"):
        raise RangeError(f"std_scale must be 'group', 'batch' or 'none'; got {std_scale!r}")
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    check_nonempty(r.shape[0], "rewards")
    groups = as_group_index(group_ids, "group_ids", r.shape[0], device=r.device)
    if std_scale != "batch":
        fast = _kernels.group_advantages(r, p, groups.index, groups.num_groups, unbiased, std_scale, eps)
        if fast is not None:
            return _fast_output(backend, r.shape[0], fast)
    stats = group_stats(r, p, groups, unbiased=unbiased)
    # centered is exactly 0 for missing items and constant groups; guard 0/0 when eps = 0.
    if std_scale == "group":
        denom = torch.where(stats.std > 0, stats.std + eps, torch.ones_like(stats.std))
        adv = stats.centered / denom.index_select(0, groups.index)
    elif std_scale == "batch":
        s = _batch_std(r, p, unbiased)
        adv = stats.centered / (s + eps) if float(s) > 0 else stats.centered
    else:
        adv = stats.centered
    metrics = _group_metrics(r, p, stats, groups, adv)
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


def dr_grpo(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """Dr. GRPO advantages (Liu et al. 2025, arXiv 2503.20783): ``A_i = r_i - mean_g r``, no std.

    Same as ``grpo(..., std_scale="none")``. The paper's other half, dividing the token-summed
    loss by a constant instead of each response's length, belongs to the policy loss.
    """
    return grpo(rewards, group_ids, std_scale="none", present=present, nan_is_missing=nan_is_missing)


def rloo(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, arXiv 2402.14740).

    ``A_i = r_i - mean_{j != i} r_j = n/(n-1) * (r_i - mean_g r)`` over the n present members of
    i's group. Computed from the float64-centred reward, so there is no cancellation residue.
    Groups of one get 0 (verl returns the raw reward; we prefer no signal to a biased one).

    Example:
        >>> rloo([3.0, 1.0, 2.0], [7, 7, 7]).advantages.tolist()   # 3 - (1+2)/2, 1 - (3+2)/2, 2 - 2
        [1.5, -1.5, 0.0]
    """
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    check_nonempty(r.shape[0], "rewards")
    groups = as_group_index(group_ids, "group_ids", r.shape[0], device=r.device)
    fast = _kernels.group_advantages(r, p, groups.index, groups.num_groups, True, "rloo", 0.0)
    if fast is not None:
        return _fast_output(backend, r.shape[0], fast)
    stats = group_stats(r, p, groups)
    n = stats.count.to(torch.float64)
    adv = stats.centered * (n / (n - 1).clamp(min=1)).index_select(0, groups.index)
    metrics = _group_metrics(r, p, stats, groups, adv)
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


def reinforce_pp_baseline(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    eps: float = 1e-8,
    weights: ArrayLike | None = None,
    unbiased: bool = True,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """REINFORCE++-baseline (Hu 2025, arXiv 2501.03262): group mean subtracted, then batch whitening.

    ``A_i = whiten_batch(r_i - mean_g r)``: the global std replaces GRPO's per-group std.
    Default: one weight per episode, ``(x - mean) / sqrt(var + eps)`` over the present episodes
    with the unbiased (N - 1) variance. verl whitens over *tokens* (``masked_whiten``: each
    episode weighted by its response length, torch's unbiased variance over all valid tokens):
    pass ``weights[N]`` = token counts to reproduce it; the variance is then
    ``sum w (x - mean)^2 / (sum w - 1)`` (``unbiased=False``: ``/ sum w``).

    Episodes of degenerate groups (a single present member, or zero spread) get exactly 0, with
    or without weights; their zero centred values still take part in the batch statistics, as
    in verl (verl gives a group of one its raw reward instead). Weights must be >= 0 and finite.

    Example (token counts 2 and 1 in one group: centred values +-0.5, token mean 1/6):
        >>> out = reinforce_pp_baseline([1.0, 0.0], [0, 0], weights=[2, 1])
        >>> [round(a, 4) for a in out.advantages.tolist()]   # var = (2 (1/3)^2 + (2/3)^2) / (3 - 1) = 1/3
        [0.5774, -1.1547]
    """
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    check_nonempty(r.shape[0], "rewards")
    groups = as_group_index(group_ids, "group_ids", r.shape[0], device=r.device)
    stats = group_stats(r, p, groups)
    if weights is None:
        adv, _, _ = masked_whiten(stats.centered, p, eps=eps, unbiased=unbiased)
    else:
        w = as_float(weights, "weights", shape=(r.shape[0],), device=r.device).to(torch.float64)
        if bool((w < 0).any()):
            i = int(torch.nonzero(w < 0)[0])
            raise RangeError(
                f"weights[{i}] = {float(w[i])}; weights count tokens (or any non-negative importance) and must be >= 0"
            )
        adv = _weighted_whiten(stats.centered, w * p, eps, unbiased)
    dead = stats.constant.index_select(0, groups.index) | ~p
    adv = torch.where(dead, torch.zeros_like(adv), adv)
    metrics = _group_metrics(r, p, stats, groups, adv)
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


def reinforce_pp(
    rewards: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    gamma: float = 1.0,
    kl: ArrayLike | None = None,
    kl_coef: float = 0.0,
    eps: float = 1e-8,
) -> AdvantageOutput:
    """REINFORCE++ (Hu 2025): per-step returns whitened over the whole batch.

    ``r'_t = r_t - kl_coef * kl_t``; ``G_t = sum_{s >= t} gamma^{s-t} r'_s``; advantages are G
    whitened over every valid step of the batch (mean 0, std 1). Put an outcome reward on
    the last step of ``rewards``.

    Args:
        rewards: float[B, T] -- per-step (or per-token) rewards.
        mask: bool[B, T] -- prefix mask (default: all valid).
        gamma: discount in [0, 1] (1 in the paper).
        kl: float[B, T] -- optional per-step KL estimate folded into the reward.
        kl_coef: weight of ``kl``.
        eps: added to the variance when whitening.

    Returns:
        AdvantageOutput(advantages[B, T], returns[B, T], metrics).
    """
    from .._arrays import check_unit

    gamma = check_unit(gamma, "gamma")
    kl_coef = check_real(kl_coef, "kl_coef")
    eps = check_positive(eps, "eps", allow_zero=True)
    s = step_inputs(rewards, mask=mask)
    r = s.rewards
    if kl is not None:
        from .._steps import per_step

        r = r - float(kl_coef) * per_step(kl, "kl", s)
    ret = _kernels.returns_scan(r.contiguous(), s.discounts, s.last_discount, s.lengths, s.bootstrap, gamma).out
    adv, mean, std = masked_whiten(ret, s.mask, eps=eps)
    metrics = {
        "num_episodes": float(s.shape[0]),
        "num_steps": float(s.lengths.sum()),
        "returns/mean": mean,
        "returns/std": std,
    }
    return AdvantageOutput(s.backend.out(adv), s.backend.out(ret), metrics)


def gdpo(
    components: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    weights: ArrayLike | Sequence[float] | None = None,
    eps: float = 1e-4,
    unbiased: bool = True,
    batch_norm: bool = True,
    names: Sequence[str] | None = None,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """Group reward-Decoupled normalization (GDPO, Liu et al. 2026, arXiv 2601.05242).

    1. per component k and group g: ``z^k_i = (r^k_i - mean_g r^k) / (std_g r^k + eps)``;
    2. weighted sum ``a_i = sum_k w_k z^k_i``;
    3. batch normalization ``A_i = (a_i - mean a) / (std a + eps)`` (skip with ``batch_norm=False``).

    This keeps distinct reward combinations apart where summing first collapses them. A missing
    component (None) is left out of that component's group statistics and contributes 0 to the
    episode's sum; an episode with every component missing gets 0 and is left out of step 3.
    Matches TRL's ``multi_objective_aggregation="normalize_then_sum"`` with ``eps=1e-4``.

    Args:
        components: float[N, K] -- K named reward components per episode (None allowed).
        group_ids: int[N].
        weights: float[K] -- component weights (default 1 each).
        eps: added to each std (paper and TRL: 1e-4).
        unbiased: N-1 std (torch convention).
        batch_norm: apply step 3.
        names: K component names, used in metric keys ``rewards/{name}/mean``.
        present: bool[N, K] -- False marks missing components.
        nan_is_missing: read NaN as missing.

    Returns:
        AdvantageOutput(advantages[N], None, metrics).
    """
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(components)
    c, p = as_scores(components, "components", present=present, nan_is_missing=nan_is_missing, ndim=2)
    n, k = c.shape
    check_nonempty(n, "components")
    if k == 0:
        raise EmptyBatchError(
            f"components has shape {tuple(c.shape)}: K = 0 reward components; GDPO needs at least one column"
        )
    w = _weights(weights, k, c.device)
    groups = as_group_index(group_ids, "group_ids", n, device=c.device)
    # One segment pass for all K components: slot = group * K + k.
    cols = torch.arange(k, device=c.device)
    flat_groups = GroupIndex((groups.index[:, None] * k + cols[None, :]).reshape(-1), groups.num_groups * k)
    stats = group_stats(c.reshape(-1), p.reshape(-1), flat_groups, unbiased=unbiased)
    denom = torch.where(stats.std > 0, stats.std + eps, torch.ones_like(stats.std))
    z = (stats.centered / denom.index_select(0, flat_groups.index)).reshape(n, k)
    summed = (z * w[None, :]).sum(dim=1)
    any_present = p.any(dim=1)
    if batch_norm:
        adv = _batch_normalize(summed, any_present, eps, unbiased)
    else:
        adv = torch.where(any_present, summed, torch.zeros_like(summed))
    metrics = _component_metrics(c, p, names)
    metrics.update(_degenerate_counts(stats, flat_groups, p.reshape(-1), prefix="components/"))
    metrics.update(
        {
            "num_episodes": float(n),
            "num_missing": float((~any_present).sum()),
            "advantages/mean": float(adv[any_present].mean()) if bool(any_present.any()) else 0.0,
            "advantages/std": float(adv[any_present].std(unbiased=False)) if bool(any_present.any()) else 0.0,
        }
    )
    if metrics["components/groups/num_degenerate"] > 0:
        _warn(
            "some (group, component) pairs had a single member or zero spread and contribute 0 to the "
            "advantage (count in metrics['components/groups/num_degenerate'])"
        )
    return AdvantageOutput(backend.out(adv.to(c.dtype)), None, metrics)


def sum_then_normalize(
    components: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    weights: ArrayLike | Sequence[float] | None = None,
    std_scale: StdScale = "group",
    eps: float = 1e-4,
    unbiased: bool = True,
    names: Sequence[str] | None = None,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """Weighted sum of components, then GRPO normalization (TRL's ``"sum_then_normalize"``).

    ``r_i = sum_k w_k r^k_i`` over the present components (missing ones add 0, like
    ``nansum``); an episode with every component missing is missing. Then :func:`grpo`.
    """
    backend = Backend.of(components)
    c, p = as_scores(components, "components", present=present, nan_is_missing=nan_is_missing, ndim=2)
    n, k = c.shape
    check_nonempty(n, "components")
    if k == 0:
        raise EmptyBatchError(
            f"components has shape {tuple(c.shape)}: K = 0 reward components; expected at least one column"
        )
    w = _weights(weights, k, c.device)
    summed = (c.to(torch.float64) * w[None, :]).sum(dim=1).to(c.dtype)
    any_present = p.any(dim=1)
    inner = grpo(
        summed,
        group_ids,
        std_scale=std_scale,
        eps=eps,
        unbiased=unbiased,
        present=any_present,
    )
    metrics = dict(inner.metrics)
    metrics.update(_component_metrics(c, p, names))
    adv = inner.advantages
    return AdvantageOutput(backend.out(adv if isinstance(adv, torch.Tensor) else torch.from_numpy(adv)), None, metrics)


def combine_step_episode(
    step_advantages: ArrayLike,
    episode_advantages: ArrayLike,
    *,
    step_weight: float = 1.0,
    mask: ArrayLike | None = None,
) -> ArrayLike:
    """Combine step-level and episode-level advantages: ``A_t = A^E + step_weight * A^S_t``.

    The form used by GiGPO (``omega``) and iStar/OPRL (``alpha``).

    Args:
        step_advantages: float[B, T].
        episode_advantages: float[B].
        step_weight: weight of the step-level term.
        mask: bool[B, T] -- prefix mask; output is 0 on padding.

    Returns:
        float[B, T], same kind as ``step_advantages``.
    """
    step_weight = check_real(step_weight, "step_weight")
    s = step_inputs(step_advantages, mask=mask, rewards_name="step_advantages")
    e = as_float(
        episode_advantages, "episode_advantages", shape=(s.shape[0],), dtype=s.rewards.dtype, device=s.rewards.device
    )
    out = s.zero_pad(e[:, None] + float(step_weight) * s.rewards)
    return s.backend.out(out)


# ----------------------------------------------------------------------------------------------


def _weights(weights, k: int, device) -> torch.Tensor:
    if weights is None:
        return torch.ones(k, dtype=torch.float64, device=device)
    w = as_float(weights, "weights", device=device).to(torch.float64)
    if w.shape != (k,):
        raise ShapeError(f"weights has shape {tuple(w.shape)} but components has K = {k} columns; expected ({k},)")
    return w


def _batch_std(r: torch.Tensor, p: torch.Tensor, unbiased: bool) -> torch.Tensor:
    x = r[p].to(torch.float64)
    n = x.numel()
    if n < 2 or bool(x.max() == x.min()):
        return torch.zeros((), dtype=torch.float64, device=r.device)
    _, std = scaled_moments(x)  # population std, no overflow for finite values
    if unbiased:
        std *= math.sqrt(n / (n - 1))
    return torch.tensor(std, dtype=torch.float64, device=r.device)


def _batch_normalize(a: torch.Tensor, p: torch.Tensor, eps: float, unbiased: bool) -> torch.Tensor:
    x = a[p].to(torch.float64)
    n = x.numel()
    if n < 2 or bool(x.max() == x.min()):
        return torch.zeros_like(a)
    mean, std = scaled_moments(x)
    if unbiased:
        std *= math.sqrt(n / (n - 1))
    out = (a - mean) / (std + eps)
    return torch.where(p, out, torch.zeros_like(out))


def _weighted_whiten(x: torch.Tensor, w: torch.Tensor, eps: float, unbiased: bool) -> torch.Tensor:
    """verl's ``masked_whiten`` over tokens, with ``w[i]`` tokens carrying the value ``x[i]``.

    ``mean = sum w x / W``, ``var = sum w (x - mean)^2 / (W - 1)`` (``W = sum w``; frequency
    weights, as torch's unbiased variance over the W tokens) or ``/ W`` with ``unbiased=False``;
    ``(x - mean) / sqrt(var + eps)``. A total weight without spread (or ``W <= 1`` when unbiased)
    gives 0. Scale-safe: the values are scaled by an exact power of two first.
    """
    total = float(w.sum())
    keep = w > 0
    if total <= 0 or (unbiased and total <= 1) or not bool(keep.any()):
        return torch.zeros_like(x)
    xk = x[keep]
    if bool(xk.max() == xk.min()):
        return torch.zeros_like(x)
    m = float(xk.abs().max())
    e = math.frexp(m)[1] if m > 0 else 0
    xs = torch.ldexp(x, torch.tensor(-e, dtype=x.dtype, device=x.device))
    mean = (w * xs).sum() / total
    var = (w * (xs - mean) ** 2).sum() / (total - 1 if unbiased else total)
    return (xs - mean) / torch.sqrt(var + math.ldexp(eps, -2 * e))


def _degenerate_counts(stats: GroupStats, groups: GroupIndex, p: torch.Tensor, prefix: str = "") -> dict[str, float]:
    nonempty = stats.count > 0
    singleton = stats.count == 1
    zero_std = stats.constant & (stats.count > 1)
    n_groups = int(nonempty.sum())
    n_single = int(singleton.sum())
    n_zero = int(zero_std.sum())
    in_degenerate = int((stats.count * stats.constant).sum())  # present members of degenerate groups
    return {
        f"{prefix}groups/num": float(n_groups),
        f"{prefix}groups/num_singleton": float(n_single),
        f"{prefix}groups/num_zero_std": float(n_zero),
        f"{prefix}groups/num_degenerate": float(n_single + n_zero),
        f"{prefix}groups/frac_zero_std": n_zero / n_groups if n_groups else 0.0,
        f"{prefix}groups/num_episodes_in_degenerate": float(in_degenerate),
    }


def _moments(x: torch.Tensor, p: torch.Tensor, n: int | None = None) -> tuple[float, float]:
    """Mean and population std of ``x`` over present items (x is 0 where missing), float64.

    ``n``: the number of present items when the caller knows it already. Scale-safe: values
    whose squares overflow float64 are rescaled by a power of two (:func:`scaled_moments`).
    """
    n = int(torch.count_nonzero(p)) if n is None else n
    if n == 0:
        return 0.0, 0.0
    x64 = x.reshape(-1).to(torch.float64)  # a view when x is float64 already
    mean = float(x64.sum()) / n
    var = float(torch.dot(x64, x64)) / n - mean * mean
    if not (math.isfinite(mean) and math.isfinite(var)):
        return scaled_moments(x64[p.reshape(-1)])
    return mean, max(var, 0.0) ** 0.5


def _finite_output(adv: torch.Tensor, name: str = "rewards") -> torch.Tensor:
    """The advantages in the caller's dtype, or a named error when that dtype cannot hold them."""
    if not all_finite(adv):
        raise NonFiniteError(
            f"the advantages overflow {adv.dtype} (the {name} reach values whose differences are not representable "
            "in that dtype); rescale the rewards or pass them as float64"
        )
    return adv


def _fast_output(backend: Backend, n: int, fast: _kernels.GroupAdvantages) -> AdvantageOutput:
    """The output of the compiled GRPO / RLOO path: the same advantages and metrics as the general one."""
    n_present = fast.num_present
    r_mean, r_std = _moments_from_sums(fast.sum_rewards, fast.sum_rewards2, n_present)
    a_mean, a_std = _moments_from_sums(fast.sum_adv, fast.sum_adv2, n_present)
    metrics = {
        "num_episodes": float(n),
        "num_missing": float(n - n_present),
        "rewards/mean": r_mean,
        "rewards/std": r_std,
        "advantages/mean": a_mean,
        "advantages/std": a_std,
        "groups/num": float(fast.num_groups),
        "groups/num_singleton": float(fast.num_singleton),
        "groups/num_zero_std": float(fast.num_zero_std),
        "groups/num_degenerate": float(fast.num_singleton + fast.num_zero_std),
        "groups/frac_zero_std": fast.num_zero_std / fast.num_groups if fast.num_groups else 0.0,
        "groups/num_episodes_in_degenerate": float(fast.num_in_degenerate),
    }
    _warn_degenerate(metrics, stacklevel=5)
    return AdvantageOutput(backend.out(fast.advantages), None, metrics)


def _moments_from_sums(total: float, total2: float, n: int) -> tuple[float, float]:
    """Mean and population std from float64 sums of x and x^2 over n items (as :func:`_moments`)."""
    if n == 0:
        return 0.0, 0.0
    mean = total / n
    return mean, max(total2 / n - mean * mean, 0.0) ** 0.5


def _group_metrics(
    r: torch.Tensor, p: torch.Tensor, stats: GroupStats, groups: GroupIndex, adv: torch.Tensor
) -> dict[str, float]:
    n_present = int(torch.count_nonzero(p))
    r_mean, r_std = _moments(r, p, n_present)
    a_mean, a_std = _moments(adv, p, n_present)
    out = {
        "num_episodes": float(r.shape[0]),
        "num_missing": float(r.shape[0] - n_present),
        "rewards/mean": r_mean,
        "rewards/std": r_std,
        "advantages/mean": a_mean,
        "advantages/std": a_std,
    }
    out.update(_degenerate_counts(stats, groups, p))
    return out


def _component_metrics(c: torch.Tensor, p: torch.Tensor, names: Sequence[str] | None) -> dict[str, float]:
    k = c.shape[1]
    if names is not None and len(names) != k:
        raise ShapeError(f"names has {len(names)} entries but components has K = {k} columns")
    labels = list(names) if names is not None else [str(i) for i in range(k)]
    out: dict[str, float] = {}
    for j, name in enumerate(labels):
        col = c[:, j][p[:, j]].to(torch.float64)
        out[f"rewards/{name}/mean"] = float(col.mean()) if col.numel() else 0.0
        out[f"rewards/{name}/std"] = float(col.std(unbiased=False)) if col.numel() else 0.0
        out[f"rewards/{name}/num_missing"] = float((~p[:, j]).sum())
    return out


def _warn_degenerate(metrics: dict[str, float], stacklevel: int = 4) -> None:
    n_zero = int(metrics.get("groups/num_zero_std", 0))
    n_single = int(metrics.get("groups/num_singleton", 0))
    if n_zero or n_single:
        # A constant text: Python's default filter then shows it once per call site instead of
        # once per distinct count (zero-spread groups are routine with binary rewards).
        _warn(
            "some groups had zero reward spread or a single member; their episodes get advantage 0 "
            "(counts in metrics['groups/num_zero_std'] and metrics['groups/num_singleton'])",
            stacklevel=stacklevel,
        )


def _warn(message: str, stacklevel: int = 3) -> None:
    """Warn at the caller of the public function (stacklevel counts _warn, helper, public function)."""
    warnings.warn(message, DegenerateGroupWarning, stacklevel=stacklevel)


# ---------------------------------------------------------------------- registry adapters

_GROUP_NEEDS = ("outcomes|components|rewards", "group_ids")


@register_method(
    "grpo",
    family="advantage",
    kind="advantages",
    needs=_GROUP_NEEDS,
    summary="Group-relative z-score of the episode outcome (std by group/batch/none)",
    source="Shao et al. 2024, arXiv 2402.03300",
)
def _run_grpo(episodes, *, std_scale: StdScale = "group", eps: float = 1e-6) -> AdvantageOutput:
    r, p, meta = episode_scores(episodes)
    return episode_output_to_steps(episodes, grpo(r, episodes.group_ids, std_scale=std_scale, eps=eps, present=p), meta)


@register_method(
    "dr_grpo",
    family="advantage",
    kind="advantages",
    needs=_GROUP_NEEDS,
    summary="Dr. GRPO: outcome minus group mean, no std division",
    source="Liu et al. 2025, arXiv 2503.20783",
)
def _run_dr_grpo(episodes) -> AdvantageOutput:
    r, p, meta = episode_scores(episodes)
    return episode_output_to_steps(episodes, dr_grpo(r, episodes.group_ids, present=p), meta)


@register_method(
    "rloo",
    family="advantage",
    kind="advantages",
    needs=_GROUP_NEEDS,
    summary="REINFORCE leave-one-out baseline within each group",
    source="Ahmadian et al. 2024, arXiv 2402.14740",
)
def _run_rloo(episodes) -> AdvantageOutput:
    r, p, meta = episode_scores(episodes)
    return episode_output_to_steps(episodes, rloo(r, episodes.group_ids, present=p), meta)


@register_method(
    "reinforce_pp",
    family="advantage",
    kind="advantages",
    needs=("rewards|outcomes|components",),
    summary="REINFORCE++: returns-to-go whitened over the whole batch",
    source="Hu 2025, arXiv 2501.03262",
)
def _run_reinforce_pp(episodes, *, gamma: float = 1.0, eps: float = 1e-8) -> AdvantageOutput:
    r, meta = step_rewards(episodes)
    out = reinforce_pp(r, mask=episodes.mask, gamma=gamma, eps=eps)
    return AdvantageOutput(out.advantages, out.returns, {**out.metrics, **meta})


@register_method(
    "reinforce_pp_baseline",
    family="advantage",
    kind="advantages",
    needs=_GROUP_NEEDS,
    summary="REINFORCE++-baseline: group mean subtracted, batch whitening",
    source="Hu 2025, arXiv 2501.03262",
)
def _run_reinforce_pp_baseline(episodes, *, eps: float = 1e-8, length_weighted: bool = False) -> AdvantageOutput:
    r, p, meta = episode_scores(episodes)
    w = episodes.lengths if length_weighted else None
    out = reinforce_pp_baseline(r, episodes.group_ids, eps=eps, weights=w, present=p)
    return episode_output_to_steps(episodes, out, meta)


@register_method(
    "gdpo",
    family="normalization",
    kind="advantages",
    needs=("components", "group_ids"),
    summary="GDPO: each reward component normalized in its group, weighted sum, batch norm",
    source="Liu et al. 2026, arXiv 2601.05242",
)
def _run_gdpo(episodes, *, weights=None, eps: float = 1e-4, batch_norm: bool = True) -> AdvantageOutput:
    out = gdpo(
        episodes.components,
        episodes.group_ids,
        weights=weights,
        eps=eps,
        batch_norm=batch_norm,
        names=episodes.component_names,
        present=episodes.component_present,
    )
    return episode_output_to_steps(episodes, out, {"input/score_from_components": 1.0})


@register_method(
    "sum_then_normalize",
    family="normalization",
    kind="advantages",
    needs=("components", "group_ids"),
    summary="Weighted sum of reward components, then GRPO normalization",
    source="TRL multi_objective_aggregation='sum_then_normalize'",
)
def _run_sum_then_normalize(
    episodes, *, weights=None, std_scale: StdScale = "group", eps: float = 1e-4
) -> AdvantageOutput:
    out = sum_then_normalize(
        episodes.components,
        episodes.group_ids,
        weights=weights,
        std_scale=std_scale,
        eps=eps,
        names=episodes.component_names,
        present=episodes.component_present,
    )
    return episode_output_to_steps(episodes, out, {"input/score_from_components": 1.0})
