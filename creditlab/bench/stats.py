"""Aggregate statistics for benchmark results, computed with rliable (Agarwal et al., NeurIPS 2021).

Few seeds and noisy RL make per-task means misleading; rliable's answer, used here:

* **normalized score** per run: ``(return - mean episodic) / (mean dense - mean episodic)`` on tasks
  where the dense oracle beats the episodic baseline beyond noise (0 = baseline, 1 = oracle);
* **interquartile mean (IQM)** and **optimality gap** (``1 - mean(min(score, 1))``) over all runs
  of all tasks, with 95 % **stratified bootstrap** confidence intervals (runs resampled within each
  task);
* **probability of improvement** ``P(X > episodic)``: the Mann-Whitney probability that a run of X
  beats a run of the baseline on the same task, averaged over tasks (rank-based, so raw returns
  serve, and natively sparse tasks without a dense oracle count too), with its bootstrap CI;
* **performance profiles**: the fraction of runs whose normalized score exceeds tau, with CIs.

Per-task verdicts (better / worse than the baseline) need at least :data:`MIN_SEEDS_FOR_VERDICT`
seeds on both sides; below that the report says "too few seeds".

rliable needs the same number of runs on every task of a score matrix: when seeds differ between
tasks, the matrix keeps the seeds common to all of them (``seeds`` says which).

Example:
    >>> rng = np.random.default_rng(0)
    >>> scores = {"a": {"t1": [0.1, 0.0, 0.2], "t2": [0.0, 0.1, -0.1]}, "b": {"t1": [1.0, 0.9, 1.1], "t2": [0.8, 1.0, 0.9]}}
    >>> m = score_matrices(scores, ["t1", "t2"])
    >>> m["b"].scores.shape
    (3, 2)
    >>> est = aggregate_estimates({k: v.scores for k, v in m.items()}, reps=200)
    >>> round(est["b"]["iqm"].point, 2), est["b"]["iqm"].low <= est["b"]["iqm"].point <= est["b"]["iqm"].high
    (0.95, True)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "MIN_SEEDS_FOR_VERDICT",
    "Estimate",
    "ScoreMatrix",
    "score_matrices",
    "aggregate_estimates",
    "improvement_probabilities",
    "probability_of_improvement",
    "performance_profiles",
    "per_task_verdict",
]

MIN_SEEDS_FOR_VERDICT = 5
"""Seeds needed on both sides before a per-task verdict (better / worse) is printed."""

DEFAULT_REPS = 2000
"""Bootstrap resamples (rliable's examples use 2,000 for profiles and improvement probabilities)."""


class Estimate(NamedTuple):
    """A point estimate with its 95 % stratified-bootstrap confidence interval."""

    point: float
    low: float
    high: float

    def format(self, digits: int = 2) -> str:
        if not math.isfinite(self.point):
            return "n/a"
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


class ScoreMatrix(NamedTuple):
    """Scores of one method: ``scores[run, task]`` on ``tasks``, runs = the seeds common to them."""

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    scores: np.ndarray


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """rliable's bootstrap draws its indices from NumPy's global RNG (``np.random.choice`` in
    ``StratifiedBootstrap.update_indices``; its ``random_state`` argument does not reach them):
    seed it for reproducible reports, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def score_matrices(
    per_task: Mapping[str, Mapping[str, Sequence[float] | Mapping[int, float]]],
    tasks: Sequence[str],
) -> dict[str, ScoreMatrix]:
    """One ``[runs, tasks]`` matrix per method that has finite scores on every task in ``tasks``.

    Args:
        per_task: ``method -> task -> scores``; scores are a list (run order) or ``{seed: score}``.
        tasks: the tasks (columns), in order.

    Returns:
        ``method -> ScoreMatrix``; methods missing a task are left out. With per-seed dicts the
        runs are the seeds every task has; with lists, the first ``min(len)`` runs.
    """
    out: dict[str, ScoreMatrix] = {}
    for method, by_task in per_task.items():
        if not tasks or any(t not in by_task for t in tasks):
            continue
        cols = [by_task[t] for t in tasks]
        if all(isinstance(c, Mapping) for c in cols):
            finite = [{s for s, v in c.items() if v is not None and math.isfinite(v)} for c in cols]  # type: ignore[union-attr]
            seeds = tuple(sorted(set.intersection(*finite)))
            if not seeds:
                continue
            arr = np.array([[float(c[s]) for c in cols] for s in seeds])  # type: ignore[index]
        else:
            vals = [[float(v) for v in c if v is not None and math.isfinite(v)] for c in cols]  # type: ignore[union-attr]
            n = min(len(v) for v in vals)
            if n == 0:
                continue
            seeds = tuple(range(n))
            arr = np.array([v[:n] for v in vals]).T
        out[method] = ScoreMatrix(tuple(tasks), seeds, arr)
    return out


def _iqm(x: np.ndarray) -> float:
    from rliable import metrics

    return float(metrics.aggregate_iqm(x))


def aggregate_estimates(
    matrices: Mapping[str, np.ndarray], *, reps: int = DEFAULT_REPS, seed: int = 0, gamma: float = 1.0
) -> dict[str, dict[str, Estimate]]:
    """IQM, mean, median and optimality gap (at ``gamma``) with 95 % stratified bootstrap CIs.

    Args:
        matrices: ``method -> scores[runs, tasks]`` (normalized scores).
        reps: bootstrap resamples.
        seed: seed of the bootstrap (reports are reproducible).
        gamma: optimality-gap threshold (1 = the dense oracle).

    Returns:
        ``method -> {"iqm", "mean", "median", "optimality_gap"} -> Estimate``.
    """
    from rliable import library as rly
    from rliable import metrics

    if not matrices:
        return {}

    def agg(x: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_iqm(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_median(x),
                metrics.aggregate_optimality_gap(x, gamma),
            ]
        )

    with _seeded(seed):
        points, cis = rly.get_interval_estimates(dict(matrices), agg, reps=reps)
    out: dict[str, dict[str, Estimate]] = {}
    for method in matrices:
        p, ci = points[method], cis[method]
        out[method] = {
            name: Estimate(float(p[i]), float(ci[0, i]), float(ci[1, i]))
            for i, name in enumerate(("iqm", "mean", "median", "optimality_gap"))
        }
    return out


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """``P(X > Y) + P(X = Y) / 2`` per task (the Mann-Whitney U statistic over ``n_x * n_y``), averaged over tasks.

    The statistic of ``rliable.metrics.probability_of_improvement``, computed for all tasks at once
    (rliable calls SciPy once per task, which dominates a 2,000-resample bootstrap).

    Args:
        scores_x: float[runs_x, tasks]
        scores_y: float[runs_y, tasks]

    Example:
        >>> probability_of_improvement(np.array([[1.0], [3.0]]), np.array([[2.0], [2.0]]))
        0.5
    """
    x = np.asarray(scores_x, dtype=np.float64)[:, None, :]
    y = np.asarray(scores_y, dtype=np.float64)[None, :, :]
    per_task = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(per_task.mean())


def improvement_probabilities(
    matrices: Mapping[str, np.ndarray], baseline: str, *, reps: int = DEFAULT_REPS, seed: int = 0
) -> dict[str, Estimate]:
    """``P(method > baseline)`` averaged over tasks, with a 95 % stratified bootstrap CI.

    ``matrices`` hold any per-run score (raw returns work: the statistic is rank-based per task);
    every matrix must have the baseline's tasks as columns.
    """
    from rliable import library as rly

    if baseline not in matrices:
        return {}
    pairs = {m: (x, matrices[baseline]) for m, x in matrices.items() if m != baseline}
    if not pairs:
        return {}
    with _seeded(seed):
        points, cis = rly.get_interval_estimates(pairs, probability_of_improvement, reps=reps)
    return {
        m: Estimate(float(np.ravel(points[m])[0]), float(np.ravel(cis[m])[0]), float(np.ravel(cis[m])[1]))
        for m in pairs
    }


def performance_profiles(
    matrices: Mapping[str, np.ndarray], taus: np.ndarray, *, reps: int = DEFAULT_REPS, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run-score distributions ``P(score > tau)`` at each tau, with 95 % CIs ``[2, len(taus)]``."""
    from rliable import library as rly

    if not matrices:
        return {}, {}
    with _seeded(seed):
        profiles, cis = rly.create_performance_profile(dict(matrices), np.asarray(taus, dtype=np.float64), reps=reps)
    return {k: np.asarray(v) for k, v in profiles.items()}, {k: np.asarray(v) for k, v in cis.items()}


def per_task_verdict(
    method: Sequence[float], baseline: Sequence[float], *, min_seeds: int = MIN_SEEDS_FOR_VERDICT
) -> str:
    """ "better" / "worse" / "no better (within noise)" with >= ``min_seeds`` seeds on both sides, else "too few seeds".

    The difference of means counts only if it exceeds twice its standard error (Welch).

    Example:
        >>> per_task_verdict([10, 11, 12, 10, 11], [1, 2, 3, 1, 2])
        'better'
        >>> per_task_verdict([10, 11, 12], [1, 2, 3])
        'too few seeds (3 vs 3; need 5)'
    """
    a = np.asarray([x for x in method if x is not None], dtype=np.float64)
    b = np.asarray([x for x in baseline if x is not None], dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return "n/a"
    if a.size < min_seeds or b.size < min_seeds:
        return f"too few seeds ({a.size} vs {b.size}; need {min_seeds})"
    diff = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    if se == 0:
        return "better" if diff > 0 else ("worse" if diff < 0 else "no better (within noise)")
    if diff > 2 * se:
        return "better"
    if diff < -2 * se:
        return "worse"
    return "no better (within noise)"
