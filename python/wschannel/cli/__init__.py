"""The command line: ``wschannel`` (the console script) and ``python -m wschannel``.

- ``wschannel connect URL``: send the lines typed (or piped) as text messages and print the
  messages received; exits when the connection ends, with a status that says how.
- ``wschannel serve``: an echo or chat server on a host and port or a Unix socket.
- ``wschannel bench``: the peer comparison (:mod:`wschannel.bench`).

docs/cli.md describes every option and exit status. Only the standard library is needed,
except for ``bench``'s plots (``pip install 'wschannel[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _connect, _serve

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``wschannel`` command and its three subcommands."""
    from ..bench import run as bench

    parser = argparse.ArgumentParser(
        prog="wschannel",
        description="WebSocket from the command line: a client, a server and the benchmarks.",
        epilog="`wschannel COMMAND --help` describes a command; docs/cli.md has examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, summary in (
        ("connect", _connect, "send lines typed or piped, print the messages received"),
        ("serve", _serve, "an echo or chat server"),
        ("bench", bench, "compare wschannel with the peer libraries installed"),
    ):
        command = commands.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(command_parser=command)  # for errors found after parsing
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("wschannel")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    command: argparse.ArgumentParser = args.command_parser
    if args.command == "bench":
        from ..bench import run as bench

        settings = bench.settings_from(args, command)
        return bench.run(settings, sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        return _serve.main(args, command)
    return _connect.main(args, command)
