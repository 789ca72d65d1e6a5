"""IOWebSocketChannel: the client, against wschannel's server and misbehaving raw servers."""

from __future__ import annotations

import array
import asyncio
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

import pytest
import trustme
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    close_payload,
    close_then_hang_up,
    frame,
    next_message,
    read_frame,
    read_request,
    unmask,
    wait,
    wait_until,
)

import wschannel
import wschannel._direct
from wschannel import StateError, WebSocketChannelException, status
from wschannel._wschannel import HandshakeError
from wschannel.adapter import IOWebSocket, TextDataReceived
from wschannel.channel import Message, WebSocketChannel
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server
from wschannel.testing import FakeWebSocket, fake_pair

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def echo_of(url: str, message: str | bytes, **options: object) -> Message:
    async with IOWebSocketChannel.connect(url, **options) as channel:  # type: ignore[arg-type]
        channel.sink.add(message)
        return await next_message(aiter(channel.stream))


# Messages.


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        b"\x01\x02\x03",
        "",
        b"",
        "🎨⛳🌈 é",
        "x" * 120_000,
        bytes(range(256)) * 3907,  # 1 000 192 bytes
    ],
    ids=["text", "binary", "empty text", "empty binary", "non-ascii", "large text", "1 MB"],
)
async def test_client_receives_echo_of_each_message_kind(echo_url: str, message: Message) -> None:
    received = await echo_of(echo_url, message)
    assert type(received) is type(message)
    assert received == message


async def test_client_receives_messages_in_order_with_their_types(echo_url: str) -> None:
    sent: list[Message] = ["one", b"\x01\x02\x03", "two", b"\x04\x05\x06"]
    async with IOWebSocketChannel.connect(echo_url) as channel:
        for message in sent:
            channel.sink.add(message)
        subscription = aiter(channel.stream)
        received = [await next_message(subscription) for _ in sent]
    assert received == sent
    assert [type(message) for message in received] == [str, bytes, str, bytes]


async def test_client_sends_any_bytes_like_object_as_binary(echo_url: str) -> None:
    async with IOWebSocketChannel.connect(echo_url) as channel:
        channel.sink.add(bytearray(b"array"))
        channel.sink.add(memoryview(b"xview")[1:])
        channel.sink.add(memoryview(b"s-t-r-i-d-e")[::2])
        channel.sink.add(array.array("H", [0x0102]))
        subscription = aiter(channel.stream)
        assert await next_message(subscription) == b"array"
        assert await next_message(subscription) == b"view"
        assert await next_message(subscription) == b"stride"
        assert await next_message(subscription) == array.array("H", [0x0102]).tobytes()


@pytest.mark.parametrize("data", [None, 42, 1.5, ["a"], [1, 2, 3], object()])
async def test_client_add_raises_type_error_for_unsupported_types(
    echo_url: str, data: object
) -> None:
    async with IOWebSocketChannel.connect(echo_url) as channel:
        with pytest.raises(TypeError, match="Cannot send"):
            channel.sink.add(data)  # type: ignore[arg-type]
        channel.sink.add("still works")
        assert await next_message(aiter(channel.stream)) == "still works"


async def test_client_sends_messages_added_before_ready(echo_url: str) -> None:
    channel = IOWebSocketChannel.connect(echo_url)
    channel.sink.add("early")
    channel.sink.add(b"bird")
    assert not channel.ready.done()
    await wait(channel.ready)
    subscription = aiter(channel.stream)
    assert await next_message(subscription) == "early"
    assert await next_message(subscription) == b"bird"
    await wait(channel.sink.close())


async def test_client_buffers_a_mutable_buffer_added_before_ready(echo_url: str) -> None:
    channel = IOWebSocketChannel.connect(echo_url)
    data = bytearray(b"before")
    channel.sink.add(data)
    data[:] = b"after!"
    await wait(channel.ready)
    assert await next_message(aiter(channel.stream)) == b"before"
    await wait(channel.sink.close())


async def test_client_listen_receives_each_message_then_done(echo_url: str) -> None:
    channel = IOWebSocketChannel.connect(echo_url)
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


