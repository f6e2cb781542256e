"""``creditlab demo``: the CPU demo of turn-level credit (also ``python -m creditlab_demo``).

    creditlab demo all                  # every task x method x 3 seeds, then plots and table
    creditlab demo run --tasks secret   # only the sweep (resumes; finished runs are skipped)
    creditlab demo report               # only the plots and table from finished runs
    creditlab demo train --task secret --method igpo --set iterations=100   # one run of the sweep, for exploring
    creditlab demo show runs/llm-demo/keydoor/gigpo/seed0   # transcripts of a trained policy

The command line follows creditlab's conventions (docs/conventions.md, "Command line"): lists are
comma-separated (``--methods grpo,gigpo``; the space-separated form ``--methods grpo gigpo``
works too), and ``--out`` always names what a command writes: the run folder of ``run``/``all``/
``train`` (a re-run resumes it) and the report folder of ``report``, which reads the run folder
given as its argument (default ``runs/llm-demo``). The report goes to the published results only
when asked (``--report-out docs/results/llm-demo --force``); a report folder outside the run
folder that already holds results needs ``--force``. ``--docs`` is the deprecated name of the
report folder, and ``demo report --out RUNS`` (``--out`` naming the run folder, as it once did)
still works with a warning when RUNS holds finished runs.
The command reaches ``creditlab`` through the ``creditlab.commands`` entry point ``demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from creditlab.clikit import Command, add_force_option, add_list_option, check_output_dir, parse_sets
from creditlab.errors import CreditlabError

DEFAULT_OUT = "runs/llm-demo"
_REPORT_FILES = ("results.md", "results.json")
_REPORT_HELP = "report folder: figures, results.md, results.json (default: the run folder; docs/results/llm-demo updates the published results)"


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    add_list_option(p, "--tasks", help="tasks to run, comma-separated (default: all: keydoor,secret,secret-free)")
    add_list_option(p, "--methods", help="only these methods, comma-separated (default: each task's list)")
    add_list_option(
        p, "--seeds", item=int, default=[0, 1, 2], help="seeds per configuration, comma-separated (default 0,1,2)"
    )
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"run folder: checkpoints and results (default {DEFAULT_OUT}); a re-run resumes it",
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="TrainConfig override for every run (repeatable)"
    )
    p.add_argument("--nice", type=int, default=10, help="raise this process's niceness by this much first (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="demo_command", metavar="ACTION")
    sub.required = True
    _add_sweep_args(sub.add_parser("run", help="train every (task, method, seed); resumable"))
    rp = sub.add_parser("report", help="plots, results.md and results.json from finished runs")
    rp.add_argument("runs", nargs="?", help=f"run folder written by `demo run` (default {DEFAULT_OUT})")
    rp.add_argument("--out", help=_REPORT_HELP)
    rp.add_argument("--docs", help="deprecated name of --out")
    add_force_option(rp)
    ap = sub.add_parser("all", help="run the sweep, then write the report")
    _add_sweep_args(ap)
    ap.add_argument("--report-out", help=_REPORT_HELP)
    ap.add_argument("--docs", dest="docs", help="deprecated name of --report-out")
    add_force_option(ap)
    tp = sub.add_parser("train", help="one training run of the sweep's settings, with progress lines")
    tp.add_argument(
        "--task",
        "--env",
        dest="task",
        default="secret",
        help="task of the sweep: keydoor, secret or secret-free (its environment, budget and settings)",
    )
    tp.add_argument(
        "--method",
        default="grpo",
        help="one of the task's methods: grpo, gigpo, gigpo-gamma1 (keydoor) or igpo (secret)",
    )
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument(
        "--env-set",
        action="append",
        metavar="KEY=VALUE",
        help="environment setting changed from the task's (repeatable)",
    )
    tp.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="TrainConfig field changed from the task's (repeatable)"
    )
    tp.add_argument("--out", help="run folder (checkpoint + result.json); none: nothing is written")
    tp.add_argument("--nice", type=int, default=10)
    tp.add_argument("--threads", type=int, default=1)
    sp = sub.add_parser("show", help="print episodes of a trained policy (from a run folder's checkpoint)")
    sp.add_argument("run", help="run folder holding checkpoint.pt")
    sp.add_argument("--episodes", type=int, default=3)
    sp.add_argument("--seed", type=int, default=0, help="sampling seed")
    sp.add_argument("--greedy", action="store_true")


def _report_folders(args: argparse.Namespace) -> tuple[str, str]:
    """``(run folder, report folder)`` of ``demo report`` / ``demo all``, deprecated spellings included."""
    from .experiment import load_results

    if args.demo_command == "all":
        if args.docs is not None:
            warnings.warn(
                "`creditlab demo all --docs DIR` is deprecated; use --report-out DIR", FutureWarning, stacklevel=2
            )
            if args.report_out is not None:
                raise CreditlabError("give --report-out only (--docs is its deprecated name)")
        return args.out, args.report_out or args.docs or args.out
    if args.docs is not None:
        warnings.warn(
            "`creditlab demo report --docs DIR` is deprecated; use --out DIR (the report folder)",
            FutureWarning,
            stacklevel=2,
        )
    if args.runs is None and args.out is not None and load_results(args.out):
        # `demo report --out RUNS [--docs REPORT]`: --out once named the run folder
        warnings.warn(
            "`creditlab demo report --out RUNS` is deprecated: --out now names the report folder, as in every creditlab command; "
            "pass the run folder as the argument (`creditlab demo report RUNS [--out REPORT]`). Reading the runs in "
            f"{args.out} as before",
            FutureWarning,
            stacklevel=2,
        )
        return args.out, args.docs or args.out
    if args.out is not None and args.docs is not None:
        raise CreditlabError("give --out only (--docs is its deprecated name)")
    runs = args.runs or DEFAULT_OUT
    return runs, args.out or args.docs or runs


def _check_report_folder(args: argparse.Namespace, runs: str, report: str) -> None:
    """A report inside its run folder is rewritten; elsewhere, existing results need --force."""
    inside = Path(report).resolve().is_relative_to(Path(runs).resolve())
    check_output_dir(
        report,
        flag="--report-out" if args.demo_command == "all" else "--out",
        produces=() if inside else _REPORT_FILES,
        force=args.force,
    )


def _setup(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:  # pragma: no cover - not permitted
            pass


def _progress(name: str, m: dict[str, float]) -> None:
    if "eval/success" not in m:
        return
    parts = [
        f"{name} it {int(m['iteration'])}",
        f"eval {100 * m['eval/success']:.1f}%",
        f"greedy {100 * m['eval/greedy_success']:.1f}%",
    ]
    if "train/success" in m:
        parts.append(f"train {100 * m['train/success']:.1f}%")
    parts.append(f"{m['time/elapsed']:.0f}s")
    print("  ".join(parts), file=sys.stderr, flush=True)


def _sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .experiment import run_sweep

    _setup(args)
    t0 = time.time()
    results = run_sweep(
        args.out,
        tasks=args.tasks,
        methods=args.methods,
        seeds=args.seeds,
        extra=parse_sets(args.set),
        log=None if args.quiet else _progress,
    )
    print(f"{len(results)} runs complete in {args.out} ({time.time() - t0:.0f}s this session)", file=sys.stderr)
    return results


def _report(runs: str, report: str) -> None:
    from .experiment import load_results
    from .report import write_report

    if not load_results(runs):
        raise CreditlabError(f"no finished runs under {runs}; run `creditlab demo run` first")
    out = write_report(runs, report)
    print(out["table"])
    print(f"wrote {', '.join(out['figures'])}, {Path(report) / 'results.md'} and results.json", file=sys.stderr)


def show(run: str | os.PathLike, *, episodes: int = 3, seed: int = 0, greedy: bool = False) -> str:
    """Transcripts of ``episodes`` held-out tasks played by the policy saved in ``run``/checkpoint.pt."""
    import torch

    from .rollout import generate
    from .train import TrainConfig, Trainer

    path = Path(run) / "checkpoint.pt"
    if not path.exists():
        raise CreditlabError(f"no checkpoint at {path}")
    state = torch.load(path, weights_only=False)
    trainer = Trainer(TrainConfig.from_dict(state["config"]))
    trainer.load_state_dict(state)
    env, tok = trainer.env, trainer.env.tokenizer
    tasks = {k: v[:episodes] for k, v in trainer._eval_tasks.items()}
    ro = generate(trainer.policy, env, tasks, generator=torch.Generator().manual_seed(seed), greedy=greedy)
    p, step = env.prompt_len, env.action_len + env.obs_len
    lines = [f"{run} (iteration {trainer.iteration}, {trainer.config.method})"]
    for b in range(ro.tokens.shape[0]):
        lines.append(f"episode {b}: {'success' if bool(ro.success[b]) else 'failure'} in {int(ro.num_turns[b])} turns")
        lines.append("  " + tok.decode(ro.tokens[b, :p]))
        for t in range(int(ro.num_turns[b])):
            c = p + t * step
            action = tok.decode(ro.tokens[b, c : c + env.action_len])
            obs = tok.decode(ro.tokens[b, c + env.action_len : c + step][ro.valid[b, c + env.action_len : c + step]])
            lines.append(f"  > {action:<14} {obs}")
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    if args.demo_command in ("run", "all", "train") and args.out:
        check_output_dir(args.out)  # a run folder resumes: finished runs are kept, never overwritten
    if args.demo_command == "run":
        _sweep(args)
    elif args.demo_command == "report":
        runs, report = _report_folders(args)
        _check_report_folder(args, runs, report)
        _report(runs, report)
    elif args.demo_command == "all":
        runs, report = _report_folders(args)
        _check_report_folder(args, runs, report)  # before the sweep: a refused report must not cost a sweep
        _sweep(args)
        _report(runs, report)
    elif args.demo_command == "show":
        print(show(args.run, episodes=args.episodes, seed=args.seed, greedy=args.greedy))
    elif args.demo_command == "train":
        from .experiment import run_config, task_config
        from .train import Trainer

        config = task_config(
            args.task,
            args.method,
            args.seed,
            env_kwargs=parse_sets(args.env_set, flag="--env-set"),
            **parse_sets(args.set),
        )
        _setup(args)
        log = lambda m: _progress(f"{args.task}/{args.method}/seed{config.seed}", m)
        if args.out:
            result = run_config(config, args.out, log=log)
            print(json.dumps({"final": result["final"], "auc": result["auc"]}, indent=1))
        else:
            evals = Trainer(config).run(log=log)
            print(json.dumps({"final": evals[-1]}, indent=1))
    return 0


demo = Command(
    "demo",
    "CPU demo: tiny transformer agents trained with outcome-only GRPO vs GiGPO / IGPO turn credit",
    _arguments,
    run_demo,
)
