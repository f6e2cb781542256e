"""The one evaluation of the SB3 runner: deterministic episodes on the true reward.

An :class:`Evaluator` owns a separate evaluation env (the task's own, dense reward; ``n`` =
``min(episodes, 10)`` copies, one batched forward pass per step) and, at every call:

1. copies the training env's observation statistics (``VecNormalize.obs_rms``) into its own
   frozen ``VecNormalize`` (``training=False``, no reward normalization), so the policy sees
   observations normalized as in training;
2. re-seeds the evaluation env with the same seed (env ``i`` gets ``seed + i``): every
   checkpoint is scored from the same start states;
3. runs SB3's own ``evaluate_policy`` (deterministic actions; returns and lengths from the
   ``Monitor`` under every wrapper, i.e. the true returns);
4. optionally returns each episode's trajectory, recorded by :class:`TrajectoryRecorder` on the
   raw environment (raw observations, the actions the env received, the true rewards, the infos).

:class:`EvaluationCallback` calls it on a schedule: at rollout starts (the policy changes only
between rollouts, so the evaluated policy is the one trained on exactly ``num_timesteps`` steps),
every ``every`` steps, optionally at step 0, and once at the end of training.

Example:
    >>> from stable_baselines3 import PPO
    >>> model = PPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0)
    >>> ev = Evaluator("CartPole-v1", episodes=2, seed=10, trajectories=True)
    >>> out = ev(model)
    >>> len(out.returns), out.episodes[0]["obs"].shape[0] == len(out.episodes[0]["rewards"]) + 1
    (2, True)
    >>> ev(model).returns == out.returns      # same start states, deterministic policy
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize, unwrap_vec_normalize

from ...errors import RangeError
from .envs import EnvSource, make_env

__all__ = ["Evaluation", "Evaluator", "EvaluationCallback", "TrajectoryRecorder"]


class TrajectoryRecorder(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Record every finished episode of the wrapped env: observations, actions, rewards, infos.

    ``finished`` holds one dict per episode: ``obs`` float64[T+1, O] (s_0 .. s_T, the last one the
    terminal observation), ``act`` float64[T, A], ``rewards`` float64[T], ``infos`` (T dicts).
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.finished: list[dict[str, Any]] = []
        self._obs: list[np.ndarray] = []
        self._act: list[np.ndarray] = []
        self._rew: list[float] = []
        self._infos: list[dict[str, Any]] = []

    def clear(self) -> None:
        """Forget the finished episodes (the running one is kept)."""
        self.finished = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = [np.asarray(obs, dtype=np.float64).reshape(-1)]
        self._act, self._rew, self._infos = [], [], []
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs.append(np.asarray(obs, dtype=np.float64).reshape(-1))
        self._act.append(np.asarray(action, dtype=np.float64).reshape(-1))
        self._rew.append(float(reward))
        self._infos.append(info)
        if terminated or truncated:
            self.finished.append(
                {
                    "obs": np.stack(self._obs),
                    "act": np.stack(self._act),
                    "rewards": np.asarray(self._rew),
                    "infos": list(self._infos),
                }
            )
        return obs, reward, terminated, truncated, info


class Evaluation(NamedTuple):
    """One evaluation of a policy.

    Attributes:
        timesteps: training steps of the evaluated policy.
        returns: true return of each episode, in the order they finished.
        lengths: their lengths.
        episodes: per-episode trajectories (see :class:`TrajectoryRecorder`; env by env) or None.
        seconds: wall time of this evaluation.
    """

    timesteps: int
    returns: list[float]
    lengths: list[int]
    episodes: list[dict[str, Any]] | None
    seconds: float

    @property
    def mean(self) -> float:
        """Mean true return."""
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Standard deviation of the true returns over episodes."""
        return float(np.std(self.returns))


