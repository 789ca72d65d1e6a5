"""IO1-IO10: Dart's ``test/io_test.dart`` (dart-web-socket-channel.md §3.2), for ``wschannel.io``.

Dart's 2.x tests closed with 5678; 3.x and ``wschannel`` (design.md decision 2) use 3678.
"""

from __future__ import annotations

import asyncio

import pytest

import wschannel
from wschannel import WebSocketChannel, WebSocketChannelException
from wschannel._wschannel import Request
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Response

from .conftest import (
    SHORT,
    TIMEOUT,
    StartRaw,
    accept_upgrade,
    drain,
    read_head,
    read_until_eof,
    within,
)


async def ping_pong_server(
    channel: IOWebSocketChannel,
    received: list[Message],
    *,
    greet: bool,
    close: bool,
) -> None:
    """The server of IO1/IO2: optionally greets with ``hello!``, answers ``ping`` with
    ``pong``, then optionally closes with 3678 / ``raisin``."""
    if greet:
        channel.sink.add("hello!")
    async for message in channel.stream:
        received.append(message)
        channel.sink.add("pong")
        if close:
            await channel.sink.close(3678, "raisin")
            return


async def test_client_wrapping_an_open_connection_talks_to_a_server_wrapping_its_own() -> None:
    """IO1: communicates using existing WebSockets.

    The server sends ``hello!``, answers ``ping`` with ``pong`` and closes with 3678/raisin;
    the client wraps a low-level connection it opened itself in ``IOWebSocketChannel``.
    """
    from wschannel.adapter import IOWebSocket

    server_received: list[Message] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        await ping_pong_server(channel, server_received, greet=True, close=True)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        socket = await within(IOWebSocket.connect(f"ws://127.0.0.1:{server.port}"))
        channel = IOWebSocketChannel(socket)
        await within(channel.ready)
        received: list[Message] = []

        async def converse() -> None:
            async for message in channel.stream:
                received.append(message)
                if message == "hello!":
                    channel.sink.add("ping")

        await within(converse())
    assert received == ["hello!", "pong"]
    assert server_received == ["ping"]
    assert channel.close_code == 3678
    assert channel.close_reason == "raisin"


async def check_immediate_communication(
    channel: WebSocketChannel, server_closes: list[int]
) -> None:
    """IO2/IO3's client: ``ping`` added before ``ready``; exactly one ``pong`` comes back."""
    channel.sink.add("ping")  # before ready: buffered, sent once open
    await within(channel.ready)
    received: list[Message] = []
    done_calls: list[None] = []
    pong = asyncio.get_running_loop().create_future()

    def on_data(message: Message) -> None:
        received.append(message)
        if not pong.done():
            pong.set_result(None)

    channel.stream.listen(on_data, on_done=lambda: done_calls.append(None))
    await within(pong)
    await asyncio.sleep(SHORT)  # a second message would arrive here (time is the point)
    await within(channel.sink.close(3678, "raisin"))
    await asyncio.sleep(0)  # on_done is called soon after the stream ends
    assert received == ["pong"]
    assert done_calls == [None]
    assert server_closes == [3678]


