"""Exploration tasks: procedurally generated MiniGrid with a set number of contexts, and bsuite deep_sea.

* :func:`make_minigrid_env` -- a MiniGrid env whose levels come from ``num_contexts`` level seeds
  (1, a few, or None = unlimited; :class:`~creditlab.exploration.wrappers.ContextSetWrapper`),
  with the state key in ``info`` (:class:`~creditlab.exploration.wrappers.StateKeyWrapper`) and
  the egocentric image flattened to float32 (the policy's input).
* :func:`make_exploration_env` -- the same for any task id, including bsuite ``deep_sea/K``
  through :mod:`creditlab.bench.bsuite_tasks` (one-hot N x N observation; N = 10 + 2K in bsuite's
  sweep, action mapping seed 42).
* :func:`deep_sea_score` -- bsuite's deep_sea score (``bsuite.experiments.deep_sea.analysis.score``),
  re-implemented because bsuite 0.3.6's ``find_solution`` calls ``pandas.Series.append``, which
  pandas 2 removed. A size counts as solved at the first episode (within bsuite's 10,000) where the
  running fraction of "bad" episodes (the agent left the optimal path) drops below 0.9; the score
  is the fraction of sizes solved in fewer than ``2^N + 100`` episodes, the episodes dithering
  needs (``tests/bench/test_exploration_tasks.py`` checks it against bsuite's own function).
* :func:`steps_to_success` -- the steps until half of the recent training episodes succeed.

Runs go through the benchmark (``creditlab bench``, suite ``exploration``): a task's ``contexts``
and ``state_key`` build the environment here, an exploration method attaches
:class:`~creditlab.integrations.sb3.ExplorationBonusCallback` to the one SB3 runner.

Example:
    >>> env = make_minigrid_env("MiniGrid-MultiRoom-N2-S4-v0", num_contexts=2, context_seed=0, key="pos")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype, info["creditlab/context"] in context_seeds(2, 0)
    ((147,), dtype('float32'), True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..errors import RangeError
from ..exploration.wrappers import ContextSetWrapper, StateKeyWrapper, context_seeds

__all__ = [
    "make_minigrid_env",
    "make_exploration_env",
    "deep_sea_size",
    "deep_sea_score",
    "deep_sea_solved_episode",
    "steps_to_success",
    "context_seeds",
]

DEEP_SEA_EPISODES = 10_000  # bsuite's NUM_EPISODES for deep_sea


def _float_box(space: gym.spaces.Box) -> gym.spaces.Box:
    return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)


def make_minigrid_env(
    env_id: str,
    *,
    num_contexts: int | None = None,
    context_seed: int = 0,
    key: str | Callable[[Any], Any] = "pos",
    mode: str = "uniform",
    env_kwargs: Mapping[str, Any] | None = None,
) -> gym.Env:
    """A MiniGrid env drawing its levels from ``num_contexts`` level seeds (None: unlimited).

    Args:
        env_id: a MiniGrid id (``MiniGrid-MultiRoom-N4-S5-v1``, ``MiniGrid-KeyCorridorS3R2-v0``...).
        num_contexts: number of distinct levels, drawn by ``context_seed`` from ``range(100000)``;
            None for a fresh level every episode.
        context_seed: seed of the level set (use the run seed: each run trains on its own set).
        key: the state key put into ``info`` (``"pos"``, ``"pos_dir"``, ``"full"``, ``"obs"``, or a
            function of the env).
        mode: how levels are drawn from the set: ``"uniform"`` or ``"cycle"``.
        env_kwargs: extra keyword arguments of ``gym.make``.

    The observation is the 7x7x3 egocentric image flattened to float32[147]; the key is computed
    from the MiniGrid state before the image wrapper (``key="obs"`` hashes the raw image).
    """
    import minigrid  # noqa: F401  (registers the MiniGrid ids)
    from minigrid.wrappers import ImgObsWrapper

    env = gym.make(env_id, **dict(env_kwargs or {}))
    env = ContextSetWrapper(env, context_seeds(num_contexts, context_seed), mode=mode, rng_seed=context_seed)
    env = StateKeyWrapper(ImgObsWrapper(env), key)
    image_space = env.observation_space
    assert isinstance(image_space, gym.spaces.Box), f"ImgObsWrapper observes a Box image; got {image_space}"
    env = gym.wrappers.TransformObservation(env, lambda o: o.astype(np.float32), _float_box(image_space))
    return gym.wrappers.FlattenObservation(env)


def deep_sea_size(bsuite_id: str) -> int:
    """N of a bsuite ``deep_sea/K`` setting (``size`` in bsuite's sweep)."""
    from .bsuite_tasks import bsuite_setting

    name, kwargs = bsuite_setting(bsuite_id)
    if name != "deep_sea":
        raise RangeError(f"{bsuite_id!r} is not a deep_sea setting")
    return int(kwargs["size"])


def make_exploration_env(
    task_id: str,
    *,
    num_contexts: int | None = None,
    context_seed: int = 0,
    key: str | Callable[[Any], Any] | None = None,
    seed: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> gym.Env:
    """An exploration task by id: a MiniGrid id, or a bsuite ``deep_sea/K`` id.

    ``key`` defaults to ``"pos"`` for MiniGrid and ``"obs"`` (the one-hot cell) for deep_sea;
    ``num_contexts`` and ``env_kwargs`` apply to MiniGrid only (deep_sea has one fixed action
    mapping per size).
    """
    if task_id.startswith("deep_sea/"):
        if num_contexts is not None:
            raise RangeError(
                "deep_sea has a single context (its action mapping is fixed by bsuite's sweep); leave num_contexts=None"
            )
        from .bsuite_tasks import make_bsuite_env

        if env_kwargs:
            raise RangeError("deep_sea takes no env_kwargs (its settings come from bsuite's sweep)")
        return StateKeyWrapper(make_bsuite_env(task_id, seed=seed), key or "obs")
    if task_id.startswith("MiniGrid-"):
        return make_minigrid_env(
            task_id, num_contexts=num_contexts, context_seed=context_seed, key=key or "pos", env_kwargs=env_kwargs
        )
    raise RangeError(f"exploration task ids are MiniGrid ids or 'deep_sea/K'; got {task_id!r}")


# ------------------------------------------------------------------------------ deep_sea scoring


def deep_sea_solved_episode(
    bad: Sequence[bool], *, threshold: float = 0.9, num_episodes: int = DEEP_SEA_EPISODES
) -> int | None:
    """First episode (1-based, within ``num_episodes``) whose running fraction of bad episodes is < threshold.

    Args:
        bad: bool[M] -- per finished episode (completion order), whether it was "bad" (left the
            optimal path; bsuite's ``total_bad_episodes`` increments).

    Example (bad, bad, good, good: running fractions 1, 1, 2/3, 1/2 -> episode 3 is below 0.9):
        >>> deep_sea_solved_episode([True, True, False, False])
        3
    """
    b = np.asarray(bad, dtype=np.float64)[:num_episodes]
    if b.size == 0:
        return None
    frac = np.cumsum(b) / np.arange(1, b.size + 1)
    hit = np.nonzero(frac < threshold)[0]
    return int(hit[0]) + 1 if hit.size else None


def deep_sea_score(bad_by_size: Mapping[int, Sequence[bool]], *, forgiveness: float = 100.0) -> float:
    """bsuite's deep_sea score: the fraction of sizes N solved within ``2^N + forgiveness`` episodes.

    Args:
        bad_by_size: N -> per-episode "bad" flags of one agent trained on size N.

    Example (size 10 solved at episode 3; size 12 never below 0.9):
        >>> deep_sea_score({10: [True, True, False, False], 12: [True] * 5})
        0.5
    """
    if not bad_by_size:
        raise RangeError("deep_sea_score needs at least one size")
    beat = []
    for size, bad in bad_by_size.items():
        ep = deep_sea_solved_episode(bad)
        beat.append(ep is not None and ep < 2 ** int(size) + forgiveness)
    return float(np.mean(beat))


# ------------------------------------------------------------------------------ training-episode metrics


def steps_to_success(
    timesteps: Sequence[float], returns: Sequence[float], *, rate: float = 0.5, window: int = 100
) -> float:
    """Environment steps at which the success rate over the last ``window`` training episodes first
    reaches ``rate`` (NaN if never). Success is a positive return (MiniGrid pays ``1 - 0.9 t/T``
    on reaching the goal, 0 otherwise; deep_sea pays > 0 only for the treasure).

    Example (episodes ending at steps 10..60, successes from the 4th on, window 2):
        >>> steps_to_success([10, 20, 30, 40, 50, 60], [0, 0, 0, 0.5, 0.7, 0.9], rate=1.0, window=2)
        50.0
    """
    t = np.asarray(timesteps, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if t.shape != r.shape:
        raise RangeError(f"timesteps and returns must have the same length; got {t.size} and {r.size}")
    if r.size < window:
        return float("nan")
    rolling = np.convolve(r > 0, np.ones(window) / window, mode="valid")
    hit = np.nonzero(rolling >= rate - 1e-12)[0]
    return float(t[hit[0] + window - 1]) if hit.size else float("nan")
