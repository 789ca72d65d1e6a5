"""``python -m wschannel``: the command line (:mod:`wschannel.cli`; ``wschannel --help``)."""

import sys

from .cli import main

sys.exit(main())
