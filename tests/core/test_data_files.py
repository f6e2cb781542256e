"""Episodes files (issue 10, defects 11 and 12): text and list columns reach the methods that need
them (GiGPO anchors, IGPO beliefs, token layouts); unreadable files and bad rows are named errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import creditlab as cl
from creditlab.episodes import pad
from creditlab.errors import DataFormatError, DtypeError, MissingColumnError, ShapeError
from creditlab.tables import episode_arrays, read_table, token_layout


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -------------------------------------------------------------------------- text anchors (11)

# Two trajectories of one group (the gigpo() docstring example as rows): turn 0 of both is in
# anchor state "s"; turn 1 states differ. Outcomes 1 and 0; per-turn rewards [0, 1] and [0, 0].
_GIGPO_ROWS = [
    {"episode_id": "a", "step": 0, "reward": 0.0, "anchors": "s", "group_id": "q", "outcome": 1.0},
    {"episode_id": "a", "step": 1, "reward": 1.0, "anchors": "door", "group_id": "q", "outcome": 1.0},
    {"episode_id": "b", "step": 0, "reward": 0.0, "anchors": "s", "group_id": "q", "outcome": 0.0},
    {"episode_id": "b", "step": 1, "reward": 0.0, "anchors": "key", "group_id": "q", "outcome": 0.0},
]


def test_text_anchors_reach_gigpo(tmp_path):
    ep = cl.read_episodes(_jsonl(tmp_path / "log.jsonl", _GIGPO_ROWS))
    assert ep.extras["anchors"].tolist() == [["s", "door"], ["s", "key"]]
    out = cl.get_method("gigpo")(ep, gamma=1.0, mode="mean_norm")
    # A^E = +-0.5 (outcomes 1, 0; mean 0.5). Turn 0 (shared anchor "s"): returns G = 0 + 1 = 1 and 0,
    # mean 0.5 -> A^S = +-0.5. Turn 1: singleton step groups -> A^S = 0.
    np.testing.assert_allclose(out.advantages, [[1.0, 0.5], [-1.0, -0.5]])


def test_text_anchors_from_parquet_with_nulls_and_padding(tmp_path):
    rows = [dict(r) for r in _GIGPO_ROWS[:3]]
    rows[2]["anchors"] = None  # episode b has one turn whose state is unknown
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "log.parquet")
    ep = cl.read_episodes(tmp_path / "log.parquet")
    assert ep.extras["anchors"].tolist() == [["s", "door"], [None, None]]  # null and padding: None
    out = cl.get_method("gigpo")(ep, gamma=1.0, mode="mean_norm")
    # a None anchor is never grouped: every step group is a singleton, only A^E = +-0.5 remains
    np.testing.assert_allclose(out.advantages, [[0.5, 0.5], [-0.5, 0.0]])


def test_list_columns_become_extras():
    table = pa.table(
        {
            "episode_id": [0, 0, 1],
            "step": [0, 1, 0],
            "reward": [1.0, 2.0, 3.0],
            "embedding": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],  # fixed size: float [B, T, D]
            "tool_calls": [["search"], [], ["search", "open"]],  # varying: objects
        }
    )
    extras = episode_arrays(table)["extras"]
    assert extras["embedding"].shape == (2, 2, 2) and extras["embedding"][1, 0].tolist() == [5.0, 6.0]
    assert extras["tool_calls"].tolist() == [[["search"], []], [["search", "open"], None]]


# -------------------------------------------------------------------------- IGPO beliefs (11)


def test_belief_log_probs_column_reaches_igpo(tmp_path):
    # igpo() docstring example as rows: the belief before turn t on row t.
    # Rollout 0: beliefs 0.5, 1.0 -> turn 0 gains 0.5, turn 1 gets the outcome 1 -> rewards [0.5, 1].
    # Rollout 1: beliefs 0.5, 0.5 -> rewards [0, 1]. z over the four turn rewards (mean 0.625,
    # unbiased std sqrt(0.6875 / 3) = 0.47871): [-0.2611, 0.7833 | -1.3056, 0.7833]; returns-to-go
    # with gamma 1: [0.5222, 0.7833 | -0.5222, 0.7833].
    rows = [
        {"episode_id": 0, "step": 0, "belief_log_probs": np.log(0.5), "outcome": 1.0, "group_id": 0},
        {"episode_id": 0, "step": 1, "belief_log_probs": 0.0, "outcome": 1.0, "group_id": 0},
        {"episode_id": 1, "step": 0, "belief_log_probs": np.log(0.5), "outcome": 1.0, "group_id": 0},
        {"episode_id": 1, "step": 1, "belief_log_probs": np.log(0.5), "outcome": 1.0, "group_id": 0},
    ]
    ep = cl.read_episodes(_jsonl(tmp_path / "igpo.jsonl", rows))
    assert ep.extras["belief_log_probs"].shape == (2, 3)  # [B, T+1]
    out = cl.get_method("igpo")(ep)
    expected = cl.llm.igpo(np.log([[0.5, 1.0, 1.0], [0.5, 0.5, 0.5]]), [1.0, 1.0], [0, 0], mask=None).advantages
    np.testing.assert_allclose(out.advantages, expected)
    np.testing.assert_allclose(out.advantages, [[0.5222, 0.7833], [-0.5222, 0.7833]], atol=1e-4)


def test_a_missing_belief_is_an_error_not_a_certainty(tmp_path):
    rows = [
        {"episode_id": 0, "step": 0, "belief_log_probs": -1.0, "outcome": 1.0, "group_id": 0},
        {"episode_id": 0, "step": 1, "belief_log_probs": None, "outcome": 1.0, "group_id": 0},
    ]
    ep = cl.read_episodes(_jsonl(tmp_path / "igpo.jsonl", rows))
    with pytest.raises(cl.NonFiniteError, match="belief_log_probs"):
        cl.get_method("igpo")(ep)  # a null read as log p = 0 would have been p = 1


# -------------------------------------------------------------------------- token layout (11)


def test_token_layout_from_episode_level_lists():
    table = pa.table(
        {
            "episode_id": ["a", "a", "b"],
            "step": [0, 1, 0],
            "reward": [0.0, 1.0, 0.0],
            # prompt token, turn 0 (2 tokens), an observation token, turn 1 (1 token); given on one row
            "response_mask": [[0, 1, 1, 0, 1], None, [0, 1]],
            "turn_ids": [[-1, 0, 0, -1, 1], [-1, 0, 0, -1, 1], [-1, 0]],  # repeated on both rows of a
        }
    )
    ep = cl.Episodes.from_table(table)
    turn_ids, response_mask, lengths = token_layout(table, ep.row_index, ep.mask)
    assert response_mask.astype(int).tolist() == [[0, 1, 1, 0, 1], [0, 1, 0, 0, 0]]
    assert turn_ids.tolist() == [[-1, 0, 0, -1, 1], [-1, 0, -1, -1, -1]]
    assert lengths.tolist() == [5, 2]


def test_token_layout_errors_name_the_episode():
    base = {"episode_id": ["a", "a"], "step": [0, 1], "reward": [0.0, 1.0]}
    rows, mask = np.array([[0, 1]]), np.ones((1, 2), bool)
    assert token_layout(pa.table(base), rows, mask) is None
    with pytest.raises(DataFormatError, match="differs within episode 'a'"):
        token_layout(pa.table({**base, "response_mask": [[0, 1], [1, 1]]}), rows, mask, episode_ids=["a"])
    with pytest.raises(DataFormatError, match="episode 'a' has no 'response_mask'"):
        token_layout(
            pa.table({**base, "response_mask": pa.array([None, None], pa.list_(pa.int64()))}),
            rows,
            mask,
            episode_ids=["a"],
        )
    with pytest.raises(DtypeError, match="0/1"):
        token_layout(pa.table({**base, "response_mask": [[0, 2], None]}), rows, mask)
    with pytest.raises(ShapeError, match="3 'turn_ids' but 2 'response_mask'"):
        token_layout(pa.table({**base, "response_mask": [[0, 1], None], "turn_ids": [[0, 0, 0], None]}), rows, mask)
    with pytest.raises(MissingColumnError, match="no 'response_mask'"):
        token_layout(pa.table({**base, "turn_ids": [[0, 0], None]}), rows, mask)


# -------------------------------------------------------------------------- unreadable files (12)


def _good_parquet(path):
    pq.write_table(pa.table({"episode_id": [0, 0], "step": [0, 1], "reward": [1.0, 2.0]}), path)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_broken_parquet_is_a_data_format_error(tmp_path, damage):
    good = _good_parquet(tmp_path / "good.parquet")
    data = {"empty": b"", "truncated": good[: len(good) // 2], "garbage": b"not parquet at all " * 20}[damage]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data)
    with pytest.raises(DataFormatError, match="bad.parquet"):
        cl.read_episodes(bad)


@pytest.mark.parametrize("text", ["", '{"episode_id": 0, "step": 0, "rew'])
def test_broken_jsonl_is_a_data_format_error(tmp_path, text):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    with pytest.raises(DataFormatError, match="bad.jsonl"):
        cl.read_episodes(bad)


def test_a_folder_is_not_a_jsonl_file(tmp_path):
    (tmp_path / "runs.jsonl").mkdir()
    with pytest.raises(DataFormatError, match="is a folder"):
        read_table(tmp_path / "runs.jsonl")


# -------------------------------------------------------------------------- pad (12)


def test_pad_names_the_bad_entry():
    with pytest.raises(DtypeError, match=r"episode 1 .*step 1 is str 'x'"):
        pad([[1.0, 2.0], [3.0, "x"]])
    with pytest.raises(DtypeError, match="episode 0 holds None"):
        pad([[1.0, None]])  # would silently become NaN
    with pytest.raises(ShapeError, match="episode 0 has per-step values of different sizes"):
        pad([[[1.0, 2.0], [3.0]]])
    with pytest.raises(ShapeError, match="a list of per-step values"):
        pad([1.0, 2.0])
    padded, mask = pad([[1, 2], [3]])  # the valid case is unchanged
    assert padded.tolist() == [[1.0, 2.0], [3.0, 0.0]] and mask.tolist() == [[True, True], [True, False]]
