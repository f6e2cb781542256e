"""KL regularization to a reference policy: per-token estimators and where to put them.

Per token, with ``d_t = log pi(y_t) - log pi_ref(y_t)`` on the sampled token (Schulman 2020,
http://joschu.net/blog/kl-approx.html), ``kind`` selects:

* ``k1`` (alias ``kl``): ``d``; unbiased for ``KL(pi || ref)``, can be negative.
* ``abs``: ``|d|`` (not a KL estimate).
* ``k2`` (alias ``mse``): ``d^2 / 2``; ``KL + O(d^3)`` for close policies, always >= 0.
* ``k3`` (alias ``low_var_kl``): ``exp(-d) - 1 + d``; unbiased for ``KL(pi || ref)``, >= 0, low
  variance (``-d`` clamped to [-20, 20] and the value to [-10, 10], as verl).
* ``full``: ``sum_v pi(v) (log pi(v) - log ref(v))`` from full-vocabulary log-probs ``[B, L, V]``:
  the exact per-token KL.

A ``"+"`` suffix (``k1+``, ``k3+``, ``low_var_kl+``) keeps the value of the base estimator but
takes the gradient of k2 (straight-through: ``k2 - k2.detach() + base.detach()``), as verl's
``kl_penalty``.

Where the estimate goes decides which gradient you get (docs/estimators.md, "KL: which
placement gives which gradient"; checked by exact enumeration in tests/advantage/test_kl.py):

* **in the reward** (:func:`kl_in_reward`; verl ``use_kl_in_reward``): ``r_t - beta k_t`` computed
  from the sampling policy (no gradient through k). With k1 and returns-to-go, the policy
  gradient estimator is unbiased for ``grad KL(pi || ref)`` of the whole sequence. k2/k3 in the
  reward are not (their score-function gradients differ from the KL's).
* **in the loss** (:func:`kl_in_loss`; verl ``use_kl_loss``): ``beta * mean_t k_t`` differentiated
  through the current log-probs. k2 (or any ``+`` kind) gives ``grad KL(pi || ref)`` per visited
  state; k3 gives ``grad KL(ref || pi)`` (the forward KL); k1 gives 0 in expectation. Either way
  the loss form ignores how a token changes the states (and so the KL) that follow it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from .._arrays import ArrayLike, as_float, as_mask, check_finite, check_positive, check_real, mask_and_lengths, shape_bt
from ..errors import DtypeError, RangeError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = ["KL_KINDS", "kl_penalty", "kl_in_reward", "kl_in_loss", "adaptive_kl_coef"]

KL_KINDS = (
    "k1",
    "kl",
    "abs",
    "k2",
    "mse",
    "k3",
    "low_var_kl",
    "full",
    "k1+",
    "kl+",
    "abs+",
    "k2+",
    "mse+",
    "k3+",
    "low_var_kl+",
)

AggMode = Literal["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def _tensor(x: ArrayLike, name: str) -> tuple[torch.Tensor, bool]:
    """A float tensor that keeps autograd for torch input (``as_float`` detaches); ``(t, was_torch)``."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise DtypeError(f"{name} must be a floating tensor of log-probabilities; got dtype {x.dtype}")
        return x, True
    return as_float(x, name, finite=False), False


def kl_penalty(log_probs: ArrayLike, ref_log_probs: ArrayLike, *, kind: str = "k1") -> ArrayLike:
    """Per-token KL estimate between the policy and the reference, on the sampled tokens.

    Args:
        log_probs: float[B, L] -- ``log pi(y_t)`` of the sampled token (current or sampling
            policy); for ``kind="full"``: float[B, L, V], the full log-softmax over the vocabulary.
        ref_log_probs: float[B, L] (or [B, L, V] for "full") -- the reference policy's.
        kind: one of :data:`KL_KINDS` (module docstring).

    Returns:
        float[B, L], the same kind of array as ``log_probs``. Torch inputs keep their autograd
        graph (use it in a loss); NumPy in, NumPy out.

    Agrees with verl 0.9.1's ``kl_penalty`` in value and, for torch inputs, gradient (tested),
    and adds ``"full"`` (verl raises NotImplementedError).

    Example (d = log 0.5 - log 0.25 = log 2):
        >>> import numpy as np
        >>> lp, ref = np.log([[0.5]]), np.log([[0.25]])
        >>> [round(float(kl_penalty(lp, ref, kind=k)[0, 0]), 4) for k in ("k1", "k2", "k3")]
        [0.6931, 0.2402, 0.1931]
    """
    if kind not in KL_KINDS:
        raise RangeError(f"kind must be one of {', '.join(KL_KINDS)}; got {kind!r}")
    lp, is_torch = _tensor(log_probs, "log_probs")
    ref, _ = _tensor(ref_log_probs, "ref_log_probs")
    ref = ref.to(device=lp.device)
    if lp.shape != ref.shape:
        raise ShapeError(
            f"ref_log_probs has shape {tuple(ref.shape)} but log_probs has {tuple(lp.shape)}; expected the same"
        )
    if kind == "full":
        if lp.ndim < 1 or lp.shape[-1] < 2:
            raise ShapeError(
                f"kind='full' needs the full log-softmax over the vocabulary, shape [B, L, V]; got {tuple(lp.shape)}"
            )
        out = (lp.exp() * (lp - ref.to(lp.dtype))).sum(-1)
    else:
        base = kind[:-1] if kind.endswith("+") else kind
        out = _forward(lp, ref.to(lp.dtype), base)
        if kind.endswith("+") and base not in ("k2", "mse"):
            k2 = 0.5 * (lp - ref.to(lp.dtype)).square()
            out = k2 - k2.detach() + out.detach()
    return out if is_torch else out.detach().numpy()


