"""Benchmark report: tables and learning-curve plots from a results store, as Markdown and self-contained HTML.

``build_report(results)`` aggregates finished runs (pure; no files) into a :class:`Report` of
tables; ``write_report(sweep_dir, out_dir)`` also draws one matplotlib PNG of learning curves per
task (mean and spread over seeds) and writes ``report.md`` (PNG files beside it) and
``report.html`` (PNGs embedded as data URIs, so the page is one file).

Tables (per task, per method, over seeds):

* final true return (mean +- std, seeds), with a verdict against the episodic baseline;
* normalized score ``(method - episodic) / (dense - episodic)`` (0 = baseline, 1 = oracle);
* area under the evaluation curve (average return over training);
* credit quality: Pearson correlation of the per-step reward the learner received with the hidden
  per-step reward (1 for the dense anchor by construction);
* wall-time overhead of training against the episodic baseline (evaluation time excluded);
* steps-to-solve where the task has a threshold, and bsuite scores for bsuite tasks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import statistics
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes
from .stats import (
    MIN_SEEDS_FOR_VERDICT,
    Estimate,
    aggregate_estimates,
    improvement_probabilities,
    per_task_verdict,
    performance_profiles,
    score_matrices,
)
from .store import ResultsStore, atomic_write_text, only_tasks, pack_rows, read_packed
from .suites import ANCHORS

__all__ = ["Report", "Table", "build_report", "write_report", "verdict"]


@dataclass
class Table:
    """A titled table of strings with an optional note under it."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Report:
    """Aggregated benchmark results."""

    title: str
    tasks: list[str]
    methods: list[str]
    tables: list[Table] = field(default_factory=list)
    curves: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=dict)  # task -> method -> x/mean/std/n
    x_names: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def table(self, key: str) -> Table:
        for t in self.tables:
            if t.key == key:
                return t
        raise KeyError(key)


# ------------------------------------------------------------------------------ statistics


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _fmt(mean: float, std: float, n: int, digits: int = 1) -> str:
    if n == 0 or not np.isfinite(mean):
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _spread_cell(main: Sequence[float | None], side: Sequence[float | None], digits: int, side_fmt: str) -> str:
    """``mean ± std`` of ``main`` over seeds, then the mean of ``side`` in parentheses (``side_fmt``)."""
    extra = [v for v in side if v is not None]
    return _fmt(*_mean_std(main), digits=digits) + (f" ({side_fmt.format(statistics.fmean(extra))})" if extra else "")


def verdict(method: Sequence[float], baseline: Sequence[float]) -> str:
    """Compare per-seed results with the baseline's: "better", "worse" or "no better (within noise)".

    The difference of means counts only if it exceeds twice its standard error (Welch); with a
    single seed on either side the verdict is "1 seed: inconclusive". This is the rule for whether
    the dense oracle separates from the baseline (where the normalized score is defined); verdicts
    on methods need :data:`~creditlab.bench.stats.MIN_SEEDS_FOR_VERDICT` seeds
    (:func:`~creditlab.bench.stats.per_task_verdict`).

    Example:
        >>> verdict([10, 11, 12], [1, 2, 3])
        'better'
        >>> verdict([1, 5, 3], [2, 4, 3])
        'no better (within noise)'
    """
    out = per_task_verdict(method, baseline, min_seeds=2)
    return "1 seed: inconclusive" if out.startswith("too few seeds") else out


