"""Tree-structured credit: advantages for rollouts that branch and share prefixes.

A *forest* holds the trees sampled for each prompt. Each node is one segment of generated text
(a span of tokens; for agents one thought-action[-observation] step); its parent is the segment
it continues (``None``: it starts from the prompt). Leaves end a response and carry its reward.
Training rows are root-to-leaf paths: a shared prefix appears once per leaf below it.

Notation: ``L(n)`` the leaves below node n (present rewards only), ``V(n) = mean_{l in L(n)} R_l``
(an unbiased estimate of the value of the state after n when the leaves below n were sampled
on-policy from it), ``V(root_g)`` the mean over all leaves of prompt group g, ``p(n)`` the parent
(the group's root for a first segment), siblings = nodes with the same parent.

Estimators (each a value per (row, node), the node's tokens in that row get it):

* :func:`tree_rloo` (creditlab; the unbiased preset): ``A(n) = V(n) - mean_{s sibling of n, s != n} V(s)``;
  a node without siblings inherits its parent's advantage (it shares the parent's leaves), a
  first segment alone in its group gets 0. The baseline never uses n's own leaves, so the policy
  gradient stays unbiased (Monte Carlo test in tests/llm/test_llm_tree.py). A forest of chains
  (no branching) gives RLOO on every token.
* :func:`treerl` (Hou et al. 2025, TreeRL, arXiv 2506.11902; THUDM/TreeRL): global plus local
  advantage ``[(V(n) - V(root)) + (V(n) - V(p(n)))] / sqrt(|L(n)|)`` from leave-one-out centred
  leaf rewards, with the code's switches as options.
* :func:`tree_grpo` (Ji et al. 2025, Tree-GRPO, arXiv 2509.21240; AMAP-ML/Tree-GRPO ``adv_estimator=tree``):
  per row, the GRPO z-score of its reward across the prompt's trees plus within its own tree.
* :func:`treerpo` (Yang et al. 2025, TreeRPO, arXiv 2506.05183): ``V(n)`` z-scored among siblings.
  Reference code not retrievable: restated from the paper.

Input: :class:`Forest` (``Forest.from_parents`` for node ids + parent ids + leaf rewards,
``Forest.from_paths`` for rows of node ids, as trainers hold them). Output:
:class:`TreeAdvantageOutput` with ``advantages[R, D]`` over rows (leaves) and depths (a padded
``[B, T]`` layout: broadcast to tokens with :func:`tree_token_layout` +
:func:`creditlab.broadcast_to_tokens`), per-node values and the total credit per node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from .._arrays import Backend, GroupIndex, as_scores, check_positive, check_real
from ..errors import (
    DataFormatError,
    DtypeError,
    EmptyBatchError,
    GroupError,
    MissingColumnError,
    RangeError,
    ShapeError,
)
from ..outputs import AdvantageOutput
from ..registry import register_method
from ..segments import group_stats
from .anchors import hash_ids

__all__ = ["Forest", "TreeAdvantageOutput", "tree_rloo", "treerl", "tree_grpo", "treerpo", "tree_token_layout"]


# ------------------------------------------------------------------------------------ the forest


@dataclass(frozen=True, eq=False)
class Forest:
    """A validated forest: M nodes, R leaves (one training row each), dense integer structure.

    Attributes:
        node_ids: the M original node ids (dense index i <-> ``node_ids[i]``).
        parent: int64[M] -- dense parent index, -1 for a first segment (child of the prompt).
        group: int64[M] -- dense prompt group of each node (``num_groups`` groups).
        tree: int64[M] -- dense tree of each node (``num_trees`` trees, nested in groups).
        depth: int64[M] -- 0 for first segments.
        leaves: int64[R] -- node index of each row's leaf (row order).
        rewards: float64[R] -- each row's leaf reward (0 where missing).
        present: bool[R] -- False where the leaf reward is missing (None / NaN).
        paths: int64[R, D] -- node index at each depth of row r's path (-1 past its leaf).
        path_mask: bool[R, D] -- valid entries of ``paths`` (a prefix of each row).
    """

    node_ids: list[Any]
    parent: np.ndarray
    group: np.ndarray
    tree: np.ndarray
    depth: np.ndarray
    leaves: np.ndarray
    rewards: np.ndarray
    present: np.ndarray
    paths: np.ndarray
    path_mask: np.ndarray
    num_groups: int
    num_trees: int
    rewards_backend: Backend

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def num_rows(self) -> int:
        return int(self.leaves.shape[0])

    # ------------------------------------------------------------------ construction

    @staticmethod
    def from_parents(
        node_ids: Sequence[Any],
        parent_ids: Sequence[Any],
        rewards: Sequence[Any] | Mapping[Any, Any] | Any,
        *,
        group_ids: Sequence[Any] | None = None,
        tree_ids: Sequence[Any] | None = None,
    ) -> Forest:
        """Build from node ids, parent ids and leaf rewards.

        Args:
            node_ids: [M] unique hashable ids.
            parent_ids: [M] -- the parent's id, or None for a segment that starts from the prompt.
            rewards: [M] aligned with ``node_ids`` (a number on every leaf, None on internal nodes;
                None on a leaf = missing reward), or a mapping ``{leaf id: reward}``.
            group_ids: [M] -- prompt of each node (default: one prompt for the whole forest). A
                node's group must equal its parent's.
            tree_ids: [M] -- tree of each node (default: each first segment starts a tree).
                Must equal the parent's.

        Rows are the leaves in the order they appear in ``node_ids``.

        Example (a prompt with one tree: a -> {b, c}; leaves b (1.0) and c (0.0)):
            >>> f = Forest.from_parents(["a", "b", "c"], [None, "a", "a"], [None, 1.0, 0.0])
            >>> f.num_rows, f.paths.tolist()
            (2, [[0, 1], [0, 2]])
        """
        ids = list(node_ids.tolist() if isinstance(node_ids, np.ndarray) else node_ids)
        m = len(ids)
        if m == 0:
            raise EmptyBatchError("node_ids is empty; expected at least one node")
        parents = list(parent_ids.tolist() if isinstance(parent_ids, np.ndarray) else parent_ids)
        if len(parents) != m:
            raise ShapeError(
                f"parent_ids has {len(parents)} entries but node_ids has {m}; expected one parent per node"
            )
        index: dict[Any, int] = {}
        for i, n in enumerate(ids):
            if n is None:
                raise DataFormatError(f"node_ids[{i}] is None; every node needs an id")
            try:
                if n in index:
                    raise DataFormatError(
                        f"node id {n!r} appears twice (node_ids[{index[n]}] and node_ids[{i}]); ids must be unique"
                    )
            except TypeError as exc:
                raise DtypeError(
                    f"node_ids[{i}] is not hashable ({type(n).__name__}); use strings or integers"
                ) from exc
            index[n] = i
        parent = np.empty(m, dtype=np.int64)
        for i, p in enumerate(parents):
            if p is None or (isinstance(p, float) and math.isnan(p)):
                parent[i] = -1
            else:
                j = index.get(p)
                if j is None:
                    raise DataFormatError(f"node {ids[i]!r} has parent {p!r}, which is not among node_ids")
                if j == i:
                    raise DataFormatError(f"node {ids[i]!r} is its own parent")
                parent[i] = j
        depth = _depths(parent, ids)
        has_child = np.zeros(m, dtype=bool)
        has_child[parent[parent >= 0]] = True
        leaf_nodes = np.flatnonzero(~has_child)
        values, present = _leaf_rewards(rewards, ids, index, has_child, leaf_nodes)
        group = _inherited(group_ids, "group_ids", parent, depth, ids, default=np.zeros(m, dtype=np.int64))
        roots = _root_of(parent, depth)
        tree = _inherited(tree_ids, "tree_ids", parent, depth, ids, default=roots)
        g_dense, num_groups = _dense(group)
        # trees are nested in groups: (group, tree) pairs
        t_dense, num_trees = _dense(g_dense * (int(tree.max()) + 1) + tree)
        paths, path_mask = _paths(leaf_nodes, parent, depth)
        backend = Backend.of(rewards if isinstance(rewards, torch.Tensor) else None)
        return Forest(
            ids,
            parent,
            g_dense,
            t_dense,
            depth,
            leaf_nodes,
            values,
            present,
            paths,
            path_mask,
            num_groups,
            num_trees,
            backend,
        )

    @staticmethod
    def from_paths(
        paths: Any,
        rewards: Any,
        *,
        mask: Any | None = None,
        group_ids: Any | None = None,
        tree_ids: Any | None = None,
    ) -> Forest:
        """Build from training rows: the node ids along each root-to-leaf path.

        Args:
            paths: R sequences of node ids (root first), or an ``[R, D]`` array with ``mask``.
                A node shared by several rows appears in each with the same id and the same
                ancestors; a row's last node must be a leaf (no other row continues it).
            rewards: float[R] -- each row's leaf reward (None / NaN = missing).
            mask: bool[R, D] -- prefix mask for array paths.
            group_ids: [R] -- prompt of each row (default: one prompt). Rows sharing a node must
                share the group.
            tree_ids: [R] -- tree of each row (default: the row's first node).

        Example (two rows sharing their first node "a"):
            >>> f = Forest.from_paths([["a", "b"], ["a", "c"]], [1.0, 0.0])
            >>> f.node_ids, f.parent.tolist()
            (['a', 'b', 'c'], [-1, 0, 0])
        """
        rows = _path_rows(paths, mask)
        r_count = len(rows)
        if r_count == 0:
            raise EmptyBatchError("paths is empty; expected at least one row")
        r_vals, r_present = as_scores(rewards, "rewards", nan_is_missing=True)
        if r_vals.shape != (r_count,):
            raise ShapeError(f"rewards has shape {tuple(r_vals.shape)}; expected ({r_count},), one per row of paths")
        g_rows = _row_ids(group_ids, "group_ids", r_count)
        t_rows = _row_ids(tree_ids, "tree_ids", r_count)
        index: dict[Any, int] = {}
        ids: list[Any] = []
        parent: list[int] = []
        group: list[Any] = []
        tree: list[Any] = []
        leaf_of_row = np.empty(r_count, dtype=np.int64)
        for r, row in enumerate(rows):
            if len(row) == 0:
                raise EmptyBatchError(f"paths[{r}] is empty; every row needs at least one node")
            prev = -1
            g = g_rows[r] if g_rows is not None else 0
            t = t_rows[r] if t_rows is not None else ("__root__", row[0])
            for d, n in enumerate(row):
                if n is None:
                    raise DataFormatError(f"paths[{r}][{d}] is None; every node needs an id")
                try:
                    j = index.get(n)
                except TypeError as exc:
                    raise DtypeError(f"paths[{r}][{d}] is not hashable ({type(n).__name__})") from exc
                if j is None:
                    j = len(ids)
                    index[n] = j
                    ids.append(n)
                    parent.append(prev)
                    group.append(g)
                    tree.append(t)
                else:
                    if parent[j] != prev:
                        was = "the prompt" if parent[j] < 0 else repr(ids[parent[j]])
                        now = "the prompt" if prev < 0 else repr(ids[prev])
                        raise DataFormatError(
                            f"node {n!r} follows {was} in one row and {now} in paths[{r}]; a node has one parent"
                        )
                    if group[j] != g:
                        raise GroupError(f"node {n!r} is in rows of different groups ({group[j]!r} and {g!r})")
                    if tree[j] != t:
                        raise GroupError(f"node {n!r} is in rows of different trees ({tree[j]!r} and {t!r})")
                prev = j
            leaf_of_row[r] = prev
        m = len(ids)
        par = np.asarray(parent, dtype=np.int64)
        has_child = np.zeros(m, dtype=bool)
        has_child[par[par >= 0]] = True
        if has_child[leaf_of_row].any():
            r = int(np.flatnonzero(has_child[leaf_of_row])[0])
            raise DataFormatError(
                f"paths[{r}] ends at node {ids[leaf_of_row[r]]!r}, which another row continues; rows must end at leaves"
            )
        if np.unique(leaf_of_row).shape[0] != r_count:
            vals, counts = np.unique(leaf_of_row, return_counts=True)
            raise DataFormatError(
                f"leaf {ids[int(vals[counts > 1][0])]!r} ends more than one row; each leaf is one row"
            )
        depth = _depths(par, ids)
        g_dense, num_groups = _dense_objects(group)
        t_dense, num_trees = _dense(g_dense * (len(set(map(repr, tree))) + 1) + _dense_objects(tree)[0])
        paths_arr, path_mask = _paths(leaf_of_row, par, depth)
        rv = r_vals.to(torch.float64).numpy().copy()
        rp = r_present.numpy().copy()
        return Forest(
            ids,
            par,
            g_dense,
            t_dense,
            depth,
            leaf_of_row,
            np.where(rp, rv, 0.0),
            rp,
            paths_arr,
            path_mask,
            num_groups,
            num_trees,
            Backend.of(rewards),
        )

    # ------------------------------------------------------------------ node statistics

    def node_values(self, leaf_values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(V[M], count[M])``: mean of the present leaf values below each node, and how many.

        ``leaf_values[R]`` defaults to the rewards. Nodes with no present leaf get V = 0.
        """
        vals = self.rewards if leaf_values is None else leaf_values
        w = self.path_mask & self.present[:, None]
        idx = self.paths[w]
        src = np.broadcast_to(vals[:, None], self.paths.shape)[w]
        total = np.bincount(idx, weights=src, minlength=self.num_nodes)
        count = np.bincount(idx, minlength=self.num_nodes).astype(np.int64)
        return np.where(count > 0, total / np.maximum(count, 1), 0.0), count

    def sibling_sets(self) -> np.ndarray:
        """int64[M] -- the sibling set of each node: its parent's index, or ``M + group`` for first segments."""
        return np.where(self.parent >= 0, self.parent, self.num_nodes + self.group)

    def rows_through(self) -> np.ndarray:
        """int64[M] -- number of rows (leaves, present or not) whose path contains each node."""
        return np.bincount(self.paths[self.path_mask], minlength=self.num_nodes).astype(np.int64)


def _depths(parent: np.ndarray, ids: list[Any]) -> np.ndarray:
    m = parent.shape[0]
    depth = np.where(parent < 0, 0, -1).astype(np.int64)
    for _ in range(m + 1):
        todo = depth < 0
        if not todo.any():
            return depth
        ready = todo & (depth[np.maximum(parent, 0)] >= 0) & (parent >= 0)
        if not ready.any():
            break
        depth[ready] = depth[parent[ready]] + 1
    i = int(np.flatnonzero(depth < 0)[0])
    raise DataFormatError(
        f"node {ids[i]!r} is on a cycle of parent links (it never reaches a segment that starts from the prompt)"
    )


def _root_of(parent: np.ndarray, depth: np.ndarray) -> np.ndarray:
    root = np.arange(parent.shape[0], dtype=np.int64)
    for _ in range(int(depth.max(initial=0))):
        up = parent[root]
        root = np.where(up >= 0, up, root)
    return root


def _inherited(
    ids: Any, name: str, parent: np.ndarray, depth: np.ndarray, node_ids: list[Any], default: np.ndarray
) -> np.ndarray:
    if ids is None:
        return default
    vals = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
    if len(vals) != parent.shape[0]:
        raise ShapeError(f"{name} has {len(vals)} entries; expected one per node ({parent.shape[0]})")
    codes, _ = hash_ids(vals)
    child = np.flatnonzero(parent >= 0)
    bad = child[codes[child] != codes[parent[child]]]
    if bad.size:
        i = int(bad[0])
        raise GroupError(
            f"node {node_ids[i]!r} has {name} {vals[i]!r} but its parent {node_ids[parent[i]]!r} has {vals[parent[i]]!r}"
        )
    return codes.astype(np.int64)


def _dense(x: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(x, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), int(uniq.shape[0])


def _dense_objects(x: list[Any]) -> tuple[np.ndarray, int]:
    codes, keys = hash_ids(list(x))
    return codes.astype(np.int64), len(keys)


def _paths(leaves: np.ndarray, parent: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = leaves.shape[0]
    d = int(depth[leaves].max(initial=0)) + 1
    paths = np.full((r, d), -1, dtype=np.int64)
    cur = leaves.copy()
    rows = np.arange(r)
    alive = np.ones(r, dtype=bool)
    while alive.any():
        paths[rows[alive], depth[cur[alive]]] = cur[alive]
        nxt = parent[cur]
        alive = alive & (nxt >= 0)
        cur = np.where(alive, nxt, cur)
    return paths, paths >= 0


def _leaf_rewards(rewards: Any, ids: list[Any], index: dict[Any, int], has_child: np.ndarray, leaf_nodes: np.ndarray):
    m = len(ids)
    if isinstance(rewards, Mapping):
        vals: list[Any] = [None] * m
        for k, v in rewards.items():
            j = index.get(k)
            if j is None:
                raise DataFormatError(f"rewards has an entry for {k!r}, which is not among node_ids")
            vals[j] = v
    else:
        vals = list(rewards.tolist() if isinstance(rewards, (np.ndarray, torch.Tensor)) else rewards)
        if len(vals) != m:
            raise ShapeError(f"rewards has {len(vals)} entries; expected one per node ({m}; None on internal nodes)")
    clean = []
    for i, v in enumerate(vals):
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        if has_child[i] and not missing:
            raise DataFormatError(
                f"node {ids[i]!r} has children and a reward {v!r}; rewards belong to leaves (the ends of responses), "
                "pass None for internal nodes"
            )
        clean.append(None if missing else v)
    r, p = as_scores([clean[i] for i in leaf_nodes.tolist()], "rewards (of the leaves)")
    return r.to(torch.float64).numpy().copy(), p.numpy().copy()


def _path_rows(paths: Any, mask: Any | None) -> list[list[Any]]:
    if isinstance(paths, torch.Tensor):
        paths = paths.detach().cpu().numpy()
    if isinstance(paths, np.ndarray) and paths.ndim == 2:
        if mask is None:
            return [list(row) for row in paths.tolist()]
        m = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask).astype(bool)
        if m.shape != paths.shape:
            raise ShapeError(f"mask has shape {m.shape} but paths has {paths.shape}")
        return [list(np.asarray(row)[mr].tolist()) for row, mr in zip(paths, m)]
    if mask is not None:
        raise ShapeError("mask is only used with an [R, D] array of paths; pass ragged rows without it")
    out = []
    for i, row in enumerate(paths):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise DtypeError(f"paths[{i}] must be a sequence of node ids (root first); got {type(row).__name__}")
        out.append(list(row.tolist() if isinstance(row, np.ndarray) else row))
    return out


def _row_ids(ids: Any, name: str, n: int) -> list[Any] | None:
    if ids is None:
        return None
    vals = list(ids.tolist() if isinstance(ids, (np.ndarray, torch.Tensor)) else ids)
    if len(vals) != n:
        raise ShapeError(f"{name} has {len(vals)} entries; expected one per row ({n})")
    return vals


# ------------------------------------------------------------------------------------ outputs


class TreeAdvantageOutput(NamedTuple):
    """Result of a tree estimator.

    Attributes:
        advantages: float[R, D] -- value of each (row, depth) node: row r's tokens of the node at
            depth d get ``advantages[r, d]``; 0 past the row's leaf.
        mask: bool[R, D] -- valid (row, depth) entries.
        node_advantages: float[M] -- the per-node value where the method defines one (TreeRL,
            TreeRPO, tree_rloo; NaN for Tree-GRPO, whose value is per row).
        node_credit: float[M] -- total credit on each node's tokens when every row is trained
            (the sum over the rows through it): what a trainer that deduplicates shared prefixes
            should put on the node's tokens to take the same step.
        paths: int64[R, D] -- node index at each (row, depth), -1 past the leaf.
        metrics: diagnostics.
    """

    advantages: Any
    mask: Any
    node_advantages: Any
    node_credit: Any
    paths: np.ndarray
    metrics: dict[str, float]


def _output(
    forest: Forest, per_node: np.ndarray | None, per_row_node: np.ndarray, extra: dict[str, float]
) -> TreeAdvantageOutput:
    adv = np.where(forest.path_mask, per_row_node, 0.0)
    credit = np.bincount(forest.paths[forest.path_mask], weights=adv[forest.path_mask], minlength=forest.num_nodes)
    valid = adv[forest.path_mask]
    children = np.bincount(forest.parent[forest.parent >= 0], minlength=forest.num_nodes)
    internal = children[children > 0]
    metrics = {
        "num_rows": float(forest.num_rows),
        "num_nodes": float(forest.num_nodes),
        "num_missing": float((~forest.present).sum()),
        "tree/num_groups": float(forest.num_groups),
        "tree/num_trees": float(forest.num_trees),
        "tree/depth_mean": float(forest.path_mask.sum(1).mean()),
        "tree/branching_mean": float(internal.mean()) if internal.size else 0.0,
        "advantages/mean": float(valid.mean()) if valid.size else 0.0,
        "advantages/std": float(valid.std()) if valid.size else 0.0,
        **extra,
    }
    be = forest.rewards_backend
    node = np.full(forest.num_nodes, np.nan) if per_node is None else per_node
    return TreeAdvantageOutput(
        be.out(torch.from_numpy(np.ascontiguousarray(adv))),
        be.out(torch.from_numpy(forest.path_mask.copy())),
        be.out(torch.from_numpy(np.ascontiguousarray(node, dtype=np.float64))),
        be.out(torch.from_numpy(credit.astype(np.float64))),
        forest.paths,
        metrics,
    )


def _on_paths(forest: Forest, node_values: np.ndarray) -> np.ndarray:
    return node_values[np.maximum(forest.paths, 0)]


def _group_leaf_stats(forest: Forest):
    """GroupStats of the row rewards by prompt group (float64, exact zeros in constant groups)."""
    g = forest.group[forest.leaves]
    return group_stats(
        torch.from_numpy(forest.rewards),
        torch.from_numpy(forest.present),
        GroupIndex(torch.from_numpy(g), forest.num_groups),
    ), g


def _sibling_stats(forest: Forest, v: np.ndarray, count: np.ndarray):
    """GroupStats of the node values V over sibling sets (nodes with no present leaf left out)."""
    sets = forest.sibling_sets()
    slots = forest.num_nodes + forest.num_groups
    st = group_stats(torch.from_numpy(v), torch.from_numpy(count > 0), GroupIndex(torch.from_numpy(sets), slots))
    return st, sets


# ------------------------------------------------------------------------------------ estimators


def tree_rloo(forest: Forest) -> TreeAdvantageOutput:
    """Sibling leave-one-out tree advantages (unbiased): ``A(n) = V(n) - mean_{s != n} V(s)`` over n's siblings.

    ``V(s)`` is the mean present leaf reward below sibling s. With k siblings carrying leaves
    (n included), ``A(n) = k / (k - 1) * (V(n) - mean_sib V)``. A node that is its parent's only
    child with leaves has the same leaves as its parent and inherits the parent's advantage; a
    first segment alone in its prompt group has no comparison and gets 0. Nodes with no present
    leaf (every reward below missing) get 0.

    Unbiasedness: ``V(n)`` estimates ``Q(p(n), y_n)`` (leaves sampled on-policy after n) and the
    baseline is built from n's siblings only, sampled from the same state independently of
    ``y_n``; an inherited baseline comes from the parent's siblings, also independent of
    everything below the parent. So ``E[grad log pi(y_n) A(n)] = grad`` of the expected reward
    (checked by Monte Carlo in tests/llm/test_llm_tree.py, where ``V(n) - V(p(n))`` is off by
    ``(k - 1) / k``). No std scaling (it would change the gradient's scale per group).

    Reductions: a forest of chains (every tree a single path) gives every node the RLOO advantage
    of its leaf within the prompt group.

    Example (prompt -> a -> {b: 1, c: 0}, and a second tree prompt -> d: 0.5):
        >>> f = Forest.from_parents(["a", "b", "c", "d"], [None, "a", "a", None], [None, 1.0, 0.0, 0.5])
        >>> out = tree_rloo(f)
        >>> out.node_advantages.tolist()   # a vs d: 0.5 - 0.5; b vs c: +-1
        [0.0, 1.0, -1.0, 0.0]
    """
    v, count = forest.node_values()
    st, sets = _sibling_stats(forest, v, count)
    k = st.count.numpy()[sets].astype(np.float64)
    own = np.where(k >= 2, st.centered.numpy() * k / np.maximum(k - 1, 1), np.nan)  # NaN: no sibling to compare
    own = np.where(count > 0, own, 0.0)
    adv = own.copy()
    order = np.argsort(forest.depth, kind="stable")
    inherit = np.isnan(adv)
    # walk down by depth: an only child takes its parent's (already final) advantage
    for d in range(int(forest.depth.max(initial=0)) + 1):
        at = order[forest.depth[order] == d]
        take = at[inherit[at]]
        if take.size:
            par = forest.parent[take]
            adv[take] = np.where(par >= 0, adv[np.maximum(par, 0)], 0.0)
    n_single = int(((k < 2) & (count > 0) & (forest.parent < 0)).sum())
    extra = {
        "tree/num_inherited": float((inherit & (forest.parent >= 0)).sum()),
        "tree/num_alone_at_root": float(n_single),
    }
    return _output(forest, adv, _on_paths(forest, adv), extra)


def treerl(
    forest: Forest,
    *,
    global_weight: float = 1.0,
    local_weight: float = 1.0,
    leaf_centering: Literal["loo", "mean", "none"] = "loo",
    leaf_scale: Literal["sqrt", "none"] = "sqrt",
) -> TreeAdvantageOutput:
    """TreeRL (Hou et al. 2025, arXiv 2506.11902; THUDM/TreeRL ``tree_node.py`` / ``parallel_mcts.py``).

    Leaf rewards are first centred within the prompt group: ``"loo"`` (the code's
    ``leaf_normalize``) ``R~_l = R_l - mean_{l' != l} R_l'``; ``"mean"``: ``R_l - mean R``;
    ``"none"``. With ``V~`` the mean centred leaf value below a node,

        ``A(n) = [global_weight (V~(n) - V~(root)) + local_weight (V~(n) - V~(p(n)))] / s(n)``

    with ``s(n) = sqrt(|L(n)|)`` (``leaf_scale="sqrt"``, the paper and the published script's
    ``--use_weighted_value --weighted_value_style sqrt``; a node's tokens appear in ``|L(n)|``
    rows) or 1. ``V~(root)`` is the mean over the prompt's leaves (0 after centring). The defaults
    are the paper's form. Options map to the code's switches: ``local_weight=0`` is
    ``use_value_only``; ``global_weight=0`` the "pure advantage" default; both 1 is
    ``use_state_value_reward``.

    Not an unbiased policy-gradient estimator in general: ``V~(p(n))`` contains n's own leaves
    (the gradient shrinks by ``(k - 1) / k`` with k siblings), and ``1 / sqrt(|L(n)|)`` reweights
    nodes. Use :func:`tree_rloo` for the unbiased form.

    Groups with fewer than 2 present leaves get 0 (the code asserts >= 2 leaves). A forest of
    chains with ``local_weight=0, leaf_scale="none"`` gives RLOO on every node.

    Example (one tree a -> {b: 1, c: 0}; LOO leaves +1, -1; V~(a) = 0):
        >>> f = Forest.from_parents(["a", "b", "c"], [None, "a", "a"], [None, 1.0, 0.0])
        >>> treerl(f).node_advantages.tolist()   # b: (1 + (1 - 0)) / 1; a: 0
        [0.0, 2.0, -2.0]
    """
    global_weight = check_real(global_weight, "global_weight")
    local_weight = check_real(local_weight, "local_weight")
    if leaf_centering not in ("loo", "mean", "none"):
        raise RangeError(f"leaf_centering must be 'loo', 'mean' or 'none'; got {leaf_centering!r}")
    if leaf_scale not in ("sqrt", "none"):
        raise RangeError(f"leaf_scale must be 'sqrt' or 'none'; got {leaf_scale!r}")
    st, g_rows = _group_leaf_stats(forest)
    n_g = st.count.numpy()
    if leaf_centering == "loo":
        k = n_g[g_rows].astype(np.float64)
        leaf = st.centered.numpy() * k / np.maximum(k - 1, 1)
    elif leaf_centering == "mean":
        leaf = st.centered.numpy()
    else:
        leaf = forest.rewards.copy()
    v, count = forest.node_values(leaf)
    total = np.bincount(g_rows[forest.present], weights=leaf[forest.present], minlength=forest.num_groups)
    v_root = np.where(n_g > 0, total / np.maximum(n_g, 1), 0.0)
    v_parent = np.where(forest.parent >= 0, v[np.maximum(forest.parent, 0)], v_root[forest.group])
    adv = global_weight * (v - v_root[forest.group]) + local_weight * (v - v_parent)
    if leaf_scale == "sqrt":
        adv = adv / np.sqrt(np.maximum(count, 1))
    live = (count > 0) & (n_g[forest.group] >= 2)
    adv = np.where(live, adv, 0.0)
    extra = {
        "groups/num_singleton": float((n_g == 1).sum()),
        "groups/num_zero_std": float((st.constant.numpy() & (n_g > 1)).sum()),
    }
    return _output(forest, adv, _on_paths(forest, adv), extra)


def treerpo(
    forest: Forest,
    *,
    std_scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> TreeAdvantageOutput:
    """TreeRPO (Yang et al. 2025, arXiv 2506.05183): node values z-scored among siblings.

    ``A(n) = (V(n) - mean_sib V) / (std_sib V + eps)`` over the nodes sharing n's parent (first
    segments of a prompt are siblings), with ``V(n)`` the mean leaf reward below n (the paper's
    intermediate-node reward: the fraction of correct completions below it). ``std_scale="none"``
    centres only. Restated from the paper (the reference code could not be retrieved).

    Siblings without a comparison (an only child) get 0, as zero-spread sibling sets do. A
    forest of chains gives the GRPO advantage on each first segment and 0 below.

    Example (a -> {b: 1, c: 0}; d alone at the top with 0.5; a's V = 0.5 = d's):
        >>> f = Forest.from_parents(["a", "b", "c", "d"], [None, "a", "a", None], [None, 1.0, 0.0, 0.5])
        >>> [round(x, 4) for x in treerpo(f, eps=0.0).node_advantages.tolist()]
        [0.0, 0.7071, -0.7071, 0.0]
    """
    if std_scale not in ("group", "none"):
        raise RangeError(f"std_scale must be 'group' or 'none'; got {std_scale!r}")
    eps = check_positive(eps, "eps", allow_zero=True)
    v, count = forest.node_values()
    st, sets = _sibling_stats(forest, v, count)
    adv = st.centered.numpy().copy()
    if std_scale == "group":
        sd = st.std.numpy()[sets] + eps
        adv = adv / np.where(sd > 0, sd, 1.0)
    adv = np.where(count > 0, adv, 0.0)
    extra = {"tree/num_sibling_sets_degenerate": float((st.constant.numpy() & (st.count.numpy() > 0)).sum())}
    return _output(forest, adv, _on_paths(forest, adv), extra)


def tree_grpo(
    forest: Forest,
    *,
    across: bool = True,
    within: bool = True,
    sequential: bool = False,
    eps: float = 1e-6,
) -> TreeAdvantageOutput:
    """Tree-GRPO (Ji et al. 2025, arXiv 2509.21240; AMAP-ML/Tree-GRPO ``ray_trainer_ts.py``, ``adv_estimator=tree``).

    Per row (leaf), with ``Z(s; key)`` the GRPO z-score (unbiased std, ``+ eps``) of the row
    rewards grouped by key: ``a = Z(s; prompt) + Z(s; tree)`` (``across`` and ``within``; the code's
    ``tree``), ``Z(s; tree)`` alone (``across=False``; ``tree_inner``), or
    ``Z(Z(s; prompt); tree)`` (``sequential=True``; ``tree_2norm``). Every node of the row gets a.
    Step-level credit is implicit: a shared node collects the sum over the rows below it
    (``node_credit``).

    A group of one (a tree with a single sampled leaf, a prompt with one row) gives 0 for that
    term (the code: mean 0, std 1, i.e. the raw reward); a zero-spread group gives 0. A forest of
    chains gives GRPO on every node.

    Example (one prompt, trees T1 = {1, 0}, T2 = {1}; across: mean 2/3, std sqrt(1/3) gives
    0.5774, -1.1547, 0.5774; within T1: +-0.7071; T2 has one leaf: 0):
        >>> f = Forest.from_paths([["a", "b"], ["a", "c"], ["d"]], [1.0, 0.0, 1.0])
        >>> [round(x, 4) for x in tree_grpo(f, eps=0.0).advantages[:, 0].tolist()]
        [1.2845, -1.8618, 0.5774]
    """
    eps = check_positive(eps, "eps", allow_zero=True)
    if not (across or within):
        raise RangeError("tree_grpo needs across=True, within=True or both")
    r = torch.from_numpy(forest.rewards)
    p = torch.from_numpy(forest.present)
    g_rows = GroupIndex(torch.from_numpy(forest.group[forest.leaves]), forest.num_groups)
    t_rows = GroupIndex(torch.from_numpy(forest.tree[forest.leaves]), forest.num_trees)

    def z(x: torch.Tensor, groups: GroupIndex) -> torch.Tensor:
        st = group_stats(x, p, groups)
        sd = st.std.index_select(0, groups.index) + eps
        return st.centered / torch.where(sd > 0, sd, torch.ones_like(sd))

    if sequential:
        a = z(z(r, g_rows) if across else r, t_rows) if within else z(r, g_rows)
    else:
        a = torch.zeros_like(r)
        if across:
            a = a + z(r, g_rows)
        if within:
            a = a + z(r, t_rows)
    rows = torch.where(p, a, torch.zeros_like(a)).numpy()
    per = np.where(forest.path_mask, rows[:, None], 0.0)
    tree_sizes = np.bincount(forest.tree[forest.leaves][forest.present], minlength=forest.num_trees)
    extra = {"tree/num_single_leaf_trees": float((tree_sizes == 1).sum())}
    return _output(forest, None, per, extra)


# ------------------------------------------------------------------------------------ tokens


def tree_token_layout(
    forest: Forest, token_counts: Any, policy_masks: Sequence[Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The token layout of the training rows: each row is its nodes' token spans, root first.

    Args:
        forest: the forest.
        token_counts: int[M] -- tokens in each node's span (in ``forest.node_ids`` order).
        policy_masks: optional M sequences of 0/1 of those lengths: 0 on tokens the policy did not
            generate inside a node (an agent step's observation).

    Returns:
        ``(turn_ids int64[R, L], response_mask bool[R, L])``: the depth (column of
        ``TreeAdvantageOutput.advantages``) of each token, and 1 on policy tokens; feed both to
        :func:`creditlab.broadcast_to_tokens`.

    Example (a -> {b, c}; spans of 2, 1, 3 tokens):
        >>> f = Forest.from_parents(["a", "b", "c"], [None, "a", "a"], [None, 1.0, 0.0])
        >>> ids, rm = tree_token_layout(f, [2, 1, 3])
        >>> ids.tolist(), rm.sum(1).tolist()
        ([[0, 0, 1, -1, -1], [0, 0, 1, 1, 1]], [3, 5])
    """
    counts = np.asarray(token_counts)
    if (
        counts.shape != (forest.num_nodes,)
        or counts.dtype.kind not in "iu"
        and not (counts.dtype.kind == "f" and np.all(counts == np.round(counts)))
    ):
        raise ShapeError(
            f"token_counts must be {forest.num_nodes} non-negative integers (one per node); got shape {counts.shape}"
        )
    counts = counts.astype(np.int64)
    if (counts < 0).any():
        raise RangeError(f"token_counts[{int(np.flatnonzero(counts < 0)[0])}] is negative")
    if policy_masks is not None:
        if len(policy_masks) != forest.num_nodes:
            raise ShapeError(
                f"policy_masks has {len(policy_masks)} entries; expected one per node ({forest.num_nodes})"
            )
        pm = [np.asarray(x, dtype=bool).reshape(-1) for x in policy_masks]
        for i, x in enumerate(pm):
            if x.shape[0] != counts[i]:
                raise ShapeError(
                    f"policy_masks[{i}] has {x.shape[0]} entries but node {forest.node_ids[i]!r} has {counts[i]} tokens"
                )
    else:
        pm = None
    row_len = np.where(forest.path_mask, counts[np.maximum(forest.paths, 0)], 0).sum(1)
    width = int(row_len.max(initial=0))
    turn_ids = np.full((forest.num_rows, width), -1, dtype=np.int64)
    rm = np.zeros((forest.num_rows, width), dtype=bool)
    for r in range(forest.num_rows):
        pos = 0
        for d in range(forest.paths.shape[1]):
            n = forest.paths[r, d]
            if n < 0:
                break
            c = counts[n]
            turn_ids[r, pos : pos + c] = d
            rm[r, pos : pos + c] = True if pm is None else pm[n]
            pos += c
    return turn_ids, rm


# ------------------------------------------------------------------------------------ registry adapters
#
# An Episodes batch holds tree rows as usual rows: one row per leaf (root-to-leaf path), one step
# per node along it, the node ids in a per-step extras column ``node_ids`` ([B, T], ints or
# strings), the leaf reward as the outcome (else the sum of the per-step rewards), the prompt as
# group_ids and optionally a per-step ``tree_ids`` column.


def _episodes_forest(ep) -> Forest:
    if "node_ids" not in ep.extras:
        raise MissingColumnError("tree methods need the node id of every step in episodes.extras['node_ids'] ([B, T])")
    ids = np.asarray(
        ep.extras["node_ids"].detach().cpu().numpy()
        if isinstance(ep.extras["node_ids"], torch.Tensor)
        else ep.extras["node_ids"]
    )
    mask = np.asarray(ep.mask.detach().cpu().numpy() if isinstance(ep.mask, torch.Tensor) else ep.mask).astype(bool)
    if ep.outcomes is not None:
        o = np.asarray(
            ep.outcomes.detach().cpu().numpy() if isinstance(ep.outcomes, torch.Tensor) else ep.outcomes,
            dtype=np.float64,
        )
        pres = np.asarray(
            ep.outcome_present.detach().cpu().numpy()
            if isinstance(ep.outcome_present, torch.Tensor)
            else ep.outcome_present
        )
        rewards: list[float | None] | np.ndarray = [float(x) if q else None for x, q in zip(o.tolist(), pres.tolist())]
    else:
        r = ep.returns()
        rewards = np.asarray(r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else r, dtype=np.float64)
    g = (
        None
        if ep.group_ids is None
        else np.asarray(ep.group_ids.detach().cpu().numpy() if isinstance(ep.group_ids, torch.Tensor) else ep.group_ids)
    )
    t = None
    if "tree_ids" in ep.extras:
        t = np.asarray(ep.extras["tree_ids"])[:, 0]
    rows = [list(row[m]) for row, m in zip(ids, mask)]
    return Forest.from_paths(rows, rewards, group_ids=g, tree_ids=t)


def _steps(ep, out: TreeAdvantageOutput) -> AdvantageOutput:
    adv = np.asarray(out.advantages)
    b, t = np.asarray(ep.mask).shape if not isinstance(ep.mask, torch.Tensor) else tuple(ep.mask.shape)
    full = np.zeros((b, t))
    full[:, : adv.shape[1]] = adv
    if ep.is_torch:
        return AdvantageOutput(torch.from_numpy(full).to(ep.rewards.device, ep.rewards.dtype), None, out.metrics)
    return AdvantageOutput(full.astype(np.asarray(ep.rewards).dtype), None, out.metrics)


_TREE_NEEDS = ("outcomes|rewards", "extras.node_ids", "group_ids?")


@register_method(
    "tree_rloo",
    family="llm",
    summary="Tree advantages: node value minus the leave-one-out mean of its siblings (unbiased)",
    needs=_TREE_NEEDS,
    kind="advantages",
    source="creditlab; cf. TreeRL arXiv 2506.11902, TreeRPO arXiv 2506.05183",
)
def _run_tree_rloo(episodes) -> AdvantageOutput:
    return _steps(episodes, tree_rloo(_episodes_forest(episodes)))


@register_method(
    "treerl",
    family="llm",
    summary="TreeRL: global + local tree advantage from LOO-centred leaves, / sqrt(#leaves)",
    needs=_TREE_NEEDS,
    kind="advantages",
    source="Hou et al. 2025, arXiv 2506.11902 (THUDM/TreeRL)",
)
def _run_treerl(
    episodes,
    *,
    global_weight: float = 1.0,
    local_weight: float = 1.0,
    leaf_centering: Literal["loo", "mean", "none"] = "loo",
    leaf_scale: Literal["sqrt", "none"] = "sqrt",
) -> AdvantageOutput:
    out = treerl(
        _episodes_forest(episodes),
        global_weight=global_weight,
        local_weight=local_weight,
        leaf_centering=leaf_centering,
        leaf_scale=leaf_scale,
    )
    return _steps(episodes, out)


@register_method(
    "tree_grpo",
    family="llm",
    summary="Tree-GRPO: row z-score across the prompt's trees plus within its tree",
    needs=_TREE_NEEDS,
    kind="advantages",
    source="Ji et al. 2025, arXiv 2509.21240 (AMAP-ML/Tree-GRPO)",
)
def _run_tree_grpo(
    episodes, *, across: bool = True, within: bool = True, sequential: bool = False, eps: float = 1e-6
) -> AdvantageOutput:
    return _steps(
        episodes, tree_grpo(_episodes_forest(episodes), across=across, within=within, sequential=sequential, eps=eps)
    )


@register_method(
    "treerpo",
    family="llm",
    summary="TreeRPO: node value (mean leaf reward below) z-scored among its siblings",
    needs=_TREE_NEEDS,
    kind="advantages",
    source="Yang et al. 2025, arXiv 2506.05183",
)
def _run_treerpo(episodes, *, std_scale: Literal["group", "none"] = "group", eps: float = 1e-6) -> AdvantageOutput:
    return _steps(episodes, treerpo(_episodes_forest(episodes), std_scale=std_scale, eps=eps))
