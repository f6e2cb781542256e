"""One set of command-line conventions (issue 12): comma lists everywhere (the space form where it
existed), `--out` always the output, existing outputs refused without --force, outputs checked
before any work; docs reference only files in the repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from creditlab.cli import build_parser, main
from creditlab.clikit import ListAction, check_output_dir, check_output_path, parse_seeds
from creditlab.errors import CreditlabError

ROOT = Path(__file__).resolve().parents[2]


# -------------------------------------------------------------------------- lists


def test_list_action_accepts_commas_spaces_and_repeats():
    p = argparse.ArgumentParser()
    p.add_argument("--methods", action=ListAction)
    p.add_argument("--seeds", action=ListAction, item=int, default=[0, 1, 2])
    assert p.parse_args(["--methods", "rrd,lare"]).methods == ["rrd", "lare"]
    assert p.parse_args(["--methods", "rrd", "lare"]).methods == ["rrd", "lare"]
    assert p.parse_args(["--methods", "rrd", "--methods", "lare,uniform"]).methods == ["rrd", "lare", "uniform"]
    assert p.parse_args([]).seeds == [0, 1, 2] and p.parse_args(["--seeds", "5"]).seeds == [5]
    with pytest.raises(SystemExit):
        p.parse_args(["--seeds", "1,x"])
    with pytest.raises(SystemExit):
        p.parse_args(["--methods", ","])


def test_every_list_option_of_every_command_takes_the_comma_form():
    parser = build_parser()
    cases = {
        ("bench", "--methods"): ["bench", "--methods", "rrd,uniform"],
        ("bench", "--tasks"): ["bench", "--tasks", "cartpole,hopper"],
        ("demo run", "--methods"): ["demo", "run", "--methods", "grpo,gigpo"],
        ("demo run", "--tasks"): ["demo", "run", "--tasks", "keydoor,secret"],
        ("demo all", "--methods"): ["demo", "all", "--methods", "grpo,gigpo"],
    }
    for (_, flag), argv in cases.items():
        got = getattr(parser.parse_args(argv), flag.lstrip("-"))
        assert got == argv[-1].split(","), argv
        # the space form gives the same list
        assert getattr(parser.parse_args([*argv[:-1], *argv[-1].split(",")]), flag.lstrip("-")) == got
    assert parser.parse_args(["demo", "run", "--seeds", "0,1"]).seeds == [0, 1]
    assert parser.parse_args(["demo", "run", "--seeds", "0", "1"]).seeds == [0, 1]  # the old space form


def test_seeds_count_or_list():
    assert parse_seeds(["3"], single_is_count=True) == 3  # bench: a count, as documented
    assert parse_seeds(["3,"], single_is_count=True) == [3]
    assert parse_seeds(["0", "4"], single_is_count=True) == [0, 4] == parse_seeds(["0,4"], single_is_count=True)
    with pytest.raises(CreditlabError, match="integers"):
        parse_seeds(["a"], single_is_count=True)
    with pytest.raises(CreditlabError, match=">= 1"):
        parse_seeds(["0"], single_is_count=True)


def test_bench_list_forms_give_the_same_runs(capsys):
    forms = [
        ["--methods", "rrd,uniform", "--seeds", "0,4"],
        ["--methods", "rrd", "uniform", "--seeds", "0", "4"],
        ["--methods", "rrd", "--methods", "uniform", "--seeds", "0,", "4"],
    ]
    listed = []
    for extra in forms:
        assert main(["bench", "--suite", "smoke", "--tasks", "cartpole", *extra, "--dry-run"]) == 0
        listed.append(capsys.readouterr().out)
    assert listed[0] == listed[1] == listed[2]
    assert "cartpole/uniform/seed4" in listed[0] and "cartpole/rrd/seed0" in listed[0]


# -------------------------------------------------------------------------- outputs


def test_output_checks(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(CreditlabError, match="is a file, not a folder"):
        check_output_path(f / "deeper" / "out.json")
    with pytest.raises(CreditlabError, match="is a folder"):
        check_output_path(tmp_path)
    with pytest.raises(CreditlabError, match="already exists; pass --force"):
        check_output_path(f)
    assert check_output_path(f, force=True) == f
    assert check_output_path(tmp_path / "new" / "sub" / "out.json") is not None  # parents are created later
    with pytest.raises(CreditlabError, match="is a file; give a folder"):
        check_output_dir(f)
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.md").write_text("old")
    with pytest.raises(CreditlabError, match="already holds report.md; pass --force"):
        check_output_dir(tmp_path / "rep", produces=("report.md", "report.html"))
    assert check_output_dir(tmp_path / "rep", produces=("report.md",), force=True) == tmp_path / "rep"
    assert check_output_dir(tmp_path / "rep") == tmp_path / "rep"  # a resumable folder: nothing to protect


def test_bench_out_that_is_a_file_fails_before_any_run(tmp_path, capsys):
    f = tmp_path / "sweep"
    f.write_text("x")
    assert main(["bench", "--suite", "smoke", "--tasks", "cartpole", "--no-ray", "--out", str(f)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def _finished_demo_runs(folder: Path) -> None:
    from creditlab_demo.experiment import run_config
    from creditlab_demo.train import TrainConfig

    cfg = TrainConfig.from_dict(
        {
            "env": "secret",
            "env_kwargs": {"n": 4, "max_turns": 3},
            "method": "grpo",
            "d_model": 16,
            "n_heads": 2,
            "d_ff": 32,
            "groups": 3,
            "group_size": 4,
            "minibatches": 2,
            "eval_episodes": 8,
            "iterations": 1,
            "eval_every": 1,
        }
    )
    run_config(cfg, folder / "secret" / "grpo" / "seed0")


def test_demo_report_reads_its_argument_and_writes_out(tmp_path, capsys, one_torch_thread):
    runs, report = tmp_path / "runs", tmp_path / "report"
    _finished_demo_runs(runs)
    assert main(["demo", "report", str(runs), "--out", str(report)]) == 0
    assert (report / "results.md").exists() and not (runs / "results.md").exists()
    capsys.readouterr()
    # a report folder that already holds results is not overwritten without --force
    before = (report / "results.md").read_text()
    (report / "results.md").write_text("published")
    assert main(["demo", "report", str(runs), "--out", str(report)]) == 2
    assert "already holds results.md, results.json; pass --force" in capsys.readouterr().err
    assert (report / "results.md").read_text() == "published"
    assert main(["demo", "report", str(runs), "--out", str(report), "--force"]) == 0
    assert (report / "results.md").read_text() == before
    # inside its own run folder the report is rewritten every time
    assert main(["demo", "report", str(runs)]) == 0 and main(["demo", "report", str(runs)]) == 0
    assert (runs / "results.md").exists()


def test_demo_report_old_spellings_still_work_with_a_warning(tmp_path, capsys, one_torch_thread):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    _finished_demo_runs(runs)
    assert main(["demo", "report", "--out", str(runs), "--docs", str(docs)]) == 0  # --out once named the run folder
    err = capsys.readouterr().err
    assert "demo report --out RUNS` is deprecated" in err and "--docs DIR` is deprecated" in err
    assert (docs / "results.md").exists()


# -------------------------------------------------------------------------- docs


def _docs():
    return [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_docs_reference_only_files_in_the_repository():
    outside = re.compile(r"(?<![\w/.-])(?:\.\./shared|/work/|specs/|research/)[\w./-]*")
    bad = [(doc.relative_to(ROOT).as_posix(), m.group(0)) for doc in _docs() for m in outside.finditer(doc.read_text())]
    assert bad == [], f"references to files outside the repository: {bad}"
    links = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = [
        (doc.relative_to(ROOT).as_posix(), target)
        for doc in _docs()
        for target in links.findall(doc.read_text())
        if not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists()
    ]
    assert broken == [], f"links to files that do not exist: {broken}"


def test_docs_install_from_the_repository():
    for doc in _docs():
        text = doc.read_text()
        assert not re.search(r"pip install '?creditlab\[", text), (
            f"{doc.name} tells users to pip install creditlab from PyPI"
        )


def _section(text: str, heading: str) -> str:
    """The text from ``heading`` (a line) to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    end = re.compile(rf"^#{{1,{len(level)}}} ", re.M).search(text, start + len(heading) + 1)
    return text[start : end.start() if end else len(text)]


@pytest.mark.parametrize(
    "doc, heading", [("README.md", "## Speed"), ("docs/speed.md", "## Advantage estimators next to SB3 and verl")]
)
def test_speed_claims_come_from_recorded_runs(doc, heading):
    # Issue 10, defect 19: the quoted ratios were not reproduced. Every speed ratio in these sections
    # must be printed in a raw output of the benchmark that the section links (docs/results/speed/),
    # and the section must name the command that prints it.
    path = ROOT / doc
    section = _section(path.read_text(), heading)
    raw_files = [
        (path.parent / target).resolve() for target in re.findall(r"\]\(([^)#\s]*results/speed/[^)#\s]+)\)", section)
    ]
    assert raw_files, f"{doc} '{heading}' links no raw benchmark output under docs/results/speed/"
    raw = "\n".join(p.read_text() for p in raw_files)
    assert "bench_estimators.py" in section, f"{doc} '{heading}' does not name the command"
    ratios = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?x\b", section))
    assert ratios, f"{doc} '{heading}' quotes no ratio"
    missing = sorted(r for r in ratios if not re.search(rf"(?<![\w.]){re.escape(r)}", raw))
    assert missing == [], f"ratios in {doc} '{heading}' that no linked raw output prints: {missing}"
