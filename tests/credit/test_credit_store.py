"""EpisodeStore: FIFO by steps, whole episodes only, vectorized sampling, state round trip."""

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditlab.credit import EpisodeStore
from creditlab.errors import RangeError, ShapeError


def _episodes(rng, n, start):
    lengths = rng.integers(1, 7, size=n)
    # Feature value = a unique step id, so gathered rows can be traced back.
    ids = start + np.arange(lengths.sum())
    returns = rng.normal(size=n)
    return ids.astype(np.float32)[:, None], lengths, returns


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), capacity=st.integers(1, 25), n_adds=st.integers(1, 8))
def test_store_matches_reference_fifo(seed, capacity, n_adds):
    """Vectorized ring buffer == a deque of whole episodes evicted oldest-first."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore(capacity)
    ref: deque = deque()
    next_id = 0
    for _ in range(n_adds):
        x, lengths, returns = _episodes(rng, int(rng.integers(1, 5)), next_id)
        next_id += x.shape[0]
        store.add(x, lengths=lengths, returns=returns)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        new = [
            (x[offsets[i] : offsets[i + 1], 0].tolist(), returns[i])
            for i in range(len(lengths))
            if lengths[i] <= capacity
        ]
        # keep the newest episodes of this batch that fit together
        kept, total = [], 0
        for steps, r in reversed(new):
            if total + len(steps) > capacity:
                break
            kept.insert(0, (steps, r))
            total += len(steps)
        for item in kept:
            ref.append(item)
        while sum(len(s) for s, _ in ref) > capacity:
            ref.popleft()
    assert store.num_episodes == len(ref)
    assert store.num_steps == sum(len(s) for s, _ in ref) <= capacity
    if len(ref):
        batch = store.episodes(np.arange(store.num_episodes))
        for b, (steps, r) in enumerate(ref):
            assert batch.inputs[b, : batch.lengths[b], 0].tolist() == steps
            assert batch.returns[b] == r
        assert (batch.inputs[~batch.mask] == 0).all()


def test_subsets_gather_the_drawn_steps():
    store = EpisodeStore(100)
    x = np.arange(10, dtype=np.float32)[:, None]
    store.add(x, lengths=[4, 6], returns=[1.0, 2.0])
    sub = store.subsets(np.array([0, 1, 1]), 3, np.random.default_rng(0))
    starts = np.array([0, 4, 4])
    np.testing.assert_array_equal(sub.inputs[..., 0], starts[:, None] + sub.steps)
    assert sub.lengths.tolist() == [4, 6, 6] and sub.returns.tolist() == [1.0, 2.0, 2.0]


def test_sampling_by_length():
    store = EpisodeStore(1000)
    store.add(np.zeros((100, 1), np.float32), lengths=[1, 99], returns=[0.0, 0.0])
    idx = store.sample_indices(10_000, np.random.default_rng(0))
    assert abs(np.mean(idx == 1) - 0.99) < 0.01
    idx = store.sample_indices(10_000, np.random.default_rng(0), by_length=False)
    assert abs(np.mean(idx == 1) - 0.5) < 0.02


def test_store_state_round_trip_and_errors():
    store = EpisodeStore(7)
    store.add(np.arange(9, dtype=np.float32).reshape(9, 1), lengths=[3, 2, 4], returns=[1.0, 2.0, 3.0])
    clone = EpisodeStore(1)
    clone.load_state_dict(store.state_dict())
    a = store.episodes(np.arange(store.num_episodes))
    b = clone.episodes(np.arange(clone.num_episodes))
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.returns, b.returns)
    with pytest.raises(ShapeError, match="add up"):
        store.add(np.zeros((3, 1), np.float32), lengths=[2], returns=[0.0])
    with pytest.raises(ShapeError, match="features per step"):
        store.add(np.zeros((2, 2), np.float32), lengths=[2], returns=[0.0])
    with pytest.raises(RangeError, match="empty"):
        EpisodeStore(5).sample_indices(1, np.random.default_rng(0))
    m = store.add(np.zeros((8, 1), np.float32), lengths=[8], returns=[0.0])
    assert m["store/skipped_too_long"] == 1.0
