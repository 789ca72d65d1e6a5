"""L1-L2: Dart 2.x ``test/web_socket_test.dart`` (dart-web-socket-channel.md §3.4).

design.md decision 1 keeps 2.x's byte-stream constructor as ``WebSocketChannel.over(reader,
writer, *, protocol, ping_interval, server_side=True)``: WebSocket framing over a byte stream
whose HTTP upgrade is already done. Here the upgrade is done by hand over asyncio streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import wschannel
from wschannel import WebSocketChannel
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel

from .conftest import (
    ACCEPT,
    OP_CLOSE,
    OP_TEXT,
    SHORT,
    close_payload,
    drain,
    frame,
    next_message,
    parse_close,
    read_frame,
    read_head,
    read_until_eof,
    upgrade_request,
    within,
)


def over(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, **options: Any
) -> WebSocketChannel:
    """``WebSocketChannel.over`` (implemented by ``wschannel.bytestream``)."""
    return WebSocketChannel.over(reader, writer, **options)


async def upgraded_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open TCP to 127.0.0.1:``port`` and do the client's upgrade by hand (the Dart test's
    headers, no extension), checking the 101 and its ``Sec-WebSocket-Accept``."""
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port))
    writer.write(upgrade_request())
    status_line, headers = await read_head(reader)
    assert status_line.split()[1] == "101"
    assert headers["sec-websocket-accept"] == ACCEPT
    return reader, writer


