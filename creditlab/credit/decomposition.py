"""Return decomposition with a per-step reward model: RD, RRD and the LaRe decoder.

A model ``r_hat(x_t)`` of one step's input ``x_t`` is trained so that, over each stored
episode, the per-step predictions account for the episodic return R:

* **RD** (full-trajectory decomposition): ``L = mean_b ( sum_t r_hat_bt / T_b - R_b / T_b )^2``.
* **RRD** (randomized return decomposition; Ren et al., ICLR 2022, arXiv 2111.13485): draw K
  step indices I of each episode (without replacement when K <= T, else with), and regress the
  per-step average: ``L = mean_b ( R_b / T_b - mean_{t in I_b} r_hat_bt )^2``. This is the paper's
  ``(R - (T/K) sum_I r_hat)^2`` divided by T^2, as in the authors' code.
* **RRD, bias-corrected** (the paper's "RRD (unbiased)"): subtract
  ``mean_b c_b * s_b^2 / K`` where ``s_b^2`` is the unbiased sample variance of the K drawn
  predictions and ``c_b = 1 - K / T_b`` (``c_b = 1`` when K > T_b, 0 when T_b = 1). Its
  expectation over I equals the RD loss (finite-population sampling: ``E[s^2] = S^2`` and
  ``Var(mean_I) = (1 - K/T) S^2 / K``).

The step input is ``x = (s, a, s' - s)`` for RD/RRD (the RRD code feeds ``s - s'``; the sign is
immaterial), or ``x = phi(s, a)``, a few latent factors from a feature function, for LaRe (Qu et
al., AAAI 2025, arXiv 2412.11120), whose decoder is trained with the (bias-corrected) RRD loss.
Inputs are standardized with running statistics of the stored steps.

Assignment is batched inference over every valid step of the batch (no loop over episodes).
With ``correct_residual=True`` (the default for RD) the per-episode residual
``(R - sum_t r_hat_t) / T`` is added to every step of each episode whose return is known, so the
assigned rewards sum to R exactly; episodes without an outcome keep the raw predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..episodes import Episodes
from ..errors import RangeError, ShapeError
from ..registry import register_method
from ._nn import make_mlp, predict_flat
from .base import episode_arrays
from .features import FeatureGuard, resolve_features
from .learned import STEP_NEEDS, LearnedAssigner, Loss, ReplayConfig, StepViews
from .store import EpisodeBatch, StepSubsets

__all__ = ["rd_loss", "rrd_loss", "RDConfig", "RRDConfig", "LaReConfig", "RDAssigner", "RRDAssigner", "LaReAssigner"]


# ------------------------------------------------------------------------------ losses (pure)


def rd_loss(predictions: Any, returns: Any, mask: Any) -> torch.Tensor:
    """Full-trajectory return-decomposition loss.

    ``L = mean_b ( sum_t r_hat_bt / T_b - R_b / T_b )^2``

    Args:
        predictions: float[B, T] -- r_hat of every step; padding is ignored.
        returns: float[B] -- episodic return R_b.
        mask: bool[B, T] -- valid steps.

    Returns:
        A 0-dim tensor (differentiable in ``predictions`` when it is a tensor).

    Example (one episode, r_hat = [1, 2, 3], R = 9): (6/3 - 9/3)^2 = 1
        >>> float(rd_loss(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([9.0]), torch.ones(1, 3, dtype=torch.bool)))
        1.0
    """
    p = torch.as_tensor(predictions)
    m = torch.as_tensor(mask, dtype=torch.bool)
    r = torch.as_tensor(returns, dtype=p.dtype)
    if p.shape != m.shape or r.shape != p.shape[:1]:
        raise ShapeError(
            f"rd_loss: predictions {tuple(p.shape)}, mask {tuple(m.shape)} and returns {tuple(r.shape)} must be [B, T], [B, T], [B]"
        )
    lengths = m.sum(1).to(p.dtype)
    total = torch.where(m, p, torch.zeros((), dtype=p.dtype)).sum(1)
    return (((total - r) / lengths) ** 2).mean()


def rrd_loss(predictions: Any, returns: Any, lengths: Any, *, bias_correction: bool = False) -> torch.Tensor:
    """Randomized return-decomposition loss on K drawn steps per episode.

    ``L = mean_b ( R_b / T_b - mean_k r_hat_bk )^2  [ - mean_b c_b * s_b^2 / K ]``

    where the bracket is the bias correction: ``s_b^2`` the unbiased (K - 1) sample variance of
    the K predictions and ``c_b = 1 - K / T_b`` if K <= T_b, ``1`` if K > T_b, ``0`` if T_b = 1
    (and no correction when K = 1).

    Args:
        predictions: float[B, K] -- r_hat at the drawn steps of each episode.
        returns: float[B] -- R_b.
        lengths: int[B] -- T_b.
        bias_correction: subtract the variance term (the "unbiased" variant).

    Returns:
        A 0-dim tensor.

    Example (R = 6, T = 4, drawn predictions [1, 3]): (6/4 - 2)^2 = 0.25; with the correction
    s^2 = 2, c = 1 - 2/4 = 0.5, so 0.25 - 0.5 * 2 / 2 = -0.25
        >>> p, R, T = torch.tensor([[1.0, 3.0]]), torch.tensor([6.0]), torch.tensor([4])
        >>> float(rrd_loss(p, R, T)), float(rrd_loss(p, R, T, bias_correction=True))
        (0.25, -0.25)
    """
    p = torch.as_tensor(predictions)
    r = torch.as_tensor(returns, dtype=p.dtype)
    t = torch.as_tensor(lengths).to(p.dtype)
    if p.ndim != 2 or r.shape != p.shape[:1] or t.shape != p.shape[:1]:
        raise ShapeError(
            f"rrd_loss: predictions {tuple(p.shape)}, returns {tuple(r.shape)}, lengths {tuple(t.shape)} must be [B, K], [B], [B]"
        )
    k = p.shape[1]
    loss = ((r / t - p.mean(1)) ** 2).mean()
    if bias_correction and k > 1:
        coef = torch.where(t >= k, 1.0 - k / t, torch.ones_like(t))
        coef = torch.where(t <= 1, torch.zeros_like(t), coef)
        loss = loss - (coef * p.var(1, unbiased=True) / k).mean()
    return loss


# ------------------------------------------------------------------------------ configs


@dataclass(frozen=True, kw_only=True)
class RDConfig(ReplayConfig):
    """RD: full-trajectory return decomposition (an MLP on (s, a, s' - s))."""

    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer sizes of the MLP r_hat (RRD's paper: 256-256; see docs/credit.md on the speed trade-off)."""
    correct_residual: bool = True
    """Add ``(R - sum_t r_hat_t) / T`` to every step of each episode whose return is known, so
    the assigned rewards sum to R exactly."""
    chunk_size: int = 16384
    """Steps per featurization/inference chunk in ``assign``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("hidden", all(h >= 1 for h in self.hidden), "sizes >= 1")
        self._check("chunk_size", self.chunk_size >= 1, ">= 1")


@dataclass(frozen=True, kw_only=True)
class RRDConfig(RDConfig):
    """RRD: randomized return decomposition (Ren et al., ICLR 2022)."""

    subset_size: int = 64
    """K, steps drawn per episode for the Monte Carlo loss (the paper: 64)."""
    bias_correction: bool = False
    """Subtract the sample-variance term, ``c * s^2 / K`` (the paper's "RRD (unbiased)"; its
    expectation is the RD loss)."""
    correct_residual: bool = False
    """As in RD; off by default (the paper assigns the raw predictions)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("subset_size", self.subset_size >= 1, ">= 1")


@dataclass(frozen=True, kw_only=True)
class LaReConfig(RRDConfig):
    """LaRe: a decoder on latent factors phi(s, a) (Qu et al., AAAI 2025)."""

    features: Callable[..., Any] | str | None = None
    """phi: a callable ``phi(observations[N, obs], actions[N, act]) -> factors``, the env id of a
    hand-written set (``"Hopper-v5"``, ``"CartPole-v1"``), ``"module:function"``, or None (the
    decoder reads the raw step (s, a, s' - s): plain RRD, LaRe's documented fallback)."""
    use_next_observations: bool = False
    """Also pass ``next_observations`` to phi (automatic for functions that set
    ``needs_next_observations = True``)."""
    on_nonfinite: str = "guard"
    """NaN/inf factors: ``"guard"`` (NaN -> 0, +/-inf -> +/-factor_clip, counted) or ``"raise"``."""
    factor_clip: float = 1e6
    """Factors are clipped to +/- this before standardization."""
    loss: str = "rrd"
    """Decoder loss: ``"rrd"`` (K-step subsets) or ``"rd"`` (whole episodes)."""
    bias_correction: bool = True
    """As in RRD; on by default (LaRe's "RRDu")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("loss", self.loss in ("rd", "rrd"), "'rd' or 'rrd'")
        self._check("on_nonfinite", self.on_nonfinite in ("guard", "raise"), "'guard' or 'raise'")
        self._check("factor_clip", self.factor_clip > 0, "> 0")


# ------------------------------------------------------------------------------ the assigners


class _StepRewardModel(LearnedAssigner):
    """What RD, RRD and LaRe share: an MLP ``r_hat(x_t)`` of one step's input, trained with the
    RD or the RRD loss, assigned with an optional residual correction."""

    Config = RDConfig
    scope = "step"
    model_fields = ("hidden",)
    default_loss: ClassVar[str] = "rd"

    @property
    def loss_kind(self) -> str:
        """The training loss, "rd" or "rrd" (the class's ``default_loss``; LaRe: its config's ``loss``)."""
        return self.default_loss

    # ---------------------------------------------------------------- inputs

    def _uses_next(self) -> bool:
        return True

    def _inputs(self, v: StepViews, idx: np.ndarray, metrics: dict[str, float]) -> np.ndarray:
        """Model inputs ``[len(idx), F]`` of the flat steps ``idx``: (s, a, s' - s)."""
        o, a, n = self.step_arrays(v, idx)
        assert n is not None
        return np.concatenate([o, a, n - o], axis=1)

    def model_inputs(self, episodes: Episodes) -> tuple[np.ndarray, dict[str, float]]:
        v = self.step_views(episodes, next_observations=self._uses_next())
        metrics = dict(v.metrics)
        return self._inputs(v, v.flat_index, metrics), metrics

    # ---------------------------------------------------------------- model and loss

    def build_model(self, in_dim: int) -> torch.nn.Module:
        return make_mlp(in_dim, self.config.hidden, 1)

    def init_model(self) -> None:
        store = self.episode_store
        if store.num_episodes:
            # Start from the mean per-step reward of the stored episodes (the output bias).
            avg = float(np.mean(store.returns / store.lengths))
            model = self.built_model
            head = model[-1] if isinstance(model, torch.nn.Sequential) else None
            assert isinstance(head, torch.nn.Linear), "build_model gives an MLP whose last layer is Linear"
            with torch.no_grad():
                head.bias.fill_(avg)

    def sample(self) -> EpisodeBatch | StepSubsets:
        cfg = self.config
        idx = self.episode_store.sample_indices(cfg.batch_episodes, self.rng, by_length=cfg.sample_by_length)
        if self.loss_kind == "rrd":
            return self.episode_store.subsets(idx, cfg.subset_size, self.rng)
        return self.episode_store.episodes(idx)

    def loss(self, batch: EpisodeBatch | StepSubsets) -> Loss:
        pred = self.built_model(self.norm.normalize(torch.from_numpy(batch.inputs))).squeeze(-1)
        returns = torch.from_numpy(batch.returns).float()
        if isinstance(batch, StepSubsets):
            return Loss(
                rrd_loss(pred, returns, torch.from_numpy(batch.lengths), bias_correction=self.config.bias_correction)
            )
        return Loss(rd_loss(pred, returns, torch.from_numpy(batch.mask)))

    # ---------------------------------------------------------------- credit

    def credit(self, episodes: Episodes, metrics: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``r_hat`` of every valid step (:meth:`step_predictions`), plus the residual
        ``(R - sum r_hat) / T`` where the return is known and ``correct_residual``."""
        rewards, mask = self.step_predictions(episodes, metrics)
        if self.config.correct_residual:
            arr = episode_arrays(episodes)
            resid = np.where(arr.has_return, (arr.returns - rewards.sum(1)) / np.maximum(arr.lengths, 1), 0.0)
            rewards = np.where(mask, rewards + resid[:, None], 0.0)
            metrics["credit/residual_abs_mean"] = (
                float(np.abs(resid[arr.has_return]).mean()) if arr.has_return.any() else 0.0
            )
        return rewards, mask

    def step_predictions(self, episodes: Episodes, metrics: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``(r_hat float64[B, T] (0 on padding), mask bool[B, T])``: the model's prediction for
        every valid step, featurized and predicted chunk by chunk."""
        chunk = self.config.chunk_size
        v = self.step_views(episodes, next_observations=self._uses_next())
        metrics.update(v.metrics)
        mask, idx = v.mask, v.flat_index
        flat = np.empty(idx.shape[0], dtype=np.float32)
        for i in range(0, idx.shape[0], chunk):
            x = self._inputs(v, idx[i : i + chunk], metrics)
            if self.model is None:
                self._build(x.shape[1])
            flat[i : i + chunk] = predict_flat(self.built_model, self.norm, x, chunk_size=chunk)
        rewards = np.zeros(mask.shape, dtype=np.float64)
        rewards[mask] = flat
        return rewards, mask


@register_method(
    "rd",
    family="credit",
    kind="assigner",
    needs=STEP_NEEDS,
    summary="Return decomposition: MLP r(s, a, s'-s) whose per-step sum matches R (residual-corrected)",
    source="full-trajectory decomposition baseline (RRD/LaRe papers)",
)
class RDAssigner(_StepRewardModel):
    """Full-trajectory return decomposition (RD): per-step predictions that sum to the return.

    Trains an MLP ``r_hat(s, a, s' - s)`` with :func:`rd_loss` on whole stored episodes; assigns
    ``r_hat`` plus the per-episode residual spread over the steps (``correct_residual``), so
    ``sum_t r_t = R`` exactly for every episode with a known return.

    Build it from keywords or an :class:`RDConfig` (its fields are the parameters; the store,
    optimizer, normalizer and checkpoints are :class:`~creditlab.credit.learned.LearnedAssigner`'s).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> obs = rng.normal(size=(8, 5, 2)).astype(np.float32)
        >>> true = obs[..., 0]                                   # hidden per-step reward
        >>> ep = Episodes.from_padded(np.zeros((8, 5)), observations=obs, actions=np.zeros((8, 5, 1)),
        ...                           outcomes=true.sum(1))
        >>> rd = RDAssigner(seed=0)
        >>> _ = rd.fit(ep, num_updates=5)
        >>> out = rd.assign(ep)
        >>> bool(np.allclose(out.rewards.sum(1), true.sum(1), atol=1e-4))   # sums to R exactly
        True
    """

    Config = RDConfig
    name = "rd"
    default_loss = "rd"


@register_method(
    "rrd",
    family="credit",
    kind="assigner",
    needs=STEP_NEEDS,
    summary="Randomized return decomposition: MLP r(s, a, s'-s), Monte Carlo K-step subsets (bias_correction for the unbiased variant)",
    source="Ren et al. 2022, arXiv 2111.13485",
)
class RRDAssigner(_StepRewardModel):
    """Randomized return decomposition (RRD; Ren et al., ICLR 2022).

    Trains an MLP ``r_hat(s, a, s' - s)`` with :func:`rrd_loss` on K = ``subset_size`` random
    steps of each of ``batch_episodes`` stored episodes (the paper: K = 64, 4 episodes = 256
    steps per update); ``bias_correction=True`` gives the "RRD (unbiased)" variant. Assigns
    ``r_hat`` (no residual correction by default, as in the paper). Parameters: :class:`RRDConfig`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> obs = rng.normal(size=(16, 8, 3)).astype(np.float32)
        >>> ep = Episodes.from_padded(np.zeros((16, 8)), observations=obs, actions=np.zeros((16, 8, 1)),
        ...                           outcomes=obs[..., 0].sum(1))
        >>> rrd = RRDAssigner(subset_size=4, seed=0)          # or RRDAssigner(RRDConfig(subset_size=4))
        >>> m = rrd.fit(ep, num_updates=3)
        >>> m["credit/updates"], rrd.assign(ep).rewards.shape
        (3.0, (16, 8))
    """

    Config = RRDConfig
    name = "rrd"
    default_loss = "rrd"


@register_method(
    "lare",
    family="credit",
    kind="assigner",
    needs=STEP_NEEDS,
    summary="LaRe: decoder on latent factors phi(s, a) (a feature function), RRD loss",
    source="Qu et al. 2025, arXiv 2412.11120",
)
class LaReAssigner(_StepRewardModel):
    """LaRe latent-reward decoder (Qu et al., AAAI 2025): ``r_hat = f_psi(phi(s, a))``.

    ``phi`` is any feature function (see :mod:`creditlab.credit.features`): hand-written, or
    generated by an LLM. Its factors pass through :class:`~creditlab.credit.features.FeatureGuard`
    (shape checks, NaN/inf guard) and a running standardization (arbitrary factor scales), then a
    small MLP decoder trained with the RRD loss (bias-corrected by default, LaRe's "RRDu").

    With ``features=None`` there is no latent function and the decoder reads the raw step
    ``(s, a, s' - s)``: LaRe's documented fallback when no candidate function passes its checks,
    i.e. plain RRD (``credit/lare_raw_inputs = 1`` in the metrics). Parameters:
    :class:`LaReConfig` (LaRe's MuJoCo decoder is 3 layers of 256; 128-128 here).

    Example:
        >>> phi = lambda s, a: [s[:, 0] * 1e6, s[:, 1]]          # arbitrary factor scales
        >>> obs = np.random.default_rng(0).normal(size=(4, 6, 2)).astype(np.float32)
        >>> ep = Episodes.from_padded(np.zeros((4, 6)), observations=obs, actions=np.zeros((4, 6, 1)),
        ...                           outcomes=obs[..., 0].sum(1))
        >>> lare = LaReAssigner(features=phi, subset_size=3)
        >>> _ = lare.fit(ep, num_updates=2)
        >>> lare.assign(ep).metrics["credit/num_factors"]
        2.0
    """

    Config = LaReConfig
    name = "lare"

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        fn = resolve_features(cfg.features)
        self.guard = (
            None
            if fn is None
            else FeatureGuard(
                fn, on_nonfinite=cfg.on_nonfinite, clip=cfg.factor_clip, use_next_observations=cfg.use_next_observations
            )
        )

    @property
    def loss_kind(self) -> str:
        return self.config.loss

    def _uses_next(self) -> bool:
        return self.guard is None or self.guard.use_next

    def _inputs(self, v: StepViews, idx: np.ndarray, metrics: dict[str, float]) -> np.ndarray:
        if self.guard is None:
            metrics["credit/lare_raw_inputs"] = 1.0
            return super()._inputs(v, idx, metrics)
        o, a, n = self.step_arrays(v, idx)
        factors, m = self.guard(o, a, n)
        metrics["credit/nonfinite_factors"] = (
            metrics.get("credit/nonfinite_factors", 0.0) + m["credit/nonfinite_factors"]
        )
        metrics["credit/num_factors"] = float(factors.shape[1])
        return factors

    def saved_config(self) -> dict[str, Any]:
        """A Python callable ``features`` is not saved (pass it again to :func:`load_assigner`)."""
        config = super().saved_config()
        if not isinstance(config["features"], str):
            config["features"] = None
        return config

    def extra_state(self) -> dict[str, Any]:
        return {
            "has_features": self.guard is not None,
            "num_factors": None if self.guard is None else self.guard.num_factors,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if self.guard is not None and state.get("num_factors") is not None:
            self.guard.num_factors = int(state["num_factors"])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("extra", {}).get("has_features") and self.guard is None:
            raise RangeError(
                "this LaRe assigner was saved with a Python feature function, which is not stored in the checkpoint; "
                "pass it again: load_assigner(path, features=phi)"
            )
        super().load_state_dict(state)
