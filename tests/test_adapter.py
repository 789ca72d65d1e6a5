"""AdapterWebSocketChannel over fake_pair and over real sockets (IOWebSocket), A1-A11."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from conftest import SHORT, TIMEOUT, RawHandler, RawServer, next_message, wait

import wschannel
import wschannel._adapter
from wschannel import StateError, WebSocketChannelException, status
from wschannel.adapter import (
    AdapterWebSocketChannel,
    BinaryDataReceived,
    CloseReceived,
    IOWebSocket,
    TextDataReceived,
    WebSocket,
    WebSocketEvent,
)
from wschannel.channel import Message
from wschannel.exceptions import WebSocketConnectionClosed, WebSocketException
from wschannel.io import IOWebSocketChannel
from wschannel.testing import FakeWebSocket, fake_pair

MIXED: list[Message] = ["one", b"\x01\x02\x03", "two", b"\x04\x05\x06"]


async def next_event(socket: WebSocket) -> WebSocketEvent:
    return await asyncio.wait_for(anext(socket.events), TIMEOUT)


async def mixed_echo(channel: AdapterWebSocketChannel) -> list[Message]:
    for message in MIXED:
        channel.sink.add(message)
    subscription = aiter(channel.stream)
    return [await next_message(subscription) for _ in MIXED]


# Over real sockets (A2-A11).


async def test_client_adapter_connects_and_closes(echo_url: str) -> None:
    channel = AdapterWebSocketChannel.connect(echo_url)
    assert (channel.protocol, channel.close_code, channel.close_reason) == (None, None, None)
    await wait(channel.ready)
    assert channel.protocol is None
    await wait(channel.sink.close())
    assert (channel.close_code, channel.close_reason) == (status.NO_STATUS_RECEIVED, "")


@pytest.mark.parametrize(
    "message", ["", b"", "hello", "🎨⛳🌈"], ids=["empty text", "empty binary", "hi", "utf"]
)
async def test_client_adapter_echoes_a_message(echo_url: str, message: Message) -> None:
    async with AdapterWebSocketChannel.connect(echo_url) as channel:
        channel.sink.add(message)
        received = await next_message(aiter(channel.stream))
    assert received == message
    assert type(received) is type(message)


async def test_client_adapter_echoes_text_and_binary_in_order(echo_url: str) -> None:
    async with AdapterWebSocketChannel.connect(echo_url) as channel:
        assert await mixed_echo(channel) == MIXED


async def test_client_adapter_sees_a_remote_close_without_listening(echo_url: str) -> None:
    channel = await AdapterWebSocketChannel.connect(echo_url)
    channel.sink.add("close")
    await wait(channel.sink.done)
    assert channel.close_code == 3001
    assert channel.close_reason == "you asked me to"
    await wait(channel.sink.close())  # after the peer closed: a harmless no-op


async def test_client_adapter_local_close_reports_the_peers_echo(echo_url: str) -> None:
    channel = await AdapterWebSocketChannel.connect(echo_url)
    await wait(channel.sink.close(3005, "please close"))
    assert (channel.close_code, channel.close_reason) == (3005, "please close")


async def test_client_adapter_wraps_an_open_socket(echo_url: str) -> None:
    socket = await asyncio.wait_for(IOWebSocket.connect(echo_url), TIMEOUT)
    channel = AdapterWebSocketChannel(socket)
    await wait(channel.ready)
    assert await mixed_echo(channel) == MIXED
    await wait(channel.sink.close())


async def _connected(url: str) -> IOWebSocket:
    return await IOWebSocket.connect(url)


@pytest.mark.parametrize("kind", ["coroutine", "task", "future"])
async def test_client_adapter_wraps_an_awaitable_of_a_socket(echo_url: str, kind: str) -> None:
    if kind == "coroutine":
        channel = AdapterWebSocketChannel(_connected(echo_url))
    elif kind == "task":
        channel = AdapterWebSocketChannel(IOWebSocket.connect(echo_url))
    else:
        future: asyncio.Future[IOWebSocket] = asyncio.get_running_loop().create_future()
        channel = AdapterWebSocketChannel(future)
        future.set_result(await IOWebSocket.connect(echo_url))
    await wait(channel.ready)
    assert await mixed_echo(channel) == MIXED
    await wait(channel.sink.close())


async def test_client_adapter_fails_ready_and_stream_for_an_unresolvable_host() -> None:
    channel = AdapterWebSocketChannel.connect("ws://notahost.invalid")
    with pytest.raises(WebSocketChannelException) as raised:
        await wait(channel.ready)
    assert isinstance(raised.value.inner, WebSocketException)
    assert raised.value.__cause__ is raised.value.inner
    with pytest.raises(WebSocketChannelException):
        await next_message(aiter(channel.stream))
    await wait(channel.sink.done)


async def test_client_adapter_raises_value_error_at_once_for_an_invalid_url() -> None:
    with pytest.raises(ValueError):
        AdapterWebSocketChannel.connect("http://127.0.0.1:1")


async def test_client_adapter_passes_a_connect_timeout_through_unwrapped(
    raw_server: Callable[[RawHandler], Awaitable[RawServer]],
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await raw_server(silent)
    channel = AdapterWebSocketChannel(IOWebSocket.connect(server.url, connect_timeout=SHORT))
    with pytest.raises(TimeoutError):
        await wait(channel.ready)


async def test_client_adapter_negotiates_a_protocol() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add(channel.protocol or "")

    async with wschannel.serve(handler, "127.0.0.1", 0, protocols=["chat"]) as server:
        url = f"ws://127.0.0.1:{server.port}"
        channel = await AdapterWebSocketChannel.connect(url, protocols=["other", "chat"])
        assert channel.protocol == "chat"
        assert await next_message(aiter(channel.stream)) == "chat"
        await wait(channel.sink.close())


# IOWebSocket: the low-level interface over the asyncio layer.


async def test_client_io_websocket_sends_and_receives_events(echo_url: str) -> None:
    socket = await asyncio.wait_for(IOWebSocket.connect(echo_url), TIMEOUT)
    assert isinstance(socket, WebSocket)
    assert socket.protocol == ""
    socket.send_text("hi")
    socket.send_bytes(b"\x00")
    assert await next_event(socket) == TextDataReceived("hi")
    assert await next_event(socket) == BinaryDataReceived(b"\x00")
    socket.send_text("close")
    assert await next_event(socket) == CloseReceived(3001, "you asked me to")
    with pytest.raises(StopAsyncIteration):
        await next_event(socket)
    with pytest.raises(WebSocketConnectionClosed):
        socket.send_text("late")
    with pytest.raises(WebSocketConnectionClosed):
        await socket.close()


async def test_client_io_websocket_local_close_ends_events_without_close_received(
    echo_url: str,
) -> None:
    socket = await asyncio.wait_for(IOWebSocket.connect(echo_url), TIMEOUT)
    await asyncio.wait_for(socket.close(3000, "bye"), TIMEOUT)
    with pytest.raises(StopAsyncIteration):
        await next_event(socket)
    assert (socket.close_code, socket.close_reason) == (3000, "bye")  # the echo
    with pytest.raises(WebSocketConnectionClosed):
        socket.send_bytes(b"late")


async def test_client_io_websocket_connect_failure_raises_websocket_exception() -> None:
    with pytest.raises(WebSocketException) as raised:
        await asyncio.wait_for(IOWebSocket.connect("ws://notahost.invalid"), TIMEOUT)
    assert raised.value.__cause__ is not None


async def test_client_io_websocket_rejects_the_wrong_message_types(echo_url: str) -> None:
    socket = await asyncio.wait_for(IOWebSocket.connect(echo_url), TIMEOUT)
    with pytest.raises(TypeError):
        socket.send_text(b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        socket.send_bytes("x")  # type: ignore[arg-type]
    await asyncio.wait_for(socket.close(), TIMEOUT)


# Over fake_pair.


class Bare:
    """The interface's five members over ``socket`` (no ``close_code`` or ``close_reason``),
    logging when the adapter asks for an event, what it gets and what it sends."""

    def __init__(self, socket: FakeWebSocket) -> None:
        self.socket = socket
        self.log: list[str] = []
        self._events = self._log_events()

    def send_text(self, text: str) -> None:
        self.log.append(f"send {text}")
        self.socket.send_text(text)

    def send_bytes(self, data: bytes) -> None:
        self.socket.send_bytes(data)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        await self.socket.close(code, reason)

    @property
    def events(self) -> AsyncIterator[WebSocketEvent]:
        return self._events

    @property
    def protocol(self) -> str:
        return self.socket.protocol

    async def _log_events(self) -> AsyncIterator[WebSocketEvent]:
        events = self.socket.events
        while True:
            self.log.append("ask")
            try:
                event = await anext(events)
            except StopAsyncIteration:
                return
            self.log.append(f"got {event.text if isinstance(event, TextDataReceived) else event}")
            yield event


async def test_adapter_over_fake_pair_exchanges_messages() -> None:
    mine, theirs = fake_pair()
    channel = AdapterWebSocketChannel(mine)
    await wait(channel.ready)
    channel.sink.add("hello")
    channel.sink.add(bytearray(b"\x01"))
    assert await next_event(theirs) == TextDataReceived("hello")
    assert await next_event(theirs) == BinaryDataReceived(b"\x01")
    theirs.send_text("back")
    theirs.send_bytes(b"\x02")
    subscription = aiter(channel.stream)
    assert await next_message(subscription) == "back"
    assert await next_message(subscription) == b"\x02"


@pytest.mark.parametrize(("protocol", "expected"), [("", None), ("chat", "chat")])
async def test_adapter_reports_no_protocol_as_none(protocol: str, expected: str | None) -> None:
    mine, _ = fake_pair(protocol)
    channel = await AdapterWebSocketChannel(mine)
    assert channel.protocol == expected


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [(4000, "done", (4000, "done")), (None, None, (1005, ""))],
    ids=["code and reason", "no code"],
)
async def test_adapter_reports_the_peers_close(
    code: int | None, reason: str | None, expected: tuple[int, str]
) -> None:
    mine, theirs = fake_pair()
    channel = await AdapterWebSocketChannel(mine)
    await theirs.close(code, reason)
    assert [message async for message in channel.stream] == []
    assert (channel.close_code, channel.close_reason) == expected
    await wait(channel.sink.done)
    channel.sink.add("dropped")  # guarantee 3


async def test_adapter_local_close_reaches_the_peer_and_reports_the_sockets_close() -> None:
    mine, theirs = fake_pair()
    channel = await AdapterWebSocketChannel(mine)
    await wait(channel.sink.close(3000, "bye"))
    assert await next_event(theirs) == CloseReceived(3000, "bye")
    # The socket's close_code after our close (the fake pair's: ours, as a peer's echo).
    assert (channel.close_code, channel.close_reason) == (3000, "bye")
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        channel.sink.add("late")


async def test_adapter_local_close_leaves_close_code_none_without_the_sockets_report() -> None:
    mine, theirs = fake_pair()
    channel = await AdapterWebSocketChannel(Bare(mine))
    await wait(channel.sink.close(3000, "bye"))
    assert await next_event(theirs) == CloseReceived(3000, "bye")
    assert (channel.close_code, channel.close_reason) == (None, None)


async def test_adapter_buffers_messages_and_close_until_the_socket_arrives() -> None:
    mine, theirs = fake_pair()
    future: asyncio.Future[FakeWebSocket] = asyncio.get_running_loop().create_future()
    channel = AdapterWebSocketChannel(future)
    channel.sink.add("early")
    data = bytearray(b"bird")
    channel.sink.add(data)
    data[0] = 0  # the channel kept a copy
    closed = channel.sink.close(3000, "soon")
    assert not channel.ready.done()
    future.set_result(mine)
    await wait(closed)
    assert await next_event(theirs) == TextDataReceived("early")
    assert await next_event(theirs) == BinaryDataReceived(b"bird")
    assert await next_event(theirs) == CloseReceived(3000, "soon")


@pytest.mark.parametrize(
    ("error", "expected"),
    [(OSError("refused"), WebSocketChannelException), (TimeoutError(), TimeoutError)],
    ids=["wrapped", "timeout"],
)
async def test_adapter_fails_when_the_awaitable_fails(
    error: Exception, expected: type[Exception]
) -> None:
    future: asyncio.Future[FakeWebSocket] = asyncio.get_running_loop().create_future()
    channel = AdapterWebSocketChannel(future)
    future.set_exception(error)
    with pytest.raises(expected) as raised:
        await wait(channel.ready)
    if expected is WebSocketChannelException:
        assert raised.value.inner is error  # type: ignore[attr-defined]
    else:
        assert raised.value is error
    with pytest.raises(expected):
        await next_message(aiter(channel.stream))
    await wait(channel.sink.done)


async def test_adapter_close_while_connecting_resolves_when_the_awaitable_fails() -> None:
    future: asyncio.Future[FakeWebSocket] = asyncio.get_running_loop().create_future()
    channel = AdapterWebSocketChannel(future)
    closed = channel.sink.close()
    future.set_exception(OSError("refused"))
    await wait(closed)
    with pytest.raises(WebSocketChannelException):
        await wait(channel.ready)


async def test_adapter_reports_1006_when_events_end_without_close_received() -> None:
    class Vanishing(FakeWebSocket):
        @property
        def events(self) -> AsyncIterator[WebSocketEvent]:
            return self._vanish()

        async def _vanish(self) -> AsyncIterator[WebSocketEvent]:
            yield TextDataReceived("last")

    channel = await AdapterWebSocketChannel(Vanishing())
    assert [message async for message in channel.stream] == ["last"]
    assert (channel.close_code, channel.close_reason) == (status.ABNORMAL_CLOSURE, "")
    await wait(channel.sink.done)


async def test_adapter_stops_taking_events_while_its_stream_is_full() -> None:
    mine, theirs = fake_pair()
    channel = await AdapterWebSocketChannel(mine, max_queue=4)
    for index in range(20):
        theirs.send_text(str(index))
    await asyncio.sleep(SHORT)
    assert len(channel.stream._buffer) == 4
    assert len(mine._queue) == 16  # left with the socket
    received = [message async for message in _take(channel, 20)]
    assert received == [str(index) for index in range(20)]


async def test_adapter_takes_the_next_event_once_the_consumer_has_answered() -> None:
    # A socket that holds its answer to the peer's close until its reader has taken the
    # messages before it (IOWebSocket) then sends the consumer's answers first.
    mine, theirs = fake_pair()
    socket = Bare(mine)
    channel = await AdapterWebSocketChannel(socket)

    async def answer() -> None:
        async for message in channel.stream:
            channel.sink.add(f"re:{message!s}")

    answering = asyncio.ensure_future(answer())
    await asyncio.sleep(0)  # it waits for a message
    for message in ("1", "2", "3"):
        theirs.send_text(message)
    await theirs.close(4001)
    await wait(answering)
    assert socket.log == [
        *("ask", "got 1", "send re:1"),
        *("ask", "got 2", "send re:2"),
        *("ask", "got 3", "send re:3"),
        *("ask", "got CloseReceived(code=4001, reason='')"),
    ]


async def test_adapter_reads_ahead_when_the_consumer_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wschannel._adapter, "_CONSUMER_WAIT", SHORT)
    mine, theirs = fake_pair()
    channel = await AdapterWebSocketChannel(mine)
    subscription = aiter(channel.stream)  # a consumer that does not ask (yet)
    theirs.send_text("a")
    theirs.send_text("b")
    await theirs.close(4002, "gone")
    await wait(channel.sink.done)  # the adapter read on, up to the peer's close
    assert (channel.close_code, channel.close_reason) == (4002, "gone")
    assert [message async for message in subscription] == ["a", "b"]


async def _take(channel: AdapterWebSocketChannel, count: int) -> AsyncIterator[Message]:
    subscription = aiter(channel.stream)
    for _ in range(count):
        yield await next_message(subscription)


async def test_adapter_without_a_running_loop_raises_runtime_error() -> None:
    mine, _ = fake_pair()

    def construct() -> None:
        AdapterWebSocketChannel(mine)

    with pytest.raises(RuntimeError, match=r"wschannel\.sync"):
        await asyncio.get_running_loop().run_in_executor(None, construct)


# The low-level exceptions.


def test_websocket_exception_prints_its_message() -> None:
    error = WebSocketException("it broke")
    assert str(error) == "it broke"
    assert repr(error) == "WebSocketException('it broke')"
    assert WebSocketException().message == ""
    closed = WebSocketConnectionClosed()
    assert isinstance(closed, WebSocketException)
    assert str(closed) == "Connection Closed"
