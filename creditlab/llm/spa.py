"""SPA-RL stepwise progress attribution (Wang et al. 2025, arXiv 2505.20732).

A small learned *progress estimator* maps each turn's feature vector ``x_t`` (anything the user
has per turn: an embedding of the turn's text, hand-made state features, ...) to a contribution
``c_t``. It is trained so that the contributions of a trajectory sum to its outcome:

    loss = mean_i ( sum_t c_{i,t} - R_i )^2

which is return decomposition (RUDDER / RRD family) with the paper's per-turn head. The turn
reward for RL is ``r_t = c_t + grounding_weight * g_t`` where ``g_t`` in [0, 1] says whether the
turn's action was grounded (executable) in the environment; the released code uses weight 0.5 on
a 0/1 indicator (and grants it on the last turn).

The paper puts a linear head on the SFT LLM backbone (LR 3e-6, 1 epoch). Here the backbone is
whatever produced ``x_t``; the estimator is a small MLP (``hidden=0`` makes it linear), cheap
enough to refit every iteration on a CPU. A one-turn trajectory reduces to ``c_0 ~ R``.

The estimator is a :class:`~creditlab.credit.learned.LearnedAssigner` (optimizer, gradient-step
loop, checkpoints, random state, which episodes count as complete); it keeps no episode store:
``fit`` trains for several epochs on the batch it is given.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .._arrays import ArrayLike, Backend, as_float, as_mask, check_nonempty
from ..credit._nn import FirstBatchStandardizer
from ..credit.learned import LearnedAssigner, LearnedConfig, Loss
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method

__all__ = ["SPAConfig", "SPAProgressEstimator"]


@dataclass(frozen=True, kw_only=True)
class SPAConfig(LearnedConfig):
    """SPA-RL's progress estimator: a per-turn head on turn features, plus grounding."""

    lr: float = 1e-3
    """Adam learning rate."""
    feature_dim: int | None = None
    """D, the size of each turn's feature vector (None: taken from the first training batch)."""
    hidden: int = 64
    """Width of the hidden layers (0: a linear head, as in the paper)."""
    num_layers: int = 2
    """Number of tanh hidden layers (ignored when ``hidden=0``)."""
    grounding_weight: float = 0.5
    """Weight of the grounding indicator in :meth:`SPAProgressEstimator.assign` (the code: 0.5)."""
    standardize: bool = True
    """Scale features by their mean/std, taken from the first :meth:`~SPAProgressEstimator.fit` / ``update``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("feature_dim", self.feature_dim is None or self.feature_dim >= 1, ">= 1 or None")
        self._check("hidden", self.hidden >= 0, ">= 0")
        self._check("num_layers", self.num_layers >= 1, ">= 1")


@register_method(
    "spa",
    family="llm",
    kind="assigner",
    needs=("observations", "outcomes|rewards"),
    summary="SPA-RL progress estimator: learned per-turn contributions summing to the outcome, + grounding",
    source="Wang et al. 2025, arXiv 2505.20732",
)
class SPAProgressEstimator(LearnedAssigner):
    """Per-turn progress model whose contributions sum to the outcome (SPA-RL).

    It follows the :class:`creditlab.credit.CreditAssigner` protocol (``fit(episodes)``,
    ``assign(episodes)``, ``state_dict``), reading the per-turn features from
    ``Episodes.observations`` and the target from the outcome, so the registry, the CLI and the
    SB3 integration can drive it like any other assigner. Its ``scope`` is "step": a turn's
    contribution depends only on that turn's features.

    Parameters: :class:`SPAConfig`, as keywords or a config object; ``feature_dim`` may also be
    given first, by position (``SPAProgressEstimator(5, hidden=0)``).

    Example (two features; turn contributions are 1 * x0 + 0 * x1):
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(256, 4, 2)); mask = np.ones((256, 4), bool)
        >>> est = SPAProgressEstimator(2, hidden=0, lr=0.05, seed=0)
        >>> _ = est.fit(x, x[..., 0].sum(1), mask=mask, epochs=300)
        >>> c = est.contributions(x, mask=mask)
        >>> bool(np.abs(c - x[..., 0]).max() < 0.05)
        True
    """

    Config = SPAConfig
    name = "spa"
    scope = "step"
    model_fields = ("feature_dim", "hidden", "num_layers")

    def __init__(self, config: Any = None, /, **overrides: Any):
        if isinstance(config, numbers.Integral) and not isinstance(config, bool):  # positional feature_dim
            overrides = {"feature_dim": config, **overrides}
            config = None
        super().__init__(config, **overrides)
        self._dtype = torch.float32
        if self.config.feature_dim is not None:
            self._build(self.config.feature_dim)

    # ------------------------------------------------------------------ the model

    def make_norm(self) -> FirstBatchStandardizer:
        return FirstBatchStandardizer()

    def build_model(self, in_dim: int) -> torch.nn.Module:
        self.config = replace(self.config, feature_dim=in_dim)
        return _mlp(in_dim, self.config.hidden, self.config.num_layers, self.torch_rng)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Loss:
        """``mean_i ( sum_t c_{i,t} - R_i )^2``."""
        x, r, m = batch
        return Loss(((self._forward(x, m).sum(dim=1) - r) ** 2).mean())

    @property
    def net(self) -> torch.nn.Module | None:
        """The progress head (``model``)."""
        return self.model

    @property
    def feature_mean(self) -> torch.Tensor | None:
        return self.norm.mean

    @property
    def feature_std(self) -> torch.Tensor | None:
        return self.norm.std

    # ------------------------------------------------------------------ learning

    def update(
        self, features: Any, outcomes: ArrayLike | None = None, *, mask: ArrayLike | None = None
    ) -> dict[str, float]:
        """One gradient step on a batch; returns ``{"spa/loss": ..}``.

        Args:
            features: float[B, T, D] per-turn features (or an :class:`~creditlab.Episodes`
                whose ``observations`` are the features and whose outcome is the target).
            outcomes: float[B] -- the outcome each trajectory's contributions must sum to.
            mask: bool[B, T] -- valid turns (prefix).
        """
        self._fit_calls += 1
        batch, _ = self._training_batch(features, outcomes, mask)
        if batch is None:
            self._check_starved()
            return {"spa/loss": float("nan")}
        losses, _ = self.train_steps([batch])
        return {"spa/loss": losses[0]}

    def fit(
        self,
        features: Any = None,
        outcomes: ArrayLike | None = None,
        *,
        mask: ArrayLike | None = None,
        epochs: int = 100,
        batch_size: int | None = None,
        num_updates: int | None = None,
    ) -> dict[str, float]:
        """Several epochs of minibatch updates (whole batch when ``batch_size`` is None).

        ``num_updates`` (the assigner-protocol spelling) overrides ``epochs``. The estimator keeps
        no episode memory, so ``fit()`` without data is a no-op. An Episodes batch contributes
        its complete trajectories (see :mod:`creditlab.credit.base`); the others are counted in
        ``store/skipped_*``.

        Returns metrics: ``spa/loss`` (final training MSE of the sum), ``spa/r2`` (variance of
        the outcome explained by the summed contributions), ``spa/epochs``, ``credit/updates``
        and ``credit/total_updates`` (and ``store/skipped_*`` for an Episodes batch). Warns
        (:class:`~creditlab.credit.learned.UntrainedAssignerWarning`, once) when an Episodes batch
        had no complete trajectory.
        """
        self._fit_calls += 1
        if features is None:
            return {"spa/epochs": 0.0, "credit/updates": 0.0, "credit/total_updates": float(self.num_updates)}
        if num_updates is not None:
            epochs = int(num_updates)
        batch, metrics = self._training_batch(features, outcomes, mask)
        if batch is None:
            self._check_starved()
            return {
                **metrics,
                "spa/epochs": 0.0,
                "credit/updates": 0.0,
                "credit/total_updates": float(self.num_updates),
            }
        x, r, m = batch
        b = x.shape[0]
        size = b if batch_size is None else max(1, min(int(batch_size), b))
        losses, _ = self.train_steps(self._minibatches(x, r, m, int(epochs), size))
        with torch.no_grad():
            pred = self._forward(x, m).sum(dim=1)
            mse = float(((pred - r) ** 2).mean())
            var = float(r.var(unbiased=False))
        return {
            **metrics,
            "spa/loss": mse,
            "spa/r2": 1.0 - mse / var if var > 0 else float("nan"),
            "spa/epochs": float(epochs),
            "credit/updates": float(len(losses)),
            "credit/total_updates": float(self.num_updates),
        }

    def _minibatches(
        self, x: torch.Tensor, r: torch.Tensor, m: torch.Tensor, epochs: int, size: int
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        b = x.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(b, generator=self.torch_rng) if size < b else torch.arange(b)
            for start in range(0, b, size):
                idx = perm[start : start + size]
                yield x[idx], r[idx], m[idx]

    # ------------------------------------------------------------------ inference

    def contributions(self, features: Any, *, mask: ArrayLike | None = None) -> ArrayLike:
        """float[B, T] -- the estimated contribution ``c_t`` of every turn; 0 on padding."""
        backend = Backend.of(features.observations if _is_episodes(features) else features)
        x, _, m = self._inputs(features, None, mask, need_target=False)
        self._check_untrained({})  # (a starved estimator is warned about)
        with torch.no_grad():
            c = self._forward(x, m)
        return backend.out(c.to(self._dtype))

    def assign(
        self,
        features: Any,
        *,
        mask: ArrayLike | None = None,
        grounding: ArrayLike | None = None,
    ) -> RewardOutput:
        """SPA turn rewards ``r_t = c_t + grounding_weight * g_t``.

        Args:
            features: float[B, T, D] (or an Episodes; ``extras["grounding"]`` is read if present).
            mask: bool[B, T] -- valid turns.
            grounding: float[B, T] in [0, 1] -- 1 where the turn's action was executable.

        Returns:
            RewardOutput(rewards float[B, T] (0 on padding), metrics) with
            ``credit/untrained`` and ``credit/total_updates`` (see :class:`~creditlab.credit.learned.LearnedAssigner`).
        """
        if _is_episodes(features) and grounding is None:
            grounding = features.extras.get("grounding")
        backend = Backend.of(features.observations if _is_episodes(features) else features)
        x, _, m = self._inputs(features, None, mask, need_target=False)
        with torch.no_grad():
            c = self._forward(x, m).to(torch.float64)
        r = c
        if grounding is not None:
            g = as_float(grounding, "grounding", shape=tuple(m.shape), dtype=torch.float64, finite=False)
            g = torch.where(m, g, torch.zeros_like(g))
            if bool(((g < 0) | (g > 1) | ~torch.isfinite(g)).any()):
                raise RangeError("grounding must lie in [0, 1] on valid turns (1 = the action was executable)")
            r = c + self.config.grounding_weight * g
        r = torch.where(m, r, torch.zeros_like(r))
        metrics = {
            "spa/contribution_mean": float(c[m].mean()),
            "spa/contribution_sum_mean": float(c.sum(dim=1).mean()),
        }
        self._check_untrained(metrics)
        return RewardOutput(backend.out(r.to(self._dtype)), metrics)

    # ------------------------------------------------------------------ internals

    def _training_batch(
        self, features: Any, outcomes: Any, mask: Any
    ) -> tuple[tuple[torch.Tensor, ...] | None, dict[str, float]]:
        """(x, r, m) to train on and the ``store/skipped_*`` counts; an Episodes batch gives its
        complete trajectories (None when it has none)."""
        metrics: dict[str, float] = {}
        if _is_episodes(features):
            features, metrics = self.complete(features)
            if features is None:
                return None, metrics
        return self._inputs(features, outcomes, mask, need_target=True), metrics

    def _inputs(self, features, outcomes, mask, *, need_target: bool):
        if _is_episodes(features):
            ep = features
            if ep.observations is None:
                raise ShapeError("SPA needs per-turn features: episodes.observations is None")
            feats, mask = ep.observations, ep.mask
            if outcomes is None and need_target:
                outcomes = _episode_target(ep)
        x = as_float(features if not _is_episodes(features) else feats, "features", finite=True)
        self._dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        x = x.to(torch.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise ShapeError(f"features must be [B, T, D]; got shape {tuple(x.shape)}")
        b, t, d = x.shape
        check_nonempty(b, "features")
        if self.model is None:
            if not need_target:
                raise RangeError("the estimator has not been trained yet; call fit() or update() first")
            self._build(d)
        if d != self.config.feature_dim:
            raise ShapeError(
                f"features has D = {d} per turn but the estimator was built with feature_dim = {self.config.feature_dim}"
            )
        m = as_mask(mask, "mask", (b, t), device=x.device)
        r = None
        if need_target:
            if outcomes is None:
                raise RangeError("outcomes is required to train the progress estimator")
            r = as_float(outcomes, "outcomes", shape=(b,), dtype=torch.float32)
        if self.config.standardize and need_target:
            self.norm.update(x[m])
        return x, r, m

    def _forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        c = self.built_model(self.norm.normalize(x)).squeeze(-1)
        return torch.where(m, c, torch.zeros_like(c))


def _mlp(d: int, hidden: int, layers: int, gen: torch.Generator) -> torch.nn.Module:
    if hidden == 0:
        mods: list[torch.nn.Module] = [torch.nn.Linear(d, 1)]
    else:
        mods = []
        width = d
        for _ in range(layers):
            mods += [torch.nn.Linear(width, hidden), torch.nn.Tanh()]
            width = hidden
        mods.append(torch.nn.Linear(width, 1))
    net = torch.nn.Sequential(*mods)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 2:
                bound = 1.0 / np.sqrt(p.shape[1])
                p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
            else:
                p.zero_()
    return net


def _is_episodes(x: Any) -> bool:
    from ..episodes import Episodes

    return isinstance(x, Episodes)


def _episode_target(ep) -> Any:
    """The outcome each trajectory's contributions must sum to (the episodes are complete)."""
    return ep.outcomes if ep.outcomes is not None else ep.returns()
