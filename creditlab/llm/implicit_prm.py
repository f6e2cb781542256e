"""Implicit process rewards: PRIME (Cui et al. 2025, arXiv 2502.01456) and OPRL / iStar
(Liu et al. 2025, arXiv 2509.19199).

An implicit PRM is a causal LM ``pi_phi`` compared with a reference ``pi_ref``; its reward for a
response token is ``r_t = beta * (log pi_phi(y_t | .) - log pi_ref(y_t | .))``. Trained only on
outcome labels, these token rewards become a dense process reward.

* PRIME trains ``pi_phi`` with the cross-entropy loss
  ``BCE(sigmoid(beta * sum_t log-ratio_t), r_o)`` on the current rollouts, and forms advantages
  by leave-one-out per reward source (outcome and process), summed and whitened.
* OPRL sums the token log-ratios of each turn into a turn reward, trains ``pi_phi`` with a
  trajectory-level DPO loss over pairs of the same group (the better outcome preferred), uses the
  previous policy snapshot as the reference, and combines a group-normalized episode advantage
  with a group-normalized step advantage.

Pure functions take log-probs you already have (any trainer computes them); :class:`ImplicitPRM`
wraps a model and an optimizer for the online update.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .. import _kernels
from .._adapters import outcomes_or_zero
from .._arrays import (
    ArrayLike,
    Backend,
    GroupIndex,
    as_float,
    as_group_index,
    as_mask,
    check_finite,
    check_nonempty,
    check_positive,
    check_unit,
    shape_bt,
)
from ..errors import RangeError, ShapeError
from ..outputs import AdvantageOutput, RewardOutput
from ..registry import register_method
from ..segments import group_stats, masked_whiten
from ._common import group_normalize
from .tokens import turn_values_from_tokens

__all__ = [
    "ImplicitPRM",
    "implicit_token_rewards",
    "implicit_turn_rewards",
    "oprl_advantages",
    "oprl_dpo_loss",
    "prime_advantages",
    "prime_ce_loss",
    "token_log_probs",
]


# ---------------------------------------------------------------------------------- rewards


def token_log_probs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs of a causal LM: ``out[:, l] = log p(input_ids[:, l] | input_ids[:, :l])``.

    Args:
        logits: float[B, L, V] -- the model's logits (position l predicts token l + 1).
        input_ids: int[B, L].

    Returns:
        float[B, L] (column 0 is 0: the first token has no prediction). Differentiable.
    """
    if logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
        raise ShapeError(
            f"logits has shape {tuple(logits.shape)}; expected [B, L, V] with [B, L] = {tuple(input_ids.shape)}"
        )
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = lp.gather(-1, input_ids[:, 1:, None].long()).squeeze(-1)
    return F.pad(picked, (1, 0))


def implicit_token_rewards(
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    response_mask: ArrayLike,
    *,
    beta: float = 0.05,
) -> RewardOutput:
    """PRIME token rewards ``r_t = beta * (log pi_phi(y_t) - log pi_ref(y_t))`` on response tokens.

    Args:
        policy_log_probs: float[B, L] -- log-probs of the sampled tokens under the implicit PRM.
        ref_log_probs: float[B, L] -- the same under the reference model.
        response_mask: bool[B, L] -- 1 on policy tokens (tool/observation/prompt/padding 0).
        beta: scale (PRIME: 0.05).

    Returns:
        RewardOutput(rewards float[B, L] (0 off the mask), metrics).

    Example:
        >>> import numpy as np
        >>> implicit_token_rewards(np.log([[0.5, 0.8]]), np.log([[0.5, 0.4]]), [[1, 1]], beta=1.0).rewards.round(4)
        array([[0.    , 0.6931]])
    """
    beta = check_positive(beta, "beta")
    backend = Backend.of(policy_log_probs, ref_log_probs)
    lp = as_float(policy_log_probs, "policy_log_probs", ndim=2, finite=False)
    ref = as_float(
        ref_log_probs, "ref_log_probs", shape=tuple(lp.shape), dtype=lp.dtype, device=lp.device, finite=False
    )
    rm = as_mask(response_mask, "response_mask", shape_bt(lp), device=lp.device, prefix=False, allow_empty_rows=True)
    check_finite(lp, "policy_log_probs", where=rm, hint=" on a response token")
    check_finite(ref, "ref_log_probs", where=rm, hint=" on a response token")
    r = _masked_ratio(lp, ref, rm) * beta
    on = r[rm].to(torch.float64)
    metrics = {"prm/token_reward_mean": float(on.mean()) if on.numel() else 0.0, "prm/num_tokens": float(rm.sum())}
    return RewardOutput(backend.out(r), metrics)