class Evaluator:
    """Deterministic evaluation on the true reward with frozen observation normalization (see the module docstring).

    Args:
        env: the task (see :func:`~creditlab.integrations.sb3.envs.env_factory`); evaluated on its own reward.
        episodes: episodes per evaluation.
        seed: evaluation seed (the runner uses the training seed + 10,000): env ``i`` starts from ``seed + i``.
        n_envs: parallel evaluation envs (default ``min(episodes, 10)``, one episode per env).
        env_kwargs: constructor keyword arguments.
        normalize_observations: the policy was trained on ``VecNormalize`` d observations.
        trajectories: record each episode's trajectory (``Evaluation.episodes``).
    """

    def __init__(
        self,
        env: EnvSource,
        *,
        episodes: int = 10,
        seed: int = 10_000,
        n_envs: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        normalize_observations: bool = False,
        trajectories: bool = False,
    ):
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise RangeError(f"episodes must be an int >= 1; got {episodes!r}")
        self.episodes = episodes
        self.seed = int(seed)
        self.seconds = 0.0
        self._recorders: list[TrajectoryRecorder] | None = [] if trajectories else None

        def record(e: gym.Env) -> gym.Env:
            rec = TrajectoryRecorder(e)
            self._recorders.append(rec)
            return rec

        n = min(episodes, 10) if n_envs is None else n_envs
        self.env = make_env(
            env,
            n_envs=n,
            reward="dense",
            seed=self.seed,
            env_kwargs=env_kwargs,
            env_wrapper=record if trajectories else None,
        )
        if normalize_observations:
            self.env = VecNormalize(self.env, training=False, norm_obs=True, norm_reward=False)

    def __call__(self, model: Any, timesteps: int | None = None) -> Evaluation:
        """Evaluate ``model`` (``timesteps`` defaults to ``model.num_timesteps``)."""
        from stable_baselines3.common.evaluation import evaluate_policy

        t0 = time.perf_counter()
        train_norm = unwrap_vec_normalize(model.get_env()) if model.get_env() is not None else None
        if isinstance(self.env, VecNormalize) and train_norm is not None:
            self.env.obs_rms = train_norm.obs_rms.copy()
        for rec in self._recorders or ():
            rec.clear()
        self.env.seed(self.seed)  # same start states at every checkpoint
        returns, lengths = evaluate_policy(
            model, self.env, n_eval_episodes=self.episodes, deterministic=True, return_episode_rewards=True, warn=False
        )
        episodes = None
        if self._recorders is not None:
            n = len(self._recorders)
            # evaluate_policy counts the first (episodes + i) // n episodes of env i
            episodes = [ep for i, rec in enumerate(self._recorders) for ep in rec.finished[: (self.episodes + i) // n]]
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        steps = int(model.num_timesteps) if timesteps is None else int(timesteps)
        return Evaluation(steps, [float(r) for r in returns], [int(n) for n in lengths], episodes, seconds)

    def close(self) -> None:
        self.env.close()


class EvaluationCallback(BaseCallback):
    """Evaluate at rollout starts every ``every`` steps (and at step 0 if ``at_start``) and at the end of training.

    ``every = 0``: no periodic evaluation. ``evaluations`` holds the results in order;
    ``on_evaluation(evaluation, model)`` is called after each one. Logs ``eval/mean_reward`` and
    ``eval/mean_ep_length`` like SB3's ``EvalCallback``.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        every: int,
        *,
        at_start: bool = True,
        on_evaluation: Callable[[Evaluation, Any], None] | None = None,
    ):
        super().__init__(0)
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise RangeError(f"every must be an int >= 0 (0: only at the end); got {every!r}")
        self.evaluator = evaluator
        self.every = every
        self.on_evaluation = on_evaluation
        self.next_eval = 0 if at_start else (every if every > 0 else None)
        self.evaluations: list[Evaluation] = []

    def _evaluate(self) -> None:
        ev = self.evaluator(self.model, self.num_timesteps)
        self.evaluations.append(ev)
        self.logger.record("eval/mean_reward", ev.mean)
        self.logger.record("eval/mean_ep_length", float(np.mean(ev.lengths)))
        if self.on_evaluation is not None:
            self.on_evaluation(ev, self.model)

    def _on_rollout_start(self) -> None:
        # The policy only changes between rollouts (in ``train()``), so evaluating here scores the
        # policy trained on exactly ``num_timesteps`` steps (the initial policy at 0).
        if self.next_eval is not None and self.num_timesteps >= self.next_eval:
            self._evaluate()
            if self.every > 0:
                while self.next_eval <= self.num_timesteps:
                    self.next_eval += self.every
            else:
                self.next_eval = None

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if not self.evaluations or self.evaluations[-1].timesteps < self.num_timesteps:
            self._evaluate()
