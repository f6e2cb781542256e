"""`creditlab program generate | check | eval`."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from creditlab.cli import main
from creditlab.episodes import Episodes
from tests.helpers.fake_llm_server import FakeLLMServer
from tests.helpers.programs_helpers import lare_answer, no_leftovers  # noqa: F401  (autouse fixture)

SPEC = "examples/programs/hopper.yaml"
GOOD = (
    "import numpy as np\ndef evaluation_func(observation, action):\n"
    "    return [observation[:, 5:6], np.sum(action ** 2, axis=1, keepdims=True)]\n"
)
NAN = "import numpy as np\ndef evaluation_func(observation, action):\n    return [np.log(observation[:, 5:6])]\n"


def test_generate_check_and_cache(tmp_path, capsys):
    script = [lare_answer(NAN), lare_answer(GOOD), lare_answer(GOOD)]
    with FakeLLMServer(lambda req, i: script[i]) as server:
        argv = [
            "program",
            "generate",
            SPEC,
            "--out",
            str(tmp_path / "out"),
            "--model",
            "fake",
            "--base-url",
            server.url,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--n",
            "2",
            "--rounds",
            "1",
            "--no-merge",
            "--concurrency",
            "1",
            "--timeout",
            "2",
            "--memory-mb",
            "512",
        ]
        assert main(argv) == 0
        assert server.calls == 3
        err = capsys.readouterr().err
        assert "HTTP calls 3, cache hits 0" in err and "chosen: factors program" in err
        assert main(argv[:4] + [str(tmp_path / "out2")] + argv[5:]) == 0
        assert server.calls == 3  # second run: all from the cache
        assert "HTTP calls 0, cache hits 3" in capsys.readouterr().err
    assert (tmp_path / "out" / "program.py").read_text() == (tmp_path / "out2" / "program.py").read_text()
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["candidates"][0]["attempts"][0]["report"]["failure_kind"] == "invalid"

    assert main(["program", "check", str(tmp_path / "out"), "--spec", SPEC, "--timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "factors: 2" in out and "sandbox layers:" in out


@pytest.mark.parametrize(
    "code, fragment",
    [
        ("import os\ndef evaluation_func(o, a):\n    return [o[:, :1]]\n", "import of 'os' is not allowed"),
        ("def evaluation_func(o, a):\n    while True:\n        pass\n", "wall-clock time and was killed"),
        (NAN, "not finite (NaN)"),
    ],
)
def test_check_rejects_with_reasons(tmp_path, capsys, code, fragment):
    f = tmp_path / "program.py"
    f.write_text(code)
    assert main(["program", "check", str(f), "--obs-dim", "11", "--act-dim", "3", "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert "REJECTED" in out and fragment in out
    assert main(["program", "check", str(f), "--obs-dim", "11", "--act-dim", "3", "--timeout", "1", "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is False and any(fragment in p for p in rep["problems"])


def test_check_needs_input_sizes(tmp_path, capsys):
    f = tmp_path / "p.py"
    f.write_text(GOOD)
    assert main(["program", "check", str(f)]) == 2
    assert "--obs-dim" in capsys.readouterr().err


def _episodes_file(tmp_path):
    rng = np.random.default_rng(0)
    lengths = [3, 5]
    b, t = 2, 5
    obs = rng.standard_normal((b, t, 11))
    act = rng.standard_normal((b, t, 3))
    mask = np.arange(t)[None] < np.array(lengths)[:, None]
    rewards = np.where(mask, 1.0, 0.0)
    table = Episodes.from_padded(rewards, mask).to_table()
    table = table.append_column("obs", pa.array([row.tolist() for row in obs[mask]]))
    table = table.append_column("action", pa.array([row.tolist() for row in act[mask]]))
    path = tmp_path / "eps.parquet"
    pq.write_table(table, path)
    return path, obs, act, mask


def test_eval_factors_and_rewards_per_step(tmp_path, capsys):
    path, obs, act, mask = _episodes_file(tmp_path)
    out = tmp_path / "f.parquet"
    assert (
        main(["program", "eval", "examples/programs/hopper_factors", "--episodes", str(path), "--out", str(out)]) == 0
    )
    table = pq.read_table(out)
    assert table.num_rows == 8 and [f"factor_{j}" for j in range(7)] == [
        c for c in table.column_names if c.startswith("factor_")
    ]
    np.testing.assert_allclose(table.column("factor_0").to_numpy(), obs[mask][:, 5])  # forward velocity
    np.testing.assert_allclose(table.column("factor_2").to_numpy(), np.sum(act[mask] ** 2, axis=1))  # effort

    reward = tmp_path / "r.py"
    reward.write_text(
        "import numpy as np\ndef compute_reward(o, a, n):\n    return n[:, 5] - o[:, 5], {'dv': n[:, 5] - o[:, 5]}\n"
    )
    assert main(["program", "eval", str(reward), "--episodes", str(path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8 and set(rows[0]) == {"episode_id", "step", "program_reward", "component.dv"}
    # next observation = the following step's (the last step repeats itself: 0)
    assert rows[0]["program_reward"] == pytest.approx(obs[0, 1, 5] - obs[0, 0, 5])
    assert rows[2]["program_reward"] == pytest.approx(0.0)


def test_program_help(capsys):
    assert main(["program"]) == 2
    with pytest.raises(SystemExit):
        main(["program", "--help"])
    assert "generate" in capsys.readouterr().out
