"""Global novelty from random network distillation: RND and NovelD.

* **RND** (Burda et al., ICLR 2019, arXiv 1810.12894): a fixed random network ``f_rand`` and a
  predictor ``f`` trained by MSE to match it on visited states; the novelty of a state is
  ``n(s) = ||f(s) - f_rand(s)||_2`` (the norm, as in the e3b and NovelD code), and the bonus of a
  step is ``n(s_{t+1})``. Observations are standardized by running per-feature moments and
  clipped to [-5, 5], as in the RND paper.
* **NovelD** (Zhang et al., NeurIPS 2021, arXiv 2012.08621): the bonus of a step is the clipped
  novelty *difference* ``max(n(s_{t+1}) - alpha n(s_t), 0)``, paid only on the first visit of
  ``s_{t+1}`` in the episode (``1[N_ep(s_{t+1}) = 1]``, keyed by state keys). alpha = 0.5 as in
  NovelD's code (``--scale_fac``); e3b's E3B x NovelD uses 0.1 and no gate.

Both are global bonuses: the predictor only learns (in :meth:`~RNDBonus.fit`), it never resets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._arrays import check_positive
from ..errors import RangeError
from ..registry import register_method
from ._nn import ObservationNorm, build_seeded, inference, make_mlp, train_minibatches
from .base import ExplorationBonus, Transitions
from .counts import episodic_visit_counts
from .functional import noveld_bonus

__all__ = ["RNDBonus", "NovelDBonus", "NOVELD_GATES"]

NOVELD_GATES = ("first_visit", "none")


@dataclass(frozen=True)
class _RNDConfig:
    hidden: tuple[int, ...] = (128, 128)
    out_dim: int = 64
    lr: float = 3e-4
    updates_per_fit: int = 8
    batch_size: int = 256
    normalize_observations: bool = True
    obs_clip: float = 5.0
    seed: int | None = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("out_dim", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise RangeError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        if int(self.updates_per_fit) < 0:
            raise RangeError(f"updates_per_fit must be >= 0; got {self.updates_per_fit!r}")
        check_positive(self.lr, "lr")
        check_positive(self.obs_clip, "obs_clip")


class _RND:
    """Target and predictor networks, the observation normalizer and the predictor's optimizer."""

    def __init__(self, cfg: _RNDConfig):
        self.cfg = cfg
        self.obs_dim: int | None = None
        self.norm = ObservationNorm(cfg.obs_clip, cfg.normalize_observations)
        self.rng = np.random.default_rng(cfg.seed)
        self.target: torch.nn.Module | None = None
        self.predictor: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def build(self, obs_dim: int) -> None:
        if self.obs_dim is not None:
            if obs_dim != self.obs_dim:
                raise RangeError(
                    f"observations have {obs_dim} features but the RND networks were built for {self.obs_dim}"
                )
            return
        cfg = self.cfg

        def nets():
            return make_mlp(obs_dim, cfg.hidden, cfg.out_dim), make_mlp(obs_dim, cfg.hidden, cfg.out_dim)

        self.target, self.predictor = build_seeded(cfg.seed, nets)
        self.target.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=cfg.lr)
        self.obs_dim = obs_dim

    @property
    def built_networks(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
        """``(target, predictor, optimizer)``, which exist once :meth:`build` ran (first batch, or a loaded checkpoint)."""
        assert self.target is not None and self.predictor is not None and self.optimizer is not None, (
            "RND: the target, predictor and optimizer are built on the first batch"
        )
        return self.target, self.predictor, self.optimizer

    def novelty(self, x: np.ndarray) -> np.ndarray:
        """float32[N] novelty of observations ``x[N, D]``."""
        self.build(x.shape[1])
        target, predictor, _ = self.built_networks
        z = self.norm(x)
        return inference(lambda b: torch.linalg.vector_norm(predictor(b) - target(b), dim=-1), z).numpy()

    def fit(self, x: np.ndarray, num_updates: int) -> dict[str, float]:
        self.build(x.shape[1])
        target, predictor, optimizer = self.built_networks
        self.norm.update(x)
        z = self.norm(x)
        with torch.inference_mode():
            goal = target(z)

        def loss_fn(idx: np.ndarray):
            i = torch.from_numpy(idx)
            err = ((predictor(z[i]) - goal[i]) ** 2).sum(-1)
            return err.mean(), {"exploration/rnd_loss": float(err.mean().detach())}

        return train_minibatches(
            loss_fn, optimizer, x.shape[0], num_updates=num_updates, batch_size=self.cfg.batch_size, rng=self.rng
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "obs_dim": self.obs_dim,
            "norm": self.norm.state_dict(),
            "rng": self.rng.bit_generator.state,
            "target": None if self.target is None else self.target.state_dict(),
            "predictor": None if self.predictor is None else self.predictor.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.norm.load_state_dict(state["norm"])
        self.rng.bit_generator.state = dict(state["rng"])
        if state["obs_dim"] is not None:
            self.obs_dim = None
            self.build(int(state["obs_dim"]))
            target, predictor, optimizer = self.built_networks
            target.load_state_dict(state["target"])
            predictor.load_state_dict(state["predictor"])
            optimizer.load_state_dict(state["optimizer"])


def _valid_rows(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])[valid.reshape(-1)]


_RND_DOC = """
        Attributes:
            hidden: hidden sizes of the target and predictor MLPs.
            out_dim: size of their output (the e3b/NovelD MiniGrid nets: 128; 64 here, for CPU cost).
            lr: Adam learning rate of the predictor.
            updates_per_fit: predictor gradient steps per :meth:`fit` unless ``num_updates`` is given.
            batch_size: states per gradient step.
            normalize_observations: standardize observations by running per-feature moments.
            obs_clip: clip of the standardized observations.
            seed: seeds network initialization and minibatch sampling."""


@register_method(
    "rnd",
    family="exploration",
    summary="RND global novelty ||f(s') - f_rand(s')|| of the state reached (predictor trained by MSE)",
    needs=("observations", "next_observations?"),
    kind="assigner",
    source="Burda et al., ICLR 2019 (arXiv 1810.12894)",
)
class RNDBonus(ExplorationBonus):
    """Random network distillation: bonus ``||f(s_{t+1}) - f_rand(s_{t+1})||``.

    Example:
        >>> from creditlab.exploration.base import make_transitions
        >>> obs = np.random.default_rng(0).normal(size=(64, 2, 3)).astype(np.float32)
        >>> tr = make_transitions(starts=np.eye(64, 2, dtype=bool), next_observations=obs)
        >>> rnd = RNDBonus(hidden=(32,), out_dim=8)
        >>> before = rnd.compute(tr).bonus.mean()
        >>> _ = rnd.fit(tr, num_updates=200)
        >>> bool(rnd.compute(tr).bonus.mean() < before)         # seen states become less novel
        True
    """

    @dataclass(frozen=True)
    class Config(_RNDConfig):
        __doc__ = "Parameters of :class:`RNDBonus`.\n" + _RND_DOC

    name = "rnd"
    scope = "step"
    uses_observations = True

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        self.model = _RND(self.config)

    def novelty(self, observations: np.ndarray) -> np.ndarray:
        """float32[N] novelty of observations ``[N, ...]`` under the current predictor."""
        x = np.asarray(observations, dtype=np.float32)
        return self.model.novelty(x.reshape(x.shape[0], -1))

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        t, e = tr.shape
        n = self.model.novelty(tr.states_reached.reshape(t * e, -1)).reshape(t, e)
        n = np.where(tr.valid(), n, 0.0).astype(np.float32)
        return n, {}

    def _fit(self, tr: Transitions, num_updates: int | None) -> dict[str, float]:
        x = _valid_rows(tr.states_reached, tr.valid())
        return self.model.fit(x, self.config.updates_per_fit if num_updates is None else num_updates)

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


@register_method(
    "noveld",
    family="exploration",
    summary="NovelD: max(n(s') - alpha n(s), 0) on the first visit of s' in the episode (RND novelty n)",
    needs=("observations", "next_observations?", "extras.state_keys?", "extras.next_state_keys?"),
    kind="assigner",
    source="Zhang et al., NeurIPS 2021 (arXiv 2012.08621); tianjunz/NovelD",
)
class NovelDBonus(ExplorationBonus):
    """NovelD: ``max(n(s_{t+1}) - alpha n(s_t), 0) * 1[N_ep(s_{t+1}) = 1]`` with RND novelty ``n``.

    The episodic gate reads state keys (``gate="none"`` drops it). :meth:`fit` trains the RND
    predictor on the states reached.

    Example (an episode a -> b -> a: the return to a is not a first visit, so it pays 0):
        >>> from creditlab.exploration.base import make_transitions
        >>> obs = np.array([[[0.0]], [[1.0]], [[0.0]]], dtype=np.float32)   # s_0, s_1, s_2 = a, b, a
        >>> tr = make_transitions(starts=[[1], [0]], observations=obs[:2], next_observations=obs[1:])
        >>> b = NovelDBonus(hidden=(8,), out_dim=4, normalize_observations=False).compute(tr).bonus[:, 0]
        >>> bool(b[0] >= 0), float(b[1])                       # a again: not a first visit
        (True, 0.0)
    """

    @dataclass(frozen=True)
    class Config(_RNDConfig):
        __doc__ = (
            "Parameters of :class:`NovelDBonus`.\n\n        Attributes:\n"
            "            alpha: scale of the novelty of the state left (NovelD: 0.5).\n"
            '            gate: "first_visit" (pay only on the first visit of s\' in the episode) or "none".\n'
            "            (the other fields configure the RND networks, as in RNDBonus.Config)" + _RND_DOC
        )
        alpha: float = 0.5
        gate: str = "first_visit"

        def __post_init__(self) -> None:
            super().__post_init__()
            check_positive(self.alpha, "alpha", allow_zero=True)
            if self.gate not in NOVELD_GATES:
                raise RangeError(f"gate must be one of {NOVELD_GATES}; got {self.gate!r}")

    name = "noveld"
    scope = "episode"
    uses_observations = True

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        self.uses_keys = self.config.gate == "first_visit"
        fields = {k: getattr(self.config, k) for k in _RNDConfig.__dataclass_fields__}
        self.model = _RND(_RNDConfig(**fields))

    def _new_memory(self, n_envs: int) -> list[dict[int, int]] | None:
        return [{} for _ in range(n_envs)] if self.uses_keys else None

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        if tr.observations is None:
            raise RangeError("noveld needs observations (s_t) as well as next_observations (s_{t+1})")
        t, e = tr.shape
        n1 = self.model.novelty(tr.states_reached.reshape(t * e, -1)).reshape(t, e)
        n0 = self.model.novelty(tr.observations.reshape(t * e, -1)).reshape(t, e)
        gate = episodic_visit_counts(tr, memory) == 1 if self.uses_keys else tr.valid()
        bonus = noveld_bonus(n1, n0, alpha=self.config.alpha, first_visit=gate & tr.valid())
        return bonus.astype(np.float32), {}

    def _fit(self, tr: Transitions, num_updates: int | None) -> dict[str, float]:
        x = _valid_rows(tr.states_reached, tr.valid())
        return self.model.fit(x, self.config.updates_per_fit if num_updates is None else num_updates)

    def _state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