async def test_client_over_a_byte_stream_talks_to_a_server() -> None:
    """L1: a client can communicate with a WebSocket server.

    ``server_side=False`` over a hand-upgraded socket: ``hello!`` in, ``ping`` out, ``pong``
    in, then the client closes. The server reading ``ping`` at all shows the client masked
    its frames (an unmasked one fails the connection with 1002).
    """
    server_saw: asyncio.Future[tuple[list[Message], int | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add("hello!")
        received: list[Message] = []
        async for message in channel.stream:
            received.append(message)
            if message == "ping":
                channel.sink.add("pong")
        server_saw.set_result((received, channel.close_code))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        reader, writer = await upgraded_client(server.port)
        channel = over(reader, writer, server_side=False)
        await within(channel.ready)  # 2.x: always already complete
        assert channel.protocol is None
        received: list[Message] = []

        async def converse() -> None:
            async for message in channel.stream:
                received.append(message)
                if message == "hello!":
                    channel.sink.add("ping")
                elif message == "pong":
                    await channel.sink.close(3000, "done")

        await within(converse())
        assert received == ["hello!", "pong"]
        assert await within(server_saw) == (["ping"], 3000)


async def test_server_over_a_byte_stream_talks_to_a_client() -> None:
    """L2: a server can communicate with a WebSocket client.

    A plain asyncio server answers the upgrade itself (101 with ``sign_key`` of the client's
    key, ``Content-Length: 0``), then runs ``over(reader, writer)`` (``server_side=True`` by
    default): ``hello!`` out, ``ping`` in, ``pong`` out, close. The stock client validating
    the accept header checks ``sign_key`` too.
    """
    server_received: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        accept = wschannel.sign_key(headers["sec-websocket-key"])
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                f"Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n"
                "Sec-WebSocket-Protocol: chat\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        channel = over(reader, writer, protocol="chat")
        assert channel.protocol == "chat"
        channel.sink.add("hello!")
        server_received.set_result(await next_message(aiter(channel.stream)))
        channel.sink.add("pong")
        await within(channel.sink.close())

    tcp = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with tcp:
        port = tcp.sockets[0].getsockname()[1]
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{port}", protocols=["chat"])
        await within(channel.ready)
        assert channel.protocol == "chat"
        received: list[Message] = []

        async def converse() -> None:
            async for message in channel.stream:
                received.append(message)
                if message == "hello!":
                    channel.sink.add("ping")

        await within(converse())
        assert received == ["hello!", "pong"]
        assert await within(server_received) == "ping"
        assert channel.close_code == 1005  # the server closed without a code (decision 4)


@pytest.fixture
async def raw_pair() -> AsyncIterator[
    tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter]
]:
    """Two ends of a TCP connection on 127.0.0.1 as asyncio streams (no upgrade needed:
    ``over`` does none)."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    tcp = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    client_reader, client_writer = await within(asyncio.open_connection("127.0.0.1", port))
    server_reader, server_writer = await within(accepted)
    yield client_reader, client_writer, server_reader, server_writer
    client_writer.close()
    server_writer.close()
    tcp.close()
    await tcp.wait_closed()


async def test_client_over_a_byte_stream_masks_its_frames(
    raw_pair: tuple[
        asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter
    ],
) -> None:
    """L1 (port note): with ``server_side=False`` every frame is masked (RFC 6455 §5.3), and
    a masked frame from the peer fails the connection with 1002 (§2.11)."""
    client_reader, client_writer, peer_reader, peer_writer = raw_pair
    channel = over(client_reader, client_writer, server_side=False)
    channel.sink.add("masked?")
    opcode, payload, masked = await read_frame(peer_reader)
    assert (opcode, payload, masked) == (OP_TEXT, b"masked?", True)
    peer_writer.write(frame(OP_TEXT, b"bad", mask=b"\x01\x02\x03\x04"))
    assert await drain(channel.stream) == []
    assert channel.close_code == 1002
    opcode, payload, masked = await read_frame(peer_reader)
    assert opcode == OP_CLOSE
    assert masked
    assert parse_close(payload)[0] == 1002


async def test_server_over_a_byte_stream_sends_unmasked_and_rejects_unmasked_frames(
    raw_pair: tuple[
        asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter
    ],
) -> None:
    """L2 (§2.11 ``serverSide``): a server sends unmasked frames, reads masked ones, and
    fails the connection with 1002 on an unmasked one."""
    peer_reader, peer_writer, server_reader, server_writer = raw_pair
    channel = over(server_reader, server_writer)
    channel.sink.add(b"\x01\x02")
    assert await read_frame(peer_reader) == (0x2, b"\x01\x02", False)
    peer_writer.write(frame(OP_TEXT, b"fine", mask=b"\x0a\x0b\x0c\x0d"))
    subscription = aiter(channel.stream)
    assert await next_message(subscription) == "fine"
    peer_writer.write(frame(OP_TEXT, b"unmasked"))
    assert await drain(subscription) == []
    assert channel.close_code == 1002
    opcode, payload, masked = await read_frame(peer_reader)
    assert (opcode, masked) == (OP_CLOSE, False)
    assert parse_close(payload)[0] == 1002


async def test_server_over_a_byte_stream_echoes_the_peer_close_and_reports_it(
    raw_pair: tuple[
        asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter
    ],
) -> None:
    """L2 (§2.11 remote close): the peer's close is echoed with its code and reason, and
    ``close_code``/``close_reason`` report it."""
    peer_reader, peer_writer, server_reader, server_writer = raw_pair
    channel = over(server_reader, server_writer)
    peer_writer.write(frame(OP_CLOSE, close_payload(4000, "bye"), mask=b"\x00\x01\x02\x03"))
    assert await drain(channel.stream) == []
    assert (channel.close_code, channel.close_reason) == (4000, "bye")
    opcode, payload, _ = await read_frame(peer_reader)
    assert opcode == OP_CLOSE
    assert parse_close(payload) == (4000, "bye")
    await within(read_until_eof(peer_reader))  # the server closes TCP once both frames crossed
    await within(channel.sink.done)


async def test_client_over_a_byte_stream_keepalive_closes_with_1001_without_pongs(
    raw_pair: tuple[
        asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, asyncio.StreamWriter
    ],
) -> None:
    """L1 (2.x ``pingInterval``, design.md decision 11): no pong within the interval closes
    with 1001 after an empty ping."""
    client_reader, client_writer, peer_reader, _ = raw_pair
    channel = over(client_reader, client_writer, server_side=False, ping_interval=SHORT)
    opcode, payload, _ = await read_frame(peer_reader)
    assert (opcode, payload) == (0x9, b"")
    opcode, payload, _ = await read_frame(peer_reader)
    assert opcode == OP_CLOSE
    assert parse_close(payload)[0] == 1001
    assert await drain(channel.stream) == []
    assert channel.close_code == 1001
