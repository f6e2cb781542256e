"""What every exploration bonus shares: the transition layout it reads and the two ways to call it.

**The layout.** A bonus reads a time-major stream of transitions from E envs, :class:`Transitions`
(``[T, E]``). Step t of env e is the transition ``s_t -> a_t -> s_{t+1}``; ``starts[t, e]`` says
``s_t`` is the first state of an episode (the env was reset after the previous step, whether that
step *terminated* or was *truncated*). The bonus of step t rewards the state reached,
``s_{t+1}`` (``next_observations``, the terminal observation at an episode's last step):

* episodic memories (episodic counts, NovelD's gate, E3B's ``C^{-1}``) are reset where
  ``starts`` is set and then hold ``s_t``; the bonus of ``s_{t+1}`` is measured against the states
  of the episode so far, then ``s_{t+1}`` is added;
* global memories (counts) never reset; learned models (RND, E3B's encoder) change only in
  :meth:`~ExplorationBonus.fit`.

Indexing differs from the e3b code in one place: e3b's actor pays the elliptical bonus of the
state it *acts from* (``phi(s_t)``, 0 on an episode's first step), while its count bonuses pay for
the state reached. Here every bonus pays for the state reached, so creditlab's E3B bonus of step t
equals e3b's bonus of step t+1 (the same number, one step earlier), and the last state of an
episode is paid for too.

**Two ways to call a bonus.**

* Streaming (the SB3 callback): ``compute(transitions)`` continues each env's episodic memory from
  the previous call (episodes span rollouts) and advances the visit counts; ``fit(transitions)``
  trains what is learned.
* On an :class:`~creditlab.episodes.Episodes` batch (the registry, ``creditlab methods``): each row
  is one episode from its first step. ``assign(episodes)`` returns the per-step bonus as a
  :class:`~creditlab.outputs.RewardOutput` (``[B, T]``; the rows are visited as B parallel envs, in
  time order), with fresh episodic memories; ``fit(episodes)`` trains. This is the credit-assigner
  protocol (:class:`creditlab.credit.CreditAssigner`), so the registry runs a bonus as "fit on the
  batch, then assign".

Keys: count bonuses read ``keys``/``next_keys`` (int64 ids, :mod:`creditlab.exploration.keys`). An
Episodes batch can carry them as ``extras["state_keys"]`` / ``extras["next_state_keys"]``
(``int64[B, T]``); without them, and in a :class:`Transitions` whose keys are None, states are
keyed by a hash of their observation.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from .._arrays import Backend
from ..episodes import Episodes
from ..errors import DtypeError, RangeError, ShapeError
from ..outputs import RewardOutput
from .keys import observation_keys

__all__ = [
    "Transitions",
    "BonusOutput",
    "ExplorationBonus",
    "make_transitions",
    "transitions_from_episodes",
    "STATE_KEYS",
    "NEXT_STATE_KEYS",
]

STATE_KEYS = "state_keys"
NEXT_STATE_KEYS = "next_state_keys"


class Transitions(NamedTuple):
    """A time-major stream of T steps from E envs (build with :func:`make_transitions`).

    Attributes:
        next_observations: float32[T, E, D] or None -- ``s_{t+1}``, the state reached (the
            terminal observation at an episode's last step).
        observations: float32[T, E, D] or None -- ``s_t``, the state acted from.
        next_keys: int64[T, E] or None -- key of ``s_{t+1}`` (None: hash of the observation).
        keys: int64[T, E] or None -- key of ``s_t``.
        actions: int64[T, E] (discrete, integer input) or float32[T, E, A] (continuous, float
            input) or None -- the action ``a_t``.
        starts: bool[T, E] -- ``s_t`` is the first state of an episode (reset every episodic
            memory of that env before step t).
        mask: bool[T, E] or None -- valid steps (None: all); invalid steps get bonus 0 and
            change no memory.
    """

    next_observations: np.ndarray | None
    observations: np.ndarray | None
    next_keys: np.ndarray | None
    keys: np.ndarray | None
    actions: np.ndarray | None
    starts: np.ndarray
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(T, E)``."""
        return tuple(self.starts.shape)

    @property
    def states_reached(self) -> np.ndarray:
        """float32[T, E, D] -- ``next_observations``, which every bonus that reads observations has.

        :meth:`ExplorationBonus.compute` and :meth:`~ExplorationBonus.fit` check it (a named error)
        before the bonus's hooks run, so inside them it is never None.
        """
        assert self.next_observations is not None, (
            "Transitions.next_observations is None; a bonus with uses_observations checks it in _prepare"
        )
        return self.next_observations

    def valid(self) -> np.ndarray:
        """bool[T, E] -- the mask, or all True."""
        return np.ones(self.shape, dtype=bool) if self.mask is None else self.mask

    def with_keys(self) -> Transitions:
        """The same stream with ``keys``/``next_keys`` filled from observation hashes where None."""
        t, e = self.shape
        keys, next_keys = self.keys, self.next_keys
        if next_keys is None:
            if self.next_observations is None:
                raise ShapeError("a count bonus needs next_keys or next_observations (to hash) in the transitions")
            next_keys = observation_keys(self.next_observations.reshape(t * e, -1)).reshape(t, e)
        if keys is None:
            if self.observations is None:
                raise ShapeError(
                    "a count bonus needs keys or observations (to hash) for the first state of each episode"
                )
            keys = observation_keys(self.observations.reshape(t * e, -1)).reshape(t, e)
        return self._replace(keys=keys, next_keys=next_keys)


def _np(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _obs(x: Any, name: str, te: tuple[int, int]) -> np.ndarray | None:
    a = _np(x)
    if a is None:
        return None
    if a.dtype.kind not in "fiub":
        raise DtypeError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.shape[:2] != te:
        raise ShapeError(f"{name} must be [T, E, ...] = {te + ('...',)}; got shape {a.shape}")
    out = np.ascontiguousarray(a.reshape(te[0], te[1], -1), dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise RangeError(f"{name} holds NaN or inf")
    return out


def _ints(x: Any, name: str, te: tuple[int, int]) -> np.ndarray | None:
    a = _np(x)
    if a is None:
        return None
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.shape != te:
        raise ShapeError(f"{name} must be [T, E] = {te}; got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise DtypeError(f"{name} must hold integers; got fractional values")
    elif a.dtype.kind not in "iub":
        raise DtypeError(f"{name} must hold integers; got dtype {a.dtype}")
    return a.astype(np.int64)


def _actions(x: Any, te: tuple[int, int]) -> np.ndarray | None:
    """Discrete actions (integer dtype) as int64[T, E]; continuous ones (float) as float32[T, E, A]."""
    a = _np(x)
    if a is None:
        return None
    if a.dtype.kind in "iub":
        return _ints(a, "actions", te)
    if a.dtype.kind != "f":
        raise DtypeError(f"actions must be integers (discrete) or floats (continuous); got dtype {a.dtype}")
    if a.shape[:2] != te:
        raise ShapeError(f"actions must be [T, E] or [T, E, A] with (T, E) = {te}; got shape {a.shape}")
    out = np.ascontiguousarray(a.reshape(te[0], te[1], -1), dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise RangeError("actions hold NaN or inf")
    return out


def make_transitions(
    *,
    starts: Any,
    next_observations: Any = None,
    observations: Any = None,
    next_keys: Any = None,
    keys: Any = None,
    actions: Any = None,
    mask: Any = None,
) -> Transitions:
    """Validate and build a :class:`Transitions` (shapes ``[T, E]`` / ``[T, E, ...]``)."""
    s = _np(starts)
    if s is None or s.ndim != 2:
        raise ShapeError(f"starts must be bool[T, E]; got {None if s is None else s.shape}")
    if s.dtype != bool:
        if s.dtype.kind not in "iub" or not np.isin(s, (0, 1)).all():
            raise DtypeError("starts must be boolean (or 0/1)")
        s = s.astype(bool)
    te = (int(s.shape[0]), int(s.shape[1]))
    m = _np(mask)
    if m is not None:
        if m.shape != te:
            raise ShapeError(f"mask must be [T, E] = {te}; got shape {m.shape}")
        m = m.astype(bool)
    return Transitions(
        next_observations=_obs(next_observations, "next_observations", te),
        observations=_obs(observations, "observations", te),
        next_keys=_ints(next_keys, "next_keys", te),
        keys=_ints(keys, "keys", te),
        actions=_actions(actions, te),
        starts=s,
        mask=m,
    )


def transitions_from_episodes(episodes: Episodes) -> Transitions:
    """An Episodes batch ``[B, T]`` as a stream of B envs (``[T, B]``), each row starting an episode.

    ``next_observations`` default to the shifted observations; at an episode's last step (whose
    next state the batch does not hold) the last observation is repeated.
    """
    if not isinstance(episodes, Episodes):
        raise DtypeError(f"episodes must be a creditlab.Episodes; got {type(episodes).__name__}")
    ep = episodes.numpy() if episodes.is_torch else episodes
    mask = np.asarray(ep.mask, dtype=bool)
    b, t = mask.shape
    lengths = mask.sum(1)
    obs = _np(ep.observations)
    nxt = _np(ep.next_observations)
    if obs is not None:
        obs = obs.reshape(b, t, -1)
        if nxt is None:
            nxt = np.empty_like(obs)
            nxt[:, :-1] = obs[:, 1:]
            rows = np.arange(b)
            nxt[rows, lengths - 1] = obs[rows, lengths - 1]
    if nxt is not None:
        nxt = nxt.reshape(b, t, -1)

    def tm(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else np.swapaxes(np.asarray(x), 0, 1)

    extras = ep.extras or {}
    starts = np.zeros((t, b), dtype=bool)
    starts[0] = True
    acts = _np(ep.actions)
    return make_transitions(
        starts=starts,
        next_observations=tm(nxt),
        observations=tm(obs),
        next_keys=tm(_np(extras.get(NEXT_STATE_KEYS))),
        keys=tm(_np(extras.get(STATE_KEYS))),
        actions=tm(acts),
        mask=mask.T,
    )


class BonusOutput(NamedTuple):
    """Result of :meth:`ExplorationBonus.compute`.

    Attributes:
        bonus: float32[T, E] -- the intrinsic reward of each step (raw: before normalization and
            the coefficient beta); 0 on invalid steps.
        metrics: diagnostics under ``exploration/...`` keys.
    """

    bonus: np.ndarray
    metrics: dict[str, float]


class ExplorationBonus:
    """Base class: the streaming API, the Episodes API and checkpointing around three hooks.

    Subclasses define ``Config`` (a dataclass), ``name``, ``scope`` and

    * ``_new_memory(n_envs)`` -> the per-env episodic memory (None if the bonus has none);
    * ``_compute(transitions, memory) -> (bonus float32[T, E], metrics)``, which may advance
      ``memory`` and the bonus's global memory (counts) but learns nothing;
    * ``_fit(transitions, num_updates) -> metrics`` (learned bonuses; default: nothing to learn);
    * ``_state()`` / ``_load_state(state)`` for what they keep beyond the config.
    """

    name = "bonus"
    scope = "episode"
    Config: Any = None
    #: reads keys (counts, NovelD's gate) / observations (learned bonuses)
    uses_keys = False
    uses_observations = False

    def __init__(self, config: Any = None, /, **overrides: Any):
        base = config if config is not None else self.Config()
        if not isinstance(base, self.Config):
            raise DtypeError(f"{type(self).__name__} takes a {type(self).__name__}.Config; got {type(base).__name__}")
        try:
            self.config = dataclasses.replace(base, **overrides)
        except TypeError as exc:
            fields = sorted(f.name for f in dataclasses.fields(self.Config))
            raise RangeError(f"{type(self).__name__}: {exc}; its parameters are {fields}") from None
        self._memory: Any = None
        self._memory_envs = 0

    # ------------------------------------------------------------------ streaming

    def compute(self, transitions: Transitions) -> BonusOutput:
        """Bonus of every step of a stream, continuing each env's episode from the last call.

        The first call (or a call with a different number of envs) starts every env's episode at
        step 0, whatever ``starts[0]`` says.
        """
        tr = self._prepare(transitions)
        t, e = tr.shape
        if self._memory_envs != e:
            self._memory = self._new_memory(e)
            self._memory_envs = e
            starts = tr.starts.copy()
            starts[0] = True
            tr = tr._replace(starts=starts)
        bonus, metrics = self._compute(tr, self._memory)
        return BonusOutput(bonus, metrics)

    def reset_episodes(self) -> None:
        """Forget every env's running episode (the next :meth:`compute` starts fresh ones)."""
        self._memory = None
        self._memory_envs = 0

    def fit(self, data: Episodes | Transitions | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """Train what the bonus learns on a batch (an Episodes batch or a stream); returns metrics.

        A no-op (``{}``) for bonuses that learn nothing (counts advance in :meth:`compute` /
        :meth:`assign`, as visits happen).
        """
        if data is None:
            return {}
        tr = self._prepare(transitions_from_episodes(data) if isinstance(data, Episodes) else data)
        if num_updates is not None and (not isinstance(num_updates, (int, np.integer)) or num_updates < 0):
            raise RangeError(f"num_updates must be an int >= 0; got {num_updates!r}")
        return self._fit(tr, None if num_updates is None else int(num_updates))

    # ------------------------------------------------------------------ Episodes

    def assign(self, episodes: Episodes) -> RewardOutput:
        """Per-step bonus ``rewards[B, T]`` of an Episodes batch (each row one episode from its start).

        Episodic memories are fresh for the batch (the streaming memory is untouched); visit counts
        advance, learned models do not change.
        """
        tr = self._prepare(transitions_from_episodes(episodes))
        bonus, metrics = self._compute(tr, self._new_memory(tr.shape[1]))
        rewards = np.ascontiguousarray(bonus.T)
        be = Backend.of(episodes.rewards)
        return RewardOutput(be.out(torch.from_numpy(rewards)), metrics, None)

    # ------------------------------------------------------------------ checkpoint

    def state_dict(self) -> dict[str, Any]:
        """Config, episodic memory of the running episodes, and what subclasses keep."""
        return {
            "name": self.name,
            "config": self._config_dict(),
            "memory": copy.deepcopy(self._memory),
            "memory_envs": self._memory_envs,
            **self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the config must match the one the bonus was built with)."""
        if state.get("name") != self.name:
            raise RangeError(f"state is for bonus {state.get('name')!r}, not {self.name!r}")
        saved = dict(state["config"])
        mine = self._config_dict()
        if _plain(saved) != _plain(mine):
            diff = sorted(k for k in mine if _plain(saved.get(k)) != _plain(mine[k]))
            raise RangeError(f"{self.name}: the saved config differs in {diff}; build the bonus with the saved config")
        self._memory = copy.deepcopy(state["memory"])
        self._memory_envs = int(state["memory_envs"])
        self._load_state(state)

    # ------------------------------------------------------------------ hooks

    def _prepare(self, tr: Transitions) -> Transitions:
        if not isinstance(tr, Transitions):
            raise DtypeError(f"expected Transitions (make_transitions) or Episodes; got {type(tr).__name__}")
        if self.uses_keys:
            tr = tr.with_keys()
        if self.uses_observations and tr.next_observations is None:
            raise ShapeError(f"{self.name} needs next_observations (per-step [T, E, ...] states)")
        return tr

    def _config_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}

    def _new_memory(self, n_envs: int) -> Any:
        return None

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        raise NotImplementedError

    def _fit(self, tr: Transitions, num_updates: int | None) -> dict[str, float]:
        return {}

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def _plain(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x
