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

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .._arrays import Backend
from ..episodes import Episodes
from ..errors import RangeError, ShapeError
from ..outputs import RewardOutput
from ._nn import RunningNorm, make_mlp, predict_flat, seeded
from .base import (
    complete_episodes,
    derive_next_observations,
    encode_actions,
    episode_arrays,
    require_inputs,
    rng_state,
    set_rng_state,
)
from .features import FeatureGuard, resolve_features
from .store import EpisodeStore

__all__ = ["rd_loss", "rrd_loss", "RDAssigner", "RRDAssigner", "LaReAssigner"]


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
        raise ShapeError(f"rd_loss: predictions {tuple(p.shape)}, mask {tuple(m.shape)} and returns {tuple(r.shape)} must be [B, T], [B, T], [B]")
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
        raise ShapeError(f"rrd_loss: predictions {tuple(p.shape)}, returns {tuple(r.shape)}, lengths {tuple(t.shape)} must be [B, K], [B], [B]")
    k = p.shape[1]
    loss = ((r / t - p.mean(1)) ** 2).mean()
    if bias_correction and k > 1:
        coef = torch.where(t >= k, 1.0 - k / t, torch.ones_like(t))
        coef = torch.where(t <= 1, torch.zeros_like(t), coef)
        loss = loss - (coef * p.var(1, unbiased=True) / k).mean()
    return loss


# ------------------------------------------------------------------------------ the assigner


class _StepViews(NamedTuple):
    obs: np.ndarray  # [B*T, obs] view
    actions: np.ndarray  # [B*T] ints or [B*T, act] floats
    next_obs: np.ndarray | None  # [B*T, obs]
    flat_index: np.ndarray  # int64[N] -- valid steps, row-major
    mask: np.ndarray  # bool[B, T]
    num_actions: int | None
    metrics: dict[str, float]


