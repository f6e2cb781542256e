"""bsuite through Gymnasium: a dm_env -> Gymnasium adapter and bsuite's own scoring.

bsuite (deepmind/bsuite) ships its environments with the dm_env API and its legacy gym wrapper
imports the old ``gym`` package, so :class:`DmEnvToGymnasium` adapts a dm_env environment to
``gymnasium.Env`` (flat float32 observations, ``Discrete`` actions, ``terminated`` when the
last time step has discount 0, ``truncated`` when it has discount > 0). bsuite's metadata
(``bsuite_info()``, e.g. umbrella's ``total_regret``) is put into ``info`` on every step.

Scores come from bsuite's own analysis functions (``bsuite.experiments.<name>.analysis.score``)
applied to a per-episode log in bsuite's format (episode, total_return, total_regret and the
setting's parameters), exactly as bsuite scores a partially finished run.

Example:
    >>> env = make_bsuite_env("umbrella_length/0", seed=0)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, int(env.action_space.n)
    ((23,), 2)
    >>> obs, reward, terminated, truncated, info = env.step(1)
    >>> terminated, reward in (-1.0, 1.0), "total_regret" in info
    (True, True, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ..errors import RangeError

__all__ = ["DmEnvToGymnasium", "make_bsuite_env", "bsuite_setting", "bsuite_score", "episode_log"]


def _require_bsuite():
    try:
        import bsuite  # noqa: F401
        from bsuite import bsuite as _bs
        from bsuite import sweep
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise ModuleNotFoundError(
            "bsuite tasks need the bsuite package: pip install 'creditlab[bench]'", name=exc.name
        ) from exc
    return _bs, sweep


def bsuite_setting(bsuite_id: str) -> tuple[str, dict[str, Any]]:
    """``"umbrella_length/3"`` -> ("umbrella_length", its keyword arguments from bsuite's sweep)."""
    _, sweep = _require_bsuite()
    if bsuite_id not in sweep.SETTINGS:
        raise RangeError(f"unknown bsuite id {bsuite_id!r}; ids look like 'umbrella_length/0' (see bsuite.sweep)")
    name = bsuite_id.split("/")[0]
    return name, dict(sweep.SETTINGS[bsuite_id])


class DmEnvToGymnasium(gym.Env):
    """A Gymnasium view of a dm_env environment with a discrete action spec.

    Args:
        factory: ``factory(seed) -> dm_env.Environment``; called again by ``reset(seed=...)`` so
            Gymnasium seeding re-seeds environments whose randomness is fixed at construction.
        seed: seed of the first environment.
    """

    metadata = {"render_modes": []}

    def __init__(self, factory, seed: int | None = None):
        super().__init__()
        self._factory = factory
        self._env = factory(seed)
        spec = self._env.observation_spec()
        action_spec = self._env.action_spec()
        if not hasattr(action_spec, "num_values"):
            raise RangeError(f"DmEnvToGymnasium needs a DiscreteArray action spec; got {action_spec!r}")
        size = int(np.prod(spec.shape))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(int(action_spec.num_values))

    def _info(self) -> dict[str, Any]:
        fn = getattr(self._env, "bsuite_info", None)
        return dict(fn()) if fn is not None else {}

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env = self._factory(seed)
        ts = self._env.reset()
        return np.asarray(ts.observation, dtype=np.float32).reshape(-1), self._info()

    def step(self, action):
        ts = self._env.step(int(action))
        reward = 0.0 if ts.reward is None else float(ts.reward)
        last = bool(ts.last())
        discount = 1.0 if ts.discount is None else float(ts.discount)
        terminated = last and discount == 0.0
        truncated = last and not terminated
        return np.asarray(ts.observation, dtype=np.float32).reshape(-1), reward, terminated, truncated, self._info()


def make_bsuite_env(bsuite_id: str, seed: int | None = None) -> DmEnvToGymnasium:
    """A bsuite environment (from bsuite's own sweep settings) as a Gymnasium env.

    Loads with ``bsuite.bsuite.load(name, kwargs)`` (``load_from_id`` does the same but prints);
    experiments whose constructor takes a ``seed`` get the Gymnasium seed.
    """
    _bs, _ = _require_bsuite()
    name, kwargs = bsuite_setting(bsuite_id)
    ctor = _bs.EXPERIMENT_NAME_TO_ENVIRONMENT[name]
    takes_seed = "seed" in inspect.signature(ctor).parameters

    def factory(s):
        extra = {"seed": s} if takes_seed and s is not None else {}
        return _bs.load(name, {**kwargs, **extra})

    return DmEnvToGymnasium(factory, seed)


def episode_log(returns: Sequence[float], regrets: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """bsuite's per-episode log from per-episode returns (and regrets), in completion order.

    Returns columns ``episode`` (1-based), ``total_return`` and ``total_regret`` (cumulative sums),
    the format bsuite's loggers write and its analysis reads.
    """
    r = np.asarray(returns, dtype=np.float64)
    out = {"episode": np.arange(1, r.size + 1), "total_return": np.cumsum(r)}
    if regrets is not None:
        g = np.asarray(regrets, dtype=np.float64)
        if g.shape != r.shape:
            raise RangeError(f"regrets has {g.size} episodes but returns has {r.size}")
        out["total_regret"] = np.cumsum(g)
    return out


def bsuite_score(experiment: str, logs: Mapping[str, Mapping[str, Sequence[float]]]) -> float:
    """Score one experiment with bsuite's own ``analysis.score``.

    Args:
        experiment: "umbrella_length", "discounting_chain", ...
        logs: bsuite id -> per-episode log (see :func:`episode_log`) of one agent on that setting.

    Returns:
        bsuite's score in [0, 1].
    """
    import importlib

    import pandas as pd

    _require_bsuite()
    analysis = importlib.import_module(f"bsuite.experiments.{experiment}.analysis")
    frames = []
    for bsuite_id, log in logs.items():
        name, kwargs = bsuite_setting(bsuite_id)
        if name != experiment:
            raise RangeError(f"log {bsuite_id!r} does not belong to experiment {experiment!r}")
        df = pd.DataFrame({k: np.asarray(v) for k, v in log.items()})
        for key, value in kwargs.items():
            df[key] = value
        df["bsuite_id"] = bsuite_id
        frames.append(df)
    if not frames:
        raise RangeError(f"no logs to score for {experiment!r}")
    return float(analysis.score(pd.concat(frames, ignore_index=True)))
