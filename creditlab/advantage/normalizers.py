"""Stateful normalizers whose statistics persist across batches (and tasks)."""

from __future__ import annotations

from typing import Any

import torch

from .._adapters import episode_scores
from .._arrays import (
    ArrayLike,
    Backend,
    GroupIndex,
    as_group_index,
    as_scores,
    check_nonempty,
    check_positive,
    check_unit,
)
from ..errors import MissingColumnError, RangeError
from ..outputs import AdvantageOutput
from ..registry import register_method
from ..segments import group_stats
from .group import _degenerate_counts, _warn_degenerate
from .tokens import episode_output_to_steps

__all__ = ["CrossTaskEMANormalizer"]


class CrossTaskEMANormalizer:
    """Cross-task advantage normalization (CTAN, from RaPO).

    ``A_i = (R_i - mean_g R) / (sigma_EMA + eps)`` with
    ``sigma_EMA <- beta * sigma_EMA + (1 - beta) * std_batch(R)``.

    Where GRPO divides by each group's own std (which blows up near-unanimous groups and
    rescales every task to unit spread), CTAN divides by a slowly moving batch-level scale that
    is carried across task boundaries and saved with the checkpoint. ``sigma`` is initialized
    from the first batch whose rewards have non-zero spread; until then a batch is divided by its
    own std (or 1 when that is 0, never by ``eps`` alone). With ``per_task=True`` one sigma is kept
    per task id, keyed by the id's text (1, 1.0 and "1" share a key), so a task keeps its scale
    across batches whatever else the batch holds.

    Call with ``update=False`` to freeze the statistics (evaluation).

    Example:
        >>> norm = CrossTaskEMANormalizer(beta=0.5, eps=0.0)
        >>> out = norm([1.0, 3.0], [0, 0])        # first batch: sigma = std([1, 3]) = sqrt(2)
        >>> round(float(out.advantages[0]) * 2 ** 0.5, 6)
        -1.0
        >>> norm.state_dict()["sigma"]["*"] == 2 ** 0.5
        True
    """

    def __init__(self, *, beta: float = 0.999, eps: float = 1e-4, unbiased: bool = True, per_task: bool = False):
        self.beta = check_unit(beta, "beta")
        self.eps = check_positive(eps, "eps", allow_zero=True)
        self.unbiased = bool(unbiased)
        self.per_task = bool(per_task)
        self.sigma: dict[str, float] = {}
        self.num_updates: dict[str, int] = {}

    def __call__(
        self,
        rewards: ArrayLike,
        group_ids: ArrayLike | GroupIndex,
        *,
        task_ids: ArrayLike | None = None,
        update: bool = True,
        present: ArrayLike | None = None,
        nan_is_missing: bool = False,
    ) -> AdvantageOutput:
        """Normalize one batch. ``rewards[N]``, ``group_ids[N]``, ``task_ids[N]`` (with ``per_task``)."""
        backend = Backend.of(rewards)
        r, p = as_scores(rewards, "rewards", present=present, nan_is_missing=nan_is_missing)
        n = r.shape[0]
        check_nonempty(n, "rewards")
        groups = as_group_index(group_ids, "group_ids", n, device=r.device)
        stats = group_stats(r, p, groups, unbiased=self.unbiased)
        if self.per_task:
            if task_ids is None:
                raise RangeError("task_ids is required when per_task=True; pass one task id per episode, shape [N]")
            tasks = as_group_index(task_ids, "task_ids", n, device=r.device)
            keys = _task_keys(task_ids, tasks)
        else:
            tasks = GroupIndex(torch.zeros(n, dtype=torch.int64, device=r.device), 1)
            keys = {0: "*"}
        task_stats = group_stats(r, p, tasks, unbiased=self.unbiased)
        overall = float(
            group_stats(
                r, p, GroupIndex(torch.zeros(n, dtype=torch.int64, device=r.device), 1), unbiased=self.unbiased
            ).std[0]
        )
        sigma = torch.zeros(tasks.num_groups, dtype=torch.float64, device=r.device)
        for slot, key in keys.items():
            batch_std = float(task_stats.std[slot])
            if update and task_stats.count[slot] > 1 and batch_std > 0:
                if key not in self.sigma:
                    self.sigma[key] = batch_std
                else:
                    self.sigma[key] = self.beta * self.sigma[key] + (1.0 - self.beta) * batch_std
                self.num_updates[key] = self.num_updates.get(key, 0) + 1
            # Scale for this batch: the task's EMA; before it exists, the task's batch std, else the
            # whole batch's std, else 1 (never eps alone, which would multiply advantages by 1/eps).
            sigma[slot] = self.sigma.get(key, batch_std if batch_std > 0 else (overall if overall > 0 else 1.0))
        adv = stats.centered / (sigma.index_select(0, tasks.index) + self.eps)
        adv = torch.where(stats.constant[groups.index] | ~p, torch.zeros_like(adv), adv)
        metrics = {
            "num_episodes": float(n),
            "num_missing": float((~p).sum()),
            "ctan/sigma": float(sigma.mean()) if sigma.numel() else 0.0,
            "advantages/mean": float(adv[p].mean()) if bool(p.any()) else 0.0,
            "advantages/std": float(adv[p].std(unbiased=False)) if bool(p.any()) else 0.0,
        }
        metrics.update(_degenerate_counts(stats, groups, p))
        _warn_degenerate(metrics)
        return AdvantageOutput(backend.out(adv.to(r.dtype)), None, metrics)

    def state_dict(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "eps": self.eps,
            "unbiased": self.unbiased,
            "per_task": self.per_task,
            "sigma": dict(self.sigma),
            "num_updates": dict(self.num_updates),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"beta", "eps", "sigma", "num_updates"} - set(state)
        if missing:
            raise RangeError(f"state is missing keys {sorted(missing)}; expected the dict from state_dict()")
        self.beta = check_unit(state["beta"], "beta")
        self.eps = check_positive(state["eps"], "eps", allow_zero=True)
        self.unbiased = bool(state.get("unbiased", True))
        self.per_task = bool(state.get("per_task", False))
        self.sigma = {str(k): float(v) for k, v in state["sigma"].items()}
        self.num_updates = {str(k): int(v) for k, v in state["num_updates"].items()}


