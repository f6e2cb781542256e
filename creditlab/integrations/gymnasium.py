"""Gymnasium wrappers that delay a task's reward, keeping the true reward for evaluation.

* :class:`EpisodicReward` pays 0 on every step and the episode's accumulated reward on its last
  step (terminated *or* truncated): the "episodic reward" protocol of the IRCR, RRD and LaRe
  papers (RRD's ``envs/ep_rews.py``).
* :class:`DelayedReward` releases the reward accumulated since the last release every
  ``delay`` steps and on the last step.
* :class:`VectorEpisodicReward` / :class:`VectorDelayedReward` are the twins for
  ``gymnasium.vector.VectorEnv`` (all autoreset modes).

Both keep ``terminated``/``truncated`` exactly and put the hidden true per-step reward in
``info["creditlab/true_reward"]`` (:data:`~creditlab.integrations.TRUE_REWARD_KEY`; in vector
infos, with the ``"_creditlab/true_reward"`` mask). It is there for evaluation (credit quality,
dense-reward curves); a credit-assignment method must never read it. The sum of the released
rewards over an episode always equals the sum of the true rewards.

Change logs:
    creditlab 0.1.0 -- initially added.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.core import ActType, ObsType
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from ..errors import RangeError
from . import TRUE_REWARD_KEY

__all__ = [
    "TRUE_REWARD_KEY",
    "DelayedReward",
    "EpisodicReward",
    "VectorDelayedReward",
    "VectorEpisodicReward",
]


def _check_delay(delay: int | None) -> int | None:
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or int(delay) < 1:
        raise RangeError(f"delay must be an integer >= 1 (steps between reward releases) or None; got {delay!r}")
    return int(delay)


class DelayedReward(gym.Wrapper[ObsType, ActType, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """Release the accumulated reward every ``delay`` steps and at the end of the episode.

    Step t (1-based within the episode) returns the sum of the true rewards since the last
    release when ``t % delay == 0`` or the episode ends (terminated or truncated), else 0. The true
    reward of the step is in ``info["creditlab/true_reward"]`` (evaluation only).

    Args:
        env: the environment to wrap.
        delay: steps between releases (>= 1; 1 leaves the reward unchanged). None: only at the end
            (see :class:`EpisodicReward`).

    Example:
        >>> import gymnasium as gym
        >>> env = DelayedReward(gym.make("CartPole-v1"), delay=3)
        >>> _ = env.reset(seed=0)
        >>> [env.step(0)[1] for _ in range(4)]          # CartPole pays 1 per step
        [0.0, 0.0, 3.0, 0.0]
        >>> env.step(0)[4]["creditlab/true_reward"]
        1.0
    """

    def __init__(self, env: gym.Env[ObsType, ActType], delay: int | None):
        delay = _check_delay(delay)
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        gym.Wrapper.__init__(self, env)
        self.delay = delay
        self._accumulated = 0.0
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        self._accumulated = 0.0
        self._steps = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        r = float(reward)
        self._accumulated += r
        self._steps += 1
        release = terminated or truncated or (self.delay is not None and self._steps % self.delay == 0)
        out = self._accumulated if release else 0.0
        if release:
            self._accumulated = 0.0
        info = dict(info)
        info[TRUE_REWARD_KEY] = r
        return obs, out, terminated, truncated, info


class EpisodicReward(DelayedReward[ObsType, ActType]):
    """Pay 0 on every step and the episode's total reward on its last step.

    The last step is the one that terminates *or* truncates the episode (a time limit pays what
    was earned so far), so the episode's released sum equals its true return. The true per-step
    reward is in ``info["creditlab/true_reward"]`` (evaluation only).

    Example:
        >>> import gymnasium as gym
        >>> env = EpisodicReward(gym.make("CartPole-v1", max_episode_steps=4))
        >>> _ = env.reset(seed=0)
        >>> [env.step(0)[1] for _ in range(4)]          # truncated after 4 steps
        [0.0, 0.0, 0.0, 4.0]
    """

    def __init__(self, env: gym.Env[ObsType, ActType]):
        gym.utils.RecordConstructorArgs.__init__(self)
        DelayedReward.__init__(self, env, None)


class VectorDelayedReward(VectorWrapper, gym.utils.RecordConstructorArgs):
    """Vector twin of :class:`DelayedReward` for ``gymnasium.vector.VectorEnv``.

    Handles the three autoreset modes: with ``NEXT_STEP`` (Gymnasium's default) the step that
    resets a finished sub-environment is not a transition, pays 0 and starts a new accumulation;
    with ``SAME_STEP`` the accumulation restarts right after the release; with ``DISABLED`` it
    restarts when ``reset`` (optionally with ``options={"reset_mask": ...}``) is called.
    ``infos["creditlab/true_reward"]`` holds the true rewards, ``infos["_creditlab/true_reward"]``
    marks the sub-environments where the step was a real transition.

    Example:
        >>> import gymnasium as gym
        >>> envs = VectorDelayedReward(gym.make_vec("CartPole-v1", num_envs=2), delay=2)
        >>> _ = envs.reset(seed=0)
        >>> [envs.step(np.zeros(2, dtype=int))[1].tolist() for _ in range(2)]
        [[0.0, 0.0], [2.0, 2.0]]
    """

    def __init__(self, env: VectorEnv, delay: int | None):
        delay = _check_delay(delay)
        gym.utils.RecordConstructorArgs.__init__(self, delay=delay)
        VectorWrapper.__init__(self, env)
        self.delay = delay
        mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if not isinstance(mode, AutoresetMode):
            mode = AutoresetMode(mode)
        self._mode = mode
        self._accumulated = np.zeros(self.num_envs)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._prev_done = np.zeros(self.num_envs, dtype=bool)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        which = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:  # read before the env pops it
            which = np.asarray(options["reset_mask"], dtype=bool).copy()
        obs, info = self.env.reset(seed=seed, options=options)
        self._accumulated[which] = 0.0
        self._steps[which] = 0
        self._prev_done[which] = False
        return obs, info

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        r = np.asarray(rewards, dtype=np.float64)
        if self._mode == AutoresetMode.NEXT_STEP:
            resetting = self._prev_done
            self._accumulated[resetting] = 0.0
            self._steps[resetting] = 0
            active = ~resetting
        else:
            active = np.ones(self.num_envs, dtype=bool)
        self._accumulated[active] += r[active]
        self._steps[active] += 1
        done = np.logical_or(terminations, truncations)
        periodic = (self._steps % self.delay == 0) if self.delay is not None else np.zeros(self.num_envs, dtype=bool)
        release = active & (done | periodic)
        out = np.where(release, self._accumulated, 0.0)
        self._accumulated[release] = 0.0
        if self._mode == AutoresetMode.SAME_STEP:
            self._steps[done] = 0
        self._prev_done = np.asarray(done, dtype=bool).copy()
        infos = dict(infos)
        infos[TRUE_REWARD_KEY] = np.where(active, r, 0.0)
        infos["_" + TRUE_REWARD_KEY] = active.copy()
        return obs, out, terminations, truncations, infos


class VectorEpisodicReward(VectorDelayedReward):
    """Vector twin of :class:`EpisodicReward` (see :class:`VectorDelayedReward` for autoreset).

    Example:
        >>> import gymnasium as gym
        >>> envs = VectorEpisodicReward(gym.make_vec("CartPole-v1", num_envs=2, max_episode_steps=2))
        >>> _ = envs.reset(seed=0)
        >>> [envs.step(np.zeros(2, dtype=int))[1].tolist() for _ in range(3)]   # 3rd step: autoreset
        [[0.0, 0.0], [2.0, 2.0], [0.0, 0.0]]
    """

    def __init__(self, env: VectorEnv):
        gym.utils.RecordConstructorArgs.__init__(self)
        VectorDelayedReward.__init__(self, env, None)