def implicit_turn_rewards(
    policy_log_probs: ArrayLike,
    ref_log_probs: ArrayLike,
    turn_ids: ArrayLike,
    response_mask: ArrayLike,
    *,
    beta: float = 0.05,
    num_turns: int | None = None,
) -> RewardOutput:
    """OPRL turn rewards ``r(t) = beta * sum_{k in turn t} (log pi_phi - log pi_ref)``.

    Args:
        policy_log_probs, ref_log_probs: float[B, L].
        turn_ids: int[B, L] -- turn of each policy token.
        response_mask: bool[B, L] -- 1 on policy tokens.
        beta: scale.
        num_turns: T of the output (default: largest turn id + 1).

    Returns:
        RewardOutput(rewards float[B, T], metrics).
    """
    tok = implicit_token_rewards(policy_log_probs, ref_log_probs, response_mask, beta=beta)
    turns = turn_values_from_tokens(tok.rewards, turn_ids, response_mask, num_turns=num_turns, reduce="sum")
    return RewardOutput(turns, dict(tok.metrics))


# ---------------------------------------------------------------------------------- losses


def prime_ce_loss(
    prm_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    outcomes: torch.Tensor,
    *,
    beta: float = 0.05,
) -> torch.Tensor:
    """PRIME's PRM loss: ``BCE(sigmoid(beta * sum_t log-ratio_t), r_o)`` averaged over sequences.

    Args:
        prm_log_probs: float[B, L] -- log-probs under the PRM being trained (requires grad).
        ref_log_probs: float[B, L] -- reference log-probs (no grad).
        response_mask: bool[B, L] -- 1 on policy tokens.
        outcomes: float[B] in [0, 1] -- verifier labels.
        beta: scale.

    Returns:
        A scalar torch loss.
    """
    beta = check_positive(beta, "beta")
    rm = _tmask(response_mask, prm_log_probs)
    target = _ttarget(outcomes, prm_log_probs)
    if bool(((target < 0) | (target > 1)).any()):
        raise RangeError("outcomes must lie in [0, 1] for the cross-entropy loss (verifier labels)")
    score = beta * _masked_ratio(prm_log_probs, ref_log_probs.detach(), rm).sum(dim=1)
    return F.binary_cross_entropy_with_logits(score, target)


def oprl_dpo_loss(
    prm_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    outcomes: torch.Tensor,
    group_ids: Any,
    *,
    beta: float = 0.05,
    pairs: Literal["all", "best_worst"] = "all",
) -> torch.Tensor:
    """OPRL's trajectory DPO loss over pairs of one group with different outcomes.

    ``L = mean_{(+,-)} -log sigmoid(beta * [S(tau+) - S(tau-)])`` with
    ``S(tau) = sum over the trajectory's policy tokens of log pi_phi - log pi_ref``.
    ``pairs="all"`` uses every ordered pair with ``R+ > R-``; ``"best_worst"`` one pair per group
    (highest vs lowest outcome). Returns 0 (with a graph) when no group has two distinct outcomes.
    """
    beta = check_positive(beta, "beta")
    if pairs not in ("all", "best_worst"):
        raise RangeError(f"pairs must be 'all' or 'best_worst'; got {pairs!r}")
    rm = _tmask(response_mask, prm_log_probs)
    r = _ttarget(outcomes, prm_log_probs)
    n = r.shape[0]
    groups = as_group_index(group_ids, "group_ids", n, device=prm_log_probs.device)
    s = _masked_ratio(prm_log_probs, ref_log_probs.detach(), rm).sum(dim=1)
    same = groups.index[:, None] == groups.index[None, :]
    better = same & (r[:, None] > r[None, :])
    if pairs == "best_worst":
        big = torch.finfo(r.dtype).max
        hi = torch.full((groups.num_groups,), -big, dtype=r.dtype, device=r.device).scatter_reduce(
            0, groups.index, r, reduce="amax"
        )
        lo = torch.full((groups.num_groups,), big, dtype=r.dtype, device=r.device).scatter_reduce(
            0, groups.index, r, reduce="amin"
        )
        idx = torch.arange(n, device=r.device)
        first_hi = torch.full((groups.num_groups,), n, device=r.device).scatter_reduce(
            0, groups.index, torch.where(r == hi[groups.index], idx, torch.full_like(idx, n)), reduce="amin"
        )
        first_lo = torch.full((groups.num_groups,), n, device=r.device).scatter_reduce(
            0, groups.index, torch.where(r == lo[groups.index], idx, torch.full_like(idx, n)), reduce="amin"
        )
        keep = torch.zeros_like(better)
        ok = (first_hi < n) & (first_lo < n) & (hi > lo)
        keep[first_hi[ok], first_lo[ok]] = True
        better = better & keep
    if not bool(better.any()):
        return s.sum() * 0.0
    margin = beta * (s[:, None] - s[None, :])
    return -F.logsigmoid(margin[better]).mean()


