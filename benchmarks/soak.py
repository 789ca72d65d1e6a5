"""Soak: a ``wschannel.serve`` server under mixed traffic and churn for a while; is its memory flat?

``python -m benchmarks.soak --minutes 30`` starts a server process (echo on ``/echo``, a
feed on ``/feed`` that broadcasts twice a second with ``wschannel.broadcast``) and one load
process that keeps a steady population of connections (300 by default) of these kinds:

======================  =======================================================================
kind                    what each connection does, until its random lifetime ends
======================  =======================================================================
``text``                small text (10-300 characters) every 0.1-0.5 s, each echo checked
``compressed``          permessage-deflate, JSON text of 100 B-8 KiB every 0.2-1 s, checked
``binary``              binary of 1 B-256 KiB (log-uniform) every 0.5-2 s, checked
``slow``                bursts of 8-32 binary messages of 4-32 KiB, read back 20-100 ms apart
``stall``               sends 8 MiB in 64 KiB messages but reads nothing for 3-12 s, then all
``ping``                keepalive pings every 2 s, a text every 2-6 s
``feed``                reads the broadcasts, checks their order (a third compressed, a
                        quarter reading slowly)
``deaf``                raw socket with a 4 KiB receive buffer, never reads: on ``/echo`` it
                        sends until the server stops taking (reading pauses while the server's
                        write buffer is full), on ``/feed`` it lets broadcasts pile up; reset
``reset``               raw socket: sends 1-20 frames of up to 64 KiB without reading, then
                        resets (``SO_LINGER`` 0); one in ten resets in the middle of its
                        upgrade request
``hostile``             every 3-8 s one of: a frame announcing 2 MiB, 1.06 MiB of fragments,
                        a 1.1 MiB message from the wschannel client, a compressed message
                        inflating to 2 MiB (all → 1009), invalid UTF-8 (→ 1007), an unmasked
                        frame (→ 1002); the close code is checked
======================  =======================================================================

Library connections live 10-90 s and close with 1000; raw ones live 1-10 s (``deaf`` up to
25 s), so several connections open and close every second. Every wait is bounded (30 s for
an echo), every loop ends at ``--minutes``, all traffic is on 127.0.0.1. The server pings
every 20 s (``ping_interval=20``); everything else is ``serve``'s defaults (1 MiB messages,
16-message queues, 64 KiB write limit).

Every ``--sample-interval`` seconds (10) the runner reads the server's ``VmRSS``, both
processes' CPU time and both sides' counts. At the end the load closes everything, the
server must hold no connection and no running handler, and the verdict on memory is:

- warm-up: the first 2 minutes (a quarter of the run if that is shorter) are not judged;
- **flat**: the median RSS of the last quarter of the run is within ±10 % of the median of
  the second quarter, *and* the trend over the samples after the warm-up (Theil-Sen slope:
  the median of the slopes between every two samples, robust to the spikes that large
  messages cause) adds up over that window to at most 5 % of their median; otherwise
  **growing** (or **shrinking**);
- runs too short for two samples in each of those quarters get **too short to judge**.

Errors (a message echoed wrong or not at all, an unexpected close code, a timeout, a hostile
frame answered with the wrong code, connections or handlers left on the server) are counted;
the script exits with status 1 if there is any or the memory is not flat. It writes
``results/soak.json`` with the date, the commit, the samples and the counts. The load is
rate-limited to stay under about one core (the runner reports both processes' CPU use).

    nice -n 10 .venv/bin/python -m benchmarks.soak --minutes 30
    .venv/bin/python -m benchmarks.soak --minutes 0.1 --connections 30 --sample-interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import gc
import json
import os
import random
import socket
import statistics
import struct
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wschannel.bench.machine import describe
from wschannel.bench.processes import Worker, command, rss_bytes
from wschannel.bench.worker import raise_fd_limit

if TYPE_CHECKING:
    from wschannel import WebSocketChannel
    from wschannel.io import IOWebSocketChannel

#: The repository: where ``benchmarks`` is imported from, and its results go.
ROOT = Path(__file__).resolve().parent.parent


def own_worker(*args: str) -> Worker:
    """This module in a child process, as a worker (``python -m benchmarks.soak ARGS``)."""
    return Worker(command("benchmarks.soak", *args), ROOT)


HOST = "127.0.0.1"
BACKLOG = 4096
SERVER_PING_INTERVAL = 20.0
BROADCAST_INTERVAL = 0.5
RECEIVE_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0  # for the load's connections to finish once asked to stop
WARMUP_LIMIT = 120.0
FLAT_BAND = 0.10  # the last quarter's median within ±10 % of the second quarter's
TREND_LIMIT = 0.05  # the fitted growth over the judged window, as a share of its median
MAX_MESSAGE = 1 << 20  # serve's default max_message_size
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "soak.json"

#: The share of the population of each kind (``text`` takes what rounding leaves).
KINDS: dict[str, float] = {
    "text": 0.25,
    "compressed": 0.15,
    "binary": 0.07,
    "slow": 0.05,
    "stall": 0.03,
    "ping": 0.10,
    "feed": 0.17,
    "deaf": 0.04,
    "reset": 0.07,
    "hostile": 0.02,
}
HOSTILE_CASES: dict[str, int] = {
    "oversize-announced": 1009,
    "oversize-fragments": 1009,
    "oversize-library": 1009,
    "inflate-bomb": 1009,
    "invalid-utf8": 1007,
    "unmasked": 1002,
}


async def collector(interval: float | None) -> None:
    """With ``--server-gc``: a full collection every ``interval`` seconds (a workaround to
    compare with: see the results in README.md)."""
    while interval is not None:
        await asyncio.sleep(interval)
        gc.collect()


def reply(answer: dict[str, Any]) -> None:
    print(json.dumps(answer), flush=True)


# -- the server process ------------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes obtained with brk (all arenas)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmap'ed blocks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes allocated from the arenas
            "fordblks",  # bytes free in the arenas
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc 2.33+
        return None
    return libc


LIBC = _libc()


def heap() -> dict[str, int]:
    """What the allocator says (glibc): bytes in use and bytes free but kept; and Python's
    count of allocated blocks. RSS alone cannot tell a leak from memory kept for reuse."""
    answer = {"python_blocks": sys.getallocatedblocks()}
    if LIBC is not None:
        info = LIBC.mallinfo2()
        answer["malloc_in_use"] = info.uordblks + info.hblkhd
        answer["malloc_free"] = info.fordblks
    return answer


async def serve(ping_interval: float | None, gc_interval: float | None) -> None:
    """Echo on ``/echo``, broadcasts on ``/feed``; answers ``stats`` and ``close`` on stdin."""
    import wschannel

    stats: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    subscribers: set[WebSocketChannel] = set()
    active = 0

    async def handler(channel: IOWebSocketChannel) -> None:
        nonlocal active
        active += 1
        stats["opened"] += 1
        path = channel.request.path if channel.request is not None else ""
        try:
            if path.startswith("/feed"):
                subscribers.add(channel)
                try:
                    async for _ in channel.stream:
                        stats["feed messages in"] += 1
                finally:
                    subscribers.discard(channel)
            else:
                async for message in channel.stream:
                    channel.sink.add(message)
                    stats["echoed"] += 1
                    stats["echoed bytes"] += len(message)
        except BaseException:
            stats["handler exceptions"] += 1
            raise
        finally:
            active -= 1
            stats["closed"] += 1
            codes[str(channel.close_code)] += 1

    async def ticker() -> None:
        rng = random.Random(1)
        pad = "feed " * 13108  # 64 KiB of text
        seq = 0
        while True:
            await asyncio.sleep(BROADCAST_INTERVAL)
            seq += 1
            size = 65536 if seq % 20 == 0 else rng.randint(100, 2048)
            message: str | bytes = f"{seq:010d} {pad[:size]}"
            if seq % 3 == 0:
                message = seq.to_bytes(8, "big") + pad[:size].encode()
            targets = list(subscribers)
            sent = wschannel.broadcast(targets, message)
            stats["broadcasts"] += 1
            stats["broadcast deliveries"] += sent
            stats["broadcast skips"] += len(targets) - sent

    server = await wschannel.serve(
        handler,
        HOST,
        0,
        ping_interval=ping_interval,
        backlog=BACKLOG,
    )
    ticking = asyncio.create_task(ticker())
    collecting = asyncio.create_task(collector(gc_interval))
    reply({"port": server.port, "pid": os.getpid()})

    def snapshot() -> dict[str, Any]:
        return {
            "stats": dict(stats),
            "codes": dict(codes),
            "connections": len(server.connections),
            "handlers": active,
            "subscribers": len(subscribers),
            "pending_handshakes": server.pending_handshakes,
            "heap": heap(),
        }

    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        op = json.loads(line)["op"]
        if op == "stats":
            reply(snapshot())
        elif op == "collect":
            gc.collect()
            reply(snapshot())
        elif op == "trim":  # give free memory back to the system, then read RSS again
            gc.collect()
            trimmed = LIBC.malloc_trim(0) if LIBC is not None else 0
            reply({"trimmed": bool(trimmed), "heap": heap()})
        elif op == "close":
            ticking.cancel()
            collecting.cancel()
            await server.close()
            reply(snapshot())


# -- raw clients: hand-made frames, resets, hostile input --------------------------------------


def mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3, in one big-integer XOR (fast enough for 64 KiB in Python)."""
    if not payload:
        return b""
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame; ``length`` announces another length than the payload's (hostile)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask(payload, key)


