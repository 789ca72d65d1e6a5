"""The opening handshake refuses what another HTTP reader could frame or route differently
(issue 10, defect 5), over real sockets on 127.0.0.1.

Server side: a raw TCP client sends a bad upgrade request followed by a masked text frame to
an echo server (``wschannel.serve`` and ``wschannel.sync.serve``). The answer must be a 400
whose body gives the reason, then EOF: no 101, and no echo of the frame, which would show
that the body was parsed as WebSocket frames.

Client side: a raw server answers the upgrade with a bad 101 followed by a text frame. The
asyncio client and the blocking client must fail with a ``HandshakeError`` that says why,
and deliver nothing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest
from conftest import SHORT, TIMEOUT, RawHandler, RawServer, read_request, wait
from conftest import echo as async_echo
from sync_helpers import asyncio_server, sync_server
from sync_helpers import raw_server as sync_raw_server
from sync_helpers import read_request as sync_read_request

import wschannel
import wschannel.sync
from wschannel import WebSocketChannelException
from wschannel._wschannel import HandshakeError
from wschannel.io import IOWebSocketChannel
from wschannel.sync import SyncWebSocketChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]

KEY = "x3JJHMbDL1EzLkh9GBhXDw=="

SMUGGLED = b"\x81\x88\x01\x02\x03\x04" + bytes(
    byte ^ (1, 2, 3, 4)[index % 4] for index, byte in enumerate(b"smuggled")
)
"""A masked text frame ``smuggled``, as a client sends it: the body of every bad request."""

ECHOED = b"\x81\x08smuggled"
"""What an echo server sends back if it parsed :data:`SMUGGLED` as a frame."""


def upgrade(extra: str = "", *, host: str = "127.0.0.1") -> str:
    """A valid upgrade request head with ``extra`` header lines before its empty line."""
    return (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )


BAD_REQUESTS = {
    "a second Host": (
        upgrade("Host: evil.example\r\n"),
        "invalid HTTP request: more than one Host header",
    ),
    "a second Sec-WebSocket-Key": (
        upgrade("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        "more than one Sec-WebSocket-Key header.",
    ),
    "a second Sec-WebSocket-Version": (
        upgrade("Sec-WebSocket-Version: 8\r\n"),
        "more than one Sec-WebSocket-Version header.",
    ),
    "a second Origin": (
        upgrade("Origin: https://app.example\r\nOrigin: https://evil.example\r\n"),
        "more than one Origin header.",
    ),
    "Transfer-Encoding chunked": (
        upgrade("Transfer-Encoding: chunked\r\n"),
        "invalid HTTP request: Transfer-Encoding header, but an upgrade request has no body",
    ),
    "Content-Length with Transfer-Encoding": (
        upgrade(f"Content-Length: {len(SMUGGLED)}\r\nTransfer-Encoding: chunked\r\n"),
        "invalid HTTP request: Content-Length and Transfer-Encoding together",
    ),
    "a Content-Length other than 0": (
        upgrade(f"Content-Length: {len(SMUGGLED)}\r\n"),
        "invalid HTTP request: Content-Length is not 0, but an upgrade request has no body",
    ),
    "two Content-Length of 0": (
        upgrade("Content-Length: 0\r\nContent-Length: 0\r\n"),
        "invalid HTTP request: more than one Content-Length header",
    ),
    "a Content-Length that is not a number": (
        upgrade("Content-Length: +0\r\n"),
        "invalid HTTP request: Content-Length is not a decimal number",
    ),
    "lines ending in LF without CR": (
        upgrade().replace("\r\n", "\n"),
        "malformed HTTP request: invalid new line: LF without CR",
    ),
    "a Transfer-Encoding after a bare LF": (
        upgrade("X-Note: 1\nTransfer-Encoding: chunked\r\n"),
        "malformed HTTP request: invalid new line: LF without CR",
    ),
}


def sync_echo(channel: SyncWebSocketChannel) -> None:
    for message in channel.stream:
        channel.sink.add(message)


@pytest.fixture(params=["asyncio server", "sync server"])
def server_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """An echo server: ``wschannel.serve`` in a thread's loop, or ``wschannel.sync.serve``."""
    if request.param == "asyncio server":
        with asyncio_server(async_echo) as running:
            yield running.server.port
    else:
        with sync_server(sync_echo) as server:
            yield server.port