def _forward(lp: torch.Tensor, ref: torch.Tensor, kind: str) -> torch.Tensor:
    if kind in ("k1", "kl"):
        return lp - ref
    if kind == "abs":
        return (lp - ref).abs()
    if kind in ("k2", "mse"):
        return 0.5 * (lp - ref).square()
    # k3 / low_var_kl: r = ref / pi; r - log r - 1, clamped as in verl (for numerical stability)
    x = torch.clamp(ref - lp, min=-20, max=20)
    return torch.clamp(torch.exp(x) - x - 1, min=-10, max=10)


def kl_in_reward(
    token_rewards: ArrayLike,
    log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    response_mask: ArrayLike,
    *,
    coef: float,
    kind: str = "k1",
) -> RewardOutput:
    """KL as a per-token penalty in the reward: ``r_t - coef * k_t * M_t`` (verl ``apply_kl_penalty``).

    Use the *sampling* policy's log-probs (verl: ``old_log_probs``): the penalty is data, not
    differentiated. Apply it before the advantage estimator (outcome estimators that sum the
    token rewards then see ``score - coef * sum_t k_t``). With k1 and returns-to-go the policy
    gradient is unbiased for ``grad [E R - coef KL(pi || ref)]``; see the module docstring.

    Args:
        token_rewards: float[B, L] -- the task's per-token rewards (verl: ``token_level_scores``).
        log_probs, ref_log_probs: float[B, L] -- sampling and reference log-probs of the sampled tokens.
        response_mask: bool[B, L] -- 1 on policy tokens (holes allowed).
        coef: beta (verl ``kl_ctrl.kl_coef``, default 0.001).
        kind: KL estimator (verl default "kl" = k1).

    Returns:
        RewardOutput(rewards float[B, L], metrics) with ``kl/mean`` (batch mean of the per-row
        masked mean, verl's ``actor/reward_kl_penalty``, the ``current_kl`` its adaptive controller
        uses) and ``kl/coef``.

    Example (one token, d = log 2, coef 0.1: 1 - 0.1 log 2):
        >>> import numpy as np
        >>> out = kl_in_reward([[1.0]], np.log([[0.5]]), np.log([[0.25]]), [[1]], coef=0.1)
        >>> round(float(out.rewards[0, 0]), 4), round(out.metrics["kl/mean"], 4)
        (0.9307, 0.6931)
    """
    coef = check_real(coef, "coef")
    if kind == "full":
        raise RangeError(
            "kind='full' needs full-vocabulary log-probs; compute kl_penalty(..., kind='full') and subtract it"
        )
    r = as_float(token_rewards, "token_rewards", ndim=2, finite=False)
    shape = shape_bt(r)
    m, lengths = mask_and_lengths(
        response_mask,
        "response_mask",
        shape,
        device=r.device,
        prefix=False,
        allow_empty_rows=True,
        like="token_rewards",
    )
    lp = as_float(log_probs, "log_probs", shape=shape, device=r.device, finite=False)
    ref = as_float(ref_log_probs, "ref_log_probs", shape=shape, device=r.device, dtype=lp.dtype, finite=False)
    check_finite(r, "token_rewards", where=m, hint=" on policy tokens")
    kld = kl_penalty(lp, ref, kind=kind)
    if kld.dtype != r.dtype:
        kld = kld.to(r.dtype)  # in the rewards' dtype, as verl
    kld = torch.where(m, kld, torch.zeros((), dtype=kld.dtype, device=kld.device))
    row_kl = kld.sum(-1, dtype=torch.float64)
    if not bool(torch.isfinite(row_kl).all()):  # a NaN/inf log-prob on a policy token: say which
        check_finite(lp, "log_probs", where=m, hint=" on policy tokens")
        check_finite(ref, "ref_log_probs", where=m, hint=" on policy tokens")
    out = torch.add(r, kld, alpha=-coef)
    row_n = lengths.to(torch.float64)
    per_row = row_kl / (row_n + 1e-8)
    metrics = {
        "kl/mean": float(per_row.mean()),
        "kl/coef": float(coef),
        "kl/token_mean": float(row_kl.sum() / row_n.sum().clamp(min=1)),
    }
    return RewardOutput(out if isinstance(token_rewards, torch.Tensor) else out.numpy(), metrics)


