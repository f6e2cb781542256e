"""`creditlab advantages` (issues 10 and 12): text anchors from files, output paths checked before
any work, overwrite protection, per-token output, and offline fitting of learned credit assigners
(update budgets, held-out early stopping, save and reload)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import creditlab as cl
from creditlab.cli import main
from creditlab.commands import fit_assigner, updates_for_epochs
from creditlab.outputs import RewardOutput

SAMPLE = "examples/episodes.jsonl"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(path):
    return [json.loads(x) for x in open(path).read().splitlines()]


# -------------------------------------------------------------------------- GiGPO from a log (10.11)


def test_gigpo_with_a_text_anchors_column(tmp_path, capsys):
    rows = [
        {"episode_id": "a", "step": 0, "reward": 0.0, "anchors": "start", "group_id": "q", "outcome": 1.0},
        {"episode_id": "a", "step": 1, "reward": 1.0, "anchors": "door", "group_id": "q", "outcome": 1.0},
        {"episode_id": "b", "step": 0, "reward": 0.0, "anchors": "start", "group_id": "q", "outcome": 0.0},
        {"episode_id": "b", "step": 1, "reward": 0.0, "anchors": "key", "group_id": "q", "outcome": 0.0},
    ]
    log = _jsonl(tmp_path / "log.jsonl", rows)
    assert main(["advantages", log, "--method", "gigpo", "--set", "gamma=1", "--set", "mode=mean_norm"]) == 0
    adv = [r["advantage"] for r in map(json.loads, capsys.readouterr().out.splitlines())]
    # A^E = +-0.5 (outcomes 1 and 0); turn 0 shares "start": returns 1 and 0 -> A^S = +-0.5; turn 1: singletons
    assert adv == pytest.approx([1.0, 0.5, -1.0, -0.5])


# -------------------------------------------------------------------------- outputs (10.13, 12)


@pytest.mark.parametrize("flag", ["--out", "--metrics"])
def test_bad_output_paths_fail_before_any_work(tmp_path, capsys, flag):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    name = "adv.jsonl" if flag == "--out" else "m.json"
    for path, message in ((a_file / name, "is a file, not a folder"), (tmp_path, "is a folder; give a file name")):
        assert main(["advantages", SAMPLE, "--method", "grpo", flag, str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "", "advantages were printed before the output error"
        assert err.count("\n") == 1 and message in err, err


def test_existing_outputs_need_force(tmp_path, capsys):
    out, metrics = tmp_path / "adv.parquet", tmp_path / "m.json"
    assert main(["advantages", SAMPLE, "--method", "grpo", "--out", str(out), "--metrics", str(metrics)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    for args in (["--out", str(out)], ["--metrics", str(metrics)]):
        assert main(["advantages", SAMPLE, "--method", "rloo", *args]) == 2
        assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert (
        main(["advantages", SAMPLE, "--method", "rloo", "--out", str(out), "--metrics", str(metrics), "--force"]) == 0
    )
    assert pq.read_table(out).num_rows == 143
    assert main(["advantages", SAMPLE, "--method", "rloo", "--out", str(out), "--metrics", str(out), "--force"]) == 2
    assert "name the same file" in capsys.readouterr().err


# -------------------------------------------------------------------------- tokens (12)


def test_per_token_advantages_from_the_token_layout(tmp_path, capsys):
    rows = [  # episode a: 2 turns; tokens: 2 prompt, turn 0 (2), 2 observation, turn 1 (3)
        {"episode_id": "a", "step": 0, "reward": 0.5, "outcome": 1.0, "response_mask": [0, 0, 1, 1, 0, 0, 1, 1, 1]},
        {"episode_id": "a", "step": 1, "reward": 0.25, "outcome": 1.0},
        {"episode_id": "b", "step": 0, "reward": 2.0, "outcome": 0.0, "response_mask": [0, 0, 1, 1, 1, 0]},
    ]
    log = _jsonl(tmp_path / "turns.jsonl", rows)
    tokens = tmp_path / "tokens.jsonl"
    code = main(
        [
            "advantages",
            log,
            "--method",
            "monte_carlo",
            "--set",
            "gamma=1",
            "--tokens",
            str(tokens),
            "--out",
            str(tmp_path / "a.jsonl"),
        ]
    )
    assert code == 0
    # Monte Carlo returns, gamma 1, outcome added on the last turn: a: [0.5 + 1.25, 0.25 + 1] = [1.75, 1.25]; b: [2.0]
    got = {r["episode_id"]: r["token_advantages"] for r in _rows(tokens)}
    assert got == {"a": [0, 0, 1.75, 1.75, 0, 0, 1.25, 1.25, 1.25], "b": [0, 0, 2.0, 2.0, 2.0, 0]}
    capsys.readouterr()
    assert main(["advantages", SAMPLE, "--method", "grpo", "--tokens", str(tmp_path / "t2.jsonl")]) == 2
    assert "no 'response_mask' column" in capsys.readouterr().err
    assert not (tmp_path / "t2.jsonl").exists()


# -------------------------------------------------------------------------- fitting (12)


class _Scripted:
    """An assigner whose held-out sum error follows a script: after the k-th fit chunk it credits
    every step with ``(R + error[k]) / T`` (every test episode has R = 0 + 1 = 1), so the held-out
    loss is ``(error[k] / T)^2``."""

    name = "scripted"

    def __init__(self, errors, memory=True):
        self.errors, self.memory, self.chunks, self.updates = list(errors), memory, 0, 0

    def fit(self, episodes=None, *, num_updates=None):
        if episodes is None and not self.memory:
            return {"spa/epochs": 0.0}
        self.chunks += 1
        self.updates += num_updates
        return {"credit/loss": float(self.chunks), "credit/updates": float(num_updates)}

    def assign(self, episodes):
        err = self.errors[self.chunks - 1]
        lengths = episodes.mask.sum(1)
        return RewardOutput(np.where(episodes.mask, ((1.0 + err) / lengths)[:, None], 0.0), {})

    def state_dict(self):
        return {"chunks": self.chunks, "updates": self.updates}

    def load_state_dict(self, state):
        self.chunks, self.updates = state["chunks"], state["updates"]


def _ten_episodes():
    return cl.Episodes.from_lists([[0.0, 1.0]] * 10, observations=[[[0.0], [1.0]]] * 10, actions=[[[0.0], [0.0]]] * 10)


def test_early_stopping_keeps_the_best_state():
    # held-out loss per evaluation: ((R + e - R) / T)^2 with T = 2 -> e^2 / 4: 4, 1, 0.25, 0.5625, 1, 2.25
    assigner = _Scripted([4.0, 2.0, 1.0, 1.5, 2.0, 3.0, 0.0])
    seen = []
    report = fit_assigner(
        assigner, _ten_episodes(), num_updates=70, holdout=0.2, eval_every=10, patience=2, log=lambda *a: seen.append(a)
    )
    assert [h[2] for h in report.history] == pytest.approx(
        [4.0, 1.0, 0.25, 0.5625, 1.0]
    )  # stops: 2 without improvement
    assert [s[4] for s in seen] == [True, True, True, False, False]
    assert report.metrics["credit/best_updates"] == 30 and report.metrics["credit/updates_run"] == 50
    assert report.metrics["credit/stopped_early"] == 1.0 and report.metrics["credit/holdout_loss"] == pytest.approx(
        0.25
    )
    assert report.metrics["credit/holdout_episodes"] == 2
    assert (assigner.chunks, assigner.updates) == (3, 30)  # the state of the best evaluation is restored


def test_an_assigner_without_memory_is_given_the_batch_again():
    assigner = _Scripted([3.0, 2.0, 1.0], memory=False)
    report = fit_assigner(assigner, _ten_episodes(), num_updates=30, holdout=0.5, eval_every=10)
    assert assigner.updates == 30 and len(report.history) == 3 and report.metrics["credit/stopped_early"] == 0.0


def test_fit_controls_validate():
    with pytest.raises(cl.RangeError, match="holdout"):
        fit_assigner(_Scripted([1.0]), _ten_episodes(), holdout=1.0)
    with pytest.raises(cl.RangeError, match="each side needs"):
        fit_assigner(_Scripted([1.0]), _ten_episodes(), holdout=0.01)
    assert updates_for_epochs(2, 10, 4) == 6  # ceil(10 / 4) = 3 updates per epoch


def _logged(path, n=24, seed=0):
    """Episodes with 3-d observations and a 1-d action; the per-step reward obs[0] + 0.5 a^2 is
    hidden: the log pays the episode's sum on its last step (an episodic reward)."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n):
        t_len = int(rng.integers(3, 7))
        obs, act = rng.normal(size=(t_len, 3)), rng.normal(size=(t_len, 1))
        hidden = obs[:, 0] + 0.5 * act[:, 0] ** 2
        for t in range(t_len):
            rows.append(
                {
                    "episode_id": e,
                    "step": t,
                    "obs": obs[t].tolist(),
                    "action": act[t].tolist(),
                    "reward": float(hidden.sum()) if t == t_len - 1 else 0.0,
                    "hidden_reward": float(hidden[t]),
                }
            )
    return _jsonl(path, rows)