# ---------------------------------------------------------------------------------- advantages


def prime_advantages(
    token_rewards: ArrayLike,
    outcomes: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    response_mask: ArrayLike,
    *,
    gamma: float = 1.0,
    leave_one_out: Literal["paper", "code"] = "paper",
    whiten: bool = True,
    eps: float = 1e-8,
) -> AdvantageOutput:
    """PRIME advantages: RLOO per reward source, returns-to-go over tokens, summed, whitened.

    * outcome: ``A^o_i = r_o(i) - mean_{j != i} r_o(j)``, placed on the last response token;
    * process: ``rbar_j`` = mean token reward of sample j;
      "paper": ``rtilde_t = r_t - mean_{j != i} rbar_j``;
      "code" (released trainer): ``rtilde_t = r_t * K/(K-1) - sum_j rbar_j / (K-1)``;
    * ``A_t = G^o_t + G^p_t`` (discounted over response tokens; tool/observation tokens are
      skipped, not discounted), then whitened over the batch's response tokens.

    Args:
        token_rewards: float[B, L] -- implicit PRM token rewards (:func:`implicit_token_rewards`).
        outcomes: float[B] -- verifier outcome of each sample.
        group_ids: int[B] -- the K samples of one prompt share an id (K >= 2; groups of one get 0).
        response_mask: bool[B, L] -- 1 on policy tokens.
        gamma: discount over response tokens (PRIME: 1).
        leave_one_out: "paper" or "code" (see above).
        whiten: whiten the summed advantage over the batch (the released code does).
        eps: added to the variance when whitening.

    Returns:
        AdvantageOutput(advantages float[B, L], returns float[B, L] (``G^o + G^p`` before
        whitening), metrics); 0 off the response mask.
    """
    if leave_one_out not in ("paper", "code"):
        raise RangeError(f"leave_one_out must be 'paper' or 'code'; got {leave_one_out!r}")
    gamma = check_unit(gamma, "gamma")
    backend = Backend.of(token_rewards, outcomes)
    tr = as_float(token_rewards, "token_rewards", ndim=2)
    b, length = tr.shape
    check_nonempty(b, "token_rewards")
    rm = as_mask(response_mask, "response_mask", (b, length), device=tr.device, prefix=False, allow_empty_rows=True)
    o = as_float(outcomes, "outcomes", shape=(b,), device=tr.device).to(torch.float64)
    groups = as_group_index(group_ids, "group_ids", b, device=tr.device)
    x = torch.where(rm, tr.to(torch.float64), torch.zeros((), dtype=torch.float64, device=tr.device))
    ntok = rm.sum(dim=1)
    ones = torch.ones(b, dtype=torch.bool, device=tr.device)
    # outcome RLOO
    st_o = group_stats(o, ones, groups)
    k = st_o.count.to(torch.float64)[groups.index]
    a_out = torch.where(k > 1, st_o.centered * k / (k - 1).clamp(min=1), torch.zeros_like(o))
    # process: per-sample mean token reward, leave-one-out over the group
    rbar = x.sum(dim=1) / ntok.clamp(min=1)
    sum_rbar = torch.zeros(groups.num_groups, dtype=torch.float64, device=tr.device).index_add_(0, groups.index, rbar)[
        groups.index
    ]
    if leave_one_out == "paper":
        rt = x - ((sum_rbar - rbar) / (k - 1).clamp(min=1))[:, None]
    else:
        rt = x * (k / (k - 1).clamp(min=1))[:, None] - (sum_rbar / (k - 1).clamp(min=1))[:, None]
    rt = torch.where(rm & (k[:, None] > 1), rt, torch.zeros_like(rt))
    # outcome advantage on the last response token
    pos = torch.arange(length, device=tr.device).expand(b, length)
    last = torch.where(rm, pos, torch.full_like(pos, -1)).max(dim=1).values
    has = last >= 0
    xo = torch.zeros_like(x)
    rows = torch.arange(b, device=tr.device)
    xo[rows[has], last[has]] = a_out[has]
    coef = torch.where(rm, torch.full_like(x, gamma), torch.ones_like(x))
    full = torch.full((b,), length, dtype=torch.int64, device=tr.device)
    ret = _kernels.reverse_scan((xo + rt).contiguous(), coef.contiguous(), full)
    ret = torch.where(rm, ret, torch.zeros_like(ret))
    adv = masked_whiten(ret, rm, eps=eps)[0] if whiten else ret
    metrics = {
        "prime/outcome_advantage_abs_mean": float(a_out.abs().mean()),
        "prime/process_reward_mean": float(rbar.mean()),
        "groups/num_singleton": float((st_o.count == 1).sum()),
    }
    return AdvantageOutput(backend.out(adv.to(tr.dtype)), backend.out(ret.to(tr.dtype)), metrics)


