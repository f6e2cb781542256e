"""The creditlab command: methods, advantages, errors."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import creditlab as cl
from creditlab.cli import main

SAMPLE = "examples/episodes.jsonl"


def test_help_and_methods_json(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "advantages" in capsys.readouterr().out
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {
        "gae",
        "grpo",
        "dr_grpo",
        "rloo",
        "reinforce_pp",
        "reinforce_pp_baseline",
        "gdpo",
        "ctan",
        "delta_process",
    } <= names
    assert all(r["summary"] and r["needs"] for r in rows)


def test_advantages_writes_every_row(tmp_path):
    out = tmp_path / "adv.parquet"
    assert (
        main(["advantages", SAMPLE, "--method", "gdpo", "--out", str(out), "--metrics", str(tmp_path / "m.json")]) == 0
    )
    table = pq.read_table(out)
    assert table.num_rows == 143 and "advantage" in table.column_names
    assert "task_id" in table.column_names  # input columns are kept
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_episodes"] == 32


def test_advantages_with_credit_and_params(tmp_path):
    out = tmp_path / "adv.jsonl"
    code = main(
        [
            "advantages",
            SAMPLE,
            "--credit",
            "delta_process",
            "--method",
            "gae",
            "--set",
            "gamma=0.5",
            "--set",
            "lambda_=1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {"credit_reward", "advantage", "return"} <= set(rows[0])


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["advantages", SAMPLE, "--method", "nope"]) == 2
    assert "no method named 'nope'" in capsys.readouterr().err
    assert main(["advantages", str(tmp_path / "missing.jsonl"), "--method", "gae"]) == 2
    assert main(["advantages", SAMPLE, "--method", "delta_process"]) == 2
    assert "pass it as --credit" in capsys.readouterr().err
    assert main(["advantages", SAMPLE, "--method", "gae", "--set", "gamma=3"]) == 2
    assert "gamma must lie in [0, 1]" in capsys.readouterr().err


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "creditlab.cli", "methods"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "gdpo" in proc.stdout


def test_unknown_method_message_reads_as_sentences():
    with pytest.raises(cl.UnknownMethodError) as info:
        cl.get_method("zzzz-not-a-method")
    assert "'zzzz-not-a-method'. Run `creditlab methods`" in str(info.value)
