"""E3B: exploration via elliptical episodic bonuses (Henaff et al., NeurIPS 2022, arXiv 2210.05805).

An encoder ``phi`` is trained through an inverse-dynamics model ``g(phi(s_t), phi(s_{t+1})) -> a_t``
(cross-entropy over discrete actions, as in the paper; for continuous actions -- an extension --
the squared error of the predicted action vector), so the embedding keeps what the agent controls. Each env keeps, for its running
episode, the inverse ``C^{-1}`` of ``C = lambda I + sum_k phi_k phi_k^T`` over the states visited so
far; the bonus of reaching ``s_{t+1}`` is ``phi^T C^{-1} phi`` with ``phi = phi(s_{t+1})`` and the
inverse before the update, after which :func:`~creditlab.exploration.functional.sherman_morrison_step`
adds ``phi`` (:func:`~creditlab.exploration.functional.sherman_morrison_kernel`, its unchecked core). ``C^{-1}`` is reset to ``I / lambda`` (ridge lambda = 0.1) when an episode starts --
after a termination or a truncation -- and then holds ``phi(s_0)``.

All envs are updated at once: one batched Sherman-Morrison step on ``[E, d, d]`` per time step,
after one encoder forward over the whole rollout.

Embedding size: the e3b MiniHack runs use d = 1024. The update costs ``O(E d^2)`` per step; on CPU
d = 1024 with 8 envs is several milliseconds per step (``benchmarks/bench_exploration.py``), so the
default here is d = 128 (pass ``embed_dim=1024`` to match the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._arrays import check_positive
from ..errors import RangeError, ShapeError
from ..registry import register_method
from ._nn import ObservationNorm, build_seeded, inference, make_mlp, train_minibatches
from .base import ExplorationBonus, Transitions
from .functional import sherman_morrison_kernel

__all__ = ["E3BBonus"]


@register_method(
    "e3b",
    family="exploration",
    summary="E3B elliptical episodic bonus phi(s')^T C^-1 phi(s') (inverse-dynamics embedding, Sherman-Morrison, reset per episode)",
    needs=("observations", "actions", "next_observations?"),
    kind="assigner",
    source="Henaff et al., NeurIPS 2022 (arXiv 2210.05805); facebookresearch/e3b",
)
class E3BBonus(ExplorationBonus):
    """E3B elliptical episodic bonus with an inverse-dynamics embedding.

    Example (an episode that returns to its start: the revisit is cheap, a new state is not):
        >>> from creditlab.exploration.base import make_transitions
        >>> a, b = [1.0, 0.0], [0.0, 1.0]
        >>> tr = make_transitions(starts=[[1], [0]], observations=[[a], [b]], next_observations=[[b], [a]])
        >>> e3b = E3BBonus(hidden=(), embed_dim=2, num_actions=2, normalize_observations=False)
        >>> bonus = e3b.compute(tr).bonus[:, 0]
        >>> bool(bonus[0] > bonus[1])
        True
    """

    @dataclass(frozen=True)
    class Config:
        """Parameters of :class:`E3BBonus`.

        Attributes:
            embed_dim: d, size of the embedding phi (e3b MiniHack: 1024; see the module docstring).
            hidden: hidden sizes of the encoder MLP (``()``: a linear encoder).
            inverse_hidden: hidden sizes of the inverse-dynamics MLP (e3b: 256; 128 here, for CPU cost).
            ridge: lambda, ``C^{-1} = I / lambda`` at an episode's start (e3b: 0.1).
            num_actions: number of discrete actions (the SB3 callback sets it from the action
                space; if None, the first batch :meth:`fit` sees decides: its largest action + 1,
                at least 2). Ignored for continuous (float) actions.
            lr: Adam learning rate of encoder and inverse dynamics.
            updates_per_fit: gradient steps per :meth:`fit` unless ``num_updates`` is given.
            batch_size: transitions per gradient step.
            normalize_observations: standardize observations by running per-feature moments.
            obs_clip: clip of the standardized observations.
            seed: seeds network initialization and minibatch sampling.
        """

        embed_dim: int = 128
        hidden: tuple[int, ...] = (128,)
        inverse_hidden: tuple[int, ...] = (128,)
        ridge: float = 0.1
        num_actions: int | None = None
        lr: float = 3e-4
        updates_per_fit: int = 8
        batch_size: int = 256
        normalize_observations: bool = True
        obs_clip: float = 5.0
        seed: int | None = 0

        def __post_init__(self) -> None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
            object.__setattr__(self, "inverse_hidden", tuple(int(h) for h in self.inverse_hidden))
            for name in ("embed_dim", "batch_size"):
                if int(getattr(self, name)) < 1:
                    raise RangeError(f"{name} must be >= 1; got {getattr(self, name)!r}")
            if self.num_actions is not None and int(self.num_actions) < 2:
                raise RangeError(f"num_actions must be >= 2 (or None); got {self.num_actions!r}")
            if int(self.updates_per_fit) < 0:
                raise RangeError(f"updates_per_fit must be >= 0; got {self.updates_per_fit!r}")
            check_positive(self.ridge, "ridge")
            check_positive(self.lr, "lr")
            check_positive(self.obs_clip, "obs_clip")

    name = "e3b"
    scope = "episode"
    uses_observations = True

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        self.num_actions = None if cfg.num_actions is None else int(cfg.num_actions)
        self.action_dim: int | None = None  # continuous actions: size of the action vector
        self.norm = ObservationNorm(cfg.obs_clip, cfg.normalize_observations)
        self.rng = np.random.default_rng(cfg.seed)
        self.obs_dim: int | None = None
        self.encoder: torch.nn.Module | None = None
        self.inverse: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    # ------------------------------------------------------------------ networks

    def set_num_actions(self, n: int) -> None:
        """Fix the number of discrete actions (the SB3 callback passes ``action_space.n``)."""
        if self.action_dim is not None:
            raise RangeError("e3b was trained on continuous actions; it cannot switch to discrete ones")
        if self.num_actions is not None and self.num_actions != int(n):
            raise RangeError(f"e3b was built for {self.num_actions} actions; got {n}")
        if int(n) < 2:
            raise RangeError(f"num_actions must be >= 2; got {n}")
        self.num_actions = int(n)

    def _build(self, obs_dim: int) -> None:
        if self.obs_dim is not None:
            if obs_dim != self.obs_dim:
                raise ShapeError(
                    f"observations have {obs_dim} features but the E3B encoder was built for {self.obs_dim}"
                )
            return
        cfg = self.config
        self.encoder = build_seeded(cfg.seed, lambda: make_mlp(obs_dim, cfg.hidden, cfg.embed_dim))
        self.obs_dim = obs_dim

    def _build_inverse(self) -> None:
        cfg = self.config
        seed = None if cfg.seed is None else cfg.seed + 1
        out = self.num_actions if self.action_dim is None else self.action_dim
        assert out is not None, "E3B: the action count (or size) is fixed before the inverse model is built"
        self.inverse = build_seeded(seed, lambda: make_mlp(2 * cfg.embed_dim, cfg.inverse_hidden, out))

    def _new_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the encoder and the inverse-dynamics model."""
        return torch.optim.Adam([*self.built_encoder.parameters(), *self.built_inverse.parameters()], lr=self.config.lr)

    @property
    def built_encoder(self) -> torch.nn.Module:
        """``encoder``, which exists once the first batch (or a loaded checkpoint) fixed the observation size."""
        assert self.encoder is not None, "E3B: the encoder is built on the first batch"
        return self.encoder

    @property
    def built_inverse(self) -> torch.nn.Module:
        """``inverse``, the inverse-dynamics model, which exists once the first :meth:`fit` fixed the actions."""
        assert self.inverse is not None, "E3B: the inverse-dynamics model is built on the first fit"
        return self.inverse

    @property
    def built_optimizer(self) -> torch.optim.Optimizer:
        """``optimizer``, built with the inverse-dynamics model on the first :meth:`fit`."""
        assert self.optimizer is not None, "E3B: the optimizer is built on the first fit"
        return self.optimizer

    def embed(self, observations: np.ndarray) -> torch.Tensor:
        """float32[N, d] embeddings of observations ``[N, ...]`` (no autograd)."""
        x = np.asarray(observations, dtype=np.float32)
        x = x.reshape(x.shape[0], -1)
        self._build(x.shape[1])
        return inference(self.built_encoder, self.norm(x))

    # ------------------------------------------------------------------ bonus

    def _new_memory(self, n_envs: int) -> torch.Tensor:
        d = self.config.embed_dim
        return torch.eye(d).repeat(n_envs, 1, 1) / self.config.ridge

    def _compute(self, tr: Transitions, memory: Any) -> tuple[np.ndarray, dict[str, float]]:
        t_len, e_len = tr.shape
        valid = tr.valid()
        phi_next = self.embed(tr.states_reached.reshape(t_len * e_len, -1)).reshape(t_len, e_len, -1)
        starts = tr.starts & valid
        if starts.any():
            if tr.observations is None:
                raise ShapeError("e3b needs observations (s_t) to start the episodes marked in starts")
            st, se = np.nonzero(starts)
            phi_start = torch.zeros(t_len, e_len, phi_next.shape[-1])
            phi_start[st, se] = self.embed(tr.observations[st, se])
        reset = torch.eye(self.config.embed_dim) / self.config.ridge
        bonus = torch.zeros(t_len, e_len)
        cov_inverse = memory
        all_valid = bool(valid.all())
        for t in range(t_len):
            if starts[t].any():
                idx = torch.from_numpy(np.nonzero(starts[t])[0])
                fresh = reset.expand(len(idx), -1, -1).clone()
                cov_inverse[idx] = sherman_morrison_kernel(fresh, phi_start[t, idx], None)[1]
            mask = None if all_valid else torch.from_numpy(valid[t])
            bonus[t] = sherman_morrison_kernel(cov_inverse, phi_next[t], mask)[0]
        return bonus.numpy(), {}

    # ------------------------------------------------------------------ learning

    def _fit(self, tr: Transitions, num_updates: int | None) -> dict[str, float]:
        if tr.observations is None or tr.actions is None:
            raise ShapeError("e3b.fit needs observations, actions and next_observations (s_t, a_t, s_{t+1})")
        valid = tr.valid().reshape(-1)
        d = tr.states_reached.shape[-1]
        x0 = tr.observations.reshape(-1, d)[valid]
        x1 = tr.states_reached.reshape(-1, d)[valid]
        discrete = tr.actions.dtype.kind == "i"
        acts = tr.actions.reshape(-1)[valid] if discrete else tr.actions.reshape(-1, tr.actions.shape[-1])[valid]
        self._build(d)
        self._bind_actions(acts, discrete)
        encoder, inverse = self.built_encoder, self.built_inverse
        self.norm.update(np.concatenate([x0, x1]))
        z0, z1 = self.norm(x0), self.norm(x1)
        a = torch.from_numpy(acts)
        loss_of = torch.nn.CrossEntropyLoss() if discrete else torch.nn.MSELoss()

        def loss_fn(idx: np.ndarray):
            i = torch.from_numpy(idx)
            pred = inverse(torch.cat([encoder(z0[i]), encoder(z1[i])], dim=-1))
            loss = loss_of(pred, a[i])
            metrics = {"exploration/embedding_loss": float(loss.detach())}
            if discrete:
                metrics["exploration/inverse_dynamics_accuracy"] = float((pred.argmax(-1) == a[i]).float().mean())
            return loss, metrics

        n = self.config.updates_per_fit if num_updates is None else num_updates
        return train_minibatches(
            loss_fn, self.built_optimizer, x0.shape[0], num_updates=n, batch_size=self.config.batch_size, rng=self.rng
        )

    def _bind_actions(self, acts: np.ndarray, discrete: bool) -> None:
        """Fix the action kind (and count or size) at the first fit; check later batches against it."""
        if discrete:
            if self.action_dim is not None:
                raise RangeError("e3b was trained on continuous (float) actions; got integer actions")
            if self.num_actions is None:
                self.num_actions = max(2, int(acts.max()) + 1 if acts.size else 2)
            if acts.size and (acts.min() < 0 or acts.max() >= self.num_actions):
                raise RangeError(f"actions must lie in [0, {self.num_actions}); got {acts.min()}..{acts.max()}")
        else:
            if self.inverse is not None and self.action_dim is None:
                raise RangeError("e3b was trained on discrete (integer) actions; got float actions")
            if self.action_dim is not None and acts.shape[1] != self.action_dim:
                raise RangeError(f"e3b was trained on {self.action_dim}-dim actions; got {acts.shape[1]}")
            self.action_dim = int(acts.shape[1])
        if self.inverse is None:
            self._build_inverse()
            self.optimizer = self._new_optimizer()

    # ------------------------------------------------------------------ checkpoint

    def _state(self) -> dict[str, Any]:
        return {
            "num_actions": self.num_actions,
            "action_dim": self.action_dim,
            "obs_dim": self.obs_dim,
            "norm": self.norm.state_dict(),
            "rng": self.rng.bit_generator.state,
            "encoder": None if self.encoder is None else self.encoder.state_dict(),
            "inverse": None if self.inverse is None else self.inverse.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.num_actions = state["num_actions"]
        self.action_dim = state["action_dim"]
        self.norm.load_state_dict(state["norm"])
        self.rng.bit_generator.state = dict(state["rng"])
        self.obs_dim = self.encoder = self.inverse = self.optimizer = None
        if state["obs_dim"] is not None:
            self._build(int(state["obs_dim"]))
            self.built_encoder.load_state_dict(state["encoder"])
            if state["inverse"] is not None:
                self._build_inverse()
                self.built_inverse.load_state_dict(state["inverse"])
                self.optimizer = self._new_optimizer()
                self.optimizer.load_state_dict(state["optimizer"])
