"""GRPO-style training of the tiny policy on multi-turn text tasks, with pluggable turn credit.

One iteration: draw ``groups`` tasks, roll each out ``group_size`` times (a GRPO group shares
its task), turn the outcomes into per-turn advantages with the chosen credit method, broadcast
them to the response tokens (observation tokens get nothing) and take a clipped policy-gradient
step (PPO ratio clipping, token-mean loss, no KL term: there is no reference model when the
policy starts from random weights).

Credit methods (``TrainConfig.method``):

* ``grpo`` -- outcome-only: ``creditlab.grpo`` per episode, the same value on every turn.
* ``gigpo`` -- ``creditlab.llm.gigpo``: episode advantage + anchor-state step advantage from
  discounted step returns (outcome on the last turn).
* ``igpo`` -- ``creditlab.llm.igpo``: information gain of the policy's own belief in the true
  answer per turn, outcome on the last turn (needs an environment with ``belief_query``).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditlab.advantage import broadcast_to_steps, broadcast_to_tokens, grpo
from creditlab.atomic import atomic_path
from creditlab.errors import CreditlabError, CreditlabWarning, RangeError
from creditlab.llm import gigpo, igpo

from .envs import make_env
from .policy import PolicyConfig, TinyDecoder
from .rollout import Rollout, generate, sequence_log_probs

__all__ = ["TrainConfig", "Trainer", "turn_advantages", "policy_loss", "METHODS"]

METHODS = ("grpo", "gigpo", "igpo")


@dataclass
class TrainConfig:
    """Everything that defines one training run (also the CLI's ``--set key=value`` keys).

    The defaults of the shared settings (``lr``, ``entropy_coef``, ``groups``, ``group_size``, the
    update and the policy size) are the documented sweep's; each task of
    :data:`creditlab_demo.experiment.TASKS` adds its environment and budget
    (:func:`~creditlab_demo.experiment.task_config` builds a run of the sweep).

    Attributes:
        env: ``keydoor`` or ``secret``.
        env_kwargs: environment settings (``width``, ``height``, ``max_turns`` / ``n``, ``max_turns``).
        method: credit method, one of :data:`METHODS` (``igpo`` needs an environment with a
            belief query: ``secret``).
        seed: seeds the policy init, the task stream and the sampling.
        iterations: policy updates.
        groups: tasks per iteration.
        group_size: rollouts per task (GRPO's G).
        lr: Adam learning rate.
        epochs: passes over each batch.
        minibatches: minibatches per pass.
        clip: PPO ratio clip.
        entropy_coef: entropy bonus weight.
        max_grad_norm: gradient clipping.
        gamma: discount of GiGPO's step returns (0.95 in the paper).
        step_weight: GiGPO's omega (weight of the step advantage).
        igpo_gamma: discount of IGPO's returns-to-go over normalized turn rewards (1 in the code).
        eval_every: evaluate every this many iterations (and at 0 and the end).
        eval_episodes: held-out tasks per evaluation (the same tasks for every run).
        eval_seed: seed of the held-out tasks.
        d_model, n_layers, n_heads, d_ff: policy size.
    """

    env: str = "keydoor"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    method: str = "grpo"
    seed: int = 0
    iterations: int = 200
    groups: int = 16
    group_size: int = 8
    lr: float = 3e-4
    epochs: int = 1
    minibatches: int = 2
    clip: float = 0.2
    entropy_coef: float = 0.01
    max_grad_norm: float = 1.0
    gamma: float = 0.95
    step_weight: float = 1.0
    igpo_gamma: float = 1.0
    eval_every: int = 10
    eval_episodes: int = 256
    eval_seed: int = 20_261_122
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RangeError(f"TrainConfig.method must be one of {METHODS}; got {self.method!r}")
        for name in ("iterations", "groups", "group_size", "epochs", "minibatches", "eval_every", "eval_episodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise RangeError(f"TrainConfig.{name} must be a positive integer; got {value!r}")
        if self.group_size < 2:
            raise RangeError(
                f"TrainConfig.group_size must be >= 2 for group-relative advantages; got {self.group_size}"
            )
        if (self.groups * self.group_size) % self.minibatches:
            raise RangeError(
                f"TrainConfig.minibatches={self.minibatches} must divide groups * group_size = {self.groups * self.group_size}"
            )
        for name in ("lr", "clip", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise RangeError(f"TrainConfig.{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("gamma", "igpo_gamma"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RangeError(f"TrainConfig.{name} must lie in [0, 1]; got {getattr(self, name)!r}")
        if self.entropy_coef < 0 or self.step_weight < 0:
            raise RangeError("TrainConfig.entropy_coef and step_weight must be >= 0")
        self.env_kwargs = dict(self.env_kwargs)
        env = make_env(self.env, **self.env_kwargs)  # validates the environment settings
        if self.method == "igpo" and not hasattr(env, "belief_query"):
            raise RangeError(
                f"TrainConfig.method 'igpo' needs an environment that can be asked for the policy's belief in the answer; "
                f"env {self.env!r} cannot. Pairs that go together: keydoor with grpo or gigpo; secret with grpo, gigpo or igpo"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RangeError(f"unknown TrainConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def turn_advantages(
    method: str, rollout: Rollout, group_ids: np.ndarray, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-turn advantages float[B, T] (0 on padding turns) for a credit method.

    The outcome (1 = success) is the only reward: GRPO normalizes it per group; GiGPO also
    places it on the last turn as the step reward; IGPO adds the belief gains of earlier turns.
    """
    outcomes = rollout.success.to(torch.float64)
    mask = rollout.turn_mask
    with warnings.catch_warnings():
        # Groups with all-equal outcomes are expected here; they are counted in the metrics.
        warnings.simplefilter("ignore", CreditlabWarning)
        if method == "grpo":
            out = grpo(outcomes, group_ids)
            adv = broadcast_to_steps(out.advantages, mask)
        elif method == "gigpo":
            last = (rollout.num_turns - 1).clamp(min=0)
            step_rewards = torch.zeros(mask.shape, dtype=torch.float64)
            step_rewards[torch.arange(mask.shape[0]), last] = outcomes
            out = gigpo(
                outcomes,
                step_rewards,
                rollout.anchors,
                group_ids,
                mask=mask,
                gamma=config.gamma,
                step_weight=config.step_weight,
            )
            adv = out.advantages
        elif method == "igpo":
            if rollout.beliefs is None:
                raise CreditlabError(
                    "igpo needs beliefs: generate(..., beliefs=True) on an environment with belief_query"
                )
            out = igpo(rollout.beliefs.to(torch.float64), outcomes, group_ids, mask=mask, gamma=config.igpo_gamma)
            adv = out.advantages
        else:  # pragma: no cover - TrainConfig validates
            raise RangeError(f"unknown method {method!r}")
    metrics = {f"credit/{k}": float(v) for k, v in out.metrics.items()}
    return torch.as_tensor(adv, dtype=torch.float32), metrics


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO/GRPO clipped surrogate, averaged over the response tokens of the batch (token-mean).

    ``loss = -mean_{mask} min(rho A, clip(rho, 1-eps, 1+eps) A)`` with ``rho = exp(lp - lp_old)``.

    Args:
        log_probs: float[B, L] -- current policy (with gradient).
        old_log_probs: float[B, L] -- behaviour policy.
        advantages: float[B, L] -- per-token advantages (0 off the response).
        mask: bool[B, L] -- response tokens.
        clip: epsilon.

    Example (one token, ratio 1: the loss is -A):
        >>> import torch
        >>> loss, _ = policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([[2.0]]),
        ...                       torch.ones(1, 1, dtype=torch.bool), clip=0.2)
        >>> float(loss)
        -2.0
    """
    m = mask.to(log_probs.dtype)
    n = m.sum().clamp(min=1.0)
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    loss = -(torch.minimum(unclipped, clipped) * m).sum() / n
    with torch.no_grad():
        clipfrac = (((ratio - 1.0).abs() > clip).to(m.dtype) * m).sum() / n
        approx_kl = (((ratio - 1.0) - (log_probs - old_log_probs)) * m).sum() / n
    return loss, {"loss/clipfrac": float(clipfrac), "loss/approx_kl": float(approx_kl)}


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    """Trains one policy with one credit method; resumable through :meth:`state_dict`.

    Example:
        >>> import torch; torch.set_num_threads(1)
        >>> cfg = TrainConfig(env="secret", env_kwargs={"n": 4, "max_turns": 3}, iterations=1, groups=2,
        ...                   group_size=2, minibatches=1, eval_episodes=4, d_model=16, n_heads=2, d_ff=32)
        >>> trainer = Trainer(cfg)
        >>> stats = trainer.train_iteration()
        >>> trainer.iteration, 0.0 <= stats["train/success"] <= 1.0
        (1, True)
    """

    def __init__(self, config: TrainConfig):
        self.config = config
        self.env = make_env(config.env, **config.env_kwargs)
        env = self.env
        max_len = env.prompt_len + env.max_turns * (env.action_len + env.obs_len) + 8
        self.policy_config = PolicyConfig(
            vocab_size=len(env.tokenizer),
            d_model=config.d_model,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            d_ff=config.d_ff,
            max_len=max_len,
        )
        torch.manual_seed(config.seed)
        self.policy = TinyDecoder(self.policy_config)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.slot_masks = torch.from_numpy(env.slot_masks)
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.elapsed = 0.0
        self._eval_tasks = env.sample_tasks(config.eval_episodes, np.random.default_rng(config.eval_seed))

    # ------------------------------------------------------------------ one iteration

    def collect(self) -> tuple[Rollout, np.ndarray]:
        """Sample ``groups`` tasks, ``group_size`` rollouts each; returns the rollout and group ids."""
        c = self.config
        tasks = self.env.sample_tasks(c.groups, self.rng)
        tasks = {k: np.repeat(v, c.group_size, axis=0) for k, v in tasks.items()}
        group_ids = np.repeat(np.arange(c.groups), c.group_size)
        self.policy.eval()
        rollout = generate(self.policy, self.env, tasks, generator=self.generator, beliefs=c.method == "igpo")
        return rollout, group_ids

    def update(self, rollout: Rollout, group_ids: np.ndarray) -> dict[str, float]:
        """Credit assignment and the clipped policy-gradient step(s) on one batch."""
        c = self.config
        turn_adv, metrics = turn_advantages(c.method, rollout, group_ids, c)
        token_adv = broadcast_to_tokens(turn_adv, rollout.turn_ids, rollout.response_mask, step_mask=rollout.turn_mask)
        self.policy.train()
        b = rollout.tokens.shape[0]
        size = b // c.minibatches
        stats: dict[str, list[float]] = {}
        for _ in range(c.epochs):
            order = torch.from_numpy(self.rng.permutation(b))
            for i in range(c.minibatches):
                idx = order[i * size : (i + 1) * size]
                mb = rollout.select(idx)
                lp, ent = sequence_log_probs(self.policy, mb, self.slot_masks)
                loss, info = policy_loss(lp, mb.log_probs, token_adv[idx], mb.response_mask, clip=c.clip)
                m = mb.response_mask.to(ent.dtype)
                entropy = (ent * m).sum() / m.sum().clamp(min=1.0)
                total = loss - c.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                info.update(
                    {
                        "loss/policy": float(loss.detach()),
                        "loss/entropy": float(entropy.detach()),
                        "loss/grad_norm": float(grad_norm),
                    }
                )
                for k, v in info.items():
                    stats.setdefault(k, []).append(v)
        metrics.update({k: float(np.mean(v)) for k, v in stats.items()})
        resp = rollout.response_mask
        metrics["advantages/token_abs_mean"] = float(token_adv[resp].abs().mean()) if bool(resp.any()) else 0.0
        metrics["advantages/turn_std"] = (
            float(turn_adv[rollout.turn_mask].std()) if int(rollout.turn_mask.sum()) > 1 else 0.0
        )
        return metrics

    def train_iteration(self) -> dict[str, float]:
        """Collect one batch and update; returns the iteration's metrics (also kept in ``history``)."""
        t0 = time.perf_counter()
        rollout, group_ids = self.collect()
        t1 = time.perf_counter()
        metrics = self.update(rollout, group_ids)
        t2 = time.perf_counter()
        self.iteration += 1
        self.elapsed += t2 - t0
        metrics.update(
            {
                "iteration": float(self.iteration),
                "episodes": float(self.iteration * self.config.groups * self.config.group_size),
                "train/success": float(rollout.success.float().mean()),
                "train/turns": float(rollout.num_turns.float().mean()),
                "time/rollout": t1 - t0,
                "time/update": t2 - t1,
                "time/elapsed": self.elapsed,
            }
        )
        self.history.append(metrics)
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Success on the fixed held-out tasks, sampled (temperature 1) and greedy."""
        self.policy.eval()
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(self.config.eval_seed + self.iteration)
        sampled = generate(self.policy, self.env, self._eval_tasks, generator=gen)
        greedy = generate(self.policy, self.env, self._eval_tasks, generator=gen, greedy=True)
        self.elapsed += time.perf_counter() - t0
        result = {
            "iteration": float(self.iteration),
            "episodes": float(self.iteration * self.config.groups * self.config.group_size),
            "eval/success": float(sampled.success.float().mean()),
            "eval/greedy_success": float(greedy.success.float().mean()),
            "eval/turns": float(sampled.num_turns.float().mean()),
            "time/elapsed": self.elapsed,
        }
        self.evals.append(result)
        return result

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "history": self.history,
            "evals": self.evals,
            "elapsed": self.elapsed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != self.config.to_dict():
            raise CreditlabError("checkpoint was written by a different TrainConfig; use a new run folder")
        self.iteration = int(state["iteration"])
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])
        self.evals = list(state["evals"])
        self.elapsed = float(state["elapsed"])

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically (temp file + os.replace)."""
        _atomic_torch_save(self.state_dict(), Path(path))

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(torch.load(Path(path), weights_only=False))

    # ------------------------------------------------------------------ loop

    def run(
        self,
        *,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        log: Callable[[dict[str, float]], None] | None = None,
        stop_after: int | None = None,
    ) -> list[dict[str, float]]:
        """Train to ``config.iterations``, evaluating every ``eval_every`` iterations.

        With ``checkpoint``, an existing file is loaded first (resume) and the state is saved
        atomically every ``checkpoint_every`` iterations (default ``eval_every``) and at the end.
        ``stop_after`` stops after that many iterations of this call (for tests of resuming).
        Returns the evaluation history.
        """
        c = self.config
        every = checkpoint_every or c.eval_every
        if checkpoint is not None and Path(checkpoint).exists():
            self.load(checkpoint)
        if not self.evals:
            out = self.evaluate()
            if log:
                log(out)
        done_here = 0
        while self.iteration < c.iterations:
            if stop_after is not None and done_here >= stop_after:
                break
            metrics = self.train_iteration()
            done_here += 1
            if self.iteration % c.eval_every == 0 or self.iteration == c.iterations:
                metrics = {**metrics, **self.evaluate()}
            if log:
                log(metrics)
            if checkpoint is not None and (self.iteration % every == 0 or self.iteration == c.iterations):
                self.save(checkpoint)
        if checkpoint is not None:
            self.save(checkpoint)
        return self.evals


def auc(evals: list[dict[str, float]], key: str = "eval/success") -> float:
    """Area under the evaluation curve over iterations, normalized to [0, 1] (trapezoid rule)."""
    if len(evals) < 2:
        return float(evals[0][key]) if evals else math.nan
    x = np.array([e["iteration"] for e in evals], dtype=np.float64)
    y = np.array([e[key] for e in evals], dtype=np.float64)
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))
