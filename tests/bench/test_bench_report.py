"""The report: arithmetic of the tables on a hand-made results fixture, every table and figure present."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from creditlab.bench.report import build_report, render_markdown, verdict, write_report
from creditlab.bench.store import ResultsStore
from creditlab.bench.suites import AgentConfig, RunSpec, TaskSpec
from creditlab.errors import CreditlabError

AGENT = AgentConfig("ppo", {"gamma": 0.99})
TASKS = {
    "cheetah": TaskSpec("cheetah", "HalfCheetah-v5", "gymnasium", 100, 50, AGENT),
    "doorkey": TaskSpec(
        "doorkey", "MiniGrid-DoorKey-6x6-v0", "minigrid", 100, 50, AGENT, dense_twin=False, solve_threshold=0.9
    ),
    "umbrella": TaskSpec(
        "umbrella", "umbrella_length", "bsuite", 100, 100, AGENT, bsuite_settings=("umbrella_length/0",)
    ),
    "chain": TaskSpec("chain", "X-v0", "gymnasium", 100, 50, AGENT),
}
# final returns per (task, method) for seeds 0, 1, 2
FINAL = {
    ("cheetah", "episodic"): [0.0, 10.0, 20.0],
    ("cheetah", "dense"): [100.0, 110.0, 120.0],
    ("cheetah", "rrd"): [50.0, 60.0, 70.0],
    ("doorkey", "episodic"): [0.0, 0.95, 0.0],
    ("doorkey", "rrd"): [0.95, 0.96, 0.97],
    ("umbrella", "episodic"): [0.1, 0.2, 0.3],
    ("umbrella", "dense"): [0.9, 0.9, 0.9],
    ("umbrella", "rrd"): [0.2, 0.1, 0.3],
    ("chain", "episodic"): [1.0, 1.1, 1.2],  # the oracle does not beat the baseline here
    ("chain", "dense"): [1.1, 1.0, 1.3],
    ("chain", "rrd"): [1.0, 1.0, 1.0],
}


def _fixture(store: ResultsStore):
    runs = []
    for (task, method), finals in FINAL.items():
        for seed, final in enumerate(finals):
            run = RunSpec(TASKS[task], method, seed)
            runs.append(run)
            curve = {
                "x": [0, 50, 100],
                "mean": [0.0, final / 2, final],
                "std": [0.0, 0.0, 0.0],
                "x_name": "environment steps",
            }
            metrics = {
                "final_return": final,
                "auc": final / 2,
                # seed 2's episodic run shared a busier machine: 4x slower; the wall-time table takes medians
                "time/train_seconds": {"episodic": 40.0 if seed == 2 else 10.0, "dense": 10.0, "rrd": 15.0}[method],
                "credit/corr_hidden": 0.5 if method == "rrd" else 0.1,
            }
            if task == "cheetah":  # episode lengths: rrd's training episodes get longer with the seed
                metrics["train_length_last"] = {"episodic": 100.0, "dense": 200.0, "rrd": 300.0 + 10 * seed}[method]
                metrics["final_length"] = 1000.0
            if method == "rrd":  # the reward model's record: updates grow with the seed, loss 0.1 + seed/100
                metrics["credit/total_updates"] = 100.0 + seed
                metrics["credit/loss_last"] = 0.1 + seed / 100
            if task == "doorkey":
                metrics["steps_to_solve"] = 50.0 if final >= 0.9 else float("nan")
            if task == "umbrella":
                metrics["bsuite/score"] = final
            store.write_manifest([run], {"suite": "fixture"})
            store.write_result(
                run,
                {
                    "status": "ok",
                    "curve": curve,
                    "metrics": metrics,
                    "wall_seconds": 12.0,
                    "git": {"commit": "abc123"},
                    "versions": {"torch": "2.13.0"},
                    "host": "h",
                },
            )
    never = RunSpec(TASKS["cheetah"], "rrd", 4)  # requested, never finished (sweep interrupted)
    store.write_manifest([never], {})
    failed = RunSpec(TASKS["cheetah"], "rrd", 3)
    store.write_manifest([failed], {})
    store.write_result(
        failed,
        {"status": "failed", "error": "RuntimeError: exploded", "traceback": "Traceback\nRuntimeError: exploded"},
    )
    return runs


def test_table_arithmetic(tmp_path):
    store = ResultsStore(tmp_path)
    _fixture(store)
    rep = build_report(store.load_results(), failures=store.load_failures())
    assert rep.methods == ["episodic", "dense", "rrd"]
    final = {row[0]: row[1:] for row in rep.table("final_return").rows}
    # cheetah episodic: mean 10, sample std sqrt(((-10)^2 + 0 + 10^2) / 2) = 10
    assert final["cheetah"] == ["10.0 ± 10.0", "110.0 ± 10.0", "60.0 ± 10.0"]
    assert final["doorkey"][1] == "n/a"  # no dense run on a task without dense twin
    norm = {row[0]: row[1:] for row in rep.table("normalized").rows}
    # rrd on cheetah: per seed (50-10)/100, (60-10)/100, (70-10)/100 = 0.4, 0.5, 0.6 -> 0.50 ± 0.10
    assert norm["cheetah"] == ["0.50 ± 0.10", "1.00 ± 0.10"]
    assert norm["doorkey"] == ["n/a", "n/a"]
    assert norm["chain"] == ["n/a (no gap)", "n/a (no gap)"]
    verdicts = {(r[0], r[1]): r[3] for r in rep.table("verdict").rows}
    # 3 seeds per side: no per-task verdict, whatever the means say
    assert verdicts[("cheetah", "rrd")] == "too few seeds (3 vs 3; need 5)"
    assert verdicts[("umbrella", "rrd")] == "too few seeds (3 vs 3; need 5)"
    wall = {row[0]: row[1:] for row in rep.table("walltime").rows}
    assert wall["cheetah"] == ["10 s", "10 s (+0%)", "15 s (+50%)"]  # means would say 20 s, -50 % and -25 %
    solve = {row[0]: row[2:] for row in rep.table("solve").rows}
    assert solve["doorkey"] == ["1/3 solved, median 50", "n/a", "3/3 solved, median 50"]
    bs = {row[0]: row[1:] for row in rep.table("bsuite").rows}
    assert bs["umbrella"][0] == "0.20 ± 0.10"
    credit = {row[0]: row[1:] for row in rep.table("credit").rows}
    assert credit["cheetah"] == ["0.10 ± 0.00", "1.00 (by construction)", "0.50 ± 0.00"]
    # reward-model training: updates 100-102 over seeds 0-2, mean last loss (0.10 + 0.11 + 0.12) / 3 = 0.11
    trained = {row[0]: row[1:] for row in rep.table("trained").rows}
    assert rep.table("trained").columns == ["task", "rrd"]
    assert trained["cheetah"] == ["100-102 (loss 0.11)"]
    # lengths: rrd 300, 310, 320 -> 310 ± 10; tasks without recorded lengths say n/a
    lengths = {row[0]: row[1:] for row in rep.table("lengths").rows}
    assert lengths["cheetah"] == ["100 ± 0 (eval 1000)", "200 ± 0 (eval 1000)", "310 ± 10 (eval 1000)"]
    assert lengths["doorkey"] == ["n/a", "n/a", "n/a"]
    assert rep.table("failures").rows == [["cheetah/rrd/seed3", "RuntimeError: exploded"]]
    c = rep.curves["cheetah"]["rrd"]
    np.testing.assert_allclose(c["mean"], [0.0, 30.0, 60.0])
    np.testing.assert_allclose(c["std"], [0.0, np.std([25, 30, 35]), np.std([50, 60, 70])])


def test_verdict_rules():
    assert verdict([5.0, 5.0], [1.0, 1.0]) == "better"
    assert verdict([0.0, 0.1, 0.2], [1.0, 1.1, 1.2]) == "worse"
    assert verdict([3.0], [1.0, 2.0]) == "1 seed: inconclusive"


def test_written_report_has_every_table_and_figure(tmp_path):
    store = ResultsStore(tmp_path / "sweep")
    _fixture(store)
    paths = write_report(tmp_path / "sweep")
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    titles = [
        "Aggregate over tasks (rliable)",
        "Final true return",
        "Normalized score",
        "Against the episodic baseline",
        "Area under the evaluation curve",
        "Credit quality",
        "Training wall time",
        "Steps to solve",
        "bsuite scores",
        "Tasks, budgets",
        "Runs that crashed",
        "Requested runs not finished (1 of",
    ]
    for title in titles:
        assert title in md and title in page, title
    for task in TASKS:
        png = (paths["figures"] / f"{task}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and f"figures/{task}.png" in md
    # the HTML page is self-contained: every image is an embedded PNG, nothing is loaded from elsewhere
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    aggregate = sorted(p.name for p in paths["figures"].glob("aggregate_*.png"))
    assert aggregate == ["aggregate_improvement.png", "aggregate_intervals.png", "aggregate_profiles.png"]
    assert len(images) == len(TASKS) + len(aggregate)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "abc123" in md  # provenance: commit


def test_report_page_renders_in_headless_chromium(tmp_path):
    import importlib.util
    import shutil

    import pytest

    if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no chromium (apt-get install -y chromium)")
    spec = importlib.util.spec_from_file_location(
        "screenshot_report", Path(__file__).resolve().parents[2] / "scripts/screenshot_report.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    store = ResultsStore(tmp_path / "sweep")
    _fixture(store)
    paths = write_report(tmp_path / "sweep")
    png = mod.screenshot(paths["html"], tmp_path / "shot.png", width=1000, height=1400)
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)
    assert img.shape[:2] == (1400, 1000)
    # the page is not blank: dark text pixels and the coloured curves are there
    assert (img.sum(axis=2) < 200).mean() > 0.002
    colourful = np.abs(img[..., 0] - img[..., 2]) > 60
    assert colourful.mean() > 0.0005


def test_packed_table_regenerates_the_same_report(tmp_path):
    store = ResultsStore(tmp_path / "sweep")
    _fixture(store)
    paths = write_report(tmp_path / "sweep", tmp_path / "a")
    packed = paths["runs"]
    lines = packed.read_text().splitlines()
    assert sum('"kind": "result"' in line for line in lines) == len(store.load_results())
    assert sum('"kind": "failure"' in line for line in lines) == 1
    again = write_report(packed, tmp_path / "b")
    assert again["markdown"].read_text() == paths["markdown"].read_text()
    # report from the table in its own folder: the table stays where it is
    beside = write_report(packed)
    assert beside["runs"] == packed and beside["markdown"].parent == packed.parent


def test_packed_table_errors(tmp_path):
    import pytest

    from creditlab.bench.store import read_packed
    from creditlab.errors import CreditlabError

    bad = tmp_path / "runs.jsonl"
    bad.write_text('{"kind": "manifest"}\nnot json\n')
    with pytest.raises(CreditlabError, match=r"runs.jsonl:2: not a JSON line"):
        read_packed(bad)
    bad.write_text('{"kind": "other"}\n')
    with pytest.raises(CreditlabError, match="expected a line with kind manifest, result or failure"):
        read_packed(bad)


def test_headline_of_a_sweep_where_only_the_anchors_finished(tmp_path):
    store = ResultsStore(tmp_path)
    _fixture(store)
    anchors_only = [r for r in store.load_results() if r["method"] in ("episodic", "dense")]
    rep = build_report(anchors_only)
    # cheetah separates (dense 110 vs episodic 10, 3 seeds each), but there is no credit method to rank
    assert rep.summary["headline"].startswith("The dense oracle separates from the episodic baseline on cheetah")
    assert "nothing to rank" in rep.summary["headline"]


def test_sparse_only_sweep_ranks_bonuses_by_improvement_and_reports_their_cost(tmp_path):
    # An exploration-style sweep: a natively sparse task, the episodic anchor and one bonus, no dense runs.
    store = ResultsStore(tmp_path)
    finals = {"episodic": [0.0, 0.0, 0.0, 0.0, 0.9], "episodic_count": [0.8, 0.0, 0.8, 0.8, 0.8]}
    for method, values in finals.items():
        for seed, final in enumerate(values):
            run = RunSpec(TASKS["doorkey"], method, seed)
            metrics = {"final_return": final, "auc": final / 2, "time/train_seconds": 10.0}
            if method != "episodic":  # bonus share 2 %, 3 %, ... 6 % over seeds; 20 distinct states
                metrics |= {"exploration/time_share": 0.02 + seed / 100, "exploration/unique_states": 20.0}
            store.write_manifest([run], {})
            store.write_result(
                run,
                {"status": "ok", "metrics": metrics, "curve": {"x": [0, 100], "mean": [0.0, final], "std": [0.0, 0.0]}},
            )
    rep = build_report(store.load_results())
    # P(count > episodic): per pair of seeds, 0.8 vs 0 wins (4 x 4 = 16), 0.8 vs 0.9 loses, 0 vs 0 ties
    # (1 x 4 = 4 halves), 0 vs 0.9 loses: (16 + 2) / 25 = 0.72
    head = rep.summary["headline"]
    assert head.startswith("These tasks have no dense oracle (natively sparse)")
    assert "episodic_count (P(> episodic) = 0.72 [" in head and "does not beat it beyond the bootstrap noise" in head
    assert "tentative" not in head  # 5 seeds each: enough for the verdict rule
    # the same sweep with 2 seeds per method: the headline says the ranking is tentative
    few = [r for r in store.load_results() if r["seed"] < 2]
    assert "With 2 seeds per task (a verdict needs 5) the intervals are wide" in build_report(few).summary["headline"]
    bonus = {row[0]: row[1:] for row in rep.table("bonus").rows}
    assert bonus["doorkey"] == ["4.0 ± 1.6 (20 states)"]  # mean of 2..6 = 4, sample std sqrt(2.5) = 1.58
    md = render_markdown(rep, {})
    assert "anchor: `episodic` = PPO on the task's own sparse reward" in md


def test_report_of_some_tasks_only(tmp_path):
    # --tasks: the report, its packed table and its requested/crashed lists hold only those tasks' runs
    store = ResultsStore(tmp_path / "sweep")
    _fixture(store)
    run = RunSpec(TASKS["chain"], "rrd", 9)
    store.write_manifest([run], {})
    store.write_result(run, {"status": "failed", "error": "RangeError: boom", "traceback": "", "task": "chain"})
    paths = write_report(tmp_path / "sweep", tmp_path / "part", tasks=["cheetah", "doorkey"])
    md = paths["markdown"].read_text()
    assert "cheetah" in md and "doorkey" in md and "umbrella" not in md and "chain" not in md and "boom" not in md
    rows = [json.loads(line) for line in (tmp_path / "part" / "runs.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows if r["kind"] == "result"} == {"cheetah", "doorkey"}
    assert all(k.split("/")[0] in ("cheetah", "doorkey") for k in rows[0].get("runs", {}))
    # the packed table rebuilds the same report; filtering it onto itself would lose runs
    again = write_report(tmp_path / "part" / "runs.jsonl")
    assert "umbrella" not in again["markdown"].read_text()
    with pytest.raises(CreditlabError, match="would overwrite"):
        write_report(tmp_path / "part" / "runs.jsonl", tasks=["cheetah"])
    with pytest.raises(CreditlabError, match=r"no runs of \['nope'\]"):
        write_report(tmp_path / "sweep", tmp_path / "x", tasks=["nope"])


def test_method_table_has_one_row_per_setting_not_per_seed(tmp_path):
    store = ResultsStore(tmp_path)
    for method in ("episodic", "dense", "rrd"):
        for seed in range(3):
            run = RunSpec(TASKS["cheetah"], method, seed)
            store.write_manifest([run], {})
            config = {"assigner": {"seed": seed, "lr": 0.1}, "integration": {}} if method == "rrd" else {}
            store.write_result(
                run,
                {
                    "status": "ok",
                    "metrics": {"final_return": float(seed), "auc": 0.0},
                    "curve": {"x": [0, 100], "mean": [0.0, 1.0], "std": [0.0, 0.0]},
                    "method_config": config,
                },
            )
    rows = build_report(store.load_results()).table("methods").rows
    assert rows == [["rrd", "lr=0.1", "defaults"]]
