"""Hypothesis strategies for padded episode batches."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def padded_batches(draw, max_b=6, max_t=12, general_discounts=True):
    """A random padded batch: rewards, values, mask, discounts, bootstrap, dtype."""
    b = draw(st.integers(1, max_b))
    t = draw(st.integers(1, max_t))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    lengths[rng.integers(0, b)] = t  # at least one full row
    mask = np.arange(t)[None, :] < lengths[:, None]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rewards = np.where(mask, rng.normal(size=(b, t)), 0.0).astype(dtype)
    values = np.where(mask, rng.normal(size=(b, t)), 0.0).astype(dtype)
    if general_discounts and draw(st.booleans()):
        discounts = np.where(mask, rng.uniform(0, 1, size=(b, t)) * (rng.uniform(size=(b, t)) > 0.2), 0.0)
    else:
        discounts = mask.astype(float)
        terminated = rng.uniform(size=b) < 0.5
        discounts[np.arange(b), lengths - 1] = np.where(terminated, 0.0, 1.0)
    bootstrap = rng.normal(size=b).astype(dtype)
    return dict(
        rewards=rewards,
        values=values,
        mask=mask,
        discounts=discounts.astype(dtype),
        bootstrap=bootstrap,
        dtype=dtype,
        lengths=lengths,
    )


@st.composite
def grouped_scores(draw, max_n=40, allow_missing=True):
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_groups = draw(st.integers(1, max(1, n)))
    groups = rng.integers(0, n_groups, size=n)
    # Integer-valued rewards make ties (zero-spread groups) common.
    if draw(st.booleans()):
        rewards = rng.integers(0, 3, size=n).astype(float)
    else:
        rewards = rng.normal(size=n) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    present = rng.uniform(size=n) > 0.2 if allow_missing and draw(st.booleans()) else np.ones(n, bool)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return dict(rewards=rewards.astype(dtype), groups=groups, present=present, dtype=dtype)
