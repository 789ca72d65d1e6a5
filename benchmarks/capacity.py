"""Capacity: 10,000 concurrent connections to one ``wschannel.serve`` echo server.

``python -m benchmarks.capacity`` starts an echo server in a process of its own and two load
processes (one per core) that open the connections with ``IOWebSocketChannel.connect``,
half each. Every connection exchanges one message, then all are held open, and the server's
resident memory (``VmRSS``, read by this process from ``/proc/PID/status``) is read:

- before: after 20 warm-up connections per load process have come and gone;
- with every connection open, right after a message each way (the first one each exchanged
  while opening, and one more on all of them once all are open, since opening 10,000 takes
  long enough for the first ones to go idle); ``VmHWM`` gives the peak;
- again after ``--idle-wait`` seconds (11 by default: a compressed connection frees its zlib
  state once it has been quiet for one compaction interval, checked every 5 s).

Memory per connection is the growth divided by the number of connections. The run is done
without and with permessage-deflate, each against a fresh server process. At the end every
connection must still be open and echo one more message, and when the server shuts down
(``Server.close()``) every client must see the closing handshake with 1001 (or 1000); the
script exits with status 1 if any check fails. It prints a table and writes
``results/capacity.json`` with the date, the commit and the machine.

    .venv/bin/python -m benchmarks.capacity                       # 10,000, 1 to 2 minutes
    .venv/bin/python -m benchmarks.capacity --connections 200 --idle-wait 1 --out /tmp/c.json

Every connection uses a descriptor in the server and in a load process: both raise their
soft ``RLIMIT_NOFILE`` to the hard limit (20,000 here). All connections go from 127.0.0.1 to
one port, so the number is bounded by the ephemeral port range (32768-60999 by default:
28,232 ports); the script refuses to start beyond it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wschannel.bench.machine import describe
from wschannel.bench.processes import Worker, WorkerError, command, rss_bytes
from wschannel.bench.worker import raise_fd_limit

if TYPE_CHECKING:
    from wschannel import WebSocketChannel
    from wschannel.io import IOWebSocketChannel

#: The repository: where ``benchmarks`` is imported from, and its results go.
ROOT = Path(__file__).resolve().parent.parent


def own_worker(*args: str) -> Worker:
    """This module in a child process, as a worker (``python -m benchmarks.capacity ARGS``)."""
    return Worker(command("benchmarks.capacity", *args), ROOT)


HOST = "127.0.0.1"
WARM_CONNECTIONS = 20  # per load process, before the first reading
CONCURRENCY = 100  # handshakes in flight per load process (max_pending_handshakes is 1024)
SETTLE = 1.0  # seconds between the last connection and reading RSS
BACKLOG = 4096
MESSAGE = "a held connection says hello " * 4  # 116 bytes of text
CLEAN_CODES = {1000, 1001}
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "capacity.json"


# -- the server process ------------------------------------------------------------------------


async def serve(compression: bool) -> None:
    """An echo server answering commands on stdin, one JSON line each (see :func:`main`)."""
    import wschannel

    handlers = 0
    codes: Counter[str] = Counter()

    async def echo(channel: WebSocketChannel) -> None:
        nonlocal handlers
        handlers += 1
        try:
            async for message in channel.stream:
                channel.sink.add(message)
            await channel.sink.done
        finally:
            handlers -= 1
            codes[str(channel.close_code)] += 1

    server = await wschannel.serve(
        echo, HOST, 0, compression=compression, backlog=BACKLOG, max_pending_handshakes=None
    )
    reply({"port": server.port, "pid": os.getpid()})
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        op = json.loads(line)["op"]
        if op == "count":
            gc.collect()
            reply({"connections": len(server.connections), "handlers": handlers})
        elif op == "close":
            started = time.perf_counter()
            await server.close()
            seconds = time.perf_counter() - started
            gc.collect()
            reply(
                {
                    "seconds": seconds,
                    "connections": len(server.connections),
                    "handlers": handlers,
                    "codes": dict(codes),
                }
            )


def reply(answer: dict[str, Any]) -> None:
    print(json.dumps(answer), flush=True)


# -- the load processes ------------------------------------------------------------------------


class Held:
    """One client connection and the iterator over its stream (a stream has one)."""

    def __init__(self, channel: IOWebSocketChannel, messages: AsyncIterator[str | bytes]) -> None:
        self.channel = channel
        self.messages = messages


async def open_one(url: str, compression: bool) -> Held:
    from wschannel.io import IOWebSocketChannel

    channel = IOWebSocketChannel.connect(url, compression=compression, connect_timeout=60)
    await channel.ready
    held = Held(channel, aiter(channel.stream))
    channel.sink.add(MESSAGE)
    echoed = await anext(held.messages)
    if echoed != MESSAGE:
        raise RuntimeError(f"echo differs: {echoed!r:.60}")
    return held


async def open_many(url: str, count: int, compression: bool) -> tuple[list[Held], Counter[str]]:
    """Open ``count`` connections, ``CONCURRENCY`` handshakes at a time; failures by kind."""
    gate = asyncio.Semaphore(CONCURRENCY)
    errors: Counter[str] = Counter()

    async def one() -> Held | None:
        async with gate:
            try:
                return await open_one(url, compression)
            except Exception as error:
                errors[f"{type(error).__name__}: {error}"[:120]] += 1
                return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    return [held for held in results if held is not None], errors


async def echo_check(connections: list[Held], timeout: float) -> dict[str, Any]:
    """Each connection sends one more message and must get it back."""
    errors: Counter[str] = Counter()

    async def one(index: int, held: Held) -> bool:
        message = f"still there? {index}"
        held.channel.sink.add(message)
        try:
            echoed = await anext(held.messages)
        except StopAsyncIteration:
            errors[f"closed with {held.channel.close_code}"] += 1
            return False
        if echoed != message:
            errors["a different message"] += 1
            return False
        return True

    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        answers = await asyncio.gather(*(one(i, h) for i, h in enumerate(connections)))
    return {
        "answered": sum(answers),
        "seconds": time.perf_counter() - started,
        "errors": dict(errors),
    }


async def wait_for_closes(connections: list[Held], timeout: float) -> dict[str, Any]:
    """Wait for every connection to end; their close codes, counted."""
    codes: Counter[str] = Counter()

    async def one(held: Held) -> None:
        async for message in held.messages:
            codes[f"message after the echo check: {message!r:.40}"] += 1
        await held.channel.sink.done
        codes[str(held.channel.close_code)] += 1

    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one(held) for held in connections))
    except TimeoutError:
        codes["still open at the timeout"] = len(connections) - sum(codes.values())
    return {"codes": dict(codes), "seconds": time.perf_counter() - started}


async def load(url: str, connections: int, compression: bool) -> None:
    """A load process: answers the commands ``warm``, ``open``, ``echo`` and ``closes``."""
    loop = asyncio.get_running_loop()
    held: list[Held] = []
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        op = json.loads(line)["op"]
        if op == "warm":
            warm, errors = await open_many(url, WARM_CONNECTIONS, compression)
            await asyncio.gather(*(h.channel.sink.close(1000) for h in warm))
            reply({"warm": len(warm), "errors": dict(errors)})
        elif op == "open":
            started = time.perf_counter()
            held, errors = await open_many(url, connections, compression)
            reply(
                {
                    "ready": len(held),
                    "seconds": time.perf_counter() - started,
                    "errors": dict(errors),
                }
            )
        elif op == "echo":
            reply(await echo_check(held, timeout=120))
        elif op == "closes":
            reply(await wait_for_closes(held, timeout=60))


# -- the runner --------------------------------------------------------------------------------


def ephemeral_ports() -> int:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return 28232
    return int(high) - int(low) + 1


def ask(worker: Worker, op: str, timeout: float) -> dict[str, Any]:
    worker.send({"op": op})
    return worker.receive(timeout)


def ask_all(workers: list[Worker], op: str, timeout: float) -> list[dict[str, Any]]:
    """Send ``op`` to every worker at once, then collect their answers."""
    for worker in workers:
        worker.send({"op": op})
    return [worker.receive(timeout) for worker in workers]


def merge_counts(answers: list[dict[str, Any]], key: str) -> dict[str, int]:
    total: Counter[str] = Counter()
    for answer in answers:
        total.update(answer.get(key, {}))
    return dict(total)


def measure(connections: int, loaders: int, compression: bool, idle_wait: float) -> dict[str, Any]:
    """One run against a fresh server; the record written to the results."""
    server = own_worker("--role", "server", *compression_flag(compression))
    workers: list[Worker] = []
    try:
        hello = server.receive(30)
        pid = hello["pid"]
        url = f"ws://{HOST}:{hello['port']}"
        shares = [connections // loaders + (i < connections % loaders) for i in range(loaders)]
        for share in shares:
            arguments = ["--role", "load", "--url", url, "--connections", str(share)]
            workers.append(own_worker(*arguments, *compression_flag(compression)))
        ask_all(workers, "warm", 60)
        time.sleep(SETTLE)
        if ask(server, "count", 10)["connections"]:
            raise WorkerError("connections left open after the warm-up")
        before = rss_bytes(pid)

        opened = ask_all(workers, "open", 600)
        # Opening takes a while (half a minute for 10,000 compressed): the first ones have
        # been quiet long enough to free their zlib state. One more message each way on
        # every connection, so that the first reading is "right after a message" for all.
        touched = ask_all(workers, "echo", 180)
        time.sleep(SETTLE)
        held = ask(server, "count", 30)
        with_all = rss_bytes(pid)
        peak = peak_rss_bytes(pid)
        time.sleep(idle_wait)
        held_idle = ask(server, "count", 30)
        idle = rss_bytes(pid)

        echoes = ask_all(workers, "echo", 180)
        for worker in workers:
            worker.send({"op": "closes"})
        closed = ask(server, "close", 120)
        closes = [worker.receive(120) for worker in workers]
        after_close = rss_bytes(pid)
    finally:
        for worker in workers:
            worker.close()
        server.close()

    ready = sum(answer["ready"] for answer in opened)
    growth = with_all - before
    return {
        "compression": compression,
        "connections": connections,
        "loaders": loaders,
        "opened": ready,
        "open_errors": merge_counts(opened, "errors"),
        "open_seconds": max(answer["seconds"] for answer in opened),
        "server_connections": held["connections"],
        "server_connections_after_idle": held_idle["connections"],
        "rss_before": before,
        "rss_with_all": with_all,
        "bytes_per_connection": growth / connections,
        "touch_answered": sum(answer["answered"] for answer in touched),
        "touch_seconds": max(answer["seconds"] for answer in touched),
        "rss_peak": peak,
        "idle_wait": idle_wait,
        "rss_after_idle": idle,
        "bytes_per_connection_after_idle": (idle - before) / connections,
        "echo_answered": sum(answer["answered"] for answer in echoes),
        "echo_errors": merge_counts(echoes, "errors"),
        "echo_seconds": max(answer["seconds"] for answer in echoes),
        "close_seconds": closed["seconds"],
        "client_close_codes": merge_counts(closes, "codes"),
        "server_close_codes": closed["codes"],
        "server_connections_after_close": closed["connections"],
        "server_handlers_after_close": closed["handlers"],
        "rss_after_close": after_close,
    }


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (``VmHWM``; ``VmRSS`` is rss_bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise WorkerError(f"no VmHWM for {pid}")


def compression_flag(compression: bool) -> list[str]:
    return ["--compression"] if compression else []


def problems(run: dict[str, Any]) -> list[str]:
    """What went wrong in a run (nothing, when every check passed)."""
    n = run["connections"]
    found = []
    if run["opened"] != n or run["open_errors"]:
        found.append(f"opened {run['opened']} of {n}: {run['open_errors']}")
    for key in ("server_connections", "server_connections_after_idle"):
        if run[key] != n:
            found.append(f"{key} = {run[key]}, not {n}")
    if run["touch_answered"] != n:
        found.append(f"{run['touch_answered']} of {n} answered the second message")
    if run["echo_answered"] != n:
        found.append(f"{run['echo_answered']} of {n} answered the last echo: {run['echo_errors']}")
    unclean = {code: count for code, count in run["client_close_codes"].items() if not clean(code)}
    if unclean or sum(run["client_close_codes"].values()) != n:
        found.append(f"client close codes {run['client_close_codes']}")
    if run["server_connections_after_close"] or run["server_handlers_after_close"]:
        found.append(
            f"after close(): {run['server_connections_after_close']} connections, "
            f"{run['server_handlers_after_close']} handlers"
        )
    return found


def clean(code: str) -> bool:
    return code.isdigit() and int(code) in CLEAN_CODES


def kind_of(run: dict[str, Any]) -> str:
    return "permessage-deflate" if run["compression"] else "plain"


def mib(size: float) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB"


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| connections | RSS before | RSS with all | per connection "
        "| RSS after idle | per connection, idle | peak RSS | last echo | closes | open time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        kind = kind_of(run)
        codes = ", ".join(f"{c}: {k:,}" for c, k in sorted(run["client_close_codes"].items()))
        rows.append(
            f"| {run['connections']:,} {kind} | {mib(run['rss_before'])} "
            f"| {mib(run['rss_with_all'])} | {kib(run['bytes_per_connection'])} "
            f"| {mib(run['rss_after_idle'])} ({run['idle_wait']:g} s) "
            f"| {kib(run['bytes_per_connection_after_idle'])} | {mib(run['rss_peak'])} "
            f"| {run['echo_answered']:,}/{run['connections']:,} | {codes} "
            f"| {run['open_seconds']:.1f} s |"
        )
    return "\n".join(rows)


def main_runner(args: argparse.Namespace) -> int:
    if args.connections + 1000 > ephemeral_ports():
        sys.exit(
            f"{args.connections:,} connections from 127.0.0.1 to one port need more than the "
            f"{ephemeral_ports():,} ephemeral ports of net.ipv4.ip_local_port_range"
        )
    raise_fd_limit()
    machine = describe()  # now: the commit that runs
    started = time.perf_counter()
    runs = []
    for compression in (False, True):
        kind = "permessage-deflate" if compression else "plain"
        print(f"{args.connections:,} {kind} connections...", flush=True)
        run = measure(args.connections, args.loaders, compression, args.idle_wait)
        run["problems"] = problems(run)
        runs.append(run)
    print(table(runs))
    failed = [f"{kind_of(r)}: {p}" for r in runs for p in r["problems"]]
    print("checks: " + ("; ".join(failed) if failed else "all passed"))
    print(f"total {time.perf_counter() - started:.0f} s")
    record = {"benchmark": "capacity", **machine, "runs": runs, "table": table(runs)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--loaders", type=int, default=2, help="load processes (default 2)")
    parser.add_argument(
        "--idle-wait", type=float, default=11.0, help="seconds before the second reading"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the JSON file to write")
    parser.add_argument("--role", choices=("runner", "server", "load"), default="runner")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--compression", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        raise_fd_limit()
        asyncio.run(serve(args.compression))
    elif args.role == "load":
        raise_fd_limit()
        asyncio.run(load(args.url, args.connections, args.compression))
    else:
        sys.exit(main_runner(args))


if __name__ == "__main__":
    main()
