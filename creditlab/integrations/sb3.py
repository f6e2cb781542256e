"""Stable-Baselines3 integration: train PPO or SAC on credit-assigned rewards.

Three pieces, from low to high level:

* :class:`CreditAssignmentCallback` -- for on-policy algorithms (PPO, A2C). After each rollout
  it cuts the steps into episodes, hands the complete ones to ``assigner.fit`` (the reward model
  trains from complete episodes only), relabels the rollout's rewards with ``assigner.assign``
  and recomputes GAE.
* :class:`CreditReplayBuffer` -- for off-policy algorithms (SAC, TD3): a ``ReplayBuffer`` whose
  ``sample`` relabels the rewards of the drawn transitions with the current assigner (as RRD
  does) and trains the reward model ``update_ratio`` times per environment step.
* :func:`train` with :class:`SB3RunConfig` -- one run from an env id to evaluation returns on the
  true reward, credit quality and the reward model's share of the wall time.

Episodes that span rollouts (PPO)
    SB3 trains on a rollout right after collecting it, so a step can only be relabeled while its
    rollout is in the buffer. The callback keeps the steps of every running episode (across
    rollouts) and, at each rollout end, assigns rewards to whole episodes: complete ones, and the
    running prefix of unfinished ones, whose return is not known yet. Step-scope assigners (RD,
    RRD, LaRe) and RUDDER (prediction differences of the prefix) credit every step; the residual
    correction of RD/RUDDER lands on the last step, in the rollout where the episode ends.
    Outcome-based assigners (uniform, IRCR) cannot credit steps of an unfinished episode: those
    steps get the running mean of assigned per-step rewards (``unassigned="mean"``, the default)
    or the reward the environment gave (``"observed"``); ``credit/frac_unassigned`` reports how many.

Time limits
    At a time-limit truncation SB3 adds ``gamma * V(terminal_obs)`` to the stored reward. The
    callback keeps that term: new stored reward = assigned reward + (stored - received).

Reward scale
    Assigned rewards are divided by a running std of their discounted return, as VecNormalize
    does (``reward_scale="running"``; or a float factor, or ``"none"``). The callback reads raw
    rewards and observations through VecNormalize (``get_original_*``), so a VecNormalize's own
    reward normalization never reaches the reward model.

Logged metrics (SB3 logger, and ``callback.history``): ``credit/loss``, ``credit/updates``,
``credit/fit_seconds``, ``credit/assign_seconds``, ``credit/seconds`` (all callback work),
``credit/frac_unassigned``, ``credit/complete_episodes``, ``store/*`` and, when the env reports
the hidden true reward under ``info["creditlab/true_reward"]``, ``quality/pearson``,
``quality/spearman``, ``quality/decomposition_error`` (see :mod:`creditlab.credit.quality`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from ..credit.base import CreditAssigner
from ..credit.quality import credit_quality
from ..episodes import Episodes
from ..errors import DtypeError, RangeError
from . import TRUE_REWARD_KEY

__all__ = [
    "CreditAssignmentCallback",
    "CreditReplayBuffer",
    "CreditMetricsCallback",
    "SB3RunConfig",
    "SB3RunResult",
    "make_assigner",
    "make_env",
    "train",
]


def make_assigner(name: str, **params: Any) -> CreditAssigner:
    """Build a registered assigner by name (``creditlab.list_methods(kind="assigner")``)."""
    from ..registry import get_method

    method = get_method(name)
    if method.kind != "assigner" or method.factory is None:
        raise RangeError(f"{name!r} is a {method.kind} method, not a credit assigner; see list_methods(kind='assigner')")
    return method.factory(**params)


def _check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    if not isinstance(observation_space, spaces.Box):
        raise DtypeError(f"credit assignment needs a Box observation space (flat vectors); got {observation_space}")
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise DtypeError(f"credit assignment supports Box and Discrete action spaces; got {action_space}")


def _encode(actions: np.ndarray, action_space: spaces.Space, n: int) -> np.ndarray:
    if isinstance(action_space, spaces.Discrete):
        a = np.asarray(actions).reshape(n).astype(np.int64) - int(action_space.start)
        out = np.zeros((n, int(action_space.n)), dtype=np.float32)
        out[np.arange(n), a] = 1.0
        return out
    return np.asarray(actions, dtype=np.float32).reshape(n, -1)


class _Streams:
    """Per-env steps of the running episodes, carried across rollouts."""

    FIELDS = ("obs", "act", "next_obs", "reward", "true")

    def __init__(self, n_envs: int):
        self.n_envs = n_envs
        self.prefix: list[dict[str, np.ndarray] | None] = [None] * n_envs

    def clear(self) -> None:
        self.prefix = [None] * self.n_envs


def _cut(
    data: dict[str, np.ndarray],
    done: np.ndarray,
    prefix: list[dict[str, np.ndarray] | None],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, np.ndarray] | None]]:
    """Cut env streams (carried prefix + this rollout's ``[n_steps, n_envs, ...]``) into episodes.

    Returns (padded fields [E, T, ...], mask[E, T], complete[E], rollout_t[E, T], rollout_e[E, T]
    (-1 for prefix steps), new prefixes).
    """
    n_steps, n_envs = done.shape
    flat: dict[str, list[np.ndarray]] = {k: [] for k in data}
    ends, src_t, src_e = [], [], []
    for e in range(n_envs):  # one iteration per env (8), not per step or episode
        p = prefix[e]
        plen = 0 if p is None else p["reward"].shape[0]
        for k in data:
            if p is not None:
                flat[k].append(p[k])
            flat[k].append(data[k][:, e])
        end = np.zeros(plen + n_steps, dtype=bool)
        end[plen:] = done[:, e]
        end[-1] = True
        ends.append(end)
        src_t.append(np.concatenate([np.full(plen, -1), np.arange(n_steps)]))
        src_e.append(np.full(plen + n_steps, e))
    cat = {k: np.concatenate(v) for k, v in flat.items()}
    end = np.concatenate(ends)
    st = np.concatenate(src_t)
    se = np.concatenate(src_e)
    ep_of = np.concatenate([[0], np.cumsum(end[:-1])])
    n_ep = int(ep_of[-1]) + 1
    starts = np.concatenate([[0], np.nonzero(end[:-1])[0] + 1])
    pos = np.arange(end.size) - starts[ep_of]
    lengths = np.bincount(ep_of, minlength=n_ep)
    t_max = int(lengths.max())
    last = np.concatenate([starts[1:] - 1, [end.size - 1]])
    complete = np.zeros(n_ep, dtype=bool)
    is_rollout = st[last] >= 0
    complete[is_rollout] = done[st[last][is_rollout], se[last][is_rollout]]
    out = {}
    for k, x in cat.items():
        buf = np.zeros((n_ep, t_max, *x.shape[1:]), dtype=x.dtype)
        buf[ep_of, pos] = x
        out[k] = buf
    mask = np.arange(t_max)[None, :] < lengths[:, None]
    rt = np.full((n_ep, t_max), -1, dtype=np.int64)
    re = np.full((n_ep, t_max), -1, dtype=np.int64)
    rt[ep_of, pos] = st
    re[ep_of, pos] = se
    # New prefixes: the unfinished last episode of each env.
    new_prefix: list[dict[str, np.ndarray] | None] = [None] * n_envs
    for b in np.nonzero(~complete)[0]:
        e = int(se[last[b]])
        new_prefix[e] = {k: out[k][b, : lengths[b]].copy() for k in out}
    return out, mask, complete, rt, re, new_prefix


class CreditAssignmentCallback(BaseCallback):
    """Relabel each rollout of an on-policy SB3 algorithm (PPO, A2C) with a credit assigner.

    Args:
        assigner: any :class:`~creditlab.credit.CreditAssigner`, or a registered name.
        update_ratio: reward-model gradient steps per environment step collected (a 2048-step
            rollout with the default 1/32 gives 64 updates). Ignored by assigners that learn
            nothing.
        reward_scale: ``"running"`` (divide by a running std of the discounted assigned return,
            like VecNormalize), ``"none"``, or a float factor.
        unassigned: what steps the assigner cannot credit yet get: ``"mean"`` (running mean of
            assigned per-step rewards) or ``"observed"`` (the environment's reward).
        true_reward_key: info key of the hidden true reward (quality metrics only).
        max_open_steps: longest running-episode prefix kept across rollouts.
        clip_reward: bound on scaled rewards (as VecNormalize's ``clip_reward``).

    Example:
        >>> from stable_baselines3 import PPO
        >>> from creditlab.credit import RRDAssigner
        >>> env = make_env("CartPole-v1", n_envs=2, reward="episodic", seed=0)
        >>> cb = CreditAssignmentCallback(RRDAssigner(subset_size=8), update_ratio=0.05)
        >>> model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0).learn(256, callback=cb)
        >>> sorted(k for k in cb.history[-1] if k.startswith("quality/"))[:2]
        ['quality/decomposition_error', 'quality/num_episodes']
    """

    def __init__(
        self,
        assigner: CreditAssigner | str,
        *,
        update_ratio: float = 1 / 32,
        reward_scale: str | float = "running",
        unassigned: str = "mean",
        true_reward_key: str = TRUE_REWARD_KEY,
        max_open_steps: int = 100_000,
        clip_reward: float = 10.0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.assigner = make_assigner(assigner) if isinstance(assigner, str) else assigner
        if not float(update_ratio) >= 0:
            raise RangeError(f"update_ratio must be >= 0 (reward-model updates per env step); got {update_ratio}")
        if unassigned not in ("mean", "observed"):
            raise RangeError(f"unassigned must be 'mean' or 'observed'; got {unassigned!r}")
        if not (reward_scale in ("running", "none") or isinstance(reward_scale, (int, float))):
            raise RangeError(f"reward_scale must be 'running', 'none' or a number; got {reward_scale!r}")
        self.update_ratio = float(update_ratio)
        self.reward_scale = reward_scale
        self.unassigned = unassigned
        self.true_reward_key = true_reward_key
        self.max_open_steps = int(max_open_steps)
        self.clip_reward = float(clip_reward)
        self.history: list[dict[str, float]] = []
        self.total_seconds = 0.0
        self._update_credit = 0.0
        self._mean_assigned = 0.0
        self._ret_rms = RunningMeanStd(shape=())
        self._ret = None
        self._streams: _Streams | None = None
        self._prev_obs: np.ndarray | None = None

    # ------------------------------------------------------------ setup

    def _vecnorm(self) -> VecNormalize | None:
        return unwrap_vec_normalize(self.training_env)

    def _on_training_start(self) -> None:
        _check_spaces(self.model.observation_space, self.model.action_space)
        n = self.training_env.num_envs
        if self._streams is None or self.model.num_timesteps == 0 or self._streams.n_envs != n:
            self._streams = _Streams(n)
            self._prev_obs = None
            self._ret = np.zeros(n)

    def _raw_obs(self) -> np.ndarray:
        vn = self._vecnorm()
        if vn is not None:
            return np.asarray(vn.get_original_obs(), dtype=np.float32).reshape(self.training_env.num_envs, -1).copy()
        return np.asarray(self.model._last_obs, dtype=np.float32).reshape(self.training_env.num_envs, -1).copy()

    def _on_rollout_start(self) -> None:
        t0 = time.perf_counter()
        if self._prev_obs is None:
            self._prev_obs = self._raw_obs()
        self._rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "next_obs", "reward", "true", "algo", "done", "timeout")}
        self.total_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------ per step

    def _on_step(self) -> bool:
        t0 = time.perf_counter()
        loc = self.locals
        n = self.training_env.num_envs
        vn = self._vecnorm()
        infos = loc["infos"]
        dones = np.asarray(loc["dones"], dtype=bool)
        algo_reward = np.asarray(loc["rewards"], dtype=np.float64).copy()
        raw_reward = np.asarray(vn.get_original_reward(), dtype=np.float64).copy() if vn is not None else algo_reward.copy()
        new_obs = np.asarray(vn.get_original_obs() if vn is not None else loc["new_obs"], dtype=np.float32).reshape(n, -1).copy()
        next_obs = new_obs.copy()
        timeout = np.zeros(n, dtype=bool)
        true = np.full(n, np.nan)
        for i in range(n):
            info = infos[i]
            if self.true_reward_key in info:
                true[i] = float(info[self.true_reward_key])
            if dones[i]:
                term_obs = info.get("terminal_observation")
                if term_obs is not None:
                    if vn is not None:
                        term_obs = vn.unnormalize_obs(term_obs)
                    next_obs[i] = np.asarray(term_obs, dtype=np.float32).reshape(-1)
                timeout[i] = bool(info.get("TimeLimit.truncated", False))
        actions = loc.get("clipped_actions", loc["actions"])
        rows = self._rows
        rows["obs"].append(self._prev_obs)
        rows["act"].append(_encode(actions, self.model.action_space, n))
        rows["next_obs"].append(next_obs)
        rows["reward"].append(raw_reward)
        rows["true"].append(true)
        rows["algo"].append(algo_reward)
        rows["done"].append(dones)
        rows["timeout"].append(timeout & dones)
        self._prev_obs = new_obs
        self.total_seconds += time.perf_counter() - t0
        return True

    # ------------------------------------------------------------ rollout end

    def _on_rollout_end(self) -> None:
        t0 = time.perf_counter()
        assert self._streams is not None
        buf = self.model.rollout_buffer
        rows = {k: np.stack(v) for k, v in self._rows.items()}
        n_steps, n_envs = rows["done"].shape
        if n_steps != buf.buffer_size:  # rollout stopped early by another callback
            return
        data = {k: rows[k] for k in _Streams.FIELDS}
        ep, mask, complete, rt, re, new_prefix = _cut(data, rows["done"], self._streams.prefix)
        # Timeout flags of each episode's last step.
        lengths = mask.sum(1)
        last_t = rt[np.arange(len(lengths)), lengths - 1]
        last_e = re[np.arange(len(lengths)), lengths - 1]
        timeout = np.zeros(len(lengths), dtype=bool)
        inr = last_t >= 0
        timeout[inr] = rows["timeout"][last_t[inr], last_e[inr]]
        returns = np.where(mask, ep["reward"], 0.0).sum(1)
        episodes = Episodes.from_padded(
            ep["reward"].astype(np.float32),
            mask,
            terminated=complete & ~timeout,
            truncated=~complete | timeout,
            outcomes=[float(r) if c else None for r, c in zip(returns, complete)],
            observations=ep["obs"],
            actions=ep["act"],
            next_observations=ep["next_obs"],
        )
        metrics: dict[str, float] = {"credit/complete_episodes": float(complete.sum()), "credit/episodes": float(len(lengths))}
        # 1. Train on the complete episodes.
        self._update_credit += self.update_ratio * n_steps * n_envs
        n_updates = int(self._update_credit + 1e-9)
        self._update_credit -= n_updates
        fit_eps = episodes.select(np.nonzero(complete)[0]) if complete.any() else None
        metrics.update(self.assigner.fit(fit_eps, num_updates=n_updates))
        # 2. Assign every episode touching this rollout.
        t_assign = time.perf_counter()
        out = self.assigner.assign(episodes)
        metrics["credit/assign_seconds"] = time.perf_counter() - t_assign
        assigned = np.asarray(out.rewards, dtype=np.float64)
        present = mask if out.present is None else np.asarray(out.present, dtype=bool)
        in_rollout = rt >= 0
        # 3. Credit quality on complete episodes (assigned vs hidden true reward).
        if complete.any():
            true_c = ep["true"][complete]
            m_c = mask[complete]
            if not np.isnan(np.where(m_c, true_c, 0.0)).any():
                q = credit_quality(assigned[complete], np.where(m_c, true_c, 0.0), m_c, returns=returns[complete])
                metrics.update(q.metrics)
        # 4. Steps without credit: running mean or the observed reward.
        assigned_steps = present & in_rollout
        if assigned_steps.any():
            self._mean_assigned = float(assigned[assigned_steps].mean())
        new_rewards = np.zeros((n_steps, n_envs))
        filled = np.zeros((n_steps, n_envs), dtype=bool)
        sel = in_rollout & mask
        fallback = self._mean_assigned if self.unassigned == "mean" else None
        vals = np.where(present, assigned, ep["reward"] if fallback is None else fallback)
        new_rewards[rt[sel], re[sel]] = vals[sel]
        filled[rt[sel], re[sel]] = True
        metrics["credit/frac_unassigned"] = float((sel & ~present).sum() / max(sel.sum(), 1))
        assert filled.all(), "every rollout step belongs to one episode"
        # 5. Scale like VecNormalize, keep SB3's timeout bootstrap term, recompute GAE.
        scaled = self._scale(new_rewards, rows["done"])
        bootstrap = buf.rewards.astype(np.float64) - rows["algo"]
        buf.rewards[:] = (scaled + bootstrap).astype(buf.rewards.dtype)
        buf.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
        # 6. Carry the running episodes over.
        for e, p in enumerate(new_prefix):
            if p is not None and p["reward"].shape[0] > self.max_open_steps:
                new_prefix[e] = {k: v[-self.max_open_steps :] for k, v in p.items()}
        self._streams.prefix = new_prefix
        elapsed = time.perf_counter() - t0
        self.total_seconds += elapsed
        metrics["credit/seconds"] = self.total_seconds
        metrics["credit/rollout_seconds"] = elapsed
        metrics["credit/reward_scale"] = float(self._last_scale)
        self.history.append({"timesteps": float(self.num_timesteps), **metrics})
        for k, v in metrics.items():
            if isinstance(v, float) and math.isfinite(v):
                self.logger.record(k if "/" in k else f"credit/{k}", v)

    def _scale(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        if self.reward_scale == "none":
            self._last_scale = 1.0
            return rewards
        if not isinstance(self.reward_scale, str):
            self._last_scale = float(self.reward_scale)
            return rewards * self._last_scale
        gamma = float(self.model.gamma)
        rets = np.empty_like(rewards)
        ret = self._ret if self._ret is not None else np.zeros(rewards.shape[1])
        for t in range(rewards.shape[0]):  # VecNormalize's discounted-return accumulator
            ret = ret * gamma + rewards[t]
            rets[t] = ret
            ret = np.where(dones[t], 0.0, ret)
        self._ret = ret
        self._ret_rms.update(rets.reshape(-1))
        self._last_scale = 1.0 / math.sqrt(float(self._ret_rms.var) + 1e-8)
        return np.clip(rewards * self._last_scale, -self.clip_reward, self.clip_reward)


# ------------------------------------------------------------------------------ off-policy


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
    ):
        if optimize_memory_usage:
            raise RangeError("CreditReplayBuffer needs next observations stored: use optimize_memory_usage=False")
        _check_spaces(observation_space, action_space)
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, False, handle_timeout_termination)
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

    def _episodes(self, ids: np.ndarray, *, with_outcomes: bool = True) -> tuple[Episodes, np.ndarray, np.ndarray, np.ndarray]:
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
            return _encode(a.reshape(-1), self.action_space, a.size // max(self.action_dim, 1)).reshape(*pos.shape, -1)
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
                    metrics.update(credit_quality(np.asarray(out.rewards), true, m, returns=self._ep_return[ids]).metrics)
        n_updates = int(self._update_credit + 1e-9)
        self._update_credit -= n_updates
        if fit_eps is not None or n_updates:
            metrics.update(self.assigner.fit(fit_eps, num_updates=n_updates))
            self.metrics.update(metrics)
            self.history.append(dict(metrics))
        self.total_seconds += time.perf_counter() - t0

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
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
            rewards = np.asarray(self.assigner.assign(eps).rewards)[inverse.reshape(-1), self.step_idx[batch_inds, env_inds]]
        else:
            upper = self.buffer_size if self.full else self.pos
            batch_inds = np.random.randint(0, upper, size=batch_size)
            env_inds = np.random.randint(0, self.n_envs, size=batch_size)
            obs = self.observations[batch_inds, env_inds].reshape(batch_size, 1, -1).astype(np.float32)
            nobs = self.next_observations[batch_inds, env_inds].reshape(batch_size, 1, -1).astype(np.float32)
            acts = self._actions(batch_inds[:, None], env_inds[:, None])
            eps = Episodes.from_padded(np.zeros((batch_size, 1), np.float32), observations=obs, actions=acts, next_observations=nobs)
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


class CreditMetricsCallback(BaseCallback):
    """Log a :class:`CreditReplayBuffer`'s ``metrics`` to the SB3 logger after each rollout."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = getattr(self.model, "replay_buffer", None)
        for k, v in getattr(buf, "metrics", {}).items():
            if isinstance(v, float) and math.isfinite(v):
                self.logger.record(k, v)


# ------------------------------------------------------------------------------ one run


def make_env(
    env_id: str,
    *,
    n_envs: int = 8,
    reward: str = "episodic",
    delay: int = 10,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    normalize_observations: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
) -> VecEnv:
    """An SB3 ``DummyVecEnv`` of ``env_id`` with a delayed reward.

    ``reward``: ``"episodic"`` (:class:`~creditlab.integrations.gymnasium.EpisodicReward`),
    ``"delayed"`` (:class:`~creditlab.integrations.gymnasium.DelayedReward` with ``delay``) or
    ``"dense"`` (the task's own reward). SB3's ``Monitor`` sits *under* the delay wrapper, so the
    logged episode returns (``rollout/ep_rew_mean``) are true returns. Optionally wrapped in
    ``VecNormalize``.
    """
    from stable_baselines3.common.env_util import make_vec_env

    from .gymnasium import DelayedReward, EpisodicReward

    if reward == "episodic":
        wrapper: Callable[..., Any] | None = EpisodicReward
        wrapper_kwargs = None
    elif reward == "delayed":
        wrapper, wrapper_kwargs = DelayedReward, {"delay": delay}
    elif reward == "dense":
        wrapper, wrapper_kwargs = None, None
    else:
        raise RangeError(f"reward must be 'episodic', 'delayed' or 'dense'; got {reward!r}")
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, wrapper_class=wrapper, wrapper_kwargs=wrapper_kwargs)
    if normalize_observations or normalize_rewards:
        venv = VecNormalize(venv, norm_obs=normalize_observations, norm_reward=normalize_rewards, gamma=gamma)
    return venv


@dataclass
class SB3RunConfig:
    """One training run: algorithm, task, reward protocol, credit assigner, budget.

    Attributes:
        env_id: Gymnasium id (e.g. ``"Hopper-v5"``).
        algo: ``"ppo"`` or ``"sac"``.
        reward: ``"episodic"``, ``"delayed"`` or ``"dense"`` (the oracle).
        delay: release period for ``reward="delayed"``.
        assigner: registry name of a credit assigner, or None to train on the env reward as is.
        assigner_params: keyword arguments of the assigner's factory.
        update_ratio: reward-model gradient steps per env step (None: 1/32 for PPO, 1.0 for SAC).
        reward_scale: PPO: ``"running"``/``"none"``/float; SAC: float (``"running"`` means 1.0).
        total_timesteps: environment steps.
        n_envs: parallel envs (DummyVecEnv).
        seed: seeds envs, the algorithm and the assigner (unless ``assigner_params`` sets one).
        gamma: discount of the algorithm.
        normalize_observations, normalize_rewards: VecNormalize on the training env
            (``normalize_rewards`` matters only for runs without an assigner).
        algo_kwargs: extra SB3 constructor arguments (PPO default ``n_steps=2048 // n_envs``).
        eval_every: env steps between evaluations on the true reward (0: only at the end).
        eval_episodes: deterministic evaluation episodes.
        torch_threads: ``torch.set_num_threads`` for the run.
        env_kwargs: ``gym.make`` keyword arguments.
    """

    env_id: str
    algo: str = "ppo"
    reward: str = "episodic"
    delay: int = 10
    assigner: str | None = None
    assigner_params: dict[str, Any] = field(default_factory=dict)
    update_ratio: float | None = None
    reward_scale: str | float = "running"
    total_timesteps: int = 100_000
    n_envs: int = 8
    seed: int = 0
    gamma: float = 0.99
    normalize_observations: bool = False
    normalize_rewards: bool = False
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 0
    eval_episodes: int = 10
    torch_threads: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algo not in ("ppo", "sac"):
            raise RangeError(f"algo must be 'ppo' or 'sac'; got {self.algo!r}")
        if self.reward not in ("episodic", "delayed", "dense"):
            raise RangeError(f"reward must be 'episodic', 'delayed' or 'dense'; got {self.reward!r}")
        if self.total_timesteps < 1 or self.n_envs < 1 or self.eval_episodes < 1:
            raise RangeError("total_timesteps, n_envs and eval_episodes must be >= 1")
        if self.assigner is not None and self.reward == "dense":
            pass  # allowed: credit assignment on a dense task (e.g. to measure its cost)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SB3RunResult(NamedTuple):
    """What :func:`train` measured.

    Attributes:
        eval_timesteps: env steps at each evaluation.
        eval_returns: mean true return of the deterministic policy at each evaluation.
        final_eval_return: mean true return at the end (``eval_episodes`` episodes).
        final_eval_std: its standard deviation over episodes.
        train_return: mean true return of the last (up to 100) training episodes.
        credit: per-rollout (PPO) / per-fit (SAC) credit metrics.
        metrics: summary: ``time/wall_seconds``, ``time/learn_seconds``, ``time/eval_seconds``,
            ``credit/seconds``, ``credit/overhead_pct`` (credit work as % of the training wall
            time: ``learn()`` minus periodic evaluations) and the means of
            ``quality/*`` over the second half of training.
        model: the trained SB3 model.
        assigner: the credit assigner (None for plain runs).
    """

    eval_timesteps: list[int]
    eval_returns: list[float]
    final_eval_return: float
    final_eval_std: float
    train_return: float
    credit: list[dict[str, float]]
    metrics: dict[str, float]
    model: Any
    assigner: Any


class _EvalCallback(BaseCallback):
    def __init__(self, eval_fn: Callable[[], tuple[float, float]], every: int):
        super().__init__(0)
        self.eval_fn = eval_fn
        self.every = int(every)
        self.next_at = int(every)
        self.timesteps: list[int] = []
        self.returns: list[float] = []
        self.seconds = 0.0

    def _on_step(self) -> bool:
        if self.every > 0 and self.num_timesteps >= self.next_at:
            t0 = time.perf_counter()
            self.next_at += self.every
            mean, _ = self.eval_fn()
            self.timesteps.append(int(self.num_timesteps))
            self.returns.append(mean)
            self.seconds += time.perf_counter() - t0
        return True


def train(
    config: SB3RunConfig,
    *,
    assigner: CreditAssigner | None = None,
    callbacks: list[BaseCallback] | None = None,
) -> SB3RunResult:
    """Train one SB3 agent on a delayed-reward task with an optional credit assigner.

    The training env pays the delayed reward (``config.reward``); evaluation runs the
    deterministic policy on the task's true reward (a dense copy of the env sharing the
    observation normalization). ``assigner`` overrides ``config.assigner`` (e.g. a LaRe assigner
    with a Python feature function).

    Example:
        >>> cfg = SB3RunConfig("CartPole-v1", assigner="uniform", total_timesteps=512, n_envs=2,
        ...                    algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 1}, eval_episodes=2)
        >>> res = train(cfg)
        >>> res.final_eval_return > 0, "credit/overhead_pct" in res.metrics
        (True, True)
    """
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    t_start = time.perf_counter()
    torch.set_num_threads(int(config.torch_threads))
    n_envs = config.n_envs
    env = make_env(
        config.env_id, n_envs=n_envs, reward=config.reward, delay=config.delay, seed=config.seed,
        env_kwargs=config.env_kwargs, normalize_observations=config.normalize_observations,
        normalize_rewards=config.normalize_rewards and assigner is None and config.assigner is None,
        gamma=config.gamma,
    )
    eval_env = make_env(
        config.env_id, n_envs=1, reward="dense", seed=config.seed + 10_000, env_kwargs=config.env_kwargs,
        normalize_observations=config.normalize_observations, gamma=config.gamma,
    )
    if isinstance(eval_env, VecNormalize):
        eval_env.training = False
        eval_env.norm_reward = False
    if assigner is None and config.assigner is not None:
        params = dict(config.assigner_params)
        from ..registry import get_method

        if "seed" in get_method(config.assigner).params and "seed" not in params:
            params["seed"] = config.seed
        assigner = make_assigner(config.assigner, **params)
    kwargs = dict(config.algo_kwargs)
    cbs: list[BaseCallback] = list(callbacks or [])
    credit_cb = None
    if config.algo == "ppo":
        kwargs.setdefault("n_steps", max(2048 // n_envs, 1))
        if assigner is not None:
            ratio = 1 / 32 if config.update_ratio is None else config.update_ratio
            credit_cb = CreditAssignmentCallback(assigner, update_ratio=ratio, reward_scale=config.reward_scale)
            cbs.append(credit_cb)
        model = PPO("MlpPolicy", env, gamma=config.gamma, seed=config.seed, verbose=0, **kwargs)
    else:
        if assigner is not None:
            ratio = 1.0 if config.update_ratio is None else config.update_ratio
            scale = 1.0 if isinstance(config.reward_scale, str) else float(config.reward_scale)
            kwargs["replay_buffer_class"] = CreditReplayBuffer
            kwargs["replay_buffer_kwargs"] = dict(assigner=assigner, update_ratio=ratio, reward_scale=scale)
            cbs.append(CreditMetricsCallback())
        model = SAC("MlpPolicy", env, gamma=config.gamma, seed=config.seed, verbose=0, **kwargs)

    def evaluate() -> tuple[float, float]:
        if isinstance(env, VecNormalize):
            sync_envs_normalization(env, eval_env)
        mean, std = evaluate_policy(model, eval_env, n_eval_episodes=config.eval_episodes, deterministic=True)
        return float(mean), float(std)

    eval_cb = _EvalCallback(evaluate, config.eval_every)
    cbs.append(eval_cb)
    t_learn = time.perf_counter()
    model.learn(config.total_timesteps, callback=cbs)
    learn_seconds = time.perf_counter() - t_learn
    final_mean, final_std = evaluate()
    eval_cb.timesteps.append(int(model.num_timesteps))
    eval_cb.returns.append(final_mean)
    ep_returns = [float(info["r"]) for info in model.ep_info_buffer] if model.ep_info_buffer else []
    if credit_cb is not None:
        history, credit_seconds = credit_cb.history, credit_cb.total_seconds
    elif assigner is not None:
        history, credit_seconds = model.replay_buffer.history, model.replay_buffer.total_seconds
    else:
        history, credit_seconds = [], 0.0
    train_seconds = learn_seconds - eval_cb.seconds  # learn() minus the periodic evaluations
    metrics: dict[str, float] = {
        "time/wall_seconds": time.perf_counter() - t_start,
        "time/learn_seconds": learn_seconds,
        "time/eval_seconds": eval_cb.seconds,
        "credit/seconds": credit_seconds,
        "credit/overhead_pct": 100.0 * credit_seconds / train_seconds if train_seconds > 0 else float("nan"),
    }
    half = history[len(history) // 2 :]
    for key in ("quality/pearson", "quality/spearman", "quality/pearson_pooled", "quality/decomposition_error", "credit/loss", "credit/frac_unassigned"):
        vals = [h[key] for h in half if key in h and math.isfinite(h[key])]
        if vals:
            metrics[key] = float(np.mean(vals))
    env.close()
    eval_env.close()
    return SB3RunResult(
        eval_timesteps=eval_cb.timesteps,
        eval_returns=eval_cb.returns,
        final_eval_return=final_mean,
        final_eval_std=final_std,
        train_return=float(np.mean(ep_returns)) if ep_returns else float("nan"),
        credit=history,
        metrics=metrics,
        model=model,
        assigner=assigner,
    )