def exchange(port: int, data: bytes) -> tuple[int, bytes, bytes]:
    """Send ``data`` on a new connection: the answer's status, its body, and what came after
    the body (until EOF; after a 101, which keeps the connection open, for :data:`SHORT`)."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"EOF before the end of the answer's head: {received!r}"
            received += chunk
        head, _, after = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            sock.settimeout(SHORT)
            try:
                while chunk := sock.recv(65536):
                    after += chunk
            except TimeoutError:
                pass
            return status, b"", after
        while chunk := sock.recv(65536):
            after += chunk
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, after[:length], after[length:]


@pytest.mark.parametrize(("request_head", "reason"), BAD_REQUESTS.values(), ids=list(BAD_REQUESTS))
def test_server_answers_400_with_the_reason_and_parses_no_frame_from_the_body(
    server_port: int, request_head: str, reason: str
) -> None:
    status, body, after = exchange(server_port, request_head.encode() + SMUGGLED)
    assert (status, after) == (400, b""), f"a 101 then {ECHOED!r}: the body was parsed as a frame"
    assert body.decode() == reason


# Client side: a raw server answers the upgrade with a bad 101, then sends a frame.


def switching(key: str, lines: str) -> bytes:
    """A 101 answering ``key``: status line, ``lines`` (with ``{accept}`` filled in), the
    empty line, then a text frame the client must not deliver."""
    accept = wschannel.sign_key(key)
    head = "HTTP/1.1 101 Switching Protocols\r\n" + lines.format(accept=accept) + "\r\n"
    return head.encode() + b"\x81\x08smuggled"


VALID = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"

BAD_RESPONSES = {
    "a second Sec-WebSocket-Accept": (
        VALID + "Sec-WebSocket-Accept: {accept}\r\n",
        "invalid 101 response: more than one Sec-WebSocket-Accept header",
    ),
    "a second Upgrade": (
        VALID + "Upgrade: websocket\r\n",
        "invalid 101 response: more than one Upgrade header",
    ),
    "an Upgrade listing another protocol": (
        VALID.replace("Upgrade: websocket", "Upgrade: h2c, websocket"),
        "Upgrade header is 'h2c, websocket', expected 'websocket'",
    ),
    "Transfer-Encoding chunked": (
        VALID + "Transfer-Encoding: chunked\r\n",
        "invalid 101 response: Transfer-Encoding header, but a 101 response has no body",
    ),
    "a Content-Length other than 0": (
        VALID + "Content-Length: 10\r\n",
        "invalid 101 response: Content-Length is not 0, but a 101 response has no body",
    ),
    "two Content-Length of 0": (
        VALID + "Content-Length: 0\r\nContent-Length: 0\r\n",
        "invalid 101 response: more than one Content-Length header",
    ),
    "Content-Length with Transfer-Encoding": (
        VALID + "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        "invalid 101 response: Content-Length and Transfer-Encoding together",
    ),
}


def assert_refused_101(error: WebSocketChannelException, reason: str) -> None:
    assert isinstance(error.inner, HandshakeError), repr(error.inner)
    assert str(error.inner) == reason
    assert error.inner.status == 101
    assert error.__cause__ is error.inner


@pytest.mark.parametrize(("lines", "reason"), BAD_RESPONSES.values(), ids=list(BAD_RESPONSES))
async def test_asyncio_client_fails_with_the_reason_on_an_invalid_101(
    raw_server: StartRaw, lines: str, reason: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = await read_request(reader)
        writer.write(switching(headers["sec-websocket-key"], lines))
        await writer.drain()
        await reader.read()  # until the client hangs up

    server = await raw_server(handler)
    channel = IOWebSocketChannel.connect(server.url)
    with pytest.raises(WebSocketChannelException) as info:
        await wait(channel.ready)
    assert_refused_101(info.value, reason)
    with pytest.raises(WebSocketChannelException):
        await wait(anext(aiter(channel.stream)))


@pytest.mark.parametrize(("lines", "reason"), BAD_RESPONSES.values(), ids=list(BAD_RESPONSES))
def test_sync_client_fails_with_the_reason_on_an_invalid_101(lines: str, reason: str) -> None:
    def handler(sock: socket.socket) -> None:
        headers = sync_read_request(sock)
        sock.sendall(switching(headers["sec-websocket-key"], lines))
        while sock.recv(65536):  # until the client hangs up
            pass

    with sync_raw_server(handler) as server, pytest.raises(WebSocketChannelException) as info:
        wschannel.sync.connect(server.url, connect_timeout=TIMEOUT)
    assert_refused_101(info.value, reason)
