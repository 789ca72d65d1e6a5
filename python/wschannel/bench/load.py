"""Many connections against one server: echo load, broadcast fan-out, idle memory.

``python -m wschannel.bench.load echo URL --connections N`` opens N connections, each keeping one
small message in flight, and prints ``{"count": echoes, "seconds": window}``.

``python -m wschannel.bench.load broadcast URL --connections N`` opens N connections to a
broadcasting server; the first sends a message, which the server sends to all N; once all
N have it, the next goes. It prints ``{"count": broadcasts, "seconds": window}``.

``python -m wschannel.bench.load idle URL --connections N [--compression]`` opens N connections
with a minimal hand-written client (a fixed upgrade request, one masked message, its echo),
prints ``{"ready": N}`` and keeps them open until its standard input closes, so that the
runner can read the server's resident memory. The hand-written client costs the server
nothing that a real one would not, and can offer permessage-deflate to every server.

The load generator for the WebSocket servers is picows's core client, the lightest one
here, so that the server, not the client, is what is measured. The raw TCP server gets a
raw client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

from .clients import Meter
from .worker import raise_fd_limit, run

MESSAGE = b'{"type":"tick","id":1234567,"value":42.5}'  # a small message: 41 bytes
CONNECT_CONCURRENCY = 64


async def connect_all(count: int, connect: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Open ``count`` connections, at most ``CONNECT_CONCURRENCY`` handshakes at a time."""
    results: list[Any] = [None] * count
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> None:
        async with gate:
            results[index] = await connect(index)

    await asyncio.gather(*(one(index) for index in range(count)))
    return results


# -- echo load and broadcast, with picows's client --------------------------------------------


