"""Turn-level credit for multi-turn LLM agents.

Turns are the steps of the public ``[B, T]`` layout (one row per trajectory, one column per
turn, a prefix ``mask``); per-turn results go to tokens with ``turn_ids[B, L]`` and a response
mask (tool/observation tokens 0) through :func:`creditlab.broadcast_to_tokens`.
"""

from .anchors import anchor_ids, canonical_key
from .gigpo import gigpo
from .igpo import igpo, igpo_rewards
from .turn_returns import turn_rloo

__all__ = [
    "anchor_ids",
    "canonical_key",
    "gigpo",
    "igpo",
    "igpo_rewards",
    "turn_rloo",
]
