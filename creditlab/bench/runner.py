"""The sweep runner: schedules (task, method, seed) runs on an executor and records every outcome.

``execute_run`` is the worker side: it trains one run and returns a JSON-plain payload (curve,
metrics, seed, package versions, git commit, host, timings) or, if the run raises, a failure
payload with the traceback; it never raises for a failing run. ``run_sweep`` is the driver side:
it skips runs already finished in the results store, hands the rest to the executor, and writes
each payload atomically as it arrives (so an interrupted sweep keeps every finished run and the
next invocation resumes). Results are written by the driver only, so workers on a remote Ray
cluster need no shared filesystem.

``run_sweep(..., progress=True)`` shows the CLI's live display (rich, on stderr);
``track=("tensorboard", "wandb")`` writes per-run TensorBoard event files and W&B runs (offline by
default) into each run's folder (:mod:`creditlab.bench.tracking`).

Example:
    >>> import tempfile
    >>> from creditlab.bench.config import get_suite
    >>> from creditlab.bench.suites import expand_runs
    >>> runs = expand_runs(get_suite("smoke").select(tasks=["cartpole"], seeds=1, steps=512))
    >>> summary = run_sweep(runs, tempfile.mkdtemp(), executor=InProcessExecutor())  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .executors import InProcessExecutor, RunCrashed
from .store import ResultsStore
from .suites import RunSpec

__all__ = [
    "execute_run",
    "run_sweep",
    "SweepEvent",
    "SweepSummary",
    "package_versions",
    "git_commit",
    "InProcessExecutor",
]

_PACKAGES = (
    "creditlab",
    "torch",
    "numpy",
    "gymnasium",
    "stable-baselines3",
    "mujoco",
    "minigrid",
    "bsuite",
    "ray",
    "matplotlib",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a run depends on (and Python's)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    """The creditlab checkout's commit and whether it had uncommitted changes (None outside git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "creditlab"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def execute_run(config: Mapping[str, Any]) -> dict[str, Any]:
    """Worker entry point: train the run described by ``RunSpec.to_dict()``; never raises for a run error.

    Returns:
        ``{"status": "ok", "curve", "metrics", ...}`` or ``{"status": "failed", "error", "traceback", ...}``,
        both with ``versions``, ``git``, ``host``, ``pid``, ``started``, ``wall_seconds``.
    """
    started = time.time()
    common: dict[str, Any] = {
        "versions": package_versions(),
        "git": git_commit(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    config = dict(config)
    tracking = config.pop("tracking", None)
    tracker = None
    try:
        from .training import method_config, train_run

        spec = RunSpec.from_dict(config)
        common["method_config"] = method_config(spec)
        tracker = _tracker(tracking, spec)
        out = train_run(spec, tracker=tracker)
        if tracker is not None:
            tracker.finish(out.metrics, steps=int(out.metrics.get("steps", 0)))
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        failed = {
            **common,
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "wall_seconds": time.time() - started,
        }
        return {**failed, **_tracked_files(tracker, failed=True)}
    return {
        **common,
        "status": "ok",
        "curve": out.curve,
        "metrics": out.metrics,
        "wall_seconds": time.time() - started,
        **_tracked_files(tracker),
    }


_FILES_KEY = "tracking_files"  # payload key of log files a remote worker returns (never stored in result.json)


def _tracker(tracking: Mapping[str, Any] | None, spec: RunSpec):
    """The run's :class:`~creditlab.bench.tracking.RunTracker` (None without ``--track``)."""
    if not tracking or not tracking.get("trackers"):
        return None
    from .tracking import RunTracker

    return RunTracker(
        tracking["trackers"],
        tracking.get("dir"),
        project=tracking.get("project") or "creditlab-bench",
        name=spec.run_id,
        group=f"{spec.task.name}/{spec.method}",
        tags=(spec.task.name, spec.method),
        config={**spec.to_dict(), "config_hash": spec.config_hash()},
    )


def _tracked_files(tracker, *, failed: bool = False) -> dict[str, Any]:
    if tracker is None:
        return {}
    if failed:
        try:
            tracker.finish(None)
        except Exception:  # noqa: BLE001 - the run's own error is what gets recorded
            pass
    files = tracker.files()
    return {_FILES_KEY: files} if files else {}


@dataclass(frozen=True)
class SweepEvent:
    """A progress event: ``kind`` is "plan", "start", "done" or "failed"; ``run`` the run concerned."""

    kind: str
    run: RunSpec | None = None
    payload: Mapping[str, Any] | None = None
    total: int = 0
    skipped: int = 0


@dataclass
class SweepSummary:
    """What a sweep did: run ids done now, skipped (already finished) and failed."""

    out_dir: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_sweep(
    runs: Sequence[RunSpec],
    out_dir: str | os.PathLike,
    *,
    executor: Any = None,
    on_event: Callable[[SweepEvent], None] | None = None,
    meta: Mapping[str, Any] | None = None,
    worker: Callable[[Mapping[str, Any]], Mapping[str, Any]] = execute_run,
    progress: bool = False,
    track: Sequence[str] = (),
) -> SweepSummary:
    """Run every run not yet finished in ``out_dir`` and record each outcome as it arrives.

    Args:
        runs: the runs of the sweep (see :func:`~creditlab.bench.suites.expand_runs`).
        out_dir: the sweep folder (results store).
        executor: :class:`InProcessExecutor` (default) or :class:`RayExecutor`.
        on_event: progress callback (the CLI's display); called in this process.
        meta: extra manifest fields (suite name, command line).
        worker: the worker function (``execute_run``); must be importable by the executor's workers.
        progress: show the live display of ``creditlab bench`` (runs done/total, running, failed,
            ETA; rich, on stderr). Off by default: library calls print nothing.
        track: ``"tensorboard"`` and/or ``"wandb"``: per-run logs in each run's folder (see
            :mod:`creditlab.bench.tracking`); a tracker whose package is missing is an error before
            any run starts.

    Returns:
        A :class:`SweepSummary`. Failed runs are recorded in ``error.json`` and retried by the
        next invocation; finished runs are never run again.
    """
    if progress:
        from .progress import SweepProgress

        runs = list(runs)
        with SweepProgress(runs, slots=getattr(executor, "slots", 1)) as display:

            def both(event: SweepEvent) -> None:
                display(event)
                if on_event is not None:
                    on_event(event)

            return run_sweep(runs, out_dir, executor=executor, on_event=both, meta=meta, worker=worker, track=track)
    t0 = time.perf_counter()
    store = ResultsStore(out_dir)
    trackers = ()
    if track:
        from .tracking import check_trackers

        trackers = check_trackers(track)
    runs = list(dict((r.run_id, r) for r in runs).values())
    store.check_configs(runs)
    store.write_manifest(runs, dict(meta or {}))
    todo = [r for r in runs if store.status(r) != "done"]
    summary = SweepSummary(store.root, skipped=[r.run_id for r in runs if store.status(r) == "done"])
    emit = on_event or (lambda event: None)
    emit(SweepEvent("plan", total=len(runs), skipped=len(summary.skipped)))
    executor = executor or InProcessExecutor()
    by_id = {r.run_id: r for r in todo}
    items = [r.to_dict() for r in todo]
    if trackers:
        in_place = _shares_disk(executor)
        project = str((meta or {}).get("suite") or store.root.resolve().name)
        for item, r in zip(items, todo):
            item["tracking"] = {
                "trackers": list(trackers),
                "project": f"creditlab-bench-{project}",
                "dir": str(store.run_dir(r).resolve()) if in_place else None,
            }

    def started(item):
        emit(SweepEvent("start", by_id[_run_id(item)]))

    for item, result in executor.imap_unordered(worker, items, on_start=started):
        run = by_id[_run_id(item)]
        if isinstance(result, RunCrashed):
            result = {"status": "failed", "error": str(result), "traceback": result.traceback_text}
        elif isinstance(result, BaseException):
            result = {
                "status": "failed",
                "error": repr(result),
                "traceback": "".join(traceback.format_exception(result)),
            }
        if _FILES_KEY in result:
            from .tracking import write_files

            result = dict(result)
            write_files(store.run_dir(run), result.pop(_FILES_KEY))
        store.write_result(run, result)
        ok = result.get("status") == "ok"
        (summary.done if ok else summary.failed).append(run.run_id)
        emit(SweepEvent("done" if ok else "failed", run, result))
    summary.seconds = time.perf_counter() - t0
    return summary


def _shares_disk(executor: Any) -> bool:
    """Whether the executor's workers see this machine's disk: in-process and a local Ray do, a Ray
    cluster joined by address may not (its workers return their log files with the result)."""
    flag = getattr(executor, "shares_disk", None)
    if flag is not None:
        return bool(flag)
    if isinstance(executor, InProcessExecutor):
        return True
    return hasattr(executor, "address") and executor.address is None


def _run_id(item: Mapping[str, Any]) -> str:
    return f"{item['task']['name']}/{item['method']}/seed{item['seed']}"
