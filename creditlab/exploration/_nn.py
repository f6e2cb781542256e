"""Small torch pieces of the learned bonuses: MLPs, an observation normalizer, minibatch training."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .functional import RunningMoments, moments_std, update_moments

__all__ = ["make_mlp", "build_seeded", "ObservationNorm", "train_minibatches", "inference"]


def make_mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack ``in_dim -> hidden... -> out_dim`` (no activation at the end)."""
    layers: list[nn.Module] = []
    d = int(in_dim)
    for h in hidden:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        d = int(h)
    layers.append(nn.Linear(d, int(out_dim)))
    return nn.Sequential(*layers)


def build_seeded(seed: int | None, build: Callable[[], Any]) -> Any:
    """Run ``build()`` with torch's global RNG seeded (the caller's RNG state is restored)."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


class ObservationNorm:
    """Per-feature standardization ``clip((x - mean) / std, -clip, clip)`` from running moments.

    Before any statistics are merged, a batch is standardized with its own moments (so the first
    rollout is not fed raw pixel-scale values). Features with zero spread are only centred.
    """

    def __init__(self, clip: float = 5.0, enabled: bool = True):
        self.clip = float(clip)
        self.enabled = bool(enabled)
        self.moments = RunningMoments()

    def update(self, x: np.ndarray) -> None:
        if self.enabled and x.shape[0]:
            self.moments = update_moments(self.moments, x.reshape(x.shape[0], -1), axis=0)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if not self.enabled:
            return t
        m = self.moments if self.moments.count else update_moments(RunningMoments(), x, axis=0)
        mean = torch.from_numpy(np.asarray(m.mean, dtype=np.float32))
        std = np.asarray(moments_std(m), dtype=np.float32)
        inv = torch.from_numpy(np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 1.0).astype(np.float32))
        return ((t - mean) * inv).clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        return {"clip": self.clip, "enabled": self.enabled, "moments": tuple(self.moments)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.clip, self.enabled = float(state["clip"]), bool(state["enabled"])
        self.moments = RunningMoments(*state["moments"])


def inference(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, chunk: int = 16384) -> torch.Tensor:
    """``fn`` over the rows of ``x`` in chunks, without autograd."""
    with torch.inference_mode():
        if x.shape[0] <= chunk:
            return fn(x)
        return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def train_minibatches(
    loss_fn: Callable[[np.ndarray], tuple[torch.Tensor, dict[str, float]]],
    optimizer: torch.optim.Optimizer,
    n_rows: int,
    *,
    num_updates: int,
    batch_size: int,
    rng: np.random.Generator,
) -> dict[str, float]:
    """``num_updates`` Adam steps, each on ``batch_size`` rows drawn without replacement.

    ``loss_fn(index[N]) -> (loss, metrics)``. Returns the metrics averaged over the updates (``{}``
    when there is nothing to train on).
    """
    if n_rows == 0 or num_updates == 0:
        return {}
    sums: dict[str, float] = {}
    for _ in range(num_updates):
        idx = rng.choice(n_rows, size=min(batch_size, n_rows), replace=False)
        loss, metrics = loss_fn(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / num_updates for k, v in sums.items()}
