"""Building blocks of the ``creditlab`` command and its sub-commands (layer 0: imports nothing above).

A sub-command is a :class:`Command` record held by a module attribute and listed in the
``creditlab.commands`` entry-point group of a package's ``pyproject.toml``::

    [project.entry-points."creditlab.commands"]
    bench = "creditlab.bench.cli:bench"

``creditlab.cli.main`` loads that group, gives each command a sub-parser filled by
``add_arguments`` and calls ``run(args)`` for the one chosen. A command module imports only
light modules when it is loaded; heavy ones (training, plotting, Ray) inside ``run``.

The helpers below are the conventions every command follows (docs/conventions.md, "Command
line"):

* **lists** are comma-separated (``--methods rrd,lare``); a space-separated list (``--methods rrd
  lare``) and repeating the flag work too (:class:`ListAction`, :func:`add_list_option`);
* **parameters** are repeated ``--set key=value`` options (:func:`parse_sets`);
* **outputs** are named by ``--out`` (never an input), checked before any work is done
  (:func:`check_output_path`, :func:`check_output_dir`): a folder where a file is expected, a
  parent that is a file, a folder that cannot be written, an unknown file type, or an existing
  output without ``--force`` (:func:`add_force_option`) is a one-line error (exit 2). Sweep
  folders that a re-run resumes are the documented exception.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CreditlabError

__all__ = [
    "Command",
    "ListAction",
    "add_force_option",
    "add_list_option",
    "check_distinct_outputs",
    "check_output_dir",
    "check_output_path",
    "parse_list",
    "parse_seeds",
    "parse_sets",
    "parse_value",
]


@dataclass(frozen=True)
class Command:
    """One sub-command of ``creditlab``.

    Attributes:
        name: the word after ``creditlab`` (equal to the entry-point name).
        help: one line for ``creditlab --help``.
        add_arguments: fills the sub-command's ``argparse`` parser.
        run: ``run(args) -> exit code`` (0 = success); raises ``CreditlabError`` for bad input.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def parse_value(text: str) -> Any:
    """``--set key=value`` values: JSON where it parses (numbers, lists, true/false/null), else a string.

    Example:
        >>> parse_value("0.5"), parse_value("[1, 2]"), parse_value("true"), parse_value("group")
        (0.5, [1, 2], True, 'group')
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: Sequence[str] | None, *, flag: str = "--set") -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` options as a dict; dashes in keys become underscores.

    Example:
        >>> parse_sets(["gamma=0.9", "std-scale=batch"])
        {'gamma': 0.9, 'std_scale': 'batch'}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CreditlabError(f"{flag} expects key=value; got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def parse_list(text: str) -> list[str]:
    """A comma-separated list (``a,b, c``), empty items dropped; usable as an argparse ``type``.

    Example:
        >>> parse_list("rrd, lare,,uniform")
        ['rrd', 'lare', 'uniform']
    """
    return [x.strip() for x in text.split(",") if x.strip()]


class ListAction(argparse.Action):
    """An option taking a list: ``--x a,b``, ``--x a b`` and ``--x a --x b`` all give ``[a, b]``.

    ``item`` converts each entry (e.g. ``int``); a value that does not convert is a usage error
    naming the option. A default is replaced (not extended) by the first use of the option.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--seeds", action=ListAction, item=int, default=[0])
        >>> p.parse_args(["--seeds", "1,2", "3", "--seeds", "4"]).seeds, p.parse_args([]).seeds
        ([1, 2, 3, 4], [0])
    """

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        nargs: Any = "+",
        item: Callable[[str], Any] = str,
        **kwargs: Any,
    ):
        if kwargs.get("type") is not None:
            raise ValueError("ListAction converts entries with item=, not type=")
        kwargs.setdefault("metavar", "A,B")
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)
        self.item = item

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        texts = values if isinstance(values, list) else [values]
        items = []
        for text in texts:
            for entry in parse_list(str(text)):
                try:
                    items.append(self.item(entry))
                except (TypeError, ValueError):
                    parser.error(f"{option_string}: {entry!r} is not a valid {getattr(self.item, '__name__', 'value')}")
        if not items:
            parser.error(f"{option_string} expects at least one value (a comma-separated list)")
        current = getattr(namespace, self.dest, None)
        before = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, before + items)


def add_list_option(
    parser: argparse.ArgumentParser, *flags: str, item: Callable[[str], Any] = str, **kwargs: Any
) -> argparse.Action:
    """``parser.add_argument(*flags, action=ListAction, item=item, **kwargs)``: a list option."""
    return parser.add_argument(*flags, action=ListAction, item=item, **kwargs)


def parse_seeds(
    values: Sequence[str] | None, *, single_is_count: bool, flag: str = "--seeds"
) -> list[int] | int | None:
    """Seeds from a list option's raw entries.

    A list (``0,2,5`` or ``0 2 5``) is those seeds. A single number is a count (``3`` = seeds 0,
    1, 2) where ``single_is_count`` (``creditlab bench``), else that one seed (``creditlab demo``).

    Example:
        >>> parse_seeds(["0,2", "5"], single_is_count=True), parse_seeds(["3"], single_is_count=True)
        ([0, 2, 5], 3)
        >>> parse_seeds(["3"], single_is_count=False)
        [3]
    """
    if values is None:
        return None
    entries = [e for v in values for e in parse_list(str(v))]
    try:
        seeds = [int(e) for e in entries]
    except ValueError:
        raise CreditlabError(f"{flag} takes integers (a list 0,2,5); got {' '.join(values)!r}") from None
    if not seeds:
        raise CreditlabError(f"{flag} expects at least one seed")
    if single_is_count and len(values) == 1 and "," not in values[0]:
        if seeds[0] < 1:
            raise CreditlabError(f"{flag} {seeds[0]}: a count of seeds must be >= 1 (or give a list: {flag} 0,)")
        return seeds[0]
    return seeds


def add_force_option(parser: argparse.ArgumentParser) -> None:
    """The ``--force`` flag: overwrite output files that already exist."""
    parser.add_argument(
        "--force", action="store_true", help="overwrite output files that already exist (default: refuse)"
    )


def _check_writable_parent(p: Path, shown: str, flag: str) -> None:
    """The nearest existing ancestor of ``p`` must be a folder this process can write in."""
    anc = p.parent if str(p.parent) else Path(".")
    while not anc.exists() and not anc.is_symlink() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise CreditlabError(f"{flag} {shown}: {str(anc)!r} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise CreditlabError(f"{flag} {shown}: cannot write in {str(anc)!r} (permission denied)")


def check_output_path(
    path: str | os.PathLike | None, suffixes: Sequence[str] | None = None, *, flag: str = "--out", force: bool = False
) -> Path | None:
    """Check an output file name before the work starts (None passes through).

    Raises :class:`~creditlab.errors.CreditlabError` when the file type is not one of ``suffixes``
    (None: any), the path is a folder, a parent is a file or cannot be written, or the file
    exists and ``force`` is False.

    Example:
        >>> str(check_output_path("out.parquet", (".parquet", ".jsonl")))
        'out.parquet'
        >>> check_output_path("out.csv", (".parquet", ".jsonl"))
        Traceback (most recent call last):
        creditlab.errors.CreditlabError: --out 'out.csv': unknown output type; use a .parquet or .jsonl file name
    """
    if path is None:
        return None
    p = Path(path)
    shown = repr(str(path))
    if p.is_dir():
        raise CreditlabError(f"{flag} {shown} is a folder; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        kinds = " or ".join(suffixes[:2]) if len(suffixes) > 1 else suffixes[0]
        raise CreditlabError(f"{flag} {shown}: unknown output type; use a {kinds} file name")
    _check_writable_parent(p, shown, flag)
    if (p.exists() or p.is_symlink()) and not force:
        raise CreditlabError(f"{flag} {shown} already exists; pass --force to overwrite it")
    return p


def check_output_dir(
    path: str | os.PathLike | None, *, flag: str = "--out", force: bool = False, produces: Sequence[str] = ()
) -> Path | None:
    """Check an output folder before the work starts (None passes through).

    Raises :class:`~creditlab.errors.CreditlabError` when the path is a file, a parent is a file
    or cannot be written, or (without ``force``) the folder already holds one of the names in
    ``produces`` (the files the command writes there). A resumable sweep folder passes
    ``produces=()``: re-running the command continues it.
    """
    if path is None:
        return None
    p = Path(path)
    shown = repr(str(path))
    if p.exists() and not p.is_dir():
        raise CreditlabError(f"{flag} {shown} is a file; give a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise CreditlabError(f"{flag} {shown}: cannot write in it (permission denied)")
    else:
        _check_writable_parent(p, shown, flag)
    if not force:
        existing = [name for name in produces if (p / name).exists()]
        if existing:
            raise CreditlabError(
                f"{flag} {shown} already holds {', '.join(existing)}; pass --force to overwrite, or choose another folder"
            )
    return p


def check_distinct_outputs(paths: Mapping[str, str | os.PathLike | None]) -> None:
    """Two output options must not name the same file (``{flag: path}``; None entries are skipped).

    Example:
        >>> check_distinct_outputs({"--out": "a.jsonl", "--metrics": "./a.jsonl"})
        Traceback (most recent call last):
        creditlab.errors.CreditlabError: --out 'a.jsonl' and --metrics './a.jsonl' name the same file; give each its own
    """
    seen: dict[str, tuple[str, str]] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        key = os.path.normcase(os.path.abspath(os.fspath(path)))
        if key in seen:
            first, shown = seen[key]
            raise CreditlabError(f"{first} {shown!r} and {flag} {str(path)!r} name the same file; give each its own")
        seen[key] = (flag, str(path))
