"""Gymnasium wrappers for exploration experiments: state keys in ``info`` and a fixed set of contexts.

* :class:`StateKeyWrapper` puts the key of the current state (:mod:`creditlab.exploration.keys`)
  into ``info["creditlab/state_key"]`` after every ``reset`` and ``step`` -- computed before a
  vector env auto-resets, so the key of a terminal state is the terminal state's. The SB3
  exploration callback reads it (from step infos and the vector env's ``reset_infos``).
* :class:`ContextSetWrapper` fixes which procedurally generated levels ("contexts") an env draws
  from: with ``seeds`` every reset calls ``env.reset(seed=s)`` with ``s`` drawn from the list
  (uniformly with replacement, or cycling), so in gymnasium 1.x each seed is one level; with
  ``seeds=None`` every reset is a fresh level (unlimited contexts). This is the ``num_contexts``
  knob of Henaff, Jiang & Raileanu (ICML 2023; e3b ``minihack/src/env_utils.py``), except that the
  draws come from a dedicated RNG, so a run is reproducible (e3b draws from an unseeded RNG).
  :func:`context_seeds` draws the list of level seeds itself from a pool seed.

Example (three MultiRoom layouts; the first reset draws one of them, and the same draw gives the
same layout and the same position key):
    >>> import minigrid  # noqa: F401  (registers the MiniGrid ids)
    >>> def make():
    ...     return StateKeyWrapper(ContextSetWrapper(gym.make("MiniGrid-MultiRoom-N4-S5-v1"), context_seeds(3, 0)), "pos")
    >>> (_, a), (_, b) = make().reset(seed=1), make().reset(seed=1)
    >>> a["creditlab/context"] in context_seeds(3, 0), a["creditlab/state_key"] == b["creditlab/state_key"]
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..errors import DtypeError, RangeError
from .keys import KEY_KINDS, state_key_function

__all__ = ["StateKeyWrapper", "ContextSetWrapper", "context_seeds", "STATE_KEY_INFO", "CONTEXT_INFO", "CONTEXT_MODES"]

STATE_KEY_INFO = "creditlab/state_key"
CONTEXT_INFO = "creditlab/context"
CONTEXT_MODES = ("uniform", "cycle")
_SEED_POOL = 100_000  # e3b draws its level seeds from range(100000)


def context_seeds(num_contexts: int | None, seed: int) -> list[int] | None:
    """``num_contexts`` distinct level seeds drawn from ``range(100000)`` by ``seed`` (None: unlimited).

    Example:
        >>> context_seeds(3, 0) == context_seeds(3, 0), len(set(context_seeds(5, 1))), context_seeds(None, 0)
        (True, 5, None)
    """
    if num_contexts is None:
        return None
    if (
        isinstance(num_contexts, bool)
        or not isinstance(num_contexts, (int, np.integer))
        or not 1 <= num_contexts <= _SEED_POOL
    ):
        raise RangeError(f"num_contexts must be an int in [1, {_SEED_POOL}] or None (unlimited); got {num_contexts!r}")
    rng = np.random.default_rng(int(seed))
    return [int(s) for s in rng.choice(_SEED_POOL, size=int(num_contexts), replace=False)]


class StateKeyWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Put the int64 key of the current state into ``info["creditlab/state_key"]``.

    Args:
        env: the environment (MiniGrid for ``pos``/``pos_dir``/``full``).
        key: ``"pos"``, ``"pos_dir"``, ``"full"``, ``"obs"`` or a function ``env -> key``
            (see :mod:`creditlab.exploration.keys`).
    """

    def __init__(self, env: gym.Env, key: str | Callable[[Any], Any] = "pos"):
        if not (callable(key) or key in KEY_KINDS):
            raise RangeError(f"key must be one of {KEY_KINDS} or a function env -> key; got {key!r}")
        gym.utils.RecordConstructorArgs.__init__(self, key=key)
        gym.Wrapper.__init__(self, env)
        self._key = state_key_function(key)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, STATE_KEY_INFO: self._key(self.env, obs)}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, STATE_KEY_INFO: self._key(self.env, obs)}


class ContextSetWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Draw every episode's level from a fixed set of seeds (or fresh levels with ``seeds=None``).

    Args:
        env: a procedurally generated environment whose level is fixed by ``reset(seed=...)``.
        seeds: the level seeds (contexts); None for unlimited contexts.
        mode: ``"uniform"`` (draw with replacement, as e3b) or ``"cycle"`` (in order, as
            MiniGrid's ``ReseedWrapper``).
        rng_seed: seed of the draws. A ``seed`` passed to :meth:`reset` re-seeds the draws (so a
            vector env's per-copy seeds give each copy its own sequence of contexts over the same
            set); with ``seeds=None``, ``rng_seed`` (or the first ``reset`` seed) seeds the env's
            level generator once and later resets continue it.

    ``info["creditlab/context"]`` holds the level seed of the episode (-1 with unlimited
    contexts), after ``reset`` and every ``step``.
    """

    def __init__(self, env: gym.Env, seeds: Sequence[int] | None, mode: str = "uniform", rng_seed: int | None = None):
        if mode not in CONTEXT_MODES:
            raise RangeError(f"mode must be one of {CONTEXT_MODES}; got {mode!r}")
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if not seeds:
                raise RangeError("seeds must hold at least one level seed (or be None for unlimited contexts)")
            if any(s < 0 for s in seeds):
                raise RangeError(f"level seeds must be >= 0; got {min(seeds)}")
        gym.utils.RecordConstructorArgs.__init__(self, seeds=seeds, mode=mode, rng_seed=rng_seed)
        gym.Wrapper.__init__(self, env)
        self.seeds = seeds
        self.mode = mode
        self._rng = np.random.default_rng(rng_seed)
        self._rng_seed = rng_seed
        self._next = 0
        self._started = False
        self._level = -1

    @property
    def num_contexts(self) -> int | None:
        """Number of distinct contexts (None: unlimited)."""
        return None if self.seeds is None else len(self.seeds)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise DtypeError(f"seed must be an int or None; got {type(seed).__name__}")
        if self.seeds is None:
            if seed is None and not self._started:
                seed = self._rng_seed  # seed the level generator once; later resets continue it
            self._started = True
            obs, info = self.env.reset(seed=seed, options=options)
            self._level = -1
            return obs, {**info, CONTEXT_INFO: -1}
        if seed is not None:
            self._rng = np.random.default_rng(int(seed))
            self._next = 0
        if self.mode == "uniform":
            level = self.seeds[int(self._rng.integers(len(self.seeds)))]
        else:
            level = self.seeds[self._next % len(self.seeds)]
            self._next += 1
        obs, info = self.env.reset(seed=level, options=options)
        self._level = level
        return obs, {**info, CONTEXT_INFO: level}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, CONTEXT_INFO: self._level}
