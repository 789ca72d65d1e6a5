"""Instructions per message in a server process under the native load generator (callgrind):
the figures behind docs/performance.md's "Many connections per call" (issue 15).

    python -m benchmarks.server_instructions wschannel --connections 100
    python -m benchmarks.server_instructions picows --connections 1000
    python -m benchmarks.server_instructions native:fastwebsockets --connections 100
    python -m benchmarks.server_instructions wschannel --mode broadcast --connections 1000
    WSCHANNEL_READ_SET=0 python -m benchmarks.server_instructions wschannel   # the loop's readers

The server (``wschannel.bench.worker server IMPL``, or ``anchor-server --impl NAME`` for
``native:NAME``) runs under ``valgrind --tool=callgrind``; ``loadgen`` (``benchmarks/native``,
found as the benchmark runner finds it) drives it. Callgrind's counters are zeroed when the
load generator's window opens and dumped when it closes, so the count covers exactly the
messages counted: user-space instructions only (the kernel's work in system calls is not
in it). Prints the instructions per message (broadcast: per delivery), split by the object
they ran in (the interpreter, the engine, libc...), and the functions that cost the most.
Under valgrind a server is about 50 times slower, so each ``epoll_wait`` finds more sockets
ready than it would at full speed: compare builds with this, not with wall-clock figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from wschannel.bench import native


def costs(path: Path) -> tuple[collections.Counter[str], dict[str, str]]:
    """Each function's own instructions in a callgrind file written with
    ``--compress-strings=no --compress-pos=no``, and the object each function is in."""
    own: collections.Counter[str] = collections.Counter()
    objects: dict[str, str] = {}
    function = obj = ""
    after_call = False
    with path.open(errors="replace") as lines:
        for line in lines:
            if line.startswith("fn="):
                function, after_call = line[3:].rstrip("\n"), False
                objects[function] = obj
            elif line.startswith("ob="):
                obj = line[3:].rstrip("\n")
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's inclusive cost
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) < 2:
                    continue
                if after_call:
                    after_call = False
                else:
                    own[function] += int(fields[1])
    return own, objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("impl", help="wschannel, picows, ... or native:fastwebsockets")
    parser.add_argument("--mode", choices=("echo", "broadcast"), default="echo")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=int, default=41)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--duration", type=float, default=6.0, help="the window, seconds")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    args = parser.parse_args()

    folder, why = native.binaries()
    if folder is None:
        sys.exit(f"no load generator: {why}")
    if args.impl.startswith("native:"):
        server = [str(folder / "anchor-server"), "--impl", args.impl[7:], "--port", "0"]
    else:
        server = [sys.executable, "-m", "wschannel.bench.worker", "server", args.impl]
    if args.mode == "broadcast":
        server.append("--broadcast")
    out = Path(tempfile.mkdtemp(prefix="server-instructions-")) / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no"]
    process = subprocess.Popen(
        [*valgrind, f"--callgrind-out-file={out}", *server],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    hello = json.loads(process.stdout.readline())
    pid = str(hello["pid"])
    load = [str(folder / "loadgen"), args.mode, f"ws://127.0.0.1:{hello['port']}/"]
    load += ["--connections", str(args.connections), "--size", str(args.size)]
    load += ["--inflight", str(args.inflight), "--warmup", "3", "--duration", str(args.duration)]
    result: dict[str, float] = {}
    with subprocess.Popen(load, stdout=subprocess.PIPE, text=True) as generator:
        assert generator.stdout is not None
        for line in generator.stdout:
            answer = json.loads(line)
            edge = answer.get("window")
            if edge == "start":
                subprocess.run(["callgrind_control", "-z", pid], capture_output=True, check=True)
            elif edge == "end":
                subprocess.run(["callgrind_control", "-d", pid], capture_output=True, check=True)
            else:
                result = answer
    process.stdin.close()
    process.wait(timeout=120)
    count = int(result["count"]) * (args.connections if args.mode == "broadcast" else 1)
    own, objects = costs(out.with_name(out.name + ".1"))  # the dump at the window's end
    total = sum(own.values())
    unit = "delivery" if args.mode == "broadcast" else "message"
    print(f"{args.impl}, {args.mode}, {args.connections} connections: {count:,} {unit}s")
    print(f"{total / count:,.0f} instructions per {unit}")
    by_object: collections.Counter[str] = collections.Counter()
    for function, cost in own.items():
        by_object[os.path.basename(objects.get(function) or "?")] += cost
    for name, cost in by_object.most_common(6):
        print(f"  {cost / count:9,.0f}  {name}")
    print("functions (own instructions):")
    for function, cost in own.most_common(args.top):
        print(f"  {cost / count:9,.0f}  {function[:100]}")


if __name__ == "__main__":
    main()
