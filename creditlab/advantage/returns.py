"""Returns, lambda-returns and generalized advantage estimation over padded episodes.

Layout: rows are episodes (or the unfinished tail of one), ``[B, T]`` with a prefix ``mask``.
Termination and truncation are kept apart:

* termination enters as a per-step continuation ``discounts[b, t] = 0`` (or ``terminated[b]``),
  which cuts the bootstrap and the lambda-trace;
* truncation (a time limit, or the end of a rollout) enters as ``bootstrap_value[b]``, the value
  of the state reached after the last valid step, used when that step's discount is not 0.

Indexing matches rlax/SB3: ``rewards[t]`` is the reward received after the action at step t.
"""

from __future__ import annotations

import torch

from .. import _kernels
from .._arrays import ArrayLike, check_unit
from .._steps import per_step, step_inputs
from ..outputs import AdvantageOutput

__all__ = ["discounted_returns", "gae", "lambda_returns", "monte_carlo"]


def discounted_returns(
    rewards: ArrayLike,
    *,
    gamma: float,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_value: ArrayLike | None = None,
) -> ArrayLike:
    """Discounted returns-to-go of every step.

    ``G_t = r_t + gamma * d_t * G_{t+1}`` with ``G_{T_b} = bootstrap_value[b]`` after the last valid
    step of episode b (``d_t`` = ``discounts[b, t]``; 0 at termination cuts the bootstrap).

    Args:
        rewards: float[B, T] -- reward received after the action at step t; padding ignored.
        gamma: discount in [0, 1].
        mask: bool[B, T] -- 1 on valid steps, a prefix of each row. Default: all valid.
        discounts: float[B, T] -- continuation in [0, 1]; 0 where the episode terminated.
            Default 1 everywhere (or built from ``terminated``).
        terminated: bool[B] -- the episode ended in a terminal state (sets its last discount to 0).
        bootstrap_value: float[B] -- V(s_T) of the state after the last valid step (truncation).

    Returns:
        float[B, T] returns, 0 on padding; same array kind and device as ``rewards``.

    Example:
        >>> import numpy as np
        >>> discounted_returns(np.array([[0.0, 0.0, 1.0]]), gamma=0.1)
        array([[0.01, 0.1 , 1.  ]])
    """
    gamma = check_unit(gamma, "gamma")
    s = step_inputs(rewards, mask=mask, discounts=discounts, terminated=terminated, bootstrap_value=bootstrap_value)
    out = _kernels.returns_scan(s.rewards, s.discounts, s.lengths, s.bootstrap, gamma)
    return s.backend.out(out)


def gae(
    rewards: ArrayLike,
    values: ArrayLike,
    *,
    gamma: float,
    lambda_: float,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_value: ArrayLike | None = None,
) -> AdvantageOutput:
    """Generalized advantage estimation (Schulman et al. 2016, arXiv 1506.02438).

    ``delta_t = r_t + gamma * d_t * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lambda_ * d_t * A_{t+1}``,
    where ``V_{T_b}`` = ``bootstrap_value[b]`` after the last valid step and ``d_t`` is the per-step
    continuation (0 at termination: no bootstrap, trace cut). ``returns = A + V`` are the
    lambda-returns used as value targets. ``lambda_ = 1`` gives Monte Carlo returns minus V;
    ``lambda_ = 0`` gives one-step TD errors.

    Args:
        rewards: float[B, T] -- reward received after the action at step t.
        values: float[B, T] -- V(s_t) of the state at step t (padding ignored).
        gamma: discount in [0, 1].
        lambda_: GAE trace parameter in [0, 1].
        mask: bool[B, T] -- prefix mask of valid steps (default: all valid).
        discounts: float[B, T] -- continuation in [0, 1]; 0 at termination.
        terminated: bool[B] -- the episode ended in a terminal state (its last discount is 0).
        bootstrap_value: float[B] -- V of the state after the last valid step; used for
            truncated episodes (ignored where the last discount is 0). Default 0.

    Returns:
        AdvantageOutput(advantages[B, T], returns[B, T], metrics) with 0 on padding.

    Example (one reward at the last step, constant values 0.5, gamma = lambda = 1):
        >>> import numpy as np
        >>> out = gae(np.array([[0.0, 0.0, 1.0]]), np.full((1, 3), 0.5), gamma=1.0, lambda_=1.0,
        ...           terminated=[True])
        >>> out.advantages
        array([[0.5, 0.5, 0.5]])
    """
    gamma = check_unit(gamma, "gamma")
    lambda_ = check_unit(lambda_, "lambda_")
    s = step_inputs(rewards, mask=mask, discounts=discounts, terminated=terminated, bootstrap_value=bootstrap_value)
    v = per_step(values, "values", s) if _same_shape(values, s) else _values_error(values, s)
    adv = _kernels.gae_scan(s.rewards, v, s.discounts, s.lengths, s.bootstrap, gamma, lambda_)
    ret = s.zero_pad(adv + v)
    metrics = _step_metrics(adv, ret, v, s.mask)
    return AdvantageOutput(s.backend.out(adv), s.backend.out(ret), metrics)


