"""Anchor-state keys: hash per-turn state keys into integer ids in one O(N) pass.

GiGPO groups the turns of an episode group whose environment state (the *anchor*) is the same.
Anchors come in three forms:

* ``int[B, T]`` (NumPy or torch): already integer keys (e.g. a state hash); factorized with one
  vectorized ``unique``.
* ``str[B, T]`` NumPy arrays: factorized with ``np.unique`` (C speed).
* a sequence of B sequences of hashable keys, one per valid turn (strings, tuples, ints, NumPy
  arrays, lists, dicts): one dict lookup per turn. Unhashable keys (arrays, lists, dicts) are
  turned into a canonical hashable form first, compared by value (:func:`canonical_key`: an int
  array and a float array with equal entries are one anchor, as in verl-agent).

``None`` means "this turn has no comparable state": it is never grouped with another turn
(verl-agent raises a TypeError on a None anchor).
No path compares a turn with other turns one by one; the cost is one hash (or one sort) per turn.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DtypeError, RangeError, ShapeError

__all__ = ["anchor_ids", "canonical_key", "hash_ids"]


def canonical_key(x: Any) -> Any:
    """A hashable stand-in for ``x`` that compares by value: arrays and lists become (nested)
    tuples of Python scalars, dicts sorted tuples.

    Value semantics, as for scalars (``1``, ``1.0`` and ``np.int64(1)`` are one key in a dict):
    ``np.array([1, 2])``, ``np.array([1.0, 2.0])`` and ``[1, 2]`` are the same anchor. Shape is kept
    through the nesting (``[[1, 2]]`` differs from ``[1, 2]``). An array holding NaN never equals
    another anchor (NaN != NaN), so such a turn is grouped with no other.

    Example:
        >>> import numpy as np
        >>> canonical_key(np.array([1, 2])) == canonical_key(np.array([1.0, 2.0])) == canonical_key([1, 2])
        True
        >>> canonical_key({"b": [1, 2], "a": 0})
        (('a', 0), ('b', (1, 2)))
    """
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return canonical_key(x.tolist())
        return _nested_tuple(x.tolist())
    if isinstance(x, torch.Tensor):
        return canonical_key(x.detach().cpu().numpy())
    if isinstance(x, (list, tuple)):
        return tuple(canonical_key(v) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, canonical_key(v)) for k, v in x.items()))
    if isinstance(x, (set, frozenset)):
        return frozenset(canonical_key(v) for v in x)
    try:
        hash(x)
    except TypeError as exc:
        raise DtypeError(f"anchor keys must be hashable (or arrays, lists, dicts); got {type(x).__name__}") from exc
    return x


def _nested_tuple(x: Any) -> Any:
    return tuple(_nested_tuple(v) for v in x) if isinstance(x, list) else x


def anchor_ids(
    anchors: Any,
    lengths: np.ndarray,
    num_steps: int,
) -> tuple[np.ndarray, list[Any] | None]:
    """Factorize the anchors of every valid turn into dense integer ids.

    Args:
        anchors: ``int[B, T]`` / ``str[B, T]`` array, or B sequences of hashable keys with
            ``lengths[b]`` (or ``T``) entries each; entries past an episode's length are ignored.
        lengths: int[B] -- valid turns per episode.
        num_steps: T, the padded number of turns.

    Returns:
        ``(ids, keys)``: ``ids`` int64[N] for the N valid turns in row-major order (episode 0's
        turns first); ``keys[i]`` is the anchor of id i. Turns whose anchor is None get ids of
        their own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    b = lengths.shape[0]
    if isinstance(anchors, torch.Tensor) or (isinstance(anchors, np.ndarray) and anchors.dtype != object):
        return _array_ids(anchors, lengths, num_steps)
    if isinstance(anchors, (str, bytes)) or not isinstance(anchors, Sequence | np.ndarray):
        raise DtypeError(
            f"anchors must be an int[B, T] array or a sequence of B sequences of hashable keys; got {type(anchors).__name__}"
        )
    if len(anchors) != b:
        raise ShapeError(
            f"anchors has {len(anchors)} rows but the batch has {b} episodes; expected one row per episode"
        )
    if isinstance(anchors, np.ndarray) and anchors.ndim == 2:
        if anchors.shape[1] < int(lengths.max(initial=0)):
            raise ShapeError(f"anchors has shape {anchors.shape}; expected [{b}, >= {int(lengths.max())}]")
        flat = anchors[np.arange(anchors.shape[1])[None, :] < lengths[:, None]].tolist()
        return hash_ids(flat)
    rows = []
    for i in range(b):
        row = anchors[i]
        n = int(lengths[i])
        try:
            size = len(row)
        except TypeError as exc:
            raise DtypeError(f"anchors[{i}] must be a sequence of per-turn keys; got {type(row).__name__}") from exc
        if size < n:
            raise ShapeError(f"anchors[{i}] has {size} keys but episode {i} has {n} turns; expected one key per turn")
        rows.append(row if size == n else row[:n])
    flat = list(itertools.chain.from_iterable(rows))
    return hash_ids(flat)


