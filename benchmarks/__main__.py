"""``python -m benchmarks``: ``wschannel bench`` writing into ``benchmarks/results`` (or
``benchmarks/results-quick`` with ``--quick``), where docs/performance.md reads them."""

import sys
from pathlib import Path

from wschannel.bench.run import main

sys.exit(main(prog="python -m benchmarks", out=Path(__file__).resolve().parent / "results"))
