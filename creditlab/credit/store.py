"""A FIFO store of complete episodes, sized in steps, for training reward models.

Steps live in one ring buffer ``inputs[capacity_steps, F]`` (the model's per-step input
features, computed once when the episode is added); a table keeps each episode's start in the
ring, its length and its return. Adding evicts the oldest episodes until the new ones fit, so
the store always holds whole episodes. Sampling is vectorized: a padded batch of episodes, or
K steps from each of n episodes (RRD's Monte Carlo subsets), is gathered with index arithmetic
and no loop over episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..errors import RangeError, ShapeError

__all__ = ["EpisodeStore", "EpisodeBatch", "StepSubsets", "sample_subsets"]


class EpisodeBatch(NamedTuple):
    """Whole episodes drawn from a store.

    Attributes:
        inputs: float32[n, T, F] -- per-step model inputs; 0 on padding.
        mask: bool[n, T]
        lengths: int64[n]
        returns: float64[n] -- episodic return R.
    """

    inputs: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    returns: np.ndarray


class StepSubsets(NamedTuple):
    """K steps drawn from each of n episodes (RRD).

    Attributes:
        inputs: float32[n, K, F] -- inputs of the drawn steps.
        steps: int64[n, K] -- the drawn step indices t in 0..T_b-1.
        lengths: int64[n] -- T_b.
        returns: float64[n] -- R_b.
    """

    inputs: np.ndarray
    steps: np.ndarray
    lengths: np.ndarray
    returns: np.ndarray


def sample_subsets(lengths: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw K step indices per episode: without replacement when K <= T_b, else with replacement.

    Args:
        lengths: int[n] -- episode lengths T_b >= 1.
        k: subset size K >= 1.
        rng: NumPy generator.

    Returns:
        int64[n, K] -- step indices in ``0..T_b-1``.

    Without replacement is done for all rows at once: random keys per step, padding steps get a
    key above any draw, and the K smallest keys of each row are kept.

    Example:
        >>> idx = sample_subsets(np.array([3, 2]), 2, np.random.default_rng(0))
        >>> idx.shape, bool((idx[0] < 3).all()), sorted(idx[1].tolist())
        ((2, 2), True, [0, 1])
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.shape[0]
    if k < 1:
        raise RangeError(f"k (steps per subset) must be >= 1; got {k}")
    if n == 0:
        return np.zeros((0, k), dtype=np.int64)
    t_max = int(lengths.max())
    out = np.empty((n, k), dtype=np.int64)
    short = lengths < k
    if short.any():  # with replacement
        u = rng.random((int(short.sum()), k))
        out[short] = np.minimum((u * lengths[short, None]).astype(np.int64), lengths[short, None] - 1)
    long_ = ~short
    if long_.any():
        rows = lengths[long_]
        keys = rng.random((rows.shape[0], t_max))
        keys[np.arange(t_max)[None, :] >= rows[:, None]] = 2.0
        if k < t_max:
            part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        else:
            part = np.argsort(keys, axis=1)[:, :k]
        out[long_] = part
    return out


class EpisodeStore:
    """FIFO store of complete episodes with a capacity in steps.

    Args:
        capacity_steps: the most steps held at once; the oldest episodes are evicted first.
            An episode longer than the capacity is not stored (counted in
            ``store/skipped_too_long``).

    Example:
        >>> store = EpisodeStore(capacity_steps=5)
        >>> m = store.add(np.arange(6, dtype=np.float32).reshape(6, 1), lengths=[2, 4], returns=[1.0, 2.0])
        >>> store.num_episodes, store.num_steps   # 2 + 4 > 5: the first episode was evicted
        (1, 4)
        >>> store.episodes(np.array([0])).inputs[0, :, 0].tolist()
        [2.0, 3.0, 4.0, 5.0]
    """

    def __init__(self, capacity_steps: int = 300_000):
        if int(capacity_steps) < 1:
            raise RangeError(f"capacity_steps must be >= 1; got {capacity_steps}")
        self.capacity = int(capacity_steps)
        self._inputs: np.ndarray | None = None
        self._head = 0
        self._starts = np.zeros(0, dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._returns = np.zeros(0, dtype=np.float64)
        self.total_added = 0

    # ------------------------------------------------------------------ properties

    @property
    def num_episodes(self) -> int:
        return int(self._lengths.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self._lengths.sum())

    @property
    def feature_dim(self) -> int | None:
        return None if self._inputs is None else int(self._inputs.shape[1])

    @property
    def returns(self) -> np.ndarray:
        """float64[E] -- returns of the stored episodes, oldest first."""
        return self._returns

    @property
    def lengths(self) -> np.ndarray:
        """int64[E] -- lengths of the stored episodes, oldest first."""
        return self._lengths

    # ------------------------------------------------------------------ adding

    def add(self, inputs: np.ndarray, *, lengths: Any, returns: Any) -> dict[str, float]:
        """Append episodes given as flat steps.

        Args:
            inputs: float[L, F] -- the steps of the new episodes, episode after episode.
            lengths: int[E] -- their lengths (sum = L).
            returns: float[E] -- their returns.

        Returns:
            metrics: ``store/added_episodes``, ``store/evicted_episodes``, ``store/skipped_too_long``.
        """
        x = np.asarray(inputs, dtype=np.float32)
        lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
        rets = np.asarray(returns, dtype=np.float64).reshape(-1)
        if x.ndim != 2:
            raise ShapeError(f"inputs must be flat steps [L, F]; got shape {x.shape}")
        if lens.shape != rets.shape:
            raise ShapeError(f"lengths has {lens.shape[0]} episodes but returns has {rets.shape[0]}")
        if int(lens.sum()) != x.shape[0] or (lens < 1).any():
            raise ShapeError(
                f"lengths (sum {int(lens.sum())}, min {int(lens.min()) if lens.size else 0}) must be >= 1 and add up to the {x.shape[0]} input steps"
            )
        if self._inputs is None:
            self._inputs = np.zeros((self.capacity, x.shape[1]), dtype=np.float32)
        elif x.shape[1] != self._inputs.shape[1]:
            raise ShapeError(f"inputs have {x.shape[1]} features per step but the store holds {self._inputs.shape[1]}")
        metrics = {"store/added_episodes": 0.0, "store/evicted_episodes": 0.0, "store/skipped_too_long": 0.0}
        too_long = lens > self.capacity
        if too_long.any():
            metrics["store/skipped_too_long"] = float(too_long.sum())
        # Of the rest keep the newest episodes that fit together.
        ok = np.nonzero(~too_long)[0]
        if ok.size:
            cum_from_end = np.cumsum(lens[ok][::-1])[::-1]
            ok = ok[cum_from_end <= self.capacity]
        if ok.size == 0:
            return metrics
        keep_ep = np.zeros(lens.shape[0], dtype=bool)
        keep_ep[ok] = True
        new_x = x[np.repeat(keep_ep, lens)] if ok.size < lens.size else x
        new_lens = lens[ok]
        total = int(new_lens.sum())
        # Evict the oldest episodes until the new steps fit.
        used = self.num_steps
        if used + total > self.capacity:
            need = used + total - self.capacity
            freed = np.cumsum(self._lengths)
            n_evict = int(np.searchsorted(freed, need) + 1)
            metrics["store/evicted_episodes"] = float(n_evict)
            self._starts = self._starts[n_evict:]
            self._lengths = self._lengths[n_evict:]
            self._returns = self._returns[n_evict:]
        pos = (self._head + np.arange(total)) % self.capacity
        self._inputs[pos] = new_x
        starts = (self._head + np.concatenate([[0], np.cumsum(new_lens)[:-1]])) % self.capacity
        self._head = int((self._head + total) % self.capacity)
        self._starts = np.concatenate([self._starts, starts])
        self._lengths = np.concatenate([self._lengths, new_lens])
        self._returns = np.concatenate([self._returns, rets[ok]])
        self.total_added += int(ok.size)
        metrics["store/added_episodes"] = float(ok.size)
        return metrics

    # ------------------------------------------------------------------ sampling

    def sample_indices(self, n: int, rng: np.random.Generator, *, by_length: bool = True) -> np.ndarray:
        """Draw n stored episodes (with replacement), with probability proportional to length
        (RRD's buffer picks a random step, then its episode) or uniformly."""
        if self.num_episodes == 0:
            raise RangeError("the episode store is empty; fit() needs at least one complete episode first")
        if by_length:
            p = self._lengths / self._lengths.sum()
            return rng.choice(self.num_episodes, size=n, p=p)
        return rng.integers(0, self.num_episodes, size=n)

    def episodes(self, idx: np.ndarray, *, max_steps: int | None = None) -> EpisodeBatch:
        """Gather whole episodes ``idx`` as a padded batch (the last ``max_steps`` steps of longer ones
        are dropped when ``max_steps`` is set)."""
        assert self._inputs is not None
        lens = self._lengths[idx]
        if max_steps is not None:
            lens = np.minimum(lens, max_steps)
        t = int(lens.max())
        ar = np.arange(t)
        mask = ar[None, :] < lens[:, None]
        pos = (self._starts[idx][:, None] + np.minimum(ar[None, :], lens[:, None] - 1)) % self.capacity
        x = self._inputs[pos]
        x[~mask] = 0.0
        return EpisodeBatch(x, mask, lens, self._returns[idx])

    def subsets(self, idx: np.ndarray, k: int, rng: np.random.Generator) -> StepSubsets:
        """K random steps of each episode ``idx`` (see :func:`sample_subsets`)."""
        assert self._inputs is not None
        lens = self._lengths[idx]
        steps = sample_subsets(lens, k, rng)
        pos = (self._starts[idx][:, None] + steps) % self.capacity
        return StepSubsets(self._inputs[pos], steps, lens, self._returns[idx])

    def all_inputs(self) -> np.ndarray:
        """float32[num_steps, F] -- every stored step (oldest first)."""
        if self._inputs is None or self.num_episodes == 0:
            return np.zeros((0, self.feature_dim or 0), dtype=np.float32)
        start = int(self._starts[0])
        pos = (start + np.arange(self.num_steps)) % self.capacity
        return self._inputs[pos]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "inputs": None if self._inputs is None else self.all_inputs().copy(),
            "lengths": self._lengths.copy(),
            "returns": self._returns.copy(),
            "total_added": self.total_added,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self._inputs = None
        self._head = 0
        self._starts = np.zeros(0, dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._returns = np.zeros(0, dtype=np.float64)
        if state["inputs"] is not None:
            x = np.asarray(state["inputs"], dtype=np.float32)
            self._inputs = np.zeros((self.capacity, x.shape[1]), dtype=np.float32)
            if len(state["lengths"]):
                self.add(x, lengths=state["lengths"], returns=state["returns"])
        self.total_added = int(state["total_added"])
