"""Results store: atomic writes, status, crash records, partial files never counted, config mismatch."""

import json

import pytest

from creditlab.bench.store import ConfigMismatchError, ResultsStore, atomic_write_text
from creditlab.bench.suites import RunSpec, expand_runs
from tests.helpers.bench_toy import toy_suite, toy_task

OK = {"status": "ok", "metrics": {"final_return": 3.0}, "curve": {"x": [0, 10], "mean": [1.0, 3.0], "std": [0.0, 0.5]}}


def test_status_lifecycle(tmp_path):
    store = ResultsStore(tmp_path)
    run = expand_runs(toy_suite())[0]
    store.write_manifest([run], {"suite": "toy"})
    assert store.status(run) == "missing"
    store.write_result(run, {"status": "failed", "error": "boom", "traceback": "Traceback ...\nValueError: boom"})
    assert store.status(run) == "failed"
    assert store.load_results() == [] and store.load_failures()[0]["traceback"].endswith("boom")
    store.write_result(run, OK)
    assert store.status(run) == "done"
    assert not (store.run_dir(run) / "error.json").exists()  # a successful retry clears the crash record
    (rec,) = store.load_results()
    assert rec["metrics"]["final_return"] == 3.0 and RunSpec.from_dict(rec["config"]) == run and rec["seed"] == run.seed
    assert (store.run_dir(run) / "curve.csv").read_text().splitlines() == ["x,mean,std", "0,1.0,0.0", "10,3.0,0.5"]
    # a later crash of the same run never destroys the finished result
    store.write_result(run, {"status": "failed", "error": "late"})
    assert store.status(run) == "done" and len(store.load_results()) == 1


def test_partial_and_corrupt_files_are_not_counted(tmp_path):
    store = ResultsStore(tmp_path)
    run = expand_runs(toy_suite())[0]
    store.write_manifest([run], {})
    folder = store.run_dir(run)
    folder.mkdir(parents=True)
    (folder / ".result.json.tmp-abc").write_text('{"status": "ok"')  # an interrupted atomic write
    assert store.status(run) == "missing" and store.load_results() == []
    (folder / "result.json").write_text('{"status": "ok", "config_ha')  # a torn file from a non-atomic writer
    assert store.status(run) == "missing" and store.load_results() == []


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a" / "x.txt", "hello")
    assert (tmp_path / "a" / "x.txt").read_text() == "hello"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.txt"]


def test_config_mismatch_is_refused(tmp_path):
    store = ResultsStore(tmp_path)
    run = expand_runs(toy_suite(steps=256))[0]
    store.write_manifest([run], {})
    store.write_result(run, OK)
    changed = RunSpec(toy_task(512), run.method, run.seed)
    assert store.status(changed) == "mismatch"
    with pytest.raises(ConfigMismatchError, match="different configuration"):
        store.check_configs([changed])


def test_manifest_merges_and_filters_results(tmp_path):
    store = ResultsStore(tmp_path)
    a, b = expand_runs(toy_suite())[:2]
    store.write_manifest([a], {"suite": "toy"})
    store.write_manifest([b], {"suite": "toy"})
    assert set(json.loads(store.manifest_path.read_text())["runs"]) == {a.run_id, b.run_id}
    store.write_result(a, OK)
    # a run folder the manifest does not list with this hash is ignored
    stray = RunSpec(toy_task(999), "dense", 7)
    store.write_result(stray, OK)
    assert [r["run_id"] for r in store.load_results()] == [a.run_id]
    assert len(store.load_results(only_manifest=False)) == 2
