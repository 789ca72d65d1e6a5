"""``over``: WebSocket over a byte stream whose upgrade was done by hand, on asyncio and trio.

The asyncio tests run under pytest-asyncio (auto mode). The anyio tests are plain functions
that call ``anyio.run`` on each backend themselves: pytest-asyncio's auto mode claims every
``async def`` test, so anyio's plugin would run the trio ones on asyncio.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import pytest
import trio
from anyio.streams.buffered import BufferedByteReceiveStream
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    close_then_hang_up,
    next_message,
    read_frame,
    wait,
)

import wschannel
from wschannel import StateError, status
from wschannel._driver import HANDLING_FAILED
from wschannel._wschannel import Close, Connection, Ping
from wschannel.bytestream import ByteStreamWebSocketChannel, over
from wschannel.channel import Message
from wschannel.exceptions import WebSocketConnectionClosed
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]

KEY = "x3JJHMbDL1EzLkh9GBhXDw=="
"""The key of Dart's legacy test L1, and its ``Sec-WebSocket-Accept``."""
ACCEPT = "HSmrc0sMlYUkAGmm5OPpG2HaGWk="

MESSAGES: list[Message] = [
    "hello",
    b"\x01\x02\x03",
    "",
    b"",
    "🎨⛳🌈 é",
    "x" * 120_000,
    bytes(range(256)) * 3907,  # 1 000 192 bytes
]
MESSAGE_IDS = ["text", "binary", "empty text", "empty binary", "non-ascii", "large text", "1 MB"]


def upgrade_request(key: str = KEY) -> bytes:
    """A client's upgrade request (RFC 6455 §4.1), written by hand as Dart's test L1 does."""
    return (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def upgrade_response(request_head: bytes) -> bytes:
    """The 101 for a request head, with ``Sec-WebSocket-Accept`` from ``sign_key``."""
    key = ""
    for line in request_head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {wschannel.sign_key(key)}\r\n\r\n"
    ).encode()


def frame(opcode: int, payload: bytes = b"", *, mask: bytes | None = None) -> bytes:
    """One final frame (RFC 6455 §5.2), masked with ``mask`` if given."""
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes([0x80 | opcode, mask_bit | length])
    else:
        head = bytes([0x80 | opcode, mask_bit | 126]) + struct.pack("!H", length)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def parse_close(data: bytes) -> tuple[int, str]:
    """The code and reason of one unmasked close frame at the start of ``data``."""
    assert data[0] == 0x88, data[:2]
    length = data[1] & 0x7F
    payload = data[2 : 2 + length]
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


async def read_frames(reader: asyncio.StreamReader, decoder: Connection) -> list[Any]:
    """Read until the next complete events; ``decoder`` is the engine on the peer's side."""
    while True:
        data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        assert data, "the connection closed"
        events = decoder.receive_data(data)
        if events:
            return events


async def upgrade_client(
    port: int,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Connect to 127.0.0.1 and do the upgrade by hand; the streams and the response head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    return reader, writer, head


async def over_client(port: int, **options: Any) -> ByteStreamWebSocketChannel:
    """A client-side channel over a hand-upgraded connection to 127.0.0.1:``port``."""
    reader, writer, head = await upgrade_client(port)
    assert head.startswith(b"HTTP/1.1 101 ")
    return over(reader, writer, server_side=False, **options)


class OverServer:
    """What :func:`over_server` started: its port, and whether its handler has finished."""

    def __init__(self) -> None:
        self.raw: RawServer | None = None
        self.finished = asyncio.Event()

    @property
    def port(self) -> int:
        assert self.raw is not None
        return port_of(self.raw)

    async def wait_finished(self) -> None:
        await asyncio.wait_for(self.finished.wait(), TIMEOUT)


def port_of(server: Server | RawServer | OverServer) -> int:
    if isinstance(server, Server | OverServer):
        return server.port
    assert server.server is not None
    port: int = server.server.sockets[0].getsockname()[1]
    return port


async def over_server(
    raw_server: StartRaw,
    handler: Callable[[ByteStreamWebSocketChannel], Awaitable[None]],
    **options: Any,
) -> OverServer:
    """A server that answers the upgrade by hand, then runs ``handler`` on ``over``'s channel."""
    server = OverServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer, protocol=options.get("protocol"))
        channel = over(reader, writer, **options)
        await handler(channel)
        await wait(channel.sink.done)
        server.finished.set()

    server.raw = await raw_server(handle)
    return server


# Dart's legacy tests (2.x web_socket_test.dart).


async def test_server_can_communicate_with_a_websocket_client(raw_server: StartRaw) -> None:
    """L2: the server end over a connection whose upgrade it answered by hand."""
    server_received: list[Message] = []

    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        channel.sink.add("hello!")
        subscription = aiter(channel.stream)
        server_received.append(await next_message(subscription))
        channel.sink.add("pong")
        await wait(channel.sink.close())

    server = await over_server(raw_server, handler)
    client = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{port_of(server)}")
    subscription = aiter(client.stream)
    assert await next_message(subscription) == "hello!"
    client.sink.add("ping")
    assert await next_message(subscription) == "pong"
    with pytest.raises(StopAsyncIteration):
        await next_message(subscription)
    assert server_received == ["ping"]
    assert client.close_code == status.NO_STATUS_RECEIVED
    await wait(client.sink.done)
    await server.wait_finished()


async def test_client_can_communicate_with_a_websocket_server() -> None:
    """L1: the client end over a connection it upgraded by hand, against ``serve``."""

    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add("hello!")
        async for message in channel.stream:
            if message == "ping":
                channel.sink.add("pong")
                await channel.sink.close(status.NORMAL_CLOSURE)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        reader, writer, head = await upgrade_client(server.port)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {ACCEPT}".encode() in head
        channel = over(reader, writer, server_side=False)
        received = []
        async for message in channel.stream:
            received.append(message)
            if message == "hello!":
                channel.sink.add("ping")
        assert received == ["hello!", "pong"]
        assert channel.close_code == status.NORMAL_CLOSURE
        await wait(channel.sink.done)


