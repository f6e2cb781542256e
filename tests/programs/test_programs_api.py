"""The public surface of creditlab.programs."""

import inspect
import subprocess
import sys

import creditlab.programs as programs


def test_all_names_import_and_have_docstrings():
    for name in programs.__all__:
        obj = getattr(programs, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_import_does_not_pull_in_gymnasium_or_sb3():
    code = "import sys, creditlab.programs, creditlab.programs.cli; print(sorted(m for m in ('gymnasium', 'stable_baselines3', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
