"""Registry entries of the built-in methods: thin adapters from :class:`Episodes` to pure functions.

Each adapter reads the fields a method needs from an Episodes batch and returns a per-step
result, so the CLI and the benchmark can run any method on any batch the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import advantage as adv
from . import shaping
from .episodes import Episodes
from .errors import MissingColumnError
from .outputs import AdvantageOutput, RewardOutput
from .registry import Method, register

# ------------------------------------------------------------------------------ helpers
#
# Which reward a method reads from an Episodes batch (documented in docs/data-format.md):
# * per-episode methods (GRPO, RLOO, ...) score an episode by its `outcome`; without outcomes, by
#   the sum of its named `components`; without either, by the sum of its per-step `rewards`;
# * per-step methods (GAE, Monte Carlo, REINFORCE++) use the per-step `rewards` with the
#   episode-level feedback (outcome, else the sum of components) added on the last step.
# The metrics say which source was used (`input/...` keys).


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(ep: Episodes, arr: np.ndarray) -> Any:
    """A NumPy result in the array kind (and device) of the batch."""
    if ep.is_torch:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(ep.rewards.device)
    return arr


def episode_scores(ep: Episodes) -> tuple[Any, Any, dict[str, float]]:
    """(scores[B], present[B] or None, metrics naming the source)."""
    if ep.outcomes is not None:
        return ep.outcomes, ep.outcome_present, {"input/score_from_outcome": 1.0}
    if ep.components is not None:
        c, p = _np(ep.components), _np(ep.component_present)
        scores = np.where(p, c, 0.0).sum(axis=1).astype(c.dtype)
        return _like(ep, scores), _like(ep, p.any(axis=1)), {"input/score_from_components": 1.0}
    return ep.returns(), None, {"input/score_from_rewards": 1.0}


def step_rewards(ep: Episodes) -> tuple[Any, dict[str, float]]:
    """Per-step rewards with the episode-level feedback (if any) added on the last step."""
    if ep.outcomes is None and ep.components is None:
        return ep.rewards, {"input/rewards_per_step": 1.0}
    scores, present, meta = episode_scores(ep)
    r = _np(ep.rewards).copy()
    s = np.where(_np(present), _np(scores), 0.0) if present is not None else _np(scores)
    r[np.arange(ep.num_episodes), _np(ep.lengths) - 1] += s.astype(r.dtype)
    meta = {k.replace("score_from", "last_step_from"): v for k, v in meta.items()}
    meta["input/rewards_per_step"] = 1.0
    return _like(ep, r), meta


def _per_step(ep: Episodes, out: AdvantageOutput, meta: dict[str, float]) -> AdvantageOutput:
    steps = adv.broadcast_to_steps(out.advantages, ep.mask)
    return AdvantageOutput(steps, None, {**out.metrics, **meta})


def _step_kwargs(ep: Episodes) -> dict[str, Any]:
    return dict(mask=ep.mask, discounts=ep.discounts, bootstrap_value=ep.bootstrap_value)


# ------------------------------------------------------------------------------ advantages


def _run_gae(ep: Episodes, *, gamma: float, lambda_: float) -> AdvantageOutput:
    r, meta = step_rewards(ep)
    out = adv.gae(r, ep.values, gamma=gamma, lambda_=lambda_, **_step_kwargs(ep))
    return AdvantageOutput(out.advantages, out.returns, {**out.metrics, **meta})


def _run_mc(ep: Episodes, *, gamma: float) -> AdvantageOutput:
    r, meta = step_rewards(ep)
    out = adv.monte_carlo(r, ep.values, gamma=gamma, **_step_kwargs(ep))
    return AdvantageOutput(out.advantages, out.returns, {**out.metrics, **meta})


def _run_grpo(ep: Episodes, *, std_scale: str, eps: float) -> AdvantageOutput:
    r, p, meta = episode_scores(ep)
    return _per_step(ep, adv.grpo(r, ep.group_ids, std_scale=std_scale, eps=eps, present=p), meta)


def _run_dr_grpo(ep: Episodes) -> AdvantageOutput:
    r, p, meta = episode_scores(ep)
    return _per_step(ep, adv.dr_grpo(r, ep.group_ids, present=p), meta)


def _run_rloo(ep: Episodes) -> AdvantageOutput:
    r, p, meta = episode_scores(ep)
    return _per_step(ep, adv.rloo(r, ep.group_ids, present=p), meta)


def _run_rpp_baseline(ep: Episodes, *, eps: float, length_weighted: bool) -> AdvantageOutput:
    r, p, meta = episode_scores(ep)
    w = ep.lengths if length_weighted else None
    return _per_step(ep, adv.reinforce_pp_baseline(r, ep.group_ids, eps=eps, weights=w, present=p), meta)


def _run_rpp(ep: Episodes, *, gamma: float, eps: float) -> AdvantageOutput:
    r, meta = step_rewards(ep)
    out = adv.reinforce_pp(r, mask=ep.mask, gamma=gamma, eps=eps)
    return AdvantageOutput(out.advantages, out.returns, {**out.metrics, **meta})


def _run_gdpo(ep: Episodes, *, weights: Any, eps: float, batch_norm: bool) -> AdvantageOutput:
    out = adv.gdpo(
        ep.components, ep.group_ids, weights=weights, eps=eps, batch_norm=batch_norm, names=ep.component_names, present=ep.component_present
    )
    return _per_step(ep, out, {"input/score_from_components": 1.0})


def _run_sum_norm(ep: Episodes, *, weights: Any, std_scale: str, eps: float) -> AdvantageOutput:
    out = adv.sum_then_normalize(
        ep.components, ep.group_ids, weights=weights, std_scale=std_scale, eps=eps, names=ep.component_names, present=ep.component_present
    )
    return _per_step(ep, out, {"input/score_from_components": 1.0})


def _run_ctan(ep: Episodes, *, beta: float, eps: float, per_task: bool) -> AdvantageOutput:
    r, p, meta = episode_scores(ep)
    norm = adv.CrossTaskEMANormalizer(beta=beta, eps=eps, per_task=per_task)
    if per_task and ep.task_ids is None:
        raise MissingColumnError("method 'ctan' with per_task=True needs episodes.task_ids (a 'task_id' column)")
    return _per_step(ep, norm(r, ep.group_ids, task_ids=ep.task_ids, present=p), meta)


# ------------------------------------------------------------------------------ reward transforms


def _run_potential(ep: Episodes, *, gamma: float, key: str) -> RewardOutput:
    if key not in ep.extras:
        raise MissingColumnError(f"potential shaping needs a per-step potential column {key!r} (Phi(s_t))")
    boot = None
    if "bootstrap_potential" in ep.extras:  # Phi(s_T) for truncated episodes, on the last row
        bp = _np(ep.extras["bootstrap_potential"])
        boot = _like(ep, bp[np.arange(ep.num_episodes), _np(ep.lengths) - 1])
    return shaping.potential_shaping(
        ep.rewards, ep.extras[key], gamma=gamma, mask=ep.mask, discounts=ep.discounts, bootstrap_potential=boot
    )


def _run_clip(ep: Episodes, *, eta: float) -> RewardOutput:
    return shaping.clip_process_rewards(ep.rewards, eta=eta, mask=ep.mask, present=ep.reward_present)


def _run_delta(ep: Episodes) -> RewardOutput:
    return shaping.delta_process_rewards(ep.rewards, mask=ep.mask, present=ep.reward_present)


def _run_gated(ep: Episodes, *, gate: float) -> RewardOutput:
    return shaping.gated_accumulation(ep.rewards, ep.outcomes, gate=gate, mask=ep.mask, outcome_present=ep.outcome_present)


def _lengths_for_penalty(ep: Episodes, key: str):
    if key in ep.extras:
        return _np(ep.extras[key])[np.arange(ep.num_episodes), _np(ep.lengths) - 1]
    return ep.lengths


def _run_overlong(ep: Episodes, *, max_length: int, cache_length: int, key: str) -> RewardOutput:
    pen = shaping.overlong_penalty(_lengths_for_penalty(ep, key), max_length=max_length, cache_length=cache_length)
    return _add_on_last_step(ep, pen)


def _run_group_length(ep: Episodes, *, coef: float, reference: str, key: str) -> RewardOutput:
    r, p, meta = episode_scores(ep)
    correct = _np(r) > 0
    if p is not None:
        correct &= _np(p)
    pen = shaping.group_length_penalty(_lengths_for_penalty(ep, key), ep.group_ids, correct=correct, coef=coef, reference=reference)
    return _add_on_last_step(ep, pen, meta)


def _add_on_last_step(ep: Episodes, pen: RewardOutput, meta: dict[str, float] | None = None) -> RewardOutput:
    """Per-step rewards (with the episode feedback on the last step) plus a per-episode penalty there."""
    base, step_meta = step_rewards(ep)
    r = _np(base).copy()
    r[np.arange(ep.num_episodes), _np(ep.lengths) - 1] += _np(pen.rewards).astype(r.dtype)
    return RewardOutput(_like(ep, r), {**pen.metrics, **step_meta, **(meta or {})})


# ------------------------------------------------------------------------------ registration

_ADV = [
    Method("gae", "advantage", "Generalized advantage estimation; termination cuts, truncation bootstraps",
           ("rewards|outcomes|components", "values"), "advantages", {"gamma": 0.99, "lambda_": 0.95},
           "Schulman et al. 2016, arXiv 1506.02438", run=_run_gae),
    Method("monte_carlo", "advantage", "Discounted return-to-go minus the value baseline (0 without values)",
           ("rewards|outcomes|components", "values?"), "advantages", {"gamma": 0.99}, "Sutton & Barto; REINFORCE", run=_run_mc),
    Method("grpo", "advantage", "Group-relative z-score of the episode outcome (std by group/batch/none)",
           ("outcomes|components|rewards", "group_ids"), "advantages", {"std_scale": "group", "eps": 1e-6},
           "Shao et al. 2024, arXiv 2402.03300", run=_run_grpo),
    Method("dr_grpo", "advantage", "Dr. GRPO: outcome minus group mean, no std division",
           ("outcomes|components|rewards", "group_ids"), "advantages", {}, "Liu et al. 2025, arXiv 2503.20783", run=_run_dr_grpo),
    Method("rloo", "advantage", "REINFORCE leave-one-out baseline within each group",
           ("outcomes|components|rewards", "group_ids"), "advantages", {}, "Ahmadian et al. 2024, arXiv 2402.14740", run=_run_rloo),
    Method("reinforce_pp", "advantage", "REINFORCE++: returns-to-go whitened over the whole batch",
           ("rewards|outcomes|components",), "advantages", {"gamma": 1.0, "eps": 1e-8}, "Hu 2025, arXiv 2501.03262", run=_run_rpp),
    Method("reinforce_pp_baseline", "advantage", "REINFORCE++-baseline: group mean subtracted, batch whitening",
           ("outcomes|components|rewards", "group_ids"), "advantages", {"eps": 1e-8, "length_weighted": False},
           "Hu 2025, arXiv 2501.03262", run=_run_rpp_baseline),
    Method("gdpo", "normalization", "GDPO: each reward component normalized in its group, weighted sum, batch norm",
           ("components", "group_ids"), "advantages", {"weights": None, "eps": 1e-4, "batch_norm": True},
           "Liu et al. 2026, arXiv 2601.05242", run=_run_gdpo),
    Method("sum_then_normalize", "normalization", "Weighted sum of reward components, then GRPO normalization",
           ("components", "group_ids"), "advantages", {"weights": None, "std_scale": "group", "eps": 1e-4},
           "TRL multi_objective_aggregation='sum_then_normalize'", run=_run_sum_norm),
    Method("ctan", "normalization", "Cross-task EMA normalization: group-centred, divided by an EMA of the batch std",
           ("outcomes|components|rewards", "group_ids"), "advantages", {"beta": 0.999, "eps": 1e-4, "per_task": False},
           "RaPO, Overcoming Catastrophic Forgetting in Visual Continual Learning with RFT", run=_run_ctan),
]

_REWARDS = [
    Method("potential_shaping", "shaping", "Potential-based shaping gamma*Phi(s') - Phi(s); Phi = 0 at termination",
           ("rewards", "extras.potential"), "rewards", {"gamma": 0.99, "key": "potential"},
           "Ng, Harada & Russell 1999", run=_run_potential),
    Method("clip_process", "shaping", "Clip PRM step scores: min(s - eta, 0), never positive",
           ("rewards",), "rewards", {"eta": 0.5}, "Gao et al. 2024, arXiv 2410.15115", run=_run_clip),
    Method("delta_process", "shaping", "Delta PRM step scores: s_k - s_{k+1}; return from step k equals s_k",
           ("rewards",), "rewards", {}, "Gao et al. 2024, arXiv 2410.15115", run=_run_delta),
    Method("gated_accumulation", "credit", "G-RA: step rewards count only if the outcome reaches the gate",
           ("rewards", "outcomes"), "rewards", {"gate": 1.0}, "arXiv 2508.10548", run=_run_gated),
    Method("overlong_penalty", "shaping", "DAPO soft overlong penalty added at the last step",
           ("rewards|outcomes|components", "extras.length?"), "rewards", {"max_length": 512, "cache_length": 128, "key": "length"},
           "Yu et al. 2025 (DAPO), arXiv 2503.14476", run=_run_overlong),
    Method("group_length_penalty", "shaping", "Length penalty relative to the group's (correct) responses",
           ("rewards|outcomes|components", "group_ids", "extras.length?"), "rewards", {"coef": 1.0, "reference": "group", "key": "length"},
           "Kimi k1.5, arXiv 2501.12599", run=_run_group_length),
]

for _m in _ADV + _REWARDS:
    register(_m, replace=True)

from .llm import methods as _llm_methods  # noqa: E402,F401  (turn-level methods of creditlab.llm)
