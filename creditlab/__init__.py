"""creditlab: dense, trustworthy credit from sparse feedback, measured.

Conventions (see docs/conventions.md): B episodes, T steps, padded ``[B, T]`` arrays with a prefix
``mask``; termination as a per-step discount of 0, truncation as ``bootstrap_value[B]``; groups
as integer id arrays; G group size, K reward components, L tokens, N items.
"""

__version__ = "0.1.0"

from .advantage import (
    CrossTaskEMANormalizer,
    broadcast_to_steps,
    broadcast_to_tokens,
    combine_step_episode,
    discounted_returns,
    dr_grpo,
    gae,
    gdpo,
    grpo,
    lambda_returns,
    monte_carlo,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
    sum_then_normalize,
)
from .episodes import Episodes, pad, read_episodes
from .errors import (
    CreditlabError,
    DataFormatError,
    DegenerateGroupWarning,
    DtypeError,
    EmptyBatchError,
    GroupError,
    MaskError,
    MissingColumnError,
    NonFiniteError,
    RangeError,
    ShapeError,
    UnknownMethodError,
)
from .outputs import AdvantageOutput, RewardOutput
from .registry import Method, get_method, list_methods, register
from .shaping import (
    clip_process_rewards,
    delta_process_rewards,
    gated_accumulation,
    gated_levels,
    group_length_penalty,
    overlong_penalty,
    par,
    potential_shaping,
)
from .tables import write_table

__all__ = [
    "AdvantageOutput",
    "CreditlabError",
    "CrossTaskEMANormalizer",
    "DataFormatError",
    "DegenerateGroupWarning",
    "DtypeError",
    "EmptyBatchError",
    "Episodes",
    "GroupError",
    "MaskError",
    "Method",
    "MissingColumnError",
    "NonFiniteError",
    "RangeError",
    "RewardOutput",
    "ShapeError",
    "UnknownMethodError",
    "__version__",
    "broadcast_to_steps",
    "broadcast_to_tokens",
    "clip_process_rewards",
    "combine_step_episode",
    "delta_process_rewards",
    "discounted_returns",
    "dr_grpo",
    "gae",
    "gated_accumulation",
    "gated_levels",
    "gdpo",
    "get_method",
    "group_length_penalty",
    "grpo",
    "lambda_returns",
    "list_methods",
    "monte_carlo",
    "overlong_penalty",
    "pad",
    "par",
    "potential_shaping",
    "read_episodes",
    "register",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "sum_then_normalize",
    "write_table",
]
