"""Static rules, dynamic checks (shapes, NaN/inf, determinism, row independence), task specs."""

import json

import numpy as np
import pytest

from creditlab.programs import SpecError, TaskSpec, check_program, check_static, load_spec
from creditlab.programs.prompts import extract_code, parse_json_answer
from tests.helpers.hostile_programs import HOSTILE, PASS_STATIC, render
from tests.helpers.programs_helpers import FAST, no_leftovers  # noqa: F401  (autouse fixture)

SPEC = TaskSpec.from_dict(
    {
        "name": "reach",
        "goal": "move the point to the origin",
        "observation": [{"dims": "0-1", "name": "position", "low": -1, "high": 1}, {"dims": 2, "name": "speed"}],
        "action": [{"dims": [0, 1], "name": "force", "low": -1, "high": 1}],
    }
)
OBS, ACT = SPEC.probe_batch(8)
GOOD = """
import numpy as np
import math
def evaluation_func(observation, action):
    distance = np.linalg.norm(observation[:, 0:2], axis=1, keepdims=True)
    effort = np.sum(action ** 2, axis=1, keepdims=True)
    return [-distance, -effort, np.exp(-distance / 0.1) * math.pi]
"""


def problems(code, **kw):
    return [p.message for p in check_static(code, **kw)]


# ---------------------------------------------------------------------- static rules


def test_good_program_passes_static_rules():
    assert check_static(GOOD, entry="evaluation_func", min_args=2) == []


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("import os", "import of 'os'"),
        ("import numpy.ctypeslib", "import of 'numpy.ctypeslib'"),
        ("from numpy import load", "importing 'load'"),
        ("from numpy.lib import format", "import from 'numpy.lib'"),
        ("from . import x", "import from '.'"),
        ("from math import *", "import *"),
        ("x = open('f')", "name 'open'"),
        ("x = eval('1')", "name 'eval'"),
        ("x = getattr(1, 'real')", "name 'getattr'"),
        ("x = __builtins__", "name '__builtins__'"),
        ("x = ().__class__", "attribute '__class__'"),
        ("x = [].__class__.__base__.__subclasses__()", "attribute '__subclasses__'"),
        ("def f():\n    return f.__globals__", "attribute '__globals__'"),
        ("import numpy as np\nx = np.load('a.npy')", "attribute 'load'"),
        ("import numpy as np\nnp.zeros(3).tofile('x')", "attribute 'tofile'"),
        ("import numpy as np\nx = np.zeros(3).ctypes", "attribute 'ctypes'"),
        ("import numpy as np\nx = np.lib.format", "attribute 'lib'"),
        ("import numpy as np\nx = np._core", "attribute '_core'"),
        ("class A:\n    pass", "ClassDef"),
        ("def f():\n    global y", "'global'"),
        ("x = '__subclasses__'", "dunder"),
        ("def f(:\n    pass", "SyntaxError"),
        ("import numpy as np\nnp.sum = len", "changing attributes of the module 'np'"),
        ("import numpy as np\nnp.linalg.norm += 1", "changing attributes of the module 'np'"),
        ("from numpy import linalg\ndel linalg.norm", "changing attributes of the module 'linalg'"),
    ],
)
def test_static_rules_reject_with_a_reason(code, fragment):
    found = problems(code)
    assert any(fragment in p for p in found), found


def test_entry_function_is_required_with_enough_arguments():
    assert (
        "defines no top-level function 'evaluation_func'"
        in problems("def f(a, b):\n    return []", entry="evaluation_func")[0]
    )
    assert "must accept 2" in problems("def evaluation_func(a):\n    return []", entry="evaluation_func", min_args=2)[0]
    assert problems("def evaluation_func(*args):\n    return []", entry="evaluation_func", min_args=2) == []


def test_problems_carry_line_numbers():
    (p,) = check_static("import numpy as np\n\n\nx = np.fromfile('f')")
    assert p.line == 4 and str(p).startswith("line 4:")