# Opening: nothing to wait for.


async def test_client_ready_is_resolved_and_protocol_is_the_given_one(echo_server: Server) -> None:
    reader, writer, _ = await upgrade_client(echo_server.port)
    channel = over(reader, writer, server_side=False, protocol="chat")
    assert isinstance(channel, wschannel.WebSocketChannel)
    assert channel.ready.done()
    assert channel.protocol == "chat"
    assert channel.close_code is None
    assert channel.close_reason is None
    assert "open" in repr(channel)
    await wait(channel.sink.close())
    assert "closed" in repr(channel)


async def test_client_protocol_is_none_by_default_and_channel_is_a_context_manager(
    echo_server: Server,
) -> None:
    async with await over_client(echo_server.port) as channel:
        assert channel.protocol is None
        channel.sink.add("inside")
        assert await next_message(aiter(channel.stream)) == "inside"
    assert channel.sink.done.done()


async def test_over_without_a_running_loop_raises_runtime_error() -> None:
    def outside() -> None:
        with pytest.raises(RuntimeError, match="running asyncio or trio"):
            over(object(), object())  # type: ignore[arg-type]

    await asyncio.to_thread(outside)


async def test_over_raises_type_error_for_other_streams() -> None:
    with pytest.raises(TypeError, match="not object and object"):
        over(object(), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="together"):
        over(asyncio.StreamReader(), object())  # type: ignore[arg-type]


async def test_over_raises_value_error_for_a_ping_interval_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        over(asyncio.StreamReader(), object(), ping_interval=0)  # type: ignore[arg-type]


# Messages.


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
async def test_client_receives_echo_of_each_message_kind(
    echo_server: Server, message: Message
) -> None:
    async with await over_client(echo_server.port) as channel:
        channel.sink.add(message)
        received = await next_message(aiter(channel.stream))
    assert type(received) is type(message)
    assert received == message


@pytest.mark.parametrize("message", MESSAGES, ids=MESSAGE_IDS)
async def test_server_echoes_each_message_kind(raw_server: StartRaw, message: Message) -> None:
    async def echo(channel: ByteStreamWebSocketChannel) -> None:
        async for received in channel.stream:
            channel.sink.add(received)

    server = await over_server(raw_server, echo)
    url = f"ws://127.0.0.1:{port_of(server)}"
    async with IOWebSocketChannel.connect(url, compression=False) as client:
        client.sink.add(message)
        received = await next_message(aiter(client.stream))
    assert type(received) is type(message)
    assert received == message
    await server.wait_finished()


async def test_client_sends_any_bytes_like_object_as_binary(echo_server: Server) -> None:
    async with await over_client(echo_server.port) as channel:
        channel.sink.add(bytearray(b"array"))
        channel.sink.add(memoryview(b"xview")[1:])
        channel.sink.add(memoryview(b"s-t-r-i-d-e")[::2])
        channel.sink.add(array.array("H", [0x0102]))
        subscription = aiter(channel.stream)
        assert await next_message(subscription) == b"array"
        assert await next_message(subscription) == b"view"
        assert await next_message(subscription) == b"stride"
        assert await next_message(subscription) == array.array("H", [0x0102]).tobytes()


@pytest.mark.parametrize("data", [None, 42, ["a"], object()])
async def test_client_add_raises_type_error_for_unsupported_types(
    echo_server: Server, data: object
) -> None:
    async with await over_client(echo_server.port) as channel:
        with pytest.raises(TypeError, match="Cannot send"):
            channel.sink.add(data)  # type: ignore[arg-type]
        channel.sink.add("still works")
        assert await next_message(aiter(channel.stream)) == "still works"