def _curve_stats(curves: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Mean and std over seeds on the first seed's x grid (other seeds interpolated)."""
    grid = np.asarray(max(curves, key=lambda c: len(c["x"]))["x"], dtype=np.float64)
    ys = np.array(
        [np.interp(grid, np.asarray(c["x"], dtype=np.float64), np.asarray(c["mean"], dtype=np.float64)) for c in curves]
    )
    with warnings.catch_warnings():  # a grid point no seed has a value at stays NaN (not plotted)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
    return {"x": grid, "mean": mean, "std": std, "n": np.array(len(curves))}


# ------------------------------------------------------------------------------ aggregation


def build_report(
    results: Sequence[Mapping[str, Any]],
    *,
    failures: Sequence[Mapping[str, Any]] = (),
    title: str = "creditlab benchmark",
    requested: Sequence[str] = (),
) -> Report:
    """Aggregate finished runs (parsed ``result.json`` dicts) into tables and curves.

    Example:
        >>> def run(task, method, seed, ret):
        ...     cfg = {"task": {"name": task, "family": "gymnasium", "env_id": "X-v0", "steps": 10, "eval_every": 5,
        ...                     "eval_episodes": 1, "agent": {"algo": "ppo", "hyperparams": {"gamma": 0.99}, "n_envs": 1,
        ...                     "normalize": False, "policy": "MlpPolicy"}, "dense_twin": True, "solve_threshold": None,
        ...                     "bsuite_settings": [], "notes": "", "env_kwargs": {}}, "method": method, "seed": seed}
        ...     return {"task": task, "method": method, "seed": seed, "config": cfg, "wall_seconds": 1.0,
        ...             "curve": {"x": [0, 10], "mean": [0.0, ret], "std": [0.0, 0.0]},
        ...             "metrics": {"final_return": ret, "auc": ret / 2, "time/train_seconds": 1.0}}
        >>> rows = [run("t", "episodic", s, 0.0 + s) for s in (0, 1)] + [run("t", "dense", s, 10.0 + s) for s in (0, 1)]
        >>> rows += [run("t", "m", s, 5.0 + s) for s in (0, 1)]  # (5.0 - 0.5) / 10, (6.0 - 0.5) / 10
        >>> r = build_report(rows)
        >>> r.table("normalized").rows[0][:2]
        ['t', '0.50 ± 0.07']
    """
    by: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    task_cfg: dict[str, Mapping[str, Any]] = {}
    for r in results:
        by[(r["task"], r["method"])].append(r)
        task_cfg.setdefault(r["task"], r["config"]["task"])
    tasks = list(dict.fromkeys(r["task"] for r in results))
    found = list(dict.fromkeys(r["method"] for r in results))
    methods = [m for m in ANCHORS if m in found] + sorted(m for m in found if m not in ANCHORS)
    others = [m for m in methods if m not in ANCHORS]
    report = Report(title=title, tasks=tasks, methods=methods)

    def vals(task, method, key):
        if key == "auc":  # from the stored curve, so runs recorded before a metric fix agree
            from .training import curve_metrics

            return [curve_metrics(r["curve"]["x"], r["curve"]["mean"])["auc"] for r in by.get((task, method), [])]
        return [r["metrics"].get(key) for r in by.get((task, method), [])]

    def seeds(task, method):
        return sorted(r["seed"] for r in by.get((task, method), []))

    # final return
    rows = []
    for t in tasks:
        row = [t]
        for m in methods:
            row.append(_fmt(*_mean_std(vals(t, m, "final_return"))))
        rows.append(row)
    report.tables.append(
        Table(
            "final_return",
            "Final true return (deterministic evaluation, mean ± std over seeds)",
            ["task"] + methods,
            rows,
            "Evaluated on the hidden per-step reward. bsuite tasks: mean over settings. pettingzoo tasks: the "
            "team's true return (summed over agents and steps).",
        )
    )

    # verdicts vs baseline
    rows = []
    for t in tasks:
        base = vals(t, "episodic", "final_return")
        for m in [x for x in methods if x != "episodic"]:
            mv = vals(t, m, "final_return")
            if not mv:
                continue
            bm, _, _ = _mean_std(base)
            mm, _, _ = _mean_std(mv)
            rows.append(
                [
                    t,
                    m,
                    f"{mm - bm:+.1f}" if np.isfinite(mm - bm) else "n/a",
                    per_task_verdict(mv, base),
                    ", ".join(str(s) for s in seeds(t, m)),
                ]
            )
    report.tables.append(
        Table(
            "verdict",
            "Against the episodic baseline (final true return)",
            ["task", "method", "difference of means", "verdict", "seeds"],
            rows,
            f"A verdict needs at least {MIN_SEEDS_FOR_VERDICT} seeds on both sides; then 'better' / 'worse' "
            "only when the difference exceeds twice its standard error (Welch), otherwise the method "
            "does not beat the baseline on this evidence. Fewer seeds: 'too few seeds'.",
        )
    )

    # normalized score
    rows = []
    for t in tasks:
        e, _, ne = _mean_std(vals(t, "episodic", "final_return"))
        d, _, nd = _mean_std(vals(t, "dense", "final_return"))
        separated = verdict(vals(t, "dense", "final_return"), vals(t, "episodic", "final_return")) == "better"
        row = [t]
        for m in others + ["dense"]:
            per_seed = vals(t, m, "final_return")
            if ne == 0 or nd == 0 or not per_seed or not (task_cfg[t].get("dense_twin", True)) or abs(d - e) < 1e-12:
                row.append("n/a")
                continue
            if not separated:
                row.append("n/a (no gap)")
                continue
            scores = [(v - e) / (d - e) for v in per_seed if v is not None]
            row.append(_fmt(*_mean_std(scores), digits=2))
        rows.append(row)
    if any(task_cfg[t].get("dense_twin", True) for t in tasks):  # natively sparse tasks only: nothing to normalize by
        report.tables.append(
            Table(
                "normalized",
                "Normalized score (method − episodic) / (dense − episodic)",
                ["task"] + others + ["dense"],
                rows,
                "0 = episodic baseline, 1 = dense oracle; per seed against the anchors' means. "
                "n/a: the task has no dense twin (natively sparse) or an anchor is missing; n/a (no gap): "
                "the dense oracle does not beat the episodic baseline beyond noise at this budget, so the "
                "ratio would only amplify noise.",
            )
        )

    _add_aggregates(report, by, tasks, others, task_cfg)

    # AUC
    rows = [[t] + [_fmt(*_mean_std(vals(t, m, "auc"))) for m in methods] for t in tasks]
    report.tables.append(
        Table("auc", "Area under the evaluation curve (average true return over training)", ["task"] + methods, rows)
    )

    # credit quality
    rows = []
    for t in tasks:
        row = [t]
        for m in methods:
            if m == "dense":
                row.append("1.00 (by construction)")
                continue
            row.append(_fmt(*_mean_std(vals(t, m, "credit/corr_hidden")), digits=2))
        rows.append(row)
    report.tables.append(
        Table(
            "credit",
            "Credit quality: correlation of the per-step reward the agent trained on with the hidden reward",
            ["task"] + methods,
            rows,
            "Pearson correlation over training steps. The episodic baseline's value is that of the "
            "delayed reward itself. n/a where no per-step correlation is defined: the hidden reward is constant "
            "(CartPole pays +1 per step), or the credit is constant within each episode (team_uniform; its "
            "correlation pooled over episodes is in the run's metrics as quality/pearson_pooled).",
        )
    )

    # episode lengths: a method that pays for surviving (or for ending early) shows here first
    if any(v is not None for t in tasks for m in methods for v in vals(t, m, "train_length_last")):
        rows = []
        for t in tasks:
            row = [t]
            for m in methods:
                row.append(_spread_cell(vals(t, m, "train_length_last"), vals(t, m, "final_length"), 0, "eval {:.0f}"))
            rows.append(row)
        report.tables.append(
            Table(
                "lengths",
                "Episode length: training episodes (last tenth, mean ± std over seeds) and final evaluation (mean)",
                ["task"] + methods,
                rows,
                "A reward paid per step changes how long the agent wants episodes to last: a method whose "
                "lengths move away from both anchors' is rewarding survival (or early termination), "
                "whatever the true return says.",
            )
        )

    # did the reward models train? (learned assigners record their update count and last loss)
    learned = [m for m in others if any(v is not None for t in tasks for v in vals(t, m, "credit/total_updates"))]
    if learned:
        rows = []
        for t in tasks:
            row = [t]
            for m in learned:
                ups = [v for v in vals(t, m, "credit/total_updates") if v is not None]
                loss = [v for v in vals(t, m, "credit/loss_last") if v is not None]
                if not ups:
                    row.append("n/a")
                    continue
                cell = f"{min(ups):.0f}-{max(ups):.0f}" if min(ups) != max(ups) else f"{ups[0]:.0f}"
                row.append(cell + (f" (loss {statistics.fmean(loss):.3g})" if loss else ""))
            rows.append(row)
        report.tables.append(
            Table(
                "trained",
                "Reward-model training: updates per run (min-max over seeds) and mean last loss",
                ["task"] + learned,
                rows,
                "A learned assigner whose model never made an update fails its run (it is not a result); "
                "the loss is the method's own (RD/RRD: squared return-decomposition error, RUDDER: its "
                "LSTM losses), comparable across seeds of one method, not across methods.",
            )
        )

    # wall time: medians, since a run that shared the machine with more load is slower whatever its method
    def median_seconds(t: str, m: str) -> float | None:
        v = [x for x in vals(t, m, "time/train_seconds") if x is not None and np.isfinite(x)]
        return float(np.median(v)) if v else None

    rows = []
    for t in tasks:
        base = median_seconds(t, "episodic")
        row = [t, f"{base:.0f} s" if base is not None else "n/a"]
        for m in [x for x in methods if x != "episodic"]:
            mt = median_seconds(t, m)
            row.append(f"{mt:.0f} s ({(mt / base - 1) * 100:+.0f}%)" if mt is not None and base else "n/a")
        rows.append(row)
    report.tables.append(
        Table(
            "walltime",
            "Training wall time (median per run) and overhead vs the episodic baseline",
            ["task", "episodic"] + [m for m in methods if m != "episodic"],
            rows,
            "Evaluation time excluded. Runs shared the machine with other runs and with each other, so the "
            "median over seeds is shown: one run slowed by a busier machine does not move it.",
        )
    )

    # steps to solve
    solve_tasks = [t for t in tasks if task_cfg[t].get("solve_threshold") is not None]
    if solve_tasks:
        rows = []
        for t in solve_tasks:
            row = [t, f"{task_cfg[t]['solve_threshold']:g}"]
            for m in methods:
                v = vals(t, m, "steps_to_solve")
                if not v:
                    row.append("n/a")
                    continue
                solved = [x for x in v if x is not None and np.isfinite(x)]
                row.append(f"{len(solved)}/{len(v)} solved" + (f", median {np.median(solved):,.0f}" if solved else ""))
            rows.append(row)
        report.tables.append(
            Table(
                "solve",
                "Steps to solve (first evaluation at or above the threshold)",
                ["task", "threshold"] + methods,
                rows,
            )
        )

    # natively sparse tasks: training success
    sparse = [t for t in tasks if any("success_rate_last" in r["metrics"] for m in methods for r in by.get((t, m), []))]
    if sparse:
        rows = []
        for t in sparse:
            row = [t]
            for m in methods:
                rate = vals(t, m, "success_rate_last")
                steps = [x for x in vals(t, m, "steps_to_success") if x is not None]
                if not rate:
                    row.append("n/a")
                    continue
                hit = [x for x in steps if np.isfinite(x)]
                row.append(
                    f"{_fmt(*_mean_std(rate), digits=2)}; 50% by {len(hit)}/{len(steps)}"
                    + (f" (median {np.median(hit):,.0f})" if hit else "")
                )
            rows.append(row)
        report.tables.append(
            Table(
                "success",
                "Training success on natively sparse tasks",
                ["task"] + methods,
                rows,
                "Success rate of the last 10% of training episodes (a positive return), mean ± std over "
                "seeds; then how many seeds reached 50% success over 100 consecutive training episodes, "
                "and the median steps it took.",
            )
        )

    # exploration bonuses: their cost (share of the training wall time) and what they found
    bonus = [m for m in others if any(v is not None for t in tasks for v in vals(t, m, "exploration/time_share"))]
    if bonus:
        rows = []
        for t in tasks:
            row = [t]
            for m in bonus:
                share = [None if v is None else 100 * v for v in vals(t, m, "exploration/time_share")]
                row.append(_spread_cell(share, vals(t, m, "exploration/unique_states"), 1, "{:.0f} states"))
            rows.append(row)
        report.tables.append(
            Table(
                "bonus",
                "Exploration bonus: share of the training wall time in % (mean ± std over seeds) and distinct states seen",
                ["task"] + bonus,
                rows,
                "The bonus callback's own timer (computing the bonus, fitting learned bonuses, the rollout "
                "edit) over the run's training time; the target is <= 20 %. States: distinct state keys "
                "seen over the run (the task's state_key), averaged over seeds.",
            )
        )

    # bsuite
    bs_tasks = [t for t in tasks if task_cfg[t].get("family") == "bsuite"]
    if bs_tasks:
        rows = [[t] + [_fmt(*_mean_std(vals(t, m, "bsuite/score")), digits=2) for m in methods] for t in bs_tasks]
        report.tables.append(
            Table(
                "bsuite",
                "bsuite scores (bsuite's own analysis on the training log)",
                ["experiment"] + methods,
                rows,
                "umbrella_length: fraction of settings with average regret < 0.5; discounting_chain: "
                "clip(1 − 10 (1.1 − average return), 0, 1); deep_sea: fraction of sizes N solved within "
                "2^N + 100 episodes (the running fraction of bad episodes falls below 0.9). Reduced sweeps, "
                "see the task table.",
            )
        )

    # task configuration
    rows = []
    for t in tasks:
        c = task_cfg[t]
        agent = c["agent"]
        hp = ", ".join(f"{k}={v}" for k, v in sorted(agent["hyperparams"].items()))
        settings = ", ".join(s.split("/")[-1] for s in c.get("bsuite_settings", [])) or "-"
        all_seeds = sorted({r["seed"] for (tt, _), rs in by.items() if tt == t for r in rs})
        env = c["env_id"]
        extras = [
            f"reward {c['reward']}" if c.get("reward", "episodic") != "episodic" else "",
            f"{c['contexts']} level{'s' if c['contexts'] != 1 else ''} per run" if c.get("contexts") else "",
            f"state key {c['state_key']}" if c.get("state_key") else "",
        ]
        env += "".join(f"; {x}" for x in extras if x)
        team = c.get("family") == "pettingzoo"  # budgets in agent-steps; n_envs counts team copies
        unit, copies = ("agent-steps", "team copies") if team else ("steps", "envs")
        rows.append(
            [
                t,
                env,
                f"{c['steps']:,}" + (" agent-steps" if team else ""),
                str(c["agent"]["hyperparams"]["gamma"]),
                f"{agent['algo'].upper()} ({agent['n_envs']} {copies}{_vecnorm(agent['normalize'])}); {hp}",
                f"every {c['eval_every']:,} {unit}, {c['eval_episodes']} {'team ' if team else ''}episodes",
                settings,
                ", ".join(map(str, all_seeds)),
                c.get("notes", ""),
            ]
        )
    report.tables.append(
        Table(
            "tasks",
            "Tasks, budgets and recorded hyperparameters",
            ["task", "environment", "steps/run", "gamma", "agent", "evaluation", "bsuite ids", "seeds", "notes"],
            rows,
        )
    )

    # method parameters
    rows = []

    def without_seed(cfg: Mapping[str, Any]) -> dict[str, Any]:  # the run's seed: one row per setting, not per seed
        return {
            k: ({kk: vv for kk, vv in v.items() if kk != "seed"} if isinstance(v, dict) else v) for k, v in cfg.items()
        }

    for m in others:
        cfgs = {
            json.dumps(without_seed(r.get("method_config") or {}), sort_keys=True, default=str)
            for (_, mm), rs in by.items()
            if mm == m
            for r in rs
        }
        for cfg in sorted(cfgs):
            data = json.loads(cfg)
            own = data.get("assigner") or data.get("bonus") or {}
            assigner = ", ".join(f"{k}={v}" for k, v in sorted(own.items()))
            integration = (
                ", ".join(
                    f"{k}={v}" for k, v in sorted((data.get("integration") or data.get("callback") or {}).items())
                )
                or "defaults"
            )
            name = m if not data.get("method") else f"{m} ({data['method']})"
            rows.append([name, assigner or "defaults", integration])
    if rows:
        report.tables.append(
            Table(
                "methods",
                "Methods and their parameters",
                ["method", "assigner / bonus parameters", "SB3 callback parameters"],
                rows,
                "Registry defaults plus the suite's overrides; attached with creditlab.integrations.sb3 "
                "(credit assigners: CreditAssignmentCallback / CreditReplayBuffer; exploration bonuses: "
                "ExplorationBonusCallback).",
            )
        )

    if failures:
        rows = [
            [f.get("run_id", "?"), str(f.get("error", "")).splitlines()[0][:160] if f.get("error") else "crashed"]
            for f in failures
        ]
        report.tables.append(
            Table("failures", "Runs that crashed (traceback in their error.json)", ["run", "error"], rows)
        )

    # requested in the manifest but neither finished nor crashed (sweep interrupted or still running)
    seen = {r.get("run_id") for r in results} | {f.get("run_id") for f in failures}
    missing = [rid for rid in requested if rid not in seen]
    if missing:
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for rid in missing:
            task, method, seed = rid.split("/")
            groups[(task, method)].append(seed.removeprefix("seed"))
        rows = [[t, m, ", ".join(sorted(sd, key=int))] for (t, m), sd in groups.items()]
        report.tables.append(
            Table(
                "missing",
                f"Requested runs not finished ({len(missing)} of {len(requested)})",
                ["task", "method", "seeds"],
                rows,
                "The sweep was stopped before these runs finished; re-run the same command to resume.",
            )
        )

    # curves
    for t in tasks:
        report.curves[t] = {}
        for m in methods:
            rs = by.get((t, m))
            if rs:
                report.curves[t][m] = _curve_stats([r["curve"] for r in rs])
                report.x_names[t] = rs[0]["curve"].get("x_name", "environment steps")

    # provenance
    commits = sorted({(r.get("git") or {}).get("commit") or "unknown" for r in results})
    versions = (results[0].get("versions") or {}) if results else {}
    report.summary.update(
        {
            "runs": len(results),
            "failed": len(failures),
            "commits": commits,
            "versions": versions,
            "wall_seconds": float(sum(r.get("wall_seconds") or 0.0 for r in results)),
            "hosts": sorted({r.get("host", "?") for r in results}),
        }
    )
    return report


def _vecnorm(normalize: Any) -> str:
    return {True: ", VecNormalize", "obs": ", VecNormalize (observations)"}.get(normalize, "")


def _per_seed(
    by: Mapping[tuple[str, str], list[Mapping[str, Any]]], task: str, method: str, key: str = "final_return"
) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in by.get((task, method), []):
        v = r["metrics"].get(key)
        if v is not None and np.isfinite(v):
            out[int(r["seed"])] = float(v)
    return out


def normalized_by_task(
    by: Mapping[tuple[str, str], list[Mapping[str, Any]]],
    tasks: Sequence[str],
    methods: Sequence[str],
    task_cfg: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, dict[str, dict[int, float]]], dict[str, str]]:
    """Per-seed normalized scores ``method -> task -> {seed: score}`` on the tasks where the dense oracle
    beats the episodic baseline beyond noise, and the other tasks with the reason they are left out."""
    scores: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)
    excluded: dict[str, str] = {}
    for t in tasks:
        ep = _per_seed(by, t, "episodic")
        de = _per_seed(by, t, "dense")
        if not task_cfg[t].get("dense_twin", True):
            excluded[t] = "natively sparse (no dense oracle)"
            continue
        if not ep or not de:
            excluded[t] = "an anchor has no finished run"
            continue
        if verdict(list(de.values()), list(ep.values())) != "better":
            excluded[t] = "the dense oracle does not beat the episodic baseline beyond noise"
            continue
        e, d = float(np.mean(list(ep.values()))), float(np.mean(list(de.values())))
        for m in methods:
            per = _per_seed(by, t, m)
            if per:
                scores[m][t] = {s: (v - e) / (d - e) for s, v in per.items()}
    return dict(scores), excluded


