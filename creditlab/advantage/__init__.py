"""Advantage estimators (pure functions) and stateful normalizers."""

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
from .normalizers import CrossTaskEMANormalizer
from .returns import discounted_returns, gae, lambda_returns, monte_carlo
from .tokens import broadcast_to_steps, broadcast_to_tokens

__all__ = [
    "CrossTaskEMANormalizer",
    "broadcast_to_steps",
    "broadcast_to_tokens",
    "combine_step_episode",
    "discounted_returns",
    "dr_grpo",
    "gae",
    "gdpo",
    "grpo",
    "lambda_returns",
    "monte_carlo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "sum_then_normalize",
]