async def test_client_listen_receives_each_message_then_done(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    received: list[Message] = []
    finished = asyncio.Event()

    def on_data(message: Message) -> None:
        received.append(message)
        if len(received) == 3:
            channel.sink.add("close")

    channel.stream.listen(on_data, on_done=finished.set)
    for message in ("a", b"b", "c"):
        channel.sink.add(message)
    await asyncio.wait_for(finished.wait(), TIMEOUT)
    assert received == ["a", b"b", "c"]
    assert channel.close_code == 3001
    await wait(channel.sink.done)


async def test_client_fails_connection_with_1009_for_a_message_over_its_max_size(
    echo_server: Server,
) -> None:
    channel = await over_client(echo_server.port, max_message_size=10)
    channel.sink.add("x" * 11)
    async for _ in channel.stream:
        pytest.fail("the message is over the limit")
    assert channel.close_code == status.MESSAGE_TOO_BIG
    await wait(channel.sink.done)


async def test_server_pauses_reading_while_its_queue_is_full() -> None:
    """Backpressure: with ``max_queue`` messages waiting, the peer's writes stall."""
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    reader, writer = await asyncio.open_connection(sock=ours)
    channel = over(reader, writer, max_queue=2)
    _, peer_writer = await asyncio.open_connection(sock=theirs)
    peer = Connection(True)
    count, size = 128, 1 << 16  # 8 MiB in all: far more than every buffer on the way

    async def send_all() -> None:
        for index in range(count):
            peer_writer.write(peer.send_binary(bytes([index % 256]) * size))
            await peer_writer.drain()

    sending = asyncio.create_task(send_all())
    await asyncio.sleep(SHORT)
    assert not sending.done(), "the peer could write everything: reading did not pause"
    subscription = aiter(channel.stream)
    for index in range(count):
        message = await next_message(subscription)
        assert message == bytes([index % 256]) * size
    await wait(sending)
    peer_writer.close()  # the peer is no WebSocket endpoint: it just goes away
    await wait(channel.sink.done)
    assert channel.close_code == status.ABNORMAL_CLOSURE


async def test_client_flush_returns_once_the_transport_took_the_data(echo_server: Server) -> None:
    async with await over_client(echo_server.port) as channel:
        channel.sink.add(b"x" * 500_000)
        await wait(channel.sink.flush())
        assert await next_message(aiter(channel.stream)) == b"x" * 500_000


# Masking (RFC 6455 §5.1, §5.3).


async def test_client_masks_its_frames(raw_server: StartRaw) -> None:
    frames: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        frames.append(await reader.readexactly(2 + 4 + 5))

    server = await raw_server(handler)
    channel = await over_client(port_of(server))
    channel.sink.add("hello")
    await wait(channel.sink.done)
    [data] = frames
    assert data[0] == 0x81  # FIN, text
    assert data[1] == 0x80 | 5  # masked, 5 bytes
    mask = data[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(data[6:])) == b"hello"


async def test_server_sends_unmasked_frames(raw_server: StartRaw) -> None:
    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        channel.sink.add("hello")
        await wait(channel.sink.close())

    server = await over_server(raw_server, handler)
    reader, writer, _ = await upgrade_client(port_of(server))
    data = await asyncio.wait_for(reader.readexactly(2 + 5 + 2), TIMEOUT)
    assert data == b"\x81\x05hello\x88\x00"  # the message, then the close frame
    writer.write(frame(0x8, mask=b"\x01\x02\x03\x04"))
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()
    await server.wait_finished()


async def test_server_fails_the_connection_with_1002_for_an_unmasked_frame(
    raw_server: StartRaw,
) -> None:
    channels: list[ByteStreamWebSocketChannel] = []

    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        channels.append(channel)
        async for _ in channel.stream:
            pytest.fail("an unmasked frame must not be delivered")

    server = await over_server(raw_server, handler)
    reader, writer, _ = await upgrade_client(port_of(server))
    writer.write(frame(0x1, b"unmasked"))
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)  # the close frame, then EOF
    assert parse_close(answer)[0] == status.PROTOCOL_ERROR
    [channel] = channels
    # The server half-closed and reads on until the client's EOF (src/session: closing with
    # unread data could reset the connection and destroy the close frame on its way).
    assert not channel.sink.done.done()
    writer.close()
    await wait(channel.sink.done)
    assert channel.close_code == status.PROTOCOL_ERROR
    await server.wait_finished()


async def test_server_accepts_masked_frames(raw_server: StartRaw) -> None:
    received: list[Message] = []

    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        received.append(await next_message(aiter(channel.stream)))
        await wait(channel.sink.close())

    server = await over_server(raw_server, handler)
    reader, writer, _ = await upgrade_client(port_of(server))
    writer.write(frame(0x1, b"masked", mask=b"\x01\x02\x03\x04"))
    assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\x88\x00"  # its close
    writer.write(frame(0x8, mask=b"\x01\x02\x03\x04"))  # the echo
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # then the server closes TCP
    assert received == ["masked"]
    writer.close()
    await server.wait_finished()


async def test_client_fails_the_connection_with_1002_for_a_masked_frame(
    raw_server: StartRaw,
) -> None:
    closes: list[list[Any]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(0x1, b"masked", mask=b"\x01\x02\x03\x04"))
        closes.append(await read_frames(reader, Connection(False)))
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # the client closed TCP

    server = await raw_server(handler)
    channel = await over_client(port_of(server))
    async for _ in channel.stream:
        pytest.fail("a masked frame must not be delivered")
    assert channel.close_code == status.PROTOCOL_ERROR
    await wait(channel.sink.done)
    await asyncio.sleep(0)
    [[close]] = closes
    assert close.code == status.PROTOCOL_ERROR


# Closing (RFC 6455 §7).


async def test_client_close_reaches_server_with_code_and_reason() -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        seen.set_result((channel.close_code, channel.close_reason))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await over_client(server.port)
        await wait(channel.sink.close(3001, "bye"))
        assert await asyncio.wait_for(seen, TIMEOUT) == (3001, "bye")
        assert channel.close_code == 3001  # the server's echo
        assert channel.close_reason == "bye"


