"""A1-A11: Dart's ``adapter_web_socket_channel_test.dart`` (dart-web-socket-channel.md §3.1),
for ``wschannel.adapter``, against the echo server of §3.0; plus the low-level socket
interface it wraps, over ``wschannel.testing.fake_pair()`` (§1.10, §3.6).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wschannel import WebSocketChannelException
from wschannel.adapter import (
    AdapterWebSocketChannel,
    BinaryDataReceived,
    CloseReceived,
    IOWebSocket,
    TextDataReceived,
    WebSocketConnectionClosed,
    WebSocketException,
)
from wschannel.channel import Message
from wschannel.testing import fake_pair

from .conftest import StartRaw, drain, eventually, next_message, read_head, within


async def first_echo(url: str, message: Any) -> Message:
    channel = AdapterWebSocketChannel.connect(url)
    await within(channel.ready)
    channel.sink.add(message)
    received = await next_message(aiter(channel.stream))
    await within(channel.sink.close())
    return received


async def check_mixed_echo(channel: AdapterWebSocketChannel) -> None:
    """A7/A10/A11: text, binary, text, binary come back in order with their types."""
    sent: list[Message] = ["hello", b"\x01\x02\x03", "world", b"\x04\x05\x06"]
    for message in sent:
        channel.sink.add(message)
    subscription = aiter(channel.stream)
    received = [await next_message(subscription) for _ in sent]
    assert received == sent
    assert [type(message) for message in received] == [str, bytes, str, bytes]
    await within(channel.sink.close())


async def test_client_adapter_connect_to_an_unknown_host_fails_with_channel_exception() -> None:
    """A1: failed connect: ``ready`` fails with WebSocketChannelException.

    As in Dart, ``inner`` is the low-level socket's error (a ``WebSocketException``) or the
    resolver's ``OSError`` itself; either way the ``OSError`` is in the cause chain
    (``.invalid`` never resolves, RFC 2606).
    """
    channel = AdapterWebSocketChannel.connect("ws://notahost.invalid")
    with pytest.raises(WebSocketChannelException) as error:
        await within(channel.ready)
    inner = error.value.inner
    assert isinstance(inner, WebSocketException | OSError)
    assert error.value.__cause__ is inner
    causes: list[BaseException] = []
    cause: BaseException | None = inner
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__
    assert any(isinstance(cause, OSError) for cause in causes)
    with pytest.raises(WebSocketChannelException):
        await drain(channel.stream)


async def test_client_adapter_connects_and_closes(echo_url: str) -> None:
    """A2: good connect: ``ready`` completes; ``sink.close()`` completes.

    design.md decision 4: the echo of a close without a code reports 1005 and ``''``.
    """
    channel = AdapterWebSocketChannel.connect(echo_url)
    await within(channel.ready)
    await within(channel.sink.close())
    assert (channel.close_code, channel.close_reason) == (1005, "")


@pytest.mark.parametrize(
    ("dart_id", "message"),
    [("A3", ""), ("A4", b""), ("A5", "hello"), ("A6", bytearray([1, 2, 3]))],
    ids=["A3-empty-text", "A4-empty-binary", "A5-hello", "A6-bytes-1-2-3"],
)
async def test_client_adapter_receives_the_echo_of_one_message(
    echo_url: str, dart_id: str, message: str | bytes | bytearray
) -> None:
    """A3-A6: echo empty text, empty binary, ``hello``, bytes 1,2,3: the first message back
    equals the one sent, text as ``str`` and binary as ``bytes`` (design.md decision 8)."""
    received = await first_echo(echo_url, message)
    expected: Message = message if isinstance(message, str) else bytes(message)
    assert type(received) is type(expected), dart_id
    assert received == expected, dart_id


async def test_client_adapter_refuses_a_list_of_ints(echo_url: str) -> None:
    """A6: echo [1,2,3] as a plain int list.

    design.md decision 8: ``add`` takes ``str`` or a buffer; a ``list[int]`` is not one, so it
    raises TypeError at the call (decision 6) instead of Dart's silent conversion.
    """
    channel = AdapterWebSocketChannel.connect(echo_url)
    await within(channel.ready)
    with pytest.raises(TypeError):
        channel.sink.add([1, 2, 3])  # type: ignore[arg-type]
    channel.sink.add(bytes([1, 2, 3]))
    assert await next_message(aiter(channel.stream)) == b"\x01\x02\x03"
    await within(channel.sink.close())


async def test_client_adapter_receives_alternating_text_and_binary_in_order(echo_url: str) -> None:
    """A7: alternative string and binary request and response."""
    channel = AdapterWebSocketChannel.connect(echo_url)
    await within(channel.ready)
    await check_mixed_echo(channel)


async def test_client_adapter_sees_the_remote_close_without_listening(echo_url: str) -> None:
    """A8: remote close: ``close`` makes the echo server close with 3001; without anyone
    listening, ``close_code``/``close_reason`` are set, and a later ``sink.close()``
    completes without error."""
    channel = AdapterWebSocketChannel.connect(echo_url)
    await within(channel.ready)
    channel.sink.add("close")
    await eventually(lambda: channel.close_code is not None)
    assert channel.close_code == 3001
    assert channel.close_reason == "you asked me to"
    await within(channel.sink.close())


async def test_client_adapter_local_close_reports_the_server_echo(echo_url: str) -> None:
    """A9: local close: ``await sink.close(3005, 'please close')``.

    design.md decision 4: ``close_code``/``close_reason`` report the peer's echo of our close
    (3005, ``please close``), where Dart 3.x leaves them null.
    """
    channel = AdapterWebSocketChannel.connect(echo_url)
    await within(channel.ready)
    await within(channel.sink.close(3005, "please close"))
    assert channel.close_code == 3005
    assert channel.close_reason == "please close"


async def test_client_adapter_wraps_an_open_low_level_socket(echo_url: str) -> None:
    """A10: constructor with WebSocket: an already-connected ``IOWebSocket``."""
    socket = await within(IOWebSocket.connect(echo_url))
    channel = AdapterWebSocketChannel(socket)
    await within(channel.ready)
    await check_mixed_echo(channel)


async def test_client_adapter_wraps_an_awaitable_of_a_low_level_socket(echo_url: str) -> None:
    """A11: constructor with Future<WebSocket>: the pending connect (a coroutine), and a
    Task of it (§5.6 #13: any awaitable)."""
    channel = AdapterWebSocketChannel(IOWebSocket.connect(echo_url))
    await within(channel.ready)
    await check_mixed_echo(channel)
    task = asyncio.ensure_future(IOWebSocket.connect(echo_url))
    channel = AdapterWebSocketChannel(task)
    await within(channel.ready)
    await check_mixed_echo(channel)


async def test_client_adapter_wrapping_a_failing_awaitable_fails_ready(echo_url: str) -> None:
    """A11 / §1.4 step 3: an awaitable that fails makes ``ready`` and the stream fail with
    WebSocketChannelException whose ``inner`` is the original error."""

    async def broken() -> IOWebSocket:
        raise ConnectionRefusedError("nope")

    channel = AdapterWebSocketChannel(broken())
    with pytest.raises(WebSocketChannelException) as error:
        await within(channel.ready)
    assert isinstance(error.value.inner, ConnectionRefusedError)
    with pytest.raises(WebSocketChannelException):
        await drain(channel.stream)


# The low-level socket interface, over fake_pair() (package:web_socket's fakes()).


async def test_low_level_fake_pair_delivers_text_and_binary_events() -> None:
    """§1.10: ``send_text``/``send_bytes`` on one end arrive as TextDataReceived and
    BinaryDataReceived on the other."""
    left, right = fake_pair()
    left.send_text("hi")
    left.send_bytes(b"\x00\xff")
    events = aiter(right.events)
    assert await next_message(events) == TextDataReceived("hi")
    assert await next_message(events) == BinaryDataReceived(b"\x00\xff")


async def test_client_adapter_over_a_fake_pair_reports_no_protocol_as_none() -> None:
    """design.md decision 3: the channel's ``protocol`` is ``None`` when none was negotiated,
    even though the low-level socket says ``''`` (package:web_socket's convention)."""
    local, _ = fake_pair()
    channel = AdapterWebSocketChannel(local)
    await within(channel.ready)
    assert channel.protocol is None


async def test_low_level_fake_pair_close_is_received_with_code_and_reason() -> None:
    """§3.6 close_remote: closing one end delivers exactly ``CloseReceived(code, reason)``
    to the other, then its events end; a close without a code arrives as 1005."""
    left, right = fake_pair()
    await within(left.close(4123, "server closed the connection"))
    assert [event async for event in right.events] == [
        CloseReceived(4123, "server closed the connection")
    ]
    left, right = fake_pair()
    await within(left.close())
    assert [event async for event in right.events] == [CloseReceived(1005, "")]


async def test_client_adapter_over_a_fake_pair_sees_the_peer_close() -> None:
    """A8 in memory: the adapter over one end reports the other end's close."""
    local, remote = fake_pair()
    channel = AdapterWebSocketChannel(local)
    await within(channel.ready)
    remote.send_text("first")
    assert await next_message(aiter(channel.stream)) == "first"
    await within(remote.close(3001, "you asked me to"))
    await eventually(lambda: channel.close_code is not None)
    assert (channel.close_code, channel.close_reason) == (3001, "you asked me to")
    await within(channel.sink.close())


@pytest.mark.parametrize(
    ("code", "reason"), [(1004, None), (2999, None), (5000, None), (3000, "x" * 124)]
)
async def test_low_level_close_with_an_invalid_code_or_reason_raises_value_error(
    code: int, reason: str | None
) -> None:
    """§3.6 close_local: codes 1004, 2999, 5000 and a 124-byte reason are refused
    (``ArgumentError`` ⇒ ValueError); the socket stays open."""
    left, right = fake_pair()
    with pytest.raises(ValueError):
        await within(left.close(code, reason))
    left.send_text("still open")
    assert await next_message(aiter(right.events)) == TextDataReceived("still open")


async def test_low_level_send_or_close_after_a_close_raises_connection_closed() -> None:
    """§3.6 close_local / close_remote: after a close, by either side, ``send_text``,
    ``send_bytes`` and ``close`` raise WebSocketConnectionClosed."""
    left, right = fake_pair()
    await within(left.close(3000, "Client initiated closure"))
    for socket in (left, right):
        with pytest.raises(WebSocketConnectionClosed):
            socket.send_text("x")
        with pytest.raises(WebSocketConnectionClosed):
            socket.send_bytes(b"x")
        with pytest.raises(WebSocketConnectionClosed):
            await within(socket.close())
    assert [event async for event in left.events] == []


async def test_low_level_io_socket_receives_the_server_close_as_its_last_event(
    echo_url: str,
) -> None:
    """§3.6 close_remote over a real socket: the echo server's close gives exactly
    ``[CloseReceived(3001, 'you asked me to')]``; sending afterwards raises
    WebSocketConnectionClosed."""
    socket = await within(IOWebSocket.connect(echo_url))
    assert socket.protocol == ""  # package:web_socket's convention for "none"
    socket.send_text("close")
    assert await drain(socket.events) == [CloseReceived(3001, "you asked me to")]
    with pytest.raises(WebSocketConnectionClosed):
        socket.send_text("late")


async def test_low_level_io_socket_connect_refuses_a_non_websocket_url() -> None:
    """§3.6 connect_uri: an ``https://`` URL is refused at once (ArgumentError ⇒
    ValueError)."""
    with pytest.raises(ValueError):
        IOWebSocket.connect("https://127.0.0.1/")


async def test_low_level_io_socket_connect_fails_when_the_server_hangs_up(
    raw_server: StartRaw,
) -> None:
    """§3.6 no_upgrade: the server closes before upgrading ⇒ the connect raises
    WebSocketException."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    server = await raw_server(hang_up)
    with pytest.raises(WebSocketException):
        await within(IOWebSocket.connect(server.url))
