"""The ``creditlab`` command.

Subcommands register themselves in :data:`COMMANDS` (name -> (add_arguments, run)); later
modules (bench, report, program, demo) add theirs the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CreditlabError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand: decorate ``run(args) -> exit code``; ``arguments`` fills its parser."""

    def deco(run):
        COMMANDS[name] = (help, arguments or (lambda p: None), run)
        return run

    return deco


def parse_value(text: str) -> Any:
    """``--set key=value`` values: JSON where it parses (numbers, lists, true/false/null), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CreditlabError(f"--set expects key=value; got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


# ------------------------------------------------------------------------------ methods


def _methods_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", help="only this family (advantage, normalization, shaping, credit, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("methods", "list every registered method, its inputs and defaults", _methods_args)
def run_methods(args: argparse.Namespace) -> int:
    from .registry import list_methods

    methods = list_methods(family=args.family)
    if not methods:
        families = sorted({m.family for m in list_methods()})
        raise CreditlabError(f"no method in family {args.family!r}; families are {', '.join(families)}")
    if args.json:
        rows = [
            {
                "name": m.name,
                "family": m.family,
                "kind": m.kind,
                "summary": m.summary,
                "needs": list(m.needs),
                "params": dict(m.params),
                "source": m.source,
            }
            for m in methods
        ]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"creditlab methods ({len(methods)})", show_lines=False)
    for col in ("name", "family", "output", "needs", "defaults", "description"):
        table.add_column(col, overflow="fold")
    for m in methods:
        out = {"advantages": "advantages[B,T]", "rewards": "rewards[B,T]", "assigner": "assigner"}[m.kind]
        needs = ", ".join(n.replace("?", " (optional)").replace("|", " or ") for n in m.needs)
        defaults = ", ".join(f"{k}={v}" for k, v in m.params.items())
        table.add_row(m.name, m.family, out, needs, defaults, m.summary)
    Console(width=max(120, Console().width)).print(table)
    return 0



# ------------------------------------------------------------------------------ advantages


def _advantages_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="episodes file (.parquet or .jsonl), one row per step; see docs/data-format.md")
    p.add_argument(
        "--method", required=True, help="a method whose output is advantages (families advantage and normalization; see `creditlab methods`)"
    )
    p.add_argument(
        "--credit",
        help="optional reward transform / credit method applied first (e.g. delta_process, gated_accumulation, uniform); "
        "its per-step rewards then feed the advantage method",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="parameter of --method (repeatable), e.g. --set gamma=0.99")
    p.add_argument("--credit-set", action="append", metavar="KEY=VALUE", help="parameter of --credit (repeatable)")
    p.add_argument("--out", help="output file (.parquet or .jsonl): the input rows plus 'advantage' (and 'return', 'credit_reward') columns")
    p.add_argument("--metrics", help="also write the metrics as JSON to this file")


@command("advantages", "compute per-step advantages for an episodes file", _advantages_args)
def run_advantages(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa

    from .episodes import Episodes, read_table, write_table
    from .registry import get_method

    t0 = time.perf_counter()
    if args.out and Path(args.out).suffix.lower() not in (".parquet", ".jsonl", ".json", ".ndjson"):
        raise CreditlabError(f"--out {args.out!r}: unknown output type; use a .parquet or .jsonl file name")
    table = read_table(args.file)
    episodes = Episodes.from_table(table, source=str(args.file))
    method = get_method(args.method)
    if method.kind != "advantages":
        raise CreditlabError(
            f"{args.method!r} is a {method.family} method producing {method.kind}; pass it as --credit and choose an "
            "advantage --method (e.g. --credit delta_process --method reinforce_pp)"
        )
    metrics: dict[str, float] = {}
    columns: dict[str, Any] = {}
    if args.credit:
        credit = get_method(args.credit)
        if credit.kind not in ("rewards", "assigner") or credit.run is None:
            raise CreditlabError(f"--credit {args.credit!r} is not a reward transform or credit assigner (kind {credit.kind!r})")
        if "components" in method.needs:
            raise CreditlabError(
                f"--method {args.method!r} normalizes the episode-level reward components and would ignore the per-step "
                f"rewards --credit {args.credit!r} produces; use a step-level method (gae, monte_carlo, reinforce_pp) or a "
                "group method on the credited return (grpo, rloo, ...)"
            )
        shaped = credit(episodes, **parse_sets(args.credit_set))
        metrics.update({(k if k.startswith("credit/") else f"credit/{k}"): v for k, v in shaped.metrics.items()})
        rewards = np.asarray(shaped.rewards)
        columns["credit_reward"] = rewards
        # The credited per-step rewards now carry the episode's feedback: drop the episode-level
        # columns so every method reads the new rewards (group methods: their sum).
        episodes = episodes.replace(
            rewards=rewards,
            outcomes=None,
            outcome_present=None,
            components=None,
            component_present=None,
            component_names=(),
            reward_present=None,
        )
    out = method(episodes, **parse_sets(args.set))
    metrics.update(out.metrics)
    columns["advantage"] = np.asarray(out.advantages)
    if out.returns is not None:
        columns["return"] = np.asarray(out.returns)
    elapsed = time.perf_counter() - t0
    metrics["time/seconds"] = elapsed
    _print_summary(args, episodes, metrics)
    if args.out:
        rows = episodes.row_index
        new = table
        for name, arr in columns.items():
            flat = np.zeros(table.num_rows, dtype=np.float64)
            flat[rows[episodes.mask]] = arr[episodes.mask]
            if name in new.column_names:
                new = new.drop_columns([name])
            new = new.append_column(name, pa.array(flat))
        write_table(new, args.out)
        print(f"wrote {table.num_rows} rows with columns {list(columns)} to {args.out}", file=sys.stderr)
    else:
        bi, ti = np.nonzero(episodes.mask)
        for b, t in zip(bi.tolist(), ti.tolist()):
            row = {"episode_id": _plain(episodes.episode_ids[b]), "step": t}
            row.update({k: float(v[b, t]) for k, v in columns.items()})
            sys.stdout.write(json.dumps(row) + "\n")
    if args.metrics:
        Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics).write_text(json.dumps(metrics, indent=2))
    return 0



def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _print_summary(args: argparse.Namespace, episodes: Any, metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{args.method}" + (f" after {args.credit}" if args.credit else "")
    table = Table(title=f"{title} on {args.file}: {episodes.num_episodes} episodes, {episodes.num_steps} steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        v = metrics[k]
        table.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    Console(stderr=True).print(table)


# ------------------------------------------------------------------------------ entry point


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(
        prog="creditlab",
        description="Dense, trustworthy credit from sparse feedback: credit assignment, advantages, shaping, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"creditlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
    return parser


def _load_plugins() -> None:
    """Import modules that add subcommands (they may need optional dependencies)."""
    import importlib

    for mod in ("creditlab.bench.cli", "creditlab.programs.cli", "creditlab.llm.cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("creditlab"):
                continue
            raise


def _is_internal(exc: BaseException) -> bool:
    """A ValueError/TypeError raised by creditlab's own code (a bug) keeps its traceback;
    one raised while converting user input (numpy, torch, pyarrow) becomes a one-line error."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and "creditlab" in last.tb_frame.f_code.co_filename


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    _, _, run = COMMANDS[args.command]
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"creditlab {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        return int(run(args) or 0)
    except (CreditlabError, FileNotFoundError, ValueError, TypeError) as exc:
        if getattr(args, "debug", False) or not isinstance(exc, (CreditlabError, FileNotFoundError)) and _is_internal(exc):
            raise
        print(f"creditlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` etc.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
