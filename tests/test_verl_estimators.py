"""Outcome estimators side by side with verl 0.9.1's (``verl.trainer.ppo.core_algos``) on random inputs.

verl is installed by scripts/install.sh (``--no-deps``, as docs/llm.md tells users); without it
these tests skip.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.errors import DegenerateGroupWarning

core = pytest.importorskip("verl.trainer.ppo.core_algos")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateGroupWarning)
        yield


def _batch(rng, n_groups, min_size=2, max_size=6, length=9, values=(0.0, 0.5, 1.0, 2.0)):
    """verl-shaped rows: right-padded response masks, the score on the last valid token."""
    sizes = rng.integers(min_size, max_size + 1, size=n_groups)
    index = np.repeat(np.array([f"uid-{g}" for g in range(n_groups)], dtype=object), sizes)
    perm = rng.permutation(index.shape[0])
    index = index[perm]
    bs = index.shape[0]
    lengths = rng.integers(1, length + 1, size=bs)
    mask = torch.from_numpy((np.arange(length)[None, :] < lengths[:, None]).astype(np.float32))
    scores = rng.choice(np.asarray(values), size=bs).astype(np.float32)
    tl = torch.zeros(bs, length)
    tl[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(scores)
    return tl, mask, index, scores, lengths


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_groups=st.integers(1, 6))
def test_reinforce_pp_baseline_with_token_weights_equals_verl(seed, n_groups):
    rng = np.random.default_rng(seed)
    tl, mask, index, scores, lengths = _batch(rng, n_groups)
    theirs, _ = core.compute_reinforce_plus_plus_baseline_outcome_advantage(tl, mask, index)
    ours = cl.reinforce_pp_baseline(scores.astype(np.float64), index, weights=lengths)
    # verl whitens tokens: each row carries its value on every valid token
    expected = theirs.numpy()[np.arange(len(lengths)), lengths - 1]
    # groups without spread: verl moves them to -mean/std, creditlab keeps them at exactly 0
    _, inv = np.unique(index.astype(str), return_inverse=True)
    spread = np.array([np.ptp(scores[inv == inv[i]]) > 0 for i in range(len(scores))])
    np.testing.assert_allclose(ours.advantages[spread], expected[spread], rtol=2e-5, atol=2e-5)
    assert np.all(ours.advantages[~spread] == 0.0)
