"""The credit-assigner protocol and the helpers the assigners share.

A *credit assigner* maps a batch of episodes whose feedback arrives late (at the end, or every
k steps) to dense per-step rewards. Every assigner in :mod:`creditlab.credit` follows
:class:`CreditAssigner`:

* ``fit(episodes=None, *, num_updates=None) -> dict[str, float]`` takes the batch's complete
  episodes into the assigner's memory (an :class:`~creditlab.credit.store.EpisodeStore` for the
  learned ones, the credit buffers for IRCR) and, where something is learned, runs
  ``num_updates`` gradient steps on episodes drawn from that memory. It is a no-op where nothing
  is learned or kept (uniform). ``episodes=None`` trains on the memory only.
* ``assign(episodes) -> RewardOutput(rewards[B, T], metrics, present[B, T])`` gives every step a
  reward. ``present`` is False on steps the assigner cannot credit yet (an episode without an
  outcome for the outcome-based methods); those steps hold 0.
* ``state_dict()`` / ``load_state_dict(state)`` checkpoint and resume (model, optimizer,
  normalizers, stored episodes, random state).
* ``scope`` is ``"step"`` when a step's reward depends only on its own (s, a, s') -- such an
  assigner can relabel any transition, e.g. one sampled from a replay buffer -- and
  ``"episode"`` when it needs the whole episode (its return, length or history).

Which episodes count as *complete* (usable as a decomposition target): those whose return is
known (``outcome_present``, or no ``outcomes`` column at all). Episodes that ended by truncation
(a time limit) are complete too, by default (``include_truncated=True``):

* **Target.** A truncated episode's target is the *observed return of its observed steps*,
  ``R = sum_t r_t`` over the steps it has (or its outcome). The creditlab Gymnasium wrappers
  (``EpisodicReward``, ``DelayedReward``) pay the accumulated sum on the step that truncates, so
  this R is exact: the decomposition explains what was observed, ``sum_t r_hat_t ~ R``.
* **Bootstrap.** No value estimate enters the target. What the episode would have earned after
  the time limit is the agent's business: SB3 adds ``gamma * V(s_T)`` to the reward of a
  time-limit truncation, and the SB3 integration keeps that term untouched on top of the
  assigned rewards. Adding it to R as well would count it twice and feed the critic's errors
  into the reward model.
* **Opt out** with ``include_truncated=False`` when a truncated episode's feedback does *not*
  cover its observed steps (e.g. an environment that pays its episodic reward only on
  termination); those episodes are then counted in ``store/skipped_truncated``. On tasks where
  every episode ends at the time limit (HalfCheetah, Pendulum) that leaves nothing to learn
  from: the learned assigners warn (:class:`~creditlab.credit.learned.UntrainedAssignerWarning`).

Episodes without a known return (``outcome_present`` False: a prefix of a running episode) are
never targets (``store/skipped_no_outcome``).
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import numbers
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from .._arrays import Backend
from ..atomic import write_bytes
from ..episodes import Episodes
from ..errors import DtypeError, EmptyBatchError, RangeError, ShapeError
from ..outputs import RewardOutput

__all__ = [
    "AssignerConfig",
    "ConfiguredAssigner",
    "StatelessAssigner",
    "CreditAssigner",
    "make_config",
    "EpisodeArrays",
    "episode_arrays",
    "complete_episodes",
    "encode_actions",
    "save_assigner",
    "load_assigner",
]

Scope = Literal["step", "episode"]


@runtime_checkable
class CreditAssigner(Protocol):
    """What every credit assigner provides (see the module docstring)."""

    name: str
    scope: Scope

    def fit(self, episodes: Episodes | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """Take in complete episodes and (if learned) train; returns metrics."""
        ...

    def assign(self, episodes: Episodes) -> Any:
        """Per-step rewards ``RewardOutput(rewards[B, T], metrics, present[B, T])``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (plain Python, NumPy and torch objects)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        ...


