"""Memory per idle server connection: the server's RSS growth divided by its connections.

Starts ``wschannel.serve`` in a child process (so the clients' memory does not count), reads
its resident set size from ``/proc/<pid>/status`` (Linux), opens N idle connections from this
process, waits for the server to settle, and reads it again: (RSS after - RSS before) / N.
Each count runs three times: without permessage-deflate, with it (both sides offering it),
and with it after one message each way (the engine creates a connection's zlib state when it
first compresses or decompresses, so an idle compressed connection that has talked costs more).

    .venv/bin/python benchmarks/idle_memory.py                   # 1,000 and 10,000
    .venv/bin/python benchmarks/idle_memory.py --connections 500 --settle 0.5

Both processes need about N + 100 file descriptors; the soft ``RLIMIT_NOFILE`` is raised to
the hard limit if needed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import resource
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wschannel import WebSocketChannel

BATCH = 500  # connections opened at once (below the server's max_pending_handshakes)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/<pid>/status (Linux only)")


# The server process.


async def serve(compression: bool) -> None:
    import wschannel

    async def hold(channel: wschannel.WebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)  # the "talked" runs' one message each way

    async with wschannel.serve(hold, "127.0.0.1", 0, compression=compression) as server:
        print(server.port, flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():  # the parent asks "count" or closes stdin
            gc.collect()
            print(len(server.connections), flush=True)
        del line


# The measuring process.

MESSAGE = "an idle client says hello " * 4


async def exchange(channel: WebSocketChannel) -> None:
    channel.sink.add(MESSAGE)
    assert await anext(aiter(channel.stream)) == MESSAGE


async def measure(connections: int, compression: bool, talk: bool, settle: float) -> float:
    from wschannel.io import IOWebSocketChannel

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--compression", str(int(compression))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        url = f"ws://127.0.0.1:{port}"

        def count() -> int:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("count\n")
            child.stdin.flush()
            return int(child.stdout.readline())

        # Warm up: code paths, the allocator's first arenas, a compressor context or two.
        warmup = [IOWebSocketChannel.connect(url, compression=compression) for _ in range(20)]
        await asyncio.gather(*(channel.ready for channel in warmup))
        await asyncio.gather(*(channel.sink.close(1000) for channel in warmup))
        await asyncio.sleep(settle)
        assert count() == 0
        before = rss_kib(child.pid)

        clients: list[IOWebSocketChannel] = []
        for start in range(0, connections, BATCH):
            batch = [
                IOWebSocketChannel.connect(url, compression=compression)
                for _ in range(min(BATCH, connections - start))
            ]
            await asyncio.gather(*(channel.ready for channel in batch))
            if talk:
                await asyncio.gather(*(exchange(channel) for channel in batch))
            clients.extend(batch)
        await asyncio.sleep(settle)
        held = count()
        after = rss_kib(child.pid)
        if held != connections:
            raise RuntimeError(f"the server holds {held} connections, not {connections}")
        for start in range(0, connections, BATCH):
            batch = clients[start : start + BATCH]
            await asyncio.gather(*(channel.sink.close(1000) for channel in batch))
        return (after - before) * 1024 / connections
    finally:
        child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def main(counts: list[int], settle: float) -> None:
    import wschannel

    print(
        f"wschannel {wschannel.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs"
    )
    print("| idle connections | plain | permessage-deflate | permessage-deflate, has talked |")
    print("|---:|---:|---:|---:|")
    for connections in counts:
        started = time.perf_counter()
        plain = await measure(connections, False, False, settle)
        deflate = await measure(connections, True, False, settle)
        talked = await measure(connections, True, True, settle)
        cells = " | ".join(f"{size / 1024:,.1f} KiB" for size in (plain, deflate, talked))
        print(
            f"| {connections:,} | {cells} |  <!-- {time.perf_counter() - started:.0f} s -->",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before reading RSS")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compression", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    raise_fd_limit(max(arguments.connections) + 256)
    if arguments.serve:
        asyncio.run(serve(bool(arguments.compression)))
    else:
        asyncio.run(main(arguments.connections, arguments.settle))
