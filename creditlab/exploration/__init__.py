"""Exploration bonuses for natively sparse tasks: counts, RND, NovelD, E3B, episodic x global.

Every bonus follows :class:`ExplorationBonus` (streaming ``compute``/``fit`` for training loops,
``fit``/``assign`` on an :class:`~creditlab.episodes.Episodes` batch, ``state_dict``):

======================  ===========  ========  ================================================
bonus (registry name)   memory       learned   bonus of a step t (state reached s')
======================  ===========  ========  ================================================
episodic_count          episode      no        ``1[N_ep(s') = 1]`` (or ``1/sqrt(N_ep(s'))``)
global_count            training     no        ``1/sqrt(N(s'))``
rnd                     training     yes       ``||f(s') - f_rand(s')||``
noveld                  both         yes       ``max(n(s') - alpha n(s), 0) * 1[N_ep(s') = 1]``
e3b                     episode      yes       ``phi(s')^T C^{-1} phi(s')``, C over the episode
episodic_x_global       both         either    ``b_ep * b_gl`` (ICML 2023's proposal)
episodic_plus_global    both         either    ``b_ep + weight * b_gl``
======================  ===========  ========  ================================================

Pure functions (:mod:`creditlab.exploration.functional`) hold the math where nothing is learned:
count bonuses, the batched Sherman-Morrison step, NovelD's clipped difference, the combination,
running moments and the division by their std. State keys for counts (MiniGrid position, full
state hash, observation hash, a user function) are in :mod:`creditlab.exploration.keys`;
Gymnasium wrappers that put keys into ``info`` and fix the set of contexts (level seeds) are in
:mod:`creditlab.exploration.wrappers` (imported on first use: it needs gymnasium). The SB3
callback is :class:`creditlab.integrations.sb3.exploration.ExplorationBonusCallback`.
"""

from __future__ import annotations

from typing import Any

from .base import BonusOutput, ExplorationBonus, Transitions, make_transitions, transitions_from_episodes
from .combined import CombinedBonus, SumBonus
from .counts import EpisodicCountBonus, GlobalCountBonus, episodic_visit_counts, global_visit_counts
from .e3b import E3BBonus
from .functional import (
    EllipticalStep,
    RunningMoments,
    combine_bonuses,
    episodic_count_bonus,
    first_visit_bonus,
    global_count_bonus,
    inverse_sqrt_bonus,
    moments_std,
    normalize_by_std,
    noveld_bonus,
    sherman_morrison_step,
    update_moments,
)
from .keys import KEY_KINDS, full_state_key, observation_keys, position_key, state_key_function, to_key
from .rnd import NovelDBonus, RNDBonus

__all__ = [
    "KEY_KINDS",
    "BonusOutput",
    "CombinedBonus",
    "ContextSetWrapper",
    "E3BBonus",
    "EllipticalStep",
    "EpisodicCountBonus",
    "ExplorationBonus",
    "GlobalCountBonus",
    "NovelDBonus",
    "RNDBonus",
    "RunningMoments",
    "StateKeyWrapper",
    "Transitions",
    "combine_bonuses",
    "episodic_count_bonus",
    "SumBonus",
    "episodic_visit_counts",
    "first_visit_bonus",
    "full_state_key",
    "global_count_bonus",
    "global_visit_counts",
    "inverse_sqrt_bonus",
    "make_bonus",
    "make_transitions",
    "moments_std",
    "normalize_by_std",
    "noveld_bonus",
    "observation_keys",
    "position_key",
    "sherman_morrison_step",
    "state_key_function",
    "to_key",
    "transitions_from_episodes",
    "update_moments",
]

_WRAPPERS = ("ContextSetWrapper", "StateKeyWrapper")


def __getattr__(name: str) -> Any:  # the Gymnasium wrappers load on first use (gymnasium is optional)
    if name in _WRAPPERS:
        from . import wrappers

        return getattr(wrappers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_bonus(name: str, **params: Any) -> ExplorationBonus:
    """Build a registered exploration bonus by name (``creditlab methods --family exploration``)."""
    from ..errors import RangeError
    from ..registry import get_method

    method = get_method(name)
    if method.family != "exploration" or method.factory is None:
        raise RangeError(
            f"{name!r} is a {method.family} method, not an exploration bonus; see list_methods(family='exploration')"
        )
    return method.factory(**params)
