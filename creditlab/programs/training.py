"""The default ``train_and_score`` for Eureka-style selection: a short SB3 PPO run per reward program.

The program's dense reward (sandboxed, batched over the vectorized envs by
:class:`~creditlab.programs.loaders.DenseRewardVecEnvWrapper`) replaces the environment reward
for training; the **fitness** is measured on separate evaluation episodes with the environment's
own reward (mean true return by default, or a user-supplied ``fitness(episodes)``, e.g. a success
rate). Between checkpoints the mean of each reward component per step is recorded, which is what
Eureka's reward reflection needs.

Training and evaluation are the SB3 runner's (:func:`creditlab.integrations.sb3.train`): the
program's wrapper enters as its ``vec_env_wrapper``, evaluation episodes (with trajectories, for
the failed-episode summaries) come from its :class:`~creditlab.integrations.sb3.Evaluator`.

Any callable ``program -> TrainScore`` can replace this one (e.g. the benchmark's PPO runner).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import RangeError
from .program import Program
from .sandbox import SandboxConfig
from .selection import TrainScore, summarize_episode
from .spec import TaskSpec

__all__ = ["PPOTrainAndScore", "evaluate_policy_episodes"]

# PPO arguments that are fields of the runner's config (a ``ppo_kwargs`` entry moves there).
_CONFIG_FIELDS = ("gamma", "device", "verbose", "tensorboard_log", "policy")


def evaluate_policy_episodes(model: Any, make_env: Callable[[], Any], episodes: int, seed: int) -> list[dict[str, Any]]:
    """``episodes`` deterministic episodes of ``model``, each ``{"obs": [T+1, o], "act": [T, a], "rewards": [T], "infos": [...]}``.

    The runner's evaluation (:class:`~creditlab.integrations.sb3.Evaluator`, trajectories on):
    episode ``k`` of the first ten starts from ``reset(seed=seed + k)``. The model must take raw
    observations (no VecNormalize).
    """
    from ..integrations.sb3 import Evaluator

    ev = Evaluator(make_env, episodes=episodes, seed=seed, trajectories=True)
    try:
        return ev(model).episodes
    finally:
        ev.close()


class PPOTrainAndScore:
    """Train SB3 PPO briefly on a program's dense reward and report fitness + component statistics.

    Args:
        env_id: Gymnasium id or ``"module:Class"`` (or pass ``make_env``).
        make_env: zero-argument factory of the (single) environment.
        spec: the task spec (used to name values in failed-episode summaries).
        total_timesteps: environment steps of training per program.
        checkpoints: evaluations during training, every ``total_timesteps // checkpoints`` steps
            (at the first rollout boundary past each multiple) and at the end.
        n_envs: vectorized environments (the reward program is called once per vector step).
        eval_episodes: deterministic evaluation episodes at each checkpoint.
        fitness: ``episodes -> float`` (see :func:`evaluate_policy_episodes`); default: mean true return.
        success: ``episode -> bool`` deciding which evaluation episodes count as failed (for the
            trajectory analyzer); default: episodes whose return is below the median.
        seed: seed of PPO, the envs and evaluation (evaluation: ``seed + 10_000``).
        ppo_kwargs: extra arguments of ``stable_baselines3.PPO`` (``gamma``, ``device``,
            ``verbose``, ``tensorboard_log``, ``policy`` go to the runner's config).
        config: sandbox limits of the reward program.
    """

    def __init__(
        self,
        env_id: str | None = None,
        *,
        make_env: Callable[[], Any] | None = None,
        spec: TaskSpec | None = None,
        total_timesteps: int = 20_000,
        checkpoints: int = 4,
        n_envs: int = 4,
        eval_episodes: int = 3,
        fitness: Callable[[list[dict[str, Any]]], float] | None = None,
        success: Callable[[dict[str, Any]], bool] | None = None,
        seed: int = 0,
        ppo_kwargs: dict[str, Any] | None = None,
        config: SandboxConfig | None = None,
    ) -> None:
        if (env_id is None) == (make_env is None):
            raise RangeError("pass exactly one of env_id and make_env")
        if total_timesteps < 1 or checkpoints < 1 or n_envs < 1 or eval_episodes < 1:
            raise RangeError("total_timesteps, checkpoints, n_envs and eval_episodes must all be >= 1")
        self.env = env_id if env_id is not None else make_env
        self.spec = spec
        self.total_timesteps = int(total_timesteps)
        self.checkpoints = int(checkpoints)
        self.n_envs = int(n_envs)
        self.eval_episodes = int(eval_episodes)
        self.fitness = fitness or (lambda eps: float(np.mean([e["rewards"].sum() for e in eps])))
        self.success = success
        self.seed = int(seed)
        self.ppo_kwargs = dict(ppo_kwargs or {})
        self.config = config

    def run_config(self) -> Any:
        """The runner's :class:`~creditlab.integrations.sb3.RunConfig` of one program's training."""
        from ..integrations.sb3 import RunConfig

        kwargs: dict[str, Any] = {
            "n_steps": max(16, min(2048, self.total_timesteps // (self.n_envs * 2) or 16)),
            "batch_size": 64,
        }
        kwargs.update(self.ppo_kwargs)
        fields = {k: kwargs.pop(k) for k in _CONFIG_FIELDS if k in kwargs}
        seed = kwargs.pop("seed", self.seed)
        return RunConfig(
            self.env,
            algo="ppo",
            reward="dense",
            total_timesteps=self.total_timesteps,
            n_envs=self.n_envs,
            seed=seed,
            algo_kwargs=kwargs,
            eval_every=max(1, self.total_timesteps // self.checkpoints),
            eval_at_start=False,
            eval_episodes=self.eval_episodes,
            eval_trajectories=True,
            **fields,
        )

    def __call__(self, program: Program) -> TrainScore:
        from ..integrations.sb3 import train
        from .loaders import DenseRewardVecEnvWrapper

        wrappers: list[Any] = []

        def wrap(venv: Any) -> Any:
            wrappers.append(DenseRewardVecEnvWrapper(venv, program, config=self.config))
            return wrappers[-1]

        curve: list[float] = []
        comps: dict[str, list[float]] = {}
        last = {"steps": 0, "reward": 0.0, "sums": {}}

        def checkpoint(evaluation: Any, model: Any) -> None:
            wrapped = wrappers[0]
            steps = wrapped.steps - last["steps"]
            for k, v in wrapped.component_sums.items():
                comps.setdefault(k, []).append((v - last["sums"].get(k, 0.0)) / max(steps, 1))
            comps.setdefault("total program reward", []).append((wrapped.reward_sum - last["reward"]) / max(steps, 1))
            last.update(steps=wrapped.steps, reward=wrapped.reward_sum, sums=dict(wrapped.component_sums))
            curve.append(float(self.fitness(evaluation.episodes)))

        result = train(self.run_config(), vec_env_wrapper=wrap, on_evaluation=checkpoint)
        episodes = result.evaluations[-1].episodes
        returns = np.array([e["rewards"].sum() for e in episodes])
        if self.success is not None:
            failed = [e for e in episodes if not self.success(e)]
        else:
            failed = [e for e, r in zip(episodes, returns) if r < np.median(returns)] or (
                [] if returns.size > 1 else episodes
            )
        if self.spec is not None:
            summaries = [summarize_episode(self.spec, e["obs"], e["act"], e["rewards"]) for e in failed]
        else:
            summaries = [
                {"length": int(len(e["rewards"])), "return": round(float(e["rewards"].sum()), 4)} for e in failed
            ]
        metrics = {"train/steps": float(wrappers[0].steps), "train/eval_return_mean": float(returns.mean())}
        return TrainScore(curve[-1], curve, comps, summaries, metrics)
