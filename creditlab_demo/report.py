"""Plots and tables of a demo sweep: success-rate curves (mean and spread over seeds)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from creditlab.atomic import write_bytes, write_text

from .experiment import TASKS, load_results, write_json_atomic

__all__ = ["summarize", "compare", "plot_task", "write_report", "markdown_table", "comparison_table", "episodes_to"]

# Success level for the "episodes to target" column: about the middle of each task's curves.
TARGETS = {"keydoor": 0.5, "secret": 0.2, "secret-free": 0.2}

_COLORS = {"grpo": "#555555", "gigpo": "#1f77b4", "gigpo-gamma1": "#17becf", "igpo": "#d62728", "spa": "#2ca02c"}
_LABELS = {
    "grpo": "GRPO (outcome only)",
    "gigpo": "GiGPO (anchor-state steps, gamma 0.95)",
    "gigpo-gamma1": "GiGPO, gamma 1 (no discount)",
    "igpo": "IGPO (information gain)",
}


def _curve(run: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    evals = run["evals"]
    return np.array([e["iteration"] for e in evals]), np.array([e[key] for e in evals])


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, method): seeds, final and area-under-curve success (mean, std, per seed)."""
    rows = []
    keys = sorted(
        {(r["task"], r["method"]) for r in results},
        key=lambda k: (list(TASKS).index(k[0]) if k[0] in TASKS else 99, k[1] != "grpo", k[1]),
    )
    for task, method in keys:
        runs = sorted((r for r in results if r["task"] == task and r["method"] == method), key=lambda r: r["seed"])
        final = np.array([r["final"]["eval/success"] for r in runs])
        final_greedy = np.array([r["final"]["eval/greedy_success"] for r in runs])
        area = np.array([r["auc"] for r in runs])
        secs = np.array([r["compute_seconds"] for r in runs])
        turns = np.array([r["final"]["eval/turns"] for r in runs])
        target = TARGETS.get(task, 0.5)
        reach = [episodes_to(r, target) for r in runs]
        first = runs[0]["evals"][0]["eval/success"]
        rows.append(
            {
                "task": task,
                "method": method,
                "seeds": [r["seed"] for r in runs],
                "iterations": runs[0]["config"]["iterations"],
                "episodes": runs[0]["final"]["episodes"],
                "initial_success": float(first),
                "final_success_mean": float(final.mean()),
                "final_success_std": float(final.std(ddof=1)) if len(runs) > 1 else 0.0,
                "final_success_per_seed": final.tolist(),
                "final_greedy_mean": float(final_greedy.mean()),
                "auc_mean": float(area.mean()),
                "auc_std": float(area.std(ddof=1)) if len(runs) > 1 else 0.0,
                "auc_per_seed": area.tolist(),
                "final_turns_mean": float(turns.mean()),
                "target": target,
                "episodes_to_target_per_seed": reach,
                "seconds_per_seed_mean": float(secs.mean()),
                "seconds_total": float(secs.sum()),
            }
        )
    return rows


def compare(rows: list[dict[str, Any]], *, baseline: str = "grpo", reps: int = 2000) -> list[dict[str, Any]]:
    """Each turn-level method against the outcome-only baseline of its task, with the benchmark's statistics.

    Per task and method, on final success and on the area under the success curve: the IQM over
    seeds with its 95 % bootstrap CI, the probability that a seed of the method beats a seed of the
    baseline (Mann-Whitney) with its CI (rliable, :mod:`creditlab.bench.stats`), and the per-task
    verdict, printed only with >= 5 seeds on both sides (difference of means beyond twice its
    standard error).
    """
    from creditlab.bench.stats import aggregate_estimates, improvement_probabilities, per_task_verdict

    base = {r["task"]: r for r in rows if r["method"] == baseline}
    out = []
    for r in rows:
        b = base.get(r["task"])
        if r["method"] == baseline or b is None:
            continue
        entry: dict[str, Any] = {"task": r["task"], "method": r["method"], "baseline": baseline}
        for key in ("final_success", "auc"):
            x = np.asarray(r[f"{key}_per_seed"], dtype=np.float64)[:, None]
            y = np.asarray(b[f"{key}_per_seed"], dtype=np.float64)[:, None]
            iqm = aggregate_estimates({r["method"]: x, baseline: y}, reps=reps)
            prob = improvement_probabilities({r["method"]: x, baseline: y}, baseline, reps=reps)[r["method"]]
            entry[key] = {
                "iqm": list(iqm[r["method"]]["iqm"]),
                "baseline_iqm": list(iqm[baseline]["iqm"]),
                "p_improvement": list(prob),
                "verdict": per_task_verdict(x[:, 0].tolist(), y[:, 0].tolist()),
                "seeds": [len(x), len(y)],
            }
        out.append(entry)
    return out


