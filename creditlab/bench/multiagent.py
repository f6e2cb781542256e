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

from ..errors import RangeError
from .suites import TaskSpec

__all__ = ["X_NAME", "make_parallel_env", "team_envs"]

X_NAME = "agent-steps (N per environment step)"
"""The x axis of a ``pettingzoo`` task's learning curve."""


def make_parallel_env(task: TaskSpec) -> Any:
    """The task's PettingZoo parallel environment (``task.env_id`` called with ``task.env_kwargs``)."""
    from ..integrations.sb3.envs import env_factory

    if ":" not in task.env_id:
        raise RangeError(f"pettingzoo task {task.name!r}: env must be 'module:parallel_env_factory'; got {task.env_id!r}")
    env = env_factory(task.env_id, task.env_kwargs)()
    if not hasattr(env, "possible_agents"):
        raise RangeError(f"pettingzoo task {task.name!r}: {task.env_id!r} did not return a PettingZoo ParallelEnv "
                         f"(got {type(env).__name__}); use the module's parallel_env factory")
    return env


def team_envs(task: TaskSpec) -> Any:
    """The runner's environment builder for the task (team copies through SuperSuit, team evaluation)."""
    from ..integrations.pettingzoo import PettingZooEnvs

    return PettingZooEnvs()