def oprl_advantages(
    turn_rewards: ArrayLike,
    outcomes: ArrayLike,
    group_ids: ArrayLike | GroupIndex,
    *,
    mask: ArrayLike | None,
    step_weight: float = 1.0,
    mode: Literal["mean_std_norm", "mean_norm", "rloo"] = "mean_std_norm",
    eps: float = 1e-6,
) -> AdvantageOutput:
    """OPRL / iStar advantages: group-normalized outcome plus group-normalized turn rewards.

    ``A_t = A^E(tau) + step_weight * A^S(t)`` with ``A^E`` the outcome's z-score in its group
    ("mean_std_norm"), its centred value ("mean_norm") or its leave-one-out value ("rloo"), and
    ``A^S(t) = (r_t - mean(S_g)) / (std(S_g) + eps)`` over ``S_g``, the turn rewards of *all*
    turns of the group (the paper; the released code takes one entry per trajectory).

    Args:
        turn_rewards: float[B, T] -- implicit turn rewards (:func:`implicit_turn_rewards`).
        outcomes: float[B].
        group_ids: int[B].
        mask: bool[B, T] -- valid turns (prefix).
        step_weight: ``alpha`` (1 in the paper's code).
        mode: episode-level normalization.
        eps: added to the stds.

    Returns:
        AdvantageOutput(advantages float[B, T] (0 on padding), None, metrics).
    """
    if mode not in ("mean_std_norm", "mean_norm", "rloo"):
        raise RangeError(f"mode must be 'mean_std_norm', 'mean_norm' or 'rloo'; got {mode!r}")
    eps = check_positive(eps, "eps", allow_zero=True)
    backend = Backend.of(turn_rewards, outcomes)
    r = as_float(turn_rewards, "turn_rewards", ndim=2)
    b, t = r.shape
    check_nonempty(b, "turn_rewards")
    m = as_mask(mask, "mask", (b, t), device=r.device)
    o = as_float(outcomes, "outcomes", shape=(b,), device=r.device).to(torch.float64)
    groups = as_group_index(group_ids, "group_ids", b, device=r.device)
    ones = torch.ones(b, dtype=torch.bool, device=r.device)
    if mode == "rloo":
        st = group_stats(o, ones, groups)
        k = st.count.to(torch.float64)[groups.index]
        a_ep = torch.where(k > 1, st.centered * k / (k - 1).clamp(min=1), torch.zeros_like(o))
    else:
        a_ep, _ = group_normalize(o, ones, groups, scale=mode == "mean_std_norm", eps=eps)
    fb, ft = torch.nonzero(m, as_tuple=True)
    a_flat, st_s = group_normalize(
        r[fb, ft].to(torch.float64),
        torch.ones_like(fb, dtype=torch.bool),
        GroupIndex(groups.index[fb], groups.num_groups),
        scale=True,
        eps=eps,
    )
    a_step = torch.zeros((b, t), dtype=torch.float64, device=r.device)
    a_step[fb, ft] = a_flat
    adv = torch.where(m, a_ep[:, None] + float(step_weight) * a_step, torch.zeros_like(a_step))
    metrics = {
        "oprl/episode_advantage_abs_mean": float(a_ep.abs().mean()),
        "oprl/step_advantage_abs_mean": float(a_flat.abs().mean()) if a_flat.numel() else 0.0,
        "oprl/turn_reward_mean": float(r[m].to(torch.float64).mean()),
    }
    return AdvantageOutput(backend.out(adv.to(r.dtype)), None, metrics)


