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

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._arrays import Backend
from ..episodes import Episodes
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ._nn import RunningNorm, seeded
from .base import complete_episodes, encode_actions, episode_arrays, require_inputs, rng_state, set_rng_state
from .store import EpisodeStore

__all__ = ["rudder_redistribution", "RUDDERAssigner"]


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


class RUDDERAssigner:
    """RUDDER return decomposition with an LSTM return predictor (see the module docstring).

    Args:
        hidden_size: LSTM units.
        lr: Adam learning rate.
        aux_weight: weight of the every-step auxiliary loss (0.5 in the tutorial).
        residual: ``"last"``, ``"uniform"`` or None (see :func:`rudder_redistribution`).
        min_quality: gate. While the explained variance of the final-step prediction on recent
            training batches (``1 - MSE / Var(R)``) is below this, :meth:`assign` returns the
            observed rewards unchanged (``credit/gated = 1``). None disables the gate.
            [The paper's exact gating rule is not specified; this is our reading.]
        batch_episodes: episodes per gradient step.
        updates_per_fit: gradient steps per :meth:`fit` unless ``num_updates`` is given.
        capacity_steps, include_truncated, num_actions, sample_by_length, seed: as in
            :class:`~creditlab.credit.RDAssigner`.
        max_train_steps: train on at most this many leading steps of each episode (None: all).
        chunk_episodes: episodes per LSTM pass in :meth:`assign`.

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

    name = "rudder"
    scope = "episode"

    def __init__(
        self,
        *,
        hidden_size: int = 64,
        lr: float = 1e-3,
        aux_weight: float = 0.5,
        residual: str | None = "last",
        min_quality: float | None = None,
        batch_episodes: int = 8,
        updates_per_fit: int = 8,
        capacity_steps: int = 300_000,
        include_truncated: bool = False,
        num_actions: int | None = None,
        sample_by_length: bool = False,
        max_train_steps: int | None = None,
        chunk_episodes: int = 256,
        seed: int | None = 0,
    ):
        if residual not in ("last", "uniform", None):
            raise RangeError(f"residual must be 'last', 'uniform' or None; got {residual!r}")
        for name, v in (("hidden_size", hidden_size), ("batch_episodes", batch_episodes), ("chunk_episodes", chunk_episodes)):
            if int(v) < 1:
                raise RangeError(f"{name} must be >= 1; got {v}")
        if int(updates_per_fit) < 0:
            raise RangeError(f"updates_per_fit must be >= 0; got {updates_per_fit}")
        self.hidden_size = int(hidden_size)
        self.lr = float(lr)
        self.aux_weight = float(aux_weight)
        self.residual = residual
        self.min_quality = None if min_quality is None else float(min_quality)
        self.batch_episodes = int(batch_episodes)
        self.updates_per_fit = int(updates_per_fit)
        self.include_truncated = bool(include_truncated)
        self.num_actions = None if num_actions is None else int(num_actions)
        self.sample_by_length = bool(sample_by_length)
        self.max_train_steps = None if max_train_steps is None else int(max_train_steps)
        self.chunk_episodes = int(chunk_episodes)
        self.seed = seed
        self.store = EpisodeStore(capacity_steps)
        self.norm = RunningNorm()
        self.model: _ReturnLSTM | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.num_updates = 0
        self.quality = float("nan")
        self._ret_mean = 0.0
        self._ret_std = 1.0
        self._dims: dict[str, Any] | None = None
        self._rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- inputs

    def _featurize(self, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
        """(inputs[N, F] = (s, a) of the valid steps, mask[B, T])."""
        require_inputs(episodes, "RUDDERAssigner")
        e = episodes.numpy() if episodes.is_torch else episodes
        mask = np.asarray(e.mask, dtype=bool)
        b, t = mask.shape
        obs = np.asarray(e.observations).reshape(b, t, -1)[mask].astype(np.float32, copy=False)
        acts = np.asarray(e.actions)
        if acts.dtype.kind in "iub" and acts.ndim == 2:
            n_act = self.num_actions or (self._dims or {}).get("num_actions") or (int(acts[mask].max()) + 1 if mask.any() else 1)
            a = encode_actions(acts[mask], n_act)
        else:
            n_act = None
            a = encode_actions(acts.reshape(b, t, -1)[mask], None)
        dims = {"obs_dim": obs.shape[1], "action_dim": a.shape[1], "num_actions": n_act}
        if self._dims is None:
            self._dims = dims
        elif (dims["obs_dim"], dims["action_dim"]) != (self._dims["obs_dim"], self._dims["action_dim"]):
            raise ShapeError(
                f"observations/actions have {dims['obs_dim']}/{dims['action_dim']} values per step but this RUDDERAssigner "
                f"was built for {self._dims['obs_dim']}/{self._dims['action_dim']} (its first fit/assign)"
            )
        return np.concatenate([obs, a], axis=1), mask

    def _padded(self, flat: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        x = np.zeros((*mask.shape, flat.shape[1]), dtype=np.float32)
        x[mask] = flat
        return self.norm.normalize(torch.from_numpy(x))

    # ---------------------------------------------------------------- model

    def _build(self, in_dim: int) -> None:
        with seeded(self.seed):
            self.model = _ReturnLSTM(in_dim, self.hidden_size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def _refresh_return_scale(self) -> None:
        r = self.store.returns
        if r.size:
            self._ret_mean = float(r.mean())
            self._ret_std = float(max(r.std(), 1e-3 * max(1.0, abs(self._ret_mean))))

    def _update(self) -> tuple[float, float, float]:
        assert self.model is not None and self.optimizer is not None
        idx = self.store.sample_indices(self.batch_episodes, self._rng, by_length=self.sample_by_length)
        batch = self.store.episodes(idx, max_steps=self.max_train_steps)
        x = self.norm.normalize(torch.from_numpy(batch.inputs))
        mask = torch.from_numpy(batch.mask)
        z = torch.from_numpy((batch.returns - self._ret_mean) / self._ret_std).float()
        out = self.model(x)
        rows = torch.arange(out.shape[0])
        last = out[rows, torch.from_numpy(batch.lengths - 1)]
        main = (last - z) ** 2
        err = torch.where(mask, (out - z[:, None]) ** 2, torch.zeros(()))
        aux = err.sum(1) / mask.sum(1)
        loss = (main + self.aux_weight * aux).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return float(loss.detach()), float(main.detach().sum()), float(((z - z.mean()) ** 2).sum())

    # ---------------------------------------------------------------- protocol

    def fit(self, episodes: Episodes | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """Store complete episodes and take ``num_updates`` LSTM gradient steps (see
        :meth:`creditlab.credit.RDAssigner.fit` for the metrics; adds ``credit/quality``)."""
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        if episodes is not None:
            arr = episode_arrays(episodes)
            keep, m = complete_episodes(arr, include_truncated=self.include_truncated)
            metrics.update(m)
            if keep.any():
                sub = episodes if keep.all() else episodes.select(np.nonzero(keep)[0])
                x, _ = self._featurize(sub)
                sa = episode_arrays(sub)
                self.norm.update(x)
                metrics.update(self.store.add(x, lengths=sa.lengths, returns=sa.returns))
                self._refresh_return_scale()
        n = self.updates_per_fit if num_updates is None else int(num_updates)
        losses, sse, sst = [], 0.0, 0.0
        if n > 0 and self.store.num_episodes > 0:
            if self.model is None:
                self._build(self.store.feature_dim or 0)
            for _ in range(n):
                loss, e, v = self._update()
                losses.append(loss)
                sse, sst = sse + e, sst + v
            q = 1.0 - sse / sst if sst > 0 else float("nan")
            self.quality = q if np.isnan(self.quality) or np.isnan(q) else 0.9 * self.quality + 0.1 * q
        metrics.update(
            {
                "credit/loss": float(np.mean(losses)) if losses else float("nan"),
                "credit/updates": float(len(losses)),
                "credit/total_updates": float(self.num_updates),
                "credit/quality": self.quality,
                "store/episodes": float(self.store.num_episodes),
                "store/steps": float(self.store.num_steps),
                "credit/fit_seconds": time.perf_counter() - t0,
            }
        )
        return metrics

    def predict_returns(self, episodes: Episodes) -> np.ndarray:
        """float64[B, T] -- g_t, the predicted final return after each step (0 on padding)."""
        flat, mask = self._featurize(episodes)
        if self.model is None:
            self._build(flat.shape[1])
        g = np.zeros(mask.shape, dtype=np.float64)
        offsets = np.concatenate([[0], np.cumsum(mask.sum(1))])
        with torch.inference_mode():
            for i in range(0, mask.shape[0], self.chunk_episodes):
                j = min(i + self.chunk_episodes, mask.shape[0])
                mk = mask[i:j]
                t = int(mk.sum(1).max())
                out = self.model(self._padded(flat[offsets[i] : offsets[j]], mk[:, :t])).numpy()
                g[i:j, :t] = np.where(mk[:, :t], self._ret_mean + self._ret_std * out, 0.0)
        return g

    def assign(self, episodes: Episodes) -> RewardOutput:
        """Redistributed rewards for every valid step; the residual only where R is known.

        Returns:
            RewardOutput(rewards[B, T], metrics, present[B, T] = mask).
        """
        t0 = time.perf_counter()
        arr = episode_arrays(episodes)
        metrics: dict[str, float] = {"credit/quality": self.quality}
        if self.num_updates == 0:
            metrics["credit/untrained"] = 1.0
        gated = self.min_quality is not None and not (self.quality >= self.min_quality)
        if gated:
            require_inputs(episodes, "RUDDERAssigner")
            rewards = np.asarray(arr.rewards, dtype=np.float64).copy()
            if episodes.outcomes is not None:  # outcome-only batches: the outcome on the last step
                rows = np.arange(rewards.shape[0])
                rewards[rows, arr.lengths - 1] += np.where(arr.has_return, arr.returns, 0.0)
            metrics["credit/gated"] = 1.0
        else:
            g = self.predict_returns(episodes)
            red = rudder_redistribution(g, arr.returns, arr.mask, has_return=arr.has_return, residual=self.residual)
            rewards = red.rewards
            metrics.update(red.metrics)
            metrics["credit/gated"] = 0.0
        dtype = arr.rewards.dtype if arr.rewards.dtype.kind == "f" else np.float32
        metrics["credit/assign_seconds"] = time.perf_counter() - t0
        backend = Backend.of(episodes.rewards)
        return RewardOutput(backend.out(torch.from_numpy(rewards.astype(dtype))), metrics, backend.out(torch.from_numpy(arr.mask.copy())))

    # ---------------------------------------------------------------- state

    def _config(self) -> dict[str, Any]:
        return dict(
            hidden_size=self.hidden_size, lr=self.lr, aux_weight=self.aux_weight, residual=self.residual,
            min_quality=self.min_quality, batch_episodes=self.batch_episodes, updates_per_fit=self.updates_per_fit,
            capacity_steps=self.store.capacity, include_truncated=self.include_truncated, num_actions=self.num_actions,
            sample_by_length=self.sample_by_length, max_train_steps=self.max_train_steps,
            chunk_episodes=self.chunk_episodes, seed=self.seed,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self._config(),
            "dims": self._dims,
            "model": None if self.model is None else self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "norm": self.norm.state_dict(),
            "store": self.store.state_dict(),
            "num_updates": self.num_updates,
            "quality": self.quality,
            "return_scale": (self._ret_mean, self._ret_std),
            "rng": rng_state(self._rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._dims = None if state["dims"] is None else dict(state["dims"])
        self.norm.load_state_dict(state["norm"])
        self.store.load_state_dict(state["store"])
        self.num_updates = int(state["num_updates"])
        self.quality = float(state["quality"])
        self._ret_mean, self._ret_std = (float(v) for v in state["return_scale"])
        set_rng_state(self._rng, state["rng"])
        self.model = None
        self.optimizer = None
        if state["model"] is not None:
            self._build(int(state["model"]["lstm.weight_ih_l0"].shape[1]))
            assert self.model is not None and self.optimizer is not None
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])

    def __repr__(self) -> str:
        return f"RUDDERAssigner(store={self.store.num_episodes} episodes, updates={self.num_updates}, quality={self.quality:.3f})"
