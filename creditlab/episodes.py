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

An ``Episodes`` holds either NumPy arrays or torch tensors (``.numpy()`` / ``.torch(device)``).
It is immutable; ``replace`` returns a modified copy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

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

__all__ = ["Episodes", "read_episodes", "write_table", "pad"]

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


def pad(rows: Sequence[Sequence[Any]], *, fill: float = 0.0, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Pad ragged rows to ``[B, T]``; returns ``(padded, mask)``. Rows may hold arrays (``[T_b, ...]``)."""
    if len(rows) == 0:
        raise EmptyBatchError("cannot pad an empty list of episodes")
    arrs = [np.asarray(r, dtype=dtype) for r in rows]
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


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


@dataclass(frozen=True, eq=False)
class Episodes:
    """A batch of B episodes padded to T steps. Build it with a ``from_*`` constructor."""

    rewards: Any
    mask: Any
    discounts: Any
    terminated: Any
    truncated: Any
    bootstrap_value: Any
    values: Any = None
    outcomes: Any = None
    outcome_present: Any = None
    components: Any = None
    component_present: Any = None
    component_names: tuple[str, ...] = ()
    group_ids: Any = None
    task_ids: Any = None
    observations: Any = None
    actions: Any = None
    next_observations: Any = None
    reward_present: Any = None
    episode_ids: Any = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    row_index: Any = None  # int64[B, T]: source row (table row, or flat [T, N] stream index); -1 on padding
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

        ``outcomes`` may contain None (list) for "not applicable"; ``components`` may be a
        ``[B, K]`` array (None allowed) or a list of B dicts ``{name: value}``.
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
        names = np.asarray(episode_ids) if episode_ids is not None else None

        def who(i: int) -> str:
            return f"episode {_name(names[i])}" if names is not None and names.shape == (b,) else f"episode {i}"

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
            raise DataFormatError(f"{who(int(np.nonzero(both)[0][0]))} is both terminated and truncated; an episode ends one way")
        if d is None:
            d = m.astype(r.dtype)
            d[np.arange(b), lengths - 1] = np.where(term, 0.0, 1.0)
        boot = np.zeros(b, dtype=r.dtype) if bootstrap_value is None else _float(bootstrap_value, "bootstrap_value", shape=(b,)).astype(r.dtype)
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

        act_dtype = np.float64
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
        flat = np.full((int(np.prod(self.source_shape)), *v.shape[2:]), fill, dtype=v.dtype if v.dtype.kind == "f" else np.float64)
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
        if _is_torch(self.mask):
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
                raise MissingColumnError(f"{who} needs episodes.{f}, which is not set; {_FIELD_HINT.get(f, '')}".rstrip("; "))

    # ------------------------------------------------------------------ conversions

    def _map(self, fn) -> Episodes:
        changes = {}
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

        def take(x):
            if x is None:
                return None
            return x[idx]

        changes = {}
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
        changes = {}
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
                xs = [np.concatenate([x, np.full((x.shape[0], t_max - x.shape[1], *x.shape[2:]), fill, dtype=x.dtype)], axis=1) for x in xs]
            changes[f.name] = np.concatenate(xs)
        if any(b.component_names != names0 for b in batches):
            raise DataFormatError("cannot concat batches with different component_names")
        changes["component_names"] = names0
        return Episodes(**changes)

    def __repr__(self) -> str:
        kind = "torch" if self.is_torch else "numpy"
        extra = [n for n in ("values", "outcomes", "components", "group_ids", "task_ids", "observations", "actions") if getattr(self, n) is not None]
        return f"Episodes(B={self.num_episodes}, T={self.max_steps}, steps={self.num_steps}, {kind}, with={extra})"

    def __len__(self) -> int:
        return self.num_episodes

    # ------------------------------------------------------------------ tables (Parquet / JSONL)

    @staticmethod
    def from_table(table: Any, *, source: str = "table") -> Episodes:
        """Build from a pyarrow Table (or a dict of columns) with one row per step.

        See :func:`read_episodes` for the schema.
        """
        import pyarrow as pa

        if isinstance(table, Mapping):
            table = pa.table(dict(table))
        cols = set(table.column_names)
        for req in ("episode_id", "step"):
            if req not in cols:
                raise MissingColumnError(
                    f"{source} has no {req!r} column (columns: {sorted(cols)}); every row is one step and needs "
                    "'episode_id' and 'step' (0-based index within the episode)"
                )
        comp_cols = sorted(c for c in cols if c.startswith("outcome."))
        if "reward" not in cols and "outcome" not in cols and not comp_cols:
            raise MissingColumnError(
                f"{source} has no reward column: expected 'reward' (per step), 'outcome' (per episode) or "
                f"'outcome.<name>' components; columns are {sorted(cols)}"
            )
        n = table.num_rows
        if n == 0:
            raise EmptyBatchError(f"{source} has no rows")
        ep_raw = _column(table, "episode_id")
        if _has_null(ep_raw):
            raise DataFormatError(f"{source}: 'episode_id' has null values")
        ep_key = ep_raw.astype(str) if ep_raw.dtype.kind in "OUS" else ep_raw
        uniq, first, inv = np.unique(ep_key, return_index=True, return_inverse=True)
        order_of_first = np.argsort(first, kind="stable")  # episodes in order of first appearance
        rank = np.empty_like(order_of_first)
        rank[order_of_first] = np.arange(order_of_first.size)
        ep = rank[inv.reshape(-1)]
        b = int(uniq.size)
        step_col = _column(table, "step")
        if _has_null(step_col) or step_col.dtype.kind not in "iuf":
            raise DtypeError(f"{source}: 'step' must be integers without nulls")
        step = step_col.astype(np.int64)
        if step_col.dtype.kind == "f" and np.any(step != step_col):
            raise DtypeError(f"{source}: 'step' must be integers; got fractional values")
        lengths = np.bincount(ep, minlength=b)
        order = np.lexsort((step, ep))
        ep_s, step_s = ep[order], step[order]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        expected = np.arange(n) - starts[ep_s]
        bad = np.nonzero(step_s != expected)[0]
        if bad.size:
            e = int(ep_s[bad[0]])
            steps = np.sort(step[ep == e])
            raise DataFormatError(
                f"{source}: episode {_name(uniq[order_of_first[e]])} has steps {steps[:12].tolist()}"
                f"{'...' if steps.size > 12 else ''}; expected 0..{lengths[e] - 1} each exactly once"
            )
        t = int(lengths.max())
        row_index = np.full((b, t), -1, dtype=np.int64)
        row_index[ep_s, step_s] = order
        mask = row_index >= 0

        def where_bad(name: str, bad_rows: np.ndarray) -> str:
            i = int(np.nonzero(bad_rows)[0][0])
            return f"{source}: column {name!r} is {_numeric_column(table, name, source)[2][i]} at episode {_name(uniq[order_of_first[ep[i]]])} step {step[i]}"

        def per_step(name: str, fill: float = 0.0, finite: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
            """(values[B, T] with `fill` on nulls and padding, null[B, T])."""
            if name not in cols:
                return None
            vals, nulls, raw = _numeric_column(table, name, source)
            if finite and not np.isfinite(vals[~nulls]).all():
                bad = ~nulls & ~np.isfinite(vals)
                raise NonFiniteError(where_bad(name, bad) + "; expected a finite number (use null for 'not applicable')")
            out = np.full((b, t), fill, dtype=np.float64)
            out[ep_s, step_s] = np.where(nulls, fill, vals)[order]
            null_bt = np.zeros((b, t), dtype=bool)
            null_bt[ep_s, step_s] = nulls[order]
            return out, null_bt

        def per_episode(name: str) -> tuple[np.ndarray, np.ndarray] | None:
            """(value[B], present[B]); rows with null are ignored; non-null rows must agree."""
            if name not in cols:
                return None
            raw = _column(table, name)
            kind = raw.dtype.kind
            if kind in "OUS" and name in ("group_id", "task_id"):
                vals = raw.astype(object)
                present_row = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in vals])
                out = np.empty(b, dtype=object)
                out[:] = None
                for i in np.nonzero(present_row)[0]:  # strings: rare (ids), per-row check is fine
                    prev = out[ep[i]]
                    if prev is not None and prev != vals[i]:
                        raise DataFormatError(f"{source}: column {name!r} has different values within episode {_name(uniq[order_of_first[ep[i]]])}")
                    out[ep[i]] = vals[i]
                return out, np.array([v is not None for v in out])
            vals, nulls, _ = _numeric_column(table, name, source)
            if not np.isfinite(vals[~nulls]).all():
                raise NonFiniteError(where_bad(name, ~nulls & ~np.isfinite(vals)) + "; expected a finite number (use null for 'not applicable')")
            present_row = ~nulls
            lo = np.full(b, np.inf)
            hi = np.full(b, -np.inf)
            np.minimum.at(lo, ep[present_row], vals[present_row])
            np.maximum.at(hi, ep[present_row], vals[present_row])
            present = np.isfinite(lo) & np.isfinite(hi)
            if np.any(present & (lo != hi)):
                e = int(np.nonzero(present & (lo != hi))[0][0])
                raise DataFormatError(
                    f"{source}: episode-level column {name!r} has different values within episode "
                    f"{_name(uniq[order_of_first[e]])} ({lo[e]} and {hi[e]}); put it on one row or repeat the same value"
                )
            return np.where(present, lo, 0.0), present

        got = per_step("reward")
        reward_present = None
        if got is None:
            rewards = np.zeros((b, t))
        else:
            rewards, reward_null = got
            if (reward_null & mask).any():
                reward_present = mask & ~reward_null
        kw: dict[str, Any] = {}

        def end_flag(name: str) -> np.ndarray | None:
            """Gymnasium convention: the flag is True on the row of the step that ended the episode."""
            got = per_step(name, fill=0.0)
            if got is None:
                return None
            flags = got[0]
            if ((flags != 0) & (flags != 1)).any():
                raise DtypeError(f"{source}: column {name!r} must be true/false (or 0/1)")
            flags = flags != 0
            early = flags & mask & (np.arange(t)[None, :] < (lengths[:, None] - 1))
            if early.any():
                e, st_ = (int(i) for i in np.argwhere(early)[0])
                raise DataFormatError(
                    f"{source}: episode {_name(uniq[order_of_first[e]])} has {name}=true at step {st_} but continues "
                    f"to step {lengths[e] - 1}; {name} may only be true on an episode's last step"
                )
            return flags.any(axis=1)

        kw["terminated"] = end_flag("terminated")
        kw["truncated"] = end_flag("truncated")
        if kw["terminated"] is None and kw["truncated"] is None:
            kw["terminated"] = np.ones(b, dtype=bool)  # a complete episode in a file ends in a terminal state
        elif kw["terminated"] is None:
            kw["terminated"] = ~kw["truncated"]
        elif kw["truncated"] is None:
            kw["truncated"] = np.zeros(b, dtype=bool)
        boot = per_episode("bootstrap_value")
        if boot is not None:
            kw["bootstrap_value"] = boot[0]
        disc = per_step("discount")
        if disc is not None:
            if (disc[1] & mask).any():
                raise DataFormatError(f"{source}: column 'discount' has nulls; give every step a continuation in [0, 1]")
            kw["discounts"] = np.where(mask, disc[0], 0.0)
            kw["terminated"] = None
            kw["truncated"] = None
        vals = per_step("value")
        if vals is not None:
            if (vals[1] & mask).any():
                raise DataFormatError(f"{source}: column 'value' has nulls; every step needs V(s_t) when values are given")
            kw["values"] = vals[0]
        out = per_episode("outcome")
        if out is not None:
            kw["outcomes"] = [float(v) if p else None for v, p in zip(out[0], out[1])]
        if comp_cols:
            vals_k, pres_k = zip(*(per_episode(c) for c in comp_cols))
            comp = np.stack(vals_k, axis=1).astype(np.float64)
            pres = np.stack(pres_k, axis=1)
            kw["components"] = np.where(pres, comp, None).tolist() if not pres.all() else comp
            kw["component_names"] = [c[len("outcome.") :] for c in comp_cols]
        for name, key in (("group_id", "group_ids"), ("task_id", "task_ids")):
            col = per_episode(name)
            if col is not None:
                if not col[1].all():
                    e = int(np.nonzero(~col[1])[0][0])
                    raise DataFormatError(f"{source}: episode {_name(uniq[order_of_first[e]])} has no {name!r}")
                kw[key] = col[0]
        for name, key in (("obs", "observations"), ("action", "actions"), ("next_obs", "next_observations")):
            if name in cols:
                kw[key] = _list_column(table, name, b, t, ep_s, step_s, order, source)
        known = {
            "episode_id", "step", "reward", "terminated", "truncated", "bootstrap_value", "discount", "value",
            "outcome", "group_id", "task_id", "obs", "action", "next_obs", *comp_cols,
        }
        extras = {}
        import difflib
        import warnings

        for name in sorted(cols - known):
            close = difflib.get_close_matches(name, sorted(known - {"obs", "action"}), n=1, cutoff=0.8)
            if close:
                from .errors import CreditlabWarning

                warnings.warn(
                    f"{source}: column {name!r} is not part of the episodes schema (did you mean {close[0]!r}?); "
                    "it is kept as an extra column only",
                    CreditlabWarning,
                    stacklevel=3,
                )
            if _column(table, name).dtype.kind in "iufb":
                extras[name] = per_step(name, fill=0.0, finite=False)[0]
        eps = uniq[order_of_first]
        episodes = Episodes.from_padded(rewards, mask, episode_ids=eps, extras=extras, **kw)
        return episodes.replace(row_index=row_index, reward_present=reward_present)

    def to_table(self, **step_columns: Any) -> Any:
        """One row per valid step as a pyarrow Table, plus extra ``[B, T]`` columns (e.g. advantages)."""
        import pyarrow as pa

        e = self.numpy()
        bi, ti = np.nonzero(e.mask)
        data: dict[str, Any] = {
            "episode_id": np.asarray(e.episode_ids)[bi] if e.episode_ids is not None else bi,
            "step": ti.astype(np.int64),
            "reward": e.rewards[bi, ti],
        }
        last = ti == (e.lengths[bi] - 1)
        data["terminated"] = np.where(last, e.terminated[bi], False)
        data["truncated"] = np.where(last, e.truncated[bi], False)
        if e.values is not None:
            data["value"] = e.values[bi, ti]
        if e.outcomes is not None:
            data["outcome"] = pa.array(
                [float(e.outcomes[b]) if e.outcome_present[b] else None for b in bi], type=pa.float64()
            )
        for k, name in enumerate(e.component_names):
            data[f"outcome.{name}"] = pa.array(
                [float(e.components[b, k]) if e.component_present[b, k] else None for b in bi], type=pa.float64()
            )
        if e.group_ids is not None:
            data["group_id"] = e.group_ids[bi]
        if e.task_ids is not None:
            data["task_id"] = e.task_ids[bi]
        for name, arr in step_columns.items():
            a = arr.detach().cpu().numpy() if _is_torch(arr) else np.asarray(arr)
            if a.shape[:2] != e.mask.shape:
                raise ShapeError(f"column {name!r} has shape {a.shape}; expected [B, T] = {e.mask.shape}")
            data[name] = a[bi, ti]
        for k, v in list(data.items()):
            if isinstance(v, np.ndarray) and v.dtype == object:
                data[k] = pa.array(v.tolist())
        return pa.table(data)


_FIELD_HINT = {
    "values": "add a 'value' column (V(s_t)) or pass values=",
    "group_ids": "add a 'group_id' column or pass group_ids=",
    "task_ids": "add a 'task_id' column or pass task_ids=",
    "components": "add 'outcome.<name>' columns or pass components=",
    "observations": "add an 'obs' column or pass observations=",
    "actions": "add an 'action' column or pass actions=",
}


# ---------------------------------------------------------------------- file I/O


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

    Other columns are kept in the source table and written back by the CLI unchanged.
    """
    table = read_table(path)
    return Episodes.from_table(table, source=str(path))


def read_table(path: str | os.PathLike) -> Any:
    import pyarrow as pa

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"episodes file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p)
    if suffix in (".jsonl", ".json", ".ndjson"):
        import pyarrow.json as pj

        try:
            return pj.read_json(p)
        except pa.ArrowInvalid as exc:
            raise DataFormatError(f"{p}: not valid JSON Lines (one JSON object per line): {exc}") from exc
    raise DataFormatError(f"{p}: unknown episodes file type {suffix!r}; expected .parquet or .jsonl")


def write_table(table: Any, path: str | os.PathLike) -> Path:
    """Write a pyarrow Table to Parquet or JSONL atomically (temp file + rename)."""
    import json

    import pyarrow.parquet as pq

    from .atomic import atomic_path, json_default

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".json", ".ndjson"):
        raise DataFormatError(f"{p}: unknown output type {suffix!r}; expected .parquet or .jsonl")
    with atomic_path(p) as tmp:
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in table.to_pylist():
                    fh.write(json.dumps(row, default=json_default) + "\n")
    return p


