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
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from .._arrays import ArrayLike, Backend, as_float, as_mask, check_nonempty, check_positive
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput

__all__ = ["SPAProgressEstimator"]


class SPAProgressEstimator:
    """Per-turn progress model whose contributions sum to the outcome (SPA-RL).

    It follows the :class:`creditlab.credit.CreditAssigner` protocol (``fit(episodes)``,
    ``assign(episodes)``, ``state_dict``), reading the per-turn features from
    ``Episodes.observations`` and the target from the outcome, so the registry, the CLI and the
    SB3 integration can drive it like any other assigner. Its ``scope`` is "step": a turn's
    contribution depends only on that turn's features.

    Args:
        feature_dim: D, the size of each turn's feature vector (None: taken from the first batch
            the estimator is trained on).
        hidden: width of the hidden layers (0: a linear head, as in the paper).
        num_layers: number of hidden layers (ignored when ``hidden=0``).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        grounding_weight: weight of the grounding indicator in :meth:`assign` (code: 0.5).
        standardize: scale features by their mean/std from the first :meth:`fit`/:meth:`update`.
        seed: initialization and minibatch seed.

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

    name = "spa"
    scope = "step"

    def __init__(
        self,
        feature_dim: int | None = None,
        *,
        hidden: int = 64,
        num_layers: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grounding_weight: float = 0.5,
        standardize: bool = True,
        seed: int = 0,
    ):
        if feature_dim is not None and int(feature_dim) < 1:
            raise RangeError(f"feature_dim must be >= 1; got {feature_dim!r}")
        if int(hidden) < 0 or int(num_layers) < 1:
            raise RangeError(f"hidden must be >= 0 and num_layers >= 1; got hidden={hidden!r}, num_layers={num_layers!r}")
        self.config = {
            "feature_dim": None if feature_dim is None else int(feature_dim),
            "hidden": int(hidden),
            "num_layers": int(num_layers),
            "lr": check_positive(lr, "lr"),
            "weight_decay": check_positive(weight_decay, "weight_decay", allow_zero=True),
            "grounding_weight": float(grounding_weight),
            "standardize": bool(standardize),
            "seed": int(seed),
        }
        self._gen = torch.Generator().manual_seed(int(seed))
        self.net: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if feature_dim is not None:
            self._build(int(feature_dim))
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None
        self.num_updates = 0
        self._dtype = torch.float32

    def _build(self, d: int) -> None:
        self.config["feature_dim"] = d
        self.net = _mlp(d, self.config["hidden"], self.config["num_layers"], self._gen)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"])

    # ------------------------------------------------------------------ learning

    def update(self, features: Any, outcomes: ArrayLike | None = None, *, mask: ArrayLike | None = None) -> dict[str, float]:
        """One gradient step on a batch; returns ``{"spa/loss": ..}``.

        Args:
            features: float[B, T, D] per-turn features (or an :class:`~creditlab.Episodes`
                whose ``observations`` are the features and whose outcome is the target).
            outcomes: float[B] -- the outcome each trajectory's contributions must sum to.
            mask: bool[B, T] -- valid turns (prefix).
        """
        x, r, m = self._inputs(features, outcomes, mask, need_target=True)
        return {"spa/loss": self._step(x, r, m)}

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
        no episode memory, so ``fit()`` without data is a no-op.

        Returns metrics: ``spa/loss`` (final training MSE of the sum), ``spa/r2`` (variance of
        the outcome explained by the summed contributions) and ``spa/epochs``.
        """
        if features is None:
            return {"spa/epochs": 0.0}
        if num_updates is not None:
            epochs = int(num_updates)
        x, r, m = self._inputs(features, outcomes, mask, need_target=True)
        b = x.shape[0]
        size = b if batch_size is None else max(1, min(int(batch_size), b))
        for _ in range(int(epochs)):
            perm = torch.randperm(b, generator=self._gen) if size < b else torch.arange(b)
            for start in range(0, b, size):
                idx = perm[start : start + size]
                self._step(x[idx], r[idx], m[idx])
        with torch.no_grad():
            pred = self._forward(x, m).sum(dim=1)
            mse = float(((pred - r) ** 2).mean())
            var = float(r.var(unbiased=False))
        return {"spa/loss": mse, "spa/r2": 1.0 - mse / var if var > 0 else float("nan"), "spa/epochs": float(epochs)}

    # ------------------------------------------------------------------ inference

    def contributions(self, features: Any, *, mask: ArrayLike | None = None) -> ArrayLike:
        """float[B, T] -- the estimated contribution ``c_t`` of every turn; 0 on padding."""
        backend = Backend.of(features.observations if _is_episodes(features) else features)
        x, _, m = self._inputs(features, None, mask, need_target=False)
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
            RewardOutput(rewards float[B, T] (0 on padding), metrics).
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
            r = c + self.config["grounding_weight"] * g
        r = torch.where(m, r, torch.zeros_like(r))
        metrics = {
            "spa/contribution_mean": float(c[m].mean()),
            "spa/contribution_sum_mean": float(c.sum(dim=1).mean()),
        }
        return RewardOutput(backend.out(r.to(self._dtype)), metrics)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        if self.net is None:
            raise RangeError("the estimator has not been built yet (feature_dim=None and never trained)")
        return {
            "config": dict(self.config),
            "net": {k: v.clone() for k, v in self.net.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "feature_mean": None if self.feature_mean is None else self.feature_mean.clone(),
            "feature_std": None if self.feature_std is None else self.feature_std.clone(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"config", "net", "optimizer", "feature_mean", "feature_std"} - set(state)
        if missing:
            raise RangeError(f"state is missing keys {sorted(missing)}; expected the dict from state_dict()")
        cfg = state["config"]
        if self.net is None and self.config["feature_dim"] is None:
            self._build(int(cfg["feature_dim"]))
        if cfg["feature_dim"] != self.config["feature_dim"] or cfg["hidden"] != self.config["hidden"] or cfg["num_layers"] != self.config["num_layers"]:
            raise ShapeError(f"state was saved from an estimator with {cfg}; this one has {self.config}")
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.feature_mean = state["feature_mean"]
        self.feature_std = state["feature_std"]
        self.num_updates = int(state.get("num_updates", 0))

    # ------------------------------------------------------------------ internals

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
        if self.net is None:
            if not need_target:
                raise RangeError("the estimator has not been trained yet; call fit() or update() first")
            self._build(d)
        if d != self.config["feature_dim"]:
            raise ShapeError(f"features has D = {d} per turn but the estimator was built with feature_dim = {self.config['feature_dim']}")
        m = as_mask(mask, "mask", (b, t), device=x.device)
        r = None
        if need_target:
            if outcomes is None:
                raise RangeError("outcomes is required to train the progress estimator")
            r = as_float(outcomes, "outcomes", shape=(b,), dtype=torch.float32)
        if self.config["standardize"] and self.feature_mean is None and need_target:
            xs = x[m]
            self.feature_mean = xs.mean(dim=0)
            std = xs.std(dim=0, unbiased=False)
            self.feature_std = torch.where(std > 0, std, torch.ones_like(std))
        return x, r, m

    def _forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.feature_mean is not None:
            x = (x - self.feature_mean) / self.feature_std
        c = self.net(x).squeeze(-1)
        return torch.where(m, c, torch.zeros_like(c))

    def _step(self, x: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = ((self._forward(x, m).sum(dim=1) - r) ** 2).mean()
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return float(loss.detach())


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
    if ep.outcomes is not None:
        if ep.outcome_present is not None and not bool(np.all(np.asarray(ep.outcome_present))):
            raise RangeError("SPA cannot train on missing outcomes; drop those episodes first")
        return ep.outcomes
    return ep.returns()