def _task_keys(task_ids: ArrayLike, tasks: GroupIndex) -> dict[int, str]:
    """Map dense task slots back to stable string keys, so state follows a task across batches.

    Integer-valued ids give the same key whatever their dtype (1, 1.0 and tensor(1) -> "1").
    """
    import numpy as np

    raw = task_ids.detach().cpu().numpy() if isinstance(task_ids, torch.Tensor) else np.asarray(task_ids, dtype=object)
    idx = tasks.index.cpu().numpy()
    keys: dict[int, str] = {}
    for slot, pos in zip(*np.unique(idx, return_index=True)):
        v = raw[pos]
        v = v.item() if hasattr(v, "item") else v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        keys[int(slot)] = str(v)
    return keys


# ---------------------------------------------------------------------- registry adapter


@register_method(
    "ctan",
    family="normalization",
    kind="advantages",
    needs=("outcomes|components|rewards", "group_ids"),
    summary="Cross-task EMA normalization: group-centred, divided by an EMA of the batch std",
    source="RaPO, Overcoming Catastrophic Forgetting in Visual Continual Learning with RFT",
)
def _run_ctan(episodes, *, beta: float = 0.999, eps: float = 1e-4, per_task: bool = False) -> AdvantageOutput:
    """A fresh normalizer on one batch (the EMA starts from this batch's spread)."""
    r, p, meta = episode_scores(episodes)
    norm = CrossTaskEMANormalizer(beta=beta, eps=eps, per_task=per_task)
    if per_task and episodes.task_ids is None:
        raise MissingColumnError("method 'ctan' with per_task=True needs episodes.task_ids (a 'task_id' column)")
    return episode_output_to_steps(episodes, norm(r, episodes.group_ids, task_ids=episodes.task_ids, present=p), meta)