def deflated(payload: bytes) -> bytes:
    """RFC 7692 §7.2.1: raw DEFLATE, flushed, without the trailing 00 00 ff ff; a 512-byte
    window fits whatever ``client_max_window_bits`` the server asks for."""
    compressor = zlib.compressobj(wbits=-9)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


class Raw:
    """A WebSocket client written by hand over an asyncio stream, for what a real one won't do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.deflate = False

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> Raw:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:  # before connecting, so that the window is small
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await loop.sock_connect(sock, (HOST, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer)

    @staticmethod
    def request(port: int, path: str, deflate: bool) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        extension = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if deflate
            else ""
        )
        return (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extension}\r\n"
        ).encode()

    async def upgrade(self, port: int, path: str, deflate: bool = False) -> None:
        self.writer.write(self.request(port, path, deflate))
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:60]!r}")
        self.deflate = b"permessage-deflate" in head.lower()
        if deflate and not self.deflate:
            raise RuntimeError("the server did not accept permessage-deflate")

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return head[0] & 0x0F, await self.reader.readexactly(n)

    async def close_code(self) -> int | None:
        """Skip frames up to the server's close frame: its code (None: the server hung up)."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                while True:
                    opcode, payload = await self.read_frame()
                    if opcode == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        with contextlib.suppress(ConnectionError):
                            self.send(frame(0x8, payload[:2]))  # the client's answer
                        return int(code)
        return None

    def reset(self) -> None:
        """Close with ``SO_LINGER`` 0: the kernel sends RST and drops what is unsent."""
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.transport.abort()


