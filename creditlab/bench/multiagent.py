"""Benchmark tasks of family ``pettingzoo``: cooperative teams under a team episodic reward.

A ``pettingzoo`` task names a PettingZoo *parallel* environment factory (``env:
"mpe2.simple_spread_v3:parallel_env"``, called with ``env_kwargs``) whose agents share one
observation and one action space. Its runs go through the same SB3 runner as every other task,
with the environments of :class:`creditlab.integrations.pettingzoo.PettingZooEnvs`:

* ``n_envs`` of the task's agent is the number of **team copies**; SuperSuit gives each agent a
  vector slot, and one SB3 PPO policy over all slots is parameter sharing;
* budgets (``steps``, ``eval_every``, ``n_steps``, ``batch_size``) count **agent-steps**, as SB3
  does (N per environment step);
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
from pettingzoo.utils.wrappers import BaseParallelWrapper

from ..errors import RangeError
from .suites import TaskSpec

__all__ = ["X_NAME", "make_parallel_env", "team_envs", "IndividualSpreadReward", "spread_individual"]

X_NAME = "agent-steps (N per environment step)"
"""The x axis of a ``pettingzoo`` task's learning curve."""


class IndividualSpreadReward(BaseParallelWrapper):
    """Cooperative navigation with LaRe's per-agent ("noshare") reward instead of mpe2's mixed one.

    mpe2's ``simple_spread_v3`` pays agent i ``local_ratio * (-collisions_i) + (1 - local_ratio) *
    (-coverage)``: with the default ``local_ratio = 0.5`` half of every agent's reward is the team's
    coverage term, identical for all agents, so its per-agent reward carries little per-agent
    credit. LaRe's MPE scenarios (thu-rllab/LaRe ``simple_spread_n6_noshare.py``, ``reward``) pay
    each agent its own ``1 - min_l |p_i - p_l| - #{j: |p_i - p_j| < 2 size}`` (j ranges over all
    agents, itself included, so the 1 and the self-collision cancel):

    ``r_i = -min_l |p_i - p_l| - #{j != i: |p_i - p_j| < 0.3}``

    computed here from the positions after the step (the state the next observation shows). The
    world, its dynamics and the observations are mpe2's; only the reward differs.
    """

    def step(self, actions):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        world = self.env.unwrapped.world
        pos = np.array([a.state.p_pos for a in world.agents])  # [N, 2]
        marks = np.array([m.state.p_pos for m in world.landmarks])  # [N, 2]
        nearest = np.linalg.norm(pos[:, None] - marks[None], axis=2).min(axis=1)
        apart = np.linalg.norm(pos[:, None] - pos[None], axis=2)
        size = np.array([a.size for a in world.agents])
        collisions = (apart < size[:, None] + size[None, :]).sum(axis=1) - 1  # minus itself
        own = {a.name: float(-nearest[i] - collisions[i]) for i, a in enumerate(world.agents)}
        return obs, {a: own[a] for a in rewards}, terms, truncs, infos


def spread_individual(N: int = 3, max_cycles: int = 25, **kwargs: Any) -> Any:
    """``mpe2.simple_spread_v3.parallel_env(N, max_cycles, **kwargs)`` paying LaRe's per-agent reward
    (:class:`IndividualSpreadReward`); the factory of the multiagent suite's tasks.

    Example:
        >>> env = spread_individual(N=2, max_cycles=3)
        >>> _ = env.reset(seed=0)
        >>> _, rewards, *_ = env.step({a: 0 for a in env.agents})
        >>> sorted(rewards), all(r <= 0 for r in rewards.values())
        (['agent_0', 'agent_1'], True)
    """
    from mpe2 import simple_spread_v3

    return IndividualSpreadReward(simple_spread_v3.parallel_env(N=N, max_cycles=max_cycles, **kwargs))


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
