"""``python -m creditlab_demo ACTION ...`` is ``creditlab demo ACTION ...``."""

import sys

from creditlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
