"""TRL adapter for tree rollouts: an advantage function for :class:`~creditlab.integrations.trl.CreditlabGRPOTrainer`.

A tree ``rollout_func`` branches: the samples of one prompt are the root-to-leaf paths of the
trees it grew, and each sample's turns (runs of model tokens in ``completion_mask * env_mask``)
are the nodes along its path. It returns, next to TRL's keys, one list of node ids per sample
(root first; samples sharing a prefix share its ids) in a column, ``tree_path`` by default.
:class:`TreeAdvantage` turns TRL's reward (the leaf's) into per-turn tree advantages, which the
trainer puts on each turn's model tokens.

Nodes that split one model turn at a token position (TreeRL's entropy-guided branching inside a
single completion) are not separate turns for the trainer; they need per-token advantages from
the advantage function (see docs/llm.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..llm.tree import Forest, tree_grpo, tree_rloo, treerl, treerpo
from ..outputs import AdvantageOutput
from .trl import RolloutBatch, outcome_from_rewards

__all__ = ["TreeAdvantage"]

_METHODS = {"tree_rloo": tree_rloo, "treerl": treerl, "tree_grpo": tree_grpo, "treerpo": treerpo}


class TreeAdvantage:
    """Advantage function: tree advantages per turn, one node per turn.

    Args:
        method: "tree_rloo" (default, unbiased), "treerl", "tree_grpo" or "treerpo"
            (:mod:`creditlab.llm.tree`).
        path_column: per-sample column with the node ids along the sample's path (one per turn).
        tree_column: optional per-sample tree id (Tree-GRPO's ``tree_uid``); default: the path's
            first node.
        **method_kwargs: keyword arguments of the method (e.g. ``leaf_scale="none"`` for treerl).

    Groups are TRL's (the ``num_generations`` samples of a prompt); a sample whose every reward
    function returned None has a missing leaf reward.
    """

    def __init__(
        self,
        method: str = "tree_rloo",
        *,
        path_column: str = "tree_path",
        tree_column: str | None = None,
        **method_kwargs: Any,
    ):
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}; got {method!r}")
        self.method = method
        self.path_column = path_column
        self.tree_column = tree_column
        self.method_kwargs = method_kwargs
        self.__name__ = method

    def __call__(self, batch: RolloutBatch) -> AdvantageOutput:
        if self.path_column not in batch.columns:
            raise KeyError(f"tree path column {self.path_column!r} not found; have {sorted(batch.columns)}")
        paths = [list(p) for p in batch.columns[self.path_column]]
        turns = batch.num_turns.cpu().numpy()
        for i, p in enumerate(paths):
            if len(p) != int(turns[i]):
                raise ValueError(
                    f"sample {i} has {len(p)} nodes in {self.path_column!r} but {int(turns[i])} turns of model tokens; "
                    "each node of the path must be one turn"
                )
        outcome, present = outcome_from_rewards(batch)
        rewards = [float(o) if p else None for o, p in zip(outcome.tolist(), present.tolist())]
        trees = None if self.tree_column is None else batch.columns[self.tree_column]
        forest = Forest.from_paths(paths, rewards, group_ids=batch.group_ids.cpu().numpy(), tree_ids=trees)
        out = _METHODS[self.method](forest, **self.method_kwargs)
        n, t = batch.turn_mask.shape
        adv = np.zeros((n, t))
        a = np.asarray(out.advantages)
        adv[:, : a.shape[1]] = a[:, :t]
        return AdvantageOutput(adv, None, out.metrics)
