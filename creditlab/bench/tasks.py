"""Environment construction for benchmark tasks: the original (dense) environment, flat observations.

The delayed version of a task is this environment wrapped by the reward-delay wrappers of
:mod:`creditlab.integrations.gymnasium` (done by the trainer, not here): the hidden per-step
reward stays available for evaluation and credit quality.

Example:
    >>> from creditlab.bench.config import get_suite
    >>> task = get_suite("smoke").tasks[0]
    >>> env = make_env(task, seed=0)
    >>> env.observation_space.shape
    (4,)
"""

from __future__ import annotations

import gymnasium as gym

from ..errors import RangeError
from .suites import TaskSpec

__all__ = ["make_env", "task_settings", "import_modules", "run_envs"]


def task_settings(task: TaskSpec) -> tuple[str | None, ...]:
    """The settings a run trains on one after another: bsuite ids, or ``(None,)`` for one environment."""
    return task.bsuite_settings if task.family == "bsuite" else (None,)


def run_envs(task: TaskSpec):
    """The SB3 runner's environment builder (``train(..., envs=)``) for tasks that are not single
    Gymnasium envs: PettingZoo teams (:mod:`creditlab.bench.multiagent`); None otherwise."""
    if task.family == "pettingzoo":
        from .multiagent import team_envs

        return team_envs(task)
    return None


def make_env(task: TaskSpec, seed: int | None = None, setting: str | None = None) -> gym.Env:
    """The task's original environment with flat ``Box`` observations.

    Args:
        task: the task.
        seed: seed for environments whose randomness is fixed at construction (bsuite); Gymnasium
            environments are seeded through ``reset(seed=...)`` by the vector env as usual.
        setting: for bsuite tasks, which bsuite id (one of ``task.bsuite_settings``).
    """
    import_modules(task)
    if task.family == "bsuite":
        if setting not in task.bsuite_settings:
            raise RangeError(f"task {task.name!r}: setting must be one of {task.bsuite_settings}; got {setting!r}")
        from .bsuite_tasks import make_bsuite_env

        env = make_bsuite_env(setting, seed=seed)
        if task.state_key is not None:
            from ..exploration.wrappers import StateKeyWrapper

            env = StateKeyWrapper(env, task.state_key)
        return env
    if task.family == "minigrid" and (task.contexts is not None or task.state_key is not None):
        from .exploration_tasks import make_minigrid_env

        return make_minigrid_env(
            task.env_id,
            num_contexts=task.contexts,
            context_seed=seed or 0,
            key=task.state_key or "pos",
            env_kwargs=task.env_kwargs,
        )
    if task.family == "pettingzoo":  # a PettingZoo parallel env (a team), not a gym.Env
        from .multiagent import make_parallel_env

        return make_parallel_env(task)
    if task.family == "minigrid":
        import minigrid  # noqa: F401  (registers the MiniGrid ids)
        from minigrid.wrappers import ImgObsWrapper

        env = ImgObsWrapper(gym.make(task.env_id, **task.env_kwargs))
        return gym.wrappers.FlattenObservation(
            gym.wrappers.TransformObservation(env, lambda o: o.astype("float32"), _float_box(env.observation_space))
        )
    from ..integrations.sb3.envs import env_factory

    env = env_factory(task.env_id, task.env_kwargs)()
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env = gym.wrappers.FlattenObservation(env)
    return env


def import_modules(task: TaskSpec) -> None:
    """Import the task's ``imports`` (modules that register custom environment ids) in this process.

    Runs in every worker before the environment is made, so an id registered by a user's module
    works on Ray workers too, not only in the driver.
    """
    import importlib

    for name in task.imports:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise RangeError(f"task {task.name!r}: imports: module {name!r} cannot be imported ({exc})") from exc


def check_environment(task: TaskSpec) -> None:
    """Resolve the task's environment without building it, so a typo fails once, before any run.

    Imports the task's ``imports``; a ``"module:attr"`` must import and name a class or factory
    (:func:`~creditlab.integrations.sb3.envs.env_factory`), a plain id must be registered with
    Gymnasium (MiniGrid ids after ``import minigrid``); a PettingZoo env on a non-``pettingzoo``
    task is a ``RangeError`` pointing to ``family: pettingzoo``. bsuite ids are checked by the
    suite. Raises :class:`~creditlab.errors.RangeError` naming the task.
    """
    import importlib

    if task.family == "bsuite":
        return
    import_modules(task)
    env_id = task.env_id
    if ":" in env_id:
        from ..integrations.sb3.envs import env_factory

        try:
            env_factory(env_id, {})
        except RangeError as exc:
            raise RangeError(f"task {task.name!r}: {exc}") from exc
        module_name, _, attr = env_id.partition(":")
        target = getattr(importlib.import_module(module_name), attr, None)
        parallel = attr in ("parallel_env", "env", "raw_env") and module_name.startswith(("pettingzoo", "mpe2"))
        if task.family != "pettingzoo" and (hasattr(target, "possible_agents") or parallel):
            raise RangeError(
                f"task {task.name!r}: {env_id!r} is a PettingZoo (multi-agent) env; a team needs a suite file "
                "task with family: pettingzoo and the module's parallel_env factory (creditlab bench --config FILE; "
                "docs/bench.md, 'PettingZoo teams'), not --env-id"
            )
        return
    if task.family == "pettingzoo":
        raise RangeError(f"task {task.name!r}: env must be 'module:parallel_env_factory'; got {env_id!r}")
    if task.family == "minigrid":
        import minigrid  # noqa: F401  (registers the MiniGrid ids)
    if env_id not in gym.registry:
        import difflib

        near = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        raise RangeError(
            f"task {task.name!r}: environment {env_id!r} is not a registered Gymnasium id"
            + (f" (did you mean {', '.join(map(repr, near))}?)" if near else "")
            + "; for your own env use 'module:Class' or list the module that registers it under imports"
        )


def _float_box(space: gym.spaces.Box) -> gym.spaces.Box:
    import numpy as np

    return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
