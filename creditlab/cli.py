"""The ``creditlab`` command: loads its sub-commands from the ``creditlab.commands`` entry points.

Each entry point names a :class:`~creditlab.clikit.Command` (creditlab's own are listed in its
``pyproject.toml``: ``methods``, ``advantages``, ``bench``, ``report``, ``program``, ``demo``; a
third-party package adds its own the same way). A command whose module fails to import is an
error (:class:`~creditlab.errors.PluginError` naming the entry point), never skipped.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .clikit import Command
from .errors import CreditlabError, PluginError

__all__ = ["COMMAND_GROUP", "build_parser", "load_commands", "main"]

COMMAND_GROUP = "creditlab.commands"


def load_commands() -> dict[str, Command]:
    """Every command of the ``creditlab.commands`` entry-point group, in the order they are listed.

    Raises :class:`~creditlab.errors.PluginError` naming the entry point when its module fails to
    import, when it is not a :class:`~creditlab.clikit.Command`, or when two commands share a name.
    """
    from importlib.metadata import entry_points

    commands: dict[str, Command] = {}
    for ep in entry_points(group=COMMAND_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(
                f"command {ep.name!r} ({ep.value}) of entry-point group {COMMAND_GROUP!r} failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(obj, Command) or obj.name != ep.name:
            raise PluginError(
                f"entry point {ep.name!r} ({ep.value}) of group {COMMAND_GROUP!r} must name a "
                f"creditlab.clikit.Command called {ep.name!r}; got {obj!r:.200}"
            )
        if ep.name in commands:
            raise PluginError(
                f"two entry points of group {COMMAND_GROUP!r} define the command {ep.name!r} (one is {ep.value})"
            )
        commands[ep.name] = obj
    return commands


def build_parser(commands: dict[str, Command] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command (default: :func:`load_commands`)."""
    commands = load_commands() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="creditlab",
        description="Dense, trustworthy credit from sparse feedback: credit assignment, advantages, shaping, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"creditlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in commands.items():
        sp = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(sp)
    return parser


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
    """Run ``creditlab ARGV``; returns the exit code (2 for bad input, with a one-line message)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        commands = load_commands()
    except PluginError as exc:
        if "--debug" in argv:
            raise
        print(f"creditlab: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    run = commands[args.command].run
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"creditlab {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    try:
        return int(run(args) or 0)
    except (CreditlabError, FileNotFoundError, ValueError, TypeError) as exc:
        if (
            getattr(args, "debug", False)
            or not isinstance(exc, (CreditlabError, FileNotFoundError))
            and _is_internal(exc)
        ):
            raise
        print(f"creditlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` etc.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