async def ws_echo(url: str, connections: int, warmup: float, duration: float) -> Meter:
    from picows import WSListener, WSMsgType, ws_connect

    meter = Meter(warmup, duration)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    open_count = connections

    class Client(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            nonlocal open_count
            if frame.msg_type != WSMsgType.BINARY:
                return
            frame.get_payload_as_bytes()
            meter.count += 1
            if not meter.stopping:
                transport.send(WSMsgType.BINARY, MESSAGE)
                return
            open_count -= 1
            if not open_count:
                finished.set_result(None)

    pairs = await connect_all(connections, lambda _: ws_connect(Client, url))
    meter.arm()
    for transport, _ in pairs:
        transport.send(WSMsgType.BINARY, MESSAGE)
    await finished
    for transport, _ in pairs:
        transport.disconnect(graceful=False)
    return meter


async def ws_broadcast(url: str, connections: int, warmup: float, duration: float) -> Meter:
    from picows import WSListener, WSMsgType, ws_connect

    meter = Meter(warmup, duration)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    received = 0
    first: list[Any] = []

    class Client(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            nonlocal received
            if frame.msg_type != WSMsgType.BINARY:
                return
            frame.get_payload_as_bytes()
            received += 1
            if received < connections:
                return
            received = 0
            meter.count += 1
            if meter.stopping:
                finished.set_result(None)
            else:
                first[0].send(WSMsgType.BINARY, MESSAGE)

    pairs = await connect_all(connections, lambda _: ws_connect(Client, url))
    first.append(pairs[0][0])
    meter.arm()
    first[0].send(WSMsgType.BINARY, MESSAGE)
    await finished
    for transport, _ in pairs:
        transport.disconnect(graceful=False)
    return meter


class RawLoad(asyncio.Protocol):
    frame = struct.pack("!I", len(MESSAGE)) + MESSAGE

    def __init__(self, meter: Meter, done: Callable[[], None]) -> None:
        self.meter = meter
        self.done = done
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < len(self.frame):  # one message in flight: never more
            return
        bytes(self.buffer[4:])
        self.buffer.clear()
        self.meter.count += 1
        if self.meter.stopping:
            self.done()
        else:
            self.transport.write(self.frame)  # type: ignore[union-attr]


async def raw_echo(url: str, connections: int, warmup: float, duration: float) -> Meter:
    meter = Meter(warmup, duration)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    open_count = connections

    def done() -> None:
        nonlocal open_count
        open_count -= 1
        if not open_count:
            finished.set_result(None)

    host, port = host_port(url)
    pairs = await connect_all(
        connections,
        lambda _: loop.create_connection(lambda: RawLoad(meter, done), host, port),
    )
    meter.arm()
    for transport, _ in pairs:
        transport.write(RawLoad.frame)
    await finished
    for transport, _ in pairs:
        transport.abort()
    return meter


# -- idle connections for the memory cells ----------------------------------------------------


def host_port(url: str) -> tuple[str, int]:
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    return host, int(port)


def masked_frame(payload: bytes, compressed: bool) -> bytes:
    """One client frame (RFC 6455 §5.2): binary, final, masked, RSV1 if compressed."""
    first = 0x80 | 0x02 | (0x40 if compressed else 0)
    assert len(payload) < 126
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((first, 0x80 | len(payload))) + key + masked


def deflated(payload: bytes) -> bytes:
    """RFC 7692 §7.2.1: raw DEFLATE, flushed, without the trailing 00 00 ff ff."""
    compressor = zlib.compressobj(wbits=-9)  # fits any window the server asks for
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


class IdleClient(asyncio.Protocol):
    """Upgrade, send one message, wait for the first bytes after the 101, then stay idle."""

    def __init__(self, request: bytes, first: bytes, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.first = first
        self.ready = ready
        self.received = b""
        self.sent = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        # RFC 6455 §4.1: a client waits for the 101 before it sends a frame.
        self.transport.write(self.request or self.first)

    def data_received(self, data: bytes) -> None:
        if self.ready.done():
            return
        self.received += data
        head, separator, rest = self.received.partition(b"\r\n\r\n")
        if not self.request:  # raw TCP: the echo is the answer
            if len(self.received) >= len(self.first):
                self.ready.set_result(None)
        elif not separator:
            return
        elif not head.startswith(b"HTTP/1.1 101"):
            self.ready.set_exception(RuntimeError(head.decode(errors="replace")))
        elif not self.sent:
            self.sent = True
            self.received = head + separator  # what comes next is the echo
            self.transport.write(self.first)  # type: ignore[union-attr]
        elif rest:
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the echo: {exc}"))


async def idle(url: str, connections: int, compression: bool) -> list[Any]:
    loop = asyncio.get_running_loop()
    host, port = host_port(url)
    if url.startswith("tcp:"):
        request = b""
        first = struct.pack("!I", len(MESSAGE)) + MESSAGE
    else:
        extension = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if compression
            else ""
        )
        request = (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extension}\r\n"
        ).encode()
        payload = deflated(MESSAGE) if compression else MESSAGE
        first = masked_frame(payload, compression)

    async def connect(_: int) -> Any:
        ready = loop.create_future()
        transport, _protocol = await loop.create_connection(
            lambda: IdleClient(request, first, ready), host, port
        )
        await ready
        return transport

    return await connect_all(connections, connect)


async def main_async(args: argparse.Namespace) -> None:
    raw = args.url.startswith("tcp:")
    if args.mode == "idle":
        transports = await idle(args.url, args.connections, args.compression)
        print(json.dumps({"ready": len(transports)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        return
    measure = {"echo": raw_echo if raw else ws_echo, "broadcast": ws_broadcast}[args.mode]
    started = time.perf_counter()
    meter = await asyncio.wait_for(
        measure(args.url, args.connections, args.warmup, args.duration), args.timeout
    )
    count, seconds = meter.result()
    elapsed = time.perf_counter() - started
    print(json.dumps({"count": count, "seconds": seconds, "elapsed": elapsed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m wschannel.bench.load")
    parser.add_argument("mode", choices=("echo", "broadcast", "idle"))
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=0.2)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    raise_fd_limit()
    run(main_async(args), args.loop)


if __name__ == "__main__":
    main()
