"""Registry entries of the credit assigners (kind ``"assigner"``).

``get_method(name).factory(**params)`` builds an assigner; its arguments never depend on the
environment (observation and action sizes are read from the first batch). ``get_method(name)(
episodes, **params)`` builds one, fits it on the batch and assigns the batch's rewards (handy for
the CLI: ``creditlab advantages FILE --credit rrd --credit-set updates_per_fit=500 ...``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..episodes import Episodes
from ..outputs import RewardOutput
from ..registry import Method, register
from .decomposition import LaReAssigner, RDAssigner, RRDAssigner
from .ircr import IRCRAssigner
from .rudder import RUDDERAssigner
from .uniform import UniformAssigner


def _defaults(cls: type) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if name != "self" and p.default is not inspect.Parameter.empty
    }


def _fit_assign(cls: type) -> Callable[..., RewardOutput]:
    def run(episodes: Episodes, **params: Any) -> RewardOutput:
        assigner = cls(**params)
        fit_metrics = assigner.fit(episodes)
        out = assigner.assign(episodes)
        return RewardOutput(out.rewards, {**fit_metrics, **out.metrics}, out.present)

    run.__name__ = f"fit_assign_{cls.__name__}"
    return run


_STEP_NEEDS = ("observations", "actions", "outcomes|rewards")

_ASSIGNERS = [
    (UniformAssigner, "uniform", "Uniform redistribution: every step of an episode gets R / T", ("outcomes|rewards",),
     "baseline in the IRCR and RRD papers"),
    (IRCRAssigner, "ircr", "IRCR guidance reward: per-step average return min-max normalized over a buffer + top-K heap",
     ("outcomes|rewards",), "Gangwani et al. 2020, arXiv 2010.12718"),
    (RDAssigner, "rd", "Return decomposition: MLP r(s, a, s'-s) whose per-step sum matches R (residual-corrected)",
     _STEP_NEEDS, "full-trajectory decomposition baseline (RRD/LaRe papers)"),
    (RRDAssigner, "rrd", "Randomized return decomposition: MLP r(s, a, s'-s), Monte Carlo K-step subsets (bias_correction for the unbiased variant)",
     _STEP_NEEDS, "Ren et al. 2022, arXiv 2111.13485"),
    (RUDDERAssigner, "rudder", "RUDDER: LSTM return predictions, rewards = prediction differences + residual",
     _STEP_NEEDS, "Arjona-Medina et al. 2019, arXiv 1806.07857"),
    (LaReAssigner, "lare", "LaRe: decoder on latent factors phi(s, a) (a feature function), RRD loss",
     _STEP_NEEDS, "Qu et al. 2025, arXiv 2412.11120"),
]

for _cls, _name, _summary, _needs, _source in _ASSIGNERS:
    register(
        Method(
            _name, "credit", _summary, _needs, "assigner", _defaults(_cls), _source,
            run=_fit_assign(_cls), factory=_cls,
        ),
        replace=True,
    )