async def test_client_receives_the_server_close_code_and_reason(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    channel.sink.add("close")
    async for _ in channel.stream:
        pass
    assert channel.close_code == 3001
    assert channel.close_reason == "you asked me to"
    await wait(channel.sink.done)


async def test_client_close_without_code_gets_1005(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    await wait(channel.sink.close())
    assert channel.close_code == status.NO_STATUS_RECEIVED
    assert channel.close_reason == ""


async def test_server_close_reaches_client_with_code_and_reason(raw_server: StartRaw) -> None:
    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        await wait(channel.sink.close(4000, "server done"))
        assert channel.close_code == 4000

    server = await over_server(raw_server, handler)
    client = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{port_of(server)}")
    async for _ in client.stream:
        pass
    assert (client.close_code, client.close_reason) == (4000, "server done")
    await wait(client.sink.done)
    await server.wait_finished()


async def test_server_closes_the_byte_stream_after_the_closing_handshake(
    raw_server: StartRaw,
) -> None:
    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass

    server = await over_server(raw_server, handler)
    reader, writer, _ = await upgrade_client(port_of(server))
    writer.write(frame(0x8, close_payload(3002, "done"), mask=b"abcd"))
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)  # the echo, then EOF
    assert parse_close(answer) == (3002, "done")
    writer.close()
    await server.wait_finished()


async def test_client_waits_for_the_server_to_close_then_gives_up_after_close_timeout(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        [close] = await read_frames(reader, Connection(False))
        writer.write(frame(0x8, close_payload(close.code, close.reason)))  # no TCP close
        await asyncio.wait_for(reader.read(), TIMEOUT)

    server = await raw_server(handler)
    channel = await over_client(port_of(server), close_timeout=SHORT)
    done = channel.sink.close(3001, "bye")
    await asyncio.sleep(SHORT / 2)
    assert not done.done()
    await wait(done)
    assert channel.close_code == 3001


async def test_client_stream_ends_once_the_server_has_closed_the_byte_stream(
    raw_server: StartRaw,
) -> None:
    server_closed = asyncio.Event()
    # The close frames crossed; TCP still open a while.
    server = await raw_server(close_then_hang_up(4001, "bye", linger=SHORT, hung_up=server_closed))
    channel = await over_client(port_of(server))
    assert [message async for message in channel.stream] == []
    assert server_closed.is_set()
    assert channel.sink.done.done()
    assert (channel.close_code, channel.close_reason) == (4001, "bye")


async def test_client_with_a_full_buffer_still_reads_the_server_eof_after_its_close(
    raw_server: StartRaw,
) -> None:
    sent = [f"message {index}" for index in range(6)]
    server = await raw_server(close_then_hang_up(status.NORMAL_CLOSURE, messages=sent))
    # Reading is paused (more than max_queue messages wait) when the close frame comes; only
    # the server's EOF, not the long close_timeout, can end the connection in time.
    channel = await over_client(port_of(server), max_queue=2, close_timeout=TIMEOUT * 4)
    await wait(channel.sink.done)
    assert channel.close_code == status.NORMAL_CLOSURE
    assert [message async for message in channel.stream] == sent


async def test_client_close_gives_up_after_close_timeout_without_an_answer(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        await asyncio.wait_for(reader.read(), TIMEOUT)

    server = await raw_server(handler)
    channel = await over_client(port_of(server), close_timeout=SHORT)
    await wait(channel.sink.close())
    assert channel.close_code == status.ABNORMAL_CLOSURE


async def test_client_reports_1006_when_the_byte_stream_ends_without_close_frame(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(0x1, b"last"))

    server = await raw_server(handler)
    channel = await over_client(port_of(server))
    assert [message async for message in channel.stream] == ["last"]
    assert channel.close_code == status.ABNORMAL_CLOSURE
    assert channel.close_reason == ""
    await wait(channel.sink.done)


async def test_server_reports_1006_when_the_byte_stream_ends_without_close_frame(
    raw_server: StartRaw,
) -> None:
    channels: list[ByteStreamWebSocketChannel] = []

    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        channels.append(channel)
        async for _ in channel.stream:
            pass

    server = await over_server(raw_server, handler)
    reader, writer, _ = await upgrade_client(port_of(server))
    writer.close()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    [channel] = channels
    await wait(channel.sink.done)
    assert channel.close_code == status.ABNORMAL_CLOSURE
    await server.wait_finished()


async def test_client_add_after_close_raises_state_error(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    await wait(channel.sink.close())
    with pytest.raises(StateError, match=r"Cannot add event after closing\."):
        channel.sink.add("late")
    with pytest.raises(StateError):
        channel.sink.add(b"late")
    assert channel.sink.close() is channel.sink.done


async def test_client_add_after_server_close_is_dropped(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    channel.sink.add("close")
    async for _ in channel.stream:
        pass
    channel.sink.add("dropped")
    channel.sink.add(b"dropped")
    await wait(channel.sink.done)


async def test_client_local_close_ends_the_stream_at_once(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    subscription = aiter(channel.stream)
    channel.sink.close()
    with pytest.raises(StopAsyncIteration):
        await next_message(subscription)
    await wait(channel.sink.done)


@pytest.mark.parametrize(
    ("code", "reason"), [(1005, None), (999, None), (5000, None), (1000, "x" * 124), (None, "r")]
)
async def test_client_invalid_close_raises_value_error_and_connection_still_works(
    echo_server: Server, code: int | None, reason: str | None
) -> None:
    async with await over_client(echo_server.port) as channel:
        with pytest.raises(ValueError):
            channel.sink.close(code, reason)
        channel.sink.add("still open")
        assert await next_message(aiter(channel.stream)) == "still open"


async def test_client_close_accepts_going_away_as_in_the_readme(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    await wait(channel.sink.close(status.GOING_AWAY))
    assert channel.close_code == status.GOING_AWAY


# Keepalive (Dart's algorithm).


async def test_client_keepalive_keeps_a_responsive_connection_open(echo_server: Server) -> None:
    async with await over_client(echo_server.port, ping_interval=SHORT / 4) as channel:
        await asyncio.sleep(SHORT)
        assert channel.close_code is None
        channel.sink.add("alive")
        assert await next_message(aiter(channel.stream)) == "alive"


async def test_client_keepalive_closes_with_1001_when_no_pong_comes(raw_server: StartRaw) -> None:
    events: list[Any] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        decoder = Connection(False)
        # Swallow pongs: read the ping without answering it, then the close.
        while len(events) < 2:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            assert data
            events.extend(decoder.receive_data(data))
            decoder.data_to_send()  # the pong is never written

    server = await raw_server(handler)
    channel = await over_client(port_of(server), ping_interval=SHORT / 2, close_timeout=SHORT)
    async for _ in channel.stream:
        pass
    assert channel.close_code == status.GOING_AWAY
    await wait(channel.sink.done)
    ping, close = events
    assert type(ping).__name__ == "Ping"
    assert ping.data == b""
    assert close.code == status.GOING_AWAY


async def test_server_keepalive_pings_the_client(raw_server: StartRaw) -> None:
    async def handler(channel: ByteStreamWebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)

    server = await over_server(raw_server, handler, ping_interval=SHORT / 4)
    reader, writer, _ = await upgrade_client(port_of(server))
    decoder = Connection(True)
    [ping] = await read_frames(reader, decoder)
    assert type(ping).__name__ == "Ping"
    writer.write(decoder.data_to_send())  # the pong
    writer.write(decoder.send_text("after the pong"))
    assert await read_frames(reader, decoder) == ["after the pong"]
    writer.close()
    await server.wait_finished()


# Over anyio byte streams, on asyncio and on trio.

Body = Callable[[], Coroutine[Any, Any, None]]


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def run(backend: str, body: Body) -> None:
    """Run ``body`` on ``backend`` within :data:`TIMEOUT`."""

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            await body()

    anyio.run(main, backend=backend)


async def tcp_pair() -> tuple[anyio.abc.SocketStream, anyio.abc.SocketStream]:
    """Two ends of one loopback TCP connection: (server, client)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    client = await anyio.connect_tcp("127.0.0.1", port)
    [tcp_listener] = listener.listeners
    assert isinstance(tcp_listener, anyio.abc.SocketListener)
    server = await tcp_listener.accept()
    await listener.aclose()
    return server, client


async def upgraded_pair(
    server_options: dict[str, Any] | None = None, client_options: dict[str, Any] | None = None
) -> tuple[ByteStreamWebSocketChannel, ByteStreamWebSocketChannel]:
    """Both ends of a loopback connection upgraded by hand: (server, client) channels."""
    server_stream, client_stream = await tcp_pair()
    await client_stream.send(upgrade_request())
    server_reader = BufferedByteReceiveStream(server_stream)
    await server_stream.send(upgrade_response(await server_reader.receive_until(b"\r\n\r\n", 8192)))
    client_reader = BufferedByteReceiveStream(client_stream)
    head = await client_reader.receive_until(b"\r\n\r\n", 8192)
    assert f"Sec-WebSocket-Accept: {ACCEPT}".encode() in head
    server = over(server_reader, server_stream, **(server_options or {}))
    client = over(client_reader, client_stream, server_side=False, **(client_options or {}))
    return server, client


async def receive_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    """Everything until EOF."""
    data = b""
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


def test_anyio_channels_echo_messages(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair()
        assert server.ready.done()
        await server.ready
        sent: list[Message] = ["hello", b"\x00\x01", "", "🎨⛳🌈", "x" * 120_000, b"y" * 1_000_000]
        for message in sent:
            client.sink.add(message)
        server_subscription = aiter(server.stream)
        for _ in sent:
            server.sink.add(await anext(server_subscription))
        client_subscription = aiter(client.stream)
        received = [await anext(client_subscription) for _ in sent]
        assert received == sent
        assert [type(message) for message in received] == [type(message) for message in sent]
        await client.sink.close()
        await server.sink.done

    run(backend, body)


def test_anyio_client_close_code_and_reason_reach_the_server(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair()
        await client.sink.close(3001, "bye")
        assert [message async for message in server.stream] == []
        assert (server.close_code, server.close_reason) == (3001, "bye")
        assert (client.close_code, client.close_reason) == (3001, "bye")
        await server.sink.done

    run(backend, body)


def test_anyio_server_close_code_and_reason_reach_the_client(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair()
        server.sink.add("before closing")
        done = server.sink.close(4000, "server done")
        assert [message async for message in client.stream] == ["before closing"]
        assert (client.close_code, client.close_reason) == (4000, "server done")
        await done
        await client.sink.done
        assert server.close_code == 4000
        assert "closed 4000" in repr(server)

    run(backend, body)


def test_anyio_close_without_code_gives_1005(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair()
        await client.sink.close()
        await server.sink.done
        assert (client.close_code, client.close_reason) == (1005, "")
        assert (server.close_code, server.close_reason) == (1005, "")

    run(backend, body)


def test_anyio_client_reports_1006_when_the_stream_ends_without_close_frame(backend: str) -> None:
    async def body() -> None:
        server_stream, client_stream = await tcp_pair()
        client = over(client_stream, client_stream, server_side=False)
        await server_stream.send(frame(0x1, b"last"))
        await server_stream.aclose()
        assert [message async for message in client.stream] == ["last"]
        assert (client.close_code, client.close_reason) == (status.ABNORMAL_CLOSURE, "")
        await client.sink.done

    run(backend, body)


def test_anyio_server_fails_the_connection_with_1002_for_an_unmasked_frame(backend: str) -> None:
    async def body() -> None:
        server_stream, client_stream = await tcp_pair()
        server = over(server_stream, server_stream)
        await client_stream.send(frame(0x1, b"unmasked"))
        answer = await receive_all(client_stream)  # the close frame, then EOF
        assert parse_close(answer)[0] == status.PROTOCOL_ERROR
        assert [message async for message in server.stream] == []
        assert server.close_code == status.PROTOCOL_ERROR
        # The server half-closed and reads on until the client's EOF.
        assert not server.sink.done.done()
        await client_stream.aclose()
        await server.sink.done

    run(backend, body)


def test_anyio_client_masks_and_server_does_not(backend: str) -> None:
    async def body() -> None:
        raw_server, client_stream = await tcp_pair()
        client = over(client_stream, client_stream, server_side=False)
        client.sink.add("hello")
        data = await raw_server.receive()
        assert data[:2] == bytes([0x81, 0x80 | 5])  # FIN text, masked, 5 bytes
        mask = data[2:6]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(data[6:11])) == b"hello"

        server_stream, raw_client = await tcp_pair()
        server = over(server_stream, server_stream)
        server.sink.add("hello")
        assert await raw_client.receive() == b"\x81\x05hello"

        for channel in (client, server):
            channel.sink.close(status.NORMAL_CLOSURE)
        await raw_server.aclose()
        await raw_client.aclose()
        await client.sink.done
        await server.sink.done

    run(backend, body)


def test_anyio_keepalive_keeps_a_responsive_connection_open(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair(client_options={"ping_interval": SHORT / 4})
        server_subscription = aiter(server.stream)
        await anyio.sleep(SHORT)
        assert client.close_code is None
        client.sink.add("alive")
        assert await anext(server_subscription) == "alive"
        await client.sink.close()
        await server.sink.done

    run(backend, body)


def test_anyio_keepalive_closes_with_1001_when_no_pong_comes(backend: str) -> None:
    async def body() -> None:
        server_stream, client_stream = await tcp_pair()
        client = over(
            client_stream,
            client_stream,
            server_side=False,
            ping_interval=SHORT / 2,
            close_timeout=SHORT,
        )
        decoder = Connection(False)
        events: list[Any] = []
        while len(events) < 2:  # the ping (never answered), then the close
            events.extend(decoder.receive_data(await server_stream.receive()))
            decoder.data_to_send()
        ping, close = events
        assert type(ping).__name__ == "Ping"
        assert close.code == status.GOING_AWAY
        assert [message async for message in client.stream] == []
        assert client.close_code == status.GOING_AWAY
        await client.sink.done  # after close_timeout: the server never answered
        await server_stream.aclose()

    run(backend, body)


def test_anyio_close_gives_up_after_close_timeout(backend: str) -> None:
    async def body() -> None:
        server_stream, client_stream = await tcp_pair()
        client = over(client_stream, client_stream, server_side=False, close_timeout=SHORT)
        started = anyio.current_time()
        await client.sink.close(3001)
        assert anyio.current_time() - started >= SHORT * 0.9
        assert client.close_code == status.ABNORMAL_CLOSURE
        assert await receive_all(server_stream)  # the close frame, then EOF
        await server_stream.aclose()

    run(backend, body)


def test_anyio_listen_and_context_manager(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair()
        received: list[Message] = []
        finished = anyio.Event()
        server.stream.listen(received.append, on_done=finished.set)
        async with client:
            client.sink.add("one")
            client.sink.add(b"two")
            await client.sink.flush()
            with anyio.fail_after(TIMEOUT):
                while len(received) < 2:
                    await anyio.sleep(0.01)
        await finished.wait()
        assert received == ["one", b"two"]
        assert server.close_code == 1000  # async with closes with 1000 (issue 13)

    run(backend, body)


def test_anyio_backpressure_delivers_every_message(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair(server_options={"max_queue": 2})
        count = 200
        for index in range(count):
            client.sink.add(bytes([index % 256]) * 10_000)
        await anyio.sleep(SHORT / 4)
        subscription = aiter(server.stream)
        for index in range(count):
            assert await anext(subscription) == bytes([index % 256]) * 10_000
        await client.sink.close()

    run(backend, body)


def test_trio_streams_work_directly() -> None:
    async def body() -> None:
        left, right = trio.socket.socketpair()
        server_stream, client_stream = trio.SocketStream(left), trio.SocketStream(right)
        server = over(server_stream, server_stream)
        client = over(client_stream, client_stream, server_side=False)
        client.sink.add("over trio")
        assert await anext(aiter(server.stream)) == "over trio"
        await client.sink.close(3000, "trio")
        await server.sink.done
        assert server.close_code == 3000

    run("trio", body)


async def test_trio_streams_under_asyncio_raise_runtime_error() -> None:
    left, right = socket.socketpair()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
    with pytest.raises(RuntimeError, match="trio event loop"):
        over(stream, stream)
    left.close()
    right.close()


# The session's lifecycle (issue 11): the same rules as the other flavours.


def summary(events: list[Any]) -> list[object]:
    """Events as comparable values: messages as they are, ``('close', code, reason)``."""
    return [
        ("close", event.code, event.reason) if isinstance(event, Close) else event
        for event in events
    ]


async def read_until_close(reader: asyncio.StreamReader, decoder: Connection) -> list[Any]:
    """The peer's events up to and including our side's close frame."""
    events: list[Any] = []
    while not any(isinstance(event, Close) for event in events):
        events.extend(await read_frames(reader, decoder))
    return events


async def receive_until_close(stream: anyio.abc.ByteStream, decoder: Connection) -> list[Any]:
    """The same over an anyio stream."""
    events: list[Any] = []
    while not any(isinstance(event, Close) for event in events):
        events.extend(decoder.receive_data(await stream.receive()))
    return events


CLIENT_MASK = b"abcd"


def three_then_close(*, mask: bytes | None) -> bytes:
    """Three text messages and a close frame (4001, "bye"), in one write."""
    frames = [frame(0x1, text.encode(), mask=mask) for text in ("1", "2", "3")]
    return b"".join(frames) + frame(0x8, close_payload(4001, "bye"), mask=mask)


ANSWERS_THEN_ECHO = ["re:1", "re:2", "re:3", ("close", 4001, "bye")]


async def test_server_answers_messages_before_the_peers_close_then_echoes_it(
    raw_server: StartRaw,
) -> None:
    """The close echo waits until the consumer has answered what came before the close."""
    channels: list[ByteStreamWebSocketChannel] = []

    async def answer(channel: ByteStreamWebSocketChannel) -> None:
        channels.append(channel)
        async for message in channel.stream:
            channel.sink.add(f"re:{message!s}")

    server = await over_server(raw_server, answer)
    reader, writer, _ = await upgrade_client(port_of(server))
    writer.write(three_then_close(mask=CLIENT_MASK))
    assert summary(await read_until_close(reader, Connection(True))) == ANSWERS_THEN_ECHO
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # then the server closes TCP
    writer.close()
    await server.wait_finished()
    [channel] = channels
    assert (channel.close_code, channel.close_reason) == (4001, "bye")


async def test_client_listening_answers_messages_before_the_servers_close(
    raw_server: StartRaw,
) -> None:
    events: list[Any] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(three_then_close(mask=None))
        events.extend(await read_until_close(reader, Connection(False)))

    server = await raw_server(handler)
    channel = await over_client(port_of(server))
    channel.stream.listen(lambda message: channel.sink.add(f"re:{message!s}"))
    await wait(channel.sink.done)
    assert summary(events) == ANSWERS_THEN_ECHO
    assert (channel.close_code, channel.close_reason) == (4001, "bye")


def test_anyio_answers_messages_before_the_peers_close_then_echoes_it(backend: str) -> None:
    async def body() -> None:
        peer, ours = await tcp_pair()
        client = over(ours, ours, server_side=False)

        subscription = aiter(client.stream)  # the consumer is there before the messages

        async def answer() -> None:
            async for message in subscription:
                client.sink.add(f"re:{message!s}")

        await peer.send(three_then_close(mask=None))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(answer)
            assert summary(await receive_until_close(peer, Connection(False))) == (
                ANSWERS_THEN_ECHO
            )
            await peer.aclose()
        await client.sink.done
        assert (client.close_code, client.close_reason) == (4001, "bye")

    run(backend, body)


def test_trio_streams_answer_messages_before_the_peers_close_then_echo_it() -> None:
    async def body() -> None:
        left, right = trio.socket.socketpair()
        ours, peer = trio.SocketStream(left), trio.SocketStream(right)
        server = over(ours, ours)

        subscription = aiter(server.stream)  # the consumer is there before the messages

        async def answer() -> None:
            async for message in subscription:
                server.sink.add(f"re:{message!s}")

        await peer.send_all(three_then_close(mask=CLIENT_MASK))
        decoder = Connection(True)
        events: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            while not any(isinstance(event, Close) for event in events):
                events.extend(decoder.receive_data(await peer.receive_some()))
        assert summary(events) == ANSWERS_THEN_ECHO
        assert await peer.receive_some() == b""  # the server closed the stream
        await server.sink.done
        await peer.aclose()
        assert (server.close_code, server.close_reason) == (4001, "bye")

    run("trio", body)


def test_anyio_keepalive_timeout_closes_with_1001_and_flush_raises(backend: str) -> None:
    """Keepalive gives up with 1001; from then on flush() raises and add() drops."""

    async def body() -> None:
        peer, ours = await tcp_pair()
        client = over(ours, ours, server_side=False, ping_interval=SHORT / 2)
        decoder = Connection(False)
        events = await receive_until_close(peer, decoder)  # the pings are never answered
        assert all(isinstance(event, Ping) for event in events[:-1]), events
        assert summary(events[-1:]) == [("close", status.GOING_AWAY, "")]
        assert client.close_code == status.GOING_AWAY
        with pytest.raises(WebSocketConnectionClosed):
            await client.sink.flush()
        client.sink.add("dropped")
        assert [message async for message in client.stream] == []
        await peer.send(frame(0x8, close_payload(status.GOING_AWAY)))  # the answer
        await peer.aclose()
        await client.sink.done
        assert (client.close_code, client.close_reason) == (status.GOING_AWAY, "")

    run(backend, body)


async def test_client_flush_raises_once_the_server_closed(echo_server: Server) -> None:
    channel = await over_client(echo_server.port)
    channel.sink.add("close")  # the echo server closes with 3001
    async for _ in channel.stream:
        pass
    with pytest.raises(WebSocketConnectionClosed):
        await channel.sink.flush()
    await wait(channel.sink.done)


# The whole sink contract: add_error, add_stream, pipe.


class Boom(Exception):
    """The error given to add_error."""


def test_anyio_add_error_closes_without_a_code_and_fails_done(backend: str) -> None:
    async def body() -> None:
        peer, ours = await tcp_pair()
        client = over(ours, ours, server_side=False)
        error = Boom("mine")
        client.sink.add_error(error)
        client.sink.add("dropped")  # after add_error, like after a peer's close
        [close] = await receive_until_close(peer, Connection(False))
        assert (close.code, close.reason) == (status.NO_STATUS_RECEIVED, "")
        assert [message async for message in client.stream] == []
        await peer.send(frame(0x8))  # the answer, without a code either
        await peer.aclose()
        with pytest.raises(Boom) as caught:
            await client.sink.done
        assert caught.value is error
        assert client.sink.close() is client.sink.done

    run(backend, body)


def test_anyio_add_stream_sends_everything_in_order_then_add_works(backend: str) -> None:
    async def body() -> None:
        server, client = await upgraded_pair()

        async def source() -> AsyncIterator[Message]:
            for message in ("one", b"two", "three"):
                yield message

        forwarding = client.sink.add_stream(source())
        with pytest.raises(StateError, match="while adding stream"):
            client.sink.add("too early")
        await forwarding
        client.sink.add("after")
        subscription = aiter(server.stream)
        assert [await anext(subscription) for _ in range(4)] == ["one", b"two", "three", "after"]
        await client.sink.close(status.NORMAL_CLOSURE)
        await server.sink.done

    run(backend, body)


def test_anyio_add_stream_stops_and_closes_its_source_when_the_peer_closes(
    backend: str,
) -> None:
    async def body() -> None:
        peer, ours = await tcp_pair()
        client = over(ours, ours, server_side=False)
        closed = anyio.Event()

        async def endless() -> AsyncIterator[Message]:
            try:
                while True:
                    yield "tick"
                    await anyio.sleep(0.01)
            finally:
                closed.set()

        forwarding = client.sink.add_stream(endless())
        decoder = Connection(False)
        ticks = 0
        while ticks < 3:
            ticks += sum(event == "tick" for event in decoder.receive_data(await peer.receive()))
        await peer.send(frame(0x8, close_payload(4002, "enough")))
        await forwarding  # resolves: forwarding stopped
        await closed.wait()
        with pytest.raises(WebSocketConnectionClosed):
            await client.sink.flush()
        await peer.aclose()
        await client.sink.done
        assert (client.close_code, client.close_reason) == (4002, "enough")

    run(backend, body)


async def test_pipe_connects_two_byte_stream_channels_until_both_end() -> None:
    async def pair() -> tuple[ByteStreamWebSocketChannel, asyncio.StreamReader, Any]:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        channel = over(reader, writer)
        peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
        return channel, peer_reader, peer_writer

    first, first_reader, first_writer = await pair()
    second, second_reader, second_writer = await pair()
    piping = asyncio.ensure_future(first.pipe(second))
    first_decoder, second_decoder = Connection(True), Connection(True)
    first_writer.write(frame(0x1, b"from the first", mask=CLIENT_MASK))
    assert await read_frames(second_reader, second_decoder) == ["from the first"]
    second_writer.write(frame(0x2, b"from the second", mask=CLIENT_MASK))
    assert await read_frames(first_reader, first_decoder) == [b"from the second"]
    # The first peer closes: the first stream ends, so the second sink closes (no code).
    first_writer.write(frame(0x8, close_payload(4001, "end"), mask=CLIENT_MASK))
    assert summary(await read_until_close(first_reader, first_decoder)) == [("close", 4001, "end")]
    assert summary(await read_until_close(second_reader, second_decoder)) == [
        ("close", status.NO_STATUS_RECEIVED, "")
    ]
    second_writer.write(frame(0x8, mask=CLIENT_MASK))
    await wait(piping)
    await wait(first.sink.done)
    await wait(second.sink.done)
    assert (first.close_code, first.close_reason) == (4001, "end")
    for writer in (first_writer, second_writer):
        writer.close()


# A read whose handling raises (issue 15 review): as on the direct transport (test_direct).


def handling_failures_into(
    failures: list[object],
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that keeps the exceptions reported as
    :data:`HANDLING_FAILED` in ``failures`` and passes on everything else."""

    def exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context["message"] == HANDLING_FAILED:
            failures.append(context["exception"])
        else:
            loop.default_exception_handler(context)

    return exception_handler


async def test_a_read_whose_handling_raises_fails_the_connection_and_keeps_what_came_before(
    raw_server: StartRaw,
) -> None:
    """Handling a read's events raised (a bug: here the callback a pong answers raises): the
    failure goes to the loop's exception handler and the connection fails with 1006 (the
    byte stream is dropped), as on the direct transport; the ``async for`` consumer gets
    the messages of the read before the failure, then its stream ends. Before the fix the
    reader task ended with the exception (reported only when the task was collected), and
    the connection stayed open with nobody reading: the consumer waited for ever."""
    pong = b"ping"
    hung_up = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(0x1, b"zero"))
        assert await read_frame(reader) == (0x89, pong)  # the client's ping
        # One write, one read on the client: a message, the pong, another message.
        writer.write(frame(0x1, b"one") + frame(0xA, pong) + frame(0x1, b"two"))
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), TIMEOUT)  # until the client hangs up
        hung_up.set()

    failures: list[object] = []
    asyncio.get_running_loop().set_exception_handler(handling_failures_into(failures))
    server = await raw_server(handler)
    channel = await over_client(port_of(server))
    received: list[Message] = []
    waiting = asyncio.Event()

    async def consume() -> None:
        async for message in channel.stream:
            received.append(message)
            waiting.set()

    consumer = asyncio.create_task(consume())
    await wait(waiting.wait())
    error = RuntimeError("handling the pong failed")

    def answered(rtt: float | None) -> None:
        raise error

    channel._driver.send_ping(answered, pong)
    await wait(consumer)  # the stream ends with the connection
    assert received == ["zero", "one"]  # "two" came after the failure: never delivered
    assert failures == [error]
    assert channel.close_code == status.ABNORMAL_CLOSURE
    await wait(channel.sink.done)
    await wait(hung_up.wait())


def test_anyio_a_read_whose_handling_raises_fails_the_connection_and_keeps_what_came_before(
    backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same over an anyio byte stream, on asyncio (the loop's exception handler has the
    failure) and on trio (which has no such handler: the failure is logged at ERROR on
    ``wschannel.bytestream``, where the flavour reports a failed task)."""
    pong = b"ping"
    error = RuntimeError("handling the pong failed")
    failures: list[object] = []

    async def body() -> None:
        if backend == "asyncio":
            asyncio.get_running_loop().set_exception_handler(handling_failures_into(failures))
        server_stream, client_stream = await tcp_pair()
        client = over(client_stream, client_stream, server_side=False)
        messages = aiter(client.stream)
        await server_stream.send(frame(0x1, b"zero"))
        assert await anext(messages) == "zero"

        def answered(rtt: float | None) -> None:
            raise error

        client._driver.send_ping(answered, pong)
        decoder = Connection(False)
        events: list[Any] = []
        while not events:
            events = decoder.receive_data(await server_stream.receive())
        [ping] = events
        assert isinstance(ping, Ping) and ping.data == pong
        # One send, one read on the client: a message, the pong, another message.
        await server_stream.send(frame(0x1, b"one") + frame(0xA, pong) + frame(0x1, b"two"))
        received: list[Message] = []
        with anyio.move_on_after(TIMEOUT / 2) as scope:
            async for message in messages:
                received.append(message)
        assert not scope.cancelled_caught, f"the stream never ended (had {received})"
        assert received == ["one"]  # "two" came after the failure: never delivered
        assert client.close_code == status.ABNORMAL_CLOSURE
        await client.sink.done
        await receive_all(server_stream)  # until the client hangs up
        await server_stream.aclose()

    with caplog.at_level("ERROR", logger="wschannel.bytestream"):
        run(backend, body)
    if backend == "trio":
        failures.extend(
            record.exc_info[1]
            for record in caplog.records
            if record.getMessage() == HANDLING_FAILED and record.exc_info is not None
        )
    assert failures == [error]
