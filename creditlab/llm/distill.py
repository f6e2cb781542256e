"""On-policy distillation credit: the teacher's log-prob minus the student's, per generated token.

The student samples; a teacher scores the student's own tokens. The per-token reward
``r_t = log pi_T(y_t) - log pi_S(y_t)`` is minus the one-sample reverse-KL estimate (k1, see
:mod:`creditlab.advantage.kl`): maximizing it drives ``KL(pi_S || pi_T)`` down on the states the
student actually visits. It ships as ``--use-opd`` in slime (``apply_opd_kl_to_advantages``:
``A_t -= coef * (log pi_S - log pi_T)`` after the base estimator, before optional whitening), and
in ROLL, NeMo-RL, SkyRL and TRL; the Tinker cookbook's ``distillation/train_on_policy.py`` is pure
distillation (base advantage 0).

Two ways to credit it, and the gradient each gives (as for KL in the reward):

* ``mode="token"`` (slime, Tinker): each token gets its own ``r_t`` only (discount 0). The
  expected update is the reverse-KL gradient *per visited state*, ignoring how a token changes
  the states after it.
* ``mode="returns"``: ``r_t`` is a dense reward with returns-to-go ``sum_{k >= t} gamma^(k-t) r_k``.
  With ``gamma = 1`` this is REINFORCE on ``-KL(pi_S || pi_T)`` of the whole sequence: unbiased for
  its gradient, with more variance.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from .._arrays import ArrayLike, Backend, as_float, as_mask, check_finite, check_real, check_unit, shape_bt
from ..errors import MissingColumnError, RangeError, ShapeError
from ..outputs import AdvantageOutput, RewardOutput
from ..registry import register_method

__all__ = ["opd_token_rewards", "opd_advantages"]


def opd_token_rewards(
    student_log_probs: ArrayLike,
    teacher_log_probs: ArrayLike,
    response_mask: ArrayLike,
    *,
    coef: float = 1.0,
) -> RewardOutput:
    """Per-token distillation reward ``coef * (log pi_T(y_t) - log pi_S(y_t))`` on policy tokens.

    Args:
        student_log_probs: float[B, L] -- the sampling (student) policy's log-prob of each
            sampled token (detached: slime's old-policy or rollout log-probs).
        teacher_log_probs: float[B, L] -- the teacher's log-prob of the same tokens.
        response_mask: bool[B, L] -- 1 on tokens the student generated (holes allowed).
        coef: slime ``--opd-kl-coef`` (default 1.0).

    Returns:
        RewardOutput(rewards float[B, L] (0 off the mask), metrics) with
        ``opd/reverse_kl_mean`` (mean of ``log pi_S - log pi_T`` over policy tokens) and
        ``opd/reverse_kl_seq_mean`` (per-sequence sums, averaged).

    Example (the teacher likes token 0 more, token 1 less):
        >>> import numpy as np
        >>> out = opd_token_rewards(np.log([[0.5, 0.5]]), np.log([[1.0, 0.25]]), [[1, 1]])
        >>> [round(x, 4) for x in out.rewards[0].tolist()]
        [0.6931, -0.6931]
    """
    coef = check_real(coef, "coef")
    s, t, m, backend = _inputs(student_log_probs, teacher_log_probs, response_mask)
    mf = m.to(torch.float64)
    rkl = (s - t) * mf
    n_tok = float(mf.sum())
    rows = mf.sum(1) > 0
    metrics = {
        "opd/reverse_kl_mean": float(rkl.sum()) / n_tok if n_tok else 0.0,
        "opd/reverse_kl_seq_mean": float(rkl.sum(1)[rows].mean()) if bool(rows.any()) else 0.0,
        "opd/num_tokens": n_tok,
    }
    return RewardOutput(backend.out((-coef * rkl).to(_dtype(student_log_probs))), metrics)


def opd_advantages(
    student_log_probs: ArrayLike,
    teacher_log_probs: ArrayLike,
    response_mask: ArrayLike,
    *,
    advantages: ArrayLike | None = None,
    coef: float = 1.0,
    mode: Literal["token", "returns"] = "token",
    gamma: float = 1.0,
    whiten: bool = False,
    eps: float = 1e-8,
) -> AdvantageOutput:
    """Distillation credit added to a base advantage: ``A'_t = A_t + coef * c_t`` on policy tokens.

    ``c_t = log pi_T(y_t) - log pi_S(y_t)`` (``mode="token"``, slime's blend), or its return-to-go
    over the row's policy tokens ``sum_{k >= t} gamma^(k-t) c_k`` (``mode="returns"``; tool tokens
    are skipped, not discounted). ``advantages=None`` is pure distillation (base 0). ``whiten``
    then whitens ``A'`` over all policy tokens of the batch (slime's ``--normalize-advantages``,
    which runs after the OPD term).

    Args:
        student_log_probs, teacher_log_probs: float[B, L]; response_mask: bool[B, L].
        advantages: float[B, L] -- the base estimator's per-token advantages (GRPO broadcast to
            tokens, PPO's GAE, ...), or None.
        coef: weight of the distillation term.
        mode: "token" or "returns".
        gamma: discount of "returns" mode, in [0, 1].
        whiten: whiten the sum over policy tokens.
        eps: added to the variance when whitening.

    Returns:
        AdvantageOutput(advantages float[B, L] (0 off the mask), returns = the distillation term
        ``c`` (token or return-to-go), metrics).

    Example (pure distillation, returns-to-go of [log 2, -log 2] = [0, -log 2]):
        >>> import numpy as np
        >>> out = opd_advantages(np.log([[0.5, 0.5]]), np.log([[1.0, 0.25]]), [[1, 1]], mode="returns")
        >>> [round(x, 4) for x in out.advantages[0].tolist()]
        [0.0, -0.6931]
    """
    coef = check_real(coef, "coef")
    gamma = check_unit(gamma, "gamma")
    if mode not in ("token", "returns"):
        raise RangeError(f"mode must be 'token' or 'returns'; got {mode!r}")
    s, t, m, backend = _inputs(student_log_probs, teacher_log_probs, response_mask)
    mf = m.to(torch.float64)
    c = (t - s) * mf
    if mode == "returns":
        c = _masked_returns(c, m, gamma)
    if advantages is None:
        base = torch.zeros_like(c)
    else:
        base = as_float(advantages, "advantages", shape=tuple(c.shape), device=c.device, finite=False).to(torch.float64)
        check_finite(base, "advantages", where=m, hint=" on policy tokens")
    out = (base + coef * c) * mf
    if whiten:
        from ..segments import masked_whiten

        out, _, _ = masked_whiten(out, m, eps=eps)
    dt = _dtype(student_log_probs)
    valid = out[m]
    metrics = {
        "opd/reverse_kl_mean": float(((s - t) * mf).sum() / mf.sum().clamp(min=1)),
        "opd/credit_abs_mean": float((coef * c)[m].abs().mean()) if valid.numel() else 0.0,
        "advantages/mean": float(valid.mean()) if valid.numel() else 0.0,
        "advantages/std": float(valid.std(unbiased=False)) if valid.numel() else 0.0,
    }
    return AdvantageOutput(backend.out(out.to(dt)), backend.out(c.to(dt)), metrics)


def _dtype(x: Any) -> torch.dtype:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return torch.float32
    return torch.float64


def _inputs(student: ArrayLike, teacher: ArrayLike, response_mask: ArrayLike):
    backend = Backend.of(student, teacher)
    s = as_float(student, "student_log_probs", ndim=2, finite=False).to(torch.float64)
    t = as_float(teacher, "teacher_log_probs", device=s.device, finite=False).to(torch.float64)
    if t.shape != s.shape:
        raise ShapeError(
            f"teacher_log_probs has shape {tuple(t.shape)} but student_log_probs has {tuple(s.shape)}; expected the same"
        )
    m = as_mask(
        response_mask,
        "response_mask",
        shape_bt(s),
        device=s.device,
        prefix=False,
        allow_empty_rows=True,
        like="student_log_probs",
    )
    check_finite(s, "student_log_probs", where=m, hint=" on policy tokens")
    check_finite(t, "teacher_log_probs", where=m, hint=" on policy tokens")
    for name, x in (("student_log_probs", s), ("teacher_log_probs", t)):
        bad = (x > 1e-6) & m
        if bool(bad.any()):
            i, j = torch.nonzero(bad)[0].tolist()
            raise RangeError(f"{name}[{i}, {j}] = {float(x[i, j])}; log-probabilities are <= 0")
    return s, t, m, backend


def _masked_returns(x: torch.Tensor, m: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return-to-go over each row's policy tokens only (non-policy tokens skipped, not discounted)."""
    out = torch.zeros_like(x)
    acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for j in range(x.shape[1] - 1, -1, -1):
        on = m[:, j]
        acc = torch.where(on, x[:, j] + gamma * acc, acc)
        out[:, j] = torch.where(on, acc, torch.zeros_like(acc))
    return out


# ------------------------------------------------------------------------------ registry adapter


@register_method(
    "opd",
    family="llm",
    summary="On-policy distillation: teacher minus student log-prob per token (pure distillation)",
    needs=("extras.log_probs", "extras.teacher_log_probs"),
    kind="advantages",
    source="slime --use-opd (apply_opd_kl_to_advantages); Tinker cookbook on-policy distillation",
)
def _run_opd(
    episodes, *, coef: float = 1.0, mode: Literal["token", "returns"] = "token", gamma: float = 1.0
) -> AdvantageOutput:
    """Steps are tokens: the student's (``log_probs``) and teacher's log-probs as per-step extras."""
    for key in ("log_probs", "teacher_log_probs"):
        if key not in episodes.extras:
            raise MissingColumnError(f"method 'opd' needs a per-token {key!r} column (episodes.extras[{key!r}])")
    return opd_advantages(
        episodes.extras["log_probs"],
        episodes.extras["teacher_log_probs"],
        episodes.mask,
        coef=coef,
        mode=mode,
        gamma=gamma,
    )
