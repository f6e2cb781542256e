"""Atomic writes: an interrupted write leaves the old file intact and no temporary file behind."""

import json

import numpy as np
import pytest

from creditlab.atomic import atomic_path, write_json, write_text


def test_failure_inside_the_block_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "result.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_unencodable_json_raises_before_touching_the_file(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"a": 1})
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):
        write_json(target, loop)
    assert json.loads(target.read_text()) == {"a": 1}


def test_numpy_values_and_parent_folders(tmp_path):
    p = write_json(tmp_path / "a" / "b" / "c.json", {"x": np.float32(1.5), "y": np.arange(3), "n": np.int64(2)})
    assert json.loads(p.read_text()) == {"x": 1.5, "y": [0, 1, 2], "n": 2}