def comparison_table(comparisons: list[dict[str, Any]]) -> str:
    """The comparisons of :func:`compare` in Markdown (success in %)."""

    def ci(v: list[float], scale: float = 100.0, digits: int = 1) -> str:
        return f"{scale * v[0]:.{digits}f} [{scale * v[1]:.{digits}f}, {scale * v[2]:.{digits}f}]"

    head = (
        "| task | method vs baseline | seeds | final success IQM % [95% CI] | baseline | P(method > baseline) | "
        "verdict | AUC IQM % [95% CI] | baseline | P(method > baseline) | verdict |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for c in comparisons:
        f, a = c["final_success"], c["auc"]
        lines.append(
            f"| {c['task']} | {c['method']} vs {c['baseline']} | {f['seeds'][0]} vs {f['seeds'][1]} | {ci(f['iqm'])} | "
            f"{ci(f['baseline_iqm'])} | {ci(f['p_improvement'], 1.0, 2)} | {f['verdict']} | "
            f"{ci(a['iqm'])} | {ci(a['baseline_iqm'])} | {ci(a['p_improvement'], 1.0, 2)} | {a['verdict']} |"
        )
    return head + "\n".join(lines) + "\n"


def episodes_to(run: dict[str, Any], level: float, key: str = "eval/success") -> float | None:
    """Training episodes when the evaluation curve first reaches ``level`` (linear between evaluations; None if never)."""
    per_iteration = run["config"]["groups"] * run["config"]["group_size"]
    prev = None
    for e in run["evals"]:
        if e[key] >= level:
            if prev is None or e[key] == prev[key]:
                return float(e["iteration"] * per_iteration)
            frac = (level - prev[key]) / (e[key] - prev[key])
            return float((prev["iteration"] + frac * (e["iteration"] - prev["iteration"])) * per_iteration)
        prev = e
    return None


def _thousands(values: list[float | None]) -> str:
    return ", ".join("never" if v is None else f"{v / 1000:.1f}k" for v in values)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results table in Markdown (success in %, mean +- std over seeds, per-seed values)."""
    head = (
        "| task | method | seeds | episodes | start % | final success % (mean ± std) | per seed | "
        "AUC % (mean ± std) | episodes to target (per seed) | final turns | greedy final % | minutes (all seeds) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in rows:
        per_seed = ", ".join(f"{100 * v:.0f}" for v in r["final_success_per_seed"])
        lines.append(
            f"| {r['task']} | {r['method']} | {len(r['seeds'])} | {int(r['episodes'])} | {100 * r['initial_success']:.1f} | "
            f"{100 * r['final_success_mean']:.1f} ± {100 * r['final_success_std']:.1f} | {per_seed} | "
            f"{100 * r['auc_mean']:.1f} ± {100 * r['auc_std']:.1f} | {100 * r['target']:.0f} %: {_thousands(r['episodes_to_target_per_seed'])} | "
            f"{r['final_turns_mean']:.1f} | {100 * r['final_greedy_mean']:.1f} | {r['seconds_total'] / 60:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def plot_task(results: list[dict[str, Any]], task: str, path: str | os.PathLike, *, key: str = "eval/success") -> None:
    """Success curves of one task: per method the seed mean, a min-max band and thin seed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if r["task"] == task]
    methods = sorted({r["method"] for r in runs}, key=lambda m: (m != "grpo", m))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for method in methods:
        mruns = [r for r in runs if r["method"] == method]
        curves = [_curve(r, key) for r in mruns]
        n = min(len(c[0]) for c in curves)
        x = curves[0][0][:n] * (mruns[0]["config"]["groups"] * mruns[0]["config"]["group_size"])
        ys = np.stack([c[1][:n] for c in curves]) * 100
        color = _COLORS.get(method)
        for y in ys:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.15, linewidth=0)
        ax.plot(x, ys.mean(0), color=color, linewidth=2.0, label=f"{_LABELS.get(method, method)} (n={len(mruns)})")
    desc = TASKS[task].description if task in TASKS else task
    what = "greedy" if "greedy" in key else "sampled"
    ax.set_title(f"{task}: {desc}", fontsize=8)
    ax.set_xlabel("training episodes")
    ax.set_ylabel(f"held-out success rate, % ({what})")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def write_report(out: str | os.PathLike, docs: str | os.PathLike) -> dict[str, Any]:
    """Read every completed run under ``out``; write PNG curves, ``results.md`` and ``results.json`` to ``docs``."""
    results = load_results(out)
    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    rows = summarize(results)
    figures = []
    for task in sorted({r["task"] for r in results}):
        for key, suffix in (("eval/success", ""), ("eval/greedy_success", "-greedy")):
            path = docs / f"{task}{suffix}.png"
            plot_task(results, task, path, key=key)
            figures.append(str(path))
    comparisons = compare(rows)
    table = markdown_table(rows)
    if comparisons:
        table += (
            "\nTurn-level credit against outcome-only GRPO on the same task: interquartile mean over seeds "
            "with 95 % bootstrap CIs and the probability that a seed of the method beats a seed of GRPO "
            "(rliable); a verdict needs >= 5 seeds on both sides (difference of means beyond twice its "
            "standard error).\n\n" + comparison_table(comparisons)
        )
    write_text(docs / "results.md", table)
    envs = {r["environment"]["git_commit"] for r in results}
    summary = {
        "rows": rows,
        "comparisons": comparisons,
        "tasks": {
            name: {"env": t.env, "env_kwargs": t.env_kwargs, "overrides": t.overrides} for name, t in TASKS.items()
        },
        "configs": {f"{r['task']}/{r['method']}/seed{r['seed']}": r["config"] for r in results},
        "environment": results[0]["environment"] if results else {},
        "git_commits": sorted(envs),
    }
    write_json_atomic(summary, docs / "results.json")
    return {
        "rows": rows,
        "comparisons": comparisons,
        "figures": figures,
        "table": table,
        "runs": len(results),
        "nan": math.nan,
    }
