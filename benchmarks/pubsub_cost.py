"""Where a node's time goes per message: the broker's client (receive, decode the envelope,
encode the frame) against the fan-out (``broadcast``'s shared frame to many connections).
The figures behind docs/scaling.md's choice of Python broker clients over a Rust one.

    python -m benchmarks.pubsub_cost            # under a minute; --messages, --fan-out

CPU time of the event loop's thread only (``time.thread_time``): the raw clients that read
what the node sends are drained by another thread, the publisher is another process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the brokers' processes

from pubsub.brokers import NatsServer, RedisServer, missing

import wschannel
from wschannel.channel import WebSocketChannel
from wschannel.io import IOWebSocketChannel
from wschannel.pubsub import NatsBroker, RedisBroker, Topics

_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# The publishers, as programs of their own (envelope "t" + 64 bytes: a text message).
_PUBLISHERS = {
    "redis": (
        "import redis, sys\n"
        "client = redis.Redis.from_url(sys.argv[1])\n"
        "for _ in range(int(sys.argv[2]) // 500):\n"
        "    pipe = client.pipeline(transaction=False)\n"
        "    for _ in range(500): pipe.publish(b'cost:t:cost', b't' + b'x' * 64)\n"
        "    pipe.execute()\n"
    ),
    "nats": (
        "import asyncio, sys, nats\n"
        "async def main():\n"
        "    nc = await nats.connect(sys.argv[1])\n"
        "    for _ in range(int(sys.argv[2])): await nc.publish('cost.cost', b't' + b'x' * 64)\n"
        "    await nc.flush()\n"
        "    await nc.close()\n"
        "asyncio.run(main())\n"
    ),
}


def dial(port: int) -> socket.socket:
    """A raw client that has done the opening handshake."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_UPGRADE)
    sock.recv(4096)
    return sock


def drain(sockets: list[socket.socket], stop: threading.Event) -> None:
    """Read and drop what the node sends, until ``stop``."""
    poller = select.epoll()
    by_fd = {}
    for sock in sockets:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    while not stop.is_set():
        for fd, _ in poller.poll(0.1):
            with contextlib.suppress(BlockingIOError):
                by_fd[fd].recv(1 << 20)
    poller.close()


async def broker_cost(kind: str, url: str, messages: int, subscribers: int = 1) -> float:
    """Microseconds of loop-thread CPU per message a node receives from the broker and writes
    to its ``subscribers`` (1: the broker's side alone, the fan-out being one write)."""
    broker = RedisBroker(url, prefix="cost") if kind == "redis" else NatsBroker(url, prefix="cost")
    async with Topics(broker, slow="drop") as topics:

        async def handler(channel: IOWebSocketChannel) -> None:
            await topics.join(channel, "cost")
            await channel.sink.done

        async with wschannel.serve(handler, "127.0.0.1", 0) as server:
            sockets = [await asyncio.to_thread(dial, server.port) for _ in range(subscribers)]
            while topics.subscribers("cost") < subscribers:
                await asyncio.sleep(0.01)
            stop = threading.Event()
            reader = threading.Thread(target=drain, args=(sockets, stop))
            reader.start()
            publisher = subprocess.Popen(
                [sys.executable, "-c", _PUBLISHERS[kind], url, str(messages)]
            )
            while topics.stats.received < 1:
                await asyncio.sleep(0.001)
            start, first = time.thread_time(), topics.stats.received
            while topics.stats.received < messages and publisher.poll() in (None, 0):
                await asyncio.sleep(0.001)
            spent, count = time.thread_time() - start, topics.stats.received - first
            publisher.wait()
            stop.set()
            reader.join()
            for sock in sockets:
                sock.close()
    return spent / max(count, 1) * 1e6


async def fan_out_cost(connections: int, rounds: int = 200) -> float:
    """Microseconds of loop-thread CPU per ``broadcast`` of 64 bytes to ``connections``."""
    channels: list[WebSocketChannel] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        channels.append(channel)
        await channel.sink.done

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        sockets = [await asyncio.to_thread(dial, server.port) for _ in range(connections)]
        while len(channels) < connections:
            await asyncio.sleep(0.01)
        stop = threading.Event()
        reader = threading.Thread(target=drain, args=(sockets, stop))
        reader.start()
        start = time.thread_time()
        for _ in range(rounds):
            wschannel.broadcast(channels, "x" * 64)
            await asyncio.sleep(0)
        spent = time.thread_time() - start
        stop.set()
        reader.join()
        for sock in sockets:
            sock.close()
    return spent / rounds * 1e6


async def measure(args: argparse.Namespace) -> None:
    for name in ("redis-server", "nats-server"):
        if reason := missing(name):
            raise SystemExit(reason)
    with RedisServer() as redis, NatsServer() as nats:
        redis_us = await broker_cost("redis", redis.url, args.messages)
        nats_us = await broker_cost("nats", nats.url, args.messages)
        through = {
            n: await broker_cost("redis", redis.url, args.messages // 10, n) for n in args.fan_out
        }
    print("| step | per message |\n|---|---:|")
    print(f"| Redis: read (hiredis), decode, frame | {redis_us:,.1f} µs |")
    print(f"| NATS: nats-py read and callback, decode, frame | {nats_us:,.1f} µs |")
    for connections in args.fan_out:
        spent = await fan_out_cost(connections)
        print(f"| `broadcast` to {connections:,} connections | {spent:,.0f} µs |")
        print(
            f"| the same through Redis and `Topics` (all of the node's work) "
            f"| {through[connections]:,.0f} µs |"
        )
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nload average {' '.join(load)} on this machine during the run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument(
        "--fan-out", type=lambda text: [int(n) for n in text.split(",")], default=[500, 1000]
    )
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
