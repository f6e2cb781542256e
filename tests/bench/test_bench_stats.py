"""rliable aggregates in the report: the statistics against rliable itself, the seed rule, the headline."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from creditlab.bench.report import build_report
from creditlab.bench.stats import (
    aggregate_estimates,
    per_task_verdict,
    probability_of_improvement,
    score_matrices,
)
from creditlab.bench.suites import AgentConfig, RunSpec, TaskSpec

rliable_metrics = pytest.importorskip("rliable.metrics")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda n: arrays(np.float64, (n, 3), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0]))),
    st.integers(1, 6).flatmap(lambda n: arrays(np.float64, (n, 3), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0]))),
)
def test_probability_of_improvement_equals_rliable(x, y):
    # ties are frequent with 4 values: the 1/2 weight of ties must match Mann-Whitney's U
    assert probability_of_improvement(x, y) == pytest.approx(
        rliable_metrics.probability_of_improvement(x, y), abs=1e-12
    )


def test_probability_of_improvement_by_hand():
    # task 0: x = [1, 3] vs y = [2]: 3 > 2 wins, 1 < 2 loses -> 1/2; task 1: [5, 5] vs [5]: two ties -> 1/2
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    y = np.array([[2.0, 5.0]])
    assert probability_of_improvement(x, y) == 0.5
    # every x beats every y on both tasks -> 1
    assert probability_of_improvement(y + 10, y) == 1.0


def test_score_matrices_keep_common_seeds():
    per = {"m": {"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {1: 5.0, 2: 6.0, 3: 7.0}}, "short": {"a": {0: 1.0}}}
    mats = score_matrices(per, ["a", "b"])
    assert list(mats) == ["m"]  # "short" has no score on task b
    assert mats["m"].seeds == (1, 2)
    np.testing.assert_array_equal(mats["m"].scores, [[2.0, 5.0], [3.0, 6.0]])


def test_aggregates_equal_rliable_points():
    rng = np.random.default_rng(0)
    m = {"a": rng.normal(size=(5, 4)), "b": rng.normal(1.0, 0.3, size=(5, 4))}
    est = aggregate_estimates(m, reps=300)
    for k, x in m.items():
        assert est[k]["iqm"].point == pytest.approx(rliable_metrics.aggregate_iqm(x))
        assert est[k]["optimality_gap"].point == pytest.approx(rliable_metrics.aggregate_optimality_gap(x, 1.0))
        assert est[k]["iqm"].low <= est[k]["iqm"].point <= est[k]["iqm"].high
    # deterministic: a report made twice gives the same intervals
    assert aggregate_estimates(m, reps=300) == est


def test_seed_rule():
    base = [1.0, 2.0, 3.0, 1.0, 2.0]
    assert per_task_verdict([10, 11, 12, 10, 11], base) == "better"
    assert per_task_verdict([-10, -11, -12, -10, -11], base) == "worse"
    assert per_task_verdict([1.0, 3.0, 2.0, 2.0, 1.0], base) == "no better (within noise)"
    assert per_task_verdict([10, 11, 12, 10], base) == "too few seeds (4 vs 5; need 5)"
    assert per_task_verdict([], base) == "n/a"


AGENT = AgentConfig("ppo", {"gamma": 0.99})


def _result(task: TaskSpec, method: str, seed: int, final: float) -> dict:
    run = RunSpec(task, method, seed)
    return {
        "task": task.name,
        "method": method,
        "seed": seed,
        "config": run.to_dict(),
        "run_id": run.run_id,
        "curve": {"x": [0, 10], "mean": [0.0, final], "std": [0.0, 0.0]},
        "metrics": {"final_return": final, "time/train_seconds": 1.0},
    }


def test_report_aggregate_and_headline():
    t1 = TaskSpec("t1", "A-v0", "gymnasium", 10, 5, AGENT)
    t2 = TaskSpec("t2", "B-v0", "gymnasium", 10, 5, AGENT)
    rows = []
    for s in range(5):
        for task in (t1, t2):
            rows.append(_result(task, "episodic", s, 0.0 + 0.1 * s))  # mean 0.2
            rows.append(_result(task, "dense", s, 10.0 + 0.1 * s))  # mean 10.2
            rows.append(_result(task, "good", s, 10.2))  # normalized exactly 1.0
            rows.append(_result(task, "bad", s, 0.2))  # normalized exactly 0.0
    rep = build_report(rows)
    agg = {r[0]: r for r in rep.table("aggregate").rows}
    assert agg["good"][3].startswith("1.00 [1.00, 1.00]")
    assert agg["bad"][3].startswith("0.00 [0.00, 0.00]")
    # P(good > episodic): every good run (10.2) beats every episodic run (0 .. 0.4) -> 1
    assert agg["good"][6] == "1.00 [1.00, 1.00]"
    assert "best method is good" in rep.summary["headline"]
    assert "reaches the dense oracle" in rep.summary["headline"]  # every resample of good scores exactly 1
    verdicts = {(r[0], r[1]): r[3] for r in rep.table("verdict").rows}
    assert verdicts[("t1", "good")] == "better" and verdicts[("t1", "bad")] == "no better (within noise)"


@pytest.mark.parametrize(
    ("good_final", "phrase"),
    [
        (12.2, "scores above the dense oracle"),  # normalized exactly 1.2
        (5.2, "stays below the dense oracle"),  # exactly 0.5
        (None, "its interval also includes the dense oracle's 1"),  # 0.9 .. 1.1 over seeds
    ],
)
def test_headline_places_the_interval_against_the_oracle(good_final, phrase):
    t1 = TaskSpec("t1", "A-v0", "gymnasium", 10, 5, AGENT)
    rows = []
    for s in range(5):
        rows.append(_result(t1, "episodic", s, 0.0 + 0.1 * s))  # mean 0.2
        rows.append(_result(t1, "dense", s, 10.0 + 0.1 * s))  # mean 10.2; normalized x = (final - 0.2) / 10
        rows.append(_result(t1, "good", s, good_final if good_final is not None else 9.2 + 0.5 * s))
    headline = build_report(rows).summary["headline"]
    assert "best method is good" in headline and "beats the episodic baseline" in headline
    assert phrase in headline


def test_headline_without_separation():
    t = TaskSpec("flat", "A-v0", "gymnasium", 10, 5, AGENT)
    rows = [_result(t, m, s, 1.0 + 0.01 * s) for m in ("episodic", "dense", "x") for s in range(3)]
    rep = build_report(rows)
    assert rep.summary["headline"].startswith("No task separates the dense oracle")
