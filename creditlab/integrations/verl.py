"""verl adapter: creditlab estimators with verl's advantage-estimator signature.

verl calls a registered estimator as ``fn(token_level_rewards=..., response_mask=..., config=...,
index=..., **optional) -> (advantages, returns)``, all tensors ``[bs, L]`` over response tokens;
``response_mask`` is 0 on tool/observation tokens and padding; ``index`` is a NumPy array of
per-prompt ``uid``s (any group sizes). The functions here follow that contract:

* :func:`compute_turn_rloo_advantage` -- multi-turn rows (one row per trajectory): each run of
  response tokens is a turn; a turn's reward is the sum of ``token_level_rewards`` from its first
  token up to the next turn (so a reward verl put on an observation token belongs to the turn
  that caused it); advantages are :func:`creditlab.llm.turn_rloo`'s, broadcast to the turn's
  tokens. Unbiased when trajectories take different numbers of turns.
* :func:`compute_gigpo_advantage` -- verl-agent's layout (one row per turn, ``anchor_obs``,
  ``traj_index``, ``step_rewards`` passed as extra keyword arguments, as verl-agent's trainer
  does): :func:`creditlab.llm.gigpo_rows`, O(N) grouping.
* :func:`compute_tree_advantage` -- tree rollouts (one row per root-to-leaf path, ``tree_path``
  node ids per row): :mod:`creditlab.llm.tree` (tree_rloo, TreeRL, Tree-GRPO, TreeRPO).

Importing this module registers them with verl as ``creditlab_turn_rloo``, ``creditlab_gigpo`` and ``creditlab_tree``
when verl is importable (``algorithm.adv_estimator=creditlab_turn_rloo``); verl is never required.
Tested against verl 0.9.1's ``register_adv_est`` / ``get_adv_estimator_fn`` when it is installed,
and on verl-shaped synthetic tensors always (tests/integrations/test_verl.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._arrays import factorize_ids
from ..errors import MissingColumnError, RangeError
from ..llm._token_kernels import turn_broadcast, turn_sums
from ..llm.gigpo import gigpo_rows
from ..llm.turn_returns import turn_rloo

__all__ = [
    "ESTIMATORS",
    "compute_gigpo_advantage",
    "compute_tree_advantage",
    "compute_turn_rloo_advantage",
    "register_with_verl",
]


def _cfg(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    getter = getattr(config, "get", None)
    if callable(getter):
        try:
            return getter(key, default)
        except Exception:  # noqa: BLE001 - dataclass configs have .get with other semantics
            pass
    return getattr(config, key, default)


def _index(index: Any, bs: int) -> np.ndarray:
    if index is None:
        raise MissingColumnError("this estimator needs index (verl's per-prompt uid array, shape [bs])")
    arr = np.asarray(index)
    if arr.shape != (bs,):
        raise MissingColumnError(f"index has shape {arr.shape}; expected ({bs},)")
    if arr.dtype.kind in "USO":  # verl's uids: hashed in O(N), not sorted
        return factorize_ids(arr, "index").index.numpy()
    return arr


def compute_turn_rloo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    gamma: float | None = None,
    baseline: str | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn-level returns with a leave-one-out group baseline, in verl's estimator signature.

    Args:
        token_level_rewards: float[bs, L] -- rewards on response-side tokens (per-turn rewards at
            turn ends, the outcome at the last token, or anywhere in between).
        response_mask: bool/int[bs, L] -- 1 on tokens the policy generated.
        index: [bs] -- per-prompt uid (groups).
        config: verl's algorithm config; ``gamma`` (default 1.0) and
            ``turn_rloo_baseline`` ("turn" or "episode") are read from it when present.
        gamma, baseline: override the config.

    Returns:
        ``(advantages, returns)``, float[bs, L]: each turn's advantage / return-to-go on its
        policy tokens, 0 on tool/observation tokens and padding.
    """
    gamma = float(_cfg(config, "gamma", 1.0) if gamma is None else gamma)
    baseline = str(_cfg(config, "turn_rloo_baseline", "turn") if baseline is None else baseline)
    rm = response_mask.bool()
    groups = _index(index, rm.shape[0])
    # A turn starts where a policy token follows a non-policy token; each token's reward goes to the
    # turn it belongs to or follows (a reward verl put on an observation token belongs to the turn
    # before it). One compiled pass per row on CPU.
    rewards, num_turns = turn_sums(rm, token_level_rewards.detach())
    t = rewards.shape[1]
    mask = torch.arange(t, device=rewards.device)[None, :] < num_turns[:, None].to(rewards.device)
    out = turn_rloo(rewards, groups, mask=mask, gamma=gamma, baseline=baseline)
    dtype = token_level_rewards.dtype
    dev = token_level_rewards.device
    return turn_broadcast(rm, out.advantages, dtype).to(dev), turn_broadcast(rm, out.returns, dtype).to(dev)


