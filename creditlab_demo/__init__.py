"""A CPU demo that turn-level credit helps: tiny transformer agents trained from scratch.

Procedurally generated multi-turn text tasks with an outcome reward only at the end
(:mod:`~creditlab_demo.envs`), a word-level tokenizer, a tiny decoder policy with a KV
cache (:mod:`~creditlab_demo.policy`), batched multi-turn generation with response masks
(:mod:`~creditlab_demo.rollout`), a GRPO-style trainer whose per-turn credit comes from
``creditlab.grpo`` (outcome only), ``creditlab.llm.gigpo`` or ``creditlab.llm.igpo``
(:mod:`~creditlab_demo.train`), and a resumable sweep with plots
(:mod:`~creditlab_demo.experiment`, :mod:`~creditlab_demo.report`).

Run everything with ``creditlab demo all`` (or ``python -m creditlab_demo all``); see
docs/llm-demo.md.
"""

from .envs import KeyDoorEnv, SecretEnv, StepResult, make_env
from .experiment import TASKS, Task, load_results, run_config, run_sweep
from .policy import KVCache, PolicyConfig, TinyDecoder, masked_log_probs
from .rollout import Rollout, generate, sequence_log_probs
from .tokenizer import WordTokenizer
from .train import METHODS, TrainConfig, Trainer, policy_loss, turn_advantages

__all__ = [
    "KVCache",
    "KeyDoorEnv",
    "METHODS",
    "PolicyConfig",
    "Rollout",
    "SecretEnv",
    "StepResult",
    "TASKS",
    "Task",
    "TinyDecoder",
    "TrainConfig",
    "Trainer",
    "WordTokenizer",
    "generate",
    "load_results",
    "make_env",
    "masked_log_probs",
    "policy_loss",
    "run_config",
    "run_sweep",
    "sequence_log_probs",
    "turn_advantages",
]