def _add_aggregates(report: Report, by, tasks, others, task_cfg) -> None:
    """rliable aggregates over tasks x seeds (see :mod:`creditlab.bench.stats`)."""
    methods = ["episodic"] + list(others) + ["dense"]
    norm, excluded = normalized_by_task(by, tasks, methods, task_cfg)
    agg_tasks = [t for t in tasks if t not in excluded]
    mats = score_matrices(norm, agg_tasks) if agg_tasks else {}
    estimates = aggregate_estimates({m: v.scores for m, v in mats.items()}) if mats else {}
    # probability of improvement on raw returns (rank-based per task), every task where both ran
    raw = {m: {t: _per_seed(by, t, m) for t in tasks} for m in methods}
    poi: dict[str, Estimate] = {}
    poi_tasks: dict[str, list[str]] = {}
    for m in others + ["dense"]:
        common = [t for t in tasks if raw[m].get(t) and raw["episodic"].get(t)]
        pair = score_matrices(
            {m: {t: raw[m][t] for t in common}, "episodic": {t: raw["episodic"][t] for t in common}}, common
        )
        if m in pair and "episodic" in pair:
            poi.update(improvement_probabilities({m: pair[m].scores, "episodic": pair["episodic"].scores}, "episodic"))
            poi_tasks[m] = common
    rows = []
    for m in methods:
        e = estimates.get(m)
        mat = mats.get(m)
        p = poi.get(m)
        if e is None and p is None:
            continue
        rows.append(
            [
                m,
                str(len(agg_tasks)) if mat is not None else "0",
                str(len(mat.seeds)) if mat is not None else "-",
                e["iqm"].format() if e else "n/a",
                e["mean"].format() if e else "n/a",
                e["optimality_gap"].format() if e else "n/a",
                p.format() if p else ("-" if m == "episodic" else "n/a"),
            ]
        )
    note = (
        "Normalized scores: 0 = episodic baseline, 1 = dense oracle, per run against the anchors' means. IQM "
        "(interquartile mean) and optimality gap (1 - mean of min(score, 1)) over every run of every task, with "
        "95% stratified-bootstrap confidence intervals (rliable, 2,000 resamples, runs resampled within tasks). "
        "P(> episodic): probability that a run of the method beats a run of the baseline on the same task "
        "(Mann-Whitney, averaged over tasks; raw final returns, so natively sparse tasks count too)."
    )
    if excluded:
        note += (
            " Left out of the normalized aggregates: " + "; ".join(f"{t} ({why})" for t, why in excluded.items()) + "."
        )
    if rows:
        report.tables.append(
            Table(
                "aggregate",
                "Aggregate over tasks (rliable)",
                [
                    "method",
                    "tasks",
                    "runs per task",
                    "IQM normalized score",
                    "mean normalized score",
                    "optimality gap",
                    "P(> episodic)",
                ],
                rows,
                note,
            )
        )
    report.summary["aggregate"] = {
        "tasks": agg_tasks,
        "excluded": excluded,
        "estimates": estimates,
        "poi": poi,
        "poi_tasks": poi_tasks,
        "matrices": {m: v.scores for m, v in mats.items()},
        "seeds": {m: v.seeds for m, v in mats.items()},
        # the fewest finished seeds of any (method, task) that ran: below the verdict rule, no ranking is firm
        "min_seeds": min((len(raw[m][t]) for m in methods for t in tasks if raw[m].get(t)), default=0),
    }
    report.summary["headline"] = headline(report, others)


