"""Turn data: TurnBatch constructors, the turn <-> token map, one-row-per-turn round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import creditlab as cl
from creditlab.llm import (
    TurnBatch,
    gigpo,
    place_on_last_token,
    turn_ids_from_response_mask,
    turn_values_from_tokens,
)

# prompt(2) | turn 0 (3 tokens) | observation (2) | turn 1 (2 tokens) | observation (1) | turn 2 (1) | pad (2)
RESP = np.array([[0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0]], dtype=bool)


def test_turn_ids_from_runs_of_policy_tokens():
    ids, n = turn_ids_from_response_mask(RESP)
    assert ids.tolist() == [[-1, -1, 0, 0, 0, -1, -1, 1, 1, -1, 2, -1, -1]]
    assert n.tolist() == [3]
    ids_t, n_t = turn_ids_from_response_mask(torch.from_numpy(RESP))
    assert isinstance(ids_t, torch.Tensor) and ids_t.tolist() == ids.tolist()


def test_last_token_placement_and_reduction_by_hand():
    ids, _ = turn_ids_from_response_mask(RESP)
    values = np.array([[0.5, 0.0, -2.0]])  # the middle turn's value is exactly 0: still a turn
    tok = place_on_last_token(values, ids, RESP)
    assert tok.tolist() == [[0, 0, 0, 0, 0.5, 0, 0, 0, 0.0, 0, -2.0, 0, 0]]
    np.testing.assert_array_equal(turn_values_from_tokens(tok, ids, RESP, reduce="sum"), values)
    np.testing.assert_array_equal(turn_values_from_tokens(tok, ids, RESP, reduce="last"), values)
    every = cl.broadcast_to_tokens(values, ids, RESP)
    np.testing.assert_array_equal(turn_values_from_tokens(every, ids, RESP, reduce="mean"), values)
    # 3 tokens of 0.5 sum to 1.5, 2 tokens of 0 to 0, 1 token of -2 to -2
    np.testing.assert_array_equal(turn_values_from_tokens(every, ids, RESP, reduce="sum"), [[1.5, 0.0, -2.0]])


def test_rewards_on_observation_tokens_belong_to_the_turn_before():
    ids, _ = turn_ids_from_response_mask(RESP)
    token_rewards = np.zeros((1, 13))
    token_rewards[0, 1] = 9.0  # on the prompt: before any turn, dropped
    token_rewards[0, 6] = 1.0  # on the observation after turn 0
    token_rewards[0, 12] = 3.0  # on padding after turn 2
    out = turn_values_from_tokens(token_rewards, ids, RESP, include_masked=True)
    np.testing.assert_array_equal(out, [[1.0, 0.0, 3.0]])
    np.testing.assert_array_equal(turn_values_from_tokens(token_rewards, ids, RESP), [[0.0, 0.0, 0.0]])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 5), length=st.integers(1, 40))
def test_token_maps_never_touch_masked_tokens(seed, b, length):
    rng = np.random.default_rng(seed)
    resp = rng.uniform(size=(b, length)) < 0.5
    ids, n = turn_ids_from_response_mask(resp)
    t = max(int(n.max()), 1)
    values = rng.normal(size=(b, t)) + 5.0
    step_mask = np.arange(t)[None, :] < n[:, None]
    values = np.where(step_mask, values, 0.0)
    garbage_ids = np.where(resp, ids, rng.integers(-50, 50, size=(b, length)))
    every = cl.broadcast_to_tokens(values, garbage_ids, resp)
    last = place_on_last_token(values, garbage_ids, resp)
    assert np.all(every[~resp] == 0) and np.all(last[~resp] == 0)
    # each turn's value appears exactly once in `last`, and sums back
    np.testing.assert_allclose(turn_values_from_tokens(last, garbage_ids, resp, num_turns=t), values, atol=1e-12)
    assert np.count_nonzero(last) == int(step_mask.sum())


def test_turnbatch_from_trajectories_and_tokens():
    tb = TurnBatch.from_trajectories(
        [
            {
                "rewards": [0.0, 0.0, 1.0],
                "group_id": "q",
                "anchors": ["a", "b", "c"],
                "outcome": 1.0,
                "components": {"correct": 1.0, "format": 0.5},
            },
            {
                "rewards": [0.0, 0.0],
                "group_id": "q",
                "anchors": ["a", "d"],
                "outcome": None,
                "components": {"correct": 0.0},
            },
        ]
    )
    assert tb.lengths.tolist() == [3, 2]
    assert tb.outcome_present.tolist() == [True, False]
    assert tb.component_names == ("correct", "format")
    assert np.isnan(tb.components[1, 1])
    ep = tb.to_episodes()
    assert ep.outcome_present.tolist() == [True, False]
    assert ep.component_present.tolist() == [[True, True], [True, False]]
    assert list(ep.extras["anchors"][1]) == ["a", "d"]
    resp = np.array([[1, 1, 0, 1, 0, 1], [1, 0, 1, 0, 0, 0]], bool)
    tok = TurnBatch.from_padded(tb.rewards, tb.mask, group_ids=tb.group_ids, response_mask=resp)
    out = tok.to_tokens(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]))
    np.testing.assert_array_equal(out, [[1, 1, 0, 2, 0, 3], [4, 0, 5, 0, 0, 0]])
    np.testing.assert_array_equal(
        tok.to_last_tokens(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])), [[0, 1, 0, 2, 0, 3], [4, 0, 5, 0, 0, 0]]
    )


def test_turnbatch_rejects_mismatched_layouts():
    with pytest.raises(cl.DataFormatError, match="runs of policy tokens"):
        TurnBatch.from_padded(np.zeros((1, 2)), response_mask=np.array([[1, 1, 1]]))
    with pytest.raises(cl.MaskError, match="padding in step_mask"):
        TurnBatch.from_padded(np.zeros((1, 2)), [[1, 0]], response_mask=np.array([[1, 1]]), turn_ids=np.array([[0, 1]]))
    with pytest.raises(cl.ShapeError, match=r"anchors\[0\]"):
        TurnBatch.from_padded(np.zeros((1, 2)), anchors=[["a"]])
    with pytest.raises(cl.DataFormatError, match="to_rows"):
        TurnBatch.from_padded(np.zeros((1, 2))).to_rows(np.zeros((1, 2)))
    with pytest.raises(cl.DataFormatError, match="token layout"):
        TurnBatch.from_padded(np.zeros((1, 2))).to_tokens(np.zeros((1, 2)))


def test_from_rows_round_trip_with_shuffled_rows():
    rng = np.random.default_rng(0)
    # 3 groups x 4 trajectories, 1-5 turns each; rows shuffled, turn order given by turn_index
    rows = []
    for g in range(3):
        for k in range(4):
            for t in range(rng.integers(1, 6)):
                rows.append((f"g{g}", f"traj{g}-{k}", t, float(rng.normal()), f"s{rng.integers(0, 3)}"))
    perm = rng.permutation(len(rows))
    rows = [rows[i] for i in perm]
    gid, tid, tix, rew, anc = (list(c) for c in zip(*rows))
    tb = TurnBatch.from_rows(gid, tid, rew, turn_index=tix, anchors=anc)
    np.testing.assert_array_equal(tb.to_rows(tb.rewards), rew)
    # turns come out in turn order
    for i in range(tb.num_trajectories):
        idx = tb.row_index[i, : tb.lengths[i]]
        assert [tix[j] for j in idx] == list(range(tb.lengths[i]))
    # GiGPO on the padded batch, results back on the rows; agrees with the same rows re-ordered
    out = gigpo(None, tb.rewards, tb.anchors, tb.group_ids, mask=tb.mask)
    per_row = tb.to_rows(out.advantages)
    assert per_row.shape == (len(rows),)
    order = np.lexsort((tix, tid))
    tb2 = TurnBatch.from_rows(
        np.array(gid)[order], np.array(tid)[order], np.array(rew)[order], anchors=[anc[i] for i in order]
    )
    out2 = gigpo(None, tb2.rewards, tb2.anchors, tb2.group_ids, mask=tb2.mask)
    np.testing.assert_allclose(tb2.to_rows(out2.advantages), per_row[order], atol=1e-12)


def test_from_rows_checks():
    with pytest.raises(cl.DataFormatError, match="same turn_index"):
        TurnBatch.from_rows([0, 0], ["a", "a"], [0.0, 1.0], turn_index=[0, 0])
    with pytest.raises(cl.DataFormatError, match="different outcomes"):
        TurnBatch.from_rows([0, 0], ["a", "a"], [0.0, 1.0], outcomes=[1.0, 0.0])
    tb = TurnBatch.from_rows([0, 0, 1], ["a", "a", "a"], [0.0, 1.0, 2.0], outcomes=[1.0, 1.0, 0.0])
    assert tb.outcomes.tolist() == [1.0, 0.0]  # same traj id in two groups = two trajectories


def test_gigpo_tokens_zero_on_tool_tokens():
    # Two trajectories with tool/observation tokens between turns; GiGPO advantages broadcast to
    # tokens are 0 on every masked token, and each policy token carries its turn's advantage.
    resp = np.array([[0, 1, 1, 0, 0, 1, 0, 1], [0, 1, 0, 1, 1, 0, 0, 0]], bool)
    tb = TurnBatch.from_padded(
        np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
        [[1, 1, 1], [1, 1, 0]],
        group_ids=[0, 0],
        anchors=[["s", "t", "u"], ["s", "t"]],
        response_mask=resp,
    )
    out = gigpo(None, tb.rewards, tb.anchors, tb.group_ids, mask=tb.mask, gamma=1.0, mode="mean_norm")
    tok = tb.to_tokens(out.advantages)
    assert np.all(tok[~resp] == 0)
    np.testing.assert_allclose(
        turn_values_from_tokens(tok, tb.turn_ids, resp, reduce="last", num_turns=3), out.advantages
    )
