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

:func:`credit_quality` scores assigned rewards against hidden true per-step rewards. The
registry names are ``uniform``, ``ircr``, ``rd``, ``rrd``, ``rudder`` and ``lare`` (kind
``"assigner"``; build with ``get_method(name).factory(**params)``).
"""

from .base import CreditAssigner, EpisodeArrays, episode_arrays, load_assigner, save_assigner
from .decomposition import LaReAssigner, RDAssigner, RRDAssigner, rd_loss, rrd_loss
from .features import HAND_WRITTEN, FeatureGuard, resolve_features
from .ircr import IRCRAssigner, ircr_rewards
from .quality import QualityOutput, credit_quality
from .rudder import RUDDERAssigner, rudder_redistribution
from .store import EpisodeBatch, EpisodeStore, StepSubsets, sample_subsets
from .uniform import UniformAssigner, uniform_rewards

ASSIGNER_CLASSES = {
    cls.__name__: cls for cls in (UniformAssigner, IRCRAssigner, RDAssigner, RRDAssigner, RUDDERAssigner, LaReAssigner)
}

__all__ = [
    "ASSIGNER_CLASSES",
    "CreditAssigner",
    "EpisodeArrays",
    "EpisodeBatch",
    "EpisodeStore",
    "FeatureGuard",
    "HAND_WRITTEN",
    "IRCRAssigner",
    "LaReAssigner",
    "QualityOutput",
    "RDAssigner",
    "RRDAssigner",
    "RUDDERAssigner",
    "StepSubsets",
    "UniformAssigner",
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
