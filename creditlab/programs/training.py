"""The default ``train_and_score`` for Eureka-style selection: a short SB3 PPO run per reward program.

The program's dense reward (sandboxed, batched over the vectorized envs by
:class:`~creditlab.programs.loaders.DenseRewardVecEnvWrapper`) replaces the environment reward
for training; the **fitness** is measured on separate evaluation episodes with the environment's
own reward (mean true return by default, or a user-supplied ``fitness(episodes)``, e.g. a success
rate). Between checkpoints the mean of each reward component per step is recorded, which is what
Eureka's reward reflection needs.

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


def evaluate_policy_episodes(model: Any, make_env: Callable[[], Any], episodes: int, seed: int) -> list[dict[str, Any]]:
    """Run ``episodes`` deterministic episodes; each as ``{"obs": [T+1, o], "act": [T, a], "rewards": [T], "infos": [...]}``."""
    env = make_env()
    out = []
    try:
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            os_, acts, rews, infos = [np.asarray(obs, dtype=np.float64).reshape(-1)], [], [], []
            done = False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, r, term, trunc, info = env.step(action)
                os_.append(np.asarray(obs, dtype=np.float64).reshape(-1))
                acts.append(np.asarray(action, dtype=np.float64).reshape(-1))
                rews.append(float(r))
                infos.append(info)
                done = bool(term or trunc)
            out.append({"obs": np.stack(os_), "act": np.stack(acts), "rewards": np.asarray(rews), "infos": infos})
    finally:
        env.close()
    return out


class PPOTrainAndScore:
    """Train SB3 PPO briefly on a program's dense reward and report fitness + component statistics.

    Args:
        env_id: Gymnasium id (or pass ``make_env``).
        make_env: zero-argument factory of the (single) environment.
        spec: the task spec (used to name values in failed-episode summaries).
        total_timesteps: environment steps of training per program.
        checkpoints: evaluation points during training (Eureka's "every few epochs").
        n_envs: vectorized environments (the reward program is called once per vector step).
        eval_episodes: deterministic evaluation episodes at each checkpoint.
        fitness: ``episodes -> float`` (see :func:`evaluate_policy_episodes`); default: mean true return.
        success: ``episode -> bool`` deciding which evaluation episodes count as failed (for the
            trajectory analyzer); default: episodes whose return is below the median.
        seed: seed of PPO, the envs and evaluation.
        ppo_kwargs: extra arguments of ``stable_baselines3.PPO``.
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
        if make_env is None:
            import gymnasium as gym

            def make_env() -> Any:
                return gym.make(env_id)

        self.make_env = make_env
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

    def __call__(self, program: Program) -> TrainScore:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        from .loaders import DenseRewardVecEnvWrapper

        torch.set_num_threads(1)
        venv = DummyVecEnv([lambda: Monitor(self.make_env()) for _ in range(self.n_envs)])
        venv.seed(self.seed)
        wrapped = DenseRewardVecEnvWrapper(venv, program, config=self.config)
        try:
            kwargs = {"n_steps": max(16, min(2048, self.total_timesteps // (self.n_envs * 2) or 16)), "batch_size": 64, "verbose": 0,
                      "device": "cpu", "seed": self.seed}
            kwargs.update(self.ppo_kwargs)
            model = PPO("MlpPolicy", wrapped, **kwargs)
            per_chunk = max(1, self.total_timesteps // self.checkpoints)
            curve: list[float] = []
            comps: dict[str, list[float]] = {}
            last_sums: dict[str, float] = {}
            last_steps = 0
            last_reward = 0.0
            episodes: list[dict[str, Any]] = []
            for _ in range(self.checkpoints):
                model.learn(per_chunk, reset_num_timesteps=False)
                steps = wrapped.steps - last_steps
                for k, v in wrapped.component_sums.items():
                    comps.setdefault(k, []).append((v - last_sums.get(k, 0.0)) / max(steps, 1))
                comps.setdefault("total program reward", []).append((wrapped.reward_sum - last_reward) / max(steps, 1))
                last_sums = dict(wrapped.component_sums)
                last_steps, last_reward = wrapped.steps, wrapped.reward_sum
                episodes = evaluate_policy_episodes(model, self.make_env, self.eval_episodes, self.seed + 10_000)
                curve.append(float(self.fitness(episodes)))
            returns = np.array([e["rewards"].sum() for e in episodes])
            if self.success is not None:
                failed = [e for e in episodes if not self.success(e)]
            else:
                failed = [e for e, r in zip(episodes, returns) if r < np.median(returns)] or ([] if returns.size > 1 else episodes)
            summaries = []
            if self.spec is not None:
                summaries = [summarize_episode(self.spec, e["obs"], e["act"], e["rewards"]) for e in failed]
            else:
                summaries = [{"length": int(len(e["rewards"])), "return": round(float(e["rewards"].sum()), 4)} for e in failed]
            metrics = {"train/steps": float(wrapped.steps), "train/eval_return_mean": float(returns.mean())}
            return TrainScore(curve[-1], curve, comps, summaries, metrics)
        finally:
            wrapped.close()
