"""The demo sweep: every (task, method, seed) run, resumable, with results written atomically.

Layout of an output folder::

    OUT/TASK/METHOD/seed{S}/checkpoint.pt   -- trainer state, saved every eval (resume point)
    OUT/TASK/METHOD/seed{S}/result.json     -- written once, atomically, when the run is complete

A run whose ``result.json`` exists is skipped; a run with only a checkpoint resumes from it.
Runs execute one at a time in this process (the machine is shared).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from creditlab.atomic import write_json
from creditlab.errors import RangeError

from .train import TrainConfig, Trainer, auc

__all__ = [
    "TASKS",
    "Task",
    "environment_info",
    "load_results",
    "run_config",
    "run_sweep",
    "task_config",
    "valid_pairs",
    "write_json_atomic",
]


@dataclass(frozen=True)
class Task:
    """One demo task: an environment, its training budget and the credit variants compared on it.

    Attributes:
        env, env_kwargs: the environment.
        variants: run name -> TrainConfig overrides (at least ``method``), e.g.
            ``{"gigpo-gamma1": {"method": "gigpo", "gamma": 1.0}}``.
        overrides: TrainConfig fields shared by every variant (budget, evaluation).
        description: one line for plots and tables.
    """

    env: str
    env_kwargs: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def methods(self) -> tuple[str, ...]:
        """Variant names, in order."""
        return tuple(self.variants)

    def config(self, variant: str, seed: int, **extra: Any) -> TrainConfig:
        if variant not in self.variants:
            raise RangeError(f"unknown variant {variant!r}; this task has {list(self.variants)}")
        data = {
            "env": self.env,
            "env_kwargs": dict(self.env_kwargs),
            "seed": seed,
            **self.overrides,
            **self.variants[variant],
            **extra,
        }
        return TrainConfig.from_dict(data)


# The learning rate, entropy bonus and batch (16 tasks x 8 rollouts) shared by every run are the
# TrainConfig defaults (fixed before the comparison, the same for all methods); a task sets only
# its environment, its budget and the variants compared on it.
TASKS: dict[str, Task] = {
    "keydoor": Task(
        env="keydoor",
        env_kwargs={"spots": 4, "pool": 8, "max_turns": 12},
        variants={
            "grpo": {"method": "grpo"},
            "gigpo": {"method": "gigpo"},
            "gigpo-gamma1": {"method": "gigpo", "gamma": 1.0},
        },
        overrides={"iterations": 200, "eval_every": 20},
        description="find the key hidden at 1 of 4 places, take it, open the door; 12 turns",
    ),
    "secret": Task(
        env="secret",
        env_kwargs={"n": 16, "max_turns": 5},
        variants={"grpo": {"method": "grpo"}, "igpo": {"method": "igpo"}},
        overrides={"iterations": 1000, "eval_every": 50},
        description="guess the secret in [0, 16) after 4 'less K' questions",
    ),
    "secret-free": Task(
        env="secret",
        env_kwargs={"n": 16, "max_turns": 5, "early_guess": True},
        variants={"grpo": {"method": "grpo"}, "igpo": {"method": "igpo"}},
        overrides={"iterations": 1000, "eval_every": 50},
        description="guess the secret in [0, 16); the agent may answer at any of 5 turns",
    ),
}


def valid_pairs() -> str:
    """The task/method pairs of the sweep, for messages: ``keydoor: grpo, gigpo, ...; secret: ...``."""
    return "; ".join(f"{name}: {', '.join(task.variants)}" for name, task in TASKS.items())


def task_config(
    task: str, method: str, seed: int = 0, *, env_kwargs: dict[str, Any] | None = None, **overrides: Any
) -> TrainConfig:
    """The TrainConfig of one run of the documented sweep (:data:`TASKS`), with optional changes.

    Args:
        task: a key of :data:`TASKS` (``keydoor``, ``secret``, ``secret-free``).
        method: one of the task's variants (``grpo``, ``gigpo``, ``gigpo-gamma1``, ``igpo``).
        seed: the run's seed.
        env_kwargs: environment settings changed from the task's.
        overrides: TrainConfig fields changed from the task's.

    Raises:
        RangeError: an unknown task, or a method the task does not compare (the message lists the
            valid task/method pairs).

    Example:
        >>> cfg = task_config("secret", "igpo", seed=1, iterations=10)
        >>> cfg.env_kwargs, cfg.iterations, cfg.eval_every, cfg.lr
        ({'n': 16, 'max_turns': 5}, 10, 50, 0.0003)
    """
    if task not in TASKS:
        raise RangeError(f"unknown demo task {task!r}; valid task/method pairs: {valid_pairs()}")
    spec = TASKS[task]
    if method not in spec.variants:
        raise RangeError(f"task {task!r} has no method {method!r}; valid task/method pairs: {valid_pairs()}")
    return spec.config(method, seed, env_kwargs={**spec.env_kwargs, **(env_kwargs or {})}, **overrides)


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write JSON to ``path`` atomically (see :mod:`creditlab.atomic`)."""
    write_json(path, data, indent=1, sort_keys=True)


