"""The one environment construction of the SB3 runner: what to build, which reward, how many, seeded how.

* The environment: a Gymnasium id (``"Hopper-v5"``), a ``"module:Class"`` / ``"module:factory"``
  string (imported, then called with ``env_kwargs``), or a zero-argument callable returning a
  ``gymnasium.Env`` (:func:`env_factory`).
* The reward the agent trains on (:func:`reward_wrapper`): ``"dense"`` (the task's own reward),
  ``"episodic"`` (:class:`~creditlab.integrations.gymnasium.EpisodicReward`: the sum at the last
  step) or ``"delayed:K"`` (:class:`~creditlab.integrations.gymnasium.DelayedReward`: released
  every K steps and at the end).
* :func:`make_env`: ``n_envs`` copies in an SB3 ``DummyVecEnv`` built by SB3's ``make_vec_env``:
  env ``i`` gets ``action_space.seed(seed + i)`` and ``reset(seed=seed + i)`` at its first reset
  (later resets continue its own random stream). SB3's ``Monitor`` sits *under* the delay
  wrapper, so logged episode returns (``info["episode"]``, ``rollout/ep_rew_mean``) are true
  returns. An optional VecEnv wrapper (e.g. a reward program) goes on the ``DummyVecEnv``, then
  optionally ``VecNormalize``.

Example:
    >>> venv = make_env("CartPole-v1", n_envs=2, reward="delayed:3", seed=0)
    >>> _ = venv.reset()
    >>> [float(venv.step([0, 0])[1][0]) for _ in range(3)]    # CartPole pays 1 per step
    [0.0, 0.0, 3.0]
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from ...errors import RangeError

__all__ = ["EnvSource", "env_factory", "reward_wrapper", "make_env"]

EnvSource = str | Callable[[], gym.Env]
"""A Gymnasium id, a ``"module:Class"`` / ``"module:factory"`` string, or a zero-argument callable."""


def env_factory(env: EnvSource, env_kwargs: Mapping[str, Any] | None = None) -> Callable[[], gym.Env]:
    """A zero-argument factory of one environment.

    Args:
        env: a Gymnasium id (``gym.make(env, **env_kwargs)``), a ``"module:attr"`` string whose
            attribute is an env class or factory (called with ``env_kwargs``; if the module has no
            such attribute, ``gym.make("module:attr")`` -- Gymnasium's "import, then make the id"),
            or a zero-argument callable (``env_kwargs`` are passed to it when given).
        env_kwargs: keyword arguments of the constructor.

    Example:
        >>> env_factory("gymnasium.envs.classic_control:CartPoleEnv")().observation_space.shape
        (4,)
    """
    kwargs = dict(env_kwargs or {})
    if callable(env) and not isinstance(env, str):
        return functools.partial(env, **kwargs) if kwargs else env
    if not isinstance(env, str) or not env:
        raise RangeError(
            f"env must be a Gymnasium id, a 'module:Class' string or a zero-argument callable; got {env!r}"
        )
    if ":" not in env:
        return functools.partial(gym.make, env, **kwargs)
    module_name, _, attr = env.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RangeError(f"env {env!r}: module {module_name!r} cannot be imported ({exc})") from exc
    target = getattr(module, attr, None)
    if target is None:
        if attr in gym.registry:  # Gymnasium's "module:EnvId": the import registered the id
            return functools.partial(gym.make, attr, **kwargs)
        raise RangeError(
            f"env {env!r}: module {module_name!r} has no attribute {attr!r} and {attr!r} is not a registered Gymnasium id"
        )
    if not callable(target):
        raise RangeError(f"env {env!r}: {attr!r} must be an environment class or factory; got {type(target).__name__}")
    return functools.partial(target, **kwargs)


def reward_wrapper(reward: str) -> tuple[type[gym.Wrapper] | None, dict[str, Any]]:
    """The Gymnasium wrapper (and its keyword arguments) that hides the task's per-step reward.

    ``"dense"`` -> ``(None, {})``, ``"episodic"`` -> ``(EpisodicReward, {})``,
    ``"delayed:K"`` -> ``(DelayedReward, {"delay": K})``.

    Example:
        >>> reward_wrapper("delayed:5")[1]
        {'delay': 5}
    """
    from ..gymnasium import DelayedReward, EpisodicReward

    if reward == "dense":
        return None, {}
    if reward == "episodic":
        return EpisodicReward, {}
    if isinstance(reward, str) and reward.startswith("delayed:"):
        k = reward.partition(":")[2]
        if k.isdigit() and int(k) >= 1:
            return DelayedReward, {"delay": int(k)}
    raise RangeError(f"reward must be 'dense', 'episodic' or 'delayed:K' with an integer K >= 1; got {reward!r}")


def make_env(
    env: EnvSource,
    *,
    n_envs: int = 8,
    reward: str = "episodic",
    seed: int = 0,
    env_kwargs: Mapping[str, Any] | None = None,
    normalize_observations: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    delay: int | None = None,
    env_wrapper: Callable[[gym.Env], gym.Env] | None = None,
    vec_env_wrapper: Callable[[VecEnv], VecEnv] | None = None,
) -> VecEnv:
    """``n_envs`` copies of ``env`` in a ``DummyVecEnv`` paying the ``reward`` protocol (see the module docstring).

    Args:
        env: see :func:`env_factory`.
        n_envs: parallel environments.
        reward: ``"dense"``, ``"episodic"`` or ``"delayed:K"``.
        seed: env ``i`` is reset with ``seed + i`` at its first reset (and its action space seeded).
        env_kwargs: constructor keyword arguments.
        normalize_observations, normalize_rewards: wrap in ``VecNormalize`` (with ``gamma``).
        delay: the older spelling ``reward="delayed", delay=K`` (``delay`` defaults to 10 there).
        env_wrapper: a Gymnasium wrapper put outside the reward wrapper (e.g. a trajectory recorder).
        vec_env_wrapper: a ``VecEnv -> VecEnv`` wrapper put on the ``DummyVecEnv`` (under ``VecNormalize``).
    """
    from stable_baselines3.common.env_util import make_vec_env

    if reward == "delayed":
        reward = f"delayed:{10 if delay is None else delay}"
    wrapper_class, wrapper_kwargs = reward_wrapper(reward)
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise RangeError(f"n_envs must be an int >= 1; got {n_envs!r}")
    if env_wrapper is not None:
        inner = wrapper_class

        def wrap(e: gym.Env) -> gym.Env:
            return env_wrapper(inner(e, **wrapper_kwargs) if inner is not None else e)

        wrapper_class, wrapper_kwargs = wrap, {}
    # make_vec_env puts Monitor directly on the environment and the wrapper outside it, so the
    # Monitor's episode returns are true returns whatever the agent trains on.
    venv: VecEnv = make_vec_env(
        env_factory(env, env_kwargs),
        n_envs=n_envs,
        seed=seed,
        wrapper_class=wrapper_class,
        wrapper_kwargs=wrapper_kwargs,
        vec_env_cls=DummyVecEnv,
    )
    if vec_env_wrapper is not None:
        try:
            venv = vec_env_wrapper(venv)
        except BaseException:
            venv.close()
            raise
    if normalize_observations or normalize_rewards:
        venv = VecNormalize(venv, norm_obs=normalize_observations, norm_reward=normalize_rewards, gamma=gamma)
    return venv
