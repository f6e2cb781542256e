"""The :class:`Episodes` container: a batch of episodes in the public padded layout.

Layout (see docs/data-format.md):

==================  ==================  ===========================================================
field               shape / dtype       meaning
==================  ==================  ===========================================================
rewards             float[B, T]         reward received after the action at step t; 0 on padding
mask                bool[B, T]          1 on real steps (a prefix of each row), 0 on padding
discounts           float[B, T]         continuation in [0, 1]; 0 at the step where the episode
                                        terminated (gamma is passed separately)
terminated          bool[B]             the episode ended in a terminal state
truncated           bool[B]             a time limit (or the rollout's end) cut the episode
bootstrap_value     float[B]            V(s_T) of the state after the last step (truncation)
values              float[B, T] | None  V(s_t) from a critic
outcomes            float[B] | None     episode-level feedback; ``outcome_present`` marks None
components          float[B, K] | None  named episode-level reward components
group_ids           int64[B] | None     episodes sharing a prompt / task / start state
task_ids            int64[B] | None     task of each episode (cross-task normalization)
observations        float[B, T, ...]    s_t (optional; learned credit assigners need it)
actions             [B, T, ...]         a_t (optional)
next_observations   float[B, T, ...]    s_{t+1} (optional; defaults to the shifted observations)
==================  ==================  ===========================================================

An ``Episodes`` holds either NumPy arrays or torch tensors (``.numpy()`` / ``.torch(device)``):
each array field is an :data:`Array`. String ``group_ids`` / ``task_ids`` stay NumPy in a torch
Episodes; ``episode_ids`` and ``row_index`` are always NumPy. It is immutable; ``replace`` returns
a modified copy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeGuard

import numpy as np
import torch

from . import tables
from ._arrays import as_mask, lengths_of
from .errors import (
    DataFormatError,
    DtypeError,
    EmptyBatchError,
    GroupError,
    MissingColumnError,
    NonFiniteError,
    RangeError,
    ShapeError,
)
from .tables import id_text

__all__ = ["Array", "Episodes", "read_episodes", "pad"]

Array: TypeAlias = np.ndarray | torch.Tensor
"""An array field of an :class:`Episodes`: NumPy, or torch on any device (``.numpy()`` / ``.torch()``)."""

_PER_STEP = ("rewards", "mask", "discounts", "values", "observations", "actions", "next_observations", "reward_present")
_PER_EPISODE = (
    "terminated",
    "truncated",
    "bootstrap_value",
    "outcomes",
    "outcome_present",
    "components",
    "component_present",
    "group_ids",
    "task_ids",
)


def pad(rows: Sequence[Any], *, fill: float = 0.0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Pad ragged rows to ``[B, T]``; returns ``(padded, mask)``. Rows may hold arrays (``[T_b, ...]``)."""
    if len(rows) == 0:
        raise EmptyBatchError("cannot pad an empty list of episodes")
    arrs = []
    for i, r in enumerate(rows):
        try:
            a = np.asarray(r, dtype=dtype)
        except (TypeError, ValueError) as exc:
            bad = _first_bad(r, dtype)
            if bad is None:
                raise ShapeError(
                    f"episode {i} has per-step values of different sizes; expected one fixed size per step"
                ) from exc
            raise DtypeError(
                f"episode {i} holds values that are not {np.dtype(dtype).name} numbers ({bad}); "
                "expected one number (or fixed-size list of numbers) per step"
            ) from exc
        if a.ndim == 0:
            raise ShapeError(
                f"episode {i} is a single {type(r).__name__} ({r!r:.40}); expected a list of per-step values"
            )
        if (
            a.dtype.kind == "f"
            and np.isnan(a).any()
            and any(v is None for v in np.asarray(r, dtype=object).reshape(-1))
        ):
            raise DtypeError(f"episode {i} holds None; pad expects a number on every step (it would become NaN)")
        arrs.append(a)
    lengths = np.array([a.shape[0] if a.ndim else 1 for a in arrs])
    tail = arrs[0].shape[1:]
    for i, a in enumerate(arrs):
        if a.shape[1:] != tail:
            raise ShapeError(f"episode {i} has per-step shape {a.shape[1:]} but episode 0 has {tail}")
    out = np.full((len(arrs), int(lengths.max()), *tail), fill, dtype=dtype)
    for i, a in enumerate(arrs):
        out[i, : a.shape[0]] = a
    mask = np.arange(out.shape[1])[None, :] < lengths[:, None]
    return out, mask