def lambda_returns(
    rewards: ArrayLike,
    values: ArrayLike,
    *,
    gamma: float,
    lambda_: float,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_value: ArrayLike | None = None,
) -> ArrayLike:
    """TD(lambda) returns ``G^lambda_t = r_t + gamma d_t [(1 - lambda_) V_{t+1} + lambda_ G^lambda_{t+1}]``.

    Equal to ``gae(...).advantages + values``; same arguments as :func:`gae`.
    Returns float[B, T], 0 on padding.
    """
    return gae(
        rewards,
        values,
        gamma=gamma,
        lambda_=lambda_,
        mask=mask,
        discounts=discounts,
        terminated=terminated,
        bootstrap_value=bootstrap_value,
    ).returns


def monte_carlo(
    rewards: ArrayLike,
    values: ArrayLike | None = None,
    *,
    gamma: float,
    mask: ArrayLike | None = None,
    discounts: ArrayLike | None = None,
    terminated: ArrayLike | None = None,
    bootstrap_value: ArrayLike | None = None,
) -> AdvantageOutput:
    """Monte Carlo advantages: discounted returns minus an optional value baseline.

    ``A_t = G_t - V_t`` (``V = 0`` when ``values`` is None), ``returns = G``. Same arguments as
    :func:`discounted_returns` plus ``values: float[B, T]``.
    """
    gamma = check_unit(gamma, "gamma")
    s = step_inputs(rewards, mask=mask, discounts=discounts, terminated=terminated, bootstrap_value=bootstrap_value)
    ret = _kernels.returns_scan(s.rewards, s.discounts, s.lengths, s.bootstrap, gamma)
    v = torch.zeros_like(ret) if values is None else per_step(values, "values", s)
    adv = s.zero_pad(ret - v)
    return AdvantageOutput(s.backend.out(adv), s.backend.out(ret), _step_metrics(adv, ret, v, s.mask))


def _same_shape(values: ArrayLike, s) -> bool:
    shape = tuple(getattr(values, "shape", ()) or ())
    if not shape and isinstance(values, (list, tuple)):
        return True  # let the converter report details
    return shape == s.shape


def _values_error(values: ArrayLike, s):
    from ..errors import ShapeError

    shape = tuple(getattr(values, "shape", ()))
    hint = ""
    if len(shape) == 2 and shape[0] == s.shape[0] and shape[1] == s.shape[1] + 1:
        hint = "; drop the last column and pass it as bootstrap_value (V of the state after the last step)"
    raise ShapeError(f"values has shape {shape} but rewards has {s.shape}; values must be [B, T] like rewards{hint}")


def _step_metrics(adv: torch.Tensor, ret: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    a = adv[mask].to(torch.float64)
    r = ret[mask].to(torch.float64)
    v = values[mask].to(torch.float64)
    n = a.numel()
    var_r = float(r.var(unbiased=False)) if n > 1 else 0.0
    ev = 1.0 - float((r - v).var(unbiased=False)) / var_r if var_r > 0 else float("nan")
    return {
        "num_episodes": float(mask.shape[0]),
        "num_steps": float(n),
        "advantages/mean": float(a.mean()) if n else 0.0,
        "advantages/std": float(a.std(unbiased=False)) if n else 0.0,
        "returns/mean": float(r.mean()) if n else 0.0,
        "values/explained_variance": ev,
    }