# -- the load process --------------------------------------------------------------------------


class Ended(Exception):
    """The connection ended while a message was expected."""


class Mismatch(Exception):
    """A message came back different, or out of order."""


def make_json_corpus(rng: random.Random) -> str:
    rows = [
        {"id": i, "name": f"user{rng.randint(0, 999)}", "score": rng.random(), "ok": i % 3 == 0}
        for i in range(400)
    ]
    return json.dumps(rows)


class Load:
    """The connections of every kind, their counts and errors."""

    def __init__(self, port: int, population: int, ramp: float, seed: int) -> None:
        self.port = port
        self.url = f"ws://{HOST}:{port}"
        self.population = population
        self.ramp = ramp
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.maxima: Counter[str] = Counter()
        self.open = 0
        self.texts = "".join(chr(self.rng.randint(0x20, 0x7E)) for _ in range(4096))
        self.json = make_json_corpus(self.rng)
        self.bytes = self.rng.randbytes(1 << 19)
        self.sequence = 0

    # helpers

    def slots(self) -> list[str]:
        counts = {kind: max(1, int(share * self.population)) for kind, share in KINDS.items()}
        counts["text"] += max(0, self.population - sum(counts.values()))
        return [kind for kind, count in counts.items() for _ in range(count)]

    def error(self, kind: str, what: str) -> None:
        self.errors[f"{kind}: {what}"] += 1

    def high(self, key: str, value: int) -> None:
        self.maxima[key] = max(self.maxima[key], value)

    async def nap(self, seconds: float) -> bool:
        """Sleep; False at once when the run is stopping."""
        if self.stop.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return not self.stop.is_set()

    def going(self, deadline: float) -> bool:
        return not self.stop.is_set() and time.monotonic() < deadline

    def next_id(self) -> int:
        self.sequence += 1
        return self.sequence

    def text(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        start = self.rng.randrange(len(self.texts) - n)
        return f"{self.next_id()} {self.texts[start : start + n]}"

    def json_text(self, low: int, high: int) -> str:
        n = self.rng.randint(low, high)
        start = self.rng.randrange(len(self.json) - n)
        return f"{self.next_id()} {self.json[start : start + n]}"

    def binary(self, low: int, high: int, log: bool = False) -> bytes:
        if log:
            n = round(2 ** self.rng.uniform(low.bit_length() - 1, high.bit_length() - 1))
        else:
            n = self.rng.randint(low, high)
        n = min(max(n, 8), high)
        start = self.rng.randrange(len(self.bytes) - n)
        return self.next_id().to_bytes(8, "big") + self.bytes[start + 8 : start + n]

    async def receive(self, messages: AsyncIterator[str | bytes], timeout: float) -> str | bytes:
        async with asyncio.timeout(timeout):
            try:
                message = await anext(messages)
            except StopAsyncIteration:
                raise Ended from None
        self.counts["received"] += 1
        self.counts["bytes received"] += len(message)
        return message

    def sent(self, channel: IOWebSocketChannel, message: str | bytes) -> None:
        channel.sink.add(message)
        self.counts["sent"] += 1
        self.counts["bytes sent"] += len(message)

    # the slots

    async def slot(self, kind: str, index: int) -> None:
        await self.nap(self.rng.uniform(0, self.ramp))
        life = {
            "deaf": self.deaf,
            "reset": self.reset,
            "hostile": self.hostile,
        }.get(kind)
        while not self.stop.is_set():
            try:
                if life is not None:
                    await life(kind, index)
                else:
                    await self.library(kind, index)
            except Exception as error:  # a bug of this script, or of the server: count it
                self.error(kind, f"{type(error).__name__}: {error}"[:160])
                await self.nap(1.0)

    async def library(self, kind: str, index: int) -> None:
        """One connection's life with ``IOWebSocketChannel``: open, behave, close with 1000."""
        from wschannel.io import IOWebSocketChannel

        compressed = kind == "compressed" or (kind == "feed" and index % 3 == 0)
        channel = IOWebSocketChannel.connect(
            self.url + ("/feed" if kind == "feed" else "/echo"),
            compression=compressed,
            ping_interval=2.0 if kind == "ping" else None,
        )
        try:
            await channel.ready
        except Exception as error:
            self.error(kind, f"connect: {type(error).__name__}: {error}"[:160])
            await self.nap(1.0)
            return
        self.counts[f"opened {kind}"] += 1
        self.open += 1
        deadline = time.monotonic() + self.rng.uniform(10, 90)
        messages = aiter(channel.stream)
        behaviour = {
            "text": self.chat,
            "compressed": self.chat,
            "binary": self.chat,
            "ping": self.chat,
            "slow": self.slow,
            "stall": self.stall,
            "feed": self.feed,
        }[kind]
        ended = False
        try:
            await behaviour(kind, index, channel, messages, deadline)
        except Ended:
            ended = True
            self.error(kind, f"ended by the server with {channel.close_code}")
        except TimeoutError:
            self.error(kind, "timed out waiting for a message")
        except Mismatch as error:
            self.error(kind, str(error))
        finally:
            self.open -= 1
            self.counts[f"closed {kind}"] += 1
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                await channel.sink.close(1000)
        except TimeoutError:
            self.error(kind, "closing timed out")
        if channel.close_code != 1000 and not ended:
            self.error(kind, f"closed with {channel.close_code}")
        self.counts[f"close {channel.close_code}"] += 1

    async def chat(
        self,
        kind: str,
        index: int,
        channel: IOWebSocketChannel,
        messages: AsyncIterator[str | bytes],
        deadline: float,
    ) -> None:
        """Request/response: send one message, wait for its echo, pause; ``kind`` says what."""
        make: Callable[[], str | bytes]
        gap: tuple[float, float]
        if kind == "text":
            make, gap = (lambda: self.text(10, 300)), (0.1, 0.5)
        elif kind == "compressed":
            make, gap = (lambda: self.json_text(100, 8192)), (0.2, 1.0)
        elif kind == "binary":
            make, gap = (lambda: self.binary(1, 256 * 1024, log=True)), (0.5, 2.0)
        else:  # ping: mostly quiet, the keepalive does the talking
            make, gap = (lambda: self.text(10, 100)), (2.0, 6.0)
        while self.going(deadline):
            message = make()
            self.sent(channel, message)
            echoed = await self.receive(messages, RECEIVE_TIMEOUT)
            if echoed != message:
                raise Mismatch("an echo differs from its message")
            await self.nap(self.rng.uniform(*gap))

    async def pipelined(
        self,
        channel: IOWebSocketChannel,
        messages: AsyncIterator[str | bytes],
        send: Callable[[deque[bytes]], Coroutine[Any, Any, None]],
        read_gap: tuple[float, float],
        wait_first: float,
    ) -> None:
        """``send`` adds messages (and records them) while this reads them back in order."""
        expected: deque[bytes] = deque()
        sender = asyncio.create_task(send(expected))
        try:
            if wait_first:
                await self.nap(wait_first)  # reads nothing meanwhile
            while not sender.done() or expected:
                if not expected:
                    await asyncio.wait([sender], timeout=0.05)
                    continue
                echoed = await self.receive(messages, RECEIVE_TIMEOUT)
                if echoed != expected.popleft():
                    raise Mismatch("a pipelined echo differs from its message (or its place)")
                if read_gap[1]:
                    await asyncio.sleep(self.rng.uniform(*read_gap))
            await sender  # its exception, if any
        finally:
            sender.cancel()

    async def send_all(
        self, channel: IOWebSocketChannel, expected: deque[bytes], payloads: list[bytes]
    ) -> int:
        sent = 0
        for payload in payloads:
            expected.append(payload)
            self.sent(channel, payload)
            sent += len(payload)
            await channel.sink.flush()  # waits while the write buffer is over write_limit
        return sent

    async def slow(
        self,
        kind: str,
        index: int,
        channel: IOWebSocketChannel,
        messages: AsyncIterator[str | bytes],
        deadline: float,
    ) -> None:
        """Bursts of binary messages, read back slowly."""
        while self.going(deadline):
            burst = [self.binary(4096, 32768) for _ in range(self.rng.randint(8, 32))]

            async def send(expected: deque[bytes], burst: list[bytes] = burst) -> None:
                await self.send_all(channel, expected, burst)

            await self.pipelined(channel, messages, send, (0.02, 0.1), 0)
            await self.nap(self.rng.uniform(1, 3))

    async def stall(
        self,
        kind: str,
        index: int,
        channel: IOWebSocketChannel,
        messages: AsyncIterator[str | bytes],
        deadline: float,
    ) -> None:
        """8 MiB sent in 64 KiB messages while nothing is read for 3-12 s, then all read."""
        while self.going(deadline):
            payloads = [self.binary(65536, 65536) for _ in range(128)]
            progress = [0]

            async def send(
                expected: deque[bytes],
                payloads: list[bytes] = payloads,
                progress: list[int] = progress,
            ) -> None:
                for payload in payloads:
                    progress[0] += await self.send_all(channel, expected, [payload])

            stalled = self.rng.uniform(3, 12)
            started = time.monotonic()
            task = asyncio.create_task(self.pipelined(channel, messages, send, (0, 0), stalled))
            await asyncio.sleep(0)
            await asyncio.wait([task], timeout=stalled)
            if time.monotonic() - started >= stalled - 0.5:
                self.high("stall: bytes sent while not reading", progress[0])
            await task
            self.counts["stalls"] += 1
            await self.nap(self.rng.uniform(2, 5))

    async def feed(
        self,
        kind: str,
        index: int,
        channel: IOWebSocketChannel,
        messages: AsyncIterator[str | bytes],
        deadline: float,
    ) -> None:
        """Broadcasts, in order (the server skips a reader whose buffer is full)."""
        slow = index % 4 == 1
        last = 0
        while self.going(deadline):
            message = await self.receive(messages, RECEIVE_TIMEOUT)
            seq = int(message[:10]) if isinstance(message, str) else int.from_bytes(message[:8])
            if seq <= last:
                raise Mismatch(f"broadcast {seq} after {last}")
            if last:
                self.counts["feed: broadcasts missed"] += seq - last - 1
            last = seq
            self.counts["feed: broadcasts received"] += 1
            if slow:
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))

    async def deaf(self, kind: str, index: int) -> None:
        """A raw client with a tiny receive buffer that never reads, then resets."""
        path = "/feed" if index % 2 else "/echo"
        raw = await Raw.connect(self.port, rcvbuf=4096)
        try:
            await raw.upgrade(self.port, path)
            self.counts[f"opened {kind}"] += 1
            self.open += 1
            lifetime = self.rng.uniform(3, 25)
            if path == "/echo":
                accepted = 0
                chunk = frame(0x2, self.bytes[:16384])
                while accepted < 64 << 20:
                    raw.send(chunk)
                    try:
                        async with asyncio.timeout(1.0):
                            await raw.writer.drain()
                    except TimeoutError:
                        break  # the server stopped taking: good
                    accepted += len(chunk)
                else:
                    self.error(kind, "the server read 64 MiB from a client that never reads")
                self.high("deaf: bytes the server took from a client that never reads", accepted)
            await self.nap(lifetime)
            self.open -= 1
            self.counts[f"closed {kind}"] += 1
        finally:
            raw.reset()

    async def reset(self, kind: str, index: int) -> None:
        """A raw client that sends without reading and resets; one in ten mid-handshake."""
        raw = await Raw.connect(self.port)
        try:
            if self.rng.random() < 0.1:
                request = Raw.request(self.port, "/echo", False)
                raw.send(request[: self.rng.randrange(1, len(request))])
                await raw.writer.drain()
                await self.nap(self.rng.uniform(0, 1))
                self.counts["reset: in the handshake"] += 1
                return
            await raw.upgrade(self.port, "/echo", deflate=self.rng.random() < 0.5)
            self.counts[f"opened {kind}"] += 1
            for _ in range(self.rng.randint(1, 20)):
                raw.send(frame(0x2, self.binary(1, 65536)))
            await raw.writer.drain()
            await self.nap(self.rng.uniform(1, 10))
            self.counts[f"closed {kind}"] += 1
        finally:
            raw.reset()

    async def hostile(self, kind: str, index: int) -> None:
        case = self.rng.choice(list(HOSTILE_CASES))
        expected = HOSTILE_CASES[case]
        if case == "oversize-library":
            code = await self.oversize_library()
        else:
            code = await self.hostile_raw(case)
        self.counts[f"opened {kind}"] += 1
        self.counts[f"closed {kind}"] += 1
        if code == expected:
            self.counts[f"hostile {case} → {code}"] += 1
        else:
            self.error(kind, f"{case} answered with {code}, not {expected}")
        await self.nap(self.rng.uniform(3, 8))

    async def oversize_library(self) -> int | None:
        from wschannel.io import IOWebSocketChannel

        channel = IOWebSocketChannel.connect(self.url + "/echo", compression=False)
        await channel.ready
        channel.sink.add(self.bytes[:65536] * 17 + self.bytes[:65536])  # 1.13 MiB
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            async for _ in channel.stream:
                self.error("hostile", "an oversize message was echoed")
            await channel.sink.done
        return channel.close_code

    async def hostile_raw(self, case: str) -> int | None:
        raw = await Raw.connect(self.port)
        try:
            await raw.upgrade(self.port, "/echo", deflate=case == "inflate-bomb")
            if case == "oversize-announced":
                raw.send(frame(0x2, b"just the start", length=2 << 20))
            elif case == "oversize-fragments":
                piece = self.bytes[:65536]
                raw.send(frame(0x2, piece, fin=False))
                for _ in range(16):
                    raw.send(frame(0x0, piece, fin=False))
                raw.send(frame(0x0, piece))
            elif case == "inflate-bomb":
                raw.send(frame(0x2, deflated(bytes(2 << 20)), rsv1=True))
            elif case == "invalid-utf8":
                raw.send(frame(0x1, b"caf\xc3\x28 au lait"))
            elif case == "unmasked":
                raw.send(frame(0x2, b"no mask", masked=False))
            with contextlib.suppress(ConnectionError):
                await raw.writer.drain()
            return await raw.close_code()
        finally:
            raw.close()

    def snapshot(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "maxima": dict(self.maxima),
        }