async def test_client_connect_sends_a_message_added_before_ready() -> None:
    """IO2: .connect communicates immediately (a message added before ``ready`` is sent)."""
    server_closes: list[int] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        await ping_pong_server(channel, [], greet=False, close=False)
        assert channel.close_code is not None
        server_closes.append(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await check_immediate_communication(channel, server_closes)


async def test_client_platform_connect_sends_a_message_added_before_ready() -> None:
    """IO3: .connect communicates immediately using the platform independent api."""
    server_closes: list[int] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        await ping_pong_server(channel, [], greet=False, close=False)
        assert channel.close_code is not None
        server_closes.append(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = WebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        assert isinstance(channel, IOWebSocketChannel)
        await check_immediate_communication(channel, server_closes)


async def test_client_close_before_ready_reaches_the_server_with_code_and_reason() -> None:
    """IO4: .connect with an immediate call to close.

    The close issued while connecting is sent once open; the server's channel reports its
    code and reason once its stream ends.
    """
    server_saw: asyncio.Future[tuple[int | None, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        server_saw.set_result((channel.close_code, channel.close_reason))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        closing = channel.sink.close(3678, "raisin")
        await within(closing)
        await within(channel.ready)
        assert await within(server_saw) == (3678, "raisin")


async def test_client_connect_to_an_http_404_fails_ready_and_stream_with_channel_exception(
    raw_server: StartRaw,
) -> None:
    """IO5: .connect wraps a connection error in WebSocketChannelException (a plain 404)."""

    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    server = await raw_server(not_found)
    channel = IOWebSocketChannel.connect(server.url)
    with pytest.raises(WebSocketChannelException) as ready_error:
        await within(channel.ready)
    assert "404" in str(ready_error.value)
    assert ready_error.value.inner is not None
    assert ready_error.value.__cause__ is ready_error.value.inner
    with pytest.raises(WebSocketChannelException) as stream_error:
        await drain(channel.stream)
    assert stream_error.value is ready_error.value


async def test_client_fails_with_channel_exception_when_the_server_refuses_its_protocol() -> None:
    """IO6: .protocols fail: the server cannot upgrade with the offered protocol.

    As in Dart, the server answers the upgrade with an error status instead of a 101.
    """

    def refuse_other_protocols(request: Request) -> Response | None:
        if request.header("sec-websocket-protocol") != "passed-protocol":
            return (500, [("Content-Type", "text/plain")], b"unsupported protocol")
        return None

    async with wschannel.serve(
        lambda channel: None, "127.0.0.1", 0, process_request=refuse_other_protocols
    ) as server:
        channel = IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{server.port}", protocols=["failed-protocol"]
        )
        with pytest.raises(WebSocketChannelException) as ready_error:
            await within(channel.ready)
        assert "500" in str(ready_error.value)
        with pytest.raises(WebSocketChannelException):
            await drain(channel.stream)


async def test_client_reports_the_negotiated_protocol_after_the_stream_ends() -> None:
    """IO7: .protocols pass: the negotiated protocol is exposed and kept after the close."""
    server_protocol: list[str | None] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        server_protocol.append(channel.protocol)
        await channel.sink.close()

    async with wschannel.serve(handler, "127.0.0.1", 0, protocols=["passed-protocol"]) as server:
        channel = IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{server.port}", protocols=["passed-protocol"]
        )
        await within(channel.ready)
        assert await drain(channel.stream) == []
    assert server_protocol == ["passed-protocol"]
    assert channel.protocol == "passed-protocol"


async def test_client_connect_timeout_does_not_fire_when_the_server_is_fast() -> None:
    """IO8: .connects with a timeout parameter specified (and the server sees the close)."""
    server_saw: asyncio.Future[tuple[int | None, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        server_saw.set_result((channel.close_code, channel.close_reason))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{server.port}", connect_timeout=TIMEOUT / 5
        )
        await within(channel.ready)
        await within(channel.sink.close(3678, "raisin"))
        assert await within(server_saw) == (3678, "raisin")


async def test_client_connect_timeout_fails_ready_and_stream_with_timeout_error(
    raw_server: StartRaw,
) -> None:
    """IO9: .respects timeout parameter when trying to connect.

    The server waits 4 intervals before upgrading; the client gives up after 2. design.md
    decision 7: ``ready`` fails with the built-in ``TimeoutError``, not wrapped.
    """

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(4 * SHORT)  # slower than connect_timeout on purpose
        await accept_upgrade(reader, writer)
        await read_until_eof(reader)

    server = await raw_server(slow)
    channel = IOWebSocketChannel.connect(server.url, connect_timeout=2 * SHORT)
    with pytest.raises(TimeoutError) as ready_error:
        await within(channel.ready)
    assert not isinstance(ready_error.value, WebSocketChannelException)
    with pytest.raises(TimeoutError):
        await drain(channel.stream)


async def test_client_settings_reach_the_upgrade_request() -> None:
    """IO10: .custom client is passed through.

    Python has no ``HttpClient``: the client-level settings are ``user_agent=`` and
    ``headers=`` (dart-web-socket-channel.md §5.6 #12); the server sees both.
    """
    seen: list[tuple[str | None, str | None]] = []

    def record(request: Request) -> None:
        seen.append((request.header("user-agent"), request.header("x-custom")))

    async with wschannel.serve(
        lambda channel: None, "127.0.0.1", 0, process_request=record
    ) as server:
        channel = IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{server.port}", user_agent="custom", headers={"X-Custom": "yes"}
        )
        await within(channel.ready)
        await within(channel.sink.close())
    assert seen == [("custom", "yes")]
