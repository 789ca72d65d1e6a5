"""``python -m wschannel``: the command line (:mod:`wschannel.cli`; ``wschannel --help``)."""

import sys

from .cli import main

if __name__ == "__main__":  # not again in the processes of `serve --workers` (spawned)
    sys.exit(main())