async def load(port: int, population: int, ramp: float, seed: int) -> None:
    """The load process: runs its slots until told ``stop``; answers ``stats``."""
    work = Load(port, population, ramp, seed)
    tasks = [asyncio.create_task(work.slot(kind, i)) for i, kind in enumerate(work.slots())]
    reply({"slots": dict(Counter(work.slots()))})
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        op = json.loads(line)["op"]
        if op == "stats":
            reply(work.snapshot())
        elif op == "stop":
            work.stop.set()
            started = time.monotonic()
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                work.error("load", "a connection did not finish within the stop timeout")
                task.cancel()
            answer = work.snapshot()
            answer["stop_seconds"] = time.monotonic() - started
            reply(answer)


# -- the runner --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def theil_sen(points: list[tuple[float, float]]) -> float:
    """The median of the slopes between every two points (robust to a few spikes)."""
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(points)
        for x2, y2 in points[i + 1 :]
        if x2 > x1
    ]
    return statistics.median(slopes) if slopes else 0.0


def judge(samples: list[dict[str, Any]], duration: float, key: str = "rss") -> dict[str, Any]:
    """The verdict on the server's RSS, or another series of the samples (see the module's
    docstring for the rule)."""
    warmup = min(WARMUP_LIMIT, duration / 4)
    samples = [s for s in samples if key in s]
    judged = [(s["t"], s[key]) for s in samples if s["t"] >= warmup]
    second = [s[key] for s in samples if duration / 4 <= s["t"] < duration / 2]
    last = [s[key] for s in samples if s["t"] >= duration * 3 / 4]
    verdict: dict[str, Any] = {
        "warmup_seconds": warmup,
        "band": FLAT_BAND,
        "trend_limit": TREND_LIMIT,
        "rule": (
            f"after {warmup:g} s of warm-up: median {key} of the last quarter within "
            f"±{FLAT_BAND:.0%} of the second quarter's, and the Theil-Sen trend over the "
            f"judged samples adding up to at most {TREND_LIMIT:.0%} of their median"
        ),
    }
    if len(second) < 2 or len(last) < 2 or len(judged) < 6:
        verdict["verdict"] = "too short to judge"
        return verdict
    q2, q4 = statistics.median(second), statistics.median(last)
    middle = statistics.median(y for _, y in judged)
    slope = theil_sen(judged)
    window = judged[-1][0] - judged[0][0]
    trend = slope * window / middle
    ratio = q4 / q2
    verdict.update(
        {
            "second_quarter_median": q2,
            "last_quarter_median": q4,
            "ratio": ratio,
            "judged_median": middle,
            "slope_bytes_per_minute": slope * 60,
            "trend_over_window": trend,
            "window_seconds": window,
        }
    )
    if abs(ratio - 1) <= FLAT_BAND and abs(trend) <= TREND_LIMIT:
        verdict["verdict"] = "flat"
    elif ratio > 1 or trend > 0:
        verdict["verdict"] = "growing"
    else:
        verdict["verdict"] = "shrinking"
    return verdict


