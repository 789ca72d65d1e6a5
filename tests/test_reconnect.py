"""Reconnecting clients, and the errors they decide on, against real servers on 127.0.0.1:
an HTTP server that refuses the upgrade with a status (503 with ``Retry-After``, 429, 403),
a wschannel server stopped and started again on the same port, a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

import pytest
from conftest import RawHandler, RawServer, accept_upgrade, read_request
from sync_helpers import raw_server as sync_raw_server
from sync_helpers import read_request as sync_read_request

import wschannel.sync
from wschannel import WebSocketChannelException
from wschannel.exceptions import InvalidStatus
from wschannel.io import IOWebSocketChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]


def refusal(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """An HTTP response refusing the upgrade, with an empty body."""
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answering(*responses: bytes | None) -> tuple[RawHandler, list[int]]:
    """A raw handler answering its n-th request with ``responses[n]`` (``None``: accept the
    upgrade and stay open until the client closes; the last one repeats), and the list
    where it counts the requests."""
    count: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        response = responses[min(len(count), len(responses) - 1)]
        count.append(1)
        if response is None:
            await accept_upgrade(reader, writer)
            await reader.read()  # until the client's close ends the connection
            return
        await read_request(reader)
        writer.write(response)
        await writer.drain()

    return handle, count


# The error for a refused upgrade.


async def test_client_reports_a_refusal_with_its_status_and_headers(raw_server: StartRaw) -> None:
    handle, _ = answering(refusal(503, "Service Unavailable", [("Retry-After", "7")]))
    server = await raw_server(handle)
    channel = IOWebSocketChannel.connect(server.url)
    with pytest.raises(InvalidStatus) as caught:
        await channel.ready
    error = caught.value
    assert isinstance(error, WebSocketChannelException)
    assert error.status == 503
    assert error.header("retry-after") == "7"
    assert ("Retry-After", "7") in error.headers
    assert "503" in str(error)
    assert error.inner is not None and error.__cause__ is error.inner


def test_blocking_client_reports_a_refusal_with_its_status_and_headers() -> None:
    def handle(sock: socket.socket) -> None:
        sync_read_request(sock)
        sock.sendall(refusal(429, "Too Many Requests", [("Retry-After", "3")]))

    with sync_raw_server(handle) as server, pytest.raises(InvalidStatus) as caught:
        wschannel.sync.connect(server.url)
    assert caught.value.status == 429
    assert caught.value.header("Retry-After") == "3"


async def test_client_reports_a_bad_101_without_a_status_error(raw_server: StartRaw) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: wrong\r\n\r\n"
        )

    server = await raw_server(handle)
    with pytest.raises(WebSocketChannelException) as caught:
        await IOWebSocketChannel.connect(server.url)
    assert not isinstance(caught.value, InvalidStatus)
