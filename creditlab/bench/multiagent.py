"""Benchmark tasks of family ``pettingzoo``: cooperative teams under a team episodic reward.

A ``pettingzoo`` task names a PettingZoo *parallel* environment factory (``env:
"mpe2.simple_spread_v3:parallel_env"``, called with ``env_kwargs``) whose agents share one
observation and one action space. Its runs go through the same SB3 runner as every other task,
with the environments of :class:`creditlab.integrations.pettingzoo.PettingZooEnvs`:

* ``n_envs`` of the task's agent is the number of **team copies**; SuperSuit gives each agent a
  vector slot, and one SB3 PPO policy over all slots is parameter sharing;
* budgets (``steps``, ``eval_every``, ``batch_size``) count **agent-steps**, as SB3 does (N per
  environment step); ``n_steps`` counts steps per slot, as in SB3;
* ``episodic`` (the baseline): the team's summed reward paid to every agent at the last step;
  ``dense`` (the oracle): each agent's own per-step reward; every other method trains on the
  episodic team reward through :class:`~creditlab.integrations.sb3.CreditAssignmentCallback`, which
  groups the slots into team episodes (``slot_teams``);
* evaluation: deterministic team episodes, scored by the team's true return ``sum_i sum_t r_{i,t}``;
  training episodes and their returns are team episodes too.

Example:
    >>> from creditlab.bench.suites import AgentConfig, TaskSpec
    >>> task = TaskSpec("spread2", "mpe2.simple_spread_v3:parallel_env", "pettingzoo", 100, 50, AgentConfig(n_envs=2),
    ...                 env_kwargs={"N": 2, "max_cycles": 5})
    >>> env = make_parallel_env(task)
    >>> env.possible_agents, env.observation_space("agent_0").shape
    (['agent_0', 'agent_1'], (12,))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import RangeError
from .suites import TaskSpec

__all__ = ["X_NAME", "make_parallel_env", "team_envs", "spread_individual"]

X_NAME = "agent-steps (N per environment step)"
"""The x axis of a ``pettingzoo`` task's learning curve."""


def _individual_spread_classes() -> tuple[type, type]:
    """mpe2's simple_spread scenario and raw env, subclassed to pay LaRe's per-agent reward (built on
    first use, so importing this module does not import mpe2)."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    from gymnasium.spaces import Box
    from gymnasium.utils import EzPickle
    from mpe2.simple_spread.simple_spread import Scenario, raw_env

    class IndividualSpreadScenario(Scenario):  # type: ignore[misc, valid-type]
        """mpe2's simple_spread scenario whose ``reward(agent, world)`` is LaRe's per-agent reward."""

        _key: bytes = b""
        _rewards: Any = None

        def reward(self, agent: Any, world: Any) -> float:
            # mpe2 asks once per agent after each world step: every agent's reward is computed in one
            # vectorized pass and reused while the positions are the same (the key is the positions)
            pos = np.array([a.state.p_pos for a in world.agents] + [m.state.p_pos for m in world.landmarks])
            key = pos.tobytes()
            if key != self._key:
                n = len(world.agents)
                agents, marks = pos[:n], pos[n:]  # [N, 2], [L, 2]
                nearest = np.linalg.norm(agents[:, None] - marks[None], axis=2).min(axis=1)  # [N]
                size = np.array([a.size for a in world.agents])  # [N]
                apart = np.linalg.norm(agents[:, None] - agents[None], axis=2)  # [N, N]
                collisions = (apart < size[:, None] + size[None, :]).sum(axis=1) - 1  # minus itself
                self._key, self._rewards = key, -nearest - collisions
            return float(self._rewards[world.agents.index(agent)])

    class IndividualSpreadEnv(raw_env):  # type: ignore[misc, valid-type]
        """mpe2's ``simple_spread_v3.raw_env`` (world, dynamics, observations) paying only
        :class:`IndividualSpreadScenario`'s reward: no shared coverage term (``local_ratio=None``)."""

        def __init__(self, N: int = 3, max_cycles: int = 25, time_feature: bool = False, **kwargs: Any) -> None:
            if "local_ratio" in kwargs:
                raise RangeError(
                    f"spread_individual: local_ratio is not a parameter (each agent is paid its own reward); "
                    f"got local_ratio={kwargs['local_ratio']!r}"
                )
            if not isinstance(time_feature, bool):
                raise RangeError(f"spread_individual: time_feature must be true or false; got {time_feature!r}")
            super().__init__(N=N, max_cycles=max_cycles, **kwargs)
            self.time_feature = time_feature
            if time_feature:  # one more observation entry per agent: the elapsed fraction steps / max_cycles
                for name, space in self.observation_spaces.items():
                    self.observation_spaces[name] = Box(-np.inf, np.inf, (space.shape[0] + 1,), np.float32)
                width = self.state_space.shape[0] + len(self.possible_agents)
                self.state_space = Box(-np.inf, np.inf, (width,), np.float32)
            old = self.scenario
            self.scenario = IndividualSpreadScenario(
                curriculum=old.curriculum,
                terminate_on_success=old.terminate_on_success,
                num_agent_neighbors=old.num_agent_neighbors,
                num_landmark_neighbors=old.num_landmark_neighbors,
            )
            self.local_ratio = None  # SimpleEnv then pays scenario.reward alone, with no global reward computed
            # copies (SuperSuit clones the env by pickling it) are rebuilt from these arguments, not raw_env's
            EzPickle.__init__(self, N=N, max_cycles=max_cycles, time_feature=time_feature, **kwargs)

        def observe(self, agent: str) -> np.ndarray:
            obs = super().observe(agent)
            if not self.time_feature:
                return obs
            return np.append(obs, np.float32(self.steps / self.max_cycles))

        def state(self) -> np.ndarray:
            return np.concatenate([self.observe(agent) for agent in self.possible_agents])

    _CLASSES = (IndividualSpreadScenario, IndividualSpreadEnv)
    return _CLASSES


