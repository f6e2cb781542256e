"""PettingZoo teams under a team episodic reward, trained with parameter-shared SB3 PPO through SuperSuit.

A cooperative team whose only feedback is one number per episode is the multi-agent version of
the episodic-reward protocol: LaRe's MPE experiments (thu-rllab/LaRe, ``mpe/``) pay the team's
summed reward at the last step and 0 before. This module builds that setting from any PettingZoo
*parallel* environment whose agents share one observation and one action space:

* :class:`TeamReward` (a ``ParallelEnv`` wrapper) pays every agent 0 before the team episode's
  last step and, at that step, the team's summed reward ``R = sum_i sum_t r_{i,t}`` (or ``R / N``
  with ``split=True``); ``reward="dense"`` pays each agent its own reward (the oracle). The hidden
  true per-agent reward of the step is in ``infos[agent]["creditlab/true_reward"]``
  (:data:`~creditlab.integrations.TRUE_REWARD_KEY`; evaluation and credit quality only, no
  assigner reads it), and at the last step the first agent's info holds
  ``{"episode": {"r": R_true, "l": T}}``, the team's true return, so SB3's episode statistics and
  the runner's training log count *team* episodes and *team* returns (one per team episode, not
  one per agent).
* :func:`make_team_vec_env` vectorizes ``n_teams`` copies with SuperSuit
  (``pettingzoo_env_to_vec_env_v1`` gives one vector slot per agent,
  ``concat_vec_envs_v1(..., base_class="stable_baselines3")`` concatenates the copies) and wraps
  the result in :class:`TeamVecEnv`, which declares ``slot_teams`` -- the slot -> team map
  (``int64[n_teams * N]``; slot ``k`` is agent ``k % N`` of team copy ``k // N``) that
  :class:`~creditlab.integrations.sb3.CreditAssignmentCallback` reads to know which slots are
  agents of the same team episode -- and seeds the copies as SB3 expects (copy ``i`` gets
  ``seed + i`` at the first reset after ``seed(seed)``).
* One SB3 policy over all slots is parameter sharing (independent PPO with shared weights, as in
  LaRe's MPE code).
* :class:`TeamEvaluator`: deterministic team episodes on the true reward, the same start states
  at every call.
* :class:`PettingZooEnvs`: what :func:`creditlab.integrations.sb3.train` needs to run a
  :class:`~creditlab.integrations.sb3.RunConfig` on such a team (``train(config, envs=PettingZooEnvs())``).

SuperSuit pitfalls handled here (see docs/credit.md, "Multi-agent"):

* SB3 counts every agent slot as an environment: ``total_timesteps``, ``batch_size`` and
  ``eval_every`` are **agent-steps** (N per environment step); ``n_steps`` counts steps per slot,
  as in SB3 (a rollout is ``n_steps x n_envs x N`` agent-steps).
* SuperSuit's SB3 wrapper ignores the seeds SB3 passes (``reset`` runs unseeded, and the copies
  are cloudpickled from one environment, so without reseeding they would replay the same random
  start states); :class:`TeamVecEnv` reseeds them.
* Infos come as a list per slot; the team return is logged once per team (first agent's info).
* SuperSuit's SB3 wrapper reports ``done = terminated or truncated`` without
  ``TimeLimit.truncated``, so SB3 does not bootstrap at MPE's time limit: a fixed-horizon task.
* Every agent of a team must end at the same step (SuperSuit's ``MarkovVectorEnv`` requires it
  without ``black_death``); :class:`TeamReward` raises :class:`~creditlab.errors.DataFormatError`
  otherwise.

Example:
    >>> from mpe2 import simple_spread_v3
    >>> venv = make_team_vec_env(lambda: simple_spread_v3.parallel_env(N=3, max_cycles=4), n_teams=2, seed=0)
    >>> venv.num_envs, venv.slot_teams.tolist()
    (6, [0, 0, 0, 1, 1, 1])
    >>> _ = venv.reset()
    >>> paid = [venv.step(np.zeros(6, dtype=np.int64))[1] for _ in range(4)]
    >>> [float(abs(p).sum()) > 0 for p in paid]           # 0 until the team's last step
    [False, False, False, True]
    >>> bool(np.allclose(paid[-1][:3], paid[-1][0]))      # every agent of a team is paid the team's sum
    True
    >>> venv.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pettingzoo.utils.wrappers import BaseParallelWrapper
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize, unwrap_vec_normalize

from ..errors import DataFormatError, DtypeError, RangeError
from . import TRUE_REWARD_KEY

__all__ = ["TRUE_REWARD_KEY", "TeamReward", "TeamVecEnv", "TeamEvaluator", "PettingZooEnvs", "make_team_vec_env"]

_REWARDS = ("episodic", "dense")
_ENV_PAYS = ("agents", "team")


class TeamReward(BaseParallelWrapper):
    """Pay a PettingZoo parallel team its summed reward at the end of the team episode (see the module docstring).

    Args:
        env: a PettingZoo ``ParallelEnv``.
        reward: ``"episodic"`` (0 before the last step; the team's sum at the last step, to every
            agent) or ``"dense"`` (each agent's own reward: the oracle).
        split: pay ``R / N`` instead of ``R`` to each of the N agents (LaRe's sparse setting), so
            the team is paid R in all. The multi-agent assigners' ``team_return`` must match:
            ``"shared"`` for ``split=False`` (every agent's return is the team's R), ``"sum"``
            for ``split=True`` (the agents' returns add up to R).
        env_pays: what the wrapped env's rewards are. ``"agents"`` (default): each agent's own
            reward, and the team's return is their sum ``R = sum_i sum_t r_{i,t}``. ``"team"``:
            the env already pays the team's number, the same to every agent at every step (e.g.
            0 before the end and the team's score at the last step); the team's return is that
            number summed over steps (not over agents: summing would count it N times), agents
            paid different rewards at a step are a ``DataFormatError``, and there is no hidden
            per-agent reward (no ``creditlab/true_reward`` in the infos, so no credit-quality
            metrics). With ``"team"``, ``reward="dense"`` passes the env's rewards through.

    Attributes:
        team_return: the true team return of the running episode so far (see ``env_pays``).
    """

    def __init__(self, env: Any, *, reward: str = "episodic", split: bool = False, env_pays: str = "agents"):
        super().__init__(env)
        if env_pays not in _ENV_PAYS:
            raise RangeError(f"TeamReward.env_pays must be one of {_ENV_PAYS}; got {env_pays!r}")
        self.env_pays = env_pays
        if reward not in _REWARDS:
            raise RangeError(f"TeamReward.reward must be one of {_REWARDS}; got {reward!r}")
        if not isinstance(split, bool):
            raise DtypeError(f"TeamReward.split must be True or False; got {split!r}")
        self.reward_mode = reward
        self.split = split
        self.team_return = 0.0
        self._steps = 0

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self.team_return = 0.0
        self._steps = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Mapping[Any, Any]):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        self._steps += 1
        agents = list(rewards)
        true = {a: float(rewards[a]) for a in agents}
        if self.env_pays == "team":
            values = sorted(set(true.values()))
            if len(values) > 1:
                raise DataFormatError(
                    f"TeamReward(env_pays='team') expects the same team reward for every agent at a step; at step "
                    f"{self._steps} the agents got {true}. If each agent is paid its own reward, use "
                    "env_pays='agents' (the team's return is then their sum)"
                )
            self.team_return += values[0] if values else 0.0
        else:
            self.team_return += sum(true.values())
        done = {a: bool(terms.get(a, False) or truncs.get(a, False)) for a in agents}
        ended = all(done.values())
        if any(done.values()) and not ended:
            early = sorted(str(a) for a, d in done.items() if d)
            raise DataFormatError(
                f"TeamReward needs every agent of a team to end at the same step; agents {early} ended at step "
                f"{self._steps} while others continue (the team's episodic reward is paid once, at the end)"
            )
        infos = {a: dict(infos.get(a, {})) for a in agents}
        if self.env_pays == "agents":  # the hidden per-agent reward (evaluation and credit quality only)
            for a in agents:
                infos[a][TRUE_REWARD_KEY] = true[a]
        if self.reward_mode == "dense":
            paid = true
        else:
            share = self.team_return / len(agents) if self.split else self.team_return
            paid = dict.fromkeys(agents, share if ended else 0.0)
        if ended and agents:  # on the first agent in possible_agents order: the slot the evaluator reads
            first = next((a for a in self.possible_agents if a in infos), agents[0])
            infos[first]["episode"] = {"r": self.team_return, "l": self._steps, "t": 0.0}
        return obs, paid, terms, truncs, infos


class TeamVecEnv(VecEnvWrapper):
    """The SB3 vector env of ``n_teams`` team copies, one slot per agent (see :func:`make_team_vec_env`).

    Attributes:
        slot_teams: int64[n_teams * N] -- the team copy of each slot (slot ``k``: agent
            ``k % N`` of copy ``k // N``). :class:`~creditlab.integrations.sb3.CreditAssignmentCallback`
            reads it: two slots are agents of the same team episode when they have the same team
            and their episodes end at the same step.
        num_agents: N.
        n_teams: team copies.
        team_split: whether the team reward is paid R / N to each agent (``TeamReward.split``);
            None: not declared. The credit callback checks a multi-agent assigner's
            ``team_return`` against it.
    """

    def __init__(self, venv: VecEnv, *, num_agents: int, seed: int | None = None, team_split: bool | None = None):
        super().__init__(venv)
        self.team_split = team_split
        if venv.num_envs % num_agents:
            raise RangeError(f"a vector env of {venv.num_envs} slots cannot hold teams of {num_agents} agents")
        self.num_agents = int(num_agents)
        self.n_teams = venv.num_envs // self.num_agents
        self.slot_teams = np.repeat(np.arange(self.n_teams, dtype=np.int64), self.num_agents)
        self._pending_seed = seed

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Reseed at the next reset: team copy ``i`` gets ``seed + i`` (as SB3's ``DummyVecEnv`` does)."""
        self._pending_seed = seed
        return [None if seed is None else seed + i for i in range(self.n_teams)]

    def reset(self) -> np.ndarray:
        concat = self.venv.venv  # SuperSuit's ConcatVecEnv under its SB3 wrapper
        if self._pending_seed is not None:
            obs, infos = concat.reset(seed=int(self._pending_seed))
            self._pending_seed = None
        else:
            obs, infos = concat.reset()
        self.venv.reset_infos = infos
        self.reset_infos = infos
        return obs

    def step_wait(self):
        return self.venv.step_wait()


def make_team_vec_env(
    env_fn: Callable[[], Any],
    *,
    n_teams: int = 1,
    seed: int | None = 0,
    reward: str = "episodic",
    split: bool = False,
    env_pays: str = "agents",
) -> TeamVecEnv:
    """``n_teams`` copies of a PettingZoo parallel team as one SB3 vector env with a slot per agent.

    Args:
        env_fn: zero-argument factory of a PettingZoo ``ParallelEnv`` whose agents share one
            observation space (a flat ``Box``) and one action space.
        n_teams: team copies (SuperSuit ``concat_vec_envs_v1``, in this process).
        seed: copy ``i`` is reset with ``seed + i`` first (None: unseeded).
        reward: ``"episodic"`` or ``"dense"`` (see :class:`TeamReward`).
        split: pay ``R / N`` per agent (see :class:`TeamReward`).
        env_pays: ``"agents"`` (each agent's own reward) or ``"team"`` (the env already pays the
            team's number to every agent; see :class:`TeamReward`).
    """
    import supersuit as ss

    if isinstance(n_teams, bool) or not isinstance(n_teams, int) or n_teams < 1:
        raise RangeError(f"n_teams must be an int >= 1; got {n_teams!r}")
    par = env_fn()
    if not hasattr(par, "possible_agents") or not hasattr(par, "step"):
        raise DtypeError(f"env_fn must return a PettingZoo ParallelEnv; got {type(par).__name__}")
    n_agents = len(par.possible_agents)
    team = TeamReward(par, reward=reward, split=split, env_pays=env_pays)
    markov = ss.pettingzoo_env_to_vec_env_v1(team)
    venv = ss.concat_vec_envs_v1(markov, n_teams, num_cpus=0, base_class="stable_baselines3")
    return TeamVecEnv(venv, num_agents=n_agents, seed=seed, team_split=split if reward == "episodic" else None)


class TeamEvaluator:
    """Deterministic team episodes on the true reward; the same start states at every call.

    The interface of :class:`~creditlab.integrations.sb3.evaluation.Evaluator` (``__call__(model,
    timesteps) -> Evaluation``, ``seconds``, ``close()``); an episode's return is the team's true
    return ``sum_i sum_t r_{i,t}``.

    Args:
        env_fn: the parallel-env factory.
        episodes: team episodes per evaluation.
        seed: team copy ``i`` starts from ``seed + i`` at every evaluation.
        n_teams: parallel team copies (default ``min(episodes, 10)``).
        normalize_observations: the policy was trained on ``VecNormalize`` d observations (the
            training statistics are copied in, frozen).
        env_pays: ``"agents"`` or ``"team"`` (see :class:`TeamReward`): how the team's return is
            read from the env's rewards.
    """

    def __init__(
        self,
        env_fn: Callable[[], Any],
        *,
        episodes: int = 10,
        seed: int = 10_000,
        n_teams: int | None = None,
        normalize_observations: bool = False,
        env_pays: str = "agents",
    ):
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise RangeError(f"episodes must be an int >= 1; got {episodes!r}")
        self.episodes = episodes
        self.seed = int(seed)
        self.seconds = 0.0
        self.env: VecEnv = make_team_vec_env(
            env_fn,
            n_teams=min(episodes, 10) if n_teams is None else n_teams,
            seed=None,
            reward="dense",
            env_pays=env_pays,
        )
        self._team_env: TeamVecEnv = self.env
        if normalize_observations:
            self.env = VecNormalize(self.env, training=False, norm_obs=True, norm_reward=False)

    def __call__(self, model: Any, timesteps: int | None = None):
        from .sb3.evaluation import Evaluation

        t0 = time.perf_counter()
        train_norm = unwrap_vec_normalize(model.get_env()) if model.get_env() is not None else None
        if isinstance(self.env, VecNormalize) and train_norm is not None:
            self.env.obs_rms = train_norm.obs_rms.copy()
        self._team_env.seed(self.seed)
        obs = self.env.reset()
        first = np.arange(self._team_env.n_teams) * self._team_env.num_agents
        returns: list[float] = []
        lengths: list[int] = []
        while len(returns) < self.episodes:
            actions, _ = model.predict(obs, deterministic=True)
            obs, _, dones, infos = self.env.step(actions)
            for k in first:  # team copies in order: the first `episodes` to finish are kept
                ep = infos[k].get("episode") if dones[k] else None
                if ep is not None and len(returns) < self.episodes:
                    returns.append(float(ep["r"]))
                    lengths.append(int(ep["l"]))
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        steps = int(model.num_timesteps) if timesteps is None else int(timesteps)
        return Evaluation(steps, returns, lengths, None, seconds)

    def close(self) -> None:
        self.env.close()


class PettingZooEnvs:
    """The environments of a :func:`~creditlab.integrations.sb3.train` run on a PettingZoo team.

    ``train(config, envs=PettingZooEnvs())`` runs ``config`` with ``config.env_id`` read as the
    factory of a PettingZoo parallel env (a zero-argument callable or a ``"module:factory"``
    string called with ``env_kwargs``), ``n_envs`` as the number of team copies,
    ``config.reward`` ``"episodic"`` (the team's sum at the end) or ``"dense"`` (per-agent
    rewards), and the budgets (``total_timesteps``, ``eval_every``, ``batch_size``) in agent-steps;
    ``n_steps`` is per slot, as in SB3. Evaluation: :class:`TeamEvaluator` (team true returns).

    Args:
        split: pay ``R / N`` per agent (see :class:`TeamReward`).
        env_pays: ``"agents"`` (default: the env pays each agent its own reward, summed into the
            team's return) or ``"team"`` (the env already pays the team's number to every agent;
            see :class:`TeamReward`).

    Example:
        >>> from creditlab.integrations.sb3 import RunConfig, train
        >>> cfg = RunConfig("mpe2.simple_spread_v3:parallel_env", env_kwargs={"N": 2, "max_cycles": 5},
        ...                 assigner="team_uniform", total_timesteps=40, n_envs=2, eval_every=20, eval_episodes=2,
        ...                 algo_kwargs={"n_steps": 5, "batch_size": 20, "n_epochs": 1})
        >>> res = train(cfg, envs=PettingZooEnvs())
        >>> res.eval_timesteps, len(res.train_episodes)    # agent-steps; 2 teams x 2 agents x 5 steps per rollout
        ([0, 20, 40], 4)
    """

    def __init__(self, *, split: bool = False, env_pays: str = "agents"):
        if env_pays not in _ENV_PAYS:
            raise RangeError(f"PettingZooEnvs.env_pays must be one of {_ENV_PAYS}; got {env_pays!r}")
        self.split = bool(split)
        self.env_pays = env_pays

    def _factory(self, config: Any) -> Callable[[], Any]:
        from .sb3.envs import env_factory

        return env_factory(config.env_id, config.env_kwargs)

    def train_env(self, config: Any, vec_env_wrapper: Callable[[VecEnv], VecEnv] | None = None) -> VecEnv:
        """The training env: ``config.n_envs`` team copies paying ``config.reward``, then the
        optional wrapper and VecNormalize (as :func:`~creditlab.integrations.sb3.make_env`)."""
        if config.reward not in _REWARDS:
            raise RangeError(f"a PettingZoo team run pays reward 'episodic' or 'dense'; got {config.reward!r}")
        venv: VecEnv = make_team_vec_env(
            self._factory(config),
            n_teams=config.n_envs,
            seed=config.seed,
            reward=config.reward,
            split=self.split,
            env_pays=self.env_pays,
        )
        if vec_env_wrapper is not None:
            venv = vec_env_wrapper(venv)
        if config.normalize_observations or config.normalize_rewards:
            venv = VecNormalize(
                venv, norm_obs=config.normalize_observations, norm_reward=config.normalize_rewards, gamma=config.gamma
            )
        return venv

    def evaluator(self, config: Any) -> TeamEvaluator:
        """:class:`TeamEvaluator` with ``config.eval_episodes`` team episodes from seed ``config.seed + 10_000``."""
        return TeamEvaluator(
            self._factory(config),
            episodes=config.eval_episodes,
            seed=config.seed + 10_000,
            normalize_observations=config.normalize_observations,
            env_pays=self.env_pays,
        )
