"""``python -m creditlab.llm.demo ACTION ...`` is ``creditlab demo ACTION ...``."""

import sys

from ...cli import main
from . import cli  # noqa: F401  (registers the subcommand)

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