def _first_bad(row: Any, dtype: Any) -> str | None:
    """The first entry of a row that does not convert to ``dtype``, for messages (None: all convert)."""
    try:
        items = list(row)
    except TypeError:
        return f"got {type(row).__name__} {row!r:.40}"
    for t, v in enumerate(items):
        try:
            np.asarray(v, dtype=dtype)
        except (TypeError, ValueError):
            return f"step {t} is {type(v).__name__} {v!r:.40}"
    return None


def _is_torch(x: Any) -> TypeGuard[torch.Tensor]:
    return isinstance(x, torch.Tensor)


@dataclass(frozen=True, eq=False)
class Episodes:
    """A batch of B episodes padded to T steps. Build it with a ``from_*`` constructor."""

    rewards: Array  # float[B, T]
    mask: Array  # bool[B, T]
    discounts: Array  # float[B, T]
    terminated: Array  # bool[B]
    truncated: Array  # bool[B]
    bootstrap_value: Array  # float[B]
    values: Array | None = None  # float[B, T]
    outcomes: Array | None = None  # float[B], 0 where missing
    outcome_present: Array | None = None  # bool[B], set with outcomes
    components: Array | None = None  # float[B, K], 0 where missing
    component_present: Array | None = None  # bool[B, K], set with components
    component_names: tuple[str, ...] = ()  # K names
    group_ids: Array | None = None  # int64[B] (or str[B], NumPy even in a torch Episodes)
    task_ids: Array | None = None  # int64[B] (or str[B], as group_ids)
    observations: Array | None = None  # float[B, T, ...]
    actions: Array | None = None  # [B, T, ...] (float, or int for discrete actions)
    next_observations: Array | None = None  # float[B, T, ...]
    reward_present: Array | None = None  # bool[B, T]: the source row had a reward (tables)
    episode_ids: np.ndarray | None = None  # [B] ids (int or str), NumPy; from_padded sets 0..B-1 by default
    extras: Mapping[str, Array] = field(default_factory=dict)  # name -> [B, ...] per-episode or [B, T, ...] per-step
    row_index: np.ndarray | None = (
        None  # int64[B, T]: source row (table row, or flat [T, N] stream index); -1 on padding
    )
    source_shape: tuple[int, ...] | None = None  # (T, N) for Episodes built from streams

    # ------------------------------------------------------------------ construction

    @staticmethod
    def from_padded(
        rewards: Any,
        mask: Any | None = None,
        *,
        discounts: Any | None = None,
        terminated: Any | None = None,
        truncated: Any | None = None,
        bootstrap_value: Any | None = None,
        values: Any | None = None,
        outcomes: Any | None = None,
        components: Any | None = None,
        component_names: Sequence[str] | None = None,
        group_ids: Any | None = None,
        task_ids: Any | None = None,
        observations: Any | None = None,
        actions: Any | None = None,
        next_observations: Any | None = None,
        episode_ids: Any | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> Episodes:
        """Build from padded ``[B, T]`` arrays (NumPy or torch; torch stays torch).

        Every field is described in the module docstring's table. ``mask`` (bool ``[B, T]``,
        default all True) marks each row's valid steps. ``outcomes`` may contain None (list) for
        "not applicable"; ``components`` may be a ``[B, K]`` array (None allowed) or a list of B
        dicts ``{name: value}``. ``group_ids`` is one id per row: the prompt / start state of
        GRPO-style groups, or the team episode for the multi-agent assigners (one row per
        (team episode, agent): rows with the same id are the agents of one team episode).
        ``observations`` / ``next_observations`` are ``[B, T, obs]``, ``actions`` ``[B, T]`` ints
        or ``[B, T, act]`` floats: what learned assigners read.
        """
        as_t = _is_torch(rewards)
        r = _float(rewards, "rewards")
        if r.ndim != 2:
            raise ShapeError(f"rewards must be [B, T]; got shape {tuple(r.shape)}")
        b, t = r.shape
        if b == 0:
            raise EmptyBatchError("rewards holds no episode; expected B >= 1")
        m = as_mask(mask, "mask", (b, t), device=torch.device("cpu")).numpy()
        lengths = m.sum(axis=1)
        r = np.where(m, r, 0.0).astype(r.dtype)
        _check_finite(r, "rewards", m)
        given_ids = np.asarray(episode_ids) if episode_ids is not None else None

        def who(i: int) -> str:
            return (
                f"episode {id_text(given_ids[i])}"
                if given_ids is not None and given_ids.shape == (b,)
                else f"episode {i}"
            )

        # Every episode ends one way: terminated (no bootstrap) or truncated (bootstrap). Flags not
        # given are derived: nothing given = complete episodes (terminated); one flag = the other
        # is its complement; discounts alone = terminated where the last discount is 0.
        d = None
        if discounts is not None:
            d = _float(discounts, "discounts", shape=(b, t)).astype(r.dtype)
            _check_finite(d, "discounts", m)
            if ((d < 0) | (d > 1))[m].any():
                raise RangeError("discounts must lie in [0, 1] on valid steps (1 = continue, 0 = terminated)")
            d = np.where(m, d, 0.0).astype(r.dtype)
        if terminated is None and truncated is None:
            term = np.ones(b, bool) if d is None else d[np.arange(b), lengths - 1] == 0
            trunc = ~term
        elif terminated is None:
            trunc = _flags(truncated, "truncated", b)
            term = ~trunc
        else:
            term = _flags(terminated, "terminated", b)
            trunc = ~term if truncated is None else _flags(truncated, "truncated", b)
        both = term & trunc
        if both.any():
            raise DataFormatError(
                f"{who(int(np.nonzero(both)[0][0]))} is both terminated and truncated; an episode ends one way"
            )
        if d is None:
            d = m.astype(r.dtype)
            d[np.arange(b), lengths - 1] = np.where(term, 0.0, 1.0)
        boot = (
            np.zeros(b, dtype=r.dtype)
            if bootstrap_value is None
            else _float(bootstrap_value, "bootstrap_value", shape=(b,)).astype(r.dtype)
        )
        _check_finite(boot, "bootstrap_value")
        v = None
        if values is not None:
            v = _float(values, "values", shape=(b, t)).astype(r.dtype)
            _check_finite(v, "values", m)
            v = np.where(m, v, 0.0).astype(r.dtype)
        o = op = None
        if outcomes is not None:
            o, op = _scores(outcomes, "outcomes", (b,))
        c = cp = None
        names: tuple[str, ...] = ()
        if components is not None:
            c, cp, names = _components(components, b, component_names)
        g = _ids(group_ids, "group_ids", b)
        tk = _ids(task_ids, "task_ids", b)
        obs = _per_step_array(observations, "observations", b, t)
        act = _per_step_array(actions, "actions", b, t, allow_int=True)
        nobs = _per_step_array(next_observations, "next_observations", b, t)
        ex = {k: np.asarray(x) for k, x in (extras or {}).items()}
        for k, x in ex.items():
            if x.shape[:1] != (b,):
                raise ShapeError(f"extras[{k!r}] has shape {x.shape}; expected a leading axis of B = {b}")
        eps = np.asarray(episode_ids) if episode_ids is not None else np.arange(b)
        if eps.shape != (b,):
            raise ShapeError(f"episode_ids has shape {eps.shape}; expected ({b},)")
        out = Episodes(
            rewards=r,
            mask=m,
            discounts=d,
            terminated=term,
            truncated=trunc,
            bootstrap_value=boot,
            values=v,
            outcomes=o,
            outcome_present=op,
            components=c,
            component_present=cp,
            component_names=names,
            group_ids=g,
            task_ids=tk,
            observations=obs,
            actions=act,
            next_observations=nobs,
            episode_ids=eps,
            extras=ex,
        )
        return out.torch(rewards.device) if as_t else out

    @staticmethod
    def from_lists(
        rewards: Sequence[Sequence[float]],
        *,
        values: Sequence[Sequence[float]] | None = None,
        discounts: Sequence[Sequence[float]] | None = None,
        observations: Sequence[Any] | None = None,
        actions: Sequence[Any] | None = None,
        next_observations: Sequence[Any] | None = None,
        **per_episode: Any,
    ) -> Episodes:
        """Build from ragged Python lists (one list of per-step values per episode).

        Per-episode keywords (``terminated``, ``truncated``, ``bootstrap_value``, ``outcomes``,
        ``components``, ``component_names``, ``group_ids``, ``task_ids``, ``episode_ids``) are
        passed to :meth:`from_padded`.

        Example:
            >>> ep = Episodes.from_lists([[0.0, 1.0], [2.0]], terminated=[True, False])
            >>> ep.lengths.tolist(), ep.rewards.tolist()
            ([2, 1], [[0.0, 1.0], [2.0, 0.0]])
        """
        if len(rewards) == 0:
            raise EmptyBatchError("rewards holds no episode; expected at least one list of step rewards")
        for i, row in enumerate(rewards):
            if len(row) == 0:
                raise EmptyBatchError(f"episode {i} is empty: rewards[{i}] has no step")
            if any(v is None for v in row):
                raise DtypeError(f"rewards[{i}] contains None; use 0 for a step without reward")
        r, m = pad(rewards)
        lengths = m.sum(axis=1)

        def padded(x, name, dtype=np.float64):
            if x is None:
                return None
            if len(x) != len(rewards):
                raise ShapeError(f"{name} has {len(x)} episodes but rewards has {len(rewards)}")
            for i, row in enumerate(x):
                if len(row) != lengths[i]:
                    raise ShapeError(f"{name}[{i}] has {len(row)} steps but rewards[{i}] has {lengths[i]}")
            return pad(x, dtype=dtype)[0]

        act_dtype: type[np.number] = np.float64
        if actions is not None and len(actions) and np.asarray(actions[0]).dtype.kind in "iub":
            act_dtype = np.int64
        return Episodes.from_padded(
            r,
            m,
            values=padded(values, "values"),
            discounts=padded(discounts, "discounts"),
            observations=padded(observations, "observations"),
            actions=padded(actions, "actions", act_dtype),
            next_observations=padded(next_observations, "next_observations"),
            **per_episode,
        )

    @staticmethod
    def from_streams(
        rewards: Any,
        terminated: Any,
        truncated: Any,
        *,
        values: Any | None = None,
        last_values: Any | None = None,
        truncation_values: Any | None = None,
        observations: Any | None = None,
        actions: Any | None = None,
    ) -> Episodes:
        """Cut time-major rollout streams ``[T, N]`` (SB3/Gymnasium vector layout) into episodes.

        Column n is the stream of env n. ``terminated[t, n]`` / ``truncated[t, n]`` say the episode
        ended after step t. Episodes still running at the end of the rollout are marked truncated
        and bootstrap from ``last_values[n]`` (V of the next observation); episodes cut by a time
        limit bootstrap from ``truncation_values[t, n]`` (V of the final observation) when given.
        Episodes are ordered by stream, then by time. ``episode_ids`` records ``(n, t_start)`` as
        ``n * T + t_start``; :meth:`to_streams` maps per-step results back to ``[T, N]``.

        When ``values`` are given, ``last_values`` is required if any episode is still running at
        the rollout's end (its bootstrap would otherwise silently be 0). Torch inputs give a torch
        Episodes on the same device.
        """
        as_t = _is_torch(rewards)
        r = _float(rewards, "rewards")
        if r.ndim != 2:
            raise ShapeError(f"rewards must be time-major [T, N]; got shape {r.shape}")
        t_len, n_env = r.shape
        if t_len == 0 or n_env == 0:
            raise EmptyBatchError("rewards holds no step")
        term = _flags2(terminated, "terminated", r.shape)
        trunc = _flags2(truncated, "truncated", r.shape)
        end = term | trunc
        end_flat = end.T.reshape(-1).copy()  # stream-major order: index = n * T + t
        end_flat[np.arange(n_env) * t_len + (t_len - 1)] = True  # every stream closes at the rollout end
        ep_of = np.concatenate([[0], np.cumsum(end_flat[:-1])])  # episode index of each flat step
        n_ep = int(ep_of[-1]) + 1
        starts = np.concatenate([[0], np.nonzero(end_flat[:-1])[0] + 1])
        pos = np.arange(end_flat.size) - starts[ep_of]
        lengths = np.bincount(ep_of, minlength=n_ep)
        t_max = int(lengths.max())

        def scatter(x: np.ndarray, fill=0.0):
            flat = x.transpose(1, 0, *range(2, x.ndim)).reshape(end_flat.size, *x.shape[2:])
            out = np.full((n_ep, t_max, *x.shape[2:]), fill, dtype=x.dtype)
            out[ep_of, pos] = flat
            return out

        last_flat = np.concatenate([starts[1:] - 1, [end_flat.size - 1]])
        term_flat = term.T.reshape(-1)
        trunc_flat = trunc.T.reshape(-1)
        ep_term = term_flat[last_flat]
        ep_trunc = ~ep_term  # time-limit truncations and rollout cuts both bootstrap
        boot = np.zeros(n_ep, dtype=r.dtype)
        if truncation_values is not None:
            tv = _float(truncation_values, "truncation_values", shape=r.shape).T.reshape(-1)
            boot = np.where(trunc_flat[last_flat], tv[last_flat], boot).astype(r.dtype)
        running = ~(term_flat[last_flat] | trunc_flat[last_flat])
        if last_values is not None:
            lv = _float(last_values, "last_values", shape=(n_env,))
            stream = last_flat // t_len
            boot = np.where(running, lv[stream], boot).astype(r.dtype)
        elif values is not None and running.any():
            raise ShapeError(
                f"{int(running.sum())} episodes are still running at the end of the rollout; pass last_values[N] "
                "(V of each env's next observation) so they bootstrap, as SB3's compute_returns_and_advantage does"
            )
        if truncation_values is None and values is not None and (trunc_flat[last_flat] & ~running).any():
            import warnings

            from .errors import CreditlabWarning

            warnings.warn(
                "some episodes were truncated by a time limit but truncation_values (V of their final "
                "observation) was not given: they bootstrap from 0",
                CreditlabWarning,
                stacklevel=2,
            )
        mask = np.arange(t_max)[None, :] < lengths[:, None]
        flat_index = np.full((n_ep, t_max), -1, dtype=np.int64)
        t_of = np.tile(np.arange(t_len), n_env)
        n_of = np.repeat(np.arange(n_env), t_len)
        flat_index[ep_of, pos] = t_of * n_env + n_of  # row-major index into [T, N]
        out = Episodes.from_padded(
            scatter(r),
            mask,
            terminated=ep_term,
            truncated=ep_trunc,
            bootstrap_value=boot,
            values=None if values is None else scatter(_float(values, "values", shape=r.shape)),
            observations=None if observations is None else scatter(np.asarray(observations)),
            actions=None if actions is None else scatter(np.asarray(actions)),
            episode_ids=(last_flat // t_len) * t_len + starts % t_len,
        ).replace(row_index=flat_index, source_shape=(t_len, n_env))
        return out.torch(rewards.device) if as_t else out

    def to_streams(self, step_values: Any, *, fill: float = 0.0) -> Any:
        """Map a per-step ``[B, T]`` result back to the ``[T, N]`` layout given to :meth:`from_streams`.

        Example:
            >>> import numpy as np
            >>> ep = Episodes.from_streams(np.ones((3, 2)), np.array([[0, 0], [1, 0], [0, 0]]), np.zeros((3, 2)))
            >>> ep.to_streams(np.arange(ep.num_episodes)[:, None] * np.ones((1, ep.max_steps)))
            array([[0., 2.],
                   [0., 2.],
                   [1., 2.]])
        """
        if self.source_shape is None or self.row_index is None:
            raise DataFormatError("to_streams needs an Episodes built by Episodes.from_streams")
        is_t = _is_torch(step_values)
        v = step_values.detach().cpu().numpy() if is_t else np.asarray(step_values)
        rows = np.asarray(self.row_index)
        if v.shape[:2] != rows.shape:
            raise ShapeError(f"step_values has shape {v.shape}; expected [B, T] = {rows.shape}")
        m = rows >= 0
        flat = np.full(
            (int(np.prod(self.source_shape)), *v.shape[2:]), fill, dtype=v.dtype if v.dtype.kind == "f" else np.float64
        )
        flat[rows[m]] = v[m]
        out = flat.reshape(*self.source_shape, *v.shape[2:])
        return torch.from_numpy(out).to(step_values.device) if is_t else out

    # ------------------------------------------------------------------ basic properties

    @property
    def num_episodes(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def max_steps(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def lengths(self) -> Any:
        """int64[B] -- valid steps per episode."""
        if isinstance(self.mask, torch.Tensor):
            return lengths_of(self.mask)
        return self.mask.sum(axis=1).astype(np.int64)

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum())

    @property
    def is_torch(self) -> bool:
        return _is_torch(self.rewards)

    def returns(self) -> Any:
        """float[B] -- undiscounted sum of per-step rewards of each episode."""
        return self.rewards.sum(1)

    def episode_returns(self) -> Any:
        """float[B] -- the episode-level feedback: ``outcomes`` where given, else the sum of rewards.

        Episodes whose outcome is None fall back to nothing: see ``outcome_present``.
        """
        if self.outcomes is not None:
            return self.outcomes
        return self.returns()

    def require(self, *fields: str, method: str = "") -> None:
        """Raise a clear error if a field a method needs is missing."""
        for f in fields:
            if getattr(self, f) is None:
                who = f"method {method!r}" if method else "this operation"
                raise MissingColumnError(
                    f"{who} needs episodes.{f}, which is not set; {_FIELD_HINT.get(f, '')}".rstrip("; ")
                )

    # ------------------------------------------------------------------ conversions

    def _map(self, fn: Callable[[Array], Array]) -> Episodes:
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            x = getattr(self, f.name)
            if f.name in ("component_names", "episode_ids", "row_index", "source_shape"):
                continue
            if f.name == "extras":
                changes[f.name] = {k: fn(v) for k, v in x.items()}
            elif x is not None:
                changes[f.name] = fn(x)
        return dataclasses.replace(self, **changes)

    def numpy(self) -> Episodes:
        """A copy holding NumPy arrays."""
        return self._map(lambda x: x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x))

    def torch(self, device: str | torch.device | None = None) -> Episodes:
        """A copy holding torch tensors on ``device`` (default CPU). NumPy data is not copied on CPU."""
        dev = torch.device(device) if device is not None else torch.device("cpu")

        def conv(x):
            if _is_torch(x):
                return x.to(dev)
            arr = np.asarray(x)
            if arr.dtype.kind in "OUS":  # string ids stay NumPy (estimators accept them)
                return arr
            return torch.from_numpy(np.ascontiguousarray(arr)).to(dev)

        return self._map(conv)

    def replace(self, **changes: Any) -> Episodes:
        """Copy with some fields replaced (no re-validation beyond dataclasses)."""
        return dataclasses.replace(self, **changes)

    def select(self, index: Any) -> Episodes:
        """Episodes ``index`` (int array, slice or bool mask over B), trimmed to their longest length."""
        idx = index
        if _is_torch(self.rewards) and not _is_torch(idx) and not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx))

        def take(x: Array | None) -> Array | None:
            if x is None:
                return None
            return x[idx]

        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            x = getattr(self, f.name)
            if f.name in ("component_names", "source_shape"):
                continue
            if f.name == "extras":
                changes[f.name] = {k: take(v) for k, v in x.items()}
            elif f.name in ("episode_ids", "row_index"):
                if x is not None:
                    np_idx = idx.cpu().numpy() if _is_torch(idx) else idx
                    changes[f.name] = np.asarray(x)[np_idx]
            else:
                changes[f.name] = take(x)
        sub = dataclasses.replace(self, **changes)
        t_new = int(sub.lengths.max()) if sub.num_episodes else 0
        return sub._trim(t_new)

    def _trim(self, t_new: int) -> Episodes:
        changes: dict[str, Any] = {}
        for name in _PER_STEP + ("row_index",):
            x = getattr(self, name)
            if x is not None:
                changes[name] = x[:, :t_new]
        return dataclasses.replace(self, **changes)

    @staticmethod
    def concat(batches: Sequence[Episodes]) -> Episodes:
        """Stack batches along B, padding per-step arrays to the longest T (NumPy only)."""
        if not batches:
            raise EmptyBatchError("concat needs at least one Episodes")
        batches = [b.numpy() for b in batches]
        t_max = max(b.max_steps for b in batches)
        names0 = batches[0].component_names
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(Episodes):
            if f.name in ("component_names", "source_shape"):
                continue
            xs = [getattr(b, f.name) for b in batches]
            if f.name == "extras":
                keys = set(xs[0])
                changes[f.name] = {k: np.concatenate([x[k] for x in xs]) for k in keys if all(k in x for x in xs)}
                continue
            if all(x is None for x in xs):
                changes[f.name] = None
                continue
            if any(x is None for x in xs):
                raise DataFormatError(f"cannot concat: {f.name} is set in some batches and missing in others")
            if f.name in _PER_STEP or f.name == "row_index":
                fill = -1 if f.name == "row_index" else 0
                xs = [
                    np.concatenate(
                        [x, np.full((x.shape[0], t_max - x.shape[1], *x.shape[2:]), fill, dtype=x.dtype)], axis=1
                    )
                    for x in xs
                ]
            changes[f.name] = np.concatenate(xs)
        if any(b.component_names != names0 for b in batches):
            raise DataFormatError("cannot concat batches with different component_names")
        changes["component_names"] = names0
        return Episodes(**changes)

    def __repr__(self) -> str:
        kind = "torch" if self.is_torch else "numpy"
        extra = [
            n
            for n in (
                "values",
                "outcomes",
                "components",
                "group_ids",
                "task_ids",
                "observations",
                "actions",
                "next_observations",
            )
            if getattr(self, n) is not None
        ]
        return f"Episodes(B={self.num_episodes}, T={self.max_steps}, steps={self.num_steps}, {kind}, with={extra})"

    def __len__(self) -> int:
        return self.num_episodes

    # ------------------------------------------------------------------ tables (Parquet / JSONL)

    @staticmethod
    def from_table(table: Any, *, source: str = "table") -> Episodes:
        """Build from a pyarrow Table (or a dict of columns) with one row per step.

        See :func:`read_episodes` for the schema; the reading is :func:`creditlab.tables.episode_arrays`.
        """
        arrays = tables.episode_arrays(table, source=source)
        row_index, reward_present = arrays.pop("row_index"), arrays.pop("reward_present")
        return Episodes.from_padded(**arrays).replace(row_index=row_index, reward_present=reward_present)

    def to_table(self, **step_columns: Any) -> Any:
        """One row per valid step as a pyarrow Table, plus extra ``[B, T]`` columns (e.g. advantages).

        See :func:`creditlab.tables.to_table`.
        """
        return tables.to_table(self, **step_columns)


