"""The harness of the behaviour suite (``tests/test_behaviour.py``): every flavour of wschannel
channel as "our side", and a scripted raw peer that judges it.

The test body runs in the test's own thread and is synchronous. Our side runs where its
flavour runs: an asyncio, uvloop or trio event loop in a background thread (:class:`Runner`),
or the blocking API's own threads. :class:`Side` is the one interface the scenarios use to
drive it (``add``, ``close``, ``consume``, ``wait_done``...), whatever the flavour.

The peer is plain blocking sockets over a real TCP connection on 127.0.0.1 (:class:`RawPeer`):
it sends hand-built frames (masked when it is the client) and parses what it receives,
checking the masking our side owes its role. For :func:`wschannel.testing.fake_pair`, which
has no wire, :class:`FakePeer` plays the other in-memory socket with the same methods, and
maps its events onto frames (a message is a text or binary frame, ``CloseReceived`` a close
frame), so the scenarios compare the same values.

Flavours (:data:`FLAVOURS`, with the roles our side can take):

- ``asyncio``, ``uvloop``: :meth:`wschannel.io.IOWebSocketChannel.connect` (client) and
  :func:`wschannel.serve` (server), on the default event loop and on uvloop's;
- ``bytestream-asyncio``, ``bytestream-anyio``, ``bytestream-trio``:
  :func:`wschannel.bytestream.over` on a TCP connection made by hand (no HTTP upgrade), over
  asyncio streams, an anyio socket stream (asyncio backend) and a trio socket stream, both
  roles (``server_side``);
- ``trio``: :func:`wschannel.trio.connect` (client) and :func:`wschannel.trio.serve`
  (server), the opening handshakes included;
- ``sync``: :func:`wschannel.sync.connect` and :func:`wschannel.sync.serve`;
- ``adapter``: :class:`~wschannel.adapter.AdapterWebSocketChannel` over
  :meth:`IOWebSocket.connect <wschannel.adapter.IOWebSocket.connect>` (client);
- ``fake_pair``: :class:`~wschannel.adapter.AdapterWebSocketChannel` over one socket of
  :func:`wschannel.testing.fake_pair`, the peer holding the other (role ``memory``);
- ``browser``: :class:`~wschannel.html.HtmlWebSocketChannel` under Pyodide in Node, whose
  ``WebSocket`` has the browser's interface (client): :class:`BrowserAgent` runs there and
  :class:`BrowserSide` drives it over the Node process's stdin and stdout.

Every wait is bounded and scales with ``WSCHANNEL_TEST_TIMEOUT_SCALE`` (see ``conftest.py``);
a wait that runs out raises :class:`Timeout`, an :class:`AssertionError`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import gc
import inspect
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import anyio.abc
import trio
from conftest import TIMEOUT

import wschannel
import wschannel.sync
import wschannel.trio
from wschannel import WebSocketChannel
from wschannel.adapter import (
    AdapterWebSocketChannel,
    BinaryDataReceived,
    CloseReceived,
    IOWebSocket,
    TextDataReceived,
)
from wschannel.bytestream import over
from wschannel.exceptions import StateError, WebSocketConnectionClosed
from wschannel.html import HtmlWebSocketChannel
from wschannel.io import IOWebSocketChannel
from wschannel.status import NO_STATUS_RECEIVED
from wschannel.sync import SyncWebSocketChannel
from wschannel.testing import FakeWebSocket, fake_pair

T = TypeVar("T")

Message = str | bytes

FLAVOURS: Final[dict[str, tuple[str, ...]]] = {
    "asyncio": ("client", "server"),
    "uvloop": ("client", "server"),
    "bytestream-asyncio": ("client", "server"),
    "bytestream-anyio": ("client", "server"),
    "bytestream-trio": ("client", "server"),
    "trio": ("client", "server"),
    "sync": ("client", "server"),
    "adapter": ("client",),
    "fake_pair": ("memory",),
    "browser": ("client",),
}
"""Every flavour, and the roles our side takes in it."""

WIRE_FLAVOURS: Final = frozenset(name for name in FLAVOURS if name != "fake_pair")


class Outcome(Protocol):
    """What a background operation (``pipe()``) returns: a concurrent future's two methods."""

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> None: ...


class Timeout(AssertionError):
    """Something that should have happened did not, within its bound."""


class Closed(AssertionError):
    """The peer found the connection closed where a frame was expected."""


# Frames (RFC 6455 §5.2).

TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA


@dataclass(frozen=True)
class Frame:
    """One frame, sent or received by the peer. ``masked=None`` (to send): as the peer's role
    requires (masked when the peer is the client)."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool | None = None

    @property
    def close(self) -> tuple[int | None, str]:
        """A close frame's code (``None`` without one) and reason."""
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        if not self.payload:
            return None, ""
        return int.from_bytes(self.payload[:2], "big"), self.payload[2:].decode()

    @property
    def message(self) -> Message:
        """A data frame's message: ``str`` for text, ``bytes`` for binary."""
        assert self.opcode in (TEXT, BINARY), f"not a data frame: {self}"
        return self.payload.decode() if self.opcode == TEXT else self.payload

    def encode(self, masked: bool) -> bytes:
        first = (0x80 if self.fin else 0) | self.rsv | self.opcode
        length = len(self.payload)
        mask_bit = 0x80 if masked else 0
        if length < 126:
            head = bytes([first, mask_bit | length])
        elif length < 1 << 16:
            head = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
        else:
            head = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
        if not masked:
            return head + self.payload
        mask = os.urandom(4)
        return head + mask + _apply_mask(self.payload, mask)

    def __repr__(self) -> str:
        payload = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return f"Frame({self.opcode:#x}, {payload!r}, fin={self.fin}, rsv={self.rsv:#x})"


