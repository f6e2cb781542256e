"""Off-policy credit assignment (SAC, TD3): a replay buffer that relabels sampled rewards.

:class:`CreditReplayBuffer` tracks episodes as transitions are added, hands finished ones to the
assigner's ``fit`` and relabels the rewards of every sampled batch with the current assigner, as
RRD does. Log its ``metrics`` with :class:`~creditlab.integrations.sb3.CreditMetricsCallback`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from ...credit.base import CreditAssigner
from ...credit.quality import credit_quality
from ...episodes import Episodes
from ...errors import RangeError
from .. import TRUE_REWARD_KEY
from .callbacks import bounded_threads, check_spaces, check_torch_threads, encode_actions, make_assigner

__all__ = ["CreditReplayBuffer"]


class CreditReplayBuffer(ReplayBuffer):
    """A replay buffer whose sampled rewards come from a credit assigner (SAC, TD3; as in RRD).

    Pass it to an off-policy SB3 algorithm with
    ``replay_buffer_class=CreditReplayBuffer, replay_buffer_kwargs=dict(assigner=..., update_ratio=...)``.

    * ``add`` tracks episodes per env; a finished episode (raw observations, the buffer's actions,
      the environment's rewards) is handed to ``assigner.fit`` at the next ``sample``.
    * ``sample`` first trains the reward model (``update_ratio`` gradient steps per environment
      step added since the previous call; RRD's default is one per SAC update = 1.0), then
      relabels the drawn transitions: step-scope assigners (RD, RRD, LaRe) score each transition
      alone; episode-scope ones (uniform, IRCR, RUDDER) are given the drawn transitions' whole
      episodes, and draws are restricted to complete episodes still entirely in the buffer.
    * Dones and time-limit timeouts are SB3's own (``handle_timeout_termination``), so the
      bootstrap at truncations is unchanged. Rewards are multiplied by ``reward_scale``;
      VecNormalize's reward normalization is not applied to relabeled rewards.

    * The assigner's ``fit`` and ``assign`` run with ``torch_threads`` torch threads (default 1;
      the caller's setting is restored afterwards; None leaves it alone): the reward model is a
      small network, and PyTorch's default of one thread per core slows it down on a loaded
      machine (docs/speed.md, "Threads"). SAC's own updates use the process's setting: call
      ``torch.set_num_threads(1)`` before ``learn`` for the default 256x256 networks.

    ``metrics`` holds the latest ``credit/*``, ``store/*`` and ``quality/*`` values (log them with
    :class:`CreditMetricsCallback`); ``history`` one entry per ``fit``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        assigner: CreditAssigner | str,
        update_ratio: float = 1.0,
        reward_scale: float = 1.0,
        true_reward_key: str = TRUE_REWARD_KEY,
        torch_threads: int | None = 1,
    ):
        self.torch_threads = check_torch_threads(torch_threads)
        if optimize_memory_usage:
            raise RangeError("CreditReplayBuffer needs next observations stored: use optimize_memory_usage=False")
        check_spaces(observation_space, action_space)
        super().__init__(
            buffer_size, observation_space, action_space, device, n_envs, False, handle_timeout_termination
        )
        self.assigner = make_assigner(assigner) if isinstance(assigner, str) else assigner
        self.update_ratio = float(update_ratio)
        self.reward_scale = float(reward_scale)
        self.true_reward_key = true_reward_key
        self.true_rewards = np.full((self.buffer_size, self.n_envs), np.nan, dtype=np.float32)
        self.ep_ids = np.full((self.buffer_size, self.n_envs), -1, dtype=np.int64)
        self.step_idx = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self.valid = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self._ep_start = np.zeros(1024, dtype=np.int64)
        self._ep_env = np.zeros(1024, dtype=np.int64)
        self._ep_len = np.zeros(1024, dtype=np.int64)
        self._ep_return = np.zeros(1024)
        self._ep_broken = np.zeros(1024, dtype=bool)
        self._n_eps = 0
        self._open = np.array([self._new_episode(e) for e in range(self.n_envs)])
        self._pending: list[int] = []
        self._update_credit = 0.0
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.total_seconds = 0.0

    def _new_episode(self, env: int) -> int:
        if self._n_eps == self._ep_start.shape[0]:
            for name in ("_ep_start", "_ep_env", "_ep_len", "_ep_return", "_ep_broken"):
                arr = getattr(self, name)
                setattr(self, name, np.concatenate([arr, np.zeros_like(arr)]))
        i = self._n_eps
        self._n_eps += 1
        self._ep_start[i] = self.pos
        self._ep_env[i] = env
        self._ep_len[i] = 0
        self._ep_return[i] = 0.0
        self._ep_broken[i] = False
        return i

    def add(self, obs, next_obs, action, reward, done, infos) -> None:  # type: ignore[override]
        t0 = time.perf_counter()
        pos = self.pos
        old = self.ep_ids[pos]
        overwritten = old[old >= 0]
        fresh = overwritten[~self._ep_broken[overwritten]] if overwritten.size else overwritten
        if fresh.size:  # their first steps are gone: no longer usable as whole episodes
            self._ep_broken[fresh] = True
            done_eps = fresh[self._ep_len[fresh] > 0]
            if done_eps.size:
                p, e, m = self._positions(done_eps)
                self.valid[p[m], e[m]] = False
        super().add(obs, next_obs, action, reward, done, infos)
        r = np.asarray(reward, dtype=np.float64).reshape(self.n_envs)
        d = np.asarray(done, dtype=bool).reshape(self.n_envs)
        for e in range(self.n_envs):
            i = self._open[e]
            if self._ep_len[i] == 0:
                self._ep_start[i] = pos
            self.ep_ids[pos, e] = i
            self.step_idx[pos, e] = self._ep_len[i]
            self._ep_len[i] += 1
            self._ep_return[i] += r[e]
            self.true_rewards[pos, e] = float(infos[e].get(self.true_reward_key, np.nan))
            if d[e]:
                if self._ep_len[i] > self.buffer_size:
                    self._ep_broken[i] = True
                if not self._ep_broken[i]:
                    self._pending.append(int(i))
                self._open[e] = self._new_episode(e)
        self._update_credit += self.update_ratio * self.n_envs
        self.total_seconds += time.perf_counter() - t0

    def _positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lens = self._ep_len[ids]
        t = int(lens.max())
        ar = np.arange(t)
        mask = ar[None, :] < lens[:, None]
        pos = (self._ep_start[ids][:, None] + np.minimum(ar[None, :], lens[:, None] - 1)) % self.buffer_size
        return pos, np.broadcast_to(self._ep_env[ids][:, None], pos.shape), mask

    def _episodes(
        self, ids: np.ndarray, *, with_outcomes: bool = True
    ) -> tuple[Episodes, np.ndarray, np.ndarray, np.ndarray]:
        pos, env, mask = self._positions(ids)
        rewards = np.where(mask, self.rewards[pos, env], 0.0)
        ep = Episodes.from_padded(
            rewards.astype(np.float32),
            mask,
            terminated=np.ones(len(ids), dtype=bool),
            outcomes=self._ep_return[ids] if with_outcomes else None,
            observations=self.observations[pos, env].reshape(*pos.shape, -1).astype(np.float32),
            actions=self._actions(pos, env),
            next_observations=self.next_observations[pos, env].reshape(*pos.shape, -1).astype(np.float32),
        )
        return ep, pos, env, mask

    def _actions(self, pos: np.ndarray, env: np.ndarray) -> np.ndarray:
        a = self.actions[pos, env]
        if isinstance(self.action_space, spaces.Discrete):
            return encode_actions(a.reshape(-1), self.action_space, a.size // max(self.action_dim, 1)).reshape(
                *pos.shape, -1
            )
        return a.reshape(*pos.shape, -1).astype(np.float32)

    def _fit(self) -> None:
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        fit_eps = None
        if self._pending:
            ids = np.array([i for i in self._pending if not self._ep_broken[i]], dtype=np.int64)
            self._pending = []
            if ids.size:
                pos, env, mask = self._positions(ids)
                self.valid[pos[mask], env[mask]] = True
                fit_eps, _, _, m = self._episodes(ids)
                true = np.where(m, self.true_rewards[pos, env], 0.0)
                if not np.isnan(true).any():
                    out = self.assigner.assign(fit_eps)
                    metrics.update(
                        credit_quality(np.asarray(out.rewards), true, m, returns=self._ep_return[ids]).metrics
                    )
        n_updates = int(self._update_credit + 1e-9)
        self._update_credit -= n_updates
        if fit_eps is not None or n_updates:
            metrics.update(self.assigner.fit(fit_eps, num_updates=n_updates))
            self.metrics.update(metrics)
            self.history.append(dict(metrics))
        self.total_seconds += time.perf_counter() - t0

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        with bounded_threads(self.torch_threads):
            return self._sample(batch_size, env)

    def _sample(self, batch_size: int, env: VecNormalize | None) -> ReplayBufferSamples:
        self._fit()
        t0 = time.perf_counter()
        scope = getattr(self.assigner, "scope", "episode")
        if scope == "episode":
            flat = np.flatnonzero(self.valid)
            if flat.size == 0:  # nothing complete yet: the environment's rewards
                self.metrics["credit/fallback_batches"] = self.metrics.get("credit/fallback_batches", 0.0) + 1
                self.total_seconds += time.perf_counter() - t0
                return super().sample(batch_size, env)
            pick = flat[np.random.randint(0, flat.size, size=batch_size)]
            batch_inds, env_inds = np.unravel_index(pick, self.valid.shape)
            ids, inverse = np.unique(self.ep_ids[batch_inds, env_inds], return_inverse=True)
            eps, _, _, _ = self._episodes(ids)
            rewards = np.asarray(self.assigner.assign(eps).rewards)[
                inverse.reshape(-1), self.step_idx[batch_inds, env_inds]
            ]
        else:
            upper = self.buffer_size if self.full else self.pos
            batch_inds = np.random.randint(0, upper, size=batch_size)
            env_inds = np.random.randint(0, self.n_envs, size=batch_size)
            obs = self.observations[batch_inds, env_inds].reshape(batch_size, 1, -1).astype(np.float32)
            nobs = self.next_observations[batch_inds, env_inds].reshape(batch_size, 1, -1).astype(np.float32)
            acts = self._actions(batch_inds[:, None], env_inds[:, None])
            eps = Episodes.from_padded(
                np.zeros((batch_size, 1), np.float32), observations=obs, actions=acts, next_observations=nobs
            )
            rewards = np.asarray(self.assigner.assign(eps).rewards)[:, 0]
        data = (
            self._normalize_obs(self.observations[batch_inds, env_inds, :], env),
            self.actions[batch_inds, env_inds, :],
            self._normalize_obs(self.next_observations[batch_inds, env_inds, :], env),
            (self.dones[batch_inds, env_inds] * (1 - self.timeouts[batch_inds, env_inds])).reshape(-1, 1),
            (rewards * self.reward_scale).reshape(-1, 1).astype(np.float32),
        )
        self.total_seconds += time.perf_counter() - t0
        self.metrics["credit/seconds"] = self.total_seconds
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))
