"""Stable-Baselines3 integration: train PPO or SAC on credit-assigned rewards.

From low to high level:

* :class:`CreditAssignmentCallback` (:mod:`.callbacks`) -- on-policy algorithms (PPO, A2C): after
  each rollout, fit the assigner on the complete episodes, relabel the rollout's rewards,
  recompute GAE.
* :class:`CreditReplayBuffer` (:mod:`.replay`) -- off-policy algorithms (SAC, TD3): relabel the
  rewards of every sampled batch (as RRD does); log with :class:`CreditMetricsCallback`.
* :func:`make_env` (:mod:`.envs`) -- the one environment construction: a Gymnasium id,
  ``"module:Class"`` or a callable; reward ``"dense"`` / ``"episodic"`` / ``"delayed:K"``;
  ``Monitor`` under the delay wrapper; optional VecNormalize.
* :class:`Evaluator` (:mod:`.evaluation`) -- the one evaluation: deterministic episodes on the
  true reward, frozen observation normalization, the same seeds at every checkpoint.
* :class:`ExplorationBonusCallback` (:mod:`.exploration`) -- PPO/A2C: add an exploration bonus
  (:mod:`creditlab.exploration`) to the rollout before GAE, after any credit relabel.
* :func:`train` with :class:`RunConfig` (:mod:`.runner`) -- one run end to end, used by
  ``creditlab bench``, the reward-program trainer and the evidence scripts.
  :class:`SB3RunConfig` / :class:`SB3RunResult` are the older names (``SB3RunConfig`` also takes
  ``reward="delayed", delay=K``).
"""

from .callbacks import CreditAssignmentCallback, CreditMetricsCallback, RecomputeAdvantages, make_assigner
from .envs import env_factory, make_env, reward_wrapper
from .evaluation import Evaluation, EvaluationCallback, Evaluator, TrajectoryRecorder
from .exploration import ExplorationBonusCallback
from .replay import CreditReplayBuffer
from .runner import RunConfig, RunResult, SB3RunConfig, SB3RunResult, history_metrics, train

__all__ = [
    "CreditAssignmentCallback",
    "CreditReplayBuffer",
    "CreditMetricsCallback",
    "RecomputeAdvantages",
    "Evaluation",
    "EvaluationCallback",
    "ExplorationBonusCallback",
    "Evaluator",
    "TrajectoryRecorder",
    "RunConfig",
    "RunResult",
    "SB3RunConfig",
    "SB3RunResult",
    "env_factory",
    "history_metrics",
    "make_assigner",
    "make_env",
    "reward_wrapper",
    "train",
]