_FIELD_HINT = {
    "values": "add a 'value' column (V(s_t)) or pass values=",
    "group_ids": "add a 'group_id' column or pass group_ids=",
    "task_ids": "add a 'task_id' column or pass task_ids=",
    "components": "add 'outcome.<name>' columns or pass components=",
    "observations": "add an 'obs' column or pass observations=",
    "actions": "add an 'action' column or pass actions=",
}


# ---------------------------------------------------------------------- files


def read_episodes(path: str | os.PathLike) -> Episodes:
    """Read an episodes file: Parquet (``.parquet``) or JSON Lines (``.jsonl`` / ``.json``).

    Schema: one row per step.

    * required: ``episode_id`` (int or string), ``step`` (0-based int, each step exactly once),
      and at least one reward column: ``reward`` (per step; null = 0, recorded in
      ``reward_present``), ``outcome`` (per episode) or ``outcome.<name>`` (named components);
    * per step, optional: ``value``, ``discount`` (continuation in [0, 1]), ``obs``, ``next_obs``
      (lists of floats), ``action`` (number or list);
    * per episode, optional (repeat the same value on every row, or set it on one row and leave
      the others null): ``terminated``, ``truncated``, ``bootstrap_value``, ``outcome``,
      ``outcome.<name>``, ``group_id``, ``task_id``. Without ``terminated``/``truncated`` an
      episode is taken as terminated.

    Other columns are kept in the source table and written back by the CLI unchanged
    (:func:`creditlab.tables.write_back`).
    """
    return Episodes.from_table(tables.read_table(path), source=str(path))