def headline(report: Report, others: Sequence[str]) -> str:
    """The one conclusion the run supports, in a sentence (the report's first screen)."""
    agg = report.summary.get("aggregate") or {}
    est: Mapping[str, Mapping[str, Estimate]] = agg.get("estimates") or {}
    poi: Mapping[str, Estimate] = agg.get("poi") or {}
    cands = [m for m in others if m in est]
    n_seeds = int(agg.get("min_seeds", 0))
    few = (
        f" With {n_seeds} seed{'s' if n_seeds != 1 else ''} per task (a verdict needs {MIN_SEEDS_FOR_VERDICT}) "
        "the intervals are wide; treat the ranking as tentative."
        if 0 < n_seeds < MIN_SEEDS_FOR_VERDICT
        else ""
    )
    if not cands:
        if agg.get("tasks"):  # an unfinished sweep: the anchors ran, no method has normalized scores yet
            return (
                f"The dense oracle separates from the episodic baseline on {', '.join(agg['tasks'])}, but no credit "
                "method has finished runs there yet: nothing to rank."
            )
        if not poi:
            return "No task separates the dense oracle from the episodic baseline at this budget, so this run supports no ranking of methods."
        best = max(poi, key=lambda m: poi[m].point)
        p = poi[best]
        if "dense" not in report.methods:  # natively sparse tasks only (exploration): rank by P(improvement)
            verdict_text = (
                "beats it beyond the bootstrap noise" if p.low > 0.5 else "does not beat it beyond the bootstrap noise"
            )
            return (
                f"These tasks have no dense oracle (natively sparse); by probability of improvement over the episodic "
                f"baseline the strongest method is {best} (P(> episodic) = {p.format()}): it {verdict_text}.{few}"
            )
        return (
            f"No task separates the dense oracle from the episodic baseline at this budget; by probability of improvement "
            f"the strongest method is {best} (P(> episodic) = {p.format()}).{few}"
        )
    best = max(cands, key=lambda m: est[m]["iqm"].point)
    iqm = est[best]["iqm"]
    tasks = agg.get("tasks") or []
    if iqm.low > 0:
        # where the whole interval sits against the oracle's 1: above it, at it, around it or below it
        if iqm.low > 1.0:
            verdict_text = "beats the episodic baseline and scores above the dense oracle"
        elif iqm.low == 1.0:
            verdict_text = "beats the episodic baseline and reaches the dense oracle"
        elif iqm.high >= 1.0:
            verdict_text = "beats the episodic baseline; its interval also includes the dense oracle's 1"
        else:
            verdict_text = "beats the episodic baseline but stays below the dense oracle"
    else:
        verdict_text = "does not beat the episodic baseline beyond the bootstrap noise"
    return (
        f"Across {len(tasks)} task{'s' if len(tasks) != 1 else ''} where the dense oracle separates from the baseline "
        f"({', '.join(tasks)}), the best method is {best}: IQM normalized score {iqm.format()} "
        f"(0 = episodic baseline, 1 = dense oracle); it {verdict_text}.{few}"
    )


