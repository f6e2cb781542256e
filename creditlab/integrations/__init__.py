"""Adapters to the RL ecosystem. Import the submodule you need (each has optional dependencies):

* :mod:`creditlab.integrations.gymnasium` -- ``EpisodicReward`` / ``DelayedReward`` wrappers and
  their vector twins (needs ``gymnasium``);
* :mod:`creditlab.integrations.sb3` -- Stable-Baselines3 PPO (``CreditAssignmentCallback``) and
  SAC (``CreditReplayBuffer``) with any credit assigner, and the one SB3 runner (``train`` /
  ``RunConfig``: environments, evaluation on the true reward, metrics) that the benchmark and the
  reward-program trainer use (needs ``stable-baselines3``).

Keys shared by the adapters (documented in docs/credit.md):
"""

TRUE_REWARD_KEY = "creditlab/true_reward"
"""``info`` key holding the hidden true per-step reward of a delayed task (evaluation only:
no credit assigner may read it)."""

__all__ = ["TRUE_REWARD_KEY"]
