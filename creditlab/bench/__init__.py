"""Benchmarks: every credit method against the episodic baseline and the dense oracle, on the same tasks.

* :mod:`~creditlab.bench.suites`: suites, tasks and agents as validated dataclasses (``smoke``,
  ``standard``, ``full``); :func:`expand_runs` gives one :class:`RunSpec` per (task, method, seed).
* :mod:`~creditlab.bench.tasks` / :mod:`~creditlab.bench.bsuite_tasks`: environments, including a
  dm_env -> Gymnasium adapter for bsuite and bsuite's own scoring.
* :mod:`~creditlab.bench.training`: a run spec as a run of the SB3 runner (:mod:`creditlab.integrations.sb3`), bsuite scoring.
* :mod:`~creditlab.bench.runner`, :mod:`~creditlab.bench.executors`, :mod:`~creditlab.bench.store`:
  sweeps on Ray or in-process, results written atomically and resumable.
* :mod:`~creditlab.bench.report`: Markdown + self-contained HTML report with plots.

The command line is ``creditlab bench`` and ``creditlab report``.
"""

from .config import get_suite, list_suites, load_suite
from .executors import InProcessExecutor, RayExecutor, RunCrashed
from .report import Report, build_report, verdict, write_report
from .runner import SweepEvent, SweepSummary, execute_run, run_sweep
from .store import ConfigMismatchError, ResultsStore
from .suites import ANCHORS, AgentConfig, RunSpec, Suite, TaskSpec, expand_runs

__all__ = [
    "ANCHORS",
    "AgentConfig",
    "TaskSpec",
    "Suite",
    "RunSpec",
    "get_suite",
    "list_suites",
    "load_suite",
    "expand_runs",
    "ResultsStore",
    "ConfigMismatchError",
    "InProcessExecutor",
    "RayExecutor",
    "RunCrashed",
    "execute_run",
    "run_sweep",
    "SweepEvent",
    "SweepSummary",
    "Report",
    "build_report",
    "write_report",
    "verdict",
]