# ------------------------------------------------------------------------------ figures


def _colors(methods: Sequence[str]) -> dict[str, str]:
    fixed = {"episodic": "#7f7f7f", "dense": "#000000"}
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    out, i = {}, 0
    for m in methods:
        if m in fixed:
            out[m] = fixed[m]
        else:
            out[m] = palette[i % len(palette)]
            i += 1
    return out


def plot_curves(report: Report, task: str) -> bytes:
    """One PNG (bytes) of the task's learning curves: mean over seeds, shaded ± std."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    colors = _colors(report.methods)
    # a fixed style: other libraries (plotnine, imported by bsuite's analysis) change the global rcParams
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        return _draw(report, task, colors, plt)


def _draw(report: Report, task: str, colors: Mapping[str, str], plt) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        for m, c in report.curves[task].items():
            n = int(c["n"])
            style = "--" if m in ANCHORS else "-"
            ax.plot(
                c["x"], c["mean"], style, color=colors[m], label=f"{m} ({n} seed{'s' if n != 1 else ''})", linewidth=1.8
            )
            if n > 1:
                ax.fill_between(
                    c["x"], c["mean"] - c["std"], c["mean"] + c["std"], color=colors[m], alpha=0.15, linewidth=0
                )
        ax.set_title(task)
        ax.set_xlabel(report.x_names.get(task, "environment steps"))
        ax.set_ylabel(
            "true return (evaluation)"
            if "setting" not in report.x_names.get(task, "")
            else "true return (training episodes)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


def plot_aggregates(report: Report) -> dict[str, bytes]:
    """rliable figures as PNG bytes: ``intervals`` (IQM and optimality gap with 95% CIs),
    ``improvement`` (P(> episodic) with CIs) and ``profiles`` (performance profiles); only those with data."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    agg = report.summary.get("aggregate") or {}
    colors = _colors(report.methods)
    out: dict[str, bytes] = {}
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        est = agg.get("estimates") or {}
        if est:
            methods = [m for m in report.methods if m in est]
            fig, axes = plt.subplots(1, 2, figsize=(9.0, 0.45 * len(methods) + 1.4), dpi=100)
            try:
                for ax, key, label in (
                    (axes[0], "iqm", "IQM normalized score"),
                    (axes[1], "optimality_gap", "optimality gap"),
                ):
                    for i, m in enumerate(methods):
                        e = est[m][key]
                        ax.barh(i, e.high - e.low, left=e.low, height=0.6, color=colors[m], alpha=0.6)
                        ax.plot([e.point, e.point], [i - 0.3, i + 0.3], color="k", linewidth=1.5)
                    ax.set_yticks(range(len(methods)), methods if key == "iqm" else [""] * len(methods))
                    ax.set_xlabel(label)
                    ax.axvline(0.0, color="#999", linewidth=0.8, linestyle=":")
                    ax.axvline(1.0, color="#999", linewidth=0.8, linestyle=":")
                    ax.grid(axis="x", alpha=0.3)
                fig.suptitle("Aggregate normalized scores (95% stratified-bootstrap CIs)", fontsize=10)
                fig.tight_layout()
                out["intervals"] = _png(fig)
            finally:
                plt.close(fig)
            mats = agg.get("matrices") or {}
            taus = np.linspace(-0.5, 1.5, 81)
            profiles, cis = performance_profiles(mats, taus)
            if profiles:
                fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
                try:
                    for m in [x for x in report.methods if x in profiles]:
                        ax.plot(
                            taus, profiles[m], "--" if m in ANCHORS else "-", color=colors[m], label=m, linewidth=1.8
                        )
                        ax.fill_between(taus, cis[m][0], cis[m][1], color=colors[m], alpha=0.15, linewidth=0)
                    ax.set_xlabel("normalized score τ (0 = episodic, 1 = dense)")
                    ax.set_ylabel("fraction of runs with score > τ")
                    ax.set_title("Performance profiles")
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=8, loc="best")
                    fig.tight_layout()
                    out["profiles"] = _png(fig)
                finally:
                    plt.close(fig)
        poi = agg.get("poi") or {}
        if poi:
            methods = [m for m in report.methods if m in poi]
            fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(methods) + 1.4), dpi=100)
            try:
                for i, m in enumerate(methods):
                    e = poi[m]
                    ax.barh(i, e.high - e.low, left=e.low, height=0.6, color=colors[m], alpha=0.6)
                    ax.plot([e.point, e.point], [i - 0.3, i + 0.3], color="k", linewidth=1.5)
                ax.set_yticks(range(len(methods)), methods)
                ax.axvline(0.5, color="#999", linewidth=0.8, linestyle=":")
                ax.set_xlim(0, 1)
                ax.set_xlabel("P(method > episodic baseline)")
                ax.set_title("Probability of improvement (95% CIs)")
                ax.grid(axis="x", alpha=0.3)
                fig.tight_layout()
                out["improvement"] = _png(fig)
            finally:
                plt.close(fig)
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------------------ rendering