# ---------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, kw_only=True)
class AssignerConfig:
    """Parameters every credit assigner accepts (the base of each assigner's ``Config``).

    Configs are frozen dataclasses, one per method, each field documented where it is declared
    (CleanRL's ``Args`` style). An assigner is built from keywords, ``RRDAssigner(subset_size=8)``,
    or from its config, ``RRDAssigner(RRDConfig(subset_size=8))`` (keywords then override the
    config's fields). Values are checked when the config is made: a wrong type raises
    :class:`~creditlab.errors.DtypeError`, a value out of range :class:`~creditlab.errors.RangeError`,
    both naming the field.
    """

    include_truncated: bool = True
    """Learn from (keep in memory) episodes that ended by truncation too, with the observed return
    of their observed steps as the target (see the module docstring; no bootstrap in the target).
    False: leave them out (for feedback that does not cover a truncated episode's steps).
    Assigners that keep no memory (uniform) accept it and are unaffected: ``assign`` credits
    every episode whose return is known."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(type(self).__name__, f.name, hints.get(f.name), getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    def _check(self, name: str, ok: bool, expected: str) -> None:
        """Raise a RangeError naming the field when ``ok`` is False."""
        if not ok:
            raise RangeError(f"{type(self).__name__}.{name} must be {expected}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (shallow: a callable field stays the callable)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the field's annotation; ints/floats/bools/int tuples are normalized
    to plain Python values (JSON and NumPy scalars come in from the CLI and from checkpoints)."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    base = hint
    if args and type(None) in args and len(args) == 2:  # X | None
        base = next(a for a in args if a is not type(None))
    where = f"{owner}.{name}"
    if base is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise DtypeError(f"{where} must be True or False; got {value!r} ({type(value).__name__})")
    if base is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not float(value).is_integer():
            raise DtypeError(f"{where} must be an integer; got {value!r} ({type(value).__name__})")
        return int(value) if isinstance(value, numbers.Integral) else int(float(value))
    if base is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise DtypeError(f"{where} must be a number; got {value!r} ({type(value).__name__})")
        return float(value)
    if typing.get_origin(base) is tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise DtypeError(f"{where} must be a sequence of integers; got {value!r}")
        return tuple(_coerce(owner, name, int, v) for v in value)
    return value


def make_config(
    config_cls: type[AssignerConfig], config: Any = None, overrides: Mapping[str, Any] | None = None, *, who: str
) -> Any:
    """The config an assigner is built with: ``config`` (an instance of exactly ``config_cls``, a
    mapping of its fields, or None for the defaults) with ``overrides`` applied.

    An unknown parameter raises :class:`~creditlab.errors.RangeError` naming the valid ones.

    Example:
        >>> make_config(AssignerConfig, None, {"include_truncated": True}, who="UniformAssigner")
        AssignerConfig(include_truncated=True)
        >>> make_config(AssignerConfig, None, {"subset_size": 8}, who="UniformAssigner")
        Traceback (most recent call last):
        ...
        creditlab.errors.RangeError: UniformAssigner has no parameter 'subset_size'; its parameters are ['include_truncated']
    """
    overrides = dict(overrides or {})
    if (
        config is not None
        and not isinstance(config, config_cls | Mapping)
        or (isinstance(config, AssignerConfig) and type(config) is not config_cls)
    ):
        raise DtypeError(f"{who} takes a {config_cls.__name__} (or keyword arguments); got a {type(config).__name__}")
    if isinstance(config, Mapping):
        overrides = {**config, **overrides}
        config = None
    valid = [f.name for f in dataclasses.fields(config_cls)]
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        names = ", ".join(repr(k) for k in unknown)
        raise RangeError(f"{who} has no parameter {names}{hint}; its parameters are {valid}")
    if config is None:
        return config_cls(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config


class ConfiguredAssigner:
    """Construction from keywords or a config object, shared by every assigner class.

    Subclasses set ``Config`` (their config dataclass), ``name`` (the registry name) and ``scope``.
    The registry reads the defaults from ``Config`` (:func:`creditlab.registry.default_params`).
    """

    Config: ClassVar[type[AssignerConfig]] = AssignerConfig
    name: ClassVar[str] = "assigner"
    scope: ClassVar[Scope] = "episode"

    def __init__(self, config: Any = None, /, **overrides: Any):
        self.config = make_config(type(self).Config, config, overrides, who=type(self).__name__)

    def saved_config(self) -> dict[str, Any]:
        """Constructor parameters written to checkpoints (:func:`load_assigner` rebuilds from them)."""
        return self.config.to_dict()


class StatelessAssigner(ConfiguredAssigner):
    """An assigner that learns and keeps nothing (uniform, team-uniform): ``fit`` is a no-op and the
    checkpoint holds only the configuration."""

    def fit(self, episodes: Episodes | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """No-op (nothing to learn or keep)."""
        return {"credit/updates": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.saved_config()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EpisodeArrays(NamedTuple):
    """An :class:`Episodes` batch read into NumPy for the assigners.

    Attributes:
        mask: bool[B, T] -- valid steps (a prefix of each row).
        lengths: int64[B] -- valid steps per episode.
        returns: float64[B] -- episodic return R (the outcome where given, else the sum of the
            step rewards); 0 where ``has_return`` is False.
        has_return: bool[B] -- the episode's feedback is known (False: outcome is None).
        terminated: bool[B]
        truncated: bool[B]
        rewards: float[B, T] -- the observed (delayed) per-step rewards.
    """

    mask: np.ndarray
    lengths: np.ndarray
    returns: np.ndarray
    has_return: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    rewards: np.ndarray


def _np(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def episode_arrays(episodes: Episodes) -> EpisodeArrays:
    """Read the per-episode fields every assigner needs (no copy for NumPy batches)."""
    if not isinstance(episodes, Episodes):
        raise DtypeError(
            f"episodes must be a creditlab.Episodes; got {type(episodes).__name__}. Build one with Episodes.from_lists / from_padded."
        )
    mask = _np(episodes.mask).astype(bool, copy=False)
    lengths = mask.sum(axis=1).astype(np.int64)
    rewards = _np(episodes.rewards)
    if episodes.outcomes is not None:
        returns = _np(episodes.outcomes).astype(np.float64)
        has = _np(episodes.outcome_present).astype(bool)
        returns = np.where(has, returns, 0.0)
    else:
        returns = rewards.sum(axis=1, dtype=np.float64)
        has = np.ones(mask.shape[0], dtype=bool)
    return EpisodeArrays(
        mask=mask,
        lengths=lengths,
        returns=returns,
        has_return=has,
        terminated=_np(episodes.terminated).astype(bool),
        truncated=_np(episodes.truncated).astype(bool),
        rewards=rewards,
    )


def reward_output(episodes: Episodes, arrays: EpisodeArrays, out: RewardOutput) -> RewardOutput:
    """``out`` (NumPy credit from a pure function) in the batch's backend (NumPy, or torch on the
    batch's device) and reward dtype (float64 when the batch's rewards are not floating point)."""
    dtype = arrays.rewards.dtype if arrays.rewards.dtype.kind == "f" else np.float64
    backend = Backend.of(episodes.rewards)
    rewards = torch.from_numpy(np.asarray(out.rewards).astype(dtype))
    return RewardOutput(backend.out(rewards), out.metrics, backend.out(torch.from_numpy(np.asarray(out.present))))


def complete_episodes(arrays: EpisodeArrays, *, include_truncated: bool) -> tuple[np.ndarray, dict[str, float]]:
    """Which episodes may serve as decomposition targets, and why the others may not.

    Returns ``(keep[B], metrics)``; the metrics count the episodes left out under
    ``store/skipped_no_outcome`` and ``store/skipped_truncated`` (see the module docstring).

    Example (a terminated episode, a time-limited one, one without an outcome):
        >>> ep = Episodes.from_lists([[1.0], [2.0], [3.0]]).replace(
        ...     truncated=np.array([False, True, False]), outcomes=np.array([1.0, 2.0, 0.0]),
        ...     outcome_present=np.array([True, True, False]))
        >>> complete_episodes(episode_arrays(ep), include_truncated=True)
        (array([ True,  True, False]), {'store/skipped_no_outcome': 1.0, 'store/skipped_truncated': 0.0})
        >>> complete_episodes(episode_arrays(ep), include_truncated=False)[0]
        array([ True, False, False])
    """
    no_outcome = ~arrays.has_return
    truncated = arrays.has_return & arrays.truncated & (not include_truncated)
    keep = ~(no_outcome | truncated)
    return keep, {
        "store/skipped_no_outcome": float(no_outcome.sum()),
        "store/skipped_truncated": float(truncated.sum()),
    }


def encode_actions(actions: np.ndarray, num_actions: int | None, *, name: str = "actions") -> np.ndarray:
    """Actions as float32 ``[..., A]``: integer actions one-hot (``num_actions`` classes).

    ``actions`` is ``[B, T]`` / ``[N]`` of ints (discrete) or ``[B, T, A]`` / ``[N, A]`` of floats.
    Pass ``lead`` dimensions only; a scalar float per step is treated as a 1-D action.
    """
    a = np.asarray(actions)
    if a.dtype.kind in "iub":
        if num_actions is None:
            raise DtypeError(f"{name} are integers (discrete) but num_actions is unknown; pass num_actions=")
        if a.size and (a.min() < 0 or a.max() >= num_actions):
            raise ShapeError(
                f"{name} hold index {int(a.max()) if a.max() >= num_actions else int(a.min())} but the model was built for "
                f"num_actions = {num_actions} discrete actions (indices 0..{num_actions - 1}); pass num_actions= at construction"
            )
        out = np.zeros((*a.shape, num_actions), dtype=np.float32)
        np.put_along_axis(out, a[..., None].astype(np.int64), 1.0, axis=-1)
        return out
    if a.dtype.kind != "f":
        raise DtypeError(f"{name} must be numeric; got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


def step_lead(x: np.ndarray, lead: int) -> np.ndarray:
    """Flatten everything after the ``lead`` leading axes (per-step feature vectors)."""
    return x.reshape(*x.shape[:lead], -1)


def derive_next_observations(obs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``s_{t+1}`` from the observations when ``next_observations`` is not given.

    The state after an episode's last step is not in ``observations``; it is taken equal to the
    last observation (so ``s' - s = 0`` there). Pass ``next_observations`` to avoid this.
    """
    nxt = np.empty_like(obs)
    nxt[:, :-1] = obs[:, 1:]
    rows = np.arange(obs.shape[0])
    nxt[rows, lengths - 1] = obs[rows, lengths - 1]
    return nxt