def _apply_mask(payload: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def text(message: str) -> Frame:
    return Frame(TEXT, message.encode())


def binary(data: bytes) -> Frame:
    return Frame(BINARY, data)


def close_frame(code: int | None = None, reason: str = "") -> Frame:
    return Frame(CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason.encode())


def pong(payload: bytes = b"") -> Frame:
    return Frame(PONG, payload)


# Event loops in a background thread.


class Runner:
    """An event loop in its own thread; the test thread calls into it."""

    def run(self, function: Callable[[], Awaitable[T]], timeout: float = TIMEOUT) -> T:
        """Await ``function()`` in the loop; its result, or :class:`Timeout` after ``timeout``."""
        raise NotImplementedError

    def call(self, function: Callable[[], T]) -> T:
        """Call ``function()`` in the loop's thread; its result (or its exception)."""
        raise NotImplementedError

    def spawn(self, function: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``function()`` in a background task; a future of its outcome."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


async def _await(function: Callable[[], Awaitable[T]]) -> T:
    return await function()


class AsyncioRunner(Runner):
    """An asyncio event loop (the default one, or uvloop's) running in a thread."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = factory()
        self.thread = threading.Thread(target=self._main, name="behaviour-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, function: Callable[[], Awaitable[T]], timeout: float = TIMEOUT) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(_await(function), timeout)

        future = asyncio.run_coroutine_threadsafe(bounded(), self.loop)
        try:
            return future.result(timeout + TIMEOUT)
        except TimeoutError as exc:
            raise Timeout(f"not done within {timeout:.2f} s") from exc

    def call(self, function: Callable[[], T]) -> T:
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def invoke() -> None:
            try:
                result.set_result(function())
            except BaseException as exc:
                result.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return result.result(TIMEOUT)

    def spawn(self, function: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(_await(function), self.loop)

    def stop(self) -> None:
        async def cancel_tasks() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=TIMEOUT)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_tasks(), self.loop).result(2 * TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        if not self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


class TrioRunner(Runner):
    """``trio.run`` in a thread, with a nursery for background tasks."""

    def __init__(self) -> None:
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.thread.start()
        if not self._started.wait(TIMEOUT):
            raise Timeout("trio did not start")

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._started.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        assert self._token is not None
        return self._token

    def run(self, function: Callable[[], Awaitable[T]], timeout: float = TIMEOUT) -> T:
        async def bounded() -> T:
            with trio.fail_after(timeout):
                return await function()

        try:
            return trio.from_thread.run(bounded, trio_token=self.token)
        except trio.TooSlowError as exc:
            raise Timeout(f"not done within {timeout:.2f} s") from exc

    def call(self, function: Callable[[], T]) -> T:
        return trio.from_thread.run_sync(function, trio_token=self.token)

    def spawn(self, function: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def task() -> None:
            try:
                outcome.set_result(await function())
            except trio.Cancelled as exc:
                outcome.set_exception(exc)
                raise
            except BaseException as exc:
                outcome.set_exception(exc)

        def start() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(task)

        self.call(start)
        return outcome

    def stop(self) -> None:
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.call(stop.set)
        self.thread.join(TIMEOUT)


# Our side.


class Consumer:
    """What a subscription to our side's stream received, for the test thread."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.ended = threading.Event()
        self.error: BaseException | None = None

    def next(self, timeout: float = TIMEOUT) -> Message:
        """The next message."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"no message came within {timeout:.2f} s") from None

    def rest(self, timeout: float = TIMEOUT) -> list[Message]:
        """Wait for the stream's end; the messages not taken yet."""
        if not self.ended.wait(timeout):
            raise Timeout(f"the stream did not end within {timeout:.2f} s")
        if self.error is not None:
            raise AssertionError(f"the stream failed with {self.error!r}") from self.error
        rest = []
        while not self.messages.empty():
            rest.append(self.messages.get_nowait())
        return rest


class Side:
    """Our side of one connection: a wschannel channel, driven from the test thread."""

    def add(self, message: Message) -> None:
        """``sink.add(message)``; raises what it raises."""
        raise NotImplementedError

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """``sink.close(code, reason)`` (not waiting for ``done``); raises what it raises."""
        raise NotImplementedError

    def wait_done(self, timeout: float = TIMEOUT) -> BaseException | None:
        """Wait for ``sink.done``; the exception it failed with, ``None`` if it succeeded."""
        raise NotImplementedError

    def consume(self, answer_prefix: str | None = None) -> Consumer:
        """Subscribe to the stream now, then take every message in the background; with
        ``answer_prefix``, the consumer answers each one as it takes it, with
        ``f"{answer_prefix}{message!s}"``."""
        raise NotImplementedError

    @property
    def close_code(self) -> int | None:
        raise NotImplementedError

    @property
    def close_reason(self) -> str | None:
        raise NotImplementedError

    def add_error(self, error: BaseException) -> None:
        raise NotImplementedError

    def add_stream(self, messages: Iterable[Message]) -> None:
        """``await sink.add_stream(source of messages)``."""
        raise NotImplementedError

    def pipe(self, other: Side) -> Outcome:
        """Start ``channel.pipe(other.channel)``; a future of its outcome."""
        raise NotImplementedError


class AsyncSide(Side):
    """A channel living in a :class:`Runner`'s event loop (asyncio, uvloop or trio)."""

    def __init__(self, runner: Runner, channel: WebSocketChannel) -> None:
        self.runner = runner
        self.channel = channel

    def add(self, message: Message) -> None:
        self.runner.call(lambda: self.channel.sink.add(message))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.runner.call(lambda: _ignore(self.channel.sink.close(code, reason)))

    def wait_done(self, timeout: float = TIMEOUT) -> BaseException | None:
        async def wait() -> BaseException | None:
            try:
                await self.channel.sink.done
            except Exception as exc:
                return exc
            return None

        try:
            return self.runner.run(wait, timeout)
        except Timeout:
            raise Timeout(f"sink.done did not complete within {timeout:.2f} s") from None

    def consume(self, answer_prefix: str | None = None) -> Consumer:
        consumer = Consumer()
        subscription = self.runner.call(lambda: aiter(self.channel.stream))
        sink = self.channel.sink

        async def take() -> None:
            try:
                async for message in subscription:
                    consumer.messages.put(message)
                    if answer_prefix is not None:
                        sink.add(f"{answer_prefix}{message!s}")
            except BaseException as exc:
                consumer.error = exc
                raise
            finally:
                consumer.ended.set()

        self.runner.spawn(take)
        return consumer

    @property
    def close_code(self) -> int | None:
        return self.runner.call(lambda: self.channel.close_code)

    @property
    def close_reason(self) -> str | None:
        return self.runner.call(lambda: self.channel.close_reason)

    def add_error(self, error: BaseException) -> None:
        self.runner.call(lambda: self.channel.sink.add_error(error))

    def add_stream(self, messages: Iterable[Message]) -> None:
        items = list(messages)

        async def source() -> AsyncIterator[Message]:
            for item in items:
                yield item

        async def forward() -> None:
            await self.channel.sink.add_stream(source())

        self.runner.run(forward)

    def pipe(self, other: Side) -> Outcome:
        assert isinstance(other, AsyncSide) and other.runner is self.runner
        return self.runner.spawn(lambda: self.channel.pipe(other.channel))


def _ignore(result: object) -> None:
    """Drop a result (a ``close()`` future, awaited elsewhere through ``done``)."""


class SyncSide(Side):
    """A :class:`~wschannel.sync.SyncWebSocketChannel`, called directly from the test thread."""

    def __init__(self, channel: SyncWebSocketChannel) -> None:
        self.channel = channel

    def add(self, message: Message) -> None:
        self.channel.sink.add(message)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.channel.sink.close(code, reason)

    def wait_done(self, timeout: float = TIMEOUT) -> BaseException | None:
        concurrent.futures.wait([self.channel.sink.done], timeout)
        done = self.channel.sink.done
        if not done.done():
            raise Timeout(f"sink.done did not complete within {timeout:.2f} s")
        return done.exception()

    def consume(self, answer_prefix: str | None = None) -> Consumer:
        consumer = Consumer()
        subscription = iter(self.channel.stream)
        sink = self.channel.sink

        def take() -> None:
            try:
                for message in subscription:
                    consumer.messages.put(message)
                    if answer_prefix is not None:
                        sink.add(f"{answer_prefix}{message!s}")
            except BaseException as exc:
                consumer.error = exc
            finally:
                consumer.ended.set()

        threading.Thread(target=take, name="behaviour-consumer", daemon=True).start()
        return consumer

    @property
    def close_code(self) -> int | None:
        return self.channel.close_code

    @property
    def close_reason(self) -> str | None:
        return self.channel.close_reason

    def add_error(self, error: BaseException) -> None:
        self.channel.sink.add_error(error)

    def add_stream(self, messages: Iterable[Message]) -> None:
        self.channel.sink.add_stream(list(messages))  # blocks until they are all taken

    def pipe(self, other: Side) -> Outcome:
        assert isinstance(other, SyncSide)
        return self.channel.pipe(other.channel)


# The peer.


class Peer:
    """The other end, scripted by the test: sends frames, reads what our side sends."""

    wire: bool
    client: bool
    """Whether the peer is the WebSocket client (then it masks, and our side must not)."""

    def send(self, *frames: Frame) -> None:
        """Send ``frames`` (in one write, on the wire)."""
        raise NotImplementedError

    def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        """The next frame our side sent; :class:`Closed` if the connection ended first."""
        raise NotImplementedError

    def expect_eof(self, timeout: float = TIMEOUT) -> str:
        """Wait until our side ends the connection, with nothing more sent: ``'eof'`` (or
        ``'reset'``)."""
        raise NotImplementedError

    def answer_close(self, frame: Frame) -> None:
        """Answer our side's close frame with the same code (RFC 6455 §5.5.1)."""
        raise NotImplementedError

    def finish(self) -> None:
        """The close frames have crossed: the server closes TCP first (RFC 6455 §7.1.1), so a
        server peer closes it, a client peer waits for our side to."""
        raise NotImplementedError

    def reset(self) -> None:
        """Drop the connection abruptly (TCP RST)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """The next frame must be a close frame: its code and reason."""
        frame = self.read_frame(timeout)
        assert frame.opcode == CLOSE, f"expected a close frame, got {frame}"
        return frame.close

    def expect_message(self, timeout: float = TIMEOUT) -> Message:
        """The next frame must be a whole text or binary message: the message."""
        frame = self.read_frame(timeout)
        assert frame.opcode in (TEXT, BINARY) and frame.fin, f"expected a message, got {frame}"
        return frame.message


class RawPeer(Peer):
    """A peer over a blocking TCP socket, speaking WebSocket by hand."""

    wire = True

    def __init__(self, sock: socket.socket, *, client: bool) -> None:
        self.sock = sock
        self.client = client
        self.buffer = bytearray()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(True)

    # Reading.

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout("the peer received nothing more in time")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(1 << 16)
        except TimeoutError:
            raise Timeout("the peer received nothing more in time") from None

    def _receive_more(self, deadline: float, where: str) -> None:
        try:
            data = self._recv(deadline)
        except ConnectionResetError:
            raise Closed(f"the connection was reset {where}") from None
        if not data:
            raise Closed(f"the connection ended {where}")
        self.buffer += data

    def read_head(self, timeout: float = TIMEOUT) -> bytes:
        """An HTTP head, up to its blank line; what follows stays in the buffer."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._receive_more(deadline, "during the opening handshake")
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        return head

    def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        while (frame := self._parse_frame()) is None:
            self._receive_more(deadline, "where a frame was expected")
        # RFC 6455 §5.1: a client masks every frame, a server none.
        assert frame.masked is not self.client, (
            f"our side ({'server' if self.client else 'client'}) "
            f"{'masked' if frame.masked else 'did not mask'} {frame}"
        )
        return frame

    def _parse_frame(self) -> Frame | None:
        """The first whole frame in the buffer, taken out of it; ``None`` if it is not all
        there yet (so that a read that times out loses nothing)."""
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,) = struct.unpack_from("!H", buffer, 2)
            offset = 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buffer, 2)
            offset = 10
        masked = bool(second & 0x80)
        mask = bytes(buffer[offset : offset + 4]) if masked else b""
        offset += len(mask)
        if len(buffer) < offset + length:
            return None
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        if masked:
            payload = _apply_mask(payload, mask)
        return Frame(first & 0x0F, payload, bool(first & 0x80), first & 0x70, masked)

    def expect_eof(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        if self.buffer:
            raise AssertionError(f"bytes after the last frame: {bytes(self.buffer)!r}")
        try:
            data = self._recv(deadline)
        except ConnectionResetError:
            return "reset"
        if data:
            raise AssertionError(f"bytes after the last frame: {data!r}")
        return "eof"

    # Writing.

    def send(self, *frames: Frame) -> None:
        data = b"".join(
            frame.encode(self.client if frame.masked is None else frame.masked) for frame in frames
        )
        self.sock.sendall(data)

    def answer_close(self, frame: Frame) -> None:
        code, _ = frame.close
        self.send(close_frame(code))

    def finish(self) -> None:
        if self.client:
            assert self.expect_eof() == "eof"
        self.close()

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


_KEY: Final = base64.b64encode(b"behaviour suite!").decode()


def accept_upgrade(listener: socket.socket) -> RawPeer:
    """Accept one connection on ``listener`` and answer its upgrade by hand, with no
    extension: the peer as a server."""
    listener.settimeout(TIMEOUT)
    try:
        sock, _ = listener.accept()
    except TimeoutError:
        raise Timeout("our side did not connect") from None
    peer = RawPeer(sock, client=False)
    head = peer.read_head().decode("latin-1")
    key = next(
        line.partition(":")[2].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {wschannel.sign_key(key)}\r\n\r\n".encode()
    )
    return peer


def connect_upgrade(port: int) -> RawPeer:
    """Connect to our side's server and do the upgrade by hand, with no extension: the peer
    as a client."""
    sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
    peer = RawPeer(sock, client=True)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = peer.read_head()
    assert head.startswith(b"HTTP/1.1 101 "), head
    return peer


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        first = socket.create_connection(listener.getsockname()[:2], TIMEOUT)
        second, _ = listener.accept()
    first.settimeout(None)
    second.settimeout(None)
    return first, second


class FakePeer(Peer):
    """The other socket of :func:`wschannel.testing.fake_pair`, in the runner's loop.

    Messages are data frames; ``CloseReceived(code, reason)`` is a close frame (without a
    code for 1005); the end of the events is the connection's end. The fake has no closing
    handshake: a close ends both sides at once, so there is nothing to answer or wait for.
    """

    wire = False
    client = False

    def __init__(self, runner: Runner, socket: FakeWebSocket) -> None:
        self.runner = runner
        self.socket = socket
        self.events = socket.events

    def send(self, *frames: Frame) -> None:
        for frame in frames:
            if frame.rsv or not frame.fin or frame.masked is not None:
                raise ValueError(f"an in-memory socket cannot send {frame}")
            if frame.opcode == TEXT:
                self.runner.call(functools.partial(self.socket.send_text, frame.payload.decode()))
            elif frame.opcode == BINARY:
                self.runner.call(functools.partial(self.socket.send_bytes, frame.payload))
            elif frame.opcode == CLOSE:
                self.runner.run(functools.partial(self.socket.close, *frame.close))
            else:
                raise ValueError(f"an in-memory socket cannot send {frame}")

    def read_frame(self, timeout: float = TIMEOUT) -> Frame:
        async def next_event() -> object:
            try:
                return await anext(self.events)
            except StopAsyncIteration:
                return None

        event = self.runner.run(next_event, timeout)
        if event is None:
            raise Closed("the in-memory connection ended where a frame was expected")
        if isinstance(event, TextDataReceived):
            return text(event.text)
        if isinstance(event, BinaryDataReceived):
            return binary(event.data)
        assert isinstance(event, CloseReceived), event
        code = None if event.code == NO_STATUS_RECEIVED else event.code
        return close_frame(code, event.reason)

    def expect_eof(self, timeout: float = TIMEOUT) -> str:
        try:
            frame = self.read_frame(timeout)
        except Closed:
            return "eof"
        raise AssertionError(f"an event after the last one: {frame}")

    def answer_close(self, frame: Frame) -> None:
        code, _ = frame.close
        with contextlib.suppress(WebSocketConnectionClosed):  # closed by our side's close
            self.runner.run(lambda: self.socket.close(code))

    def finish(self) -> None:
        assert self.expect_eof() == "eof"

    def reset(self) -> None:
        raise NotImplementedError("an in-memory socket cannot be lost")

    def close(self) -> None:
        with contextlib.suppress(WebSocketConnectionClosed):
            self.runner.run(lambda: self.socket.close())


# Labs: one per test, for one flavour and role.


class Lab:
    """Opens connections of one flavour, our side in one role, and tears everything down."""

    def __init__(self, flavour: str, role: str) -> None:
        assert role in FLAVOURS[flavour], (flavour, role)
        self.flavour = flavour
        self.role = role
        self.peers: list[Peer] = []
        self.sides: list[Side] = []
        self.cleanups: list[Callable[[], object]] = []

    @property
    def wire(self) -> bool:
        return self.flavour in WIRE_FLAVOURS

    def open(self, **options: Any) -> tuple[Side, Peer]:
        """A new connection: our side (with ``options``: ``ping_interval``,
        ``close_timeout``, ``max_message_size``) and the peer."""
        side, peer = self._open(options)
        self.sides.append(side)
        self.peers.append(peer)
        return side, peer

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        raise NotImplementedError

    def stop(self) -> None:
        """Close every peer (our sides then see their connection end), wait a little for our
        sides to finish, then stop servers and loops."""
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.close()
        for side in self.sides:
            with contextlib.suppress(Exception):
                side.wait_done(TIMEOUT)
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        # Collect what the test left (a coroutine a failed pipe() never awaited) while its
        # warning filters still apply.
        gc.collect()


class AsyncioLab(Lab):
    """``IOWebSocketChannel.connect`` and ``wschannel.serve``, on asyncio or uvloop."""

    def __init__(self, flavour: str, role: str) -> None:
        super().__init__(flavour, role)
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
        if flavour == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        self.runner = AsyncioRunner(factory)
        self.cleanups.append(self.runner.stop)

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        if self.role == "client":
            with socket.create_server(("127.0.0.1", 0)) as listener:
                url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
                channel = self.runner.call(lambda: self.connect(url, options))
                peer = accept_upgrade(listener)
            self.runner.run(lambda: channel.ready)
            return AsyncSide(self.runner, channel), peer
        channels: queue.Queue[WebSocketChannel] = queue.Queue()
        # The handler holds its channel until the test is over: a handler that returns has
        # its channel closed by the server, which would change what the sink does.
        release = self.runner.call(asyncio.Event)

        async def handler(channel: IOWebSocketChannel) -> None:
            channels.put(channel)
            await release.wait()

        async def start() -> wschannel.server.Server:
            return await wschannel.serve(handler, "127.0.0.1", 0, **options)

        server = self.runner.run(start)
        self.cleanups.append(lambda: self.runner.run(server.close, 3 * TIMEOUT))
        self.cleanups.append(lambda: self.runner.call(release.set))
        peer = connect_upgrade(server.port)
        try:
            channel = channels.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Timeout("the server's handler did not start") from None
        return AsyncSide(self.runner, channel), peer

    def connect(self, url: str, options: dict[str, Any]) -> WebSocketChannel:
        return IOWebSocketChannel.connect(url, **options)


class AdapterLab(AsyncioLab):
    """``AdapterWebSocketChannel(IOWebSocket.connect(url))``, the client on the wire."""

    def connect(self, url: str, options: dict[str, Any]) -> WebSocketChannel:
        return AdapterWebSocketChannel(IOWebSocket.connect(url, **options))


class ByteStreamLab(Lab):
    """``over(reader, writer)`` on a TCP connection whose upgrade is taken as done."""

    def __init__(self, flavour: str, role: str) -> None:
        super().__init__(flavour, role)
        self.runner: Runner = (
            TrioRunner() if flavour == "bytestream-trio" else AsyncioRunner(asyncio.new_event_loop)
        )
        self.cleanups.append(self.runner.stop)

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        ours, theirs = tcp_pair()
        server_side = self.role == "server"
        flavour = self.flavour

        async def make() -> WebSocketChannel:
            if flavour == "bytestream-asyncio":
                reader, writer = await asyncio.open_connection(sock=ours)
                return over(reader, writer, server_side=server_side, **options)
            if flavour == "bytestream-anyio":
                stream = await anyio.abc.SocketStream.from_socket(ours)
                return over(stream, stream, server_side=server_side, **options)
            trio_stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            return over(trio_stream, trio_stream, server_side=server_side, **options)

        channel = self.runner.run(make)
        return AsyncSide(self.runner, channel), RawPeer(theirs, client=server_side)


class TrioLab(Lab):
    """``wschannel.trio.connect`` and ``wschannel.trio.serve``, in a trio thread."""

    def __init__(self, flavour: str, role: str) -> None:
        super().__init__(flavour, role)
        self.runner = TrioRunner()
        self.cleanups.append(self.runner.stop)

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        if self.role == "client":
            with socket.create_server(("127.0.0.1", 0)) as listener:
                url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
                # The handshake runs in the awaiting task: the peer answers it meanwhile.
                connecting = self.runner.spawn(lambda: wschannel.trio.connect(url, **options))
                peer = accept_upgrade(listener)
                return AsyncSide(self.runner, connecting.result(TIMEOUT)), peer
        channels: queue.Queue[WebSocketChannel] = queue.Queue()
        servers: queue.Queue[wschannel.trio.Server] = queue.Queue()
        # As for the asyncio server: the handler holds its channel until the test is over.
        release = self.runner.call(trio.Event)
        stop = self.runner.call(trio.Event)

        async def handler(channel: wschannel.trio.ServerChannel) -> None:
            channels.put(channel)
            await release.wait()

        async def serve() -> None:
            async with wschannel.trio.serve(handler, "127.0.0.1", 0, **options) as server:
                servers.put(server)
                await stop.wait()

        serving = self.runner.spawn(serve)

        def close() -> None:
            self.runner.call(release.set)
            self.runner.call(stop.set)
            serving.result(3 * TIMEOUT)

        self.cleanups.append(close)
        try:
            server = servers.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Timeout("the trio server did not start") from None
        peer = connect_upgrade(server.port)
        try:
            channel = channels.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Timeout("the server's handler did not start") from None
        return AsyncSide(self.runner, channel), peer


class SyncLab(Lab):
    """``wschannel.sync.connect`` and ``wschannel.sync.serve``."""

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        if self.role == "client":
            with socket.create_server(("127.0.0.1", 0)) as listener:
                url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
                connecting: concurrent.futures.Future[SyncWebSocketChannel] = (
                    concurrent.futures.Future()
                )

                def connect() -> None:
                    try:
                        connecting.set_result(wschannel.sync.connect(url, **options))
                    except BaseException as exc:
                        connecting.set_exception(exc)

                threading.Thread(target=connect, daemon=True).start()
                peer = accept_upgrade(listener)
                return SyncSide(connecting.result(TIMEOUT)), peer
        channels: queue.Queue[SyncWebSocketChannel] = queue.Queue()
        release = threading.Event()  # as for the asyncio server: the handler holds on

        def handler(channel: SyncWebSocketChannel) -> None:
            channels.put(channel)
            release.wait(10 * TIMEOUT)

        server = wschannel.sync.serve(handler, "127.0.0.1", 0, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def stop() -> None:
            release.set()
            server.shutdown(TIMEOUT)
            thread.join(TIMEOUT)

        self.cleanups.append(stop)
        peer = connect_upgrade(server.port)
        try:
            channel = channels.get(timeout=TIMEOUT)
        except queue.Empty:
            raise Timeout("the server's handler did not start") from None
        return SyncSide(channel), peer


class FakeLab(Lab):
    """``AdapterWebSocketChannel`` over one socket of ``fake_pair()``; the peer has the other."""

    def __init__(self, flavour: str, role: str) -> None:
        super().__init__(flavour, role)
        self.runner = AsyncioRunner(asyncio.new_event_loop)
        self.cleanups.append(self.runner.stop)

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        # Its close is instant on both sides: there is no closing handshake to time out.
        options.pop("close_timeout", None)
        assert not options, f"fake_pair takes no options: {options}"
        ours, theirs = fake_pair()
        channel = self.runner.call(lambda: AdapterWebSocketChannel(ours))
        return AsyncSide(self.runner, channel), FakePeer(self.runner, theirs)


def make_lab(flavour: str, role: str, agent: NodeAgent | None = None) -> Lab:
    if flavour == "browser":
        assert agent is not None
        return BrowserLab(flavour, role, agent)
    if flavour in ("asyncio", "uvloop"):
        return AsyncioLab(flavour, role)
    if flavour == "adapter":
        return AdapterLab(flavour, role)
    if flavour.startswith("bytestream-"):
        return ByteStreamLab(flavour, role)
    if flavour == "trio":
        return TrioLab(flavour, role)
    if flavour == "sync":
        return SyncLab(flavour, role)
    if flavour == "fake_pair":
        return FakeLab(flavour, role)
    raise ValueError(flavour)


# The browser flavour: wschannel.html under Pyodide, in Node (whose --experimental-websocket
# global WebSocket has the browser's interface). Our side lives in that Node process; the
# test drives it through an agent, one JSON request per line, and the raw peer judges it as
# it judges the others. The agent's source below is shipped into Pyodide as it is.

PYODIDE_DIR: Final = Path(
    os.environ.get(
        "WSCHANNEL_PYODIDE_DIR",
        Path(__file__).resolve().parent / "browser" / "node" / "node_modules" / "pyodide",
    )
)
"""Pyodide's npm package (``tests/browser/setup.sh`` installs it there), or
``WSCHANNEL_PYODIDE_DIR``."""
PACKAGE: Final = Path(wschannel.__file__).resolve().parent
NODE: Final = shutil.which("node")
NODE_FLAG: Final = "--experimental-websocket"
_AGENT_PREFIX: Final = "@@behaviour "


def browser_missing() -> str | None:
    """Why the browser flavour cannot run here, or ``None`` if it can."""
    if not (PYODIDE_DIR / "pyodide.mjs").is_file():
        return f"Pyodide is missing from {PYODIDE_DIR} (tests/browser/setup.sh)"
    if NODE is None:
        return "Node is missing"
    try:
        probe = subprocess.run(
            [NODE, NODE_FLAG, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "Node does not run"
    return None if probe.returncode == 0 else f"Node 20.10+ with {NODE_FLAG} is needed"


class RemoteError(Exception):
    """The error ``add_error`` gets in the browser, standing for the test's (``token``)."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def encode_message(message: Any) -> dict[str, str]:
    if isinstance(message, str):
        return {"t": message}
    return {"b": base64.b64encode(bytes(message)).decode()}


def decode_message(value: dict[str, str]) -> Message:
    return value["t"] if "t" in value else base64.b64decode(value["b"])


class BrowserAgent:
    """Runs inside Pyodide: our side of the browser flavour, for :class:`BrowserSide`.

    Each request is ``{"op": name, "args": {...}}``; the answer is ``{"result": value}``, or
    ``{"raise": exception class name, "message": str}``. Channels, consumers and pipes are
    kept by number.
    """

    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}
        self.count = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, line: str) -> str:
        request = json.loads(line)
        try:
            result = await getattr(self, "op_" + request["op"])(**request["args"])
        except Exception as exc:
            return json.dumps({"raise": type(exc).__name__, "message": str(exc)})
        return json.dumps({"result": result})

    def keep(self, value: object) -> int:
        self.count += 1
        self.objects[self.count] = value
        return self.count

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def op_open(self, url: str, options: dict[str, Any]) -> int:
        return self.keep(HtmlWebSocketChannel.connect(url, **options))

    async def op_ready(self, channel: int) -> None:
        await self.objects[channel].ready

    async def op_add(self, channel: int, message: dict[str, str]) -> None:
        self.objects[channel].sink.add(decode_message(message))

    async def op_close(self, channel: int, code: int | None, reason: str | None) -> None:
        self.objects[channel].sink.close(code, reason)

    async def op_wait_done(self, channel: int, timeout: float) -> dict[str, str] | None:
        done = self.objects[channel].sink.done
        await asyncio.wait([done], timeout=timeout)
        if not done.done():
            raise TimeoutError(f"sink.done did not complete within {timeout:.2f} s")
        error = done.exception()
        if error is None:
            return None
        if isinstance(error, RemoteError):
            return {"token": error.token}
        return {"repr": repr(error)}

    async def op_close_state(self, channel: int) -> list[Any]:
        channel_object = self.objects[channel]
        return [channel_object.close_code, channel_object.close_reason]

    async def op_add_error(self, channel: int, token: str) -> None:
        self.objects[channel].sink.add_error(RemoteError(token))

    async def op_add_stream(self, channel: int, messages: list[dict[str, str]]) -> None:
        async def source() -> AsyncIterator[Message]:
            for message in messages:
                yield decode_message(message)

        await self.objects[channel].sink.add_stream(source())

    async def op_consume(self, channel: int, answer_prefix: str | None) -> int:
        channel_object = self.objects[channel]
        subscription = aiter(channel_object.stream)
        record: dict[str, Any] = {"queue": asyncio.Queue(), "ended": asyncio.Event(), "error": ""}

        async def take() -> None:
            try:
                async for message in subscription:
                    record["queue"].put_nowait(message)
                    if answer_prefix is not None:
                        channel_object.sink.add(f"{answer_prefix}{message!s}")
            except Exception as exc:
                record["error"] = repr(exc)
            finally:
                record["ended"].set()

        self.spawn(take())
        return self.keep(record)

    async def op_next(self, consumer: int, timeout: float) -> dict[str, str]:
        queue = self.objects[consumer]["queue"]
        return encode_message(await asyncio.wait_for(queue.get(), timeout))

    async def op_rest(self, consumer: int, timeout: float) -> dict[str, Any]:
        record = self.objects[consumer]
        await asyncio.wait_for(record["ended"].wait(), timeout)
        rest = []
        while not record["queue"].empty():
            rest.append(encode_message(record["queue"].get_nowait()))
        return {"messages": rest, "error": record["error"]}

    async def op_pipe(self, channel: int, other: int) -> int:
        async def pipe() -> None:
            await self.objects[channel].pipe(self.objects[other])

        return self.keep(self.spawn(pipe()))

    async def op_pipe_done(self, pipe: int) -> bool:
        return bool(self.objects[pipe].done())

    async def op_pipe_result(self, pipe: int, timeout: float) -> None:
        task = self.objects[pipe]
        await asyncio.wait([task], timeout=timeout)
        if not task.done():
            raise TimeoutError(f"pipe() did not end within {timeout:.2f} s")
        task.result()

    async def op_forget(self) -> None:
        """Close what the last test left, and forget it."""
        for value in self.objects.values():
            if isinstance(value, HtmlWebSocketChannel) and not value.sink.done.done():
                with contextlib.suppress(Exception):
                    value.sink.close()
        for task in list(self.tasks):
            task.cancel()
        self.objects.clear()


_AGENT_HEADER: Final = """\
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from wschannel.html import HtmlWebSocketChannel

Message = str | bytes

"""

_NODE_RUNNER: Final = """\
// The behaviour suite's Node side: loads Pyodide, writes the files it is given into its
// filesystem, imports the agent, then answers one JSON request per line (see flavours.py).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const PREFIX = "@@behaviour ";
const ROOT = "/behaviour";
const { loadPyodide } = await import(pathToFileURL(process.argv[2] + "/pyodide.mjs").href);
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
let agent = null;
for await (const line of lines) {
  const request = JSON.parse(line);
  if (request.files) {
    const pyodide = await loadPyodide();
    for (const [target, source] of Object.entries(request.files)) {
      const path = `${ROOT}/${target}`;
      pyodide.FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
      pyodide.FS.writeFile(path, readFileSync(source));
    }
    pyodide.runPython(`import sys; sys.path.insert(0, ${JSON.stringify(ROOT)})`);
    agent = pyodide.pyimport("behaviour_agent").agent;
    process.stdout.write(PREFIX + JSON.stringify({ result: pyodide.version }) + "\\n");
  } else {
    process.stdout.write(PREFIX + (await agent.handle(line)) + "\\n");
  }
}
process.exit(0);
"""

_EXCEPTIONS: Final[dict[str, type[BaseException]]] = {
    "StateError": StateError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "NotImplementedError": NotImplementedError,
    "AttributeError": AttributeError,
    "RuntimeError": RuntimeError,
    "TimeoutError": Timeout,
}


class NodeAgent:
    """``node`` running Pyodide with :class:`BrowserAgent`: one request at a time."""

    def __init__(self, workdir: Path) -> None:
        assert NODE is not None
        runner = workdir / "runner.mjs"
        runner.write_text(_NODE_RUNNER)
        agent = workdir / "behaviour_agent.py"
        agent.write_text(
            _AGENT_HEADER
            + "\n\n".join(
                inspect.getsource(item)
                for item in (RemoteError, encode_message, decode_message, BrowserAgent)
            )
            + "\n\nagent = BrowserAgent()\n"
        )
        files = {
            f"wschannel/{path.relative_to(PACKAGE).as_posix()}": str(path)
            for path in sorted(PACKAGE.rglob("*"))
            if path.is_file() and (path.suffix == ".py" or path.name == "py.typed")
        }
        files["behaviour_agent.py"] = str(agent)
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr = bytearray()
        self.process = subprocess.Popen(
            [NODE, NODE_FLAG, "--no-warnings", str(runner), str(PYODIDE_DIR)],
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read_replies, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.version = self._send({"files": files}, 6 * TIMEOUT)

    def _read_replies(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            text = line.decode(errors="replace")
            if text.startswith(_AGENT_PREFIX):
                self.replies.put(json.loads(text[len(_AGENT_PREFIX) :]))
        self.replies.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr += line

    def _send(self, message: dict[str, Any], timeout: float) -> Any:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(message).encode() + b"\n")
        stdin.flush()
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"Node did not answer {message} within {timeout:.2f} s") from None
        if reply is None:
            raise AssertionError(f"Node exited:\n{self.stderr.decode(errors='replace')}")
        if "raise" in reply:
            error = _EXCEPTIONS.get(reply["raise"], AssertionError)
            raise error(f"{reply['raise']} in the browser: {reply['message']}")
        return reply["result"]

    def request(self, op: str, wait: float = TIMEOUT, **args: Any) -> Any:
        """Run one operation of :class:`BrowserAgent`; the answer may take ``wait`` (plus
        :data:`TIMEOUT`)."""
        return self._send({"op": op, "args": args}, wait + TIMEOUT)

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class BrowserConsumer(Consumer):
    """A consumer running in the browser."""

    def __init__(self, agent: NodeAgent, number: int) -> None:
        super().__init__()
        self.agent = agent
        self.number = number

    def next(self, timeout: float = TIMEOUT) -> Message:
        try:
            reply = self.agent.request("next", timeout, consumer=self.number, timeout=timeout)
        except Timeout:
            raise Timeout(f"no message came within {timeout:.2f} s") from None
        return decode_message(reply)

    def rest(self, timeout: float = TIMEOUT) -> list[Message]:
        try:
            reply = self.agent.request("rest", timeout, consumer=self.number, timeout=timeout)
        except Timeout:
            raise Timeout(f"the stream did not end within {timeout:.2f} s") from None
        if reply["error"]:
            raise AssertionError(f"the stream failed with {reply['error']}")
        return [decode_message(message) for message in reply["messages"]]


class RemotePipe:
    """``pipe()`` running in the browser: ``done()`` and ``result(timeout)``."""

    def __init__(self, agent: NodeAgent, number: int) -> None:
        self.agent = agent
        self.number = number

    def done(self) -> bool:
        return bool(self.agent.request("pipe_done", pipe=self.number))

    def result(self, timeout: float | None = None) -> None:
        limit = TIMEOUT if timeout is None else timeout
        self.agent.request("pipe_result", limit, pipe=self.number, timeout=limit)


class BrowserSide(Side):
    """An :class:`~wschannel.html.HtmlWebSocketChannel` in Pyodide, driven over Node."""

    def __init__(self, agent: NodeAgent, number: int) -> None:
        self.agent = agent
        self.number = number
        self.errors: dict[str, BaseException] = {}

    def add(self, message: Message) -> None:
        self.agent.request("add", channel=self.number, message=encode_message(message))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.agent.request("close", channel=self.number, code=code, reason=reason)

    def wait_done(self, timeout: float = TIMEOUT) -> BaseException | None:
        reply = self.agent.request("wait_done", timeout, channel=self.number, timeout=timeout)
        if reply is None:
            return None
        if "token" in reply:
            return self.errors[reply["token"]]
        return AssertionError(f"in the browser: {reply['repr']}")

    def consume(self, answer_prefix: str | None = None) -> Consumer:
        number = self.agent.request("consume", channel=self.number, answer_prefix=answer_prefix)
        return BrowserConsumer(self.agent, number)

    def _close_state(self) -> list[Any]:
        state: list[Any] = self.agent.request("close_state", channel=self.number)
        return state

    @property
    def close_code(self) -> int | None:
        code: int | None = self._close_state()[0]
        return code

    @property
    def close_reason(self) -> str | None:
        reason: str | None = self._close_state()[1]
        return reason

    def add_error(self, error: BaseException) -> None:
        token = str(len(self.errors))
        self.errors[token] = error
        self.agent.request("add_error", channel=self.number, token=token)

    def add_stream(self, messages: Iterable[Message]) -> None:
        encoded = [encode_message(message) for message in messages]
        self.agent.request("add_stream", channel=self.number, messages=encoded)

    def pipe(self, other: Side) -> Outcome:
        assert isinstance(other, BrowserSide) and other.agent is self.agent
        return RemotePipe(
            self.agent, self.agent.request("pipe", channel=self.number, other=other.number)
        )


class BrowserLab(Lab):
    """Our side is the browser's WebSocket (Node's) under Pyodide, always the client."""

    def __init__(self, flavour: str, role: str, agent: NodeAgent) -> None:
        super().__init__(flavour, role)
        self.agent = agent
        self.cleanups.append(lambda: agent.request("forget"))

    def _open(self, options: dict[str, Any]) -> tuple[Side, Peer]:
        assert set(options) <= {"close_timeout"}, f"the browser takes no {options}"
        with socket.create_server(("127.0.0.1", 0)) as listener:
            url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
            number = self.agent.request("open", url=url, options=options)
            peer = accept_upgrade(listener)
        self.agent.request("ready", channel=number)
        return BrowserSide(self.agent, number), peer
