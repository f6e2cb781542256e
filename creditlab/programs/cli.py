"""``creditlab program``: generate, check and evaluate LLM-written programs.

creditlab program generate SPEC --out DIR [--kind factors|reward] [--model M] [--base-url URL]
creditlab program check FILE [--spec SPEC | --obs-dim N --act-dim M]
creditlab program eval FILE --episodes DATA [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..clikit import Command, add_force_option, check_output_dir, check_output_path
from ..errors import CreditlabError

_GENERATED = ("program.py", "program.json", "provenance.json")


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds per sandboxed call (default 10)")
    p.add_argument(
        "--memory-mb", type=float, default=1024.0, help="address-space limit of the sandbox worker (default 1024)"
    )


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="program_command", metavar="SUBCOMMAND")
    g = sub.add_parser(
        "generate", help="ask an LLM for a program from a task spec; validate, select, save with provenance"
    )
    g.add_argument("spec", help="task spec file (.yaml/.yml/.json); see docs/programs.md")
    g.add_argument(
        "--out",
        required=True,
        help="output folder: program.py, program.json, provenance.json (existing ones need --force)",
    )
    g.add_argument(
        "--kind",
        choices=["factors", "reward"],
        default="factors",
        help="factors: LaRe latent factors (default); reward: dense reward code (Eureka/Text2Reward/Auto MC-Reward)",
    )
    g.add_argument(
        "--style", choices=["eureka", "text2reward", "auto_mc"], default="eureka", help="prompt style for --kind reward"
    )
    g.add_argument("--model", help="model name (else CREDITLAB_LLM_MODEL)")
    g.add_argument("--base-url", help="OpenAI-compatible endpoint (else CREDITLAB_LLM_BASE_URL / OPENAI_BASE_URL)")
    g.add_argument(
        "--cache-dir",
        help="response cache folder (default: CREDITLAB_LLM_CACHE or ~/.cache/creditlab/llm); '' disables it",
    )
    g.add_argument(
        "--cache-scope",
        help="share cached answers between endpoints under this name (default: answers are cached per "
        "endpoint URL, so two servers with the same model name never replay each other's answers)",
    )
    g.add_argument(
        "--n", type=int, default=5, help="candidates (LaRe n) or samples per iteration (Eureka K); default 5"
    )
    g.add_argument("--rounds", type=int, default=5, help="repair rounds per candidate (default 5)")
    g.add_argument("--no-merge", action="store_true", help="LaRe: skip the self-verification merge turn")
    g.add_argument("--iterations", type=int, default=1, help="reward refinement iterations (default 1)")
    g.add_argument("--critic", action="store_true", help="reward: Auto MC-Reward critic reviews each passing program")
    g.add_argument(
        "--analyzer", action="store_true", help="reward: Auto MC-Reward trajectory analyzer in the reflection"
    )
    g.add_argument(
        "--env-id",
        help="reward: Gymnasium id for selection by short PPO runs (default: the spec's env_id); "
        "'none': no training, the first passing program is chosen",
    )
    g.add_argument("--timesteps", type=int, default=20000, help="reward: PPO steps per candidate (default 20000)")
    g.add_argument(
        "--max-cost", type=float, help="stop requesting once this cost is spent (needs --price-in/--price-out)"
    )
    g.add_argument("--price-in", type=float, default=0.0, help="price per million prompt tokens")
    g.add_argument("--price-out", type=float, default=0.0, help="price per million completion tokens")
    g.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    g.add_argument("--max-tokens", type=int, help="completion length limit per answer (default: the endpoint's)")
    g.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature of the candidates (default 1.0, as the papers)",
    )
    g.add_argument(
        "--request-timeout", type=float, default=120.0, help="seconds allowed for one HTTP request (default 120)"
    )
    g.add_argument(
        "--no-progress", action="store_true", help="no live progress line on stderr (candidates, LLM answers, repairs)"
    )
    _sandbox_args(g)
    add_force_option(g)
    c = sub.add_parser("check", help="static and sandboxed validation of a program file, with the reasons")
    c.add_argument("file", help="program.py (or a folder holding one)")
    c.add_argument("--spec", help="task spec giving the probe batch (else --obs-dim/--act-dim, or program.json)")
    c.add_argument("--obs-dim", type=int)
    c.add_argument("--act-dim", type=int)
    c.add_argument("--kind", choices=["factors", "reward"], help="default: from program.json or the function defined")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    _sandbox_args(c)
    e = sub.add_parser("eval", help="per-step factors or rewards of a program for a dataset of episodes")
    e.add_argument("file", help="program.py (or a folder holding one)")
    e.add_argument("--episodes", required=True, help="episodes file (.parquet/.jsonl) with 'obs' and 'action' columns")
    e.add_argument(
        "--out",
        help="output file (.parquet/.jsonl): the input rows plus factor_<i> or program_reward (+ component.<name>)",
    )
    e.add_argument("--kind", choices=["factors", "reward"])
    _sandbox_args(e)
    add_force_option(e)


def _config(args: argparse.Namespace):
    from .sandbox import SandboxConfig

    return SandboxConfig(timeout=args.timeout, cpu_seconds=args.timeout, memory_mb=args.memory_mb)


def run_program(args: argparse.Namespace) -> int:
    sub = getattr(args, "program_command", None)
    if sub == "generate":
        return _generate(args)
    if sub == "check":
        return _check(args)
    if sub == "eval":
        return _eval(args)
    print("usage: creditlab program {generate,check,eval} ... (see creditlab program --help)", file=sys.stderr)
    return 2


def _generate(args: argparse.Namespace) -> int:
    from .client import LLMClient, LLMConfig
    from .selection import generate_lare_factors, refine_reward
    from .spec import load_spec

    check_output_dir(args.out, produces=_GENERATED, force=args.force)
    spec = load_spec(args.spec)
    env_id = _selection_env_id(args.env_id, spec.env_id) if args.kind == "reward" else None
    llm = LLMConfig(
        model=args.model,
        base_url=args.base_url,
        cache_dir=args.cache_dir,
        cache_scope=args.cache_scope,
        max_cost=args.max_cost,
        price_input=args.price_in,
        price_output=args.price_out,
        max_concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        timeout=args.request_timeout,
    )
    client = LLMClient(llm)
    config = _config(args)
    if args.kind == "factors":
        result = generate_lare_factors(
            spec,
            client,
            n_candidates=args.n,
            merge=not args.no_merge,
            repair_rounds=args.rounds,
            config=config,
            temperature=args.temperature,
            progress=not args.no_progress,
        )
    else:
        trainer = None
        if env_id:
            from .training import PPOTrainAndScore

            trainer = PPOTrainAndScore(env_id, spec=spec, total_timesteps=args.timesteps, config=config)
        result = refine_reward(
            spec,
            client,
            trainer,
            style=args.style,
            iterations=args.iterations,
            samples=args.n,
            repair_rounds=args.rounds,
            critic=args.critic,
            analyzer=args.analyzer,
            config=config,
            temperature=args.temperature,
            progress=not args.no_progress,
        )
    out = result.save(args.out)
    _print_generation(result, out)
    return 0 if result.program is not None else 1


def _selection_env_id(flag: str | None, spec_env_id: str | None) -> str | None:
    """The Gymnasium id reward programs are trained on for selection; None (``--env-id none``, or no
    id anywhere): no training, the first passing program is chosen. An unknown id is an error now,
    before any LLM call."""
    if flag is not None and flag.strip().lower() == "none":
        return None
    env_id = flag or spec_env_id
    if not env_id or ":" in env_id:  # "module:Env-v0" registers itself when gymnasium makes it
        return env_id
    import gymnasium as gym

    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        where = "--env-id" if flag else "the spec's env_id"
        raise CreditlabError(
            f"{where} {env_id!r} is not a registered Gymnasium environment ({exc}); pass --env-id none to "
            "choose the first passing program without training"
        ) from None
    return env_id


def _print_generation(result: Any, out: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .errors import printable

    table = Table(title=f"candidates (saved to {out})")
    for col in ("#", "role", "attempts", "result", "last problem"):
        table.add_column(col, overflow="fold")
    for c in result.candidates:
        last = c.attempts[-1].report if c.attempts else None
        status = "passed" if c.ok else (c.error and "error") or (last.failure_kind if last else "no answer")
        problem = "" if c.ok else (c.error or (last.problems[0] if last and last.problems else ""))
        if c.score is not None:
            status += f" (fitness {c.score.fitness:.4g})"
        table.add_row(
            str(c.index), c.role, str(len(c.attempts)), status, escape(printable(problem, one_line=True, limit=200))
        )
    con = Console(stderr=True)
    con.print(table)
    m = result.metrics
    con.print(
        f"HTTP calls {int(m.get('llm/calls', 0))}, cache hits {int(m.get('llm/cache_hits', 0))}, "
        f"tokens {int(m.get('llm/prompt_tokens', 0))}+{int(m.get('llm/completion_tokens', 0))}, cost {m.get('llm/cost', 0.0):.4g}"
    )
    if result.program is None:
        con.print("no candidate passed validation; nothing chosen (provenance.json records why)")
    else:
        con.print(f"chosen: {result.program.kind} program, sha256 {result.program.sha256[:12]}")


def _load_for_cli(args: argparse.Namespace):
    from .program import load_program

    return load_program(args.file, kind=getattr(args, "kind", None))


def _check(args: argparse.Namespace) -> int:
    import numpy as np

    from .errors import printable
    from .spec import load_spec
    from .validate import check_program

    prog = _load_for_cli(args)
    if args.spec:
        spec = load_spec(args.spec)
        obs, act = spec.probe_batch()
    else:
        od = args.obs_dim or prog.obs_dim
        ad = args.act_dim or prog.act_dim
        if not od or not ad:
            raise CreditlabError("the probe batch needs the input sizes: pass --spec SPEC, or --obs-dim and --act-dim")
        rng = np.random.default_rng(0)
        obs, act = rng.standard_normal((16, od)), rng.standard_normal((16, ad))
        obs[0] = 0.0
        act[0] = 0.0
    report = check_program(prog.code, prog.kind, obs, act, config=_config(args))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))  # JSON escapes every control character
    else:
        # Program-provided text (problems, component names) is escaped: one line each, no terminal control.
        status = "PASSED" if report.ok else f"REJECTED ({report.failure_kind} at stage {report.stage})"
        print(
            f"{printable(args.file, one_line=True)}: {prog.kind} program ({prog.entry}), origin {prog.origin}: {status}"
        )
        for p in report.problems:
            print(f"  problem: {printable(p, one_line=True, limit=4000)}")
        for n in report.notes:
            print(f"  note: {printable(n, one_line=True, limit=4000)}")
        if report.ok and prog.kind == "factors":
            print(f"  factors: {report.num_factors}")
        if report.ok and report.component_names:
            print(f"  components: {printable(', '.join(report.component_names), one_line=True)}")
        if report.layers:
            print(
                "  sandbox layers: " + printable("; ".join(f"{k} {v}" for k, v in report.layers.items()), one_line=True)
            )
    return 0 if report.ok else 1


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from ..episodes import Episodes
    from ..tables import TABLE_SUFFIXES, read_table, step_records, write_back, write_table
    from .loaders import SandboxedReward, lare_features

    check_output_path(args.out, TABLE_SUFFIXES, force=args.force)
    prog = _load_for_cli(args)
    table = read_table(args.episodes)
    eps = Episodes.from_table(table, source=str(args.episodes))
    eps.require("observations", "actions", method="program eval")
    mask = np.asarray(eps.mask)
    obs = np.asarray(eps.observations, dtype=np.float64)
    act = np.asarray(eps.actions, dtype=np.float64)
    if act.ndim == 2:
        act = act[..., None]
    obs_flat = obs[mask].reshape(int(mask.sum()), -1)
    act_flat = act[mask].reshape(int(mask.sum()), -1)
    columns: dict[str, np.ndarray] = {}
    config = _config(args)
    if prog.kind == "factors":
        with lare_features(prog, config=config) as phi:
            feats = phi(obs_flat, act_flat)
        for j in range(feats.shape[1]):
            columns[f"factor_{j}"] = feats[:, j]
    else:
        if eps.next_observations is not None:
            nxt = np.asarray(eps.next_observations, dtype=np.float64)[mask].reshape(obs_flat.shape)
        else:
            # s_{t+1} is the next step's observation; the last step of an episode repeats its own
            lengths = mask.sum(1)
            idx = np.minimum(np.arange(mask.shape[1])[None, :] + 1, np.maximum(lengths[:, None] - 1, 0))
            nxt = obs[np.arange(mask.shape[0])[:, None], idx][mask].reshape(obs_flat.shape)
        with SandboxedReward(prog, config=config) as rf:
            total, comps = rf(obs_flat, act_flat, nxt)
        columns["program_reward"] = total
        for k, v in comps.items():
            columns[f"component.{k}"] = v
    # one value per valid step, in the row-major order of the mask
    if args.out:
        write_table(write_back(table, eps.row_index, mask, columns), args.out)
        print(f"wrote {table.num_rows} rows with columns {list(columns)} to {args.out}", file=sys.stderr)
    else:
        for row in step_records(eps.episode_ids, mask, columns):
            sys.stdout.write(json.dumps(row) + "\n")
    return 0


program = Command(
    "program", "LLM-written reward / latent-factor programs: generate, check, eval (sandboxed)", _args, run_program
)