def test_fit_save_and_reload_an_assigner(tmp_path, capsys, one_torch_thread):
    log = _logged(tmp_path / "log.jsonl")
    out1, out2, saved = tmp_path / "a1.jsonl", tmp_path / "a2.jsonl", tmp_path / "rrd.pt"
    args = ["advantages", log, "--credit", "rrd", "--credit-set", "hidden=[16]", "--method", "reinforce_pp"]
    assert (
        main(
            [
                *args,
                "--updates",
                "12",
                "--holdout",
                "0.25",
                "--eval-every",
                "4",
                "--save-assigner",
                str(saved),
                "--out",
                str(out1),
                "--metrics",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert err.count("held-out loss") == 3 and "credit fit: 12/12 updates" in err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["credit/updates_run"] == 12 and metrics["credit/holdout_episodes"] == 6
    # reloaded: not refitted, the same credit for every step
    assert (
        main(
            [
                "advantages",
                log,
                "--load-assigner",
                str(saved),
                "--method",
                "reinforce_pp",
                "--out",
                str(out2),
                "--metrics",
                str(tmp_path / "m2.json"),
            ]
        )
        == 0
    )
    assert "credit fit" not in capsys.readouterr().err
    assert json.loads((tmp_path / "m2.json").read_text())["credit/updates_run"] == 0
    c1 = [r["credit_reward"] for r in _rows(out1)]
    assert [r["credit_reward"] for r in _rows(out2)] == pytest.approx(c1, abs=1e-6)
    assert len(set(np.round(c1, 6))) > 10  # a real per-step credit, not a constant
    # --load-assigner of another kind than --credit
    assert main(["advantages", log, "--load-assigner", str(saved), "--credit", "rd", "--method", "reinforce_pp"]) == 2
    assert "holds a 'rrd' assigner" in capsys.readouterr().err


def test_updates_and_epochs_set_the_budget(tmp_path, capsys, one_torch_thread):
    log = _logged(tmp_path / "log.jsonl", n=10)
    base = ["advantages", log, "--credit", "rrd", "--credit-set", "hidden=[8]", "--method", "reinforce_pp"]
    assert main([*base, "--updates", "7", "--metrics", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["credit/updates_run"] == 7
    # 2 epochs over 10 episodes, batch_episodes 4 per update: 2 * ceil(10 / 4) = 6 updates
    assert main([*base, "--epochs", "2", "--metrics", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["credit/updates_run"] == 6
    capsys.readouterr()
    assert main(["advantages", log, "--method", "reinforce_pp", "--holdout", "0.2"]) == 2
    assert "choose one with --credit" in capsys.readouterr().err
    assert main([*base, "--patience", "3"]) == 2
    assert "add --holdout" in capsys.readouterr().err


def test_assigner_input_errors_are_one_line(tmp_path, capsys):
    log = _logged(tmp_path / "log.jsonl", n=4)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert main(["advantages", log, "--load-assigner", str(bad), "--method", "reinforce_pp"]) == 2
    assert "not a saved credit assigner" in capsys.readouterr().err
    assert main(["advantages", log, "--credit", "rrd", "--credit-set", "hiden=[8]", "--method", "reinforce_pp"]) == 2
    assert "has no parameter(s) ['hiden']" in capsys.readouterr().err
    assert main(["advantages", SAMPLE, "--credit", "rrd", "--method", "reinforce_pp"]) == 2  # no obs/action columns
    assert "needs episodes.observations" in capsys.readouterr().err
