"""LLM-written reward and latent-feature programs: client, prompts, validation, sandbox, selection.

Generated code is untrusted. It is checked statically (:func:`check_static`), then run only in a
separate, confined worker process (:class:`SandboxedProgram`); see docs/programs.md for the threat
model. Typical use::

    from creditlab.programs import LLMClient, LLMConfig, load_spec, generate_lare_factors, lare_features

    spec = load_spec("examples/programs/reacher.yaml")
    result = generate_lare_factors(spec, LLMClient(LLMConfig(model="gpt-4o")))
    result.save("out/reacher")                          # program.py + provenance.json
    with lare_features(result.program) as phi:           # phi(obs[N, o], act[N, a]) -> float[N, d]
        features = phi(obs, act)
"""

from .client import Completion, LLMClient, LLMConfig, ResponseCache
from .errors import BudgetExceededError, LLMError, ProgramError, ResponseFormatError, SpecError
from .loaders import SandboxedFeatures, SandboxedReward, lare_features
from .program import Program, load_program
from .progress import GenerationEvent, GenerationProgress
from .sandbox import CallOutput, SandboxConfig, SandboxedProgram, probe_layers
from .selection import (
    CalmLabels,
    Candidate,
    GenerationResult,
    TrainScore,
    analyze_trajectories,
    calm_label_transitions,
    calm_rewards,
    calm_subgoals,
    critic_review,
    develop_candidate,
    generate_lare_factors,
    refine_reward,
    summarize_episode,
)
from .spec import TaskSpec, load_spec
from .validate import ValidationReport, check_program, check_static

__all__ = [
    "GenerationEvent",
    "GenerationProgress",
    "BudgetExceededError",
    "CallOutput",
    "CalmLabels",
    "Candidate",
    "Completion",
    "DenseRewardVecEnvWrapper",
    "DenseRewardWrapper",
    "GenerationResult",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "Program",
    "ProgramError",
    "ResponseCache",
    "ResponseFormatError",
    "SandboxConfig",
    "SandboxedFeatures",
    "SandboxedProgram",
    "SandboxedReward",
    "SpecError",
    "TaskSpec",
    "TrainScore",
    "ValidationReport",
    "analyze_trajectories",
    "calm_label_transitions",
    "calm_rewards",
    "calm_subgoals",
    "check_program",
    "check_static",
    "critic_review",
    "develop_candidate",
    "generate_lare_factors",
    "lare_features",
    "load_program",
    "load_spec",
    "probe_layers",
    "refine_reward",
    "summarize_episode",
]


def __getattr__(name: str):
    """Gymnasium / SB3 wrappers are built on first use (optional dependencies, slow imports)."""
    if name in ("DenseRewardWrapper", "DenseRewardVecEnvWrapper"):
        from . import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
