"""examples/custom_env.py runs at its tiny size: your own env through the SB3 runner and through a suite file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _example():
    spec = importlib.util.spec_from_file_location("custom_env_example", ROOT / "examples" / "custom_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cue_match_pays_one_per_matching_step():
    env = _example().CueMatch(length=3)
    obs, _ = env.reset(seed=0)
    total = 0.0
    for t in range(3):
        cue = int(obs[:3].argmax())
        assert obs[3] == pytest.approx(t / 3)  # the elapsed fraction
        obs, reward, terminated, truncated, _ = env.step(cue if t != 1 else (cue + 1) % 3)
        total += reward
        assert terminated == (t == 2) and not truncated
    assert total == 2.0  # steps 0 and 2 matched, step 1 did not


@pytest.mark.slow
def test_custom_env_example(tmp_path, capsys, monkeypatch, one_torch_thread):
    import os
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))  # `creditlab bench` adds the current folder for user modules
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.chdir(ROOT)  # the suite file names the env as examples.custom_env:CueMatch, importable from the root
    finals = _example().main(["--tiny", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert set(finals) == {"episodic", "rrd", "dense"} and all(0 <= v[0] <= 200 for v in finals.values())
    assert "credit correlation with the hidden reward" in out.out
    assert "[3/3]" in out.err
    for method in ("episodic", "dense", "rrd"):
        run = tmp_path / "runs" / "cue_match" / method / "seed0"
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "ok" and result["config"]["task"]["env_id"] == "examples.custom_env:CueMatch"
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
