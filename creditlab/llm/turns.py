"""``TurnBatch``: multi-turn rollouts as an :class:`~creditlab.Episodes` (turns as steps) plus the map to tokens.

A ``TurnBatch`` is a thin view: the turns live in ``episodes`` (an :class:`~creditlab.Episodes`,
which validates every array once), and the view adds the token layout and the turn-level names.

================  ===================  ========================================================
field             shape / dtype        meaning
================  ===================  ========================================================
rewards           float[B, T]          reward received after turn t (0 is a reward; padding 0)
mask              bool[B, T]           1 on real turns (a prefix of each row)
group_ids         int64[B]             trajectories of the same task / prompt (strings factorized)
traj_ids          [B]                  trajectory id (default 0..B-1): ``episodes.episode_ids``
outcomes          float[B] | None      episode outcome; ``outcome_present`` False = None
components        float[B, K] | None   named outcome components (``component_names``); NaN = None
anchors           [B] | None           hashable anchor-state keys per turn (GiGPO), or int[B, T]:
                                       ``episodes.extras["anchors"]``
features          float[B, T, D]|None  any vector per turn (SPA's progress model input):
                                       ``episodes.observations``
turn_ids          int64[B, L] | None   turn of each token (-1 or anything off the mask)
response_mask     bool[B, L] | None    1 on policy tokens; 0 on prompt, tool/observation, pad
row_index         int64[B, T] | None   source row of each turn (``from_rows``), -1 on padding
================  ===================  ========================================================

Any per-turn result ``[B, T]`` goes to tokens with :meth:`TurnBatch.to_tokens` (every policy token
of the turn) or :meth:`TurnBatch.to_last_tokens` (the turn's last policy token), and back to
one-row-per-turn trainers (verl-agent) with :meth:`TurnBatch.to_rows`. Registry methods run on
:meth:`TurnBatch.to_episodes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._arrays import as_scores
from ..advantage.tokens import broadcast_to_tokens
from ..episodes import Episodes, pad
from ..errors import DataFormatError, EmptyBatchError, ShapeError
from .tokens import place_on_last_token, turn_ids_from_response_mask

__all__ = ["TurnBatch"]


def _view(name: str, doc: str) -> property:
    """A read-only attribute of the view: ``episodes.<name>``."""
    return property(lambda self: getattr(self.episodes, name), doc=doc)


@dataclass(frozen=True, eq=False)
class TurnBatch:
    """B multi-turn trajectories padded to T turns (NumPy arrays). Build with a ``from_*`` method.

    Attributes:
        episodes: the turns as an :class:`~creditlab.Episodes` (NumPy; rewards float64).
        turn_ids: int64[B, L] | None -- turn of each token.
        response_mask: bool[B, L] | None -- 1 on policy tokens.
    """

    episodes: Episodes
    turn_ids: np.ndarray | None = None
    response_mask: np.ndarray | None = None

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

        The turn arrays are validated by :meth:`Episodes.from_padded`; ``components`` may hold NaN
        (or None) for a missing component. ``turn_ids`` may be omitted when ``response_mask`` is
        given: each run of policy tokens is then one turn
        (:func:`~creditlab.llm.turn_ids_from_response_mask`).
        """
        r = _numpy(rewards)
        b = r.shape[0] if r.ndim >= 1 else 0
        if components is not None:
            c = _numpy(components)
            if c.dtype.kind == "f" and np.isnan(c).any():  # NaN is a missing component here
                with_none = c.astype(object)
                with_none[np.isnan(c)] = None
                components = with_none.tolist()
        f = None
        if features is not None:
            f = _numpy(features).astype(np.float64)
            if f.ndim == 2:
                f = f[:, :, None]
            if f.ndim != 3:
                raise ShapeError(f"features has shape {f.shape}; expected [B, T, D]")
        ep = Episodes.from_padded(
            r,
            _numpy(mask) if mask is not None else None,
            group_ids=np.zeros(b, dtype=np.int64) if group_ids is None else group_ids,
            episode_ids=None if traj_ids is None else np.asarray(traj_ids),
            outcomes=outcomes,
            components=components,
            component_names=component_names,
            observations=f,
            extras=extras,
        )
        g = np.asarray(ep.group_ids)  # NumPy: from_padded got NumPy arrays
        if g.dtype.kind in "US":  # string ids -> dense integers, the layout's int64[B]
            g = np.unique(g, return_inverse=True)[1].reshape(-1).astype(np.int64)
        ex = dict(ep.extras)
        if anchors is not None:
            ex["anchors"] = _anchors(anchors, ep.lengths, ep.max_steps)
        ep = ep.replace(rewards=np.asarray(ep.rewards).astype(np.float64), group_ids=g, extras=ex)
        tid = rm = None
        if response_mask is not None:
            rm = _numpy(response_mask).astype(bool)
            if rm.ndim != 2 or rm.shape[0] != ep.num_episodes:
                raise ShapeError(f"response_mask has shape {rm.shape}; expected [{ep.num_episodes}, L]")
            if turn_ids is None:
                tid, n = turn_ids_from_response_mask(rm)
                lengths = ep.lengths
                if np.any(n != lengths):
                    i = int(np.nonzero(n != lengths)[0][0])
                    raise DataFormatError(
                        f"row {i} has {int(n[i])} runs of policy tokens in response_mask but {int(lengths[i])} turns in "
                        "mask; pass turn_ids explicitly when one turn spans several runs"
                    )
            else:
                tid = _numpy(turn_ids).astype(np.int64)
                if tid.shape != rm.shape:
                    raise ShapeError(f"turn_ids has shape {tid.shape} but response_mask has {rm.shape}")
            # validate once: every policy token points at a valid turn
            broadcast_to_tokens(np.zeros(ep.mask.shape), tid, rm, step_mask=ep.mask)
        elif turn_ids is not None:
            raise ShapeError("turn_ids needs a response_mask (1 on policy tokens)")
        return TurnBatch(ep, tid, rm)

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

        def get(k: str) -> list[Any]:
            return [tr.get(k) for tr in trajectories]

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
            components=comps,
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
        r = _numpy(rewards).astype(np.float64)
        gid = np.asarray(group_ids)
        if r.shape != (n,) or gid.shape != (n,):
            raise ShapeError(
                f"group_ids, traj_ids and rewards must all be [N]; got {gid.shape}, {traj.shape}, {r.shape}"
            )
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
            o_rows, present = (t.numpy() for t in as_scores(outcomes, "outcomes", device=torch.device("cpu")))
            if o_rows.shape != (n,):
                raise ShapeError(f"outcomes has shape {o_rows.shape}; expected ({n},)")
            if not np.all(present):
                raise DataFormatError(
                    "row outcomes cannot be None; drop the column or give every row the episode outcome"
                )
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
        return TurnBatch(out.episodes.replace(row_index=row_index), out.turn_ids, out.response_mask)

    # ------------------------------------------------------------------ views

    rewards = _view("rewards", "float64[B, T] -- reward received after turn t (0 on padding).")
    mask = _view("mask", "bool[B, T] -- real turns (a prefix of each row).")
    group_ids = _view("group_ids", "int64[B] -- group of each trajectory.")
    traj_ids = _view("episode_ids", "[B] -- trajectory ids (``episodes.episode_ids``).")
    outcomes = _view("outcomes", "float[B] | None -- episode outcomes (0 where ``outcome_present`` is False).")
    outcome_present = _view("outcome_present", "bool[B] | None -- False where the outcome is None.")
    component_names = _view("component_names", "tuple[str, ...] -- names of the components' columns.")
    features = _view("observations", "float[B, T, D] | None -- per-turn vectors (``episodes.observations``).")
    row_index = _view("row_index", "int64[B, T] | None -- source row of each turn (``from_rows``), -1 on padding.")
    num_trajectories = _view("num_episodes", "int -- B.")
    lengths = _view("lengths", "int64[B] -- turns per trajectory.")

    @property
    def components(self) -> np.ndarray | None:
        """float[B, K] | None -- named outcome components, NaN where a component is None."""
        ep = self.episodes
        if ep.components is None or ep.component_present is None:
            return None
        return np.where(ep.component_present, ep.components, np.nan)

    @property
    def anchors(self) -> Any:
        """[B] object array of per-turn anchor keys (or int[B, T]) | None."""
        return self.episodes.extras.get("anchors")

    @property
    def extras(self) -> Mapping[str, Any]:
        """Per-trajectory extras given to :meth:`from_padded` (anchors are :attr:`anchors`)."""
        return {k: v for k, v in self.episodes.extras.items() if k != "anchors"}

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
        v = _numpy(turn_values)
        if v.shape != self.mask.shape:
            raise ShapeError(f"turn_values has shape {v.shape}; expected {self.mask.shape}")
        out = np.empty(int(self.mask.sum()), dtype=v.dtype)
        out[self.row_index[self.mask]] = v[self.mask]
        return out

    def to_episodes(self) -> Episodes:
        """The batch as an :class:`~creditlab.Episodes` (turns as steps), for registry methods.

        Anchors are ``extras["anchors"]`` (per-trajectory key lists), features ``observations``.
        """
        return self.episodes

    def _need_tokens(self) -> None:
        if self.response_mask is None:
            raise DataFormatError("this TurnBatch has no token layout; build it with response_mask (and turn_ids)")


# ---------------------------------------------------------------------- helpers


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _anchors(anchors: Any, lengths: np.ndarray, t: int) -> np.ndarray:
    """Anchor keys as an extras array: int[B, T] as given, or a [B] object array of per-turn lists.

    Checked against the turn layout (one key per turn); lists are cut to the trajectory's turns.
    """
    b = len(lengths)
    if isinstance(anchors, torch.Tensor) or (isinstance(anchors, np.ndarray) and anchors.dtype.kind != "O"):
        arr = _numpy(anchors)
        if arr.shape != (b, t):
            raise ShapeError(f"anchors has shape {arr.shape}; expected ({b}, {t})")
        return arr
    if len(anchors) != b:
        raise ShapeError(f"anchors has {len(anchors)} rows; expected {b}")
    out = np.empty(b, dtype=object)
    for i, row in enumerate(anchors):
        if len(row) < lengths[i]:
            raise ShapeError(f"anchors[{i}] has {len(row)} keys but trajectory {i} has {int(lengths[i])} turns")
        out[i] = list(row)[: int(lengths[i])]
    return out