def kl_in_loss(
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    response_mask: Any,
    *,
    coef: float,
    kind: str = "k3",
    agg: AggMode = "token-mean",
) -> torch.Tensor:
    """KL as a loss term: ``coef * agg(k_t)``, differentiated through the current log-probs (verl ``use_kl_loss``).

    Args:
        log_probs: float[B, L] torch tensor with gradient -- the *current* policy's log-probs of
            the sampled tokens (for ``kind="full"``: [B, L, V] log-softmax).
        ref_log_probs: float[B, L] (or [B, L, V]) -- the reference's (no gradient needed).
        response_mask: bool[B, L] -- 1 on policy tokens.
        coef: verl ``actor.kl_loss_coef`` (default 0.001).
        kind: verl ``actor.kl_loss_type`` (default "low_var_kl" = k3). k3 gives the gradient of
            the *forward* KL(ref || pi) per state, k2 and the "+" kinds the reverse KL(pi || ref),
            k1 zero in expectation: see the module docstring.
        agg: verl's ``agg_loss`` modes (single process): "token-mean" (sum over valid tokens /
            their number), "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
            "seq-mean-token-sum-norm" (/ L).

    Returns:
        A scalar tensor (add it to the policy loss).
    """
    coef = check_real(coef, "coef")
    if not isinstance(log_probs, torch.Tensor):
        raise DtypeError(
            "kl_in_loss needs log_probs as a torch tensor with gradient (a loss term); use kl_penalty for arrays"
        )
    k = kl_penalty(log_probs, torch.as_tensor(ref_log_probs, device=log_probs.device), kind=kind)
    m = as_mask(
        response_mask,
        "response_mask",
        tuple(k.shape),
        device=k.device,
        prefix=False,
        allow_empty_rows=True,
        like="log_probs",
    )
    mf = m.to(k.dtype)
    masked = k * mf
    if agg == "token-mean":
        loss = masked.sum() / mf.sum().clamp(min=1)
    elif agg == "token-sum":
        loss = masked.sum()
    elif agg in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        rows = (mf.sum(-1) > 0).to(k.dtype)
        loss = (masked.sum(-1) * rows).sum() / rows.sum().clamp(min=1)
        if agg == "seq-mean-token-sum-norm":
            loss = loss / k.shape[-1]
    elif agg == "seq-mean-token-mean":
        n = mf.sum(-1)
        rows = (n > 0).to(k.dtype)
        loss = ((masked.sum(-1) / (n + 1e-8)) * rows).sum() / rows.sum().clamp(min=1)
    else:
        raise RangeError(
            f"agg must be 'token-mean', 'token-sum', 'seq-mean-token-sum', 'seq-mean-token-mean' or 'seq-mean-token-sum-norm'; got {agg!r}"
        )
    return coef * loss


def adaptive_kl_coef(coef: float, current_kl: float, *, target_kl: float, horizon: float, n_steps: int) -> float:
    """One update of the adaptive KL coefficient (Ziegler et al. 2019, arXiv 1909.08593; verl ``AdaptiveKLController``).

    ``coef * (1 + clip(current_kl / target_kl - 1, -0.2, 0.2) * n_steps / horizon)``: a
    proportional controller that raises beta when the measured KL is above target.

    Example (KL twice the target: +20% of n_steps / horizon = 0.5 -> x1.1):
        >>> round(adaptive_kl_coef(0.1, 0.2, target_kl=0.1, horizon=100, n_steps=50), 6)
        0.11
    """
    coef = check_real(coef, "coef")
    current_kl = check_real(current_kl, "current_kl")
    target_kl = check_positive(target_kl, "target_kl")
    horizon = check_positive(horizon, "horizon")
    steps = check_positive(n_steps, "n_steps", allow_zero=True)
    err = float(np.clip(current_kl / target_kl - 1, -0.2, 0.2))
    return coef * (1 + err * steps / horizon)


# ------------------------------------------------------------------------------ registry adapter


@register_method(
    "kl_in_reward",
    family="shaping",
    summary="Per-step reward minus coef * KL estimate to a reference policy (k1/k2/k3/abs)",
    needs=("rewards", "extras.log_probs", "extras.ref_log_probs"),
    kind="rewards",
    source="Schulman 2020 (KL approximations); verl apply_kl_penalty",
)
def _run_kl_in_reward(episodes, *, coef: float = 0.001, kind: str = "k1") -> RewardOutput:
    """Steps are tokens: ``log_probs`` / ``ref_log_probs`` per step in ``episodes.extras``."""
    from ..errors import MissingColumnError

    for key in ("log_probs", "ref_log_probs"):
        if key not in episodes.extras:
            raise MissingColumnError(
                f"method 'kl_in_reward' needs a per-step {key!r} column (episodes.extras[{key!r}])"
            )
    return kl_in_reward(
        episodes.rewards,
        episodes.extras["log_probs"],
        episodes.extras["ref_log_probs"],
        episodes.mask,
        coef=coef,
        kind=kind,
    )