def hash_ids(keys: list[Any]) -> tuple[np.ndarray, list[Any]]:
    """Dense ids for a flat list of hashable keys: one dict lookup per key, O(N).

    None never matches anything (each None gets an id of its own); unhashable keys (arrays,
    lists, dicts) are replaced by :func:`canonical_key`. Returns ``(ids int64[N], keys_by_id)``.
    """
    table: dict[Any, int] = {}
    try:
        ids = np.fromiter((table.setdefault(k, len(table)) for k in keys), dtype=np.int64, count=len(keys))
    except TypeError:  # an unhashable key somewhere: canonicalize everything
        table = {}
        ids = np.fromiter(
            (table.setdefault(canonical_key(k), len(table)) for k in keys), dtype=np.int64, count=len(keys)
        )
    by_id = list(table)
    none_id = table.get(None)
    if none_id is not None:
        where = np.flatnonzero(ids == none_id)
        ids[where] = len(by_id) + np.arange(len(where))
        by_id.extend([None] * len(where))
    return ids, by_id


def _array_ids(anchors: Any, lengths: np.ndarray, num_steps: int) -> tuple[np.ndarray, list[Any] | None]:
    arr = anchors.detach().cpu().numpy() if isinstance(anchors, torch.Tensor) else np.asarray(anchors)
    b = lengths.shape[0]
    if arr.ndim != 2 or arr.shape[0] != b or arr.shape[1] < int(lengths.max(initial=0)):
        raise ShapeError(
            f"anchors has shape {arr.shape}; expected [{b}, {num_steps}] (one key per turn, padding ignored)"
        )
    valid = np.arange(arr.shape[1])[None, :] < lengths[:, None]
    vals = arr[valid]
    if vals.dtype.kind in "US":
        uniq, inv = np.unique(vals, return_inverse=True)
        return inv.reshape(-1).astype(np.int64), list(uniq.tolist())
    if vals.dtype.kind == "f":
        if not np.all(np.isfinite(vals)):
            raise DtypeError(
                "anchors holds NaN or inf; anchor keys must be finite (or use None in a list for 'no anchor')"
            )
    elif vals.dtype.kind not in "iub":
        raise DtypeError(f"anchors must hold integer or string keys; got dtype {vals.dtype}")
    uniq, inv = np.unique(vals, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), list(uniq.tolist())


def similarity_clusters(
    pair_group: np.ndarray,
    pair_key: list[Any],
    threshold: float,
    similarity_fn: Callable[[Any, Any], float] | None = None,
) -> np.ndarray:
    """Cluster distinct anchors within each episode group by similarity (leader clustering).

    Each distinct (group, anchor) pair joins the first earlier cluster of its group whose leader
    has ``similarity >= threshold``, else it leads a new cluster (verl-agent's rule, applied to
    distinct anchors only, so the cost is quadratic in the number of *distinct* anchors of a
    group, not in the number of turns). The default similarity is ``difflib`` ratio on strings.

    Returns:
        int64[P] -- cluster id of each pair.
    """
    if not 0.0 < threshold <= 1.0:
        raise RangeError(f"similarity must lie in (0, 1]; got {threshold!r}")
    if similarity_fn is None:
        similar = lambda a, b: _text_similar(a, b, threshold)
    else:
        similar = lambda a, b: similarity_fn(a, b) >= threshold
    out = np.empty(len(pair_key), dtype=np.int64)
    order = np.argsort(pair_group, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_group[order])) + 1
    next_id = 0
    for chunk in np.split(order, bounds):
        leaders: list[tuple[Any, int]] = []
        for p in chunk.tolist():
            key = pair_key[p]
            hit = -1
            if key is not None:
                for leader, cid in leaders:
                    if similar(key, leader):
                        hit = cid
                        break
            if hit < 0:
                hit = next_id
                next_id += 1
                if key is not None:
                    leaders.append((key, hit))
            out[p] = hit
    return out


def _text_similar(a: Any, b: Any, threshold: float) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        raise DtypeError(
            "similarity grouping compares text anchors; got "
            f"{type(a).__name__} and {type(b).__name__} (pass similarity_fn for other kinds)"
        )
    m = difflib.SequenceMatcher(None, a, b)  # same matcher settings as verl-agent
    # Cheap upper bounds first: most dissimilar pairs are rejected without the full comparison.
    return m.real_quick_ratio() >= threshold and m.quick_ratio() >= threshold and m.ratio() >= threshold
