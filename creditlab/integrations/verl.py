"""verl adapter: creditlab estimators with verl's advantage-estimator signature.

verl calls a registered estimator as ``fn(token_level_rewards=..., response_mask=..., config=...,
index=..., **optional) -> (advantages, returns)``, all tensors ``[bs, L]`` over response tokens;
``response_mask`` is 0 on tool/observation tokens and padding; ``index`` is a NumPy array of
per-prompt ``uid``s (any group sizes). The functions here follow that contract:

* :func:`compute_turn_rloo_advantage` -- multi-turn rows (one row per trajectory): each run of
  response tokens is a turn; a turn's reward is the sum of ``token_level_rewards`` from its first
  token up to the next turn (so a reward verl put on an observation token belongs to the turn
  that caused it); advantages are :func:`creditlab.llm.turn_rloo`'s, broadcast to the turn's
  tokens. Unbiased when trajectories take different numbers of turns.
* :func:`compute_gigpo_advantage` -- verl-agent's layout (one row per turn, ``anchor_obs``,
  ``traj_index``, ``step_rewards`` passed as extra keyword arguments, as verl-agent's trainer
  does): :func:`creditlab.llm.gigpo_rows`, O(N) grouping.

Importing this module registers them with verl as ``creditlab_turn_rloo`` and ``creditlab_gigpo``
when verl is importable (``algorithm.adv_estimator=creditlab_turn_rloo``); verl is never required.
Tested against verl 0.9.1's ``register_adv_est`` / ``get_adv_estimator_fn`` when it is installed,
and on verl-shaped synthetic tensors always (tests/test_verl.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._arrays import factorize_ids
from ..errors import MissingColumnError
from ..llm._token_kernels import turn_broadcast, turn_sums
from ..llm.gigpo import gigpo_rows
from ..llm.turn_returns import turn_rloo

__all__ = [
    "ESTIMATORS",
    "compute_gigpo_advantage",
    "compute_turn_rloo_advantage",
    "register_with_verl",
]


def _cfg(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    getter = getattr(config, "get", None)
    if callable(getter):
        try:
            return getter(key, default)
        except Exception:  # noqa: BLE001 - dataclass configs have .get with other semantics
            pass
    return getattr(config, key, default)


def _index(index: Any, bs: int) -> np.ndarray:
    if index is None:
        raise MissingColumnError("this estimator needs index (verl's per-prompt uid array, shape [bs])")
    arr = np.asarray(index)
    if arr.shape != (bs,):
        raise MissingColumnError(f"index has shape {arr.shape}; expected ({bs},)")
    if arr.dtype.kind in "USO":  # verl's uids: hashed in O(N), not sorted
        return factorize_ids(arr, "index").index.numpy()
    return arr


def compute_turn_rloo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    gamma: float | None = None,
    baseline: str | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn-level returns with a leave-one-out group baseline, in verl's estimator signature.

    Args:
        token_level_rewards: float[bs, L] -- rewards on response-side tokens (per-turn rewards at
            turn ends, the outcome at the last token, or anywhere in between).
        response_mask: bool/int[bs, L] -- 1 on tokens the policy generated.
        index: [bs] -- per-prompt uid (groups).
        config: verl's algorithm config; ``gamma`` (default 1.0) and
            ``turn_rloo_baseline`` ("turn" or "episode") are read from it when present.
        gamma, baseline: override the config.

    Returns:
        ``(advantages, returns)``, float[bs, L]: each turn's advantage / return-to-go on its
        policy tokens, 0 on tool/observation tokens and padding.
    """
    gamma = float(_cfg(config, "gamma", 1.0) if gamma is None else gamma)
    baseline = str(_cfg(config, "turn_rloo_baseline", "turn") if baseline is None else baseline)
    rm = response_mask.bool()
    groups = _index(index, rm.shape[0])
    # A turn starts where a policy token follows a non-policy token; each token's reward goes to the
    # turn it belongs to or follows (a reward verl put on an observation token belongs to the turn
    # before it). One compiled pass per row on CPU.
    rewards, num_turns = turn_sums(rm, token_level_rewards.detach())
    t = rewards.shape[1]
    mask = torch.arange(t, device=rewards.device)[None, :] < num_turns[:, None].to(rewards.device)
    out = turn_rloo(rewards, groups, mask=mask, gamma=gamma, baseline=baseline)
    dtype = token_level_rewards.dtype
    dev = token_level_rewards.device
    return turn_broadcast(rm, out.advantages, dtype).to(dev), turn_broadcast(rm, out.returns, dtype).to(dev)


