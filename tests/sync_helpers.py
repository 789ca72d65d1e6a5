"""Peers for the blocking API's tests, all on 127.0.0.1: the asyncio server in a thread's
event loop, the blocking server in a thread, and raw TCP servers for misbehaving peers."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from conftest import TIMEOUT

import wschannel
import wschannel.sync
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server as AsyncServer

T = TypeVar("T")

AsyncHandler = Callable[[IOWebSocketChannel], Coroutine[Any, Any, None]]
RawHandler = Callable[[socket.socket], object]


class AsyncioServer:
    """``wschannel.serve`` running in a background thread's event loop."""

    def __init__(self, handler: AsyncHandler, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: AsyncServer = self.run(self._start(handler, options))

    async def _start(self, handler: AsyncHandler, options: dict[str, Any]) -> AsyncServer:
        return await wschannel.serve(handler, "127.0.0.1", 0, **options)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine in the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        try:
            self.run(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()


@contextlib.contextmanager
def asyncio_server(handler: AsyncHandler, **options: Any) -> Iterator[AsyncioServer]:
    server = AsyncioServer(handler, **options)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def sync_server(
    handler: wschannel.sync.server.Handler, **options: Any
) -> Iterator[wschannel.sync.Server]:
    """``wschannel.sync.serve`` on 127.0.0.1, serving in a thread; shut down on exit."""
    server = wschannel.sync.serve(handler, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown(TIMEOUT)
        thread.join(TIMEOUT)


def send_is_blocked(channel: wschannel.sync.SyncWebSocketChannel) -> bool:
    """Whether a blocking channel's send is stuck: a write in progress, and no room in its
    socket's buffer (the peer takes nothing)."""
    _, writable, _ = select.select([], [channel._sock], [], 0)
    return channel._in_flight > 0 and not writable


def url_of(server: wschannel.sync.Server, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{server.port}"


class RawServer:
    """A TCP server on 127.0.0.1 running ``handler(sock)`` in a thread per connection."""

    def __init__(self, handler: RawHandler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(sock)
            self.accepted.set()
            thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _run(self, sock: socket.socket) -> None:
        """Run the handler; then close the connection (the server's side first)."""
        with contextlib.suppress(OSError):
            self.handler(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.listener, socket.SHUT_RDWR)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(TIMEOUT)
        for sock in self.sockets:
            sock.close()
        self.thread.join(TIMEOUT)


@contextlib.contextmanager
def raw_server(handler: RawHandler) -> Iterator[RawServer]:
    server = RawServer(handler)
    try:
        yield server
    finally:
        server.stop()


def read_request(sock: socket.socket) -> dict[str, str]:
    """Read an HTTP request head; its headers, with lower-case names."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("EOF in the request head")
        head += chunk
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def accept_upgrade(sock: socket.socket, *, protocol: str | None = None) -> dict[str, str]:
    """Answer a WebSocket upgrade by hand (RFC 6455 §4.2.2), with no extension."""
    headers = read_request(sock)
    accept = wschannel.sign_key(headers["sec-websocket-key"])
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    )
    if protocol is not None:
        response += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    sock.sendall((response + "\r\n").encode())
    return headers


def frame(opcode: int, payload: bytes = b"", *, mask: bool = False, fin: bool = True) -> bytes:
    """One frame (RFC 6455 §5.2); masked with a zero key when ``mask`` (as a client sends)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    return head + (b"\0\0\0\0" if mask else b"") + payload


def drain(sock: socket.socket) -> None:
    """Read and discard until EOF."""
    while sock.recv(65536):
        pass


def upgrade_then_drain(sock: socket.socket) -> None:
    """A peer that accepts the upgrade, then reads everything and never answers."""
    accept_upgrade(sock)
    drain(sock)


def open_raw_websocket(port: int, *, extra: str = "") -> socket.socket:
    """A TCP connection to ``port`` whose upgrade (without extensions) was accepted."""
    sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
    sock.sendall(
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def http_status(port: int, request: str) -> int:
    """Send a raw HTTP request to ``port``; the response's status code."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])