def environment_info() -> dict[str, str]:
    """Package versions, platform and git commit recorded beside every result."""
    import torch

    from creditlab import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "creditlab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": commit or "unknown",
        "torch_threads": str(torch.get_num_threads()),
    }


def run_config(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    log: Callable[[dict[str, float]], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any] | None:
    """Train one configuration in ``run_dir`` (resuming a checkpoint) and write ``result.json``.

    Returns the result, or None when ``stop_after`` interrupted the run before the end.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    trainer = Trainer(config)
    wall0 = time.time()
    evals = trainer.run(checkpoint=run_dir / "checkpoint.pt", log=log, stop_after=stop_after)
    if trainer.iteration < config.iterations:
        return None
    result = {
        "config": config.to_dict(),
        "evals": evals,
        "history": trainer.history,
        "final": evals[-1],
        "auc": auc(evals),
        "auc_greedy": auc(evals, "eval/greedy_success"),
        "compute_seconds": trainer.elapsed,
        "wall_seconds_last_session": time.time() - wall0,
        "parameters": trainer.policy.num_parameters(),
        "environment": environment_info(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(result, result_path)
    return result


def run_sweep(
    out: str | os.PathLike,
    *,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    extra: dict[str, Any] | None = None,
    log: Callable[[str, dict[str, float]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (task, method, seed) one after the other; completed runs are skipped.

    Args:
        out: output folder.
        tasks: task names (default: all of :data:`TASKS`).
        methods: restrict to these methods (default: each task's own list).
        seeds: seeds per configuration.
        extra: TrainConfig overrides for every run (e.g. ``{"iterations": 2}`` for a smoke run).
        log: ``log(run_name, metrics)`` after every iteration.
    """
    names = tasks or list(TASKS)
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise RangeError(f"unknown demo tasks {unknown}; expected some of {sorted(TASKS)}")
    if methods:
        offered = {m for name in names for m in TASKS[name].variants}
        missing = sorted(set(methods) - offered)
        if missing:
            per_task = {name: list(TASKS[name].variants) for name in names}
            raise RangeError(f"methods {missing} are not variants of the selected tasks; variants per task: {per_task}")
    results = []
    for name in names:
        task = TASKS[name]
        for method in task.variants:
            if methods and method not in methods:
                continue
            for seed in seeds:
                config = task.config(method, seed, **(extra or {}))
                run_name = f"{name}/{method}/seed{seed}"
                callback = (lambda m, _n=run_name: log(_n, m)) if log else None
                result = run_config(config, Path(out) / name / method / f"seed{seed}", log=callback)
                if result is not None:
                    results.append({"task": name, "method": method, "seed": seed, **result})
    return results


def load_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every completed run under ``out`` as dicts with ``task``, ``method``, ``seed`` added."""
    rows = []
    for path in sorted(Path(out).glob("*/*/seed*/result.json")):
        data = json.loads(path.read_text())
        task, method, seed = path.parts[-4], path.parts[-3], int(path.parts[-2][4:])
        rows.append({"task": task, "method": method, "seed": seed, **data})
    return rows