# ---------------------------------------------------------------------- helpers


def _name(x: Any) -> str:
    return repr(x.item() if hasattr(x, "item") else x)


def _numeric_column(table: Any, name: str, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values with 0 on nulls, null mask, raw values) of a numeric/bool column.

    Distinguishes null ("not applicable") from NaN (an error for reward-like columns).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    typ = col.type
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ)):
        raise DtypeError(f"{source}: column {name!r} must hold numbers (or null); got {typ}")
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_null(typ):
        vals = np.zeros(len(col))
    else:
        vals = pc.fill_null(col, False if pa.types.is_boolean(typ) else 0).to_numpy(zero_copy_only=False).astype(np.float64)
    return vals, nulls, vals


def _column(table: Any, name: str) -> np.ndarray:
    col = table.column(name)
    try:
        return col.to_numpy(zero_copy_only=False)
    except Exception:  # pragma: no cover - exotic arrow types
        return np.asarray(col.to_pylist(), dtype=object)


def _has_null(arr: np.ndarray) -> bool:
    if arr.dtype == object:
        return any(v is None for v in arr)
    return arr.dtype.kind == "f" and bool(np.isnan(arr).any())


def _list_column(table, name, b, t, ep_s, step_s, order, source) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        lens = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if col.null_count:
            raise DataFormatError(f"{source}: column {name!r} has null rows")
        if lens.size and (lens != lens[0]).any():
            raise ShapeError(f"{source}: column {name!r} holds lists of different lengths {sorted(set(lens.tolist()))[:5]}; expected one fixed size")
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        vals = flat.reshape(len(col), int(lens[0]) if lens.size else 0)
    else:
        vals = col.to_numpy(zero_copy_only=False)
        if vals.dtype == object:
            raise DtypeError(f"{source}: column {name!r} must be numbers or lists of numbers")
    out = np.zeros((b, t, *vals.shape[1:]), dtype=np.float64 if vals.dtype.kind == "f" else vals.dtype)
    out[ep_s, step_s] = vals[order]
    return out


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
        keys = list(names) if names is not None else sorted({k for row in x for k in row})
        rows = [[row.get(k) for k in keys] for row in x]
        v, p = _scores(rows, "components", (b, len(keys)))
        return v, p, tuple(keys)
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


def iter_chunks(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
