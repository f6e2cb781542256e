"""Credit assigners: dense per-step rewards from episode-level (or delayed) feedback.

Every assigner follows :class:`CreditAssigner` (``fit`` / ``assign`` / ``state_dict``):

==================  =========  ===============================================================
assigner            scope      method
==================  =========  ===============================================================
UniformAssigner     episode    R / T on every step
IRCRAssigner        episode    min-max normalized per-step average return (Gangwani et al. 2020)
RDAssigner          step       MLP r_hat(s, a, s'-s), full-trajectory decomposition loss
RRDAssigner         step       same model, randomized K-step subsets (Ren et al. 2022)
RUDDERAssigner      episode    LSTM return prediction differences + residual (Arjona-Medina 2019)
LaReAssigner        step       decoder on latent factors phi(s, a), RRD loss (Qu et al. 2025)
==================  =========  ===============================================================

Multi-agent teams (rows = (team episode, agent) pairs, ``group_ids`` = the team episode; see
:mod:`creditlab.credit.multiagent`): ``TeamUniformAssigner``, ``TeamRDAssigner``,
``TeamRRDAssigner`` and ``TeamLaReAssigner`` (registry family ``multiagent``: ``team_uniform``,
``team_rd``, ``team_rrd``, ``team_lare``) split a team's return across its agents and steps.

:func:`credit_quality` scores assigned rewards against hidden true per-step rewards. The
registry names are ``uniform``, ``ircr``, ``rd``, ``rrd``, ``rudder`` and ``lare`` (kind
``"assigner"``; build with ``get_method(name).factory(**params)``); each class registers itself
where it is defined. Every assigner is built from keywords or from its config dataclass
(``RRDAssigner(subset_size=8)`` or ``RRDAssigner(RRDConfig(subset_size=8))``). The learned ones
share one base, :class:`~creditlab.credit.learned.LearnedAssigner` (store, normalizer,
optimizer, fit loop, checkpoints, random state).
"""

from .base import AssignerConfig, CreditAssigner, EpisodeArrays, episode_arrays, load_assigner, save_assigner
from .decomposition import LaReAssigner, LaReConfig, RDAssigner, RDConfig, RRDAssigner, RRDConfig, rd_loss, rrd_loss
from .features import HAND_WRITTEN, FeatureGuard, resolve_features
from .ircr import IRCRAssigner, IRCRConfig, ircr_rewards
from .learned import LearnedAssigner, LearnedConfig, ReplayConfig, UntrainedAssignerWarning
from .multiagent import (
    TeamLaReAssigner,
    TeamLaReConfig,
    TeamRDAssigner,
    TeamRDConfig,
    TeamRRDAssigner,
    TeamRRDConfig,
    TeamUniformAssigner,
    TeamUniformConfig,
)
from .quality import QualityOutput, credit_quality
from .rudder import RUDDERAssigner, RUDDERConfig, rudder_redistribution
from .store import EpisodeBatch, EpisodeStore, StepSubsets, sample_subsets
from .uniform import UniformAssigner, UniformConfig, uniform_rewards

ASSIGNER_CLASSES = {
    cls.__name__: cls
    for cls in (
        UniformAssigner,
        IRCRAssigner,
        RDAssigner,
        RRDAssigner,
        RUDDERAssigner,
        LaReAssigner,
        TeamUniformAssigner,
        TeamRDAssigner,
        TeamRRDAssigner,
        TeamLaReAssigner,
    )
}

__all__ = [
    "ASSIGNER_CLASSES",
    "AssignerConfig",
    "CreditAssigner",
    "EpisodeArrays",
    "EpisodeBatch",
    "EpisodeStore",
    "FeatureGuard",
    "HAND_WRITTEN",
    "IRCRAssigner",
    "IRCRConfig",
    "LaReAssigner",
    "LaReConfig",
    "LearnedAssigner",
    "LearnedConfig",
    "QualityOutput",
    "RDAssigner",
    "RDConfig",
    "RRDAssigner",
    "RRDConfig",
    "RUDDERAssigner",
    "RUDDERConfig",
    "ReplayConfig",
    "StepSubsets",
    "TeamLaReAssigner",
    "TeamLaReConfig",
    "TeamRDAssigner",
    "TeamRDConfig",
    "TeamRRDAssigner",
    "TeamRRDConfig",
    "TeamUniformAssigner",
    "TeamUniformConfig",
    "UniformAssigner",
    "UniformConfig",
    "UntrainedAssignerWarning",
    "credit_quality",
    "episode_arrays",
    "ircr_rewards",
    "load_assigner",
    "rd_loss",
    "resolve_features",
    "rrd_loss",
    "rudder_redistribution",
    "sample_subsets",
    "save_assigner",
    "uniform_rewards",
]
