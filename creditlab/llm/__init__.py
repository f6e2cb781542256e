"""Turn-level credit for multi-turn LLM agents.

Turns are the steps of the public ``[B, T]`` layout (one row per trajectory, one column per
turn, a prefix ``mask``); per-turn results go to tokens with ``turn_ids[B, L]`` and a response
mask (tool/observation tokens 0) through :func:`creditlab.broadcast_to_tokens`.

The registry adapters (``creditlab methods --family llm``) sit beside each function and read
the per-turn extras a method needs from ``episodes.extras``: ``anchors`` (GiGPO; an object array
of per-trajectory key lists, or ``int[B, T]``) and ``belief_log_probs`` (IGPO; ``float[B, T+1]``).
"""

from .anchors import anchor_ids, canonical_key
from .distill import opd_advantages, opd_token_rewards
from .gigpo import gigpo, gigpo_rows
from .igpo import igpo, igpo_rewards
from .implicit_prm import (
    ImplicitPRM,
    implicit_token_rewards,
    implicit_turn_rewards,
    oprl_advantages,
    oprl_dpo_loss,
    prime_advantages,
    prime_ce_loss,
    token_log_probs,
)
from .prefix_values import mc_values, spo_advantages, spo_cutpoints, vine_advantages
from .process import process_turn_rewards
from .spa import SPAProgressEstimator
from .tokens import place_on_last_token, turn_ids_from_response_mask, turn_values_from_tokens
from .tree import Forest, TreeAdvantageOutput, tree_grpo, tree_rloo, tree_token_layout, treerl, treerpo
from .turn_returns import turn_rloo
from .turns import TurnBatch

__all__ = [
    "Forest",
    "ImplicitPRM",
    "SPAProgressEstimator",
    "TreeAdvantageOutput",
    "TurnBatch",
    "anchor_ids",
    "canonical_key",
    "gigpo",
    "gigpo_rows",
    "igpo",
    "igpo_rewards",
    "implicit_token_rewards",
    "implicit_turn_rewards",
    "mc_values",
    "opd_advantages",
    "opd_token_rewards",
    "oprl_advantages",
    "oprl_dpo_loss",
    "prime_advantages",
    "prime_ce_loss",
    "process_turn_rewards",
    "spo_advantages",
    "spo_cutpoints",
    "token_log_probs",
    "tree_grpo",
    "tree_rloo",
    "tree_token_layout",
    "treerl",
    "treerpo",
    "place_on_last_token",
    "turn_ids_from_response_mask",
    "turn_rloo",
    "turn_values_from_tokens",
    "vine_advantages",
]
