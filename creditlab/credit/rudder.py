"""RUDDER: return decomposition by differences of an LSTM's return predictions.

Arjona-Medina et al., "RUDDER: Return Decomposition for Delayed Rewards", NeurIPS 2019
(arXiv 1806.07857); loss as in the authors' PyTorch tutorial (widmi/rudder-a-practical-tutorial).

An LSTM reads the episode prefix ``(s_0, a_0, ..., s_t, a_t)`` and predicts the final return,
``g_t``. The redistributed reward is the change of prediction,

    r_t = g_t - g_{t-1},   g_{-1} = 0,

which telescopes to ``sum_t r_t = g_{T-1}``; the residual ``R - g_{T-1}`` is added to the last
step (``residual="last"``, the paper's choice) or spread over the steps (``"uniform"``), so the
redistributed rewards sum to R exactly for every episode whose return is known. Training loss
per episode (MSE form; the tutorial squares the *mean* error of the auxiliary term instead):

    L = (g_{T-1} - R)^2 + aux_weight * mean_t (g_t - R)^2,   aux_weight = 0.5.

Predictions are made in standardized return units ``(R - mean) / std`` of the stored returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..episodes import Episodes
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ..registry import register_method
from .base import episode_arrays, require_inputs
from .learned import STEP_NEEDS, LearnedAssigner, Loss, ReplayConfig
from .store import EpisodeBatch

__all__ = ["rudder_redistribution", "RUDDERConfig", "RUDDERAssigner"]


def rudder_redistribution(
    predictions: Any,
    returns: Any,
    mask: Any,
    *,
    has_return: Any | None = None,
    residual: str | None = "last",
) -> RewardOutput:
    """Rewards from return predictions: ``r_t = g_t - g_{t-1}`` plus the residual ``R - g_{T-1}``.

    Args:
        predictions: float[B, T] -- g_t, the predicted final return after step t.
        returns: float[B] -- R (ignored where ``has_return`` is False).
        mask: bool[B, T] -- valid steps (prefix).
        has_return: bool[B] -- episodes whose return is known (default: all); the others get
            no residual (a prefix of a running episode).
        residual: ``"last"`` (add ``R - g_{T-1}`` to the last step), ``"uniform"`` (spread it
            over the steps) or None (no correction; the rewards sum to ``g_{T-1}``).

    Returns:
        RewardOutput(rewards[B, T] float64 (0 on padding), metrics) with
        ``credit/residual_abs_mean``.

    Example (g = [2, 5, 4], R = 6): differences [2, 3, -1], residual 6 - 4 = 2 on the last step
        >>> rudder_redistribution(np.array([[2.0, 5.0, 4.0]]), np.array([6.0]), np.ones((1, 3), bool)).rewards
        array([[2., 3., 1.]])
    """
    g = np.asarray(predictions, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    r = np.asarray(returns, dtype=np.float64)
    if g.shape != m.shape or g.ndim != 2 or r.shape != (g.shape[0],):
        raise ShapeError(f"predictions {g.shape}, mask {m.shape}, returns {r.shape} must be [B, T], [B, T], [B]")
    if residual not in ("last", "uniform", None):
        raise RangeError(f"residual must be 'last', 'uniform' or None; got {residual!r}")
    has = np.ones(g.shape[0], bool) if has_return is None else np.asarray(has_return, dtype=bool)
    g = np.where(m, g, 0.0)
    prev = np.zeros_like(g)
    prev[:, 1:] = g[:, :-1]
    out = np.where(m, g - prev, 0.0)
    lengths = m.sum(1)
    rows = np.arange(g.shape[0])
    last = g[rows, np.maximum(lengths - 1, 0)]
    resid = np.where(has & (lengths > 0), r - last, 0.0)
    if residual == "last":
        out[rows, np.maximum(lengths - 1, 0)] += resid
    elif residual == "uniform":
        out = np.where(m, out + (resid / np.maximum(lengths, 1))[:, None], 0.0)
    metrics = {"credit/residual_abs_mean": float(np.abs(resid[has]).mean()) if has.any() and residual else 0.0}
    return RewardOutput(out, metrics)


class _ReturnLSTM(nn.Module):
    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)
        return self.head(h).squeeze(-1)


@dataclass(frozen=True, kw_only=True)
class RUDDERConfig(ReplayConfig):
    """RUDDER: an LSTM return predictor, rewards = differences of its predictions."""

    lr: float = 1e-3
    """Adam learning rate (the tutorial's)."""
    batch_episodes: int = 8
    """Stored episodes per gradient step."""
    updates_per_fit: int = 8
    """Gradient steps per fit unless ``num_updates`` is given."""
    sample_by_length: bool = False
    """Draw stored episodes uniformly (the paper's lessons replay prioritizes by error; not reproduced)."""
    hidden_size: int = 64
    """LSTM units."""
    aux_weight: float = 0.5
    """Weight of the every-step auxiliary loss ``mean_t (g_t - R)^2`` (0.5 in the tutorial)."""
    residual: str | None = "last"
    """Where the residual ``R - g_{T-1}`` goes: ``"last"`` step, ``"uniform"`` over the steps, or
    None (no correction; see :func:`rudder_redistribution`)."""
    min_quality: float | None = None
    """Quality gate: while the explained variance of the final-step prediction on recent training
    batches (``1 - MSE / Var(R)``) is below this, ``assign`` returns the observed rewards
    (``credit/gated = 1``). None disables it. [The paper's gating rule is unspecified; our reading.]"""
    max_train_steps: int | None = None
    """Train on at most this many leading steps of each episode (None: all)."""
    chunk_episodes: int = 256
    """Episodes per LSTM pass in ``assign``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check("residual", self.residual in ("last", "uniform", None), "'last', 'uniform' or None")
        self._check("hidden_size", self.hidden_size >= 1, ">= 1")
        self._check("chunk_episodes", self.chunk_episodes >= 1, ">= 1")
        self._check("max_train_steps", self.max_train_steps is None or self.max_train_steps >= 1, ">= 1 or None")


@register_method(
    "rudder",
    family="credit",
    kind="assigner",
    needs=STEP_NEEDS,
    summary="RUDDER: LSTM return predictions, rewards = prediction differences + residual",
    source="Arjona-Medina et al. 2019, arXiv 1806.07857",
)
class RUDDERAssigner(LearnedAssigner):
    """RUDDER return decomposition with an LSTM return predictor (see the module docstring).

    Parameters: :class:`RUDDERConfig` (keywords or a config object). ``quality`` is the running
    explained variance of the final-step prediction on the training batches.

    Example:
        >>> obs = np.random.default_rng(0).normal(size=(6, 4, 2)).astype(np.float32)
        >>> ep = Episodes.from_padded(np.zeros((6, 4)), observations=obs, actions=np.zeros((6, 4, 1)),
        ...                           outcomes=obs[..., 0].sum(1))
        >>> rudder = RUDDERAssigner(seed=0)
        >>> _ = rudder.fit(ep, num_updates=3)
        >>> out = rudder.assign(ep)
        >>> bool(np.allclose(out.rewards.sum(1), obs[..., 0].sum(1), atol=1e-4))   # residual: sums to R
        True
    """

    Config = RUDDERConfig
    name = "rudder"
    scope = "episode"
    model_fields = ("hidden_size",)

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        self.quality = float("nan")
        self._ret_mean = 0.0
        self._ret_std = 1.0

    # ---------------------------------------------------------------- inputs

    def model_inputs(self, episodes: Episodes) -> tuple[np.ndarray, dict[str, float]]:
        """(s, a) of the valid steps, row-major."""
        x, _ = self._featurize(episodes)
        return x, {}

    def _featurize(self, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
        """(inputs[N, F] = (s, a) of the valid steps, mask[B, T])."""
        v = self.step_views(episodes, next_observations=False)
        o, a, _ = self.step_arrays(v, v.flat_index)
        return np.concatenate([o, a], axis=1), v.mask

    def _padded(self, flat: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        x = np.zeros((*mask.shape, flat.shape[1]), dtype=np.float32)
        x[mask] = flat
        return self.norm.normalize(torch.from_numpy(x))

    # ---------------------------------------------------------------- model and loss

    def build_model(self, in_dim: int) -> nn.Module:
        return _ReturnLSTM(in_dim, self.config.hidden_size)

    def after_admit(self) -> None:
        """Refresh the return scale: predictions are in standardized units of the stored returns."""
        r = self.episode_store.returns
        if r.size:
            self._ret_mean = float(r.mean())
            self._ret_std = float(max(r.std(), 1e-3 * max(1.0, abs(self._ret_mean))))

    def sample(self) -> EpisodeBatch:
        cfg = self.config
        idx = self.episode_store.sample_indices(cfg.batch_episodes, self.rng, by_length=cfg.sample_by_length)
        return self.episode_store.episodes(idx, max_steps=cfg.max_train_steps)

    def loss(self, batch: EpisodeBatch) -> Loss:
        """``(g_{T-1} - R)^2 + aux_weight * mean_t (g_t - R)^2`` in standardized return units."""
        x = self.norm.normalize(torch.from_numpy(batch.inputs))
        mask = torch.from_numpy(batch.mask)
        z = torch.from_numpy((batch.returns - self._ret_mean) / self._ret_std).float()
        out = self.built_model(x)
        rows = torch.arange(out.shape[0])
        last = out[rows, torch.from_numpy(batch.lengths - 1)]
        main = (last - z) ** 2
        err = torch.where(mask, (out - z[:, None]) ** 2, torch.zeros(()))
        aux = err.sum(1) / mask.sum(1)
        loss = (main + self.config.aux_weight * aux).mean()
        sse, sst = float(main.detach().sum()), float(((z - z.mean()) ** 2).sum())
        return Loss(loss, {"sse": sse, "sst": sst})

    def fit_extras(self, stats: Mapping[str, float]) -> dict[str, float]:
        """``credit/quality``: explained variance of the final prediction, an EMA over fits."""
        if "sse" in stats:
            sse, sst = stats["sse"], stats["sst"]
            q = 1.0 - sse / sst if sst > 0 else float("nan")
            self.quality = q if np.isnan(self.quality) or np.isnan(q) else 0.9 * self.quality + 0.1 * q
        return {"credit/quality": self.quality}

    # ---------------------------------------------------------------- credit

    def predict_returns(self, episodes: Episodes) -> np.ndarray:
        """float64[B, T] -- g_t, the predicted final return after each step (0 on padding)."""
        flat, mask = self._featurize(episodes)
        if self.model is None:
            self._build(flat.shape[1])
        g = np.zeros(mask.shape, dtype=np.float64)
        offsets = np.concatenate([[0], np.cumsum(mask.sum(1))])
        chunk = self.config.chunk_episodes
        with torch.inference_mode():
            for i in range(0, mask.shape[0], chunk):
                j = min(i + chunk, mask.shape[0])
                mk = mask[i:j]
                t = int(mk.sum(1).max())
                out = self.built_model(self._padded(flat[offsets[i] : offsets[j]], mk[:, :t])).numpy()
                g[i:j, :t] = np.where(mk[:, :t], self._ret_mean + self._ret_std * out, 0.0)
        return g

    def credit(self, episodes: Episodes, metrics: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Prediction differences plus the residual where R is known; the observed rewards while
        the quality gate is closed."""
        arr = episode_arrays(episodes)
        metrics["credit/quality"] = self.quality
        min_quality = self.config.min_quality
        if min_quality is not None and not (self.quality >= min_quality):
            require_inputs(episodes, type(self).__name__)
            rewards = np.asarray(arr.rewards, dtype=np.float64).copy()
            if episodes.outcomes is not None:  # outcome-only batches: the outcome on the last step
                rows = np.arange(rewards.shape[0])
                rewards[rows, arr.lengths - 1] += np.where(arr.has_return, arr.returns, 0.0)
            metrics["credit/gated"] = 1.0
        else:
            g = self.predict_returns(episodes)
            red = rudder_redistribution(
                g, arr.returns, arr.mask, has_return=arr.has_return, residual=self.config.residual
            )
            rewards = red.rewards
            metrics.update(red.metrics)
            metrics["credit/gated"] = 0.0
        return rewards, arr.mask

    # ---------------------------------------------------------------- state

    def extra_state(self) -> dict[str, Any]:
        return {"quality": self.quality, "return_scale": (self._ret_mean, self._ret_std)}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.quality = float(state["quality"])
        self._ret_mean, self._ret_std = (float(v) for v in state["return_scale"])

    def __repr__(self) -> str:
        return f"RUDDERAssigner(store={self.episode_store.num_episodes} episodes, updates={self.num_updates}, quality={self.quality:.3f})"
