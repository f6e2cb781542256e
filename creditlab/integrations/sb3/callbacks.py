"""On-policy credit assignment (PPO, A2C): relabel each rollout before the algorithm trains on it.

:class:`CreditAssignmentCallback` cuts each rollout into episodes, hands the complete ones to
``assigner.fit`` (the reward model trains from complete episodes only), relabels the rollout's
rewards with ``assigner.assign`` and recomputes GAE. :class:`RecomputeAdvantages` recomputes GAE
once after several callbacks that edit rollout rewards; :class:`CreditMetricsCallback` logs the
metrics of a :class:`~creditlab.integrations.sb3.CreditReplayBuffer` (SAC, TD3).

Episodes that span rollouts
    SB3 trains on a rollout right after collecting it, so a step can only be relabeled while its
    rollout is in the buffer. The callback keeps the steps of every running episode (across
    rollouts) and, at each rollout end, assigns rewards to whole episodes: complete ones, and the
    running prefix of unfinished ones, whose return is not known yet. Step-scope assigners (RD,
    RRD, LaRe) and RUDDER (prediction differences of the prefix) credit every step. A residual
    correction needs the return, so it is added in the rollout where the episode ends: RUDDER's
    on the last step (its default), RD's (and the team assigners') spread over every step of the
    episode, of which only the steps still in the buffer are relabeled. An episode cut by
    rollouts therefore sums to its return only with RUDDER's last-step residual; with RD's the
    share on steps of earlier rollouts, already trained on with the raw predictions, is lost.
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

Several reward editors (credit, exploration bonuses)
    A callback that edits ``rollout_buffer.rewards`` in ``_on_rollout_end`` declares
    ``edits_rollout_rewards = True``. The order is: credit relabel first, then the other editors
    (e.g. bonuses added to the relabeled rewards), then GAE is recomputed once
    (:class:`RecomputeAdvantages`). :func:`~creditlab.integrations.sb3.train` builds that order;
    by hand, pass ``recompute_advantages=False`` to the credit callback and put
    :class:`RecomputeAdvantages` last.

Torch threads
    The assigner's ``fit`` and ``assign`` run with ``torch_threads`` threads (default 1; the
    caller's setting is restored right after). The reward models are small MLPs/LSTMs on
    batches of a few thousand steps: more threads only add synchronization, and on a loaded
    machine PyTorch's default (one thread per core) made a PPO + RRD run 5.7x slower (docs/speed.md,
    "Threads"). ``torch_threads=None`` leaves the setting alone. The algorithm's own updates run
    with the process's setting: call ``torch.set_num_threads(1)`` before ``learn`` for small
    policies (what :func:`~creditlab.integrations.sb3.train` does with ``RunConfig.torch_threads``).

Teams (multi-agent)
    When the vector env's slots are agents of teams (``teams``, or the ``slot_teams`` map a
    :class:`~creditlab.integrations.pettingzoo.TeamVecEnv` declares), every episode row is one
    agent's part of a team episode and gets ``group_ids``: rows with the same team and the same
    last step in the rollout are one team episode (the agents of a team end together). The
    multi-agent assigners (:mod:`creditlab.credit.multiagent`) split each team's return across
    those rows; the decomposition-error metric then compares each agent's credit with its hidden
    true return. With an explicit ``teams`` map the agents of a team must end their episodes at
    the same step (``TeamReward`` enforces it): rows of one team that end at different steps are
    different team episodes, each credited with its own return. When the env declares
    ``team_split`` (``make_team_vec_env(split=...)``), a multi-agent assigner's ``team_return``
    must agree with it (``"sum"`` for a split payment, ``"shared"`` otherwise), else a
    ``RangeError`` at the start of training: a mismatch would credit each team R / N or N x R.

Logged metrics (SB3 logger, and ``callback.history``): ``credit/loss``, ``credit/updates``,
``credit/fit_seconds``, ``credit/assign_seconds``, ``credit/seconds`` (all callback work),
``credit/frac_unassigned``, ``credit/complete_episodes``, ``store/*`` and, when the env reports
the hidden true reward under ``info["creditlab/true_reward"]``, ``quality/pearson``,
``quality/spearman``, ``quality/decomposition_error`` (see :mod:`creditlab.credit.quality`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize, unwrap_vec_normalize

from ...credit.base import CreditAssigner
from ...credit.quality import credit_quality
from ...episodes import Episodes
from ...errors import DtypeError, RangeError
from .. import TRUE_REWARD_KEY

__all__ = [
    "CreditAssignmentCallback",
    "CreditMetricsCallback",
    "RecomputeAdvantages",
    "bounded_threads",
    "make_assigner",
]


def make_assigner(name: str, **params: Any) -> CreditAssigner:
    """Build a registered assigner by name (``creditlab.list_methods(kind="assigner")``)."""
    from ...registry import get_method

    method = get_method(name)
    if method.kind != "assigner" or method.factory is None:
        raise RangeError(
            f"{name!r} is a {method.kind} method, not a credit assigner; see list_methods(kind='assigner')"
        )
    return method.factory(**params)


def check_torch_threads(torch_threads: int | None) -> int | None:
    """Validate a ``torch_threads`` argument: an int >= 1, or None (leave the process's setting alone)."""
    if torch_threads is None:
        return None
    if isinstance(torch_threads, bool) or not isinstance(torch_threads, int) or torch_threads < 1:
        raise RangeError(
            f"torch_threads must be an int >= 1 or None (leave torch's setting alone); got {torch_threads!r}"
        )
    return torch_threads


@contextlib.contextmanager
def bounded_threads(torch_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(torch_threads)``, then restore the caller's setting.

    ``None`` leaves the setting alone.

    Example:
        >>> before = torch.get_num_threads()
        >>> with bounded_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if torch_threads is None:
        yield
        return
    before = torch.get_num_threads()
    if before == torch_threads:
        yield
        return
    torch.set_num_threads(torch_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """Raise ``DtypeError`` unless observations are a flat ``Box`` and actions ``Box`` or ``Discrete``."""
    if not isinstance(observation_space, spaces.Box):
        raise DtypeError(f"credit assignment needs a Box observation space (flat vectors); got {observation_space}")
    if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
        raise DtypeError(f"credit assignment supports Box and Discrete action spaces; got {action_space}")


def encode_actions(actions: np.ndarray, action_space: spaces.Space, n: int) -> np.ndarray:
    """float32[n, A] -- ``n`` actions as model inputs: one-hot for ``Discrete``, flattened for ``Box``."""
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

    See the module docstring for episodes that span rollouts, time limits and reward scaling.

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
        recompute_advantages: recompute GAE after relabeling (the default). ``False`` when other
            callbacks edit the rewards after this one and :class:`RecomputeAdvantages` runs last.
        torch_threads: torch threads of the assigner's ``fit`` and ``assign`` (the caller's setting
            is restored afterwards); None leaves it alone. See "Torch threads" in the module docstring.
        teams: int[n_envs] -- the team of each vector slot when slots are agents (see "Teams" in
            the module docstring); None: the training env's ``slot_teams`` if it declares one,
            else every slot is a single-agent env.

    Example:
        >>> from stable_baselines3 import PPO
        >>> from creditlab.credit import RRDAssigner
        >>> from creditlab.integrations.sb3 import make_env
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
        recompute_advantages: bool = True,
        torch_threads: int | None = 1,
        teams: Any | None = None,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.torch_threads = check_torch_threads(torch_threads)
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
        self.recompute_advantages = bool(recompute_advantages)
        self.teams = None if teams is None else np.asarray(teams, dtype=np.int64).reshape(-1)
        self.history: list[dict[str, float]] = []
        self.total_seconds = 0.0
        self._update_credit = 0.0
        self._mean_assigned = 0.0
        self._ret_rms = RunningMeanStd(shape=())
        self._ret = None
        self._streams: _Streams | None = None
        self._prev_obs: np.ndarray | None = None

    edits_rollout_rewards = True  # see "Several reward editors" in the module docstring

    # ------------------------------------------------------------ setup

    def _on_training_start(self) -> None:
        check_spaces(self.model.observation_space, self.model.action_space)
        n = self.training_env.num_envs
        self._n = n
        self._vn: VecNormalize | None = unwrap_vec_normalize(self.training_env)
        teams = self.teams if self.teams is not None else getattr(self.training_env, "slot_teams", None)
        self._teams = None if teams is None else np.asarray(teams, dtype=np.int64).reshape(-1)
        if self._teams is not None and self._teams.shape != (n,):
            raise RangeError(f"teams maps {self._teams.shape[0]} slots to teams but the training env has {n} slots")
        split = getattr(self.training_env, "team_split", None)
        team_return = getattr(getattr(self.assigner, "config", None), "team_return", None)
        if split is not None and team_return is not None and team_return != ("sum" if split else "shared"):
            raise RangeError(
                f"{type(self.assigner).__name__}.team_return must be {'sum' if split else 'shared'!r} for this env "
                f"(its team reward is {'split: R / N to each agent' if split else 'shared: R to every agent'}); "
                f"got team_return={team_return!r}"
            )
        if self._streams is None or self.model.num_timesteps == 0 or self._streams.n_envs != n:
            self._streams = _Streams(n)
            self._prev_obs = None
            self._ret = np.zeros(n)

    def _raw_obs(self) -> np.ndarray:
        obs = self._vn.get_original_obs() if self._vn is not None else self.model._last_obs
        return np.array(obs, dtype=np.float32).reshape(self._n, -1)

    def _on_rollout_start(self) -> None:
        t0 = time.perf_counter()
        if self._prev_obs is None:
            self._prev_obs = self._raw_obs()
        self._rows: dict[str, list[np.ndarray]] = {
            k: [] for k in ("obs", "act", "next_obs", "reward", "true", "algo", "done", "timeout")
        }
        self.total_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------ per step

    def _on_step(self) -> bool:
        # Runs on every vector step: only copies of this step's arrays and a Python loop over the
        # envs whose episode just ended; actions are encoded once per rollout (``_on_rollout_end``).
        t0 = time.perf_counter()
        loc = self.locals
        n, vn, key = self._n, self._vn, self.true_reward_key
        infos = loc["infos"]
        dones = np.asarray(loc["dones"], dtype=bool)
        algo_reward = np.array(
            loc["rewards"], dtype=np.float64
        )  # a copy: SB3 adds the timeout bootstrap in place later
        raw_reward = np.array(vn.get_original_reward(), dtype=np.float64) if vn is not None else algo_reward
        new_obs = np.array(vn.get_original_obs() if vn is not None else loc["new_obs"], dtype=np.float32).reshape(n, -1)
        next_obs = new_obs
        timeout = np.zeros(n, dtype=bool)
        true = np.array([info.get(key, np.nan) for info in infos], dtype=np.float64)
        ended = np.flatnonzero(dones)
        if ended.size:
            next_obs = new_obs.copy()
            for i in ended:
                info = infos[i]
                term_obs = info.get("terminal_observation")
                if term_obs is not None:
                    if vn is not None:
                        term_obs = vn.unnormalize_obs(term_obs)
                    next_obs[i] = np.asarray(term_obs, dtype=np.float32).reshape(-1)
                timeout[i] = bool(info.get("TimeLimit.truncated", False))
        rows = self._rows
        rows["obs"].append(self._prev_obs)
        rows["act"].append(np.array(loc.get("clipped_actions", loc["actions"])))
        rows["next_obs"].append(next_obs)
        rows["reward"].append(raw_reward)
        rows["true"].append(true)
        rows["algo"].append(algo_reward)
        rows["done"].append(dones)
        rows["timeout"].append(timeout)
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
        rows["act"] = encode_actions(rows["act"], self.model.action_space, n_steps * n_envs).reshape(
            n_steps, n_envs, -1
        )
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
        # Team episodes: rows of slots of one team that end at the same step of this rollout.
        group_ids = None if self._teams is None else self._teams[last_e] * (n_steps + 1) + last_t
        episodes = Episodes.from_padded(
            ep["reward"].astype(np.float32),
            mask,
            terminated=complete & ~timeout,
            truncated=~complete | timeout,
            outcomes=[float(r) if c else None for r, c in zip(returns, complete)],
            observations=ep["obs"],
            actions=ep["act"],
            next_observations=ep["next_obs"],
            group_ids=group_ids,
        )
        metrics: dict[str, float] = {
            "credit/complete_episodes": float(complete.sum()),
            "credit/episodes": float(len(lengths)),
        }
        # 1. Train on the complete episodes.
        self._update_credit += self.update_ratio * n_steps * n_envs
        n_updates = int(self._update_credit + 1e-9)
        self._update_credit -= n_updates
        fit_eps = episodes.select(np.nonzero(complete)[0]) if complete.any() else None
        with bounded_threads(self.torch_threads):
            metrics.update(self.assigner.fit(fit_eps, num_updates=n_updates))
            # 2. Assign every episode touching this rollout.
            t_assign = time.perf_counter()
            out = self.assigner.assign(episodes)
        # the assigner's own diagnostics (credit/untrained, credit/nonfinite_factors, ...); fit's win on clashes
        metrics.update({k: float(v) for k, v in out.metrics.items() if k not in metrics})
        metrics["credit/assign_seconds"] = time.perf_counter() - t_assign
        assigned = np.asarray(out.rewards, dtype=np.float64)
        present = mask if out.present is None else np.asarray(out.present, dtype=bool)
        in_rollout = rt >= 0
        # 3. Credit quality on complete episodes (assigned vs hidden true reward).
        if complete.any():
            true_c = ep["true"][complete]
            m_c = mask[complete]
            if not np.isnan(np.where(m_c, true_c, 0.0)).any():
                # teams: each agent's credit against its hidden true return (the row's paid return is the team's)
                target = None if self._teams is not None else returns[complete]
                q = credit_quality(assigned[complete], np.where(m_c, true_c, 0.0), m_c, returns=target)
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
        if self.recompute_advantages:
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


class CreditMetricsCallback(BaseCallback):
    """Log a :class:`CreditReplayBuffer`'s ``metrics`` to the SB3 logger after each rollout."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buf = getattr(self.model, "replay_buffer", None)
        for k, v in getattr(buf, "metrics", {}).items():
            if isinstance(v, float) and math.isfinite(v):
                self.logger.record(k, v)


class RecomputeAdvantages(BaseCallback):
    """Recompute the rollout buffer's returns and GAE advantages at the end of each rollout.

    Put it after every callback that edits ``rollout_buffer.rewards`` (credit relabeling, then
    exploration bonuses), so GAE is computed once, from the final rewards, with the algorithm's
    ``gamma`` and ``gae_lambda`` and the rollout's last values (SB3's own
    ``compute_returns_and_advantage``). ``seconds`` is the time it took in all.
    """

    def __init__(self, verbose: int = 0):
        super().__init__(verbose)
        self.seconds = 0.0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        t0 = time.perf_counter()
        self.model.rollout_buffer.compute_returns_and_advantage(
            last_values=self.locals["values"], dones=self.locals["dones"]
        )
        self.seconds += time.perf_counter() - t0
