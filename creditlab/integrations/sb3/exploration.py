"""Stable-Baselines3 integration of the exploration bonuses: add a bonus to each PPO/A2C rollout.

:class:`ExplorationBonusCallback` records every transition of a rollout (the state acted from,
the state reached -- the terminal observation at an episode's end --, its state key, the action,
whether an episode started), and at the rollout's end:

1. computes the bonus of every step with :meth:`ExplorationBonus.compute
   <creditlab.exploration.ExplorationBonus.compute>`, all envs at once (E3B: one batched
   Sherman-Morrison step per time step). Each env's episodic memory continues across rollouts
   and is reset where an episode starts, after a termination *or* a truncation (SB3's ``dones``
   covers both);
2. trains what the bonus learns (``fit``: RND predictor, E3B encoder) on the rollout;
3. divides the bonus by the running std of all bonuses so far (``normalize=True``, e3b's
   ``reward_norm='int'``) and adds ``beta`` times it to the rollout buffer's rewards;
4. recomputes returns and advantages (GAE) as the credit callback does.

With a :class:`~creditlab.integrations.sb3.CreditAssignmentCallback` in the same
``CallbackList`` *before* this one, the rollout is first relabeled with the decomposed extrinsic
reward and then receives the bonus (the order is checked at the start of training). SB3's
time-limit bootstrap term ``gamma * V(terminal)`` already in the buffer is kept.

State keys (count bonuses, NovelD's gate, the ``unique_states`` metric): ``key="info"`` reads
``info["creditlab/state_key"]`` written by :class:`~creditlab.exploration.wrappers.StateKeyWrapper`
(MiniGrid position, full state, a user function), ``key="obs"`` hashes the observations, and
``"auto"`` (default) uses the info key when the env provides it.

Logged metrics (SB3 logger, and ``callback.history``): ``exploration/bonus_mean``,
``exploration/bonus_max`` (raw bonus), ``exploration/bonus_std`` (running std used to normalize),
``exploration/intrinsic_mean`` (what was added to the rewards), ``exploration/unique_states``
(distinct keys seen in training), ``exploration/episode_unique_states`` (mean distinct keys per
episode finished in the rollout), ``exploration/embedding_loss`` (E3B), ``exploration/rnd_loss``
(RND, NovelD), ``exploration/seconds`` (callback time so far) and ``exploration/time_share``
(callback time / training wall time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize, unwrap_vec_normalize

from ...errors import DtypeError, RangeError
from ...exploration import ExplorationBonus, make_bonus, make_transitions, observation_keys
from ...exploration.functional import RunningMoments, moments_std, normalize_by_std, update_moments

__all__ = ["ExplorationBonusCallback", "STATE_KEY_INFO"]

STATE_KEY_INFO = "creditlab/state_key"  # the same key as creditlab.exploration.wrappers.STATE_KEY_INFO
_KEY_SOURCES = ("auto", "info", "obs")


def _flat(obs: Any, n: int) -> np.ndarray:
    """float32[E, D] from a Box observation batch, or the concatenated entries of a Dict one."""
    if isinstance(obs, Mapping):
        return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(n, -1) for k in sorted(obs)], axis=1)
    return np.asarray(obs, dtype=np.float32).reshape(n, -1).copy()


def _flatten_callbacks(cb: Any) -> list[Any]:
    if isinstance(cb, CallbackList):
        return [c for sub in cb.callbacks for c in _flatten_callbacks(sub)]
    return [cb]


class ExplorationBonusCallback(BaseCallback):
    """Add ``beta * bonus / running_std(bonus)`` to every step of each on-policy rollout (PPO, A2C).

    Args:
        bonus: an :class:`~creditlab.exploration.ExplorationBonus`, a registered name
            (``creditlab methods --family exploration``), or None to only log the exploration
            metrics (unique states) without changing the rewards.
        beta: coefficient of the (normalized) bonus (e3b: 1.0; its count sweeps use 0.1/1/10).
        normalize: divide the bonus by the running std of all bonuses so far.
        key: where state keys come from: "info" (``StateKeyWrapper``), "obs" (observation
            hash) or "auto".
        num_updates: gradient steps of a learned bonus per rollout (None: its
            ``updates_per_fit``).
        clip_reward: clip the total reward (extrinsic + intrinsic) to ``[-clip, clip]`` (e3b's
            IMPALA clips to 1); None leaves it unclipped.
        bonus_params: parameters for a bonus given by name.

    Example:
        >>> import gymnasium as gym, minigrid  # noqa: F401
        >>> from minigrid.wrappers import ImgObsWrapper
        >>> from stable_baselines3 import PPO
        >>> from stable_baselines3.common.env_util import make_vec_env
        >>> from creditlab.exploration import StateKeyWrapper
        >>> env = make_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0,
        ...                    wrapper_class=lambda e: StateKeyWrapper(ImgObsWrapper(e), "pos"))
        >>> cb = ExplorationBonusCallback("episodic_x_global", beta=0.1)
        >>> _ = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, seed=0).learn(128, callback=cb)
        >>> cb.history[-1]["exploration/unique_states"] > 1
        True
    """

    edits_rollout_rewards = True  # ordered after the credit relabel by the SB3 runner

    def __init__(
        self,
        bonus: ExplorationBonus | str | None,
        *,
        beta: float = 1.0,
        normalize: bool = True,
        key: str = "auto",
        num_updates: int | None = None,
        clip_reward: float | None = None,
        bonus_params: Mapping[str, Any] | None = None,
        recompute_advantages: bool = True,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.recompute_advantages = bool(recompute_advantages)
        if isinstance(bonus, str):
            bonus = make_bonus(bonus, **dict(bonus_params or {}))
        elif bonus_params:
            raise RangeError("bonus_params are for a bonus given by name; this bonus is already built")
        if bonus is not None and not isinstance(bonus, ExplorationBonus):
            raise DtypeError(
                f"bonus must be an ExplorationBonus, a registered name or None; got {type(bonus).__name__}"
            )
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise RangeError(f"beta must be a finite number >= 0; got {beta!r}")
        if key not in _KEY_SOURCES:
            raise RangeError(f"key must be one of {_KEY_SOURCES}; got {key!r}")
        if num_updates is not None and (not isinstance(num_updates, int) or num_updates < 0):
            raise RangeError(f"num_updates must be an int >= 0 or None; got {num_updates!r}")
        if clip_reward is not None and not (isinstance(clip_reward, (int, float)) and clip_reward > 0):
            raise RangeError(f"clip_reward must be > 0 or None; got {clip_reward!r}")
        self.bonus = bonus
        self.beta = float(beta)
        self.normalize = bool(normalize)
        self.key = key
        self.num_updates = num_updates
        self.clip_reward = None if clip_reward is None else float(clip_reward)
        self.moments = RunningMoments()
        self.history: list[dict[str, float]] = []
        self.total_seconds = 0.0
        self.unique_keys: set[int] = set()
        self.last_bonus: np.ndarray | None = None  # float32[T, E] raw bonus of the latest rollout
        self._n_envs = 0
        self._key_from_info = False
        self._train_start = 0.0

    # ------------------------------------------------------------ setup

    def _vecnorm(self) -> VecNormalize | None:
        return unwrap_vec_normalize(self.training_env)

    def _raw_obs(self, obs: Any) -> np.ndarray:
        vn = self._vecnorm()
        if vn is not None:
            obs = vn.get_original_obs()
        return _flat(obs, self.training_env.num_envs)

    def _reset_infos(self) -> list[dict[str, Any]]:
        return list(getattr(self.training_env.unwrapped, "reset_infos", [{}] * self.training_env.num_envs))

    def _on_training_start(self) -> None:
        self._check_order()
        if not isinstance(self.model, OnPolicyAlgorithm):
            raise DtypeError(
                f"ExplorationBonusCallback adds the bonus to on-policy rollouts (PPO, A2C); got {type(self.model).__name__}"
            )
        self._train_start = time.perf_counter()
        self._seconds_at_start = self.total_seconds
        space = self.model.observation_space
        if not isinstance(space, (spaces.Box, spaces.Dict)):
            raise DtypeError(f"exploration bonuses need Box (or Dict of Box) observations; got {space}")
        action_space = self.model.action_space
        self._discrete = isinstance(action_space, spaces.Discrete)
        self._continuous = isinstance(action_space, spaces.Box)
        if (
            self.bonus is not None
            and hasattr(self.bonus, "set_num_actions")
            and isinstance(action_space, spaces.Discrete)
        ):
            self.bonus.set_num_actions(int(action_space.n))
        n = self.training_env.num_envs
        if self._n_envs == n and self.model.num_timesteps > 0:
            return  # a further learn() call: the running episodes continue
        self._n_envs = n
        infos = self._reset_infos()
        has_key = len(infos) == n and all(STATE_KEY_INFO in i for i in infos)
        if self.key == "info" and not has_key:
            raise RangeError(
                f"key='info' needs info[{STATE_KEY_INFO!r}] from the env: wrap it in "
                "creditlab.exploration.StateKeyWrapper (or use key='obs')"
            )
        self._key_from_info = has_key and self.key != "obs"
        self._prev_obs = self._raw_obs(self.model._last_obs)
        self._prev_keys = self._initial_keys(self._prev_obs, infos, np.ones(n, dtype=bool), np.zeros(n, dtype=np.int64))
        self._starts = np.ones(n, dtype=bool)
        self._episode_sets: list[set[int]] = [{int(k)} for k in self._prev_keys]
        if self.bonus is not None:
            self.bonus.reset_episodes()

    def _check_order(self) -> None:
        from .callbacks import CreditAssignmentCallback

        cbs = _flatten_callbacks(self.locals.get("callback")) if self.locals else []
        if self not in cbs:
            return
        mine = cbs.index(self)
        later = [c for c in cbs[mine + 1 :] if isinstance(c, CreditAssignmentCallback)]
        if later:
            raise RangeError(
                "put the CreditAssignmentCallback before the ExplorationBonusCallback in the CallbackList: "
                "the credit relabel must happen first, then the bonus is added"
            )

    def _initial_keys(
        self, obs: np.ndarray, infos: list[dict[str, Any]], which: np.ndarray, keys: np.ndarray
    ) -> np.ndarray:
        """Keys of the reset states of the envs in ``which`` (the others keep ``keys``)."""
        out = keys.copy()
        idx = np.nonzero(which)[0]
        if idx.size == 0:
            return out
        if self._key_from_info:
            for i in idx:
                if STATE_KEY_INFO not in infos[i]:
                    raise RangeError(
                        f"env {i} reset without info[{STATE_KEY_INFO!r}]; wrap every env copy in StateKeyWrapper"
                    )
                out[i] = int(infos[i][STATE_KEY_INFO])
        else:
            out[idx] = observation_keys(obs[idx])
        return out

    def _on_rollout_start(self) -> None:
        self._rows: dict[str, list[np.ndarray]] = {
            k: [] for k in ("obs", "next_obs", "keys", "next_keys", "actions", "starts", "dones")
        }
        self._finished_unique: list[int] = []

    # ------------------------------------------------------------ per step

    def _on_step(self) -> bool:
        t0 = time.perf_counter()
        loc = self.locals
        n = self.training_env.num_envs
        vn = self._vecnorm()
        infos = loc["infos"]
        dones = np.asarray(loc["dones"], dtype=bool)
        new_obs = self._raw_obs(loc["new_obs"])
        next_obs = new_obs.copy()
        for i in np.nonzero(dones)[0]:
            term = infos[i].get("terminal_observation")
            if term is not None:
                if vn is not None:
                    term = vn.unnormalize_obs(term)
                next_obs[i] = _flat(term if isinstance(term, Mapping) else np.asarray(term)[None], 1)[0]
        if self._key_from_info:
            try:
                next_keys = np.fromiter((int(info[STATE_KEY_INFO]) for info in infos), dtype=np.int64, count=n)
            except KeyError:
                raise RangeError(
                    f"a step info lacks {STATE_KEY_INFO!r}; wrap every env copy in StateKeyWrapper"
                ) from None
        else:
            next_keys = observation_keys(next_obs)
        rows = self._rows
        rows["obs"].append(self._prev_obs)
        rows["next_obs"].append(next_obs)
        rows["keys"].append(self._prev_keys)
        rows["next_keys"].append(next_keys)
        if self._discrete:
            rows["actions"].append(np.asarray(loc["actions"]).reshape(n).astype(np.int64))
        elif self._continuous:  # the executed (clipped) action
            rows["actions"].append(
                np.asarray(loc.get("clipped_actions", loc["actions"]), dtype=np.float32).reshape(n, -1)
            )
        rows["starts"].append(self._starts)
        rows["dones"].append(dones)
        # unique-state bookkeeping
        for e, k in enumerate(next_keys.tolist()):
            self._episode_sets[e].add(k)
        self.unique_keys.update(next_keys.tolist())
        # the next step acts from the reset state where an episode ended
        reset_keys = self._initial_keys(new_obs, self._reset_infos(), dones, next_keys)
        for i in np.nonzero(dones)[0]:
            self._finished_unique.append(len(self._episode_sets[i]))
            self._episode_sets[i] = {int(reset_keys[i])}
        self.unique_keys.update(reset_keys[dones].tolist())
        self._prev_obs = new_obs
        self._prev_keys = reset_keys
        self._starts = dones.copy()
        self.total_seconds += time.perf_counter() - t0
        return True

    # ------------------------------------------------------------ rollout end

    @property
    def rollout_buffer(self) -> RolloutBuffer:
        """The model's rollout buffer (the model is on-policy: checked when training starts)."""
        assert isinstance(self.model, OnPolicyAlgorithm), "ExplorationBonusCallback runs on on-policy algorithms"
        return self.model.rollout_buffer

    def _on_rollout_end(self) -> None:
        t0 = time.perf_counter()
        buf = self.rollout_buffer
        n_steps = len(self._rows["dones"])
        metrics: dict[str, float] = {
            "exploration/unique_states": float(len(self.unique_keys)),
            "exploration/key_from_info": float(self._key_from_info),
        }
        if self._finished_unique:
            metrics["exploration/episode_unique_states"] = float(np.mean(self._finished_unique))
        if self.bonus is not None and n_steps == buf.buffer_size and n_steps > 0:
            rows = {k: np.stack(v) for k, v in self._rows.items() if v}
            tr = make_transitions(
                starts=rows["starts"],
                observations=rows["obs"],
                next_observations=rows["next_obs"],
                keys=rows["keys"],
                next_keys=rows["next_keys"],
                actions=rows.get("actions"),
            )
            t_bonus = time.perf_counter()
            out = self.bonus.compute(tr)
            metrics["exploration/compute_seconds"] = time.perf_counter() - t_bonus
            t_fit = time.perf_counter()
            metrics.update(self.bonus.fit(tr, num_updates=self.num_updates))
            metrics["exploration/fit_seconds"] = time.perf_counter() - t_fit
            metrics.update(out.metrics)
            self.last_bonus = out.bonus
            raw = out.bonus.astype(np.float64)
            self.moments = update_moments(self.moments, raw)
            scaled = normalize_by_std(raw, self.moments) if self.normalize else raw
            intrinsic = self.beta * scaled
            total = buf.rewards.astype(np.float64) + intrinsic
            if self.clip_reward is not None:
                total = np.clip(total, -self.clip_reward, self.clip_reward)
            buf.rewards[:] = total.astype(buf.rewards.dtype)
            if self.recompute_advantages:
                buf.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
            metrics.update(
                {
                    "exploration/bonus_mean": float(raw.mean()),
                    "exploration/bonus_max": float(raw.max()),
                    "exploration/bonus_std": float(moments_std(self.moments)),
                    "exploration/intrinsic_mean": float(intrinsic.mean()),
                }
            )
        self.total_seconds += time.perf_counter() - t0
        wall = time.perf_counter() - self._train_start
        metrics["exploration/seconds"] = self.total_seconds
        if wall > 0:
            metrics["exploration/time_share"] = (self.total_seconds - self._seconds_at_start) / wall
        self.history.append({"timesteps": float(self.num_timesteps), **metrics})
        for k, v in metrics.items():
            if isinstance(v, float) and math.isfinite(v):
                self.logger.record(k, v)
