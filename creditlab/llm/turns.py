"""``TurnBatch``: multi-turn rollouts in the public padded layout, with the map to tokens.

================  ===================  ========================================================
field             shape / dtype        meaning
================  ===================  ========================================================
rewards           float[B, T]          reward received after turn t (0 is a reward; padding 0)
mask              bool[B, T]           1 on real turns (a prefix of each row)
group_ids         int64[B]             trajectories of the same task / prompt
traj_ids          [B]                  trajectory id (default 0..B-1)
outcomes          float[B] | None      episode outcome; ``outcome_present`` False = None
components        float[B, K] | None   named outcome components (``component_names``)
anchors           list[B] | None       hashable anchor-state key per turn (GiGPO), or int[B, T]
features          float[B, T, D]|None  any vector per turn (SPA's progress model input)
turn_ids          int64[B, L] | None   turn of each token (-1 or anything off the mask)
response_mask     bool[B, L] | None    1 on policy tokens; 0 on prompt, tool/observation, pad
row_index         int64[B, T] | None   source row of each turn (``from_rows``), -1 on padding
================  ===================  ========================================================

Any per-turn result ``[B, T]`` goes to tokens with :meth:`TurnBatch.to_tokens` (every policy token
of the turn) or :meth:`TurnBatch.to_last_tokens` (the turn's last policy token), and back to
one-row-per-turn trainers (verl-agent) with :meth:`TurnBatch.to_rows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._arrays import as_mask
from ..advantage.tokens import broadcast_to_tokens
from ..episodes import Episodes, pad
from ..errors import DataFormatError, DtypeError, EmptyBatchError, ShapeError
from .tokens import place_on_last_token, turn_ids_from_response_mask

__all__ = ["TurnBatch"]


@dataclass(frozen=True, eq=False)
class TurnBatch:
    """B multi-turn trajectories padded to T turns (NumPy arrays). Build with a ``from_*`` method."""

    rewards: np.ndarray
    mask: np.ndarray
    group_ids: np.ndarray
    traj_ids: np.ndarray
    outcomes: np.ndarray | None = None
    outcome_present: np.ndarray | None = None
    components: np.ndarray | None = None
    component_names: tuple[str, ...] = ()
    anchors: Any = None
    features: np.ndarray | None = None
    turn_ids: np.ndarray | None = None
    response_mask: np.ndarray | None = None
    row_index: np.ndarray | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction

    @staticmethod
    def from_padded(
        rewards: Any,
        mask: Any | None = None,
        *,
        group_ids: Any | None = None,
        traj_ids: Any | None = None,
        outcomes: Any | None = None,
        components: Any | None = None,
        component_names: Sequence[str] | None = None,
        anchors: Any | None = None,
        features: Any | None = None,
        turn_ids: Any | None = None,
        response_mask: Any | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> TurnBatch:
        """Build from padded ``[B, T]`` arrays (NumPy, torch or lists; stored as NumPy).

        ``turn_ids`` may be omitted when ``response_mask`` is given: each run of policy tokens is
        then one turn (:func:`~creditlab.llm.turn_ids_from_response_mask`).
        """
        r = _np(rewards, np.float64)
        if r.ndim != 2:
            raise ShapeError(f"rewards must be [B, T]; got shape {r.shape}")
        b, t = r.shape
        if b == 0:
            raise EmptyBatchError("rewards holds no trajectory; expected B >= 1")
        m = as_mask(_np(mask, bool) if mask is not None else None, "mask", (b, t), device=torch.device("cpu")).numpy()
        if not np.all(np.isfinite(r[m])):
            raise DtypeError("rewards holds NaN or inf on a valid turn; use 0 for a turn without reward")
        r = np.where(m, r, 0.0)
        g = np.zeros(b, dtype=np.int64) if group_ids is None else _ids(group_ids, "group_ids", b)
        tr = np.arange(b) if traj_ids is None else np.asarray(traj_ids)
        if tr.shape != (b,):
            raise ShapeError(f"traj_ids has shape {tr.shape}; expected ({b},)")
        o = op = None
        if outcomes is not None:
            o, op = _scores(outcomes, b)
        c = None
        names: tuple[str, ...] = ()
        if components is not None:
            c = _np(components, np.float64)
            if c.ndim != 2 or c.shape[0] != b:
                raise ShapeError(f"components has shape {c.shape}; expected [{b}, K]")
            names = tuple(component_names) if component_names is not None else tuple(str(i) for i in range(c.shape[1]))
            if len(names) != c.shape[1]:
                raise ShapeError(f"component_names has {len(names)} names but components has {c.shape[1]} columns")
        if anchors is not None:
            _check_anchors(anchors, m.sum(1), b, t)
        f = None
        if features is not None:
            f = _np(features, np.float64)
            if f.ndim == 2:
                f = f[:, :, None]
            if f.ndim != 3 or f.shape[:2] != (b, t):
                raise ShapeError(f"features has shape {f.shape}; expected [{b}, {t}, D]")
        tid = rm = None
        if response_mask is not None:
            rm = _np(response_mask, bool).astype(bool)
            if rm.ndim != 2 or rm.shape[0] != b:
                raise ShapeError(f"response_mask has shape {rm.shape}; expected [{b}, L]")
            if turn_ids is None:
                tid, n = turn_ids_from_response_mask(rm)
                lengths = m.sum(1)
                if np.any(n != lengths):
                    i = int(np.nonzero(n != lengths)[0][0])
                    raise DataFormatError(
                        f"row {i} has {int(n[i])} runs of policy tokens in response_mask but {int(lengths[i])} turns in "
                        "mask; pass turn_ids explicitly when one turn spans several runs"
                    )
            else:
                tid = _np(turn_ids, np.int64)
                if tid.shape != rm.shape:
                    raise ShapeError(f"turn_ids has shape {tid.shape} but response_mask has {rm.shape}")
            # validate once: every policy token points at a valid turn
            broadcast_to_tokens(np.zeros((b, t)), tid, rm, step_mask=m)
        elif turn_ids is not None:
            raise ShapeError("turn_ids needs a response_mask (1 on policy tokens)")
        return TurnBatch(
            rewards=r,
            mask=m,
            group_ids=g,
            traj_ids=tr,
            outcomes=o,
            outcome_present=op,
            components=c,
            component_names=names,
            anchors=anchors,
            features=f,
            turn_ids=tid,
            response_mask=rm,
            extras=dict(extras or {}),
        )

    @staticmethod
    def from_trajectories(trajectories: Sequence[Mapping[str, Any]]) -> TurnBatch:
        """Build from one mapping per trajectory.

        Keys: ``rewards`` (one per turn, required), and optionally ``group_id``, ``traj_id``,
        ``outcome`` (None allowed), ``components`` (``{name: value}``), ``anchors`` (one per
        turn), ``features`` (``[T_b, D]``).

        Example:
            >>> tb = TurnBatch.from_trajectories([
            ...     {"rewards": [0.0, 1.0], "group_id": 0, "anchors": ["start", "door"]},
            ...     {"rewards": [0.0], "group_id": 0, "anchors": ["start"], "outcome": None},
            ... ])
            >>> tb.mask.tolist(), tb.lengths.tolist()
            ([[True, True], [True, False]], [2, 1])
        """
        if len(trajectories) == 0:
            raise EmptyBatchError("trajectories is empty; expected at least one trajectory")
        for i, tr in enumerate(trajectories):
            if "rewards" not in tr:
                raise DataFormatError(f"trajectory {i} has no 'rewards' (one reward per turn; 0 is a reward)")
            if len(tr["rewards"]) == 0:
                raise EmptyBatchError(f"trajectory {i} has no turn")
        r, m = pad([list(tr["rewards"]) for tr in trajectories])
        get = lambda k: [tr.get(k) for tr in trajectories]  # noqa: E731
        has = lambda k: any(k in tr for tr in trajectories)  # noqa: E731
        comps = names = None
        if has("components"):
            names = sorted({k for tr in trajectories for k in (tr.get("components") or {})})
            comps = [[(tr.get("components") or {}).get(k) for k in names] for tr in trajectories]
        feats = None
        if has("features"):
            rows = get("features")
            if any(x is None for x in rows):
                raise DataFormatError("either every trajectory has 'features' or none does")
            feats, _ = pad([np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in rows])
        return TurnBatch.from_padded(
            r,
            m,
            group_ids=get("group_id") if has("group_id") else None,
            traj_ids=np.array(get("traj_id"), dtype=object) if has("traj_id") else None,
            outcomes=get("outcome") if has("outcome") else None,
            components=_none_to_nan(comps) if comps is not None else None,
            component_names=names,
            anchors=[list(a) for a in get("anchors")] if has("anchors") else None,
            features=feats,
        )

    @staticmethod
    def from_rows(
        group_ids: Any,
        traj_ids: Any,
        rewards: Any,
        *,
        turn_index: Any | None = None,
        anchors: Sequence[Any] | None = None,
        outcomes: Any | None = None,
    ) -> TurnBatch:
        """Build from one row per turn (verl-agent's layout: each training sample is one step).

        Rows of the same trajectory are ordered by ``turn_index`` (default: their order in the
        input). ``outcomes`` per row must agree within a trajectory. The result keeps
        ``row_index[B, T]`` so per-turn results go back with :meth:`to_rows`. The grouping is one
        stable sort, O(N log N) in C, no per-row search.

        Example:
            >>> tb = TurnBatch.from_rows(["q1", "q1", "q1"], ["a", "b", "a"], [0.0, 1.0, 2.0])
            >>> tb.rewards.tolist(), tb.row_index.tolist()
            ([[0.0, 2.0], [1.0, 0.0]], [[0, 2], [1, -1]])
        """
        traj = np.asarray(traj_ids)
        n = traj.shape[0]
        if n == 0:
            raise EmptyBatchError("no rows")
        r = _np(rewards, np.float64)
        gid = np.asarray(group_ids)
        if r.shape != (n,) or gid.shape != (n,):
            raise ShapeError(f"group_ids, traj_ids and rewards must all be [N]; got {gid.shape}, {traj.shape}, {r.shape}")
        # a trajectory id is unique within its group: key on (group, traj)
        _, gkey = np.unique(gid.astype(str) if gid.dtype.kind in "USO" else gid, return_inverse=True)
        _, tkey = np.unique(traj.astype(str) if traj.dtype.kind in "USO" else traj, return_inverse=True)
        _, ep = np.unique(gkey.reshape(-1) * (tkey.max() + 1) + tkey.reshape(-1), return_inverse=True)
        ep = ep.reshape(-1)
        order_key = np.arange(n) if turn_index is None else np.asarray(turn_index, dtype=np.int64)
        if order_key.shape != (n,):
            raise ShapeError(f"turn_index has shape {order_key.shape}; expected ({n},)")
        order = np.lexsort((order_key, ep))
        b = int(ep.max()) + 1
        lengths = np.bincount(ep, minlength=b)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        ep_sorted = ep[order]
        pos = np.arange(n) - starts[ep_sorted]
        if turn_index is not None:
            ti = order_key[order]
            dup = (np.diff(ti) == 0) & (np.diff(ep_sorted) == 0)
            if dup.any():
                raise DataFormatError("two rows of one trajectory have the same turn_index")
        t = int(lengths.max())
        row_index = np.full((b, t), -1, dtype=np.int64)
        row_index[ep_sorted, pos] = order
        padded = np.zeros((b, t))
        padded[ep_sorted, pos] = r[order]
        mask = row_index >= 0
        first = row_index[:, 0]
        o = None
        if outcomes is not None:
            o_rows, present = _scores(outcomes, n)
            if not np.all(present):
                raise DataFormatError("row outcomes cannot be None; drop the column or give every row the episode outcome")
            o = o_rows[first]
            if np.any(o_rows != o[ep]):
                raise DataFormatError("rows of one trajectory have different outcomes")
        anc = None
        if anchors is not None:
            if len(anchors) != n:
                raise ShapeError(f"anchors has {len(anchors)} rows; expected {n}")
            anc = [[anchors[j] for j in row_index[i, : lengths[i]]] for i in range(b)]
        out = TurnBatch.from_padded(
            padded,
            mask,
            group_ids=gkey.reshape(-1)[first],
            traj_ids=traj[first],
            outcomes=o,
            anchors=anc,
        )
        return dataclasses.replace(out, row_index=row_index)

    # ------------------------------------------------------------------ views

    @property
    def num_trajectories(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """int64[B] -- turns per trajectory."""
        return self.mask.sum(axis=1).astype(np.int64)

    def episode_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-trajectory score and presence: the outcome where given, else the sum of turn rewards."""
        if self.outcomes is not None:
            return self.outcomes, self.outcome_present
        return self.rewards.sum(axis=1), np.ones(self.num_trajectories, dtype=bool)

    def to_tokens(self, turn_values: Any) -> Any:
        """float[B, T] per-turn values -> float[B, L] on every policy token of the turn (0 elsewhere)."""
        self._need_tokens()
        return broadcast_to_tokens(turn_values, self.turn_ids, self.response_mask, step_mask=self.mask)

    def to_last_tokens(self, turn_values: Any) -> Any:
        """float[B, T] per-turn values -> float[B, L] on the last policy token of each turn."""
        self._need_tokens()
        return place_on_last_token(turn_values, self.turn_ids, self.response_mask, step_mask=self.mask)

    def to_rows(self, turn_values: Any) -> np.ndarray:
        """float[B, T] per-turn values -> float[N] in the order of the rows given to :meth:`from_rows`."""
        if self.row_index is None:
            raise DataFormatError("to_rows needs a TurnBatch built with from_rows")
        v = turn_values.detach().cpu().numpy() if isinstance(turn_values, torch.Tensor) else np.asarray(turn_values)
        if v.shape != self.mask.shape:
            raise ShapeError(f"turn_values has shape {v.shape}; expected {self.mask.shape}")
        out = np.empty(int(self.mask.sum()), dtype=v.dtype)
        out[self.row_index[self.mask]] = v[self.mask]
        return out

    def to_episodes(self) -> Episodes:
        """The same batch as a foundation :class:`~creditlab.Episodes` (turns as steps).

        Anchors go to ``extras["anchors"]`` (an object array of per-trajectory lists), features
        to ``observations``; registry methods can then run on it.
        """
        extras = dict(self.extras)
        if self.anchors is not None:
            arr = np.empty(self.num_trajectories, dtype=object)
            for i in range(self.num_trajectories):
                arr[i] = list(self.anchors[i])[: self.lengths[i]]
            extras["anchors"] = arr
        outcomes = None
        if self.outcomes is not None:
            outcomes = [float(v) if p else None for v, p in zip(self.outcomes, self.outcome_present)]
        comps = None
        if self.components is not None:
            comps = [{k: (None if np.isnan(v) else float(v)) for k, v in zip(self.component_names, row)} for row in self.components]
        return Episodes.from_padded(
            self.rewards,
            self.mask,
            outcomes=outcomes,
            components=comps,
            component_names=self.component_names or None,
            group_ids=self.group_ids,
            observations=self.features,
            extras=extras,
        )

    def _need_tokens(self) -> None:
        if self.response_mask is None:
            raise DataFormatError("this TurnBatch has no token layout; build it with response_mask (and turn_ids)")


# ---------------------------------------------------------------------- helpers


def _np(x: Any, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _ids(x: Any, name: str, b: int) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.shape != (b,):
        raise ShapeError(f"{name} has shape {arr.shape}; expected ({b},)")
    if arr.dtype.kind in "USO":
        _, inv = np.unique(arr.astype(str), return_inverse=True)
        return inv.reshape(-1).astype(np.int64)
    if arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
        raise DtypeError(f"{name} must hold integer or string ids; got fractional floats")
    return arr.astype(np.int64)


def _scores(x: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    vals = list(x) if not isinstance(x, np.ndarray) or x.dtype == object else None
    if vals is not None:
        present = np.array([v is not None for v in vals], dtype=bool)
        arr = np.array([0.0 if v is None else float(v) for v in vals], dtype=np.float64)
    else:
        arr = np.asarray(x, dtype=np.float64)
        present = np.ones(arr.shape, dtype=bool)
    if arr.shape != (n,):
        raise ShapeError(f"outcomes has shape {arr.shape}; expected ({n},)")
    if not np.all(np.isfinite(arr[present])):
        raise DtypeError("outcomes holds NaN or inf; use None for a missing outcome")
    return arr, present


def _none_to_nan(rows):
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)


def _check_anchors(anchors: Any, lengths: np.ndarray, b: int, t: int) -> None:
    if isinstance(anchors, torch.Tensor) or (isinstance(anchors, np.ndarray) and anchors.dtype.kind != "O"):
        if tuple(anchors.shape) != (b, t):
            raise ShapeError(f"anchors has shape {tuple(anchors.shape)}; expected ({b}, {t})")
        return
    if len(anchors) != b:
        raise ShapeError(f"anchors has {len(anchors)} rows; expected {b}")
    for i, row in enumerate(anchors):
        if len(row) < lengths[i]:
            raise ShapeError(f"anchors[{i}] has {len(row)} keys but trajectory {i} has {int(lengths[i])} turns")
