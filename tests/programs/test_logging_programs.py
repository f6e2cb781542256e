"""Progress of ``program generate`` from Python (issue 12): opt-in events and a live line, silent by default."""

from __future__ import annotations

from creditlab.programs import GenerationEvent, LLMClient, LLMConfig, TaskSpec, generate_lare_factors
from tests.helpers.fake_llm_server import FakeLLMServer
from tests.helpers.programs_helpers import FAST, lare_answer, no_leftovers  # noqa: F401  (autouse fixture)

SPEC = TaskSpec.from_dict(
    {
        "name": "point",
        "goal": "move the point mass to the origin",
        "observation": [{"dims": "0-1", "name": "position", "description": "x, y", "low": -1, "high": 1}],
        "action": [{"dims": "0", "name": "force", "low": -1, "high": 1}],
        "episode": "50 steps; the return is revealed at the end",
    }
)
DIST = "import numpy as np\ndef evaluation_func(observation, action):\n    return [-np.abs(observation[:, 0:1])]\n"
EFFORT = "import numpy as np\ndef evaluation_func(observation, action):\n    return [-action ** 2]\n"
BAD = "import numpy as np\ndef evaluation_func(observation, action)\n    return [observation]\n"
# candidate 0: a syntax error, then repaired; candidate 1: valid at once; then the merge turn
SCRIPT = [lare_answer(BAD), lare_answer(DIST), lare_answer(EFFORT), lare_answer(DIST)]


def _run(tmp_path, **kw):
    with FakeLLMServer(lambda req, i: SCRIPT[i] if i < len(SCRIPT) else (500, "script exhausted")) as server:
        client = LLMClient(LLMConfig(model="fake", base_url=server.url, cache_dir="", max_concurrency=1, backoff=0.01))
        return generate_lare_factors(SPEC, client, n_candidates=2, repair_rounds=1, config=FAST, **kw)


def test_generation_events_in_order(tmp_path, capsys):
    events: list[GenerationEvent] = []
    result = _run(tmp_path, on_progress=events.append)
    assert capsys.readouterr().err == ""  # a callback prints nothing
    assert result.program is not None
    kinds = [(e.kind, e.candidate, e.round, e.ok) for e in events]
    assert kinds == [
        ("plan", -1, 0, False),
        ("attempt", 0, 0, False),
        ("attempt", 0, 1, True),
        ("candidate", 0, 0, True),
        ("attempt", 1, 0, True),
        ("candidate", 1, 0, True),
        ("plan", -1, 0, False),  # the merge turn adds a candidate
        ("attempt", 2, 0, True),
        ("candidate", 2, 0, True),
        ("done", 2, 0, True),
    ]
    assert events[1].failure is not None and events[2].failure is None  # why the first answer was rejected
    assert events[0].total == 2 and events[6].total == 3 and events[7].role == "merge"


def test_progress_line_is_opt_in(tmp_path, capsys):
    _run(tmp_path)
    assert capsys.readouterr().err == ""
    _run(tmp_path, progress=True)
    err = " ".join(capsys.readouterr().err.split())  # the terminal width wraps the line
    assert "LaRe factors for point: 3 passed, 0 failed of 3 candidates" in err and "4 LLM answers (1 repairs)" in err
