"""Outcome estimators other trainers ship, with creditlab's conventions: ReMax, OPO, GRPO pass@k,
GPG, MaxRL and the optimal token baseline.

Each is restated from the reference code named in its docstring and tested side by side with it
(verl 0.9.1's ``core_algos`` for ReMax, OPO, pass@k, GPG and the optimal token baseline;
SkyRL's formula for MaxRL) on random inputs: tests/integrations/test_verl_estimators.py.

The usual creditlab rules apply to all of them, which is where they differ from the peers (each
difference is listed in the function's docstring and in docs/estimators.md):

* A missing reward (None, ``present=False``, or NaN with ``nan_is_missing``) is left out of its
  group's statistics and gets advantage exactly 0.
* A group with a single present member carries no comparison: advantage 0 (the peers hand out the
  raw reward, or raise).
* A group whose present rewards are all equal gets exactly 0 (no rounding residue).
* Bad input is a named :mod:`creditlab.errors` exception.

Per-episode functions return ``AdvantageOutput(advantages[N], None, metrics)``; broadcast to
steps or tokens with :func:`creditlab.broadcast_to_steps` / :func:`creditlab.broadcast_to_tokens`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from .._arrays import (
    ArrayLike,
    Backend,
    GroupIndex,
    as_float,
    as_group_index,
    as_mask,
    as_scores,
    check_finite,
    check_nonempty,
    check_positive,
)
from ..errors import MissingColumnError, RangeError, ShapeError
from ..outputs import AdvantageOutput
from ..registry import register_method
from ..segments import group_stats
from .group import _finite_output, _group_metrics, _warn_degenerate

__all__ = ["remax", "opo", "grpo_passk", "gpg", "maxrl", "optimal_token_baseline"]


# ---------------------------------------------------------------------------------------- ReMax


def remax(
    rewards: ArrayLike,
    greedy_rewards: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """ReMax (Li et al. 2023, arXiv 2310.10505): the reward of a greedy decode as the baseline.

    ``A_i = r_i - b_i`` with ``b_i`` the reward of one greedy (argmax) response to i's prompt. The
    baseline depends on the prompt only, never on the sampled response, so the gradient is
    unbiased; groups are not needed (one sample per prompt is fine).

    With per-step rewards ``rewards[B, T]`` (and a prefix ``mask``) the advantage is the
    undiscounted return-to-go minus the baseline, ``A_t = sum_{k >= t} r_k - b``, and ``returns``
    is the return-to-go: verl's ``compute_remax_outcome_advantage``.

    Args:
        rewards: float[N] -- one score per sampled response (None = missing), or float[B, T]
            per-step rewards.
        greedy_rewards: float[N] -- the reward of the greedy response to the same prompt (verl
            generates it with ``do_sample=False`` and repeats it over the prompt's samples);
            None = no baseline for that sample.
        mask: bool[B, T] -- prefix mask for 2-D rewards (padding ignored).
        present: bool[N] -- for 1-D rewards, False marks a missing reward.
        nan_is_missing: read NaN scores (1-D) as missing.

    Returns:
        AdvantageOutput(advantages[N] or [B, T], None or returns[B, T], metrics). A sample whose
        reward or greedy reward is missing gets 0.

    Differences from verl: a missing reward or baseline gives 0; with per-step rewards the
    advantage is 0 on every masked position (verl leaves ``G_t`` on masked positions inside a
    response).

    Example (greedy decode scored 0.5):
        >>> remax([1.0, 0.0, None], [0.5, 0.5, 0.5]).advantages.tolist()
        [0.5, -0.5, 0.0]
    """
    backend = Backend.of(rewards, greedy_rewards)
    if _ndim(rewards) == 2:
        from .. import _kernels
        from .._steps import step_inputs

        s = step_inputs(rewards, mask=mask)
        b_vals, b_present = as_scores(
            greedy_rewards, "greedy_rewards", nan_is_missing=nan_is_missing, device=s.rewards.device
        )
        if b_vals.shape != (s.shape[0],):
            raise ShapeError(
                f"greedy_rewards has shape {tuple(b_vals.shape)}; expected ({s.shape[0]},), one per row of rewards"
            )
        zeros = torch.zeros(s.shape[0], dtype=s.rewards.dtype, device=s.rewards.device)
        g = _kernels.returns_scan(s.rewards, None, torch.ones_like(zeros), s.lengths, zeros, 1.0).out
        adv = s.zero_pad(g - b_vals.to(g.dtype)[:, None])
        if not bool(b_present.all()):
            adv = torch.where(b_present[:, None], adv, torch.zeros_like(adv))
        metrics = {
            "num_episodes": float(s.shape[0]),
            "remax/num_missing_baseline": float((~b_present).sum()),
            "remax/baseline_mean": float(b_vals[b_present].to(torch.float64).mean()) if bool(b_present.any()) else 0.0,
        }
        return AdvantageOutput(backend.out(_finite_output(adv.to(s.rewards.dtype))), backend.out(g), metrics)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    check_nonempty(r.shape[0], "rewards")
    b_vals, b_present = as_scores(greedy_rewards, "greedy_rewards", nan_is_missing=nan_is_missing, device=r.device)
    if b_vals.shape != r.shape:
        raise ShapeError(
            f"greedy_rewards has shape {tuple(b_vals.shape)} but rewards has {tuple(r.shape)}; expected one baseline per sample"
        )
    ok = p & b_present
    adv = torch.where(
        ok, r.to(torch.float64) - b_vals.to(torch.float64), torch.zeros((), dtype=torch.float64, device=r.device)
    )
    n_ok = int(ok.sum())
    metrics = {
        "num_episodes": float(r.shape[0]),
        "num_missing": float((~p).sum()),
        "remax/num_missing_baseline": float((p & ~b_present).sum()),
        "remax/baseline_mean": float(b_vals[ok].to(torch.float64).mean()) if n_ok else 0.0,
        "advantages/mean": float(adv[ok].mean()) if n_ok else 0.0,
        "advantages/std": float(adv[ok].std(unbiased=False)) if n_ok else 0.0,
    }
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


def _ndim(x: Any) -> int:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return x.ndim
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, tuple, np.ndarray, torch.Tensor)):
        return 2
    return 1


# ------------------------------------------------------------------------------------------ OPO


def opo(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    lengths: ArrayLike,
    *,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """On-Policy RL with Optimal reward baseline (OPO, Hao et al. 2025, arXiv 2505.23585).

    ``b_g = sum_{j in g} L_j r_j / sum_{j in g} L_j`` (the length-weighted group mean: the
    variance-optimal baseline when the gradient's squared norm grows with the response length
    ``L``), ``A_i = r_i - b_g``. No std scaling. verl: ``compute_opo_outcome_advantage``.

    Args:
        rewards: float[N] -- one score per response (None = missing).
        group_ids: int[N] (or strings) -- responses to the same prompt.
        lengths: float[N] -- response lengths in tokens (>= 0).
        present: bool[N] -- False marks a missing reward.
        nan_is_missing: read NaN rewards as missing.

    Returns:
        AdvantageOutput(advantages[N], None, metrics).

    Differences from verl: a group of one gets 0 (verl: baseline 0, the raw reward); a group
    whose lengths are all 0 uses the plain mean (verl: 0/0 = NaN); a missing reward is left out
    of ``b_g`` and gets 0; a zero-spread group gets exactly 0.

    Example (lengths 1 and 3: b = (1 * 1 + 3 * 0) / 4 = 0.25):
        >>> opo([1.0, 0.0], [0, 0], [1, 3]).advantages.tolist()
        [0.75, -0.25]
    """
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    n = r.shape[0]
    check_nonempty(n, "rewards")
    groups = as_group_index(group_ids, "group_ids", n, device=r.device)
    length = as_float(lengths, "lengths", shape=(n,), device=r.device).to(torch.float64)
    _check_nonnegative(length, "lengths", "token counts")
    stats = group_stats(r, p, groups)
    w = torch.where(p, length, torch.zeros_like(length))
    w_sum = torch.zeros(groups.num_groups, dtype=torch.float64, device=r.device).index_add_(0, groups.index, w)
    # Baseline relative to the plain mean (centred values are exact): b - mean = sum w c / sum w.
    wc = torch.zeros_like(w_sum).index_add_(0, groups.index, w * stats.centered)
    shift = torch.where(w_sum > 0, wc / torch.where(w_sum > 0, w_sum, torch.ones_like(w_sum)), torch.zeros_like(wc))
    adv = stats.centered - shift.index_select(0, groups.index)
    dead = stats.constant.index_select(0, groups.index) | ~p
    adv = torch.where(dead, torch.zeros_like(adv), adv)
    metrics = _group_metrics(r, p, stats, groups, adv)
    metrics["opo/baseline_shift_abs_mean"] = (
        float(shift[stats.count > 1].abs().mean()) if bool((stats.count > 1).any()) else 0.0
    )
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


def _check_nonnegative(x: torch.Tensor, name: str, what: str) -> None:
    if bool((x < 0).any()):
        i = int(torch.nonzero(x < 0)[0])
        raise RangeError(f"{name}[{i}] = {float(x[i])}; {name} are {what} and must be >= 0")


# ------------------------------------------------------------------------------------ pass@k


def grpo_passk(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    std_scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """GRPO for pass@k (Chen et al. 2025, arXiv 2503.19595): only the best response learns.

    In each group the response with the highest reward gets ``(r_max - r_second) / (std_g + eps)``
    (``std_scale="none"``: no division), every other response 0. This is the gradient of the
    group's *maximum* reward (pass@k for 0/1 rewards): only the sample that decides the max
    matters, by its margin over the runner-up. verl: ``compute_grpo_passk_outcome_advantage``
    (``norm_adv_by_std_in_grpo`` = ``std_scale == "group"``).

    Args:
        rewards: float[N] (None = missing); group_ids: int[N] (or strings).
        std_scale: "group" (unbiased group std, verl's default) or "none".
        eps: added to the std.
        present, nan_is_missing: missing rewards, as in :func:`creditlab.grpo`.

    Returns:
        AdvantageOutput(advantages[N], None, metrics); ``passk/num_ties`` counts groups whose
        best reward is shared (everyone gets 0 there).

    Differences from verl: a group of one gets 0 (verl raises ValueError); missing rewards are
    left out; when several responses share the maximum, all get 0 (verl: the one ``torch.topk``
    picks gets ``0``, the same values).

    Example (group [1, 0, 0.5]: the best gets 1 - 0.5 = 0.5):
        >>> grpo_passk([1.0, 0.0, 0.5], [0, 0, 0], std_scale="none").advantages.tolist()
        [0.5, 0.0, 0.0]
    """
    if std_scale not in ("group", "none"):
        raise RangeError(f"std_scale must be 'group' or 'none'; got {std_scale!r}")
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    n = r.shape[0]
    check_nonempty(n, "rewards")
    groups = as_group_index(group_ids, "group_ids", n, device=r.device)
    stats = group_stats(r, p, groups)
    r64 = r.to(torch.float64)
    neg = torch.full((), -math.inf, dtype=torch.float64, device=r.device)
    x = torch.where(p, r64, neg)
    g = groups.index
    top = torch.full((groups.num_groups,), -math.inf, dtype=torch.float64, device=r.device).scatter_reduce(
        0, g, x, reduce="amax"
    )
    is_top = p & (x == top.index_select(0, g))
    idx = torch.arange(n, device=r.device)
    first = torch.full((groups.num_groups,), n, dtype=torch.int64, device=r.device).scatter_reduce(
        0, g, torch.where(is_top, idx, torch.full_like(idx, n)), reduce="amin"
    )
    winner = is_top & (idx == first.index_select(0, g))
    second = torch.full((groups.num_groups,), -math.inf, dtype=torch.float64, device=r.device).scatter_reduce(
        0, g, torch.where(winner, neg, x), reduce="amax"
    )
    margin = top - second  # inf for groups of one (no runner-up): they are degenerate below
    if std_scale == "group":
        denom = torch.where(stats.std > 0, stats.std + eps, torch.ones_like(stats.std))
        margin = margin / denom
    live = winner & ~stats.constant.index_select(0, g) & (top > second).index_select(0, g)
    adv = torch.where(live, margin.index_select(0, g), torch.zeros((), dtype=torch.float64, device=r.device))
    metrics = _group_metrics(r, p, stats, groups, adv)
    ties = (stats.count > 1) & ~stats.constant & (top == second)
    metrics["passk/num_ties"] = float(ties.sum())
    metrics["passk/num_learning"] = float(live.sum())
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


# ------------------------------------------------------------------------------------------ GPG


def gpg(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    f_norm: float = 1.0,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """Group Policy Gradient (GPG, Chu et al. 2025, arXiv 2504.02546).

    ``A_i = alpha * (r_i - mean_g r) / f_norm`` with ``alpha = N / max(M, 1)``, where N counts the
    present rewards of the batch and M the non-zero ones: with 0/1 rewards, ``1 / alpha`` is the
    fraction of correct responses, and alpha rescales the gradient that degenerate (all-0 or
    all-1) groups would otherwise dilute. No std division. verl: ``compute_gpg_outcome_advantage``
    (it always uses ``f_norm = 1``). With signed rewards M loses its "number correct" meaning.

    Args:
        rewards: float[N] (None = missing); group_ids: int[N] (or strings).
        f_norm: divisor (> 0).
        present, nan_is_missing: missing rewards, as in :func:`creditlab.grpo`.

    Returns:
        AdvantageOutput(advantages[N], None, metrics) with ``gpg/alpha``.

    Differences from verl: a group of one gets 0 (verl: mean 0, so ``alpha * r``); missing
    rewards are left out of N, M and the group mean.

    Example (4 responses, 1 correct: alpha = 4; group [1, 0] centred +-0.5; [0, 0] degenerate):
        >>> gpg([1.0, 0.0, 0.0, 0.0], [0, 0, 1, 1]).advantages.tolist()
        [2.0, -2.0, 0.0, 0.0]
    """
    f_norm = check_positive(f_norm, "f_norm")
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    n = r.shape[0]
    check_nonempty(n, "rewards")
    groups = as_group_index(group_ids, "group_ids", n, device=r.device)
    stats = group_stats(r, p, groups)
    n_present = int(p.sum())
    nonzero = int((p & (r != 0)).sum())
    alpha = n_present / max(nonzero, 1)
    adv = stats.centered * (alpha / f_norm)
    metrics = _group_metrics(r, p, stats, groups, adv)
    metrics["gpg/alpha"] = float(alpha)
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


# ---------------------------------------------------------------------------------------- MaxRL


def maxrl(
    rewards: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    eps: float = 1e-6,
    present: ArrayLike | None = None,
    nan_is_missing: bool = False,
) -> AdvantageOutput:
    """MaxRL: the group-centred reward divided by the group mean, ``A_i = (r_i - mu_g) / (mu_g + eps)``.

    SkyRL's ``compute_maxrl_advantage`` (``skyrl/backends/skyrl_train/utils/ppo_utils.py``).
    For success rates (0/1 rewards) dividing by the mean success rate ``p`` weights each prompt
    by ``1 / p``: hard prompts (rarely solved) get large advantages, which makes the update the
    gradient of ``log p`` rather than ``p`` (maximum-likelihood flavour).

    Rewards must be >= 0 (success rates, pass rates): a negative group mean would flip the sign of
    every advantage, and a mean near 0 with signed rewards divides by ~eps. A negative reward is a
    :class:`~creditlab.errors.RangeError`.

    Args:
        rewards: float[N] (>= 0; None = missing); group_ids: int[N] (or strings).
        eps: added to the group mean (SkyRL: 1e-6).
        present, nan_is_missing: missing rewards, as in :func:`creditlab.grpo`.

    Returns:
        AdvantageOutput(advantages[N], None, metrics).

    Differences from SkyRL: a group of one gets 0 (SkyRL: the raw reward); negative rewards are
    an error; missing rewards are left out; an all-zero group is 0 (as SkyRL, whose numerator is 0).

    Example (SkyRL's test vector: groups [6, 3] and [9, 12]):
        >>> [round(a, 6) for a in maxrl([6.0, 3.0, 9.0, 12.0], [0, 0, 1, 1]).advantages.tolist()]
        [0.333333, -0.333333, -0.142857, 0.142857]
    """
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(rewards)
    r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
    n = r.shape[0]
    check_nonempty(n, "rewards")
    bad = p & (r < 0)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RangeError(
            f"rewards[{i}] = {float(r[i])}; MaxRL divides by the group's mean reward and needs rewards >= 0 "
            "(success or pass rates). Shift the rewards, or use grpo/rloo for signed rewards."
        )
    groups = as_group_index(group_ids, "group_ids", n, device=r.device)
    stats = group_stats(r, p, groups)
    denom = stats.mean + eps
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))  # mean 0 and eps 0: the numerator is 0
    adv = stats.centered / denom.index_select(0, groups.index)
    metrics = _group_metrics(r, p, stats, groups, adv)
    _warn_degenerate(metrics)
    return AdvantageOutput(backend.out(_finite_output(adv.to(r.dtype))), None, metrics)


# --------------------------------------------------------------------------- optimal token baseline


def optimal_token_baseline(
    token_rewards: ArrayLike,
    response_mask: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    log_probs: ArrayLike,
    sum_pi_squared: ArrayLike,
    *,
    is_weights: ArrayLike | None = None,
    align: Literal["column", "policy_token"] = "column",
    handle_zero_tail: bool = True,
    eps: float = 1e-8,
) -> AdvantageOutput:
    """Optimal token baseline (OTB): a per-token baseline weighted by the gradient's variance.

    ``G_t = sum_{k >= t} R_k M_k`` (reward-to-go). Per token, ``w_t = 1 - 2 pi(y_t) + sum_v pi(v)^2
    = ||onehot(y_t) - pi_t||^2``, the squared norm of the logit-gradient of ``log pi(y_t)``
    (times ``rho_t^2`` with importance weights); ``W_t = sum_{k <= t} w_k M_k``. Per group and
    token position t: ``B_t = sum_i G_{i,t} W_{i,t} M_{i,t} / (sum_i W_{i,t} M_{i,t} + eps)``, the
    baseline minimizing the variance of ``sum_t grad log pi_t (G_t - B_t)`` when the per-token
    gradient norms are taken as ``W``. ``A_t = (G_t - B_t) M_t``; ``returns = G``.

    ``align="column"``: t is the absolute response position (verl's ``optimal_token_baseline``).
    ``align="policy_token"``: t counts policy tokens (each row's ``M = 1`` tokens compacted to the
    left first), so tool tokens inside a multi-turn response do not shift rows against each other
    (verl's ``tir_optimal_token_baseline``).

    ``handle_zero_tail``: where one row of a group is strictly the longest, its positions past the
    second-longest row have no other row to compare with, and ``B_t`` would equal its own return;
    set its baseline there to 0 instead (verl's default, as here).

    Note: ``B_t`` includes row i's own return (no leave-one-out), a small bias of order
    ``W_i / sum W``, as in verl.

    Args:
        token_rewards: float[B, L] -- rewards on response tokens.
        response_mask: bool[B, L] -- 1 on policy tokens (holes allowed: tool tokens).
        group_ids: int[B] (or strings) -- responses to the same prompt.
        log_probs: float[B, L] -- log pi_old(y_t) of the sampled token (<= 0).
        sum_pi_squared: float[B, L] -- ``sum_v pi_old(v | s_t)^2`` in [0, 1] (verl:
            ``actor.calculate_sum_pi_squared=True``).
        is_weights: float[B, L] -- optional rollout importance weights rho (``w_t *= rho_t^2``).
        align: "column" or "policy_token" (above).
        handle_zero_tail: as above.
        eps: added to the denominator (verl: 1e-8).

    Returns:
        AdvantageOutput(advantages float[B, L], returns float[B, L], metrics); 0 off the mask.

    Differences from verl: a group with a single (non-empty) row gets advantage 0 (verl: baseline
    0, the return itself); a (group, position) whose returns are all equal gets exactly 0 (verl:
    ``G eps / (W + eps)``); rows with no policy token are left out of every group (verl does so
    for "policy_token" only).
    """
    if align not in ("column", "policy_token"):
        raise RangeError(f"align must be 'column' or 'policy_token'; got {align!r}")
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(token_rewards)
    r = as_float(token_rewards, "token_rewards", ndim=2, finite=False)
    b, length = r.shape
    check_nonempty(b, "token_rewards")
    dev = r.device
    m = as_mask(
        response_mask,
        "response_mask",
        (b, length),
        device=dev,
        prefix=False,
        allow_empty_rows=True,
        like="token_rewards",
    )
    groups = as_group_index(group_ids, "group_ids", b, device=dev)
    lp = as_float(log_probs, "log_probs", shape=(b, length), device=dev, finite=False)
    sp = as_float(sum_pi_squared, "sum_pi_squared", shape=(b, length), device=dev, finite=False)
    rho = (
        None if is_weights is None else as_float(is_weights, "is_weights", shape=(b, length), device=dev, finite=False)
    )
    from .. import _kernels
    from ._otb_kernel import kernels

    k = kernels() if dev.type == "cpu" and _kernels.BACKEND != "torch" else None
    if k is not None:
        adv64 = np.empty((b, length))
        ret64 = np.empty((b, length))
        rho_np = rho.contiguous().numpy() if rho is not None else np.zeros((1, 1))
        err, i, j, sums = k(
            r.contiguous().numpy(),
            m.contiguous().numpy(),
            lp.contiguous().numpy(),
            sp.contiguous().numpy(),
            rho_np,
            rho is not None,
            groups.index.contiguous().numpy(),
            groups.num_groups,
            align == "policy_token",
            bool(handle_zero_tail),
            float(eps),
            adv64,
            ret64,
        )
        if err:
            _otb_error(err, i, j, r, lp, sp, rho)
        n_tok = float(sums[4])
        mean_a = sums[1] / n_tok if n_tok else 0.0
        metrics = {
            "num_episodes": float(b),
            "num_tokens": n_tok,
            "otb/w_mean": float(sums[0]) / n_tok if n_tok else 0.0,
            "advantages/mean": float(mean_a),
            "advantages/std": float(max(sums[2] / n_tok - mean_a * mean_a, 0.0) ** 0.5) if n_tok else 0.0,
            "returns/mean": float(sums[3]) / n_tok if n_tok else 0.0,
        }
        adv_t, ret_t = torch.from_numpy(adv64), torch.from_numpy(ret64)
        return AdvantageOutput(
            backend.out(_finite_output(adv_t.to(r.dtype), "token_rewards")), backend.out(ret_t.to(r.dtype)), metrics
        )
    lp, sp = lp.to(torch.float64), sp.to(torch.float64)
    check_finite(r, "token_rewards", where=m, hint=" on policy tokens")
    check_finite(lp, "log_probs", where=m, hint=" on policy tokens")
    check_finite(sp, "sum_pi_squared", where=m, hint=" on policy tokens")
    if bool(((lp > 1e-6) & m).any()):
        i, j = torch.nonzero((lp > 1e-6) & m)[0].tolist()
        _otb_error(2, i, j, r, lp, sp, rho)
    if bool((((sp < 0) | (sp > 1 + 1e-6)) & m).any()):
        i, j = torch.nonzero(((sp < 0) | (sp > 1 + 1e-6)) & m)[0].tolist()
        _otb_error(3, i, j, r, lp, sp, rho)
    mf = m.to(torch.float64)
    r64 = r.to(torch.float64) * mf
    returns = r64.flip(-1).cumsum(-1).flip(-1)
    w = 1.0 - 2.0 * torch.exp(lp) + sp
    if rho is not None:
        rho = rho.to(torch.float64)
        check_finite(rho, "is_weights", where=m, hint=" on policy tokens")
        w = w * rho * rho
    w = torch.where(m, w, torch.zeros_like(w))
    cum_w = w.cumsum(-1)
    counts = m.sum(dim=1)
    if align == "policy_token":
        g_c, w_c, m_c, pos = _compact(returns, cum_w, m, counts)
        base = _otb_baseline(g_c, w_c, m_c, counts, groups, handle_zero_tail, eps)
        adv_c = (g_c - base) * m_c
        adv = torch.zeros_like(returns)
        rows, cols = torch.nonzero(m, as_tuple=True)
        adv[rows, cols] = adv_c[rows, pos]
    else:
        base = _otb_baseline(returns, cum_w, m, counts, groups, handle_zero_tail, eps)
        adv = (returns - base) * mf
    metrics = {
        "num_episodes": float(b),
        "num_tokens": float(counts.sum()),
        "otb/w_mean": float(w[m].mean()) if bool(m.any()) else 0.0,
        "advantages/mean": float(adv[m].mean()) if bool(m.any()) else 0.0,
        "advantages/std": float(adv[m].std(unbiased=False)) if bool(m.any()) else 0.0,
        "returns/mean": float(returns[m].mean()) if bool(m.any()) else 0.0,
    }
    return AdvantageOutput(
        backend.out(_finite_output(adv.to(r.dtype), "token_rewards")), backend.out(returns.to(r.dtype)), metrics
    )


def _otb_error(code: int, i: int, j: int, r, lp, sp, rho) -> None:
    from ..errors import NonFiniteError

    if code == 1 or code == 4:
        for name, x in (("token_rewards", r), ("log_probs", lp), ("sum_pi_squared", sp), ("is_weights", rho)):
            if x is not None and not math.isfinite(float(x[i, j])):
                raise NonFiniteError(f"{name}[{i}, {j}] is {float(x[i, j])}; expected finite numbers on policy tokens")
    if code == 2:
        raise RangeError(f"log_probs[{i}, {j}] = {float(lp[i, j])}; log-probabilities are <= 0")
    raise RangeError(f"sum_pi_squared[{i}, {j}] = {float(sp[i, j])}; sum_v pi(v)^2 lies in [0, 1]")


def _compact(returns, cum_w, m, counts):
    """Move each row's policy tokens to the left: ``[B, max count]`` arrays and the compact position."""
    b = returns.shape[0]
    width = max(int(counts.max()), 1)
    pos = (m.to(torch.int64).cumsum(-1) - 1)[m]
    rows, cols = torch.nonzero(m, as_tuple=True)
    g_c = torch.zeros((b, width), dtype=returns.dtype, device=returns.device)
    w_c = torch.zeros_like(g_c)
    g_c[rows, pos] = returns[rows, cols]
    w_c[rows, pos] = cum_w[rows, cols]
    m_c = torch.arange(width, device=returns.device)[None, :] < counts[:, None]
    return g_c, w_c, m_c, pos


def _otb_baseline(g, cum_w, m, counts, groups: GroupIndex, handle_zero_tail: bool, eps: float) -> torch.Tensor:
    """The shared per-(group, position) baseline of :func:`optimal_token_baseline`, ``[B, L]``."""
    b, length = g.shape
    dev = g.device
    nonempty = counts > 0
    gi = torch.where(nonempty, groups.index, torch.full_like(groups.index, groups.num_groups))  # empty rows: own slot
    slots = groups.num_groups + 1
    mf = m.to(torch.float64)
    num = torch.zeros((slots, length), dtype=torch.float64, device=dev).index_add_(0, gi, g * cum_w * mf)
    den = torch.zeros((slots, length), dtype=torch.float64, device=dev).index_add_(0, gi, cum_w * mf)
    base = (num / (den + eps)).index_select(0, gi)
    # exact zero where every present return of the (group, position) is equal, with >= 2 present
    big = torch.finfo(torch.float64).max
    hi = torch.full((slots, length), -big, dtype=torch.float64, device=dev)
    lo = torch.full((slots, length), big, dtype=torch.float64, device=dev)
    gi2 = gi[:, None].expand(b, length)
    hi = hi.scatter_reduce(0, gi2, torch.where(m, g, torch.full_like(g, -big)), reduce="amax")
    lo = lo.scatter_reduce(0, gi2, torch.where(m, g, torch.full_like(g, big)), reduce="amin")
    n_at = torch.zeros((slots, length), dtype=torch.float64, device=dev).index_add_(0, gi, mf)
    flat = ((hi == lo) & (n_at >= 2)).index_select(0, gi)
    base = torch.where(flat, g, base)
    # groups of one (non-empty row): no baseline comparison -> advantage 0 (base = own return)
    size = torch.zeros(slots, dtype=torch.int64, device=dev).index_add_(0, gi, nonempty.to(torch.int64))
    single = (size.index_select(0, gi) <= 1)[:, None]
    base = torch.where(single, g, base)
    if handle_zero_tail:
        lengths = counts.to(torch.int64)
        top = torch.full((slots,), -1, dtype=torch.int64, device=dev).scatter_reduce(0, gi, lengths, reduce="amax")
        is_top = lengths == top.index_select(0, gi)
        n_top = torch.zeros(slots, dtype=torch.int64, device=dev).index_add_(0, gi, is_top.to(torch.int64))
        second = torch.full((slots,), -1, dtype=torch.int64, device=dev).scatter_reduce(
            0, gi, torch.where(is_top, torch.full_like(lengths, -1), lengths), reduce="amax"
        )
        tail_row = is_top & (n_top.index_select(0, gi) == 1) & ~single[:, 0] & nonempty
        start = second.index_select(0, gi)
        cols = torch.arange(length, device=dev)[None, :]
        base = torch.where(tail_row[:, None] & (cols >= start[:, None]), torch.zeros_like(base), base)
    return base


# ------------------------------------------------------------------------------ registry adapters


def _scores(ep) -> tuple[Any, Any, dict[str, float]]:
    """(scores[B], present[B] or None, metrics naming the source): outcome, else the sum of the
    components, else the sum of the per-step rewards (the registry's usual rule)."""
    if ep.outcomes is not None:
        return ep.outcomes, ep.outcome_present, {"input/score_from_outcome": 1.0}
    if ep.components is not None:
        c, p = _np(ep.components), _np(ep.component_present)
        return np.where(p, c, 0.0).sum(axis=1), p.any(axis=1), {"input/score_from_components": 1.0}
    return ep.returns(), None, {"input/score_from_rewards": 1.0}


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _per_episode(ep, key: str, default: Any = None) -> Any:
    """A per-episode value from ``episodes.extras[key]``: ``[B]``, or ``[B, T]`` read at the last step."""
    if key not in ep.extras:
        if default is not None:
            return default
        raise MissingColumnError(f"this method needs a per-episode {key!r} column (episodes.extras[{key!r}])")
    x = _np(ep.extras[key])
    if x.ndim == 2:
        x = x[np.arange(ep.num_episodes), _np(ep.lengths) - 1]
    return x.astype(np.float64)


def _to_steps(ep, out: AdvantageOutput, meta: dict[str, float]) -> AdvantageOutput:
    from .tokens import broadcast_to_steps

    adv = out.advantages
    steps = broadcast_to_steps(adv if not ep.is_torch else torch.as_tensor(adv), ep.mask)
    return AdvantageOutput(steps, None, {**out.metrics, **meta})


_GROUP_NEEDS = ("outcomes|components|rewards", "group_ids")


@register_method(
    "remax",
    family="advantage",
    summary="ReMax: the reward of a greedy decode of the same prompt as the baseline",
    needs=("outcomes|components|rewards", "extras.greedy_reward"),
    kind="advantages",
    source="Li et al. 2023, arXiv 2310.10505; verl compute_remax_outcome_advantage",
)
def _run_remax(episodes, *, key: str = "greedy_reward") -> AdvantageOutput:
    r, p, meta = _scores(episodes)
    out = remax(_np(r), _per_episode(episodes, key), present=None if p is None else _np(p))
    return _to_steps(episodes, out, meta)


@register_method(
    "opo",
    family="advantage",
    summary="OPO: reward minus the length-weighted group mean (optimal baseline), no std",
    needs=(*_GROUP_NEEDS, "extras.length?"),
    kind="advantages",
    source="Hao et al. 2025, arXiv 2505.23585; verl compute_opo_outcome_advantage",
)
def _run_opo(episodes, *, key: str = "length") -> AdvantageOutput:
    r, p, meta = _scores(episodes)
    lengths = _per_episode(episodes, key, default=_np(episodes.lengths).astype(np.float64))
    return _to_steps(
        episodes, opo(_np(r), _np(episodes.group_ids), lengths, present=None if p is None else _np(p)), meta
    )


@register_method(
    "grpo_passk",
    family="advantage",
    summary="GRPO pass@k: only each group's best response learns, by its margin over the runner-up",
    needs=_GROUP_NEEDS,
    kind="advantages",
    source="Chen et al. 2025, arXiv 2503.19595; verl compute_grpo_passk_outcome_advantage",
)
def _run_passk(episodes, *, std_scale: Literal["group", "none"] = "group", eps: float = 1e-6) -> AdvantageOutput:
    r, p, meta = _scores(episodes)
    out = grpo_passk(
        _np(r), _np(episodes.group_ids), std_scale=std_scale, eps=eps, present=None if p is None else _np(p)
    )
    return _to_steps(episodes, out, meta)


@register_method(
    "gpg",
    family="advantage",
    summary="GPG: group-centred reward scaled by batch size / number of non-zero rewards",
    needs=_GROUP_NEEDS,
    kind="advantages",
    source="Chu et al. 2025, arXiv 2504.02546; verl compute_gpg_outcome_advantage",
)
def _run_gpg(episodes, *, f_norm: float = 1.0) -> AdvantageOutput:
    r, p, meta = _scores(episodes)
    return _to_steps(
        episodes, gpg(_np(r), _np(episodes.group_ids), f_norm=f_norm, present=None if p is None else _np(p)), meta
    )


@register_method(
    "maxrl",
    family="advantage",
    summary="MaxRL: (r - group mean) / group mean, for rewards >= 0 (success rates)",
    needs=_GROUP_NEEDS,
    kind="advantages",
    source="SkyRL compute_maxrl_advantage",
)
def _run_maxrl(episodes, *, eps: float = 1e-6) -> AdvantageOutput:
    r, p, meta = _scores(episodes)
    return _to_steps(
        episodes, maxrl(_np(r), _np(episodes.group_ids), eps=eps, present=None if p is None else _np(p)), meta
    )


@register_method(
    "optimal_token_baseline",
    family="advantage",
    summary="Optimal token baseline: per-token baseline weighted by the log-prob gradient's variance",
    needs=("rewards", "group_ids", "extras.log_probs", "extras.sum_pi_squared"),
    kind="advantages",
    source="verl compute_optimal_token_baseline_advantage (optimal_token_baseline)",
)
def _run_otb(episodes, *, handle_zero_tail: bool = True, eps: float = 1e-8) -> AdvantageOutput:
    """Steps are tokens: per-step rewards, ``log_probs`` and ``sum_pi_squared`` extras."""
    for key in ("log_probs", "sum_pi_squared"):
        if key not in episodes.extras:
            raise MissingColumnError(
                f"method 'optimal_token_baseline' needs a per-token {key!r} column (episodes.extras[{key!r}])"
            )
    out = optimal_token_baseline(
        episodes.rewards,
        episodes.mask,
        _np(episodes.group_ids),
        episodes.extras["log_probs"],
        episodes.extras["sum_pi_squared"],
        handle_zero_tail=handle_zero_tail,
        eps=eps,
    )
    return out
