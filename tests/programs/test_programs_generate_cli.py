"""`creditlab program generate` (issue 10, defect 15; issue 12 output conventions): ``--env-id none``
selects without training, an unknown environment is an error before any LLM call, and an output
folder that already holds a program needs ``--force``."""

from __future__ import annotations

from creditlab.cli import main
from tests.helpers.fake_llm_server import FakeLLMServer
from tests.helpers.programs_helpers import no_leftovers  # noqa: F401  (autouse fixture)

SPEC = "examples/programs/pendulum.yaml"  # env_id: Pendulum-v1
REWARD = (
    "import numpy as np\n"
    "def compute_reward(observation, action, next_observation):\n"
    "    upright = next_observation[:, 0]\n"
    "    effort = -np.sum(action ** 2, axis=1)\n"
    "    return upright + 0.1 * effort, {'upright': upright, 'effort': effort}\n"
)


def _argv(server, tmp_path, out, *extra):
    return [
        "program",
        "generate",
        SPEC,
        "--kind",
        "reward",
        "--out",
        str(out),
        "--model",
        "fake",
        "--base-url",
        server.url,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--n",
        "1",
        "--rounds",
        "0",
        "--concurrency",
        "1",
        "--timeout",
        "5",
        "--memory-mb",
        "512",
        *extra,
    ]


def test_env_id_none_chooses_without_training(tmp_path, capsys):
    with FakeLLMServer(lambda req, i: f"```python\n{REWARD}```") as server:
        assert main(_argv(server, tmp_path, tmp_path / "out", "--env-id", "none")) == 0
        assert server.calls == 1
    assert "chosen: reward program" in capsys.readouterr().err
    assert "def compute_reward" in (tmp_path / "out" / "program.py").read_text()


def test_unknown_env_id_fails_before_any_llm_call(tmp_path, capsys):
    with FakeLLMServer(lambda req, i: f"```python\n{REWARD}```") as server:
        assert main(_argv(server, tmp_path, tmp_path / "out", "--env-id", "NoSuchEnv-v9")) == 2
        assert server.calls == 0
    err = capsys.readouterr().err
    assert "'NoSuchEnv-v9' is not a registered Gymnasium environment" in err and "--env-id none" in err


def test_existing_program_needs_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "program.py").write_text("# an earlier program\n")
    with FakeLLMServer(lambda req, i: f"```python\n{REWARD}```") as server:
        assert main(_argv(server, tmp_path, out, "--env-id", "none")) == 2
        assert server.calls == 0
        assert "already holds program.py; pass --force" in capsys.readouterr().err
        assert (out / "program.py").read_text() == "# an earlier program\n"
        assert main(_argv(server, tmp_path, out, "--env-id", "none", "--force")) == 0
    assert "def compute_reward" in (out / "program.py").read_text()