def _md_table(t: Table) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = [
        f"### {t.title}",
        "",
        "| " + " | ".join(esc(c) for c in t.columns) + " |",
        "| " + " | ".join("---" for _ in t.columns) + " |",
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", f"_{t.note}_"]
    return "\n".join(lines) + "\n"


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    cls = ' class="text"' if t.key in ("tasks", "methods", "failures", "missing") else ""
    return f'<section id="{t.key}"><h3>{html.escape(t.title)}</h3><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</section>'


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f3f3} table.text td{text-align:left} td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:12px} .figs figure{margin:0} .figs img{width:480px;border:1px solid #ddd}
.note{color:#555;font-size:13px;font-style:italic} code{background:#f5f5f5;padding:1px 3px}
"""


def _order(report: Report) -> list[Table]:
    order = [
        "aggregate",
        "final_return",
        "normalized",
        "verdict",
        "auc",
        "credit",
        "lengths",
        "success",
        "bonus",
        "walltime",
        "solve",
        "bsuite",
        "tasks",
        "methods",
        "failures",
        "missing",
    ]
    return sorted(report.tables, key=lambda t: order.index(t.key) if t.key in order else len(order))


def _provenance_lines(report: Report) -> list[str]:
    s = report.summary
    regen = (
        "Raw results: runs.jsonl (one line per run); regenerate this report with `creditlab report runs.jsonl --out .`."
    )
    versions = ", ".join(f"{k} {v}" for k, v in sorted(s.get("versions", {}).items()))
    return [
        f"Runs: {s.get('runs', 0)} finished, {s.get('failed', 0)} failed; total run time {s.get('wall_seconds', 0) / 60:.1f} min "
        f"(summed over runs); hosts: {', '.join(s.get('hosts', []))}.",
        f"creditlab commit(s): {', '.join(s.get('commits', []))}.",
        f"Versions: {versions}.",
        regen,
    ]


def render_markdown(
    report: Report, figures: Mapping[str, str], intro: str = "", aggregate_figures: Mapping[str, str] | None = None
) -> str:
    parts = [f"# {report.title}", ""]
    if report.summary.get("headline"):
        parts += [f"**{report.summary['headline']}**", ""]
    if intro:
        parts += [intro, ""]
    anchors = (
        "(anchors: `episodic` = PPO on the delayed reward, `dense` = PPO on the original reward)"
        if "dense" in report.methods
        else "(anchor: `episodic` = PPO on the task's own sparse reward, no bonus and no credit; these tasks have no dense oracle)"
    )
    parts += [f"Tasks: {', '.join(report.tasks)}. Methods: {', '.join(report.methods)} {anchors}.", ""]
    tables = _order(report)
    if tables and tables[0].key == "aggregate":
        parts.append(_md_table(tables.pop(0)))
        for name, path in (aggregate_figures or {}).items():
            parts.append(f"![{name}]({path})")
        parts.append("")
    for t in tables:
        parts.append(_md_table(t))
    parts += ["## Learning curves", ""]
    for task, path in figures.items():
        parts.append(f"![{task}]({path})")
    parts += ["", "## Provenance", ""] + [f"- {line}" for line in _provenance_lines(report)]
    return "\n".join(parts) + "\n"


def render_html(
    report: Report, pngs: Mapping[str, bytes], intro: str = "", aggregate_pngs: Mapping[str, bytes] | None = None
) -> str:
    agg_figs = "".join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,{base64.b64encode(b).decode()}"></figure>'
        for n, b in (aggregate_pngs or {}).items()
    )
    head = (
        f"<p><strong>{html.escape(report.summary['headline'])}</strong></p>" if report.summary.get("headline") else ""
    )
    figs = "".join(
        f'<figure><img alt="learning curves {html.escape(t)}" src="data:image/png;base64,{base64.b64encode(b).decode()}"></figure>'
        for t, b in pngs.items()
    )
    tables = "".join(_html_table(t) for t in _order(report))
    prov = "".join(f"<li>{html.escape(x)}</li>" for x in _provenance_lines(report))
    intro_html = f"<p>{html.escape(intro)}</p>" if intro else ""
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(report.title)}</title><style>{_CSS}</style></head>'
        f"<body><h1>{html.escape(report.title)}</h1>{head}{intro_html}"
        f"<p>Tasks: {html.escape(', '.join(report.tasks))}. Methods: {html.escape(', '.join(report.methods))} "
        "(anchors: <code>episodic</code> = PPO on the delayed reward, <code>dense</code> = PPO on the original reward).</p>"
        + (f'<h2>Aggregates</h2><div class="figs">{agg_figs}</div>' if agg_figs else "")
        + f'<h2>Learning curves</h2><div class="figs">{figs}</div><h2>Tables</h2>{tables}'
        f"<h2>Provenance</h2><ul>{prov}</ul></body></html>\n"
    )


def write_report(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    intro: str = "",
    tasks: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``report.md`` (+ ``figures/*.png``), a self-contained ``report.html`` and the packed raw
    results ``runs.jsonl`` (one line per run) for a sweep.

    Args:
        sweep_dir: the folder ``creditlab bench --out`` wrote, or a packed ``.jsonl`` table of one.
        out_dir: where to write (default ``sweep_dir/report``; beside the table for a packed one).
        title: page title (default from the manifest's suite name).
        intro: a paragraph placed under the title.
        tasks: report (and pack) only these tasks' runs, e.g. the finished tasks of a sweep still
            running; a name without runs is a ``CreditlabError``.

    Returns:
        ``{"markdown": path, "html": path, "figures": folder}``.
    """
    from ..errors import CreditlabError

    packed = Path(sweep_dir).is_file()
    store: Any = read_packed(sweep_dir) if packed else ResultsStore(sweep_dir)
    results = store.load_results()
    if not results:
        raise CreditlabError(
            f"no finished runs in {store.root} (expected {store.root}/runs/<task>/<method>/seed<k>/result.json "
            "or a table written by `creditlab report DIR`)"
        )
    manifest, failures = store.manifest(), store.load_failures()
    if tasks is not None:
        known = sorted({r["task"] for r in results} | {f.get("task") for f in failures} - {None})
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise CreditlabError(f"--tasks: no runs of {unknown} in {store.root}; its tasks: {known}")
        manifest, results, failures = only_tasks(manifest, results, failures, tasks)
    suite = manifest.get("suite")
    report = build_report(
        results,
        failures=failures,
        requested=list(manifest.get("runs", {})),
        title=title or (f"creditlab benchmark: suite {suite}" if suite else "creditlab benchmark"),
    )
    out = Path(out_dir) if out_dir is not None else (store.root.parent if packed else store.root / "report")
    if tasks is not None and packed and (out / "runs.jsonl").resolve() == store.root.resolve():
        raise CreditlabError(
            f"--tasks would overwrite {store.root} with part of its runs; write the report elsewhere with --out"
        )
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, bytes] = {}
    figures: dict[str, str] = {}
    for task in report.tasks:
        png = plot_curves(report, task)
        pngs[task] = png
        path = figdir / f"{task}.png"
        write_bytes(path, png)
        figures[task] = f"figures/{task}.png"
    agg_pngs = plot_aggregates(report)
    agg_paths: dict[str, str] = {}
    for name, png in agg_pngs.items():
        write_bytes(figdir / f"aggregate_{name}.png", png)
        agg_paths[name] = f"figures/aggregate_{name}.png"
    if tasks is not None:  # the packed table holds exactly what the report shows
        pack_rows(out / "runs.jsonl", manifest, results, failures)
    elif not packed:
        store.pack(out / "runs.jsonl")
    elif (out / "runs.jsonl").resolve() != store.root.resolve():
        atomic_write_text(out / "runs.jsonl", store.root.read_text(encoding="utf-8"))
    atomic_write_text(out / "report.md", render_markdown(report, figures, intro, agg_paths))
    atomic_write_text(out / "report.html", render_html(report, pngs, intro, agg_pngs))
    return {"markdown": out / "report.md", "html": out / "report.html", "figures": figdir, "runs": out / "runs.jsonl"}
