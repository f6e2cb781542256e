"""The core sub-commands: ``creditlab methods`` and ``creditlab advantages``.

Both are :class:`~creditlab.clikit.Command` records listed in the ``creditlab.commands``
entry-point group; the registry, the tables and rich are imported when a command runs.

``creditlab advantages FILE --credit NAME`` with a learned credit assigner (``rd``, ``rrd``,
``lare``, ``rudder``, ...) fits it on the file's episodes first. :func:`fit_assigner` is that
fitting loop (a fixed number of updates, or early stopping on a held-out split) for Python
users too; it drives an assigner only through its public protocol (``fit(episodes,
num_updates=)``, ``assign``, ``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .clikit import (
    Command,
    add_force_option,
    check_distinct_outputs,
    check_output_path,
    parse_sets,
)
from .errors import CreditlabError, MissingColumnError, RangeError

__all__ = ["DEFAULT_HOLDOUT_UPDATES", "FitReport", "advantages", "fit_assigner", "methods", "updates_for_epochs"]

DEFAULT_HOLDOUT_UPDATES = 1000
"""Update budget of :func:`fit_assigner` with a held-out split when none is given (early stopping ends it sooner)."""


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


# ------------------------------------------------------------------------------ fitting an assigner


class FitReport(NamedTuple):
    """What :func:`fit_assigner` did.

    Attributes:
        metrics: the last ``fit`` call's metrics plus ``credit/updates_run`` (updates taken in
            all), and with a held-out split ``credit/holdout_loss`` (best), ``credit/holdout_episodes``,
            ``credit/best_updates`` (updates at the best evaluation, the state kept) and
            ``credit/stopped_early`` (1.0 when patience ran out before the budget).
        history: one ``(updates, train_loss, holdout_loss)`` per evaluation (empty without a
            held-out split); ``train_loss`` is the assigner's own loss (NaN if it reports none).
    """

    metrics: dict[str, float]
    history: list[tuple[int, float, float]]


def updates_for_epochs(epochs: float, num_episodes: int, batch_episodes: int | None) -> int:
    """Gradient updates for ``epochs`` passes over ``num_episodes`` training episodes.

    An assigner that samples ``batch_episodes`` episodes per update (rd, rrd, lare, rudder) needs
    ``ceil(num_episodes / batch_episodes)`` updates per epoch; a full-batch one (``None``) one.

    Example (100 episodes, 4 per update: 25 updates per epoch):
        >>> updates_for_epochs(3, 100, 4), updates_for_epochs(3, 100, None)
        (75, 3)
    """
    if not epochs > 0:
        raise RangeError(f"epochs must be > 0; got {epochs}")
    per_epoch = 1 if not batch_episodes else math.ceil(max(num_episodes, 1) / int(batch_episodes))
    return max(1, math.ceil(epochs * per_epoch))


def _episode_returns(episodes: Any) -> tuple[Any, Any]:
    """float64[B] returns (the outcome where given, else the sum of step rewards) and bool[B] known."""
    import numpy as np

    e = episodes.numpy() if episodes.is_torch else episodes
    if e.outcomes is not None:
        present = np.asarray(e.outcome_present, dtype=bool)
        return np.where(present, np.asarray(e.outcomes, dtype=np.float64), 0.0), present
    return np.asarray(e.rewards, dtype=np.float64).sum(axis=1), np.ones(e.num_episodes, dtype=bool)


def _hide_feedback(episodes: Any) -> Any:
    """The batch with every episode's feedback removed (outcome missing, step rewards 0): what an
    assigner credits then is its own prediction, without the residual that would restore R."""
    import numpy as np

    e = episodes.numpy() if episodes.is_torch else episodes
    b = e.num_episodes
    return e.replace(
        rewards=np.zeros_like(np.asarray(e.rewards)),
        reward_present=None,
        outcomes=np.zeros(b),
        outcome_present=np.zeros(b, dtype=bool),
        components=None,
        component_present=None,
        component_names=(),
        extras={},
    )


def _holdout_loss(assigner: Any, hidden: Any, returns: Any, known: Any) -> float:
    """``mean_b ((sum_t r_hat_bt - R_b) / T_b)^2`` over held-out episodes with a return: the
    return-decomposition loss of what the assigner credits when it does not see R."""
    import numpy as np

    out = assigner.assign(hidden)
    r = out.rewards.detach().cpu().numpy() if hasattr(out.rewards, "detach") else np.asarray(out.rewards)
    mask = np.asarray(hidden.mask, dtype=bool)
    total = np.where(mask, r, 0.0).sum(axis=1, dtype=np.float64)
    lengths = mask.sum(axis=1)
    err = ((total - returns) / lengths)[known]
    return float(np.mean(err**2))


def _updates_in(metrics: dict[str, float]) -> float | None:
    for key in ("credit/updates", "spa/epochs"):
        if key in metrics:
            return float(metrics[key])
    return None


def _train_loss(metrics: dict[str, float]) -> float:
    for key in ("credit/loss", "spa/loss"):
        if key in metrics:
            return float(metrics[key])
    return float("nan")


def fit_assigner(
    assigner: Any,
    episodes: Any,
    *,
    num_updates: int | None = None,
    holdout: float = 0.0,
    eval_every: int | None = None,
    patience: int = 5,
    seed: int = 0,
    log: Callable[[int, int, float, float, bool], None] | None = None,
) -> FitReport:
    """Fit a credit assigner on a batch, optionally with early stopping on a held-out split.

    Without ``holdout``: one ``assigner.fit(episodes, num_updates=num_updates)`` (``None``: the
    assigner's own default, ``updates_per_fit``).

    With ``holdout`` in (0, 1): that fraction of the episodes (a random split, ``seed``) is kept
    out of training. Training runs ``num_updates`` updates in all (default
    :data:`DEFAULT_HOLDOUT_UPDATES`), ``eval_every`` at a time (default budget / 20); after each
    chunk the held-out loss is evaluated: ``mean_b ((sum_t r_hat_bt - R_b) / T_b)^2`` over the
    held-out episodes with a return, where ``r_hat`` is what the assigner credits when their
    feedback is hidden from it (so no residual correction can restore R). Training stops when
    ``patience`` evaluations in a row do not improve on the best, and the assigner is put back
    to its state at the best evaluation (``load_state_dict``).

    Only the assigner protocol is used (``fit``, ``assign``, ``state_dict``,
    ``load_state_dict``). An assigner that keeps its episodes (a store) continues with
    ``fit(None, num_updates=...)``; one without memory is given the training episodes again.

    Args:
        assigner: a credit assigner (``get_method(name).factory(**params)``, ``load_assigner``).
        episodes: the batch (an :class:`~creditlab.Episodes` with observations and actions for
            the learned assigners).
        num_updates: gradient updates in all (see above).
        holdout: fraction of the episodes held out for early stopping (0: no split).
        eval_every: updates between held-out evaluations.
        patience: evaluations without improvement before stopping.
        seed: seed of the split.
        log: called after each evaluation as ``log(updates, budget, train_loss, holdout_loss,
            improved)`` (the CLI prints it; library code does not).

    Returns:
        :class:`FitReport`.
    """
    import numpy as np

    if not 0.0 <= float(holdout) < 1.0:
        raise RangeError(f"holdout must be a fraction in [0, 1); got {holdout}")
    if num_updates is not None and int(num_updates) < 0:
        raise RangeError(f"num_updates must be >= 0; got {num_updates}")
    if int(patience) < 1:
        raise RangeError(f"patience must be >= 1 evaluation; got {patience}")
    if eval_every is not None and int(eval_every) < 1:
        raise RangeError(f"eval_every must be >= 1 update; got {eval_every}")
    if holdout == 0.0:
        metrics = dict(assigner.fit(episodes, num_updates=num_updates))
        metrics["credit/updates_run"] = _updates_in(metrics) or 0.0
        return FitReport(metrics, [])

    b = episodes.num_episodes
    n_held = int(round(holdout * b))
    returns, known = _episode_returns(episodes)
    order = np.random.default_rng(seed).permutation(b)
    held_idx, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    if n_held < 1 or train_idx.size < 1 or not known[held_idx].any():
        raise RangeError(
            f"holdout {holdout} of {b} episodes leaves {n_held} held out ({int(known[held_idx].sum())} with a return) and "
            f"{train_idx.size} for training; each side needs at least one episode (and the held-out side one with a return)"
        )
    train = episodes.select(train_idx)
    hidden = _hide_feedback(episodes.select(held_idx))
    held_returns, held_known = returns[held_idx], known[held_idx]

    budget = DEFAULT_HOLDOUT_UPDATES if num_updates is None else int(num_updates)
    if budget < 1:
        raise RangeError("a held-out split stops training early: it needs an update budget >= 1")
    every = int(eval_every) if eval_every is not None else max(1, budget // 20)
    best, best_at, best_state, bad = math.inf, 0, None, 0
    done, stopped, memory = 0, False, True
    history: list[tuple[int, float, float]] = []
    metrics: dict[str, float] = {}
    while done < budget:
        k = min(every, budget - done)
        if done == 0 or not memory:
            metrics = dict(assigner.fit(train, num_updates=k))
        else:
            metrics = dict(assigner.fit(None, num_updates=k))
            if _updates_in(metrics) == 0.0:  # no episode memory (e.g. SPA): give it the batch again
                memory = False
                metrics = dict(assigner.fit(train, num_updates=k))
        done += k
        loss = _holdout_loss(assigner, hidden, held_returns, held_known)
        improved = loss < best
        history.append((done, _train_loss(metrics), loss))
        if log is not None:
            log(done, budget, _train_loss(metrics), loss, improved)
        if improved:
            best, best_at, bad = loss, done, 0
            best_state = copy.deepcopy(assigner.state_dict())
        else:
            bad += 1
            if bad >= int(patience):
                stopped = True
                break
    if best_state is not None and best_at != done:
        assigner.load_state_dict(best_state)
    for key in ("credit/updates", "credit/total_updates", "spa/epochs"):  # counts of the last chunk only
        metrics.pop(key, None)
    metrics.update(
        {
            "credit/updates_run": float(done),
            "credit/holdout_loss": float(best),
            "credit/holdout_episodes": float(held_known.sum()),
            "credit/best_updates": float(best_at),
            "credit/stopped_early": 1.0 if stopped else 0.0,
        }
    )
    return FitReport(metrics, history)


# ------------------------------------------------------------------------------ advantages

_FIT_FLAGS = ("updates", "epochs", "holdout", "eval_every", "patience", "save_assigner", "load_assigner")


def _advantages_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="episodes file (.parquet or .jsonl), one row per step; see docs/data-format.md")
    p.add_argument(
        "--method",
        required=True,
        help="a method whose output is advantages (families advantage and normalization; see `creditlab methods`)",
    )
    p.add_argument(
        "--credit",
        help="optional reward transform / credit method applied first (e.g. delta_process, gated_accumulation, uniform, rrd); "
        "its per-step rewards then feed the advantage method",
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="parameter of --method (repeatable), e.g. --set gamma=0.99"
    )
    p.add_argument("--credit-set", action="append", metavar="KEY=VALUE", help="parameter of --credit (repeatable)")
    o = p.add_argument_group("outputs (checked before any work; an existing file needs --force)")
    o.add_argument(
        "--out",
        help="output file (.parquet or .jsonl): the input rows plus 'advantage' (and 'return', 'credit_reward') columns; "
        "default: one JSON object per step on stdout",
    )
    o.add_argument("--metrics", help="also write the metrics as JSON to this file")
    o.add_argument(
        "--tokens",
        metavar="PATH",
        help="also write per-token advantages (.parquet or .jsonl, one row per episode: "
        "episode_id, token_advantages) from the file's 'response_mask' (+ 'turn_ids') columns",
    )
    add_force_option(o)
    f = p.add_argument_group("fitting a learned --credit assigner (rd, rrd, lare, rudder, ...)")
    n = f.add_mutually_exclusive_group()
    n.add_argument(
        "--updates",
        type=int,
        metavar="N",
        help="gradient updates (default: the assigner's updates_per_fit; "
        f"with --holdout: {DEFAULT_HOLDOUT_UPDATES}, early stopping may end sooner)",
    )
    n.add_argument(
        "--epochs",
        type=float,
        metavar="E",
        help="passes over the training episodes instead of --updates "
        "(ceil(episodes / batch_episodes) updates per epoch)",
    )
    f.add_argument(
        "--holdout",
        type=float,
        metavar="FRACTION",
        help="hold out this fraction of the episodes (e.g. 0.2) and stop "
        "early on its loss, printed at every evaluation; the best state is kept",
    )
    f.add_argument(
        "--eval-every", type=int, metavar="N", help="updates between held-out evaluations (default: budget / 20)"
    )
    f.add_argument(
        "--patience", type=int, metavar="K", help="evaluations without improvement before stopping (default 5)"
    )
    f.add_argument("--save-assigner", metavar="PATH", help="save the fitted assigner (creditlab.credit.save_assigner)")
    f.add_argument(
        "--load-assigner",
        metavar="PATH",
        help="start from a saved assigner instead of a new one (--credit optional); "
        "it is not refitted unless --updates, --epochs or --holdout is given",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads (default 1: the fastest for these small models on a "
        "shared machine: 3.6x faster than two threads for 1,000 RRD updates under load)",
    )


def _check_args(args: argparse.Namespace) -> None:
    """Every check that needs no data: flags, ranges and output paths (exit 2 before any work)."""
    from pathlib import Path

    from .tables import TABLE_SUFFIXES

    force = bool(getattr(args, "force", False))
    check_output_path(args.out, TABLE_SUFFIXES, flag="--out", force=force)
    check_output_path(args.metrics, None, flag="--metrics", force=force)
    check_output_path(args.tokens, TABLE_SUFFIXES, flag="--tokens", force=force)
    check_output_path(args.save_assigner, None, flag="--save-assigner", force=force)
    check_distinct_outputs(
        {"--out": args.out, "--metrics": args.metrics, "--tokens": args.tokens, "--save-assigner": args.save_assigner}
    )
    if args.updates is not None and args.updates < 0:
        raise CreditlabError(f"--updates must be >= 0; got {args.updates}")
    if args.epochs is not None and not args.epochs > 0:
        raise CreditlabError(f"--epochs must be > 0; got {args.epochs}")
    if args.holdout is not None and not 0.0 < args.holdout < 1.0:
        raise CreditlabError(f"--holdout is a fraction of the episodes in (0, 1), e.g. 0.2; got {args.holdout}")
    for flag, value in (("--eval-every", args.eval_every), ("--patience", args.patience)):
        if value is not None and value < 1:
            raise CreditlabError(f"{flag} must be >= 1; got {value}")
    if args.holdout is None and (args.eval_every is not None or args.patience is not None):
        raise CreditlabError(
            "--eval-every and --patience control early stopping on a held-out split; add --holdout FRACTION"
        )
    if args.load_assigner is not None and not Path(args.load_assigner).is_file():
        raise CreditlabError(f"--load-assigner {args.load_assigner!r}: no such file")
    given = [f"--{name.replace('_', '-')}" for name in _FIT_FLAGS if getattr(args, name) is not None]
    if given and not args.credit and args.load_assigner is None:
        raise CreditlabError(
            f"{', '.join(given)} fit a credit assigner; choose one with --credit NAME (e.g. rrd) or --load-assigner PATH"
        )


def _print_fit(updates: int, budget: int, train_loss: float, holdout_loss: float, improved: bool) -> None:
    train = "" if math.isnan(train_loss) else f"  train loss {train_loss:.6g}"
    mark = "  (best)" if improved else ""
    print(
        f"credit fit: {updates}/{budget} updates{train}  held-out loss {holdout_loss:.6g}{mark}",
        file=sys.stderr,
        flush=True,
    )


def _credit_assigner(args: argparse.Namespace, episodes: Any, metrics: dict[str, float]) -> Any:
    """Build (or load), fit as asked, and save the assigner; returns its ``assign`` output."""
    from .credit import load_assigner, save_assigner
    from .errors import UnknownMethodError
    from .registry import check_need, get_method

    params = parse_sets(args.credit_set, flag="--credit-set")
    if args.load_assigner is not None:
        try:
            assigner = load_assigner(args.load_assigner, **params)
        except CreditlabError:
            raise
        except Exception as exc:  # not a file save_assigner wrote (pickle, zip or key errors)
            raise CreditlabError(
                f"--load-assigner {args.load_assigner!r}: not a saved credit assigner ({type(exc).__name__}: {exc})"
            ) from exc
        name = getattr(assigner, "name", None)
        if args.credit and name is not None and name != args.credit:
            raise CreditlabError(
                f"--load-assigner {args.load_assigner!r} holds a {name!r} assigner but --credit is {args.credit!r}"
            )
        try:
            method = get_method(name) if name else None
        except UnknownMethodError:
            method = None
        refit = args.updates is not None or args.epochs is not None or args.holdout is not None
        defaults: dict[str, Any] = {}
    else:
        method = get_method(args.credit)
        unknown = sorted(set(params) - set(method.params))
        if unknown:
            raise CreditlabError(
                f"--credit {args.credit!r} has no parameter(s) {unknown}; its parameters are {sorted(method.params)}"
            )
        assigner = method.factory(**params)
        defaults = {**method.params, **params}
        refit = True
    for need in method.needs if method is not None else ():
        check_need(episodes, need, method.name)
    if refit:
        num_updates = args.updates
        if args.epochs is not None:
            _, known = _episode_returns(episodes)
            n_train = int(known.sum()) - int(round((args.holdout or 0.0) * int(known.sum())))
            num_updates = updates_for_epochs(args.epochs, n_train, _batch_episodes(assigner, defaults))
        report = fit_assigner(
            assigner,
            episodes,
            num_updates=num_updates,
            holdout=args.holdout or 0.0,
            eval_every=args.eval_every,
            patience=args.patience if args.patience is not None else 5,
            log=_print_fit,
        )
        metrics.update(_credit_keys(report.metrics))
    else:
        metrics["credit/updates_run"] = 0.0
    if args.save_assigner:
        save_assigner(assigner, args.save_assigner)
        print(f"saved the assigner to {args.save_assigner}", file=sys.stderr)
    out = assigner.assign(episodes)
    metrics.update(_credit_keys(out.metrics))
    return out


def _batch_episodes(assigner: Any, params: dict[str, Any]) -> int | None:
    """Episodes per update: from the parameters, else the assigner's saved config; None = full batch."""
    if params.get("batch_episodes") is not None:
        return int(params["batch_episodes"])
    try:
        config = assigner.state_dict().get("config", {})
    except Exception:  # an assigner that cannot report its state before training
        return None
    value = config.get("batch_episodes") if isinstance(config, dict) else None
    return int(value) if value is not None else None


def _credit_keys(metrics: dict[str, float]) -> dict[str, float]:
    return {(k if k.startswith(("credit/", "store/")) else f"credit/{k}"): v for k, v in metrics.items()}


def run_advantages(args: argparse.Namespace) -> int:
    """Per-step advantages of an episodes file, optionally after a credit method; rows out."""
    import torch

    if args.threads < 1:
        raise CreditlabError(f"--threads must be >= 1; got {args.threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _advantages(args)
    finally:
        torch.set_num_threads(before)  # callers of creditlab.cli.main in-process keep their setting


def _advantages(args: argparse.Namespace) -> int:
    import numpy as np

    from .atomic import write_json
    from .episodes import Episodes
    from .registry import get_method
    from .tables import read_table, step_records, write_back, write_table

    t0 = time.perf_counter()
    _check_args(args)
    method = get_method(args.method)
    if method.kind != "advantages":
        raise CreditlabError(
            f"{args.method!r} is a {method.family} method producing {method.kind}; pass it as --credit and choose an "
            "advantage --method (e.g. --credit delta_process --method reinforce_pp)"
        )
    credit = get_method(args.credit) if args.credit else None
    if credit is not None and (credit.kind not in ("rewards", "assigner") or credit.run is None):
        raise CreditlabError(
            f"--credit {args.credit!r} is not a reward transform or credit assigner (kind {credit.kind!r})"
        )
    if credit is not None and credit.kind == "rewards":
        fit_flags = [f"--{name.replace('_', '-')}" for name in _FIT_FLAGS if getattr(args, name) is not None]
        if fit_flags:
            raise CreditlabError(
                f"--credit {args.credit!r} is a reward transform with nothing to fit; {', '.join(fit_flags)} apply to credit assigners"
            )
    if (credit is not None or args.load_assigner) and "components" in method.needs:
        raise CreditlabError(
            f"--method {args.method!r} normalizes the episode-level reward components and would ignore the per-step "
            f"rewards --credit {args.credit or args.load_assigner!r} produces; use a step-level method (gae, monte_carlo, "
            "reinforce_pp) or a group method on the credited return (grpo, rloo, ...)"
        )
    table = read_table(args.file)
    if args.tokens and "response_mask" not in table.column_names:
        raise MissingColumnError(
            f"--tokens needs the token layout: {args.file} has no 'response_mask' column (per episode, one 0/1 per token; "
            "see docs/data-format.md)"
        )
    episodes = Episodes.from_table(table, source=str(args.file))
    metrics: dict[str, float] = {}
    columns: dict[str, Any] = {}
    if credit is not None or args.load_assigner:
        if credit is not None and credit.kind == "rewards":
            shaped = credit(episodes, **parse_sets(args.credit_set, flag="--credit-set"))
            metrics.update(_credit_keys(shaped.metrics))
        else:
            shaped = _credit_assigner(args, episodes, metrics)
        rewards = np.asarray(shaped.rewards.detach().cpu() if hasattr(shaped.rewards, "detach") else shaped.rewards)
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
    token_table = _token_advantages(table, episodes, columns["advantage"], str(args.file)) if args.tokens else None
    metrics["time/seconds"] = time.perf_counter() - t0
    _print_summary(args, episodes, metrics)
    if args.out:
        write_table(write_back(table, episodes.row_index, episodes.mask, columns), args.out)
        print(f"wrote {table.num_rows} rows with columns {list(columns)} to {args.out}", file=sys.stderr)
    else:
        for row in step_records(episodes.episode_ids, episodes.mask, columns):
            sys.stdout.write(json.dumps(row) + "\n")
    if token_table is not None:
        write_table(token_table, args.tokens)
        print(f"wrote per-token advantages of {token_table.num_rows} episodes to {args.tokens}", file=sys.stderr)
    if args.metrics:
        write_json(args.metrics, metrics, indent=2)
    return 0


def _token_advantages(table: Any, episodes: Any, advantages: Any, source: str) -> Any:
    """One row per episode: ``episode_id`` (+ ``group_id``) and ``token_advantages`` (float[L_b]),
    the episode's per-turn advantages on every policy token of the turn, 0 on the other tokens."""
    import numpy as np
    import pyarrow as pa

    from .llm import TurnBatch
    from .tables import token_layout

    layout = token_layout(table, episodes.row_index, episodes.mask, source=source, episode_ids=episodes.episode_ids)
    assert layout is not None  # checked before the work
    turn_ids, response_mask, lengths = layout
    tb = TurnBatch.from_padded(
        np.asarray(episodes.rewards, dtype=np.float64),
        np.asarray(episodes.mask),
        turn_ids=turn_ids,
        response_mask=response_mask,
    )
    tokens = np.asarray(tb.to_tokens(np.asarray(advantages, dtype=np.float64)))
    ids = np.asarray(episodes.episode_ids)
    data: dict[str, Any] = {"episode_id": pa.array(ids.tolist())}
    if episodes.group_ids is not None:
        data["group_id"] = pa.array(np.asarray(episodes.group_ids).tolist())
    data["token_advantages"] = pa.array(
        [tokens[b, : lengths[b]].tolist() for b in range(tokens.shape[0])], type=pa.list_(pa.float64())
    )
    return pa.table(data)


def _print_summary(args: argparse.Namespace, episodes: Any, metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    credit = args.credit or (f"the assigner in {args.load_assigner}" if args.load_assigner else None)
    title = f"{args.method}" + (f" after {credit}" if credit else "")
    table = Table(title=f"{title} on {args.file}: {episodes.num_episodes} episodes, {episodes.num_steps} steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        v = metrics[k]
        table.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    Console(stderr=True).print(table)


advantages = Command("advantages", "compute per-step advantages for an episodes file", _advantages_args, run_advantages)
