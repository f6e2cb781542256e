"""Count bonuses: episodic (first visit, or ``1/sqrt(N_ep)``) and global (``1/sqrt(N)``).

Visits are counted in time order, one env after another within a step. A visit's count includes
the visit itself, so the first visit of a state has count 1. The first state of each episode is
visited when the episode starts (no bonus is paid for it: no action led there); every step then
visits the state it reached and is paid for it (see :mod:`creditlab.exploration.base`).

* **Episodic** (:class:`EpisodicCountBonus`): ``N_ep`` counts the visits in the current episode
  of each env; it is cleared when an episode starts, after a termination *or* a truncation.
* **Global** (:class:`GlobalCountBonus`): ``N`` counts visits over all of training and all envs
  (one table shared by every vector-env copy; e3b's actors each keep their own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RangeError, ShapeError
from ..registry import register_method
from .base import ExplorationBonus, Transitions
from .functional import EPISODIC_MODES, episodic_count_bonus, global_count_bonus

__all__ = ["EpisodicCountBonus", "GlobalCountBonus", "episodic_visit_counts", "global_visit_counts"]

_NEEDS = ("observations|extras.next_state_keys", "next_observations?", "extras.state_keys?", "extras.next_state_keys?")


def _key_lists(tr: Transitions) -> tuple[list[list[int]], list[list[int]]]:
    """``keys`` and ``next_keys`` of ``tr`` as nested lists (the count loops run in Python)."""
    if tr.keys is None or tr.next_keys is None:
        missing = [name for name in ("keys", "next_keys") if getattr(tr, name) is None]
        raise ShapeError(
            f"visit counts need keys and next_keys (int64[T, E]); got None for {missing} "
            "(transitions.with_keys() fills them from observation hashes)"
        )
    return tr.keys.tolist(), tr.next_keys.tolist()


def episodic_visit_counts(tr: Transitions, memory: list[dict[int, int]]) -> np.ndarray:
    """Per-episode visit counts ``N_ep(s_{t+1})`` of every step, advancing each env's memory.

    Args:
        tr: a stream with ``keys`` and ``next_keys`` (see :meth:`Transitions.with_keys`).
        memory: one ``{key: count}`` per env (the running episode); updated in place.

    Returns:
        int64[T, E] -- the count of the state reached, including this visit; 0 on invalid steps.

    Example (one env visits a=1, then b=2, a, c=3; s_0 = a): a is already counted at the start,
    so the counts of the reached states b, a, c are 1, 2, 1
        >>> from creditlab.exploration.base import make_transitions
        >>> tr = make_transitions(starts=[[1], [0], [0]], keys=[[1], [2], [1]], next_keys=[[2], [1], [3]])
        >>> episodic_visit_counts(tr, [{}])[:, 0].tolist()
        [1, 2, 1]
    """
    t_len, e_len = tr.shape
    keys, next_keys = _key_lists(tr)
    starts, valid = tr.starts.tolist(), tr.valid().tolist()
    out = [[0] * e_len for _ in range(t_len)]
    for t in range(t_len):
        for e in range(e_len):
            if not valid[t][e]:
                continue
            mem = memory[e]
            if starts[t][e]:
                mem.clear()
                mem[keys[t][e]] = 1
            k = next_keys[t][e]
            n = mem.get(k, 0) + 1
            mem[k] = n
            out[t][e] = n
    return np.asarray(out, dtype=np.int64).reshape(t_len, e_len)


def global_visit_counts(tr: Transitions, table: dict[int, int]) -> np.ndarray:
    """Global visit counts ``N(s_{t+1})`` of every step, advancing ``table`` (never reset).

    The first state of each episode is counted when the episode starts.

    Returns:
        int64[T, E] -- the count of the state reached, including this visit; 0 on invalid steps.

    Example (two envs start in a=1 and both step to b=2: a is counted twice, b gets 1 then 2):
        >>> from creditlab.exploration.base import make_transitions
        >>> tr = make_transitions(starts=[[1, 1]], keys=[[1, 1]], next_keys=[[2, 2]])
        >>> table = {}
        >>> global_visit_counts(tr, table).tolist(), table
        ([[1, 2]], {1: 2, 2: 2})
    """
    t_len, e_len = tr.shape
    keys, next_keys = _key_lists(tr)
    starts, valid = tr.starts.tolist(), tr.valid().tolist()
    out = [[0] * e_len for _ in range(t_len)]
    for t in range(t_len):
        for e in range(e_len):
            if not valid[t][e]:
                continue
            if starts[t][e]:
                k0 = keys[t][e]
                table[k0] = table.get(k0, 0) + 1
            k = next_keys[t][e]
            n = table.get(k, 0) + 1
            table[k] = n
            out[t][e] = n
    return np.asarray(out, dtype=np.int64).reshape(t_len, e_len)


@register_method(
    "episodic_count",
    family="exploration",
    summary="Episodic count bonus: first visit 1[N_ep(s')=1] (or 1/sqrt(N_ep)), reset every episode",
    needs=_NEEDS,
    kind="assigner",
    source="Henaff, Jiang & Raileanu, ICML 2023 (arXiv 2306.03236); e3b counts-*",
)
class EpisodicCountBonus(ExplorationBonus):
    """Episodic count bonus: ``1[N_ep(s_{t+1}) = 1]`` (``mode="first_visit"``) or ``1/sqrt(N_ep)``.

    Example (one episode a -> b -> a -> c; first visits pay 1):
        >>> from creditlab.exploration.base import make_transitions
        >>> tr = make_transitions(starts=[[1], [0], [0]], keys=[[1], [2], [1]], next_keys=[[2], [1], [3]])
        >>> EpisodicCountBonus().compute(tr).bonus[:, 0].tolist()
        [1.0, 0.0, 1.0]
    """

    @dataclass(frozen=True)
    class Config:
        """Parameters of :class:`EpisodicCountBonus`.

        Attributes:
            mode: "first_visit" (``1[N_ep = 1]``, the e3b learner's reading) or "inv_sqrt"
                (``1/sqrt(N_ep)``).
        """

        mode: str = "first_visit"

        def __post_init__(self) -> None:
            if self.mode not in EPISODIC_MODES:
                raise RangeError(f"mode must be one of {EPISODIC_MODES}; got {self.mode!r}")

    name = "episodic_count"
    scope = "episode"
    uses_keys = True

    def _new_memory(self, n_envs: int) -> list[dict[int, int]]:
        return [{} for _ in range(n_envs)]

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        counts = episodic_visit_counts(tr, memory)
        bonus = episodic_count_bonus(counts, self.config.mode)
        return bonus, {}


@register_method(
    "global_count",
    family="exploration",
    summary="Global count bonus 1/sqrt(N(s')), N over all of training (never reset)",
    needs=_NEEDS,
    kind="assigner",
    source="Henaff, Jiang & Raileanu, ICML 2023 (arXiv 2306.03236); e3b counts-*",
)
class GlobalCountBonus(ExplorationBonus):
    """Global count bonus ``1/sqrt(N(s_{t+1}))``; the table is shared by all envs.

    Example (two episodes of one env, each a -> b: b is visited twice, so 1 then 1/sqrt(2)):
        >>> from creditlab.exploration.base import make_transitions
        >>> tr = make_transitions(starts=[[1], [1]], keys=[[1], [1]], next_keys=[[2], [2]])
        >>> GlobalCountBonus().compute(tr).bonus[:, 0].round(4).tolist()
        [1.0, 0.7071]
    """

    @dataclass(frozen=True)
    class Config:
        """:class:`GlobalCountBonus` has no parameters (the table is its state)."""

    name = "global_count"
    scope = "step"
    uses_keys = True

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        self.table: dict[int, int] = {}

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        counts = global_visit_counts(tr, self.table)
        return global_count_bonus(counts), {"exploration/unique_states": float(len(self.table))}

    def _state(self) -> dict[str, Any]:
        return {"table": dict(self.table)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.table = {int(k): int(v) for k, v in state["table"].items()}