def test_size_limits():
    assert "characters" in problems("x = 1\n" * 30_000)[0]


def test_hostile_catalogue_static_outcomes():
    """Every hostile program that does not rely on limits is rejected statically, with a reason."""
    for name, template in HOSTILE.items():
        found = check_static(
            render(template, PORT=1, SECRET_FILE="/x", TARGET="/y", SECRET_NAME="S", PARENT_PID=1),
            entry="evaluation_func",
            min_args=2,
        )
        if name in PASS_STATIC:
            assert found == [], (name, found)
        else:
            assert found and all(str(p) for p in found), name


# ---------------------------------------------------------------------- dynamic checks


def test_good_program_passes_all_checks():
    rep = check_program(GOOD, "factors", OBS, ACT, config=FAST)
    assert rep.ok, rep.problems
    assert rep.num_factors == 3 and rep.stage == "checks" and rep.failure_kind is None
    assert rep.layers and rep.seconds > 0


@pytest.mark.parametrize(
    "body, fragment, kind",
    [
        ("return [observation[:, 0:2]]", "factor 0 has shape (8, 2); expected [B, 1] = (8, 1)", "invalid"),
        ("return []", "empty list", "invalid"),
        ("return observation[:, :1]", "must return a list", "error"),
        ("return [np.log(observation[:, 0:1])]", "factor 0 is not finite (NaN)", "invalid"),
        ("return [1.0 / observation[:, 0:1]]", "factor 0 is not finite (inf)", "invalid"),
        ("return [observation[:, :1] - observation[:, :1].mean()]", "depends on other rows", "invalid"),
        ("return [observation[:, :1] + np.random.rand(observation.shape[0], 1)]", "not deterministic", "invalid"),
        ("return [np.array(['a'] * observation.shape[0])[:, None]]", "must be numeric", "error"),
        ("return [observation[:, 5:6] * 1]", "shape (8, 0)", "invalid"),
    ],
)
def test_dynamic_checks_reject_with_a_reason(body, fragment, kind):
    code = f"import numpy as np\ndef evaluation_func(observation, action):\n    {body}\n"
    rep = check_program(code, "factors", OBS, ACT, config=FAST)
    assert not rep.ok
    assert rep.failure_kind == kind, rep
    assert any(fragment in p for p in rep.problems), rep.problems


def test_flat_factors_and_constants_are_notes_not_problems():
    code = "import numpy as np\ndef evaluation_func(observation, action):\n    return [observation[:, 0], np.ones((observation.shape[0], 1))]\n"
    rep = check_program(code, "factors", OBS, ACT, config=FAST)
    assert rep.ok
    assert any("treated as (8, 1)" in n for n in rep.notes) and any("constant" in n for n in rep.notes)


def test_reward_programs_are_checked_for_total_and_components():
    good = (
        "import numpy as np\ndef compute_reward(observation, action, next_observation):\n"
        "    d = -np.linalg.norm(next_observation[:, :2], axis=1)\n    return d, {'distance': d}\n"
    )
    rep = check_program(good, "reward", OBS, ACT, config=FAST)
    assert rep.ok and rep.component_names == ["distance"]
    bad = (
        "import numpy as np\ndef compute_reward(observation, action, next_observation):\n"
        "    return np.zeros((observation.shape[0], 2)), {'x': np.log(observation[:, 0])}\n"
    )
    rep = check_program(bad, "reward", OBS, ACT, config=FAST)
    assert not rep.ok
    assert any("the total reward has shape (8, 2)" in p for p in rep.problems)
    assert any("component 'x' is not finite" in p for p in rep.problems)


def test_check_program_argument_errors():
    with pytest.raises(ValueError, match="kind"):
        check_program(GOOD, "bogus", OBS, ACT)
    with pytest.raises(ValueError, match="B >= 2"):
        check_program(GOOD, "factors", OBS[:1], ACT[:1])


# ---------------------------------------------------------------------- answers


