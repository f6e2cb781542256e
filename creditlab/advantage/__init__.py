"""Advantage estimators (pure functions) and stateful normalizers."""

from .baselines import gpg, grpo_passk, maxrl, opo, optimal_token_baseline, remax
from .group import (
    combine_step_episode,
    dr_grpo,
    gdpo,
    grpo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
    sum_then_normalize,
)
from .kl import adaptive_kl_coef, kl_in_loss, kl_in_reward, kl_penalty
from .normalizers import CrossTaskEMANormalizer
from .returns import discounted_returns, gae, lambda_returns, monte_carlo
from .tokens import broadcast_to_steps, broadcast_to_tokens

__all__ = [
    "CrossTaskEMANormalizer",
    "adaptive_kl_coef",
    "broadcast_to_steps",
    "broadcast_to_tokens",
    "combine_step_episode",
    "discounted_returns",
    "dr_grpo",
    "gae",
    "gdpo",
    "gpg",
    "grpo",
    "grpo_passk",
    "kl_in_loss",
    "kl_in_reward",
    "kl_penalty",
    "lambda_returns",
    "maxrl",
    "monte_carlo",
    "opo",
    "optimal_token_baseline",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "remax",
    "rloo",
    "sum_then_normalize",
]