async def test_client_second_subscription_raises_state_error(echo_url: str) -> None:
    async with IOWebSocketChannel.connect(echo_url) as channel:
        aiter(channel.stream)
        with pytest.raises(StateError):
            aiter(channel.stream)
        with pytest.raises(StateError):
            channel.stream.listen(print)


# Opening.


async def test_client_ready_resolves_and_protocol_is_none_without_subprotocol(
    echo_url: str,
) -> None:
    channel = IOWebSocketChannel.connect(echo_url)
    assert channel.protocol is None
    assert channel.close_code is None
    assert channel.close_reason is None
    await wait(channel.ready)
    assert channel.protocol is None
    assert channel.close_code is None
    await wait(channel.sink.close())


async def test_client_channel_is_awaitable(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    assert channel.ready.done()
    await wait(channel.sink.close())


async def test_client_generic_connect_uses_io_channel(echo_url: str) -> None:
    async with wschannel.connect(echo_url) as channel:
        assert isinstance(channel, IOWebSocketChannel)
        channel.sink.add("ping")
        assert await next_message(aiter(channel.stream)) == "ping"


async def test_client_negotiates_subprotocol_in_its_own_order() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add(channel.protocol or "none")

    async with wschannel.serve(handler, "127.0.0.1", 0, protocols=["three", "two", "x"]) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with IOWebSocketChannel.connect(url, protocols=["one", "two", "three"]) as channel:
            assert channel.protocol == "two"
            assert await next_message(aiter(channel.stream)) == "two"
        async with IOWebSocketChannel.connect(url, protocols=["one"]) as channel:
            assert channel.protocol is None


async def test_client_fails_when_server_chooses_an_unoffered_subprotocol(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer, protocol="surprise")
        await reader.read()

    server = await raw_server(handler)
    channel = IOWebSocketChannel.connect(server.url, protocols=["chat"])
    with pytest.raises(WebSocketChannelException):
        await wait(channel.ready)
    assert channel.protocol is None


async def test_client_sends_request_headers() -> None:
    seen: dict[str, str | None] = {}

    async def handler(channel: IOWebSocketChannel) -> None:
        request = channel.request
        assert request is not None
        for name in ("Host", "Authorization", "User-Agent", "X-Custom", "Origin"):
            seen[name] = request.header(name)
        seen["path"] = request.path

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        port = server.port
        url = f"ws://alice:s%20cret@127.0.0.1:{port}/chat?room=1"
        channel = IOWebSocketChannel.connect(
            url, headers={"X-Custom": "yes", "Origin": "http://example.com"}, user_agent="custom"
        )
        await wait(channel.ready)
        await wait(channel.sink.done)
    assert seen == {
        "Host": f"127.0.0.1:{port}",
        "Authorization": "Basic YWxpY2U6cyBjcmV0",  # alice:s cret
        "User-Agent": "custom",
        "X-Custom": "yes",
        "Origin": "http://example.com",
        "path": "/chat?room=1",
    }


async def test_client_sends_a_default_user_agent() -> None:
    agents: list[str | None] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        assert channel.request is not None
        agents.append(channel.request.header("user-agent"))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await wait(channel.sink.done)
    assert agents[0] is not None
    assert "wschannel/" in agents[0]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "127.0.0.1:80", "ws://", "ws://host/#fragment", "ws://h:99999"]
)
async def test_client_connect_raises_value_error_for_an_invalid_url(url: str) -> None:
    with pytest.raises(ValueError):
        IOWebSocketChannel.connect(url)


async def test_client_connect_raises_value_error_for_ssl_with_ws_url() -> None:
    with pytest.raises(ValueError, match="wss"):
        IOWebSocketChannel.connect("ws://127.0.0.1:1", ssl=ssl.create_default_context())


# Connect failures.


async def assert_connect_fails(channel: IOWebSocketChannel, error_type: type[Exception]) -> None:
    """``ready`` and the stream fail with the same error; ``done`` resolves."""
    with pytest.raises(error_type) as on_ready:
        await wait(channel.ready)
    subscription = aiter(channel.stream)
    with pytest.raises(error_type) as on_stream:
        await next_message(subscription)
    assert on_stream.value is on_ready.value
    with pytest.raises(StopAsyncIteration):
        await next_message(subscription)
    await wait(channel.sink.done)
    assert channel.close_code is None


