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

import math

import torch

from .. import _kernels
from .._adapters import step_kwargs, step_rewards
from .._arrays import ArrayLike, all_finite, as_float, check_finite, check_unit, plain_float
from .._steps import Steps, per_step, step_inputs
from ..errors import NonFiniteError
from ..outputs import AdvantageOutput
from ..registry import register_method

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
    s = step_inputs(
        rewards,
        mask=mask,
        discounts=discounts,
        terminated=terminated,
        bootstrap_value=bootstrap_value,
        check_rewards=False,
    )
    res = _kernels.returns_scan(s.rewards, s.discounts, s.last_discount, s.lengths, s.bootstrap, gamma)
    if not math.isfinite(res.stats["sum_rewards"]):  # NaN/inf in a valid reward reaches the kernel's sums
        check_finite(s.rewards, "rewards", where=None if s.full else s.mask, hint=" on valid steps")
    _check_overflow(res.stats["sum_ret2"], s, res.out)
    return s.backend.out(res.out)


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
    s = step_inputs(
        rewards,
        mask=mask,
        discounts=discounts,
        terminated=terminated,
        bootstrap_value=bootstrap_value,
        check_rewards=False,
    )
    v = plain_float(values, s.shape, s.rewards.dtype) if s.rewards.device.type == "cpu" else None
    if v is None:
        if not _same_shape(values, s):
            _values_error(values, s)
        v = as_float(
            values, "values", shape=s.shape, dtype=s.rewards.dtype, device=s.rewards.device, finite=False
        ).contiguous()
    res = _kernels.gae_scan(
        s.rewards, v, s.discounts, s.last_discount, s.lengths, s.bootstrap, gamma, lambda_, s.num_valid
    )
    _check_outputs(res, s, values=v)
    metrics = _metrics_from_sums(res.stats, s.shape[0], res, s)
    return AdvantageOutput(s.backend.out(res.out), s.backend.out(res.returns), metrics)


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
    if values is None:
        # GAE with lambda = 1 and V = 0 is exactly the discounted return.
        v = torch.zeros_like(s.rewards)
    else:
        if not _same_shape(values, s):
            _values_error(values, s)
        v = per_step(values, "values", s)
    res = _kernels.gae_scan(s.rewards, v, s.discounts, s.last_discount, s.lengths, s.bootstrap, gamma, 1.0, s.num_valid)
    _check_outputs(res, s)
    metrics = _metrics_from_sums(res.stats, s.shape[0], res, s)
    return AdvantageOutput(s.backend.out(res.out), s.backend.out(res.returns), metrics)


def _same_shape(values: ArrayLike, s) -> bool:
    if values is None:
        from ..errors import ShapeError

        raise ShapeError(
            "values is None; gae needs V(s_t) for every step (use monte_carlo for returns without a critic)"
        )
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


def _check_outputs(res: _kernels.ScanResult, s: Steps, *, values: torch.Tensor | None = None) -> None:
    """Named errors for a GAE scan with non-finite inputs or outputs past the dtype's range.

    A NaN or inf in a valid reward or value makes that step's advantage NaN or inf (``delta_t``
    holds ``r_t`` and ``V_t``), so it reaches the kernel's float64 sums: only then are the inputs
    searched (the error names the first bad entry). Finite inputs whose outputs pass the dtype's
    range are an overflow (:func:`_check_overflow`).
    """
    st = res.stats
    if not (
        math.isfinite(st["sum_adv"])
        and math.isfinite(st["sum_adv2"])
        and math.isfinite(st["sum_ret"])
        and math.isfinite(st["sum_ret2"])
    ):
        where = None if s.full else s.mask
        check_finite(s.rewards, "rewards", where=where, hint=" on valid steps")
        if values is not None:
            check_finite(values, "values", where=where, hint=" on valid steps")
    _check_overflow(st["sum_adv2"], s, res.out, st["sum_ret2"], res.returns)


def _check_overflow(
    sum_sq: float, s, out: torch.Tensor, sum_sq2: float | None = None, out2: torch.Tensor | None = None
) -> None:
    """Finite inputs can still give outputs past the dtype's range (rewards near 1e308 summed over
    steps, or float32 returns past 3.4e38): raise instead of returning inf/NaN.

    Free in the usual case: every output satisfies ``|x| <= sqrt(sum of x^2)`` (the kernel's
    float64 sums), so only a bound at or past the dtype's maximum makes us look at the arrays.
    """
    fmax = torch.finfo(out.dtype).max
    pairs = [(sum_sq, out)] if sum_sq2 is None or out2 is None else [(sum_sq, out), (sum_sq2, out2)]
    for total, arr in pairs:
        if math.isfinite(total) and math.sqrt(total) < fmax:
            continue
        if not all_finite(arr):
            raise NonFiniteError(
                f"the returns overflow {arr.dtype}: rewards (and values) are finite but their discounted sums pass "
                f"{fmax:.3g}; rescale the rewards (e.g. divide by their maximum) or use float64"
            )


def _metrics_from_sums(
    stats: dict[str, float], num_episodes: int, res: _kernels.ScanResult, s: Steps
) -> dict[str, float]:
    n = stats["n"]
    if n == 0:
        return {"num_episodes": float(num_episodes), "num_steps": 0.0}
    if not (math.isfinite(stats["sum_adv2"]) and math.isfinite(stats["sum_adv"]) and math.isfinite(stats["sum_ret"])):
        # |A| past ~1e154: the sums of squares overflow, the advantages do not (checked above).
        from ..segments import scaled_moments

        assert res.returns is not None
        mask = s.mask
        mean_a, std_a = scaled_moments(res.out[mask])
        mean_g, _ = scaled_moments(res.returns[mask])
        return {
            "num_episodes": float(num_episodes),
            "num_steps": float(n),
            "advantages/mean": mean_a,
            "advantages/std": std_a,
            "returns/mean": mean_g,
            "values/mean": mean_g - mean_a,  # V = G - A
        }
    mean_a = stats["sum_adv"] / n
    var_a = max(stats["sum_adv2"] / n - mean_a * mean_a, 0.0)
    mean_g = stats["sum_ret"] / n
    return {
        "num_episodes": float(num_episodes),
        "num_steps": float(n),
        "advantages/mean": mean_a,
        "advantages/std": var_a**0.5,
        "returns/mean": mean_g,
        "values/mean": mean_g - mean_a,  # V = G - A
    }


# ---------------------------------------------------------------------- registry adapters


@register_method(
    "gae",
    family="advantage",
    kind="advantages",
    needs=("rewards|outcomes|components", "values"),
    summary="Generalized advantage estimation; termination cuts, truncation bootstraps",
    source="Schulman et al. 2016, arXiv 1506.02438",
)
def _run_gae(episodes, *, gamma: float = 0.99, lambda_: float = 0.95) -> AdvantageOutput:
    r, meta = step_rewards(episodes)
    out = gae(r, episodes.values, gamma=gamma, lambda_=lambda_, **step_kwargs(episodes))
    return AdvantageOutput(out.advantages, out.returns, {**out.metrics, **meta})


@register_method(
    "monte_carlo",
    family="advantage",
    kind="advantages",
    needs=("rewards|outcomes|components", "values?"),
    summary="Discounted return-to-go minus the value baseline (0 without values)",
    source="Sutton & Barto; REINFORCE",
)
def _run_monte_carlo(episodes, *, gamma: float = 0.99) -> AdvantageOutput:
    r, meta = step_rewards(episodes)
    out = monte_carlo(r, episodes.values, gamma=gamma, **step_kwargs(episodes))
    return AdvantageOutput(out.advantages, out.returns, {**out.metrics, **meta})