def require_inputs(episodes: Episodes, who: str) -> None:
    for field in ("observations", "actions"):
        if getattr(episodes, field) is None:
            raise ShapeError(
                f"{who} needs episodes.{field} (per-step [B, T, ...]); build the Episodes with observations= and actions="
            )


def check_nonempty_batch(arrays: EpisodeArrays) -> None:
    if arrays.mask.shape[0] == 0:
        raise EmptyBatchError("episodes holds no episode")


# ---------------------------------------------------------------------------------- checkpoints


def save_assigner(assigner: CreditAssigner, path: str | os.PathLike) -> Path:
    """Write ``assigner.state_dict()`` to ``path`` atomically (temp file + rename)."""
    buf = io.BytesIO()
    blob = {"class": type(assigner).__name__, "method": getattr(assigner, "name", None), "state": assigner.state_dict()}
    torch.save(blob, buf)
    return write_bytes(path, buf.getvalue())


def load_assigner(path: str | os.PathLike, **overrides: Any) -> CreditAssigner:
    """Rebuild an assigner saved by :func:`save_assigner`.

    The class is looked up by its registry name (any registered assigner, e.g. ``"spa"`` of
    :mod:`creditlab.llm` too). ``overrides`` go to the constructor (e.g. ``features=my_phi`` for a
    LaRe assigner whose feature function was a Python callable, which is not saved).
    """
    from ..registry import get_method

    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    cls_name, method = blob.get("class"), blob.get("method")
    try:
        cls = get_method(method).factory if isinstance(method, str) else None
    except KeyError:
        cls = None
    if cls is None or getattr(cls, "__name__", None) != cls_name:
        from ..registry import list_methods

        known = sorted(m.name for m in list_methods(kind="assigner"))
        raise DtypeError(f"{path}: unknown assigner {method!r} (class {cls_name!r}); registered assigners: {known}")
    config = dict(blob["state"].get("config", {}))
    config.update(overrides)
    assigner = cls(**config)
    assigner.load_state_dict(blob["state"])
    return assigner


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return dict(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    rng.bit_generator.state = dict(state)
