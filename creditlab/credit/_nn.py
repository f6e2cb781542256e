"""Small torch pieces shared by the learned assigners: input normalizers, MLP, batched inference."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["RunningNorm", "FirstBatchStandardizer", "make_mlp", "predict_flat", "seeded"]


class RunningNorm:
    """Running mean and variance of feature vectors, merged batch by batch in float64.

    ``normalize(x) = clip((x - mean) / sqrt(var + eps), -clip, clip)``. Feature scales that differ
    by orders of magnitude (raw MuJoCo velocities, LLM-written factors) all come out O(1).
    """

    def __init__(self, eps: float = 1e-8, clip: float = 10.0):
        self.eps = float(eps)
        self.clip = float(clip)
        self.count = 0.0
        self.mean: np.ndarray | None = None
        self.var: np.ndarray | None = None
        self._t_mean: torch.Tensor | None = None
        self._t_inv_std: torch.Tensor | None = None

    def update(self, x: np.ndarray) -> None:
        """Merge the statistics of ``x[N, F]`` (parallel-variance formula of Chan et al.)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return
        b_mean = x.mean(axis=0)
        b_var = x.var(axis=0)
        n = float(x.shape[0])
        if self.mean is None or self.var is None:
            self.mean, self.var, self.count = b_mean, b_var, n
        else:
            tot = self.count + n
            delta = b_mean - self.mean
            self.mean = self.mean + delta * n / tot
            m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / tot
            self.var = m2 / tot
            self.count = tot
        self._refresh()

    def _refresh(self) -> None:
        assert self.mean is not None and self.var is not None
        self._t_mean = torch.from_numpy(self.mean.astype(np.float32))
        self._t_inv_std = torch.from_numpy((1.0 / np.sqrt(self.var + self.eps)).astype(np.float32))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self._t_mean is None or self._t_inv_std is None:
            return x.clamp(-self.clip, self.clip)
        return ((x - self._t_mean) * self._t_inv_std).clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        return {"eps": self.eps, "clip": self.clip, "count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.eps, self.clip, self.count = float(state["eps"]), float(state["clip"]), float(state["count"])
        self.mean = None if state["mean"] is None else np.asarray(state["mean"], dtype=np.float64)
        self.var = None if state["var"] is None else np.asarray(state["var"], dtype=np.float64)
        if self.mean is not None:
            self._refresh()


class FirstBatchStandardizer:
    """Feature mean and std of the first batch it is given, fixed afterwards (SPA's standardization).

    ``normalize(x) = (x - mean) / std`` in the features' own precision (float32 torch), a zero
    std taken as 1; before the first :meth:`update` it returns ``x`` unchanged.

    Example (features [1, 3] and [2, 2]: mean [1.5, 2.5], std [0.5, 0.5]):
        >>> norm = FirstBatchStandardizer()
        >>> norm.update(torch.tensor([[1.0, 3.0], [2.0, 2.0]]))
        >>> norm.normalize(torch.tensor([[2.0, 3.0]])).tolist()
        [[1.0, 1.0]]
    """

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Take the statistics of ``x[N, D]`` if none are set yet (later calls change nothing)."""
        if self.mean is not None:
            return
        self.mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            return x
        return (x - self.mean) / self.std

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": None if self.mean is None else self.mean.clone(),
            "std": None if self.std is None else self.std.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mean = state["mean"]
        self.std = state["std"]


def make_mlp(in_dim: int, hidden: Sequence[int], out_dim: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        d = int(h)
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def predict_flat(
    model: nn.Module, norm: RunningNorm, x: np.ndarray | torch.Tensor, *, chunk_size: int = 16384
) -> np.ndarray:
    """Model output for flat inputs ``x[N, F]`` in chunks, without autograd. Returns float32[N]."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x.float()
    out = torch.empty(t.shape[0], dtype=torch.float32)
    with torch.inference_mode():
        for i in range(0, t.shape[0], chunk_size):
            out[i : i + chunk_size] = model(norm.normalize(t[i : i + chunk_size])).squeeze(-1)
    return out.numpy()
