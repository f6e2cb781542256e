"""examples/lare_program.py runs at its tiny size: a program folder checked and used by LaRe through the sandbox."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _example():
    spec = importlib.util.spec_from_file_location("lare_program_example", ROOT / "examples" / "lare_program.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_lare_program_example(capsys, one_torch_thread):
    results = _example().main(["--tiny"])
    out = capsys.readouterr().out
    assert "ok=True, factors 7" in out
    lare = results["lare"]
    assert lare["sandbox/calls"] > 0 and lare["sandbox/rows"] > 0  # the factors came from the sandboxed program
    assert lare["credit/updates"] > 0 and math.isfinite(lare["final_return"])