# ---------------------------------------------------------------------------------- the learner


class ImplicitPRM:
    """An implicit PRM: a causal LM trained online from outcome labels (PRIME CE or OPRL DPO).

    Args:
        model: a ``torch.nn.Module`` called as ``model(input_ids=..., attention_mask=...)`` that
            returns logits ``[B, L, V]`` or an object with ``.logits`` (any Hugging Face causal LM).
        reference: the frozen reference model (PRIME: the SFT model), or None to pass
            ``ref_log_probs`` to every call (OPRL: the previous policy's log-probs).
        beta: reward scale.
        objective: "ce" (PRIME) or "dpo" (OPRL).
        lr: learning rate of the default AdamW optimizer (ignored when ``optimizer`` is given).
        optimizer: an optimizer over ``model``'s parameters.
        pairs: DPO pair construction ("all" or "best_worst").

    Example:
        See tests/llm/test_llm_implicit_prm.py: a tiny LM learns which tokens lead to success.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        reference: torch.nn.Module | None = None,
        *,
        beta: float = 0.05,
        objective: Literal["ce", "dpo"] = "ce",
        lr: float = 1e-6,
        optimizer: torch.optim.Optimizer | None = None,
        pairs: Literal["all", "best_worst"] = "all",
    ):
        if objective not in ("ce", "dpo"):
            raise RangeError(f"objective must be 'ce' (PRIME) or 'dpo' (OPRL); got {objective!r}")
        self.model = model
        self.reference = reference
        if reference is not None:
            reference.requires_grad_(False)
            reference.eval()
        self.beta = check_positive(beta, "beta")
        self.objective = objective
        self.pairs = pairs
        self.optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=check_positive(lr, "lr"))
        self.num_updates = 0

    @staticmethod
    def from_policy(policy: torch.nn.Module, **kwargs: Any) -> ImplicitPRM:
        """PRIME's initialization: PRM and reference both start as copies of the (SFT) policy."""
        prm = copy.deepcopy(policy)
        ref = copy.deepcopy(policy).eval()
        return ImplicitPRM(prm, ref, **kwargs)

    def log_probs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        model: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """float[B, L] per-token log-probs under ``model`` (default: the PRM), with grad."""
        net = self.model if model is None else model
        out = net(input_ids=input_ids, attention_mask=attention_mask)
        logits = out.logits if hasattr(out, "logits") else out
        return token_log_probs(logits, input_ids)

    def _ref(self, input_ids, attention_mask, ref_log_probs):
        if ref_log_probs is not None:
            return torch.as_tensor(ref_log_probs, dtype=torch.float32).detach()
        if self.reference is None:
            raise RangeError("this ImplicitPRM has no reference model; pass ref_log_probs (e.g. the old policy's)")
        with torch.no_grad():
            return self.log_probs(input_ids, attention_mask, model=self.reference)

    def token_rewards(self, input_ids, attention_mask, response_mask, *, ref_log_probs=None) -> torch.Tensor:
        """float[B, L] -- ``beta * log-ratio`` on response tokens (no grad, dropout off)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                lp = self.log_probs(input_ids, attention_mask)
        finally:
            self.model.train(was_training)
        return implicit_token_rewards(
            lp, self._ref(input_ids, attention_mask, ref_log_probs), response_mask, beta=self.beta
        ).rewards

    def turn_rewards(
        self, input_ids, attention_mask, response_mask, turn_ids, *, ref_log_probs=None, num_turns=None
    ) -> torch.Tensor:
        """float[B, T] -- OPRL turn rewards (sum of the turn's token rewards; no grad)."""
        tok = self.token_rewards(input_ids, attention_mask, response_mask, ref_log_probs=ref_log_probs)
        return turn_values_from_tokens(tok, turn_ids, response_mask, num_turns=num_turns)

    def update(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        response_mask: torch.Tensor,
        outcomes: Any,
        *,
        group_ids: Any | None = None,
        ref_log_probs: Any | None = None,
    ) -> dict[str, float]:
        """One optimizer step of the CE (PRIME) or DPO (OPRL, needs ``group_ids``) objective."""
        ref = self._ref(input_ids, attention_mask, ref_log_probs)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        lp = self.log_probs(input_ids, attention_mask)
        o = torch.as_tensor(outcomes, dtype=torch.float32, device=lp.device)
        if self.objective == "ce":
            loss = prime_ce_loss(lp, ref, response_mask, o, beta=self.beta)
        else:
            if group_ids is None:
                raise RangeError("the DPO objective needs group_ids (pairs are formed within a group)")
            loss = oprl_dpo_loss(lp, ref, response_mask, o, group_ids, beta=self.beta, pairs=self.pairs)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        with torch.no_grad():
            rm = _tmask(response_mask, lp)
            score = self.beta * _masked_ratio(lp.detach(), ref, rm).sum(dim=1)
            pred = (score > 0).float()
            acc = float((pred == (o > 0.5).float()).float().mean())
        return {"prm/loss": float(loss.detach()), "prm/accuracy": acc, "prm/score_mean": float(score.mean())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "beta": self.beta,
            "objective": self.objective,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"model", "optimizer", "beta", "objective"} - set(state)
        if missing:
            raise RangeError(f"state is missing keys {sorted(missing)}; expected the dict from state_dict()")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.beta = float(state["beta"])
        self.objective = state["objective"]
        self.num_updates = int(state.get("num_updates", 0))


# ---------------------------------------------------------------------------------- helpers


def _masked_ratio(lp: torch.Tensor, ref: torch.Tensor, rm: torch.Tensor) -> torch.Tensor:
    ratio = lp - ref.to(lp.dtype)
    return torch.where(rm, ratio, torch.zeros((), dtype=ratio.dtype, device=ratio.device))


def _tmask(response_mask: Any, like: torch.Tensor) -> torch.Tensor:
    rm = torch.as_tensor(response_mask, device=like.device)
    if tuple(rm.shape) != tuple(like.shape):
        raise ShapeError(f"response_mask has shape {tuple(rm.shape)}; expected {tuple(like.shape)}")
    return rm.bool()


def _ttarget(outcomes: Any, like: torch.Tensor) -> torch.Tensor:
    o = torch.as_tensor(outcomes, dtype=like.dtype, device=like.device)
    if o.shape != (like.shape[0],):
        raise ShapeError(f"outcomes has shape {tuple(o.shape)}; expected ({like.shape[0]},)")
    return o


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "oprl",
    family="llm",
    kind="advantages",
    needs=("rewards", "outcomes", "group_ids"),
    summary="OPRL/iStar: group-normalized outcome + group-normalized implicit turn rewards",
    source="Liu et al. 2025, arXiv 2509.19199",
)
def _run_oprl(
    episodes, *, step_weight: float = 1.0, mode: Literal["mean_std_norm", "mean_norm", "rloo"] = "mean_std_norm"
) -> AdvantageOutput:
    """The per-turn implicit rewards are ``episodes.rewards``; a missing outcome counts as 0."""
    episodes.require("outcomes", "group_ids", method="oprl")
    return oprl_advantages(
        episodes.rewards,
        outcomes_or_zero(episodes),
        episodes.group_ids,
        mask=episodes.mask,
        step_weight=step_weight,
        mode=mode,
    )
