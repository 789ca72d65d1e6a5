"""Fixtures for the Dart suite: the echo server of §3.0, raw peers, and bounded waits.

Every wait scales from :data:`SCALE`: set ``WSCHANNEL_TEST_TIMEOUT_SCALE`` (e.g. ``4``) to
stretch them on a slow machine. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from conftest import echo, wait_until, wait_until_sync

import wschannel
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server

T = TypeVar("T")

SCALE = float(os.environ.get("WSCHANNEL_TEST_TIMEOUT_SCALE", "1"))
"""The one constant every wait in this suite scales from."""
TIMEOUT = 5.0 * SCALE
"""How long something that should happen may take."""
SHORT = 0.2 * SCALE
"""A short interval: how long to wait for something that should not happen."""

KEY = "x3JJHMbDL1EzLkh9GBhXDw=="
"""The ``Sec-WebSocket-Key`` the Dart and shelf tests send."""
ACCEPT = "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
"""``sign_key(KEY)``, computed independently (dart-web-socket-channel.md §2.12)."""

OP_TEXT, OP_BINARY = 0x1, 0x2
OP_CLOSE, OP_PING = 0x8, 0x9


# The echo server of §3.0 (`echo`, and the `echo_server`/`echo_url` fixtures) is the one in
# tests/conftest.py.


@contextlib.contextmanager
def serve_in_thread(
    handler: Callable[[IOWebSocketChannel], Awaitable[None]], **options: Any
) -> Iterator[Server]:
    """Run ``wschannel.serve(handler)`` on an event loop in another thread (for sync tests)."""
    started: list[Server] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            async with wschannel.serve(handler, "127.0.0.1", 0, **options) as server:
                started.append(server)
                ready.set()
                await stop.wait()
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(TIMEOUT), "the threaded server did not start"
        if failure:
            raise failure[0]
        yield started[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT)
        loop.close()


@pytest.fixture
def threaded_echo_url() -> Iterator[str]:
    """The echo server on its own thread's event loop: for blocking clients."""
    with serve_in_thread(echo) as server:
        yield f"ws://127.0.0.1:{server.port}"


# Bounded waits.


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    """Await ``awaitable``, or fail with ``TimeoutError`` after ``timeout``."""
    return await asyncio.wait_for(awaitable, timeout)


async def next_message(subscription: AsyncIterator[T]) -> T:
    """The next message of an ``async for`` subscription, within :data:`TIMEOUT`."""
    return await within(anext(subscription))


async def drain(stream: AsyncIterable[T]) -> list[T]:
    """Every remaining message until the stream ends, within :data:`TIMEOUT`."""

    async def collect() -> list[T]:
        return [message async for message in stream]

    return await within(collect())


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds, failing after :data:`TIMEOUT`."""
    await wait_until(condition, TIMEOUT)


def eventually_sync(condition: Callable[[], bool]) -> None:
    """:func:`eventually` for a thread that may block."""
    wait_until_sync(condition, TIMEOUT)


# HTTP by hand.


def upgrade_request(
    *,
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[str, str]] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """An HTTP request head; ``headers`` default to the shelf tests' upgrade headers."""
    if headers is None:
        headers = upgrade_headers()
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_headers(**replace: str | None) -> list[tuple[str, str]]:
    """The shelf tests' headers; ``name=None`` drops one, ``name="value"`` replaces or adds."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in replace.items():
        header = name.replace("_", "-")
        for existing in list(headers):
            if existing.lower() == header.lower():
                del headers[existing]
        if value is not None:
            headers[header] = value
    return list(headers.items())


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """Read an HTTP head: its first line and its headers (lower-case names)."""
    head = await within(reader.readuntil(b"\r\n\r\n"))
    first, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return first, headers


async def http_exchange(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """Send a request head to 127.0.0.1:``port``; the response's status and headers."""
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port))
    try:
        writer.write(request)
        await writer.drain()
        status_line, headers = await read_head(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return int(status_line.split()[1]), headers


async def accept_upgrade(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, protocol: str | None = None
) -> dict[str, str]:
    """Answer a WebSocket upgrade by hand (RFC 6455 §4.2.2); returns the request headers."""
    _, headers = await read_head(reader)
    accept = wschannel.sign_key(headers["sec-websocket-key"])
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    )
    if protocol is not None:
        response += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    writer.write((response + "\r\n").encode("latin-1"))
    await writer.drain()
    return headers


# Frames by hand (RFC 6455 §5.2).


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = None
) -> bytes:
    """One frame; ``mask`` (4 bytes) masks it as a client must."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head.append(mask_bit | length)
    elif length < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if mask is None:
        return bytes(head) + payload
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes(head) + mask + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one frame: its opcode, its (unmasked) payload, and whether it was masked."""
    first, second = await within(reader.readexactly(2))
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await within(reader.readexactly(2)))
    elif length == 127:
        (length,) = struct.unpack("!Q", await within(reader.readexactly(8)))
    masked = bool(second & 0x80)
    mask = await within(reader.readexactly(4)) if masked else b"\0\0\0\0"
    data = await within(reader.readexactly(length))
    return first & 0x0F, bytes(byte ^ mask[i % 4] for i, byte in enumerate(data)), masked


def parse_close(payload: bytes) -> tuple[int, str]:
    """A close frame's code and reason (1005 and ``''`` when it has no code)."""
    if not payload:
        return 1005, ""
    (code,) = struct.unpack("!H", payload[:2])
    return code, payload[2:].decode()


# Raw peers: TCP servers that speak HTTP and frames by hand.

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server on 127.0.0.1 running ``handler`` per connection.

    ``disconnected`` resolves once a client has closed its end of the connection (EOF), so
    a test can tell that a client gave up on an attempt.
    """

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[Any]] = set()
        self.connected = asyncio.get_running_loop().create_future()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.append(writer)
        if not self.connected.done():
            self.connected.set_result(None)
        try:
            await self.handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        pending = {task for task in self.handlers if not task.done()}
        if pending:
            _, late = await asyncio.wait(pending, timeout=TIMEOUT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self.server.wait_closed()


StartRaw = Callable[[RawHandler], Awaitable[RawServer]]


@pytest.fixture
async def raw_server() -> AsyncIterator[StartRaw]:
    """Start :class:`RawServer` instances; all are stopped after the test."""
    servers: list[RawServer] = []

    async def start(handler: RawHandler) -> RawServer:
        server = RawServer(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def read_until_eof(reader: asyncio.StreamReader) -> None:
    """Read and discard until the peer closes its end."""
    while await reader.read(65536):
        pass


__all__ = [
    "ACCEPT",
    "KEY",
    "SHORT",
    "TIMEOUT",
    "Message",
    "RawServer",
    "StartRaw",
    "accept_upgrade",
    "close_payload",
    "drain",
    "echo",
    "eventually",
    "eventually_sync",
    "frame",
    "http_exchange",
    "next_message",
    "parse_close",
    "read_frame",
    "read_head",
    "read_until_eof",
    "serve_in_thread",
    "upgrade_headers",
    "upgrade_request",
    "within",
]