def test_extract_code_from_json_fences_and_bare_text():
    code = "def evaluation_func(o, a):\n    return [o[:, :1]]\n"
    assert extract_code(json.dumps({"Functions": code}), "evaluation_func") == code
    raw_newlines = '{"Understand": "x", "Analyze": "y", "Functions": "' + code + '"}'  # unescaped newlines
    assert extract_code(raw_newlines, "evaluation_func") == code
    assert extract_code(f"Here you go:\n```python\n{code}```\nDone.", "evaluation_func") == code
    assert extract_code(f"Sure. Code follows.\n{code}", "evaluation_func") == code
    with pytest.raises(ValueError, match="no code defining"):
        extract_code("I cannot help with that.", "evaluation_func")


def test_parse_json_answer_variants():
    assert parse_json_answer('```json\n{"ok": true}\n```') == {"ok": True}
    assert parse_json_answer('The verdict: {"ok": false, "issues": ["x"]} thanks') == {"ok": False, "issues": ["x"]}
    with pytest.raises(ValueError):
        parse_json_answer("no json here")


# ---------------------------------------------------------------------- specs


def test_spec_dims_and_probe_batch():
    assert SPEC.obs_dim == 3 and SPEC.act_dim == 2
    obs, act = SPEC.probe_batch(8, seed=1)
    assert obs.shape == (8, 3) and act.shape == (8, 2)
    assert np.all(obs[:, :2] >= -1) and np.all(obs[:, :2] <= 1)
    assert obs[0].tolist() == [0.0, 0.0, 0.0] and obs[1, :2].tolist() == [1.0, 1.0]
    np.testing.assert_array_equal(SPEC.probe_batch(8, seed=1)[0], obs)  # seeded
    assert "observation[:, 0:2] -- position (range -1.0 to 1.0)" in SPEC.describe_observation()


def test_spec_files_round_trip(tmp_path):
    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(SPEC.to_dict()))
    assert load_spec(p) == SPEC
    q = tmp_path / "s.json"
    q.write_text(json.dumps(SPEC.to_dict()))
    assert load_spec(q) == SPEC


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"goal": ""}, "'goal' must be a non-empty string"),
        ({"observation": []}, "'observation' must be a non-empty list"),
        ({"observation": [{"dims": "2-1", "name": "x"}]}, "dims '2-1' must satisfy"),
        (
            {"observation": [{"dims": "0-1", "name": "a"}, {"dims": 1, "name": "b"}]},
            "dim 1 is already described by 'a'",
        ),
        ({"observation": [{"dims": 0, "name": "a", "low": 2, "high": 1}]}, "low 2 is above high 1"),
        ({"obs_dim": 1}, "obs_dim must be an int >= 3"),
        ({"action_type": "discrete"}, "needs num_actions"),
        ({"colour": "red"}, "unknown field(s) ['colour']"),
        ({"constraints": "be nice"}, "constraints must be a list"),
    ],
)
def test_spec_errors_name_the_field(change, fragment):
    data = SPEC.to_dict()
    data.update(change)
    with pytest.raises(SpecError) as exc:
        TaskSpec.from_dict(data)
    assert fragment in str(exc.value)


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("goal: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="unknown spec file type"):
        load_spec(tmp_path.joinpath("x.txt").write_text("") or tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError):
        load_spec(tmp_path / "missing.yaml")


def test_discrete_spec_probe_actions_are_integers():
    spec = TaskSpec.from_dict(
        {
            "name": "grid",
            "goal": "reach the key",
            "observation": [{"dims": "0-3", "name": "cells"}],
            "action": [{"dims": 0, "name": "move"}],
            "action_type": "discrete",
            "num_actions": 4,
        }
    )
    _, act = spec.probe_batch(32)
    assert act.shape == (32, 1) and set(np.unique(act)) <= {0.0, 1.0, 2.0, 3.0}
    assert "integer in 0..3" in spec.describe_action()
