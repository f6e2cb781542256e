"""Shared helpers of the tests/programs/test_programs_*.py files."""

from __future__ import annotations

import gc
import glob
import os
import tempfile
import time

import pytest

from creditlab.programs import SandboxConfig

#: short limits so hostile programs are cut quickly in tests
FAST = SandboxConfig(timeout=1.5, cpu_seconds=1.5, memory_mb=512, output_mb=16, startup_timeout=60)


def child_pids() -> set[int]:
    me = os.getpid()
    out = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat, "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.add(int(stat.split("/")[2]))
    return out


def sandbox_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"creditlab-sandbox-{os.getpid()}-*")))


@pytest.fixture(autouse=True)
def no_leftovers():
    """Every test must leave no worker process and no sandbox folder behind."""
    before_p, before_d = child_pids(), sandbox_dirs()
    yield
    gc.collect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (child_pids() - before_p or sandbox_dirs() - before_d):
        time.sleep(0.05)
    assert child_pids() - before_p == set(), "worker processes left behind"
    assert sandbox_dirs() - before_d == set(), "sandbox folders left behind"


def lare_answer(code: str, understand: str = "reach the target") -> str:
    """A LaRe-style JSON answer carrying ``code`` (json.dumps escapes it properly)."""
    import json

    return json.dumps({"Understand": understand, "Analyze": "distance and effort matter", "Functions": code})
