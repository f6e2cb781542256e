"""creditlab.tables: the file format apart from the container; one write-back for every command."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import creditlab as cl
from creditlab.tables import episode_arrays, read_table, step_records, to_table, write_back, write_table


def _table():
    # rows out of order: episode 7 has steps 1, 0; episode "x" (8) has step 0; an extra column is kept
    return pa.table({"episode_id": [7, 8, 7], "step": [1, 0, 0], "reward": [1.0, 2.0, 3.0], "note": ["a", "b", "c"]})


def test_episode_arrays_place_every_row():
    arrays = episode_arrays(_table())
    # episode 7 first (first row), its step 0 is row 2 and step 1 row 0; episode 8 step 0 is row 1
    assert arrays["row_index"].tolist() == [[2, 0], [1, -1]]
    assert arrays["rewards"].tolist() == [[3.0, 1.0], [2.0, 0.0]]
    assert arrays["episode_ids"].tolist() == [7, 8] and arrays["reward_present"] is None
    # text is kept as an object [B, T] extra (None on padding), e.g. GiGPO's anchors
    assert arrays["extras"]["note"].tolist() == [["c", "a"], ["b", None]]
    ep = cl.Episodes.from_table(_table())
    np.testing.assert_array_equal(ep.row_index, arrays["row_index"])


def test_write_back_takes_step_arrays_or_one_value_per_step():
    table = _table()
    ep = cl.Episodes.from_table(table)
    per_step = np.array([[10.0, 11.0], [20.0, 99.0]])  # 99 is padding: never written
    flat = per_step[ep.mask]  # the same values, one per valid step in row-major order
    a = write_back(table, ep.row_index, ep.mask, {"advantage": per_step})
    b = write_back(table, ep.row_index, ep.mask, {"advantage": flat})
    # row 0 = (7, step 1) -> 11; row 1 = (8, step 0) -> 20; row 2 = (7, step 0) -> 10
    assert a["advantage"].to_pylist() == b["advantage"].to_pylist() == [11.0, 20.0, 10.0]
    assert a.column_names == ["episode_id", "step", "reward", "note", "advantage"]
    again = write_back(a, ep.row_index, ep.mask, {"advantage": np.zeros((2, 2))})  # replaced, not duplicated
    assert again.column_names == a.column_names and again["advantage"].to_pylist() == [0.0, 0.0, 0.0]
    with pytest.raises(cl.ShapeError, match="one value per valid step"):
        write_back(table, ep.row_index, ep.mask, {"advantage": np.zeros(4)})


def test_step_records_match_write_back_order():
    ep = cl.Episodes.from_table(_table())
    rows = list(step_records(ep.episode_ids, ep.mask, {"advantage": np.array([[10.0, 11.0], [20.0, 0.0]])}))
    assert rows == [
        {"episode_id": 7, "step": 0, "advantage": 10.0},
        {"episode_id": 7, "step": 1, "advantage": 11.0},
        {"episode_id": 8, "step": 0, "advantage": 20.0},
    ]
    json.dumps(rows)  # plain Python values


def test_round_trip_through_files(tmp_path):
    ep = cl.Episodes.from_lists([[0.0, 1.0], [2.0]], outcomes=[1.0, None], group_ids=["g", "g"])
    for name in ("e.parquet", "e.jsonl"):
        path = write_table(to_table(ep, advantage=np.ones((2, 2))), tmp_path / name)
        back = cl.read_episodes(path)
        np.testing.assert_array_equal(back.rewards, ep.rewards)
        assert back.outcome_present.tolist() == [True, False] and back.group_ids.tolist() == ["g", "g"]
        assert back.extras["advantage"].tolist() == [[1.0, 1.0], [1.0, 0.0]]
        assert read_table(path).num_rows == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: no temp files left
    with pytest.raises(cl.DataFormatError, match="unknown output type"):
        write_table(to_table(ep), tmp_path / "e.csv")


def test_package_exports_stay():
    assert cl.write_table is write_table
    assert cl.read_episodes("examples/episodes.jsonl").num_episodes == 32
    padded, mask = cl.pad([[1.0, 2.0], [3.0]])
    assert padded.tolist() == [[1.0, 2.0], [3.0, 0.0]] and mask.tolist() == [[True, True], [True, False]]