async def test_client_connect_to_refused_port_fails_with_channel_exception() -> None:
    channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{free_port()}")
    await assert_connect_fails(channel, WebSocketChannelException)
    error = channel.ready.exception()
    assert isinstance(error, WebSocketChannelException)
    assert isinstance(error.inner, ConnectionRefusedError)
    assert error.__cause__ is error.inner


async def test_client_connect_to_http_404_server_fails_with_channel_exception(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found")
        await writer.drain()

    server = await raw_server(handler)
    channel = IOWebSocketChannel.connect(server.url)
    await assert_connect_fails(channel, WebSocketChannelException)
    error = channel.ready.exception()
    assert isinstance(error, WebSocketChannelException)
    assert isinstance(error.inner, HandshakeError)
    assert error.inner.status == 404


async def test_client_connect_fails_when_server_closes_before_answering(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    server = await raw_server(handler)
    channel = IOWebSocketChannel.connect(server.url)
    await assert_connect_fails(channel, WebSocketChannelException)


async def test_client_connect_timeout_fails_with_timeout_error_and_leaves_no_socket(
    raw_server: StartRaw,
) -> None:
    peer_closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns at EOF
        peer_closed.set()

    server = await raw_server(handler)
    channel = IOWebSocketChannel.connect(server.url, connect_timeout=SHORT)
    await assert_connect_fails(channel, TimeoutError)
    assert not isinstance(channel.ready.exception(), WebSocketChannelException)
    await asyncio.wait_for(peer_closed.wait(), TIMEOUT)


async def test_client_connect_timeout_does_not_fire_for_a_fast_server(echo_url: str) -> None:
    async with IOWebSocketChannel.connect(echo_url, connect_timeout=SHORT) as channel:
        channel.sink.add("quick")
        subscription = aiter(channel.stream)
        assert await next_message(subscription) == "quick"
        await asyncio.sleep(SHORT)  # past connect_timeout (time is the point): still open
        assert channel.close_code is None
        channel.sink.add("still open")
        assert await next_message(subscription) == "still open"


async def test_client_close_while_connecting_resolves_when_connect_fails() -> None:
    channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{free_port()}")
    done = channel.sink.close(status.NORMAL_CLOSURE)
    await wait(done)
    with pytest.raises(WebSocketChannelException):
        await wait(channel.ready)


async def test_client_unawaited_failed_ready_logs_nothing() -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: contexts.append(context))
    try:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{free_port()}")
        await wait(channel.sink.done)
        del channel
        import gc

        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert contexts == []


# Closing.


async def test_client_receives_close_code_from_server_without_listening(echo_url: str) -> None:
    channel = IOWebSocketChannel.connect(echo_url)
    channel.sink.add("close")
    await wait(channel.sink.done)
    assert channel.close_code == 3001
    assert channel.close_reason == "you asked me to"
    await wait(channel.sink.close())  # a no-op after the peer closed


async def test_client_stream_ends_after_server_close(echo_url: str) -> None:
    async with IOWebSocketChannel.connect(echo_url) as channel:
        channel.sink.add("hello")
        channel.sink.add("close")
        assert [message async for message in channel.stream] == ["hello"]
        assert channel.close_code == 3001


async def test_client_close_reaches_server_with_code_and_reason() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        closed.set_result((channel.close_code, channel.close_reason))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await wait(channel.ready)
        await wait(channel.sink.close(3678, "raisin"))
        assert await asyncio.wait_for(closed, TIMEOUT) == (3678, "raisin")


async def test_client_close_while_connecting_is_sent_once_open() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        closed.set_result((channel.close_code, channel.close_reason))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        channel.sink.add("sent first")
        await wait(channel.sink.close(3678, "raisin"))
        await wait(channel.ready)
        assert await asyncio.wait_for(closed, TIMEOUT) == (3678, "raisin")


async def test_client_close_code_reports_the_echo_of_its_own_close(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    await wait(channel.sink.close(3005, "please close"))
    assert channel.close_code == 3005
    assert channel.close_reason == "please close"


async def test_client_close_without_code_gets_1005(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    await wait(channel.sink.close())
    assert channel.close_code == status.NO_STATUS_RECEIVED
    assert channel.close_reason == ""


async def test_client_local_close_ends_the_stream_at_once(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    subscription = aiter(channel.stream)
    for index in range(5):
        channel.sink.add(str(index))
    assert await next_message(subscription) == "0"
    await wait_until(lambda: len(channel.stream._buffer) == 4, what="the other echoes are buffered")
    channel.sink.close(status.GOING_AWAY)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(subscription), TIMEOUT)
    await wait(channel.sink.done)


async def test_client_local_close_stops_listen_callbacks(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    received: list[Message] = []
    finished = asyncio.Event()

    def on_data(message: Message) -> None:
        received.append(message)
        channel.sink.close()

    channel.stream.listen(on_data, on_done=finished.set)
    for index in range(5):
        channel.sink.add(str(index))
    await asyncio.wait_for(finished.wait(), TIMEOUT)
    await wait(channel.sink.done)
    assert received == ["0"]


async def test_client_add_after_close_raises_state_error(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    done = channel.sink.close()
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        channel.sink.add("late")
    assert channel.sink.close() is done
    await wait(done)
    with pytest.raises(StateError):
        channel.sink.add(b"later")


async def test_client_add_after_server_close_is_dropped(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    channel.sink.add("close")
    assert [message async for message in channel.stream] == []
    channel.sink.add("dropped")
    channel.sink.add(b"dropped")
    await wait(channel.sink.done)
    channel.sink.add("still dropped")
    assert channel.close_code == 3001


@pytest.mark.parametrize(
    ("code", "reason"),
    [(999, None), (1004, None), (1005, None), (1006, None), (1015, None), (2999, None),
     (5000, None), (1000, "x" * 124), (None, "reason without code")],
)  # fmt: skip
async def test_client_invalid_close_raises_value_error_and_connection_still_works(
    echo_url: str, code: int | None, reason: str | None
) -> None:
    async with IOWebSocketChannel.connect(echo_url) as channel:
        with pytest.raises(ValueError):
            channel.sink.close(code, reason)
        channel.sink.add("still open")
        assert await next_message(aiter(channel.stream)) == "still open"
        assert channel.close_code is None


async def test_client_close_accepts_going_away_as_in_the_readme(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    await wait(channel.sink.close(status.GOING_AWAY))
    assert channel.close_code == status.GOING_AWAY


async def test_client_stops_iterating_without_closing_and_still_sees_server_close(
    echo_url: str,
) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    channel.sink.add("one")
    async for message in channel.stream:
        assert message == "one"
        break
    channel.sink.add("close")
    await wait(channel.sink.done)
    assert channel.close_code == 3001


async def test_client_reports_1006_when_connection_is_lost_without_close_frame(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    assert [message async for message in channel.stream] == []
    assert channel.close_code == status.ABNORMAL_CLOSURE
    assert channel.close_reason == ""
    await wait(channel.sink.done)


async def test_client_close_gives_up_after_close_timeout(raw_server: StartRaw) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        await reader.read()  # never answers the close frame

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, close_timeout=SHORT)
    await wait(channel.sink.close(status.NORMAL_CLOSURE))
    assert channel.close_code == status.ABNORMAL_CLOSURE


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct I/O", "asyncio transport"])
async def test_client_stream_ends_once_the_server_has_closed_tcp(
    raw_server: StartRaw, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    # A program that leaves its loop once the stream has ended must leave no socket open:
    # the stream of a client ends when the server has closed TCP, not at its close frame.
    monkeypatch.setattr(wschannel._direct, "ENABLED", direct_io)
    server_closed = asyncio.Event()
    # A slow server: the close frames crossed, TCP still open a while.
    handler = close_then_hang_up(status.NORMAL_CLOSURE, "bye", linger=SHORT, hung_up=server_closed)
    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    assert [message async for message in channel.stream] == []
    assert server_closed.is_set()
    assert channel.sink.done.done()
    assert (channel.close_code, channel.close_reason) == (status.NORMAL_CLOSURE, "bye")


async def test_client_with_a_full_buffer_still_reads_the_server_eof_after_its_close(
    raw_server: StartRaw,
) -> None:
    # Reading is paused (more than max_queue messages wait, nobody consumes) when the close
    # frame comes: the client still reads on for the server's EOF, and closes cleanly.
    sent = [f"message {index}" for index in range(6)]
    server = await raw_server(close_then_hang_up(status.NORMAL_CLOSURE, messages=sent))
    # A close_timeout the wait below would not outlast: only the EOF can end it in time.
    channel = await IOWebSocketChannel.connect(server.url, max_queue=2, close_timeout=TIMEOUT * 4)
    await wait(channel.sink.done)
    assert channel.close_code == status.NORMAL_CLOSURE
    assert [message async for message in channel.stream] == sent


async def test_client_without_close_timeout_ends_its_stream_at_the_close_frame(
    raw_server: StartRaw,
) -> None:
    # With no limit on waiting for the server's EOF, the stream does not wait for it.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(0x8, close_payload(status.GOING_AWAY)))
        await reader.read()  # keeps TCP open until the client goes

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, close_timeout=None)
    received = asyncio.ensure_future(alist(channel.stream))
    assert await asyncio.wait_for(received, TIMEOUT) == []
    assert channel.close_code == status.GOING_AWAY
    channel._transport_protocol.abort()  # type: ignore[union-attr]
    await wait(channel.sink.done)


async def alist(stream: AsyncIterable[Message]) -> list[Message]:
    return [message async for message in stream]


async def test_client_receives_frames_sent_with_the_handshake_response(
    raw_server: StartRaw,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers = await read_request(reader)
        accept = wschannel.sign_key(headers["sec-websocket-key"])
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            b"\x81\x02hi\x88\x02\x03\xe8"  # text "hi", then close 1000
        )
        await reader.read()

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, close_timeout=SHORT)
    assert [message async for message in channel.stream] == ["hi"]
    assert channel.close_code == status.NORMAL_CLOSURE


async def test_client_answers_a_ping_with_a_pong(raw_server: StartRaw) -> None:
    frames: asyncio.Future[tuple[int, bytes]] = asyncio.Future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(b"\x89\x04ping")
        frames.set_result(await unmask(reader))
        await reader.read()

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, close_timeout=SHORT)
    assert await asyncio.wait_for(frames, TIMEOUT) == (0x8A, b"ping")
    await wait(channel.sink.close())


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02\xff\xfe", status.INVALID_FRAME_PAYLOAD_DATA),
        (b"\x81\x82\x00\x00\x00\x00hi", status.PROTOCOL_ERROR),
    ],
    ids=["invalid utf-8", "masked frame from a server"],
)
async def test_client_fails_the_connection_when_the_server_misbehaves(
    raw_server: StartRaw, frame: bytes, code: int
) -> None:
    answer: asyncio.Future[tuple[int, bytes]] = asyncio.Future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame)
        answer.set_result(await unmask(reader))
        await reader.read()

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    assert [message async for message in channel.stream] == []
    assert channel.close_code == code
    opcode, payload = await asyncio.wait_for(answer, TIMEOUT)
    assert opcode == 0x88
    assert int.from_bytes(payload[:2], "big") == code
    await wait(channel.sink.done)


# Limits.


async def test_client_message_over_server_max_size_closes_with_1009() -> None:
    server_codes: list[int | None] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        server_codes.append(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0, max_message_size=1000) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        channel.sink.add(b"x" * 1000)
        channel.sink.add(b"x" * 1001)
        await wait(channel.sink.done)
        assert channel.close_code == status.MESSAGE_TOO_BIG
    assert server_codes == [status.MESSAGE_TOO_BIG]


async def test_client_fails_connection_with_1009_for_a_message_over_its_max_size(
    echo_url: str,
) -> None:
    channel = await IOWebSocketChannel.connect(echo_url, max_message_size=100)
    channel.sink.add("y" * 101)
    assert [message async for message in channel.stream] == []
    assert channel.close_code == status.MESSAGE_TOO_BIG
    await wait(channel.sink.done)


async def test_client_receives_every_message_when_reading_pauses_for_backpressure() -> None:
    count = 300

    async def handler(channel: IOWebSocketChannel) -> None:
        for index in range(count):
            channel.sink.add(f"message {index}")
        await channel.sink.flush()
        channel.sink.add("close")  # ignored by the client; the handler's return closes

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}", max_queue=4)
        protocol = channel._transport_protocol
        assert protocol is not None and protocol.transport is not None
        transport = protocol.transport
        await wait_until(
            lambda: not transport.is_reading(), what="the queue filled, reading paused"
        )
        received = [message async for message in channel.stream]
    assert received == [f"message {index}" for index in range(count)] + ["close"]
    assert channel.close_code == status.NORMAL_CLOSURE


async def test_client_flush_waits_for_the_transport(echo_url: str) -> None:
    async with IOWebSocketChannel.connect(echo_url, write_limit=1024) as channel:
        subscription = aiter(channel.stream)
        for _ in range(20):
            channel.sink.add(b"z" * 10_000)
        await asyncio.wait_for(channel.sink.flush(), TIMEOUT)
        for _ in range(20):
            assert await next_message(subscription) == b"z" * 10_000


# Compression and TLS.


@pytest.mark.parametrize("compression", [True, False])
async def test_client_offers_compression_only_when_asked(
    echo_server: Server, compression: bool
) -> None:
    offers: list[str | None] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        assert channel.request is not None
        offers.append(channel.request.header("sec-websocket-extensions"))
        async for message in channel.stream:
            channel.sink.add(message)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}"
        text = "compressible " * 10_000
        assert await echo_of(url, text, compression=compression) == text
    assert (offers[0] is not None and "permessage-deflate" in offers[0]) is compression


