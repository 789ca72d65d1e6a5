"""Count the lines of lifecycle code in each driver (issue 11's "Done when" measure).

Issue 11 moved the connection's lifecycle (close handshake, who closes TCP, keepalive, the
close deadline, the close code, replies owed before the close echo, pausing reading) into the
engine's session core; the Python drivers translate. This script counts what is left in the
drivers, so that anyone can reproduce the table::

    python scripts/lifecycle_lines.py              # the working tree
    python scripts/lifecycle_lines.py --rev f680bd0 # a commit (git show REV:path)
    python scripts/lifecycle_lines.py --rev HEAD -v # and each method's count

What counts: the code lines (no blank lines, no comment lines, no docstrings, counted with
:mod:`ast` and :mod:`tokenize`) of the methods listed in :data:`DRIVERS` -- the methods that
decide or carry out the lifecycle: the session's hooks, the session's inputs (EOF, connection
lost, the user's close, writes waiting), the read loops, and, before the session core, the
timers, control-frame handling and close logic they replaced. A method listed but missing at
a revision counts 0, so one list serves every revision. The platform wrappers (adapter,
browser) count their sinks as whole classes; since they share ``PendingSink`` with no
subclass, what the browser's channel writes in their place, the translation of its
``WebSocket`` into the sink's target (``_BrowserSocket``), is counted instead.

What does not count: the shared bases written once for every driver (``_driver.py``
``SessionDriver``, ``_channel_driver.py`` ``ChannelDriver``, ``_sink.py`` ``PendingSink``,
``_tasks.py`` ``Gate``); they are shown below the table for reference, with their sum, so
that code moved from the drivers into them shows. A method a driver keeps only to call the base
is counted like any other.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = "python/wschannel/"

#: The session's hooks (wschannel._driver.SessionDriver) and its inputs, by their names in
#: the drivers that implement them.
_HOOKS = (
    "write",
    "report_close",
    "stop_sending",
    "pause_reading",
    "resume_reading",
    "await_consumer",
    "sample_unsent",
    "end_stream",
    "half_close",
    "close_transport",
    "abort",
    "finish",
    "unsent",
    "call_later",
    "session_timed_out",
)

#: driver -> [(path, class, methods (None: the whole class))]
DRIVERS: dict[str, list[tuple[str, str, tuple[str, ...] | None]]] = {
    "io.py": [
        (
            "io.py",
            "_WebSocketProtocol",
            (
                *_HOOKS,
                # the session's inputs, and the read path
                "data_received",
                "eof_received",
                "connection_lost",
                "pause_writing",
                "resume_writing",
                "close",
                # before the session core
                "events_received",
                "_control",
                "_finish_close",
                "_defer_close",
                "_consumer_drained",
                "_finish_deferred_close",
                "_send_owed_pong",
                "_write_replies",
                "_disconnect",
                "_linger_or_close",
                "_close_transport",
                "_pause_for_stream",
                "_resume_for_stream",
                "_update_reading",
                "_arm_close_timer",
                "_close_timed_out",
                "_unsent",
                "_send_ping",
                "_ping_timed_out",
                "_compact",
                "_cancel_ping",
                "_cancel_timers",
            ),
        )
    ],
    "bytestream.py": [
        (
            "bytestream.py",
            "_Driver",
            (
                *_HOOKS,
                "_read",
                "close",
                "_writes_waiting",
                "_shut_down",
                "_connection_lost",
                # before the session core
                "_control",
                "_write_reply",
                "_disconnect",
                "_close_transport",
                "_arm_close_timer",
                "_abort",
                "_send_ping",
                "_ping_timed_out",
                "_cancel_ping",
            ),
        )
    ],
    "sync/connection.py": [
        (
            "sync/connection.py",
            "SyncWebSocketChannel",
            (
                *_HOOKS,
                "_consumer_caught_up",
                "_receive",
                "_finish",
                "_abort",
                # before the session core
                "_send_ping",
                "_compact",
                "_ping_timed_out",
                "_stop_keepalive",
                "_arm_close_timer",
                "_close_timed_out",
                "_control",
            ),
        )
    ],
    "adapter + browser sinks": [
        ("_adapter.py", "_AdapterSink", None),
        ("adapter.py", "_AdapterSink", None),  # where it was before the split
        ("html.py", "_HtmlSink", None),
        # Since the platform wrappers share PendingSink as their sink (no subclass): the
        # browser's WebSocket translated into the sink's Target.
        ("html.py", "_BrowserSocket", None),
    ],
}

#: The shared bases, shown for reference (not counted against the drivers).
SHARED = [
    ("_driver.py", "SessionDriver"),
    ("_channel_driver.py", "ChannelDriver"),
    ("_sink.py", "PendingSink"),
    ("_tasks.py", "Gate"),
]


def read(path: str, rev: str | None) -> str | None:
    """The file's text at ``rev`` (None: the working tree), or None if it is not there."""
    if rev is None:
        file = ROOT / PKG / path
        return file.read_text(encoding="utf-8") if file.exists() else None
    result = subprocess.run(
        ["git", "show", f"{rev}:{PKG}{path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def code_lines(source: str) -> set[int]:
    """The line numbers holding code: not blank, not only a comment, not in a docstring."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.body[0] if node.body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in skip or token.type == tokenize.ENDMARKER:
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    return lines - docstrings


def count_class(
    source: str, name: str, methods: tuple[str, ...] | None
) -> tuple[int, dict[str, int]] | None:
    """The code lines of class ``name``'s ``methods`` (None: the whole class), and each
    method's; None if the class is not in ``source``."""
    tree = ast.parse(source)
    code = code_lines(source)

    def span(node: ast.stmt) -> int:
        decorators = getattr(node, "decorator_list", [])
        start = min([node.lineno, *(d.lineno for d in decorators)])
        end = node.end_lineno or node.lineno
        return len(code & set(range(start, end + 1)))

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            if methods is None:
                return span(node), {}
            per_method = {
                item.name: span(item)
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in methods
            }
            return sum(per_method.values()), per_method
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", help="a git revision (default: the working tree)")
    parser.add_argument("-v", "--verbose", action="store_true", help="each method's count")
    args = parser.parse_args()
    total = 0
    print(f"lifecycle lines at {args.rev or 'the working tree'}")
    for driver, parts in DRIVERS.items():
        lines = 0
        details: list[str] = []
        for path, name, methods in parts:
            source = read(path, args.rev)
            counted = None if source is None else count_class(source, name, methods)
            if counted is None:
                continue
            count, per_method = counted
            lines += count
            details.append(f"    {path} {name}: {count}")
            details.extend(f"      {m} {n}" for m, n in per_method.items())
        total += lines
        print(f"  {driver:<26} {lines:>4}")
        if args.verbose:
            print("\n".join(details))
    print(f"  {'drivers together':<26} {total:>4}")
    print("shared bases (not counted): ", end="")
    shared = []
    shared_total = 0
    for path, name in SHARED:
        source = read(path, args.rev)
        counted = None if source is None else count_class(source, name, None)
        shared.append(f"{name} {'-' if counted is None else counted[0]}")
        shared_total += 0 if counted is None else counted[0]
    print(f"{', '.join(shared)} (together {shared_total})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
