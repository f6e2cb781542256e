"""Broadcast of per-episode / per-turn values to steps and tokens."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl


def test_broadcast_to_tokens_masks_tool_tokens():
    # turn 0 -> tokens 0-1; tool output tokens 2-3 (masked); turn 1 -> token 4; padding token 5
    values = np.array([[1.5, -2.0]])
    turn_ids = np.array([[0, 0, 0, 0, 1, -1]])
    resp = np.array([[1, 1, 0, 0, 1, 0]])
    out = cl.broadcast_to_tokens(values, turn_ids, resp)
    np.testing.assert_array_equal(out, [[1.5, 1.5, 0.0, 0.0, -2.0, 0.0]])


def test_zero_valued_turn_is_still_a_turn():
    out = cl.broadcast_to_tokens(np.array([[0.0, 3.0]]), np.array([[0, 1, 1]]), np.array([[1, 1, 1]]))
    np.testing.assert_array_equal(out, [[0.0, 3.0, 3.0]])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 4), t=st.integers(1, 5), length=st.integers(1, 30))
def test_broadcast_never_writes_masked_tokens(seed, b, t, length):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(b, t)) + 10  # never 0
    turn_ids = rng.integers(0, t, size=(b, length))
    resp = rng.uniform(size=(b, length)) < 0.6
    garbage = np.where(resp, turn_ids, rng.integers(-100, 100, size=(b, length)))  # any id off the mask
    out = cl.broadcast_to_tokens(values, garbage, resp)
    assert np.all(out[~resp] == 0)
    np.testing.assert_array_equal(out[resp], values[np.nonzero(resp)[0], turn_ids[resp]])


def test_broadcast_errors_and_torch():
    with pytest.raises(cl.RangeError, match=r"turn_ids\[0, 1\] = 5"):
        cl.broadcast_to_tokens(np.zeros((1, 2)), np.array([[0, 5]]), np.array([[1, 1]]))
    with pytest.raises(cl.DtypeError, match="integer"):
        cl.broadcast_to_tokens(np.zeros((1, 2)), np.array([[0.0, 1.0]]), np.array([[1, 1]]))
    with pytest.raises(cl.MaskError, match="padding in step_mask"):
        cl.broadcast_to_tokens(np.zeros((1, 2)), np.array([[0, 1]]), np.array([[1, 1]]), step_mask=[[1, 0]])
    out = cl.broadcast_to_tokens(torch.ones(1, 2), torch.tensor([[0, 1]]), torch.tensor([[True, False]]))
    assert isinstance(out, torch.Tensor) and out.tolist() == [[1.0, 0.0]]


def test_broadcast_to_steps():
    out = cl.broadcast_to_steps(np.array([2.0, -1.0]), np.array([[1, 1, 0], [1, 0, 0]], bool))
    np.testing.assert_array_equal(out, [[2, 2, 0], [-1, 0, 0]])