@pytest.mark.parametrize(("client", "server"), [(True, False), (False, True)])
async def test_client_talks_to_a_server_when_only_one_side_compresses(
    client: bool, server: bool
) -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0, compression=server) as running:
        url = f"ws://127.0.0.1:{running.port}"
        assert await echo_of(url, "plain " * 100, compression=client) == "plain " * 100


async def _echo_all(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


async def test_client_connects_over_tls_with_a_trusted_certificate(
    certificate_authority: trustme.CA,
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    certificate_authority.configure_trust(client_context)
    async with wschannel.serve(_echo_all, "127.0.0.1", 0, ssl=server_context) as server:
        url = f"wss://127.0.0.1:{server.port}"
        assert await echo_of(url, "secret", ssl=client_context) == "secret"
        assert await echo_of(url, b"unverified", ssl=False) == b"unverified"
        channel = IOWebSocketChannel.connect(url)  # the default CA store does not trust it
        with pytest.raises(WebSocketChannelException) as info:
            await wait(channel.ready)
        assert isinstance(info.value.inner, ssl.SSLError)


# Keepalive.


async def test_client_keepalive_keeps_a_responsive_connection_open(echo_url: str) -> None:
    interval = SHORT / 2  # a pong may take this long: a loaded machine needs the slack
    async with IOWebSocketChannel.connect(echo_url, ping_interval=interval) as channel:
        await asyncio.sleep(interval * 4)  # several intervals pass (time is the point)
        channel.sink.add("alive")
        assert await next_message(aiter(channel.stream)) == "alive"
        assert channel.close_code is None


async def test_client_keepalive_closes_with_1001_when_no_pong_comes(raw_server: StartRaw) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        await reader.read()  # reads pings, never answers

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url, ping_interval=SHORT, close_timeout=SHORT)
    assert [message async for message in channel.stream] == []
    assert channel.close_code == status.GOING_AWAY
    assert channel.close_reason == ""
    await wait(channel.sink.done)
    channel.sink.add("dropped")


# The sink's guarantees over sockets.


async def server_close_of(handler_result: asyncio.Future[tuple[int | None, str | None]]) -> Server:
    """A server recording the close code and reason its channel saw."""

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        handler_result.set_result((channel.close_code, channel.close_reason))

    return await wschannel.serve(handler, "127.0.0.1", 0)


async def test_client_add_error_closes_without_code_so_the_server_sees_1005() -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()
    async with await server_close_of(seen) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        error = ConnectionAbortedError("the application gave up")
        channel.sink.add_error(error)
        assert [message async for message in channel.stream] == []
        with pytest.raises(ConnectionAbortedError) as raised:
            await wait(channel.sink.done)
        assert raised.value is error
        assert await asyncio.wait_for(seen, TIMEOUT) == (status.NO_STATUS_RECEIVED, "")
        channel.sink.add("dropped")
        with pytest.raises(ConnectionAbortedError):
            await wait(channel.sink.close())


async def test_client_add_error_while_connecting_closes_once_open() -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()
    async with await server_close_of(seen) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        channel.sink.add_error(ValueError("early"))
        await wait(channel.ready)
        with pytest.raises(ValueError, match="early"):
            await wait(channel.sink.done)
        assert await asyncio.wait_for(seen, TIMEOUT) == (status.NO_STATUS_RECEIVED, "")


async def test_client_add_stream_waits_for_the_transport_when_its_buffer_is_full(
    raw_server: StartRaw,
) -> None:
    reading = asyncio.Event()
    received: list[int] = []

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        await reading.wait()
        while len(received) < count:
            _, second = await reader.readexactly(2)
            assert second & 0x7F == 127
            length = int.from_bytes(await reader.readexactly(8), "big")
            await reader.readexactly(4 + length)
            received.append(length)
        await reader.read()

    count, size = 64, 1 << 17  # 8 MiB: more than the socket buffers hold
    produced: list[int] = []

    async def source() -> AsyncIterator[bytes]:
        for index in range(count):
            produced.append(index)
            yield bytes(size)

    server = await raw_server(slow_reader)
    channel = await IOWebSocketChannel.connect(
        server.url, write_limit=1 << 16, compression=False, close_timeout=SHORT
    )
    adding = channel.sink.add_stream(source())
    # Nothing may finish while the server does not read: time is the point.
    await asyncio.sleep(SHORT)
    assert not adding.done()
    assert len(produced) < count, "add_stream did not wait for the transport"
    reading.set()
    await wait(adding)
    assert len(produced) == count
    await wait(channel.sink.close())
    assert received == [size] * count


async def test_client_add_stream_added_before_ready_is_sent_once_open(echo_url: str) -> None:
    channel = IOWebSocketChannel.connect(echo_url)

    async def source() -> AsyncIterator[str]:
        for message in ("a", "b", "c"):
            yield message

    adding = channel.sink.add_stream(source())
    with pytest.raises(StateError, match="while adding stream"):
        channel.sink.add("x")
    await wait(adding)
    assert channel.ready.done()
    subscription = aiter(channel.stream)
    assert [await next_message(subscription) for _ in range(3)] == ["a", "b", "c"]
    channel.sink.add("fast path again")
    assert await next_message(subscription) == "fast path again"
    await wait(channel.sink.close())


async def test_client_add_stream_with_a_failing_source_closes_with_1005() -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.Future()
    received: list[Message] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            received.append(message)
        seen.set_result((channel.close_code, channel.close_reason))

    async def failing() -> AsyncIterator[str]:
        yield "one"
        yield "two"
        raise KeyError("no three")

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await wait(channel.sink.add_stream(failing()))
        with pytest.raises(KeyError):
            await wait(channel.sink.done)
        assert await asyncio.wait_for(seen, TIMEOUT) == (status.NO_STATUS_RECEIVED, "")
    assert received == ["one", "two"]


async def test_client_pipe_forwards_between_two_connections() -> None:
    collected: asyncio.Future[tuple[list[Message], int | None]] = asyncio.Future()

    async def talker(channel: IOWebSocketChannel) -> None:
        channel.sink.add("one")
        channel.sink.add(b"two")
        await channel.sink.close(4000, "said it all")

    async def collector(channel: IOWebSocketChannel) -> None:
        received = [message async for message in channel.stream]
        collected.set_result((received, channel.close_code))

    async with (
        wschannel.serve(talker, "127.0.0.1", 0) as talking,
        wschannel.serve(collector, "127.0.0.1", 0) as collecting,
    ):
        source = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{talking.port}")
        target = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{collecting.port}")
        await wait(source.pipe(target))
        assert await asyncio.wait_for(collected, TIMEOUT) == (
            ["one", b"two"],
            status.NO_STATUS_RECEIVED,
        )
        assert source.close_code == 4000
        await wait(source.sink.done)
        await wait(target.sink.done)


# IOWebSocketChannel(connection): wrapping an open low-level connection (IO1).


async def test_client_wraps_an_open_io_websocket_and_talks_to_a_channel_server() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add("hello!")
        assert await next_message(aiter(channel.stream)) == "ping"
        channel.sink.add("pong")
        await channel.sink.close(3678, "raisin")

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        socket = await asyncio.wait_for(
            IOWebSocket.connect(f"ws://127.0.0.1:{server.port}"), TIMEOUT
        )
        channel = IOWebSocketChannel(socket)
        await wait(channel.ready)
        received: list[Message] = []
        async for message in channel.stream:
            received.append(message)
            if message == "hello!":
                channel.sink.add("ping")
        assert received == ["hello!", "pong"]
        assert (channel.close_code, channel.close_reason) == (3678, "raisin")


async def test_client_wraps_an_awaitable_of_a_connection(echo_url: str) -> None:
    channel = IOWebSocketChannel(IOWebSocket.connect(echo_url))
    assert isinstance(channel, IOWebSocketChannel)
    channel.sink.add("before ready")
    await wait(channel.ready)
    assert await next_message(aiter(channel.stream)) == "before ready"
    await wait(channel.sink.close(3005, "bye"))
    assert channel.close_code == 3005


async def test_io_channel_wraps_one_side_of_a_fake_pair() -> None:
    mine, theirs = fake_pair("chat")
    channel = await IOWebSocketChannel(mine)
    assert channel.protocol == "chat"
    assert channel.request is None
    channel.sink.add("hi")
    assert await asyncio.wait_for(anext(theirs.events), TIMEOUT) == TextDataReceived("hi")
    await theirs.close(4000)
    assert [message async for message in channel.stream] == []
    assert channel.close_code == 4000


async def test_io_channel_wrapping_a_failing_awaitable_fails_ready() -> None:
    async def refuse() -> FakeWebSocket:
        raise ConnectionRefusedError("no")

    channel = IOWebSocketChannel(refuse())
    with pytest.raises(WebSocketChannelException) as raised:
        await wait(channel.ready)
    assert isinstance(raised.value.inner, ConnectionRefusedError)


async def test_client_close_while_connecting_to_a_silent_server_gives_up_after_close_timeout(
    raw_server: StartRaw,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await raw_server(silent)
    channel = IOWebSocketChannel.connect(server.url, close_timeout=SHORT)
    await wait(channel.sink.close())
    with pytest.raises(WebSocketChannelException):
        await wait(channel.ready)


# A close behind messages the consumer has not taken yet.


async def test_client_async_for_answers_a_message_that_arrived_with_the_close(
    raw_server: StartRaw,
) -> None:
    frames: asyncio.Future[list[tuple[int, bytes]]] = asyncio.Future()
    listening = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        await listening.wait()
        writer.write(frame(0x1, b"Hello") + frame(0x8, close_payload(1000, "bye")))
        frames.set_result([await read_frame(reader), await read_frame(reader)])
        writer.close()

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    subscription = aiter(channel.stream)
    listening.set()
    async for message in subscription:
        await asyncio.sleep(0.01)  # slow on purpose: the answer takes more than one loop turn
        assert isinstance(message, str)
        channel.sink.add(f"re: {message}")
    assert await asyncio.wait_for(frames, TIMEOUT) == [
        (0x81, b"re: Hello"),
        (0x88, close_payload(1000, "bye")),
    ]
    assert (channel.close_code, channel.close_reason) == (1000, "bye")
    await wait(channel.sink.done)


# WebSocketChannel.over: the byte-stream constructor.


async def test_channel_over_a_byte_stream_talks_to_its_peer() -> None:
    left, right = socket.socketpair()
    server_reader, server_writer = await asyncio.open_connection(sock=left)
    client_reader, client_writer = await asyncio.open_connection(sock=right)
    server = WebSocketChannel.over(server_reader, server_writer, protocol="chat")
    client = WebSocketChannel.over(client_reader, client_writer, server_side=False)
    assert server.protocol == "chat"
    client.sink.add("over a pipe")
    assert await next_message(aiter(server.stream)) == "over a pipe"
    await wait(client.sink.close(4000))
    await wait(server.sink.done)
    assert server.close_code == 4000