def compute_gigpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    anchor_obs: Any = None,
    traj_index: Any = None,
    step_rewards: Any = None,
    step_advantage_w: float | None = None,
    mode: str | None = None,
    epsilon: float = 1e-6,
    episode_stats: str | None = None,
    similarity: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GiGPO for verl-agent's one-row-per-turn layout, in verl's estimator signature.

    Args:
        token_level_rewards: float[bs, L] -- each row's sum is its episode reward (verl-agent
            puts the trajectory's reward on every step row).
        response_mask: [bs, L].
        index: [bs] -- episode-group uid.
        config: read for ``gigpo.step_advantage_w``, ``gigpo.mode``, ``gigpo.episode_stats``
            (flat keys ``step_advantage_w`` / ``gigpo_mode`` also accepted).
        anchor_obs: [bs] -- hashable anchor observation of each row.
        traj_index: [bs] -- trajectory uid of each row.
        step_rewards: float[bs] -- discounted return from each step (verl-agent's
            ``compute_step_discounted_returns``).
        step_advantage_w, mode, epsilon, episode_stats, similarity: as in
            :func:`creditlab.llm.gigpo_rows` (defaults: 1.0, "mean_norm", 1e-6, "trajectory").

    Returns:
        ``(advantages, advantages)`` float[bs, L] (verl-agent returns the same tensor twice).
    """
    missing = [name for name, v in (("anchor_obs", anchor_obs), ("traj_index", traj_index), ("step_rewards", step_rewards)) if v is None]
    if missing:
        raise MissingColumnError(
            f"creditlab_gigpo needs {missing} as keyword arguments (one per row, verl-agent's layout); stock verl's "
            "compute_advantage does not pass them, verl-agent's trainer does"
        )
    sub = _cfg(config, "gigpo", None)
    w = step_advantage_w if step_advantage_w is not None else _cfg(sub, "step_advantage_w", _cfg(config, "step_advantage_w", 1.0))
    mode = mode or _cfg(sub, "mode", _cfg(config, "gigpo_mode", "mean_norm"))
    episode_stats = episode_stats or _cfg(sub, "episode_stats", "trajectory")
    rm = response_mask.to(token_level_rewards.dtype)
    bs = rm.shape[0]
    groups = _index(index, bs)
    scores = token_level_rewards.detach().sum(dim=-1)
    sr = step_rewards.detach() if isinstance(step_rewards, torch.Tensor) else torch.as_tensor(np.asarray(step_rewards, dtype=np.float64))
    anchors = list(anchor_obs) if not isinstance(anchor_obs, np.ndarray) or anchor_obs.dtype == object else anchor_obs
    out = gigpo_rows(scores, sr.to(scores.device, scores.dtype), anchors, groups, np.asarray(traj_index), step_weight=float(w),
                     mode=mode, episode_stats=episode_stats, similarity=similarity, eps=epsilon)
    adv = out.advantages.to(token_level_rewards.dtype)[:, None] * rm
    return adv, adv


ESTIMATORS = {
    "creditlab_turn_rloo": compute_turn_rloo_advantage,
    "creditlab_gigpo": compute_gigpo_advantage,
}


def register_with_verl() -> list[str]:
    """Register :data:`ESTIMATORS` with verl's ``register_adv_est``; returns the names registered.

    Safe to call again (a name already bound to the same function is left alone). Raises
    ImportError when verl is not installed.
    """
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

    done = []
    for name, fn in ESTIMATORS.items():
        current = ADV_ESTIMATOR_REGISTRY.get(name)
        if current is not None and current is not fn:
            # a previous import of this module (e.g. a reload) registered an older function object
            ADV_ESTIMATOR_REGISTRY.pop(name)
        register_adv_est(name)(fn)
        done.append(name)
    return done


try:  # register on import when verl is there; never a dependency
    import verl.trainer.ppo.core_algos  # noqa: F401
except Exception:  # noqa: BLE001 - absent or broken verl: call register_with_verl() to see why
    pass
else:  # pragma: no cover - depends on the environment
    register_with_verl()
