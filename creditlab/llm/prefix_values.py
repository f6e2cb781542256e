"""Monte Carlo values of resumed prefixes: VinePPO step advantages and SPO segment advantages.

Instead of a critic, sample K continuations from a prefix of the response and average their
rewards: ``V(prefix) = mean_j R(continuation_j)``, an unbiased estimate of the prefix's value under
the current policy. Where values are known, a segment (the text between two known prefixes)
gets ``A = rewards inside + V(end) - V(start)``. This module computes those advantages from the
continuations' returns you sampled (it does not sample).

* :func:`mc_values`: ``V`` and counts from ``[..., K]`` continuation returns (NaN = not sampled).
* :func:`vine_advantages` (VinePPO, Kazemnejad et al. 2024, arXiv 2410.01679;
  McGill-NLP/VinePPO ``_compute_step_advantages``): one value per reasoning step boundary,
  ``A_k = r_k + gamma V_{k+1} - V_k`` with ``V_T = 0`` after the last step.
* :func:`spo_cutpoints` / :func:`spo_advantages` (SPO-chain, Guo et al. 2025, arXiv 2505.23564;
  AIFrameResearch/SPO ``_compute_token_advantages``): values at low-probability cut points along
  the token sequence, the score at the last token; each segment's tokens get
  ``V(cut_k) - V(cut_{k-1})``, optionally only on low-probability tokens.

Broadcast VinePPO's per-step values to tokens with :func:`creditlab.broadcast_to_tokens` (each
token belongs to the step holding its first character, as VinePPO maps them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _kernels
from .._arrays import ArrayLike, Backend, as_float, as_mask, check_finite, check_unit
from .._steps import step_inputs
from ..errors import MissingColumnError, RangeError, ShapeError
from ..outputs import AdvantageOutput
from ..registry import register_method

__all__ = ["mc_values", "vine_advantages", "spo_cutpoints", "spo_advantages"]


def mc_values(continuation_returns: ArrayLike, mask: ArrayLike | None = None) -> tuple[ArrayLike, ArrayLike]:
    """Monte Carlo values: the mean return of the continuations sampled from each prefix.

    Args:
        continuation_returns: float[..., K] -- K continuation returns per prefix (NaN = not
            sampled).
        mask: bool[..., K] -- optional, False = not sampled.

    Returns:
        ``(values float[...], counts int64[...])``: NaN where no continuation was sampled (an
        unknown value), same array kind as the input.

    Example (9 continuations, 3 correct; a prefix that was not sampled):
        >>> import numpy as np
        >>> v, n = mc_values(np.array([[1.0] * 3 + [0.0] * 6, [np.nan] * 9]))
        >>> [round(x, 4) if x == x else None for x in v.tolist()], n.tolist()
        ([0.3333, None], [9, 0])
    """
    backend = Backend.of(continuation_returns)
    x = as_float(continuation_returns, "continuation_returns", finite=False).to(torch.float64)
    if x.ndim < 1:
        raise ShapeError("continuation_returns must have a last axis of K continuations")
    known = ~torch.isnan(x)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask, device=x.device).to(
            torch.bool
        )
        if m.shape != x.shape:
            raise ShapeError(f"mask has shape {tuple(m.shape)} but continuation_returns has {tuple(x.shape)}")
        known &= m
    check_finite(
        x,
        "continuation_returns",
        where=known,
        hint=" (NaN marks a continuation that was not sampled; inf is never accepted)",
    )
    n = known.sum(-1)
    total = torch.where(known, x, torch.zeros_like(x)).sum(-1)
    v = torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))
    return backend.out(v), backend.out(n)


def vine_advantages(
    step_rewards: ArrayLike,
    values: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    gamma: float = 1.0,
) -> AdvantageOutput:
    """VinePPO step advantages from Monte Carlo values of the state before each step.

    ``V_k`` is the value of the prefix *before* step k (k = 0: the prompt alone), ``V_T = 0``
    after the last step (the response ended). Unknown values (NaN: no continuation sampled) are
    filled backwards from the trajectory itself, ``V_k = r_k + gamma V_{k+1}`` (VinePPO fills the
    steps past ``max_step_for_value_estimation`` this way); an unknown value between known ones
    merges its step with the previous one (the unknown step gets advantage 0 and the previous
    step the two-step difference). Then ``A_k = r_k + gamma V_{k+1} - V_k``.

    Args:
        step_rewards: float[B, T] -- reward after step k (usually 0 except the score on the last step).
        values: float[B, T] -- MC value of the state before step k (NaN = unknown), e.g.
            ``mc_values(continuation_returns)[0]``.
        mask: bool[B, T] -- prefix mask of valid steps.
        gamma: discount (VinePPO: 1).

    Returns:
        AdvantageOutput(advantages float[B, T], returns = the filled values ``V`` float[B, T],
        metrics with ``vine/frac_values_known``); 0 on padding.

    Example (3 steps, score 1 at the end; V_0 = 0.5, V_1 = 0.8, V_2 unknown -> 0 + 1 = 1):
        >>> import numpy as np
        >>> out = vine_advantages(np.array([[0.0, 0.0, 1.0]]), np.array([[0.5, 0.8, np.nan]]))
        >>> [round(a, 4) for a in out.advantages[0].tolist()]   # 0.8 - 0.5, 1 - 0.8, 1 + 0 - 1
        [0.3, 0.2, 0.0]
    """
    gamma = check_unit(gamma, "gamma")
    s = step_inputs(step_rewards, mask=mask, rewards_name="step_rewards")
    v = as_float(values, "values", shape=s.shape, dtype=s.rewards.dtype, device=s.rewards.device, finite=False)
    known = ~torch.isnan(v) & s.mask
    check_finite(v, "values", where=known, hint=" (NaN marks an unknown value)")
    r = s.rewards
    x = torch.where(known, v, r)
    coef = torch.where(known, torch.zeros_like(r), torch.full_like(r, gamma))
    filled = _kernels.reverse_scan(x.contiguous(), coef.contiguous(), s.lengths)  # V_k, V_T = 0
    nxt = torch.zeros_like(filled)
    nxt[:, :-1] = filled[:, 1:]
    nxt = torch.where(
        torch.arange(s.shape[1], device=r.device)[None, :] < (s.lengths - 1)[:, None], nxt, torch.zeros_like(nxt)
    )
    adv = s.zero_pad(r + gamma * nxt - filled)
    n_valid = float(s.lengths.sum())
    metrics = {
        "num_episodes": float(s.shape[0]),
        "num_steps": n_valid,
        "vine/frac_values_known": float(known.sum()) / n_valid if n_valid else 0.0,
        "advantages/mean": float(adv[s.mask].to(torch.float64).mean()),
        "advantages/std": float(adv[s.mask].to(torch.float64).std(unbiased=False)),
    }
    return AdvantageOutput(s.backend.out(adv), s.backend.out(s.zero_pad(filled)), metrics)


def spo_cutpoints(
    log_probs: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    threshold: float = 0.9,
    interval: int = 5,
) -> tuple[ArrayLike, ArrayLike]:
    """SPO-chain cut points: where to resume the policy to estimate prefix values.

    The tokens sampled with probability below ``threshold`` are the decisions; a cut sits on the
    token *before* each of them (the prefix that ends just before the decision), and every
    ``interval``-th of those is kept (SPO: ``np.where(p < 0.9)[0] - 1`` then ``[::interval]``).
    A cut at -1 is the prompt alone.

    Args:
        log_probs: float[B, L] -- log-prob of each sampled response token.
        mask: bool[B, L] -- prefix mask of response tokens.
        threshold: probability below which a token is a decision (SPO: 0.9).
        interval: keep every interval-th cut (SPO configs: 1 to 10, default 5).

    Returns:
        ``(cuts bool[B, L], prompt_cut bool[B])``: sample continuations after token l where
        ``cuts[b, l]``, and from the prompt alone where ``prompt_cut[b]``.

    Example (probabilities 0.5, 0.95, 0.3, 0.2; interval 2 keeps the 1st and 3rd of the cuts -1, 1, 2):
        >>> import numpy as np
        >>> cuts, prompt = spo_cutpoints(np.log([[0.5, 0.95, 0.3, 0.2]]), interval=2)
        >>> cuts.tolist(), prompt.tolist()
        ([[False, False, True, False]], [True])
    """
    if not isinstance(interval, (int, np.integer)) or isinstance(interval, bool) or interval < 1:
        raise RangeError(f"interval must be an integer >= 1; got {interval!r}")
    if not 0.0 < float(threshold) <= 1.0:
        raise RangeError(f"threshold must lie in (0, 1]; got {threshold!r}")
    backend = Backend.of(log_probs)
    lp = as_float(log_probs, "log_probs", ndim=2, finite=False).to(torch.float64)
    b, length = lp.shape
    m = as_mask(mask, "mask", (b, length), device=lp.device, allow_empty_rows=True, like="log_probs")
    check_finite(lp, "log_probs", where=m, hint=" on response tokens")
    low = (torch.exp(lp) < threshold) & m
    rank = torch.cumsum(low.to(torch.int64), dim=1) - 1  # index of each decision among the row's decisions
    keep = low & (rank % int(interval) == 0)
    cuts = torch.zeros_like(keep)
    cuts[:, :-1] = keep[:, 1:]  # the cut is the token before the decision
    return backend.out(cuts), backend.out(keep[:, 0])


def spo_advantages(
    scores: ArrayLike,
    prefix_values: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    prompt_values: ArrayLike | None = None,
    log_probs: ArrayLike | None = None,
    prob_threshold: float = 0.9,
) -> AdvantageOutput:
    """SPO-chain token advantages from Monte Carlo values at cut points.

    The known values along row b are ``prompt_values[b]`` (the cut at -1, if given), the values
    at its cut points (``prefix_values`` not NaN), and ``scores[b]`` at its last token. Scanning
    left to right, a token with a known value gets ``V(token) - V(previous known)`` (0 when
    there is no previous one, i.e. the first cut without a prompt value); every other token
    takes the advantage of the next known token, so the segment ``(c_{k-1}, c_k]`` shares
    ``V(c_k) - V(c_{k-1})``. With ``log_probs``, tokens sampled with probability above
    ``prob_threshold`` get 0 (SPO's ``use_prob_mask``: only decisions carry credit).

    Args:
        scores: float[B] -- the final reward of each response.
        prefix_values: float[B, L] -- MC value of the prefix ending at token l (NaN = not a cut);
            a value on the last token is ignored (the score is the final value).
        mask: bool[B, L] -- prefix mask of response tokens.
        prompt_values: float[B] -- MC value of the prompt alone (the cut at -1; NaN / None = none).
        log_probs: float[B, L] -- for the probability mask (None = no mask).
        prob_threshold: see above (SPO: 0.9).

    Returns:
        AdvantageOutput(advantages float[B, L], returns = the known values on their tokens (NaN
        elsewhere), metrics); 0 on padding.

    Example (score 1; cut after token 1 with V 0.4; prompt value 0.5):
        >>> import numpy as np
        >>> nan = np.nan
        >>> out = spo_advantages([1.0], np.array([[nan, 0.4, nan, nan]]), prompt_values=[0.5])
        >>> [round(a, 4) for a in out.advantages[0].tolist()]   # tokens 0-1: 0.4 - 0.5; 2-3: 1 - 0.4
        [-0.1, -0.1, 0.6, 0.6]
    """
    backend = Backend.of(scores, prefix_values)
    pv = as_float(prefix_values, "prefix_values", ndim=2, finite=False).to(torch.float64)
    b, length = pv.shape
    m, lengths = _mask_and_lengths(mask, (b, length), pv.device)
    sc = as_float(scores, "scores", shape=(b,), device=pv.device).to(torch.float64)
    cols = torch.arange(length, device=pv.device)[None, :]
    last = cols == (lengths - 1)[:, None]
    known = ~torch.isnan(pv) & m & ~last
    check_finite(pv, "prefix_values", where=known, hint=" (NaN marks a token that is not a cut)")
    vals = torch.where(known, pv, torch.zeros_like(pv))
    vals = torch.where(last, sc[:, None].expand(b, length), vals)
    known = known | last
    if prompt_values is None:
        base0 = torch.full((b,), float("nan"), dtype=torch.float64, device=pv.device)
    else:
        base0 = as_float(prompt_values, "prompt_values", shape=(b,), device=pv.device, finite=False).to(torch.float64)
        if bool(torch.isinf(base0).any()):
            raise RangeError("prompt_values holds inf; use NaN (or None) for 'no prompt value'")
    # previous known value for each known token: shift the known values right within the row
    idx = torch.where(known, cols.expand(b, length), torch.full((b, length), -1, device=pv.device))
    prev_idx = torch.cummax(torch.cat([torch.full((b, 1), -1, device=pv.device), idx[:, :-1]], dim=1), dim=1).values
    prev_val = torch.where(
        prev_idx >= 0, torch.gather(vals, 1, prev_idx.clamp(min=0)), base0[:, None].expand(b, length)
    )
    own = torch.where(known & ~torch.isnan(prev_val), vals - prev_val, torch.zeros_like(vals))
    own = torch.where(known, own, torch.zeros_like(own))
    # every token takes the advantage of the next known token (backward fill)
    nxt_idx = torch.where(known, cols.expand(b, length), torch.full((b, length), length, device=pv.device))
    nxt_idx = torch.flip(torch.cummin(torch.flip(nxt_idx, [1]), dim=1).values, [1])
    adv = torch.gather(own, 1, nxt_idx.clamp(max=length - 1))
    if log_probs is not None:
        lp = as_float(log_probs, "log_probs", shape=(b, length), device=pv.device, finite=False).to(torch.float64)
        check_finite(lp, "log_probs", where=m, hint=" on response tokens")
        adv = torch.where(torch.exp(lp) > prob_threshold, torch.zeros_like(adv), adv)
    adv = torch.where(m, adv, torch.zeros_like(adv))
    n_cuts = (known & ~last).sum(1).to(torch.float64)
    metrics = {
        "num_episodes": float(b),
        "spo/cuts_mean": float(n_cuts.mean()),
        "spo/frac_with_prompt_value": float((~torch.isnan(base0)).to(torch.float64).mean()),
        "advantages/mean": float(adv[m].mean()) if bool(m.any()) else 0.0,
        "advantages/std": float(adv[m].std(unbiased=False)) if bool(m.any()) else 0.0,
    }
    known_vals = torch.where(known & m, vals, torch.full_like(vals, float("nan")))
    return AdvantageOutput(backend.out(adv), backend.out(known_vals), metrics)


def _mask_and_lengths(mask: Any, shape: tuple[int, int], device: torch.device):
    from .._arrays import mask_and_lengths

    return mask_and_lengths(mask, "mask", shape, device=device, like="prefix_values")


# ------------------------------------------------------------------------------ registry adapters


@register_method(
    "vineppo",
    family="llm",
    summary="VinePPO: step advantage r + V(next) - V from Monte Carlo values of resumed prefixes",
    needs=("rewards|outcomes", "extras.mc_values|extras.mc_returns"),
    kind="advantages",
    source="Kazemnejad et al. 2024, arXiv 2410.01679 (McGill-NLP/VinePPO)",
)
def _run_vineppo(episodes, *, gamma: float = 1.0) -> AdvantageOutput:
    """Steps are reasoning steps; ``mc_values`` [B, T] (NaN = unknown) or ``mc_returns`` [B, T, K] extras;
    the outcome (if any) is added to the last step's reward."""
    if "mc_values" in episodes.extras:
        v = episodes.extras["mc_values"]
    elif "mc_returns" in episodes.extras:
        v = mc_values(episodes.extras["mc_returns"])[0]
    else:
        raise MissingColumnError(
            "method 'vineppo' needs episodes.extras['mc_values'] ([B, T]) or ['mc_returns'] ([B, T, K])"
        )
    r = _np(episodes.rewards).astype(np.float64).copy()
    if episodes.outcomes is not None:
        o = np.where(_np(episodes.outcome_present), _np(episodes.outcomes), 0.0)
        r[np.arange(episodes.num_episodes), _np(episodes.lengths) - 1] += o
    return _batch_kind(episodes, vine_advantages(r, _np(v), mask=_np(episodes.mask), gamma=gamma))


@register_method(
    "spo",
    family="llm",
    summary="SPO-chain: segment advantages V(cut) - V(previous cut) from Monte Carlo values at cut tokens",
    needs=("outcomes|rewards", "extras.prefix_values", "extras.prompt_value?", "extras.log_probs?"),
    kind="advantages",
    source="Guo et al. 2025, arXiv 2505.23564 (AIFrameResearch/SPO)",
)
def _run_spo(episodes, *, prob_mask: bool = True, prob_threshold: float = 0.9) -> AdvantageOutput:
    """Steps are tokens: ``prefix_values`` [B, T] (NaN = not a cut), optional ``prompt_value``
    ([B] or [B, T] read at step 0) and ``log_probs`` (the probability mask) extras."""
    if "prefix_values" not in episodes.extras:
        raise MissingColumnError("method 'spo' needs episodes.extras['prefix_values'] ([B, T], NaN where no cut)")
    if episodes.outcomes is not None:
        scores = np.where(_np(episodes.outcome_present), _np(episodes.outcomes), 0.0)
    else:
        scores = _np(episodes.returns())
    prompt = None
    if "prompt_value" in episodes.extras:
        pv = _np(episodes.extras["prompt_value"]).astype(np.float64)
        prompt = pv[:, 0] if pv.ndim == 2 else pv
    lp = _np(episodes.extras["log_probs"]) if prob_mask and "log_probs" in episodes.extras else None
    out = spo_advantages(
        scores,
        _np(episodes.extras["prefix_values"]).astype(np.float64),
        mask=_np(episodes.mask),
        prompt_values=prompt,
        log_probs=lp,
        prob_threshold=prob_threshold,
    )
    return _batch_kind(episodes, out)


def _batch_kind(ep, out: AdvantageOutput) -> AdvantageOutput:
    """Results in the array kind of the batch (torch batches get tensors on the batch's device)."""
    if not ep.is_torch:
        return out
    dev = ep.rewards.device
    return AdvantageOutput(torch.as_tensor(out.advantages).to(dev), torch.as_tensor(out.returns).to(dev), out.metrics)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
