"""Episodic x global bonuses: the product (the ICML 2023 paper's proposal) and the weighted sum.

Henaff, Jiang & Raileanu (ICML 2023, arXiv 2306.03236) find episodic bonuses best when every
episode is a new context, global bonuses best when contexts repeat, and their product robust
across both. :class:`CombinedBonus` runs an episodic and a global bonus on the same transitions
and combines them step by step (:func:`~creditlab.exploration.functional.combine_bonuses`):
``b = b_ep * b_gl`` or ``b = b_ep + weight * b_gl``.

The components are registered bonuses, given by name (and parameters) or as objects. Defaults:
episodic first-visit count x global ``1/sqrt(N)`` count (the paper's ``counts-combined``). E3B x
NovelD, the paper's best MiniHack agent, is ``CombinedBonus(episodic="e3b",
global_="noveld", global_params={"alpha": 0.1, "gate": "none"})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._arrays import check_real
from ..errors import DtypeError, RangeError
from ..registry import get_method, register_method
from .base import ExplorationBonus, Transitions
from .functional import COMBINE_MODES, combine_bonuses

__all__ = ["CombinedBonus", "SumBonus"]

_NEEDS = ("observations", "actions?", "next_observations?", "extras.state_keys?", "extras.next_state_keys?")


def _component(spec: Any, params: Mapping[str, Any], role: str) -> ExplorationBonus:
    if isinstance(spec, ExplorationBonus):
        if params:
            raise RangeError(f"{role}_params are for a bonus given by name; {role} is already built")
        return spec
    if not isinstance(spec, str):
        raise DtypeError(f"{role} must be a registered bonus name or an ExplorationBonus; got {type(spec).__name__}")
    method = get_method(spec)
    if method.family != "exploration" or method.factory is None:
        raise RangeError(
            f"{role}={spec!r} is a {method.family} method, not an exploration bonus (see creditlab methods --family exploration)"
        )
    return method.factory(**dict(params))


@register_method(
    "episodic_x_global",
    family="exploration",
    summary="Product of an episodic and a global bonus (default: first-visit count x 1/sqrt(N) count)",
    needs=_NEEDS,
    kind="assigner",
    source="Henaff, Jiang & Raileanu, ICML 2023 (arXiv 2306.03236)",
)
class CombinedBonus(ExplorationBonus):
    """An episodic and a global bonus combined step by step (product or weighted sum).

    Example (one episode a -> b -> a, a new env: episodic first visits 1, 0; global counts of b
    and a are 1 and 2, so the product is 1 * 1 = 1, then 0 * 1/sqrt(2) = 0, and the sum with
    weight 1 is 1 + 1 = 2, then 0 + 0.7071):
        >>> from creditlab.exploration.base import make_transitions
        >>> tr = make_transitions(starts=[[1], [0]], keys=[[1], [2]], next_keys=[[2], [1]])
        >>> CombinedBonus().compute(tr).bonus[:, 0].round(4).tolist()
        [1.0, 0.0]
        >>> CombinedBonus(combine="sum").compute(tr).bonus[:, 0].round(4).tolist()
        [2.0, 0.7071]
    """

    @dataclass(frozen=True)
    class Config:
        """Parameters of :class:`CombinedBonus`.

        Attributes:
            episodic: registered name of the episodic bonus (``episodic_count``, ``e3b``, ...).
            global_: registered name of the global bonus (``global_count``, ``rnd``, ``noveld``).
            combine: "product" (``b_ep * b_gl``) or "sum" (``b_ep + weight * b_gl``).
            weight: weight of the global bonus in the sum.
            episodic_params: parameters of the episodic bonus.
            global_params: parameters of the global bonus.
        """

        episodic: Any = "episodic_count"
        global_: Any = "global_count"
        combine: str = "product"
        weight: float = 1.0
        episodic_params: Mapping[str, Any] = field(default_factory=dict)
        global_params: Mapping[str, Any] = field(default_factory=dict)

        def __post_init__(self) -> None:
            if self.combine not in COMBINE_MODES:
                raise RangeError(f"combine must be one of {COMBINE_MODES}; got {self.combine!r}")
            check_real(self.weight, "weight")

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        self.name = "episodic_x_global" if cfg.combine == "product" else "episodic_plus_global"
        self.episodic = _component(cfg.episodic, cfg.episodic_params, "episodic")
        self.global_ = _component(cfg.global_, cfg.global_params, "global_")
        self.uses_keys = self.episodic.uses_keys or self.global_.uses_keys
        self.uses_observations = self.episodic.uses_observations or self.global_.uses_observations
        self.scope = "episode"

    def set_num_actions(self, n: int) -> None:
        """Pass the number of discrete actions to components that learn from actions (E3B)."""
        for part in (self.episodic, self.global_):
            if hasattr(part, "set_num_actions"):
                part.set_num_actions(n)

    def _new_memory(self, n_envs: int) -> tuple[Any, Any]:
        return self.episodic._new_memory(n_envs), self.global_._new_memory(n_envs)

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        b_ep, m_ep = self.episodic._compute(tr, memory[0])
        b_gl, m_gl = self.global_._compute(tr, memory[1])
        bonus = combine_bonuses(b_ep, b_gl, combine=self.config.combine, weight=self.config.weight)
        metrics = {
            **m_ep,
            **m_gl,
            "exploration/episodic_mean": float(b_ep.mean()),
            "exploration/global_mean": float(b_gl.mean()),
        }
        return np.asarray(bonus, dtype=np.float32), metrics

    def _fit(self, tr: Transitions, num_updates: int | None) -> dict[str, float]:
        return {**self.episodic._fit(tr, num_updates), **self.global_._fit(tr, num_updates)}

    def _config_dict(self) -> dict[str, Any]:
        out = super()._config_dict()
        return {**out, "episodic": _spec(out["episodic"]), "global_": _spec(out["global_"])}

    def _state(self) -> dict[str, Any]:
        return {"episodic_state": self.episodic.state_dict(), "global_state": self.global_.state_dict()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        # the components' memories of running episodes live in this object's memory tuple
        self.episodic.load_state_dict(state["episodic_state"])
        self.global_.load_state_dict(state["global_state"])


def _spec(x: Any) -> Any:
    return x if isinstance(x, str) else f"<{type(x).__name__}>"


@register_method(
    "episodic_plus_global",
    family="exploration",
    summary="Weighted sum b_ep + weight * b_gl of an episodic and a global bonus (default: the two counts)",
    needs=_NEEDS,
    kind="assigner",
    source="Henaff, Jiang & Raileanu, ICML 2023 (arXiv 2306.03236), the additive alternative",
)
class SumBonus(CombinedBonus):
    """:class:`CombinedBonus` with ``combine="sum"`` by default (the registry's ``episodic_plus_global``)."""

    @dataclass(frozen=True)
    class Config(CombinedBonus.Config):
        """Parameters of :class:`SumBonus`: those of :class:`CombinedBonus`, ``combine`` defaulting to "sum"."""

        combine: str = "sum"
