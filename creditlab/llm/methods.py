"""Registry entries of the turn-level (LLM-agent) methods: Episodes -> pure functions.

Turns are the steps of an :class:`~creditlab.Episodes`. Per-turn extras a method needs live in
``episodes.extras``: ``anchors`` (GiGPO; an object array of per-trajectory key lists, or
``int[B, T]``), ``belief_log_probs`` (IGPO; ``float[B, T+1]``), ``grounding`` (SPA). SPA's turn
features are ``episodes.observations`` (``float[B, T, D]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..episodes import Episodes
from ..errors import MissingColumnError
from ..outputs import AdvantageOutput, RewardOutput
from ..registry import Method, register
from .gigpo import gigpo
from .igpo import igpo
from .implicit_prm import oprl_advantages
from .process import process_turn_rewards
from .turn_returns import turn_rloo


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _outcomes_or_none(ep: Episodes) -> tuple[Any, Any]:
    if ep.outcomes is None:
        return None, None
    return ep.outcomes, ep.outcome_present


def _run_gigpo(ep: Episodes, *, gamma, step_weight, mode, episode_stats, similarity) -> AdvantageOutput:
    ep.require("group_ids", method="gigpo")
    if "anchors" not in ep.extras:
        raise MissingColumnError("method 'gigpo' needs per-turn anchor-state keys in episodes.extras['anchors']")
    o, p = _outcomes_or_none(ep)
    return gigpo(o, ep.rewards, ep.extras["anchors"], ep.group_ids, mask=ep.mask, gamma=gamma, step_weight=step_weight,
                 mode=mode, episode_stats=episode_stats, similarity=similarity, episode_present=p)


def _run_turn_rloo(ep: Episodes, *, gamma, baseline) -> AdvantageOutput:
    ep.require("group_ids", method="turn_rloo")
    o = None
    if ep.outcomes is not None:
        o = np.where(_np(ep.outcome_present), _np(ep.outcomes), 0.0)
    return turn_rloo(ep.rewards, ep.group_ids, mask=ep.mask, gamma=gamma, outcomes=o, baseline=baseline)


def _run_igpo(ep: Episodes, *, gamma, outcome_weight) -> AdvantageOutput:
    ep.require("outcomes", "group_ids", method="igpo")
    if "belief_log_probs" not in ep.extras:
        raise MissingColumnError("method 'igpo' needs episodes.extras['belief_log_probs'], float[B, T+1]")
    o = np.where(_np(ep.outcome_present), _np(ep.outcomes), 0.0)
    return igpo(ep.extras["belief_log_probs"], o, ep.group_ids, mask=ep.mask, gamma=gamma, outcome_weight=outcome_weight)


def _run_oprl(ep: Episodes, *, step_weight, mode) -> AdvantageOutput:
    ep.require("outcomes", "group_ids", method="oprl")
    o = np.where(_np(ep.outcome_present), _np(ep.outcomes), 0.0)
    return oprl_advantages(ep.rewards, o, ep.group_ids, mask=ep.mask, step_weight=step_weight, mode=mode)


def _run_process(ep: Episodes, *, transform, eta, gate) -> RewardOutput:
    o, p = _outcomes_or_none(ep)
    return process_turn_rewards(ep.rewards, o, mask=ep.mask, transform=transform, eta=eta, gate=gate,
                                present=ep.reward_present, outcome_present=p)


_METHODS = [
    Method("gigpo", "llm", "GiGPO: episode-group advantage + anchor-state step-group advantage per turn",
           ("rewards", "group_ids", "extras.anchors"), "advantages",
           {"gamma": 0.95, "step_weight": 1.0, "mode": "mean_std_norm", "episode_stats": "trajectory", "similarity": None},
           "Feng et al. 2025, arXiv 2505.10978", run=_run_gigpo),
    Method("turn_rloo", "llm", "Turn-level returns-to-go minus a leave-one-out group baseline (unbiased for any turn counts)",
           ("rewards", "group_ids"), "advantages", {"gamma": 1.0, "baseline": "turn"},
           "creditlab; cf. verl-project/verl#7244", run=_run_turn_rloo),
    Method("igpo", "llm", "IGPO: per-turn information gain in the answer's probability, group-z-scored, returns-to-go",
           ("outcomes", "group_ids", "extras.belief_log_probs"), "advantages", {"gamma": 1.0, "outcome_weight": 1.0},
           "Wang et al. 2025, arXiv 2510.14967", run=_run_igpo),
    Method("oprl", "llm", "OPRL/iStar: group-normalized outcome + group-normalized implicit turn rewards",
           ("rewards", "outcomes", "group_ids"), "advantages", {"step_weight": 1.0, "mode": "mean_std_norm"},
           "Liu et al. 2025, arXiv 2509.19199", run=_run_oprl),
    Method("process_turn_rewards", "llm", "Per-turn process scores through Clip/Delta (and a G-RA gate), outcome on the last turn",
           ("rewards", "outcomes?"), "rewards", {"transform": "delta", "eta": 0.5, "gate": None},
           "Gao et al. 2024, arXiv 2410.15115; arXiv 2508.10548", run=_run_process),
]

for _m in _METHODS:
    register(_m, replace=True)
