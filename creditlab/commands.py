"""The core sub-commands: ``creditlab methods`` and ``creditlab advantages``.

Both are :class:`~creditlab.clikit.Command` records listed in the ``creditlab.commands``
entry-point group; the registry, the tables and rich are imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .clikit import Command, check_output_path, parse_sets
from .errors import CreditlabError

__all__ = ["advantages", "methods"]


# ------------------------------------------------------------------------------ methods


def _methods_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", help="only this family (advantage, normalization, shaping, credit, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_methods(args: argparse.Namespace) -> int:
    """Print every registered method (``--json``: as JSON) with its inputs and defaults."""
    from .registry import list_methods

    found = list_methods(family=args.family)
    if not found:
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
            for m in found
        ]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"creditlab methods ({len(found)})", show_lines=False)
    for col in ("name", "family", "output", "needs", "defaults", "description"):
        table.add_column(col, overflow="fold")
    for m in found:
        out = {"advantages": "advantages[B,T]", "rewards": "rewards[B,T]", "assigner": "assigner"}[m.kind]
        needs = ", ".join(n.replace("?", " (optional)").replace("|", " or ") for n in m.needs)
        defaults = ", ".join(f"{k}={v}" for k, v in m.params.items())
        table.add_row(m.name, m.family, out, needs, defaults, m.summary)
    Console(width=max(120, Console().width)).print(table)
    return 0


methods = Command("methods", "list every registered method, its inputs and defaults", _methods_args, run_methods)


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


def run_advantages(args: argparse.Namespace) -> int:
    """Per-step advantages of an episodes file, optionally after a credit method; rows out."""
    import numpy as np

    from .atomic import write_json
    from .episodes import Episodes
    from .registry import get_method
    from .tables import TABLE_SUFFIXES, read_table, step_records, write_back, write_table

    t0 = time.perf_counter()
    check_output_path(args.out, TABLE_SUFFIXES)
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
        shaped = credit(episodes, **parse_sets(args.credit_set, flag="--credit-set"))
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
    metrics["time/seconds"] = time.perf_counter() - t0
    _print_summary(args, episodes, metrics)
    if args.out:
        write_table(write_back(table, episodes.row_index, episodes.mask, columns), args.out)
        print(f"wrote {table.num_rows} rows with columns {list(columns)} to {args.out}", file=sys.stderr)
    else:
        for row in step_records(episodes.episode_ids, episodes.mask, columns):
            sys.stdout.write(json.dumps(row) + "\n")
    if args.metrics:
        write_json(args.metrics, metrics, indent=2)
    return 0


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


advantages = Command("advantages", "compute per-step advantages for an episodes file", _advantages_args, run_advantages)