class _StepRewardModel:
    """Shared machinery of RD, RRD and LaRe: featurize, store, train, predict."""

    name = "decomposition"
    scope = "step"

    def __init__(
        self,
        *,
        loss: str,
        bias_correction: bool,
        subset_size: int,
        batch_episodes: int,
        hidden: Sequence[int],
        lr: float,
        updates_per_fit: int,
        capacity_steps: int,
        include_truncated: bool,
        correct_residual: bool,
        num_actions: int | None,
        sample_by_length: bool,
        max_train_steps: int | None,
        chunk_size: int,
        seed: int | None,
    ):
        if loss not in ("rd", "rrd"):
            raise RangeError(f"loss must be 'rd' or 'rrd'; got {loss!r}")
        for name, v in (("subset_size", subset_size), ("batch_episodes", batch_episodes), ("chunk_size", chunk_size)):
            if int(v) < 1:
                raise RangeError(f"{name} must be >= 1; got {v}")
        if int(updates_per_fit) < 0:
            raise RangeError(f"updates_per_fit must be >= 0; got {updates_per_fit}")
        if not float(lr) > 0:
            raise RangeError(f"lr must be > 0; got {lr}")
        self.loss_kind = loss
        self.bias_correction = bool(bias_correction)
        self.subset_size = int(subset_size)
        self.batch_episodes = int(batch_episodes)
        self.hidden = tuple(int(h) for h in hidden)
        self.lr = float(lr)
        self.updates_per_fit = int(updates_per_fit)
        self.include_truncated = bool(include_truncated)
        self.correct_residual = bool(correct_residual)
        self.num_actions = None if num_actions is None else int(num_actions)
        self.sample_by_length = bool(sample_by_length)
        self.max_train_steps = None if max_train_steps is None else int(max_train_steps)
        self.chunk_size = int(chunk_size)
        self.seed = seed
        self.store = EpisodeStore(capacity_steps)
        self.norm = RunningNorm()
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.num_updates = 0
        self._dims: dict[str, Any] | None = None
        self._rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- config

    def _config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this assigner (subclasses add their own)."""
        return dict(
            hidden=self.hidden, lr=self.lr, batch_episodes=self.batch_episodes, updates_per_fit=self.updates_per_fit,
            capacity_steps=self.store.capacity, include_truncated=self.include_truncated,
            correct_residual=self.correct_residual, num_actions=self.num_actions,
            sample_by_length=self.sample_by_length, chunk_size=self.chunk_size, seed=self.seed,
        )

    # ---------------------------------------------------------------- featurization

    def _views(self, episodes: Episodes) -> _StepViews:
        """Flat ``[B*T, ...]`` views of (s, a, s') and the flat indices of the valid steps; the
        observation and action sizes are checked against the ones the model was built for."""
        require_inputs(episodes, type(self).__name__)
        e = episodes.numpy() if episodes.is_torch else episodes
        mask = np.asarray(e.mask, dtype=bool)
        b, t = mask.shape
        obs = np.asarray(e.observations).reshape(b, t, -1)
        acts = np.asarray(e.actions)
        metrics: dict[str, float] = {}
        if acts.dtype.kind in "iub" and acts.ndim == 2:
            n_act = self.num_actions
            if n_act is None and self._dims is not None:
                n_act = self._dims["num_actions"]
            if n_act is None:
                n_act = int(acts[mask].max()) + 1 if mask.any() else 1
            act_dim = n_act
            acts_flat = acts.reshape(b * t)
        else:
            n_act = None
            acts_flat = acts.reshape(b * t, -1)
            act_dim = acts_flat.shape[1]
        nobs = None
        if self._uses_next():
            if e.next_observations is not None:
                nobs = np.asarray(e.next_observations).reshape(b, t, -1)
            else:
                nobs = derive_next_observations(obs, mask.sum(1))
                metrics["credit/derived_next_observations"] = 1.0
            nobs = nobs.reshape(b * t, -1)
        dims = {"obs_dim": obs.shape[2], "action_dim": act_dim, "num_actions": n_act}
        if self._dims is None:
            self._dims = dims
        else:
            if dims["obs_dim"] != self._dims["obs_dim"]:
                raise ShapeError(
                    f"observations have {dims['obs_dim']} values per step but this {type(self).__name__} was built for "
                    f"{self._dims['obs_dim']} (the size seen on its first fit/assign); use one assigner per environment"
                )
            if dims["action_dim"] != self._dims["action_dim"]:
                raise ShapeError(
                    f"actions have {dims['action_dim']} values per step (one-hot for discrete actions) but this "
                    f"{type(self).__name__} was built for {self._dims['action_dim']}; pass num_actions= for discrete actions"
                )
        return _StepViews(obs.reshape(b * t, -1), acts_flat, nobs, np.flatnonzero(mask.reshape(-1)), mask, n_act, metrics)

    def _uses_next(self) -> bool:
        return True

    def _step_arrays_at(self, v: _StepViews, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        o = v.obs[idx].astype(np.float32, copy=False)
        a = encode_actions(v.actions[idx], v.num_actions)
        n = None if v.next_obs is None else v.next_obs[idx].astype(np.float32, copy=False)
        return o, a, n

    def _inputs(self, v: _StepViews, idx: np.ndarray, metrics: dict[str, float]) -> np.ndarray:
        """Model inputs ``[len(idx), F]`` of the flat steps ``idx``: (s, a, s' - s)."""
        o, a, n = self._step_arrays_at(v, idx)
        assert n is not None
        return np.concatenate([o, a, n - o], axis=1)

    def _featurize(self, episodes: Episodes) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """(inputs[N, F] of the valid steps in row-major order, mask[B, T], metrics)."""
        v = self._views(episodes)
        metrics = dict(v.metrics)
        return self._inputs(v, v.flat_index, metrics), v.mask, metrics

    # ---------------------------------------------------------------- model

    def _build(self, in_dim: int) -> None:
        with seeded(self.seed):
            self.model = make_mlp(in_dim, self.hidden, 1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        if self.store.num_episodes:
            # Start from the mean per-step reward of the stored episodes (the output bias).
            avg = float(np.mean(self.store.returns / self.store.lengths))
            with torch.no_grad():
                self.model[-1].bias.fill_(avg)

    def _update(self) -> float:
        assert self.model is not None and self.optimizer is not None
        idx = self.store.sample_indices(self.batch_episodes, self._rng, by_length=self.sample_by_length)
        if self.loss_kind == "rrd":
            sub = self.store.subsets(idx, self.subset_size, self._rng)
            x = torch.from_numpy(sub.inputs)
            pred = self.model(self.norm.normalize(x)).squeeze(-1)
            loss = rrd_loss(pred, torch.from_numpy(sub.returns).float(), torch.from_numpy(sub.lengths), bias_correction=self.bias_correction)
        else:
            batch = self.store.episodes(idx)
            x = torch.from_numpy(batch.inputs)
            pred = self.model(self.norm.normalize(x)).squeeze(-1)
            loss = rd_loss(pred, torch.from_numpy(batch.returns).float(), torch.from_numpy(batch.mask))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        return float(loss.detach())

    # ---------------------------------------------------------------- protocol

    def fit(self, episodes: Episodes | None = None, *, num_updates: int | None = None) -> dict[str, float]:
        """Store the batch's complete episodes, then take ``num_updates`` gradient steps
        (default ``updates_per_fit``) on episodes drawn from the store.

        Returns metrics: ``credit/loss`` (mean over the steps), ``credit/updates``,
        ``credit/fit_seconds``, ``store/episodes``, ``store/steps`` and the ``store/skipped_*``
        counts of episodes left out (no outcome, truncated, longer than the store).
        """
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        if episodes is not None:
            arr = episode_arrays(episodes)
            keep, m = complete_episodes(arr, include_truncated=self.include_truncated)
            metrics.update(m)
            if keep.any():
                sub = episodes if keep.all() else episodes.select(np.nonzero(keep)[0])
                x, mask, m2 = self._featurize(sub)
                metrics.update(m2)
                sa = episode_arrays(sub)
                self.norm.update(x)
                metrics.update(self.store.add(x, lengths=sa.lengths, returns=sa.returns))
        n = self.updates_per_fit if num_updates is None else int(num_updates)
        losses: list[float] = []
        if n > 0 and self.store.num_episodes > 0:
            if self.model is None:
                self._build(self.store.feature_dim or 0)
            losses = [self._update() for _ in range(n)]
        metrics.update(
            {
                "credit/loss": float(np.mean(losses)) if losses else float("nan"),
                "credit/updates": float(len(losses)),
                "credit/total_updates": float(self.num_updates),
                "store/episodes": float(self.store.num_episodes),
                "store/steps": float(self.store.num_steps),
                "credit/fit_seconds": time.perf_counter() - t0,
            }
        )
        return metrics

    def assign(self, episodes: Episodes) -> RewardOutput:
        """Per-step rewards ``r_hat`` for every valid step (see the module docstring).

        Returns:
            RewardOutput(rewards[B, T] (0 on padding, dtype of ``episodes.rewards``), metrics,
            present[B, T] = the mask: a step model credits every step, complete or not).
        """
        t0 = time.perf_counter()
        v = self._views(episodes)
        metrics = dict(v.metrics)
        mask = v.mask
        idx = v.flat_index
        flat = np.empty(idx.shape[0], dtype=np.float32)
        for i in range(0, idx.shape[0], self.chunk_size):  # featurize and predict chunk by chunk
            x = self._inputs(v, idx[i : i + self.chunk_size], metrics)
            if self.model is None:
                self._build(x.shape[1])
            flat[i : i + self.chunk_size] = predict_flat(self.model, self.norm, x, chunk_size=self.chunk_size)
        if self.num_updates == 0:
            metrics["credit/untrained"] = 1.0
        rewards = np.zeros(mask.shape, dtype=np.float64)
        rewards[mask] = flat
        if self.correct_residual:
            arr = episode_arrays(episodes)
            resid = np.where(arr.has_return, (arr.returns - rewards.sum(1)) / np.maximum(arr.lengths, 1), 0.0)
            rewards = np.where(mask, rewards + resid[:, None], 0.0)
            metrics["credit/residual_abs_mean"] = float(np.abs(resid[arr.has_return]).mean()) if arr.has_return.any() else 0.0
        dtype = np.asarray(episodes.rewards[:0, :0]).dtype if not episodes.is_torch else np.float32
        if dtype.kind != "f":
            dtype = np.float32
        metrics["credit/assign_seconds"] = time.perf_counter() - t0
        out = rewards.astype(dtype)
        backend = Backend.of(episodes.rewards)
        return RewardOutput(backend.out(torch.from_numpy(out)), metrics, backend.out(torch.from_numpy(mask)))

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self._config(),
            "dims": self._dims,
            "model": None if self.model is None else self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "norm": self.norm.state_dict(),
            "store": self.store.state_dict(),
            "num_updates": self.num_updates,
            "rng": rng_state(self._rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._dims = None if state["dims"] is None else dict(state["dims"])
        self.norm.load_state_dict(state["norm"])
        self.store.load_state_dict(state["store"])
        self.num_updates = int(state["num_updates"])
        set_rng_state(self._rng, state["rng"])
        self.model = None
        self.optimizer = None
        if state["model"] is not None:
            first = next(iter(state["model"].values()))
            self._build(int(first.shape[1]))
            assert self.model is not None and self.optimizer is not None
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(store={self.store.num_episodes} episodes / {self.store.num_steps} steps, updates={self.num_updates})"


class RDAssigner(_StepRewardModel):
    """Full-trajectory return decomposition (RD): per-step predictions that sum to the return.

    Trains an MLP ``r_hat(s, a, s' - s)`` with :func:`rd_loss` on whole stored episodes; assigns
    ``r_hat`` plus the per-episode residual spread over the steps (``correct_residual``), so
    ``sum_t r_t = R`` exactly for every episode with a known return.

    Args:
        hidden: MLP hidden sizes (default 128-128; RRD's paper uses 256-256, see docs/credit.md
            on the speed trade-off).
        lr: Adam learning rate.
        batch_episodes: episodes per gradient step.
        updates_per_fit: gradient steps per :meth:`fit` call unless ``num_updates`` is given.
        capacity_steps: size of the episode store in steps.
        include_truncated: also train on truncated episodes (see :mod:`creditlab.credit.base`).
        correct_residual: add ``(R - sum r_hat) / T`` to every step of complete episodes.
        num_actions: number of discrete actions (inferred from the first batch if omitted).
        sample_by_length: draw stored episodes with probability proportional to length.
        chunk_size: rows per inference chunk.
        seed: seeds model initialization and sampling.

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

    name = "rd"

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (128, 128),
        lr: float = 3e-4,
        batch_episodes: int = 4,
        updates_per_fit: int = 32,
        capacity_steps: int = 300_000,
        include_truncated: bool = False,
        correct_residual: bool = True,
        num_actions: int | None = None,
        sample_by_length: bool = True,
        chunk_size: int = 16384,
        seed: int | None = 0,
    ):
        super().__init__(
            loss="rd",
            bias_correction=False,
            subset_size=1,
            batch_episodes=batch_episodes,
            hidden=hidden,
            lr=lr,
            updates_per_fit=updates_per_fit,
            capacity_steps=capacity_steps,
            include_truncated=include_truncated,
            correct_residual=correct_residual,
            num_actions=num_actions,
            sample_by_length=sample_by_length,
            max_train_steps=None,
            chunk_size=chunk_size,
            seed=seed,
        )



class RRDAssigner(_StepRewardModel):
    """Randomized return decomposition (RRD; Ren et al., ICLR 2022).

    Trains an MLP ``r_hat(s, a, s' - s)`` with :func:`rrd_loss` on K = ``subset_size`` random
    steps of each of ``batch_episodes`` stored episodes (the paper: K = 64, 4 episodes = 256
    steps per update); ``bias_correction=True`` gives the "RRD (unbiased)" variant. Assigns
    ``r_hat`` (no residual correction by default, as in the paper).

    Args:
        subset_size: K, steps drawn per episode.
        bias_correction: subtract the sample-variance term (expectation = RD loss).
        hidden, lr, batch_episodes, updates_per_fit, capacity_steps, include_truncated,
        correct_residual, num_actions, sample_by_length, chunk_size, seed: as in
        :class:`RDAssigner`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> obs = rng.normal(size=(16, 8, 3)).astype(np.float32)
        >>> ep = Episodes.from_padded(np.zeros((16, 8)), observations=obs, actions=np.zeros((16, 8, 1)),
        ...                           outcomes=obs[..., 0].sum(1))
        >>> rrd = RRDAssigner(subset_size=4, seed=0)
        >>> m = rrd.fit(ep, num_updates=3)
        >>> m["credit/updates"], rrd.assign(ep).rewards.shape
        (3.0, (16, 8))
    """

    name = "rrd"

    def __init__(
        self,
        *,
        subset_size: int = 64,
        bias_correction: bool = False,
        hidden: Sequence[int] = (128, 128),
        lr: float = 3e-4,
        batch_episodes: int = 4,
        updates_per_fit: int = 32,
        capacity_steps: int = 300_000,
        include_truncated: bool = False,
        correct_residual: bool = False,
        num_actions: int | None = None,
        sample_by_length: bool = True,
        chunk_size: int = 16384,
        seed: int | None = 0,
    ):
        super().__init__(
            loss="rrd",
            bias_correction=bias_correction,
            subset_size=subset_size,
            batch_episodes=batch_episodes,
            hidden=hidden,
            lr=lr,
            updates_per_fit=updates_per_fit,
            capacity_steps=capacity_steps,
            include_truncated=include_truncated,
            correct_residual=correct_residual,
            num_actions=num_actions,
            sample_by_length=sample_by_length,
            max_train_steps=None,
            chunk_size=chunk_size,
            seed=seed,
        )

    def _config(self) -> dict[str, Any]:
        return dict(subset_size=self.subset_size, bias_correction=self.bias_correction, **super()._config())


class LaReAssigner(_StepRewardModel):
    """LaRe latent-reward decoder (Qu et al., AAAI 2025): ``r_hat = f_psi(phi(s, a))``.

    ``phi`` is any feature function (see :mod:`creditlab.credit.features`): hand-written, or
    generated by an LLM. Its factors pass through :class:`~creditlab.credit.features.FeatureGuard`
    (shape checks, NaN/inf guard) and a running standardization (arbitrary factor scales), then a
    small MLP decoder trained with the RRD loss (bias-corrected by default, LaRe's "RRDu").

    With ``features=None`` there is no latent function and the decoder reads the raw step
    ``(s, a, s' - s)``: LaRe's documented fallback when no candidate function passes its checks,
    i.e. plain RRD (``credit/lare_raw_inputs = 1`` in the metrics).

    Args:
        features: a callable ``phi(observations[N, obs], actions[N, act]) -> factors``, the env id
            of a hand-written set (``"Hopper-v5"``, ``"CartPole-v1"``), ``"module:function"``, or
            None.
        use_next_observations: also pass ``next_observations`` to ``phi`` (automatic for
            functions that set ``needs_next_observations = True``).
        on_nonfinite: ``"guard"`` or ``"raise"`` for NaN/inf factors.
        factor_clip: factors are clipped to +/- this before standardization.
        loss: ``"rrd"`` (default) or ``"rd"``; ``bias_correction`` for the RRD loss.
        subset_size, hidden, lr, batch_episodes, updates_per_fit, capacity_steps,
        include_truncated, correct_residual, num_actions, sample_by_length, chunk_size, seed:
        as in :class:`RRDAssigner` (LaRe's MuJoCo decoder is 3 layers of 256; 128-128 here).

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

    name = "lare"

    def __init__(
        self,
        *,
        features: Callable[..., Any] | str | None = None,
        use_next_observations: bool = False,
        on_nonfinite: str = "guard",
        factor_clip: float = 1e6,
        loss: str = "rrd",
        bias_correction: bool = True,
        subset_size: int = 64,
        hidden: Sequence[int] = (128, 128),
        lr: float = 3e-4,
        batch_episodes: int = 4,
        updates_per_fit: int = 32,
        capacity_steps: int = 300_000,
        include_truncated: bool = False,
        correct_residual: bool = False,
        num_actions: int | None = None,
        sample_by_length: bool = True,
        chunk_size: int = 16384,
        seed: int | None = 0,
    ):
        super().__init__(
            loss=loss,
            bias_correction=bias_correction,
            subset_size=subset_size,
            batch_episodes=batch_episodes,
            hidden=hidden,
            lr=lr,
            updates_per_fit=updates_per_fit,
            capacity_steps=capacity_steps,
            include_truncated=include_truncated,
            correct_residual=correct_residual,
            num_actions=num_actions,
            sample_by_length=sample_by_length,
            max_train_steps=None,
            chunk_size=chunk_size,
            seed=seed,
        )
        self.features_spec = features if isinstance(features, str) else None
        fn = resolve_features(features)
        self.use_next_observations = bool(use_next_observations)
        self.on_nonfinite = on_nonfinite
        self.factor_clip = float(factor_clip)
        self.guard = (
            None
            if fn is None
            else FeatureGuard(fn, on_nonfinite=on_nonfinite, clip=factor_clip, use_next_observations=use_next_observations)
        )

    def _uses_next(self) -> bool:
        return self.guard is None or self.guard.use_next

    def _inputs(self, v: _StepViews, idx: np.ndarray, metrics: dict[str, float]) -> np.ndarray:
        if self.guard is None:
            metrics["credit/lare_raw_inputs"] = 1.0
            return super()._inputs(v, idx, metrics)
        o, a, n = self._step_arrays_at(v, idx)
        factors, m = self.guard(o, a, n)
        metrics["credit/nonfinite_factors"] = metrics.get("credit/nonfinite_factors", 0.0) + m["credit/nonfinite_factors"]
        metrics["credit/num_factors"] = float(factors.shape[1])
        return factors

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["has_features"] = self.guard is not None
        state["num_factors"] = None if self.guard is None else self.guard.num_factors
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("has_features") and self.guard is None:
            raise RangeError(
                "this LaRe assigner was saved with a Python feature function, which is not stored in the checkpoint; "
                "pass it again: load_assigner(path, features=phi)"
            )
        super().load_state_dict(state)
        if self.guard is not None and state.get("num_factors") is not None:
            self.guard.num_factors = int(state["num_factors"])

    def _config(self) -> dict[str, Any]:
        return dict(
            features=self.features_spec, use_next_observations=self.use_next_observations,
            on_nonfinite=self.on_nonfinite, factor_clip=self.factor_clip, loss=self.loss_kind,
            bias_correction=self.bias_correction, subset_size=self.subset_size, **super()._config(),
        )
