"""Per-turn process scores -> turn rewards: Clip / Delta bounds, gating, outcome placement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.llm import process_turn_rewards, turn_rloo


def _returns(r, mask):
    return np.flip(np.cumsum(np.flip(np.where(mask, r, 0.0), 1), 1), 1) * mask


def test_by_hand():
    s = [[0.9, 0.2, 0.6], [0.3, 0.8, 0.0]]
    mask = [[1, 1, 1], [1, 1, 0]]
    # clip eta 0.5: [0, -0.3, 0] and [-0.2, 0]; outcome on the last turn
    clip = process_turn_rewards(s, [1.0, 0.0], mask=mask, transform="clip", eta=0.5).rewards
    np.testing.assert_allclose(clip, [[0.0, -0.3, 1.0], [-0.2, 0.0, 0.0]], atol=1e-12)
    # clip then delta: clipped [0, -0.3, 0] -> [0.3, -0.3, 0]; [-0.2, 0] -> [-0.2, 0]
    cd = process_turn_rewards(s, [1.0, 0.0], mask=mask, transform="clip_delta", eta=0.5).rewards
    np.testing.assert_allclose(cd, [[0.3, -0.3, 1.0], [-0.2, 0.0, 0.0]], atol=1e-12)
    # gate 1: the failed trajectory keeps no process reward; the outcome (0) is still added
    gated = process_turn_rewards(s, [1.0, 0.0], mask=mask, transform="none", gate=1.0).rewards
    np.testing.assert_allclose(gated, [[0.9, 0.2, 1.6], [0.0, 0.0, 0.0]], atol=1e-12)
    # a missing outcome adds nothing
    miss = process_turn_rewards(s, [None, 0.5], mask=mask, transform="none").rewards
    np.testing.assert_allclose(miss, [[0.9, 0.2, 0.6], [0.3, 1.3, 0.0]], atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 8), t=st.integers(1, 12))
def test_delta_bounds_the_return_whatever_the_number_of_turns(seed, b, t):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    mask = np.arange(t)[None, :] < lengths[:, None]
    scores = rng.uniform(size=(b, t))
    outcomes = rng.integers(0, 2, size=b).astype(float)
    r = process_turn_rewards(scores, outcomes, mask=mask, transform="delta").rewards
    g = _returns(r, mask)
    # return from turn k = s_k + outcome: in [0, 1] + outcome however many turns are taken
    np.testing.assert_allclose(g[mask], (scores + outcomes[:, None])[mask], atol=1e-12)
    assert g.max() <= 1.0 + outcomes.max() + 1e-12
    # Clip: the process part of any return is <= 0, so more turns never earn more
    rc = process_turn_rewards(scores, outcomes, mask=mask, transform="clip", eta=0.5).rewards
    assert np.all(_returns(rc, mask)[:, 0] <= outcomes + 1e-12)


def test_farming_turns_does_not_pay_under_delta_or_clip():
    # A policy that pads its trajectory with k extra turns scoring 0.9 each (a PRM that likes them).
    base = [0.5, 0.7]
    for k in (0, 5, 50):
        s = np.array([[0.9] * k + base])
        raw = process_turn_rewards(s, [1.0], mask=None, transform="none").rewards.sum()
        delta = process_turn_rewards(s, [1.0], mask=None, transform="delta").rewards.sum()
        clip = process_turn_rewards(s, [1.0], mask=None, transform="clip", eta=0.8).rewards.sum()
        assert raw == pytest.approx(1.0 + 1.2 + 0.9 * k)  # grows with k: hackable
        assert delta == pytest.approx(1.0 + s[0, 0])  # bounded: s_0 + outcome
        assert clip == pytest.approx(1.0 - 0.3 - 0.1)  # the farmed turns add nothing
    # and the result feeds a turn-level estimator directly
    r = process_turn_rewards([[0.2, 0.9], [0.6, 0.1]], [1.0, 0.0], mask=None).rewards
    assert turn_rloo(r, [0, 0], mask=None).advantages.shape == (2, 2)


def test_errors():
    with pytest.raises(cl.RangeError, match="transform"):
        process_turn_rewards([[0.1]], mask=None, transform="log")
    with pytest.raises(cl.RangeError, match="gate needs outcomes"):
        process_turn_rewards([[0.1]], mask=None, gate=0.5)
    with pytest.raises(cl.ShapeError, match="outcomes"):
        process_turn_rewards([[0.1]], [1.0, 2.0], mask=None)
