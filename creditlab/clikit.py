"""Building blocks of the ``creditlab`` command and its sub-commands (layer 0: imports nothing above).

A sub-command is a :class:`Command` record held by a module attribute and listed in the
``creditlab.commands`` entry-point group of a package's ``pyproject.toml``::

    [project.entry-points."creditlab.commands"]
    bench = "creditlab.bench.cli:bench"

``creditlab.cli.main`` loads that group, gives each command a sub-parser filled by
``add_arguments`` and calls ``run(args)`` for the one chosen. A command module imports only
light modules when it is loaded; heavy ones (training, plotting, Ray) inside ``run``.

The helpers below are the conventions commands share: ``--set key=value`` parameters, comma
lists, and output paths checked before any work is done.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CreditlabError

__all__ = ["Command", "check_output_path", "parse_list", "parse_sets", "parse_value"]


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


def check_output_path(path: str | None, suffixes: Sequence[str], *, flag: str = "--out") -> Path | None:
    """Check an output file name before the work starts (None passes through).

    Raises :class:`~creditlab.errors.CreditlabError` when the file type is not one of ``suffixes``
    or the path is an existing folder.

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
    if p.suffix.lower() not in suffixes:
        kinds = " or ".join(suffixes[:2]) if len(suffixes) > 1 else suffixes[0]
        raise CreditlabError(f"{flag} {path!r}: unknown output type; use a {kinds} file name")
    if p.is_dir():
        raise CreditlabError(f"{flag} {path!r} is a folder; give a file name")
    return p