def compute_gigpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    anchor_obs: Any = None,
    traj_index: Any = None,
    step_rewards: Any = None,
    step_advantage_w: float | None = None,
    mode: str | None = None,
    epsilon: float = 1e-6,
    episode_stats: str | None = None,
    similarity: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GiGPO for verl-agent's one-row-per-turn layout, in verl's estimator signature.

    Args:
        token_level_rewards: float[bs, L] -- each row's sum is its episode reward (verl-agent
            puts the trajectory's reward on every step row).
        response_mask: [bs, L].
        index: [bs] -- episode-group uid.
        config: read for ``gigpo.step_advantage_w``, ``gigpo.mode``, ``gigpo.episode_stats``
            (flat keys ``step_advantage_w`` / ``gigpo_mode`` also accepted).
        anchor_obs: [bs] -- hashable anchor observation of each row.
        traj_index: [bs] -- trajectory uid of each row.
        step_rewards: float[bs] -- discounted return from each step (verl-agent's
            ``compute_step_discounted_returns``).
        step_advantage_w, mode, epsilon, episode_stats, similarity: as in
            :func:`creditlab.llm.gigpo_rows` (defaults: 1.0, "mean_norm", 1e-6, "trajectory").

    Returns:
        ``(advantages, advantages)`` float[bs, L] (verl-agent returns the same tensor twice).
    """
    missing = [
        name
        for name, v in (("anchor_obs", anchor_obs), ("traj_index", traj_index), ("step_rewards", step_rewards))
        if v is None
    ]
    if missing:
        raise MissingColumnError(
            f"creditlab_gigpo needs {missing} as keyword arguments (one per row, verl-agent's layout); stock verl's "
            "compute_advantage does not pass them, verl-agent's trainer does"
        )
    sub = _cfg(config, "gigpo", None)
    w = (
        step_advantage_w
        if step_advantage_w is not None
        else _cfg(sub, "step_advantage_w", _cfg(config, "step_advantage_w", 1.0))
    )
    mode = mode or _cfg(sub, "mode", _cfg(config, "gigpo_mode", "mean_norm"))
    episode_stats = episode_stats or _cfg(sub, "episode_stats", "trajectory")
    rm = response_mask.to(token_level_rewards.dtype)
    bs = rm.shape[0]
    groups = _index(index, bs)
    scores = token_level_rewards.detach().sum(dim=-1)
    sr = (
        step_rewards.detach()
        if isinstance(step_rewards, torch.Tensor)
        else torch.as_tensor(np.asarray(step_rewards, dtype=np.float64))
    )
    anchors = list(anchor_obs) if not isinstance(anchor_obs, np.ndarray) or anchor_obs.dtype == object else anchor_obs
    out = gigpo_rows(
        scores,
        sr.to(scores.device, scores.dtype),
        anchors,
        groups,
        np.asarray(traj_index),
        step_weight=float(w),
        mode=mode,
        episode_stats=episode_stats,
        similarity=similarity,
        eps=epsilon,
    )
    adv = out.advantages.to(token_level_rewards.dtype)[:, None] * rm
    return adv, adv


def compute_tree_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    tree_path: Any = None,
    tree_uid: Any = None,
    tree_span: Any = None,
    tree_method: str | None = None,
    non_tensor_batch: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tree advantages (:mod:`creditlab.llm.tree`) in verl's estimator signature.

    Each row is one root-to-leaf path of a tree rollout; its reward is the row's sum of
    ``token_level_rewards`` (the leaf's reward). A rollout worker that branches passes, as extra
    keyword arguments (``non_tensor_batch`` fields, like verl-agent's GiGPO fields):

    * ``tree_path``: [bs] -- the node ids along each row's path, root first. Rows sharing a prefix
      share its ids. Needed by every method but ``tree_grpo``.
    * ``tree_span``: [bs] -- optional: the number of response positions (tokens, masked or not)
      of each node of the row's path. Default: each run of response tokens (``response_mask``
      1) is one node, so a multi-turn agent row with one node per step needs nothing else.
    * ``tree_uid``: [bs] -- the tree of each row (Tree-GRPO's ``tree_uid``); default: the
      row's first node.

    Stock verl 0.9.1's ``compute_advantage`` passes ``non_tensor_batch`` to GDPO only; a
    tree-rollout trainer (as Tree-GRPO's ``ray_trainer_ts.py``) calls the estimator with these
    fields, either as keywords or inside ``non_tensor_batch``.

    Args:
        token_level_rewards: float[bs, L]; response_mask: [bs, L]; index: [bs] prompt uid.
        config: read for ``tree_method`` ("tree_rloo" default, "treerl", "tree_grpo", "treerpo").
        tree_path, tree_uid, tree_span: above.
        tree_method: overrides the config.
        non_tensor_batch: verl's per-row fields; ``tree_path`` / ``tree_uid`` / ``tree_span`` are
            read from it when not passed directly.

    Returns:
        ``(advantages, advantages)`` float[bs, L]: each node's value on its policy tokens of the
        row, 0 elsewhere.
    """
    from ..llm.tokens import turn_ids_from_response_mask
    from ..llm.tree import Forest, tree_grpo, tree_rloo, treerl, treerpo

    methods = {"tree_rloo": tree_rloo, "treerl": treerl, "tree_grpo": tree_grpo, "treerpo": treerpo}
    if non_tensor_batch is not None:
        tree_path = non_tensor_batch.get("tree_path") if tree_path is None else tree_path
        tree_uid = non_tensor_batch.get("tree_uid") if tree_uid is None else tree_uid
        tree_span = non_tensor_batch.get("tree_span") if tree_span is None else tree_span
    method = tree_method or _cfg(config, "tree_method", "tree_rloo")
    if method not in methods:
        raise RangeError(f"tree_method must be one of {sorted(methods)}; got {method!r}")
    rm = response_mask.bool()
    bs, length = rm.shape
    groups = _index(index, bs)
    scores = token_level_rewards.detach().to(torch.float64).sum(dim=-1).cpu().numpy()
    uid = None if tree_uid is None else np.asarray(tree_uid, dtype=object)
    if tree_path is None:
        if method != "tree_grpo":
            raise MissingColumnError(
                f"creditlab_tree with tree_method={method!r} needs tree_path ([bs] lists of node ids, root first)"
            )
        if uid is None:
            raise MissingColumnError("creditlab_tree with tree_method='tree_grpo' needs tree_uid (or tree_path)")
        forest = Forest.from_paths([[("row", i)] for i in range(bs)], scores, group_ids=groups, tree_ids=uid)
        out = methods[method](forest)
        adv = torch.from_numpy(np.asarray(out.advantages)[:, 0]).to(token_level_rewards.dtype)[:, None] * rm
        adv = adv.to(token_level_rewards.device)
        return adv, adv
    paths = [list(p) for p in np.asarray(tree_path, dtype=object)]
    if len(paths) != bs:
        raise MissingColumnError(f"tree_path has {len(paths)} rows; expected {bs}")
    forest = Forest.from_paths(paths, scores, group_ids=groups, tree_ids=uid)
    out = methods[method](forest)
    node_adv = torch.from_numpy(np.asarray(out.advantages))  # [bs, D]
    depth = forest.path_mask.sum(1)
    if tree_span is None:
        turn_ids, num_turns = turn_ids_from_response_mask(rm.cpu())
        bad = np.flatnonzero(num_turns.numpy() != depth)
        if bad.size:
            i = int(bad[0])
            raise RangeError(
                f"row {i} has {int(num_turns[i])} runs of response tokens but its tree_path has {int(depth[i])} nodes; "
                "pass tree_span (tokens per node) when nodes are not separated by non-response tokens"
            )
    else:
        turn_ids = torch.full((bs, length), -1, dtype=torch.int64)
        for i, spans in enumerate(np.asarray(tree_span, dtype=object)):
            spans = [int(x) for x in spans]
            if len(spans) != depth[i] or sum(spans) > length or min(spans, default=0) < 0:
                raise RangeError(
                    f"tree_span[{i}] = {spans}: expected {int(depth[i])} non-negative counts summing to <= {length}"
                )
            ends = np.cumsum(spans)
            starts = ends - np.asarray(spans)
            for d, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
                turn_ids[i, a:b] = d
        turn_ids = torch.where(rm.cpu(), turn_ids, torch.full_like(turn_ids, -1))
    safe = turn_ids.clamp(min=0)
    vals = torch.gather(node_adv, 1, safe.clamp(max=node_adv.shape[1] - 1))
    adv = (
        torch.where(turn_ids >= 0, vals, torch.zeros_like(vals))
        .to(token_level_rewards.dtype)
        .to(token_level_rewards.device)
    )
    return adv, adv


ESTIMATORS = {
    "creditlab_turn_rloo": compute_turn_rloo_advantage,
    "creditlab_gigpo": compute_gigpo_advantage,
    "creditlab_tree": compute_tree_advantage,
}


def register_with_verl() -> list[str]:
    """Register :data:`ESTIMATORS` with verl's ``register_adv_est``; returns the names registered.

    Safe to call again (a name already bound to the same function is left alone). Raises
    ImportError when verl is not installed.
    """
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

    done = []
    for name, fn in ESTIMATORS.items():
        current = ADV_ESTIMATOR_REGISTRY.get(name)
        if current is not None and current is not fn:
            # a previous import of this module (e.g. a reload) registered an older function object
            ADV_ESTIMATOR_REGISTRY.pop(name)
        register_adv_est(name)(fn)
        done.append(name)
    return done


try:  # register on import when verl is there; never a dependency
    import verl.trainer.ppo.core_algos  # noqa: F401
except Exception:  # noqa: BLE001 - absent or broken verl: call register_with_verl() to see why
    pass
else:  # pragma: no cover - depends on the environment
    register_with_verl()