_CLASSES: tuple[type, type] | None = None


def spread_individual(N: int = 3, max_cycles: int = 25, time_feature: bool = False, **kwargs: Any) -> Any:
    """Cooperative navigation with LaRe's per-agent ("noshare") reward instead of mpe2's mixed one:
    the PettingZoo parallel env of the multiagent suite's tasks.

    mpe2's ``simple_spread_v3`` pays agent i ``local_ratio * (-collisions_i) + (1 - local_ratio) *
    (-coverage)``: with the default ``local_ratio = 0.5`` half of every agent's reward is the team's
    coverage term, identical for all agents, so its per-agent reward carries little per-agent
    credit. LaRe's MPE scenarios (thu-rllab/LaRe ``simple_spread_n6_noshare.py``, ``reward``) pay
    each agent its own ``1 - min_l |p_i - p_l| - #{j: |p_i - p_j| < 2 size}`` (j ranges over all
    agents, itself included, so the 1 and the self-collision cancel):

    ``r_i = -min_l |p_i - p_l| - #{j != i: |p_i - p_j| < 0.3}``

    computed from the positions after the step (the state the next observation shows). The world,
    its dynamics, the observations and the wrappers are mpe2's (its scenario and raw env subclassed,
    wrapped as ``simple_spread_v3.parallel_env`` is); only the reward differs. mpe2's own reward is
    never computed and the per-agent rewards are one vectorized pass per step: 1.24x (N = 3) and
    1.34x (N = 6) faster per environment step than recomputing LaRe's reward in a wrapper on top of
    mpe2's env, observations and rewards identical (``benchmarks/bench_multiagent_env.py``).

    ``time_feature=True`` appends the elapsed fraction of the episode, ``steps / max_cycles`` (0 after
    a reset, 1 at the time limit), to every agent's observation: mpe2's observations carry no clock,
    so without it a value function cannot tell how many of the 25 steps are left (the diagnosis of
    team-uniform credit in docs/credit.md). Off in the suite's tasks.

    Example:
        >>> env = spread_individual(N=2, max_cycles=3)
        >>> _ = env.reset(seed=0)
        >>> _, rewards, *_ = env.step({a: 0 for a in env.agents})
        >>> sorted(rewards), all(r <= 0 for r in rewards.values())
        (['agent_0', 'agent_1'], True)
    """
    from mpe2._mpe_utils.simple_env import make_env
    from pettingzoo.utils.conversions import parallel_wrapper_fn

    return parallel_wrapper_fn(make_env(_individual_spread_classes()[1]))(
        N=N, max_cycles=max_cycles, time_feature=time_feature, **kwargs
    )


def make_parallel_env(task: TaskSpec) -> Any:
    """The task's PettingZoo parallel environment (``task.env_id`` called with ``task.env_kwargs``)."""
    from ..integrations.sb3.envs import env_factory

    if ":" not in task.env_id:
        raise RangeError(
            f"pettingzoo task {task.name!r}: env must be 'module:parallel_env_factory'; got {task.env_id!r}"
        )
    env = env_factory(task.env_id, task.env_kwargs)()
    if not hasattr(env, "possible_agents"):
        raise RangeError(
            f"pettingzoo task {task.name!r}: {task.env_id!r} did not return a PettingZoo ParallelEnv "
            f"(got {type(env).__name__}); use the module's parallel_env factory"
        )
    return env


def team_envs(task: TaskSpec) -> Any:
    """The runner's environment builder for the task (team copies through SuperSuit, team evaluation)."""
    from ..integrations.pettingzoo import PettingZooEnvs

    return PettingZooEnvs()
