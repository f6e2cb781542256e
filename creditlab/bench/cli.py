"""``creditlab bench`` and ``creditlab report`` subcommands.

Conventions (docs/conventions.md, "Command line"): lists are comma-separated (``--methods
rrd,lare``; spaces work too); ``--out`` is always the output: the sweep folder of ``bench`` (a
re-run resumes it: the documented exception to overwrite protection) and the report folder of
``report``, whose input is the sweep folder ``DIR``. A report written outside its sweep folder
does not replace an existing one without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..clikit import Command, add_force_option, add_list_option, check_output_dir, parse_seeds
from ..errors import CreditlabError

_DEFAULT_OUT = "runs/bench-{suite}"
_REPORT_FILES = ("report.md", "report.html", "runs.jsonl")


def _bench_args(p: argparse.ArgumentParser) -> None:
    from .config import list_suites

    src = p.add_mutually_exclusive_group()
    src.add_argument("--suite", choices=list_suites(), help="a built-in suite (default smoke: a few minutes)")
    src.add_argument(
        "--config",
        metavar="FILE",
        help="a suite file (YAML or JSON; see docs/bench.md); "
        "`--suite NAME --show-config` prints a built-in one to start from",
    )
    src.add_argument(
        "--env-id",
        metavar="ID",
        help="benchmark one environment: a Gymnasium id or 'module:Class' "
        "(PPO with the defaults in docs/bench.md; --reward, --steps, --methods, --seeds, --normalize, --import)",
    )
    p.add_argument(
        "--reward",
        default="episodic",
        help="with --env-id: how the reward is hidden, 'episodic' or 'delayed:K' (default episodic)",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="with --env-id: VecNormalize observations and rewards (MuJoCo-style tasks)",
    )
    add_list_option(
        p,
        "--import",
        dest="imports",
        metavar="MODULES",
        help="with --env-id: comma-separated modules to import first (they register custom env ids), in every worker",
    )
    p.add_argument(
        "--show-config",
        action="store_true",
        help="print the suite as a YAML file (after --methods/--tasks/--seeds/--steps) and exit",
    )
    add_list_option(
        p,
        "--methods",
        help="comma-separated credit methods (registry names); the anchors "
        "episodic and dense are always added. Default: the suite's methods",
    )
    add_list_option(p, "--tasks", help="comma-separated task names of the suite (default: all)")
    p.add_argument(
        "--seeds", nargs="+", metavar="N|A,B", help="seed count (3 = 0,1,2) or list (0,2,5); default: the suite's"
    )
    p.add_argument(
        "--steps",
        type=int,
        help="override every task's training budget (environment steps per run; agent-steps for pettingzoo tasks)",
    )
    p.add_argument("--out", help=f"sweep folder (default {_DEFAULT_OUT}); re-running the same command resumes")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--ray-address", help="join an existing Ray cluster (e.g. ray://head:10001) instead of starting a local Ray"
    )
    g.add_argument("--no-ray", action="store_true", help="run every run in this process, one after another")
    p.add_argument(
        "--num-cpus", type=int, help="CPUs of the local Ray (default: this machine's cores); one run per CPU"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    add_list_option(
        p,
        "--track",
        metavar="TRACKERS",
        help="per-run logs in each run's folder: tensorboard (event files; `tensorboard --logdir DIR/runs`) "
        "and/or wandb (offline unless WANDB_MODE=online; `wandb sync` uploads later)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no live display: one plain line per finished run (for logs and CI)"
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")


def _cwd_importable() -> None:
    """Make modules in the current folder importable, as ``python -m`` does (the ``creditlab``
    script's own folder is on ``sys.path`` instead): ``--env-id my_env:MyEnv`` and a suite's
    ``imports: [my_env]`` then work from the folder holding ``my_env.py``, in local Ray workers too
    (they inherit ``PYTHONPATH``)."""
    import os

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *parts])


def _resolve_suite(args: argparse.Namespace):
    """The suite of ``--suite`` / ``--config`` / ``--env-id`` (default: the smoke suite)."""
    from .config import get_suite

    if args.config:
        from .config import load_suite

        return load_suite(args.config)
    if args.env_id:
        return env_suite(
            args.env_id,
            reward=args.reward,
            steps=args.steps or 100_000,
            normalize=args.normalize,
            imports=tuple(args.imports or ()),
        )
    if args.reward != "episodic" or args.normalize or args.imports:
        raise CreditlabError("--reward, --normalize and --import go with --env-id; in a suite file they are task keys")
    return get_suite(args.suite or "smoke")


def env_suite(
    env_id: str,
    *,
    reward: str = "episodic",
    steps: int = 100_000,
    normalize: bool = False,
    imports: tuple[str, ...] = (),
):
    """A one-task suite for ``creditlab bench --env-id ID``: PPO (8 envs x 256 steps, batch 64, 10 epochs,
    lr 3e-4, gae_lambda 0.95, gamma 0.99), evaluation every tenth of the budget on 10 episodes, the
    anchors plus ``uniform`` and ``rrd``, 5 seeds."""
    import re

    from .config import suite_from_dict

    name = re.sub(r"[^A-Za-z0-9_-]+", "_", env_id.split(":")[-1]).strip("_").lower() or "env"
    agent = {
        "algo": "ppo",
        "n_envs": 8,
        "normalize": normalize,
        "hyperparams": {
            "n_steps": 256,
            "batch_size": 64,
            "n_epochs": 10,
            "learning_rate": 3.0e-4,
            "gae_lambda": 0.95,
            "gamma": 0.99,
        },
    }
    task = {
        "name": name,
        "env": env_id,
        "reward": reward,
        "steps": steps,
        "eval_every": max(1, steps // 10),
        "eval_episodes": 10,
        "agent": agent,
        "imports": list(imports),
    }
    return suite_from_dict(
        {
            "name": name,
            "description": f"creditlab bench --env-id {env_id} --reward {reward}",
            "seeds": 5,
            "tasks": [task],
            "methods": ["uniform", "rrd"],
        }
    )


def run_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .executors import InProcessExecutor, RayExecutor
    from .progress import SweepLog, SweepProgress
    from .runner import run_sweep
    from .suites import expand_runs

    console = Console(stderr=True)
    _cwd_importable()
    seeds = parse_seeds(args.seeds, single_is_count=True)
    suite = _resolve_suite(args).select(methods=args.methods, tasks=args.tasks, seeds=seeds, steps=args.steps)
    if args.show_config:
        from .config import dump_suite

        sys.stdout.write(dump_suite(suite))
        return 0
    from .tasks import check_environment

    for task in suite.tasks:  # a typo in an env id fails here, once, not in every run
        check_environment(task)
    runs = expand_runs(suite)
    out = Path(args.out or _DEFAULT_OUT.format(suite=suite.name))
    check_output_dir(out)  # a sweep folder resumes: existing results are kept, never overwritten
    from .tracking import check_trackers

    track = check_trackers(args.track)  # a missing package is an error now, before any run
    if args.dry_run:

        def unit(task) -> str:  # pettingzoo budgets count agent-steps (N per environment step)
            return "agent-steps" if task.family == "pettingzoo" else "environment steps"

        for r in runs:
            print(f"{r.run_id}\t{r.task.total_steps:,} {unit(r.task)}")
        sys.stdout.flush()  # before the summary on stderr, so the two never interleave on a terminal
        totals: dict[str, int] = {}
        for r in runs:
            totals[unit(r.task)] = totals.get(unit(r.task), 0) + r.task.total_steps
        print(f"{len(runs)} runs, {', '.join(f'{n:,} {u}' for u, n in totals.items())} -> {out}", file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    if args.no_ray:
        executor = InProcessExecutor()
    else:
        try:
            executor = RayExecutor(address=args.ray_address, num_cpus=args.num_cpus)
        except ModuleNotFoundError as exc:
            raise CreditlabError(
                "Ray is not installed: from the creditlab repository, `pip install -e '.[bench]'` (or `bash scripts/install.sh`), "
                "or pass --no-ray"
            ) from exc
    meta = {"suite": suite.name, "command": " ".join(sys.argv), "executor": executor.name}
    console.print(
        f"[bold]creditlab bench[/bold] suite [cyan]{suite.name}[/cyan]: {len(runs)} runs "
        f"({len(suite.tasks)} tasks x {len(suite.methods)} methods x {len(suite.seeds)} seeds) on "
        f"{executor.name} ({executor.slots} parallel) -> {out}",
        soft_wrap=True,
    )
    display = (
        SweepLog(runs, console=console)
        if args.no_progress
        else SweepProgress(runs, slots=executor.slots, console=console, title=f"bench {suite.name}")
    )
    try:
        with display:
            summary = run_sweep(runs, out, executor=executor, on_event=display, meta=meta, track=track)
    except KeyboardInterrupt:
        from .store import ResultsStore

        done = len(ResultsStore(out).load_results())
        console.print(f"interrupted: {done} finished runs are kept in {out}; run the same command again to resume")
        return 130
    finally:
        executor.close()
    console.print(
        f"{len(summary.done)} runs finished, {len(summary.skipped)} were already done, "
        f"{len(summary.failed)} failed, in {summary.seconds / 60:.1f} min"
    )
    if "tensorboard" in track:
        console.print(f"TensorBoard: tensorboard --logdir {out / 'runs'}", soft_wrap=True, highlight=False)
    if "wandb" in track:
        console.print(
            f"W&B runs (offline unless WANDB_MODE=online): wandb sync {out / 'runs'}/*/*/*/wandb/offline-run-*",
            soft_wrap=True,
            highlight=False,
        )
    if not args.no_report:
        from .report import write_report

        paths = write_report(out)
        console.print(f"report: {paths['markdown']} and {paths['html']}")
    console.print(f"total wall time {(time.perf_counter() - t0) / 60:.1f} min")
    return 1 if summary.failed else 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir", help="sweep folder written by `creditlab bench --out DIR`, or the runs.jsonl table a report wrote"
    )
    p.add_argument(
        "--out",
        help="where to write report.md, report.html, runs.jsonl and figures/ (default DIR/report, rewritten on "
        "every run; beside a runs.jsonl table; another folder that already holds a report needs --force)",
    )
    p.add_argument("--title", help="report title")
    p.add_argument("--intro", default="", help="a paragraph placed under the title")
    p.add_argument(
        "--tasks",
        help="comma-separated task names: report (and pack into runs.jsonl) only their runs, e.g. the finished "
        "tasks of a sweep that is still running",
    )
    add_force_option(p)


def run_report(args: argparse.Namespace) -> int:
    from .report import write_report

    if not Path(args.dir).exists():
        raise FileNotFoundError(f"no sweep folder or packed results file {args.dir}")
    if args.out is not None:
        src_dir = Path(args.dir).resolve() if Path(args.dir).is_dir() else Path(args.dir).resolve().parent
        inside = Path(args.out).resolve().is_relative_to(src_dir)
        check_output_dir(args.out, produces=() if inside else _REPORT_FILES, force=args.force)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    paths = write_report(args.dir, args.out, title=args.title, intro=args.intro, tasks=tasks)
    print(
        f"wrote {paths['markdown']} and {paths['html']} (figures in {paths['figures']}, raw results in {paths['runs']})",
        file=sys.stderr,
    )
    return 0


bench = Command(
    "bench", "run a benchmark suite: every credit method against the episodic and dense anchors", _bench_args, run_bench
)
report = Command(
    "report",
    "write the Markdown + HTML report (tables, learning curves) of a benchmark folder",
    _report_args,
    run_report,
)