def mib(size: float) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def ask(worker: Worker, op: str, timeout: float = 30) -> dict[str, Any]:
    worker.send({"op": op})
    return worker.receive(timeout)


def run(args: argparse.Namespace) -> int:
    duration = args.minutes * 60
    machine = describe()  # now: the commit that runs, not the one checked out at the end
    raise_fd_limit()
    gc_flag = [] if args.server_gc is None else ["--server-gc", str(args.server_gc)]
    server = own_worker("--role", "server", *gc_flag)
    loader: Worker | None = None
    samples: list[dict[str, Any]] = []
    try:
        hello = server.receive(30)
        spid = hello["pid"]
        ramp = min(10.0, duration / 6)
        arguments = ["--role", "load", "--port", str(hello["port"]), "--ramp", str(ramp)]
        arguments += ["--connections", str(args.connections), "--seed", str(args.seed)]
        loader = own_worker(*arguments)
        slots = loader.receive(30)["slots"]
        print(f"soak: {args.connections} connections for {args.minutes:g} min; slots {slots}")
        print(
            "    t  server RSS    in use  Python blocks  connections  server CPU  load CPU"
            "   load RSS  errors"
        )
        started = time.monotonic()
        cpu = (cpu_seconds(spid), cpu_seconds(loader.pid))
        last = started
        next_sample = started + args.sample_interval
        while True:
            now = time.monotonic()
            if now - started >= duration:
                break
            time.sleep(max(0.0, min(next_sample, started + duration) - now))
            now = time.monotonic()
            if now < next_sample:
                continue
            next_sample += args.sample_interval
            rss = rss_bytes(spid)
            stats = ask(server, "stats")
            traffic = ask(loader, "stats")
            used = (cpu_seconds(spid), cpu_seconds(loader.pid))
            sample = {
                "t": round(now - started, 1),
                "rss": rss,
                "connections": stats["connections"],
                "handlers": stats["handlers"],
                "server_cpu": (used[0] - cpu[0]) / (now - last),
                "load_cpu": (used[1] - cpu[1]) / (now - last),
                "load_rss": rss_bytes(loader.pid),
                "errors": sum(traffic["errors"].values()),
                **stats["heap"],
            }
            cpu, last = used, now
            samples.append(sample)
            print(
                f"{sample['t']:5.0f}  {mib(rss):>10}  {mib(sample.get('malloc_in_use', 0)):>8}"
                f"  {sample['python_blocks']:13,}  {sample['connections']:11,}"
                f"  {sample['server_cpu']:9.0%}  {sample['load_cpu']:8.0%}"
                f"  {mib(sample['load_rss']):>9}  {sample['errors']:6}",
                flush=True,
            )
        elapsed = time.monotonic() - started
        final = ask(loader, "stop", STOP_TIMEOUT + 30)
        loader.close()
        drained = wait_drained(server)
        rss_drained = rss_bytes(spid)
        trimmed = ask(server, "trim")
        rss_trimmed = rss_bytes(spid)
        closed = ask(server, "close", 60)
        server_log = [line.rstrip() for line in server.errors if line]
    finally:
        if loader is not None:
            loader.close()
        server.close()

    verdict = judge(samples, duration)
    heap_verdict = judge(samples, duration, "malloc_in_use")
    problems = dict(final["errors"])
    if drained["connections"] or drained["handlers"]:
        problems["server: left after the load closed everything"] = (
            drained["connections"] + drained["handlers"]
        )
    log_errors = [line for line in server_log if "Traceback" in line or "ERROR" in line]
    if log_errors:
        problems["server: errors logged"] = len(log_errors)
    server_stats = closed["stats"]
    if server_stats.get("handler exceptions"):
        problems["server: handler exceptions"] = server_stats["handler exceptions"]
    report = {
        "benchmark": "soak",
        **machine,
        "minutes": args.minutes,
        "elapsed_seconds": elapsed,
        "population": args.connections,
        "slots": slots,
        "sample_interval": args.sample_interval,
        "samples": samples,
        "verdict": verdict,
        "heap_verdict": heap_verdict,
        "server_gc_interval": args.server_gc,
        "load": final,
        "server": {"stats": server_stats, "close_codes": closed["codes"]},
        "server_after_load": drained,
        "rss_after_load": rss_drained,
        "rss_after_trim": rss_trimmed,
        "heap_after_trim": trimmed["heap"],
        "server_log": server_log[:50],
        "problems": problems,
    }
    print_summary(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    failed = bool(problems) or verdict["verdict"] not in ("flat", "too short to judge")
    return 1 if failed else 0


def wait_drained(server: Worker) -> dict[str, Any]:
    """The server's state once its connections are gone (or after 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        state = ask(server, "collect")
        if (not state["connections"] and not state["handlers"]) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def print_summary(report: dict[str, Any]) -> None:
    samples = report["samples"]
    print("\nserver RSS samples (t s: MiB):")
    cells = [f"{s['t']:5.0f}: {s['rss'] / (1 << 20):6.1f}" for s in samples]
    for start in range(0, len(cells), 8):
        print("  " + "   ".join(cells[start : start + 8]))
    if samples:
        rss = [s["rss"] for s in samples]
        print(
            f"RSS min {mib(min(rss))}, median {mib(statistics.median(rss))}, max {mib(max(rss))};"
            f" after the load: {mib(report['rss_after_load'])}, after malloc_trim: "
            f"{mib(report['rss_after_trim'])}"
        )
        heap_after = report["server_after_load"]["heap"]
        if "malloc_in_use" in heap_after:
            print(
                f"allocated (malloc) with no connection left: "
                f"{mib(heap_after['malloc_in_use'])} in use, {mib(heap_after['malloc_free'])} "
                f"free; Python blocks {heap_after['python_blocks']:,}"
            )
        server_cpu = statistics.mean(s["server_cpu"] for s in samples)
        load_cpu = statistics.mean(s["load_cpu"] for s in samples)
        print(f"CPU: server {server_cpu:.0%}, load {load_cpu:.0%} of a core on average")
    verdict = report["verdict"]
    print(f"\nverdict: {verdict['verdict']} ({verdict['rule']})")
    print_trend(verdict)
    heap_verdict = report["heap_verdict"]
    print(
        f"heap in use (mallinfo2, not judged: tells a leak from memory kept for reuse): "
        f"{heap_verdict['verdict']}"
    )
    print_trend(heap_verdict)
    print_counts(report)


def print_trend(verdict: dict[str, Any]) -> None:
    if "ratio" in verdict:
        print(
            f"  second quarter median {mib(verdict['second_quarter_median'])}, last quarter "
            f"{mib(verdict['last_quarter_median'])} (ratio {verdict['ratio']:.3f}); trend "
            f"{verdict['slope_bytes_per_minute'] / 1024:+,.1f} KiB/min = "
            f"{verdict['trend_over_window']:+.1%} over {verdict['window_seconds'] / 60:.1f} min"
        )


def print_counts(report: dict[str, Any]) -> None:
    counts = report["load"]["counts"]
    opened = sum(v for k, v in counts.items() if k.startswith("opened "))
    closed = sum(v for k, v in counts.items() if k.startswith("closed "))
    print(
        f"\nload: {opened:,} connections opened, {closed:,} closed; "
        f"{counts.get('sent', 0):,} messages sent ({mib(counts.get('bytes sent', 0))}), "
        f"{counts.get('received', 0):,} received ({mib(counts.get('bytes received', 0))})"
    )
    for key in sorted(counts):
        print(f"  {key}: {counts[key]:,}")
    for key, value in sorted(report["load"]["maxima"].items()):
        print(f"  max {key}: {value:,}")
    server = report["server"]
    print("server: " + ", ".join(f"{k} {v:,}" for k, v in sorted(server["stats"].items())))
    print(
        "server close codes: " + ", ".join(f"{k}: {v:,}" for k, v in server["close_codes"].items())
    )
    after = report["server_after_load"]
    print(
        f"server after the load: {after['connections']} connections, {after['handlers']} handlers"
    )
    problems = report["problems"]
    print("errors: " + ("none" if not problems else ""))
    for key, value in sorted(problems.items()):
        print(f"  {key}: {value:,}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=300, help="the steady population")
    parser.add_argument("--sample-interval", type=float, default=10.0, help="seconds")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the JSON file to write")
    parser.add_argument(
        "--server-gc",
        type=float,
        help="the server calls gc.collect() every this many seconds (default: never)",
    )
    parser.add_argument("--role", choices=("runner", "server", "load"), default="runner")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ramp", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        raise_fd_limit()
        asyncio.run(serve(SERVER_PING_INTERVAL, args.server_gc))
    elif args.role == "load":
        raise_fd_limit()
        asyncio.run(load(args.port, args.connections, args.ramp, args.seed))
    else:
        sys.exit(run(args))


if __name__ == "__main__":
    main()