# ---------------------------------------------------------------------- validation helpers


def _float(x: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if _is_torch(x):
        arr = x.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(x)
        except ValueError as exc:
            raise ShapeError(f"{name} is ragged; use Episodes.from_lists for ragged per-episode lists") from exc
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DtypeError(f"{name} must hold numbers (None is only allowed in outcomes/components)") from exc
    if arr.dtype.kind not in "fiub":
        raise DtypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.dtype.kind != "f" or arr.dtype.itemsize < 4:
        arr = arr.astype(np.float64 if arr.dtype.kind != "f" else np.float32)
    if shape is not None and arr.shape != shape:
        raise ShapeError(f"{name} has shape {arr.shape}; expected {shape}")
    return arr


def _check_finite(x: np.ndarray, name: str, where: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(x)
    if where is not None:
        bad &= where
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(f"{name}[{', '.join(map(str, idx))}] is {x[idx]}; expected finite numbers")


def _flags(x: Any, name: str, b: int) -> np.ndarray:
    if x is None:
        return np.zeros(b, dtype=bool)
    arr = x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)
    if arr.shape != (b,):
        raise ShapeError(f"{name} has shape {arr.shape}; expected one flag per episode, shape ({b},)")
    if arr.dtype.kind not in "biuf" or np.any((arr != 0) & (arr != 1)):
        raise DtypeError(f"{name} must be boolean per episode; got dtype {arr.dtype}")
    return arr.astype(bool)


def _flags2(x: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)
    if arr.shape != shape:
        raise ShapeError(f"{name} has shape {arr.shape}; expected time-major {shape} like rewards")
    if arr.dtype.kind not in "biuf" or np.any((arr != 0) & (arr != 1)):
        raise DtypeError(f"{name} must be boolean (or 0/1) per step; got values other than 0 and 1")
    return arr.astype(bool)


def _scores(x: Any, name: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    from ._arrays import as_scores

    v, p = as_scores(x, name, ndim=len(shape))
    if tuple(v.shape) != shape:
        raise ShapeError(f"{name} has shape {tuple(v.shape)}; expected {shape}")
    return v.cpu().numpy(), p.cpu().numpy()


def _components(x: Any, b: int, names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Mapping):
        columns = list(names) if names is not None else sorted({k for row in x for k in row})
        rows = [[row.get(k) for k in columns] for row in x]
        v, p = _scores(rows, "components", (b, len(columns)))
        return v, p, tuple(columns)
    arr_shape = np.shape(x) if not _is_torch(x) else tuple(x.shape)
    if len(arr_shape) != 2:
        raise ShapeError(f"components has shape {arr_shape}; expected [B, K] or a list of B dicts")
    v, p = _scores(x, "components", (b, arr_shape[1]))
    keys = tuple(names) if names is not None else tuple(str(i) for i in range(v.shape[1]))
    if len(keys) != v.shape[1]:
        raise ShapeError(f"component_names has {len(keys)} names but components has K = {v.shape[1]} columns")
    return v, p, keys


def _ids(x: Any, name: str, b: int) -> np.ndarray | None:
    """Group / task ids, kept as given (integers, or strings so ids stay stable across batches)."""
    if x is None:
        return None
    arr = x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)
    if arr.shape != (b,):
        raise GroupError(f"{name} has shape {arr.shape} but the batch has {b} episodes; expected ({b},)")
    if arr.dtype.kind in "OUS":
        from ._arrays import factorize_ids

        factorize_ids(arr.astype(object) if arr.dtype.kind == "O" else arr, name)  # rejects None / mixed types
        if arr.dtype.kind == "O" and all(isinstance(v, (int, np.integer)) for v in arr.tolist()):
            return arr.astype(np.int64)
        return arr.astype(str)
    if arr.dtype.kind == "f":
        if np.any(arr != np.round(arr)):
            raise DtypeError(f"{name} must be integer ids; got fractional floats")
    elif arr.dtype.kind not in "iub":
        raise DtypeError(f"{name} must be integer or string ids; got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _per_step_array(x: Any, name: str, b: int, t: int, allow_int: bool = False) -> np.ndarray | None:
    if x is None:
        return None
    arr = x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)
    if arr.shape[:2] != (b, t):
        raise ShapeError(f"{name} has shape {arr.shape}; expected [B, T, ...] = [{b}, {t}, ...]")
    if arr.dtype.kind not in "fiub":
        raise DtypeError(f"{name} must be numeric; got dtype {arr.dtype}")
    if arr.dtype.kind != "f" and not allow_int:
        arr = arr.astype(np.float32)
    return arr
