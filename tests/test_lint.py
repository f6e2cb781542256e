"""Lint is part of the test command, so `python -m pytest` is the whole check."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install creditlab[test])")
    proc = subprocess.run([ruff, "check", "creditlab", "creditlab_demo", "tests", "benchmarks", "scripts", "examples"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
