"""X1-X17: behaviours derived from Dart's semantics (dart-web-socket-channel.md §3.5).

Over real sockets on 127.0.0.1: the echo server of §3.0, or raw peers that speak HTTP and
frames by hand where a behaviour needs a misbehaving server.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator
from typing import Any

import pytest

import wschannel
from wschannel import StateError, WebSocketChannelException, sign_key, status
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel

from .conftest import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    SHORT,
    TIMEOUT,
    StartRaw,
    accept_upgrade,
    close_payload,
    drain,
    eventually,
    frame,
    next_message,
    parse_close,
    read_frame,
    read_head,
    read_until_eof,
    upgrade_request,
    within,
)


def sink_api(channel: IOWebSocketChannel) -> Any:
    """The sink, for the methods (``add_error``, ``add_stream``) not on the base class yet."""
    return channel.sink


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def silent_after_upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that upgrades, then reads everything and never answers anything."""
    await accept_upgrade(reader, writer)
    await read_until_eof(reader)


async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that accepts TCP and never answers the upgrade request."""
    await read_until_eof(reader)


# X1


@pytest.mark.parametrize(
    ("key", "accept"),
    [
        ("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
        ("", "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w="),
    ],
    ids=["rfc-6455-example", "dart-test-key", "empty"],
)
def test_sign_key_gives_the_accept_value_of_the_spec_vectors(key: str, accept: str) -> None:
    """X1: ``sign_key`` gives RFC 6455 §4.2.2's ``Sec-WebSocket-Accept`` for each vector."""
    assert sign_key(key) == accept
    assert wschannel.WebSocketChannel.sign_key(key) == accept


# X2


async def test_client_reports_no_protocol_or_close_info_before_it_opens(
    raw_server: StartRaw,
) -> None:
    """X2: before open, ``protocol``, ``close_code`` and ``close_reason`` are ``None``."""
    server = await raw_server(never_answers)
    channel = IOWebSocketChannel.connect(server.url, protocols=["chat"])
    await within(server.connected)
    await asyncio.sleep(SHORT)  # it cannot open while the server never answers: time is the point
    assert not channel.ready.done()
    assert channel.protocol is None
    assert channel.close_code is None
    assert channel.close_reason is None
    await server.stop()  # the attempt fails, which ends it
    with pytest.raises(WebSocketChannelException):
        await within(channel.ready)
    assert channel.protocol is None
    assert channel.close_code is None  # design.md decision 4: no close frame was ever received


async def test_client_reports_no_protocol_or_close_info_while_open(echo_url: str) -> None:
    """X2: open without a subprotocol: all three are ``None``.

    design.md decision 3: ``protocol`` is ``None``, not Dart 3.x's ``''``, when none was chosen.
    """
    async with IOWebSocketChannel.connect(echo_url) as channel:
        channel.sink.add("hi")
        assert await next_message(aiter(channel.stream)) == "hi"
        assert channel.protocol is None
        assert channel.close_code is None
        assert channel.close_reason is None


# X3


async def test_client_add_after_its_own_close_raises_state_error(echo_url: str) -> None:
    """X3: after ``await sink.close()``, ``add`` raises StateError with Dart's message, and
    a second close returns without error."""
    channel = await within(IOWebSocketChannel.connect(echo_url))
    await within(channel.sink.close())
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        channel.sink.add("too late")
    assert isinstance(StateError("x"), RuntimeError)
    await within(channel.sink.close())


async def test_client_add_error_and_add_stream_after_its_own_close_raise_state_error(
    echo_url: str,
) -> None:
    """X3: after ``await sink.close()``, ``add_error`` and ``add_stream`` raise StateError
    with Dart's messages."""
    channel = await within(IOWebSocketChannel.connect(echo_url))
    await within(channel.sink.close())

    async def source() -> AsyncGenerator[Message, None]:
        yield "never"

    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        sink_api(channel).add_error(ValueError("too late"))
    stream = source()
    with pytest.raises(StateError, match=r"^Cannot add stream after closing\.$"):
        sink_api(channel).add_stream(stream)
    await stream.aclose()
    await within(channel.sink.close())


# X4


async def test_client_add_after_the_server_closed_is_silently_dropped(echo_url: str) -> None:
    """X4: once the stream has ended because of the peer, ``add`` drops silently and
    ``done`` resolves."""
    channel = await within(IOWebSocketChannel.connect(echo_url))
    channel.sink.add("close")
    assert await drain(channel.stream) == []
    assert channel.close_code == 3001
    channel.sink.add("dropped")
    channel.sink.add(b"dropped")
    await within(channel.sink.done)
    await within(channel.sink.close())


# X5


async def test_client_close_ends_the_stream_before_the_server_answers(
    raw_server: StartRaw,
) -> None:
    """X5: closing the sink ends iteration at once, before the peer's close frame; the
    messages still buffered are dropped (stream_channel guarantee 2)."""
    close_frames: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    all_sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def three_then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(OP_TEXT, b"1") + frame(OP_TEXT, b"2") + frame(OP_TEXT, b"3"))
        await writer.drain()
        all_sent.set_result(None)
        opcode, payload, _ = await read_frame(reader)
        assert opcode == OP_CLOSE
        close_frames.set_result(payload)
        await read_until_eof(reader)  # never answers the close

    server = await raw_server(three_then_silent)
    channel = await within(IOWebSocketChannel.connect(server.url))
    await within(all_sent)
    await eventually(lambda: len(channel.stream._buffer) == 3)  # all three are buffered
    received: list[Message] = []

    async def read_all() -> None:
        async for message in channel.stream:
            received.append(message)
            channel.sink.close(3000, "enough")

    await within(read_all(), SHORT * 5)
    assert received == ["1"]
    assert parse_close(await within(close_frames)) == (3000, "enough")
    assert channel.close_code is None  # the server never answered


# X6


async def test_client_stops_iterating_without_closing_and_still_sees_the_server_close(
    echo_url: str,
) -> None:
    """X6: breaking out of ``async for`` does not close the connection; the echo server
    still answers ``close`` with 3001, which sets ``close_code``."""
    channel = await within(IOWebSocketChannel.connect(echo_url))
    channel.sink.add("one")
    async for message in channel.stream:
        assert message == "one"
        break
    channel.sink.add("close")
    await eventually(lambda: channel.close_code is not None)
    assert channel.close_code == 3001
    assert channel.close_reason == "you asked me to"
    await within(channel.sink.done)


async def test_client_aclose_of_its_subscription_does_not_close_the_connection(
    echo_url: str,
) -> None:
    """X6: ``aclose()`` on the subscription does not close the connection either."""
    channel = await within(IOWebSocketChannel.connect(echo_url))
    subscription = aiter(channel.stream)
    channel.sink.add("one")
    assert await next_message(subscription) == "one"
    await subscription.aclose()
    channel.sink.add("close")
    await eventually(lambda: channel.close_code is not None)
    assert (channel.close_code, channel.close_reason) == (3001, "you asked me to")


# X7


async def test_client_stream_cannot_be_iterated_twice(echo_url: str) -> None:
    """X7: a second subscription raises StateError, concurrently or after the first one
    (design.md decision 6)."""
    async with IOWebSocketChannel.connect(echo_url) as channel:
        first = aiter(channel.stream)
        with pytest.raises(StateError, match="already been listened to"):
            aiter(channel.stream)
        with pytest.raises(StateError):
            channel.stream.listen(lambda message: None)
        channel.sink.add("close")
        assert await drain(first) == []
        with pytest.raises(StateError):
            async for _ in channel.stream:
                pass


# X8


async def test_client_add_error_fails_done_ends_the_stream_and_server_sees_1005() -> None:
    """X8: ``sink.add_error(e)``: ``await sink.done`` raises ``e``, the stream ends, the
    peer sees a close without a code (1005); ``e`` is never sent."""
    server_saw: asyncio.Future[tuple[list[Message], int | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(channel: IOWebSocketChannel) -> None:
        messages = [message async for message in channel.stream]
        server_saw.set_result((messages, channel.close_code))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await within(IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}"))
        subscription = aiter(channel.stream)
        error = ValueError("broken")
        sink_api(channel).add_error(error)
        with pytest.raises(ValueError) as done_error:
            await within(channel.sink.done)
        assert done_error.value is error
        assert await drain(subscription) == []
        assert await within(server_saw) == ([], 1005)


# X9


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
async def test_client_close_with_an_invalid_code_raises_value_error_and_stays_open(
    echo_url: str, code: int
) -> None:
    """X9: a code no endpoint may send raises ValueError at the call, connection still open.

    design.md decision 2: the allowed codes are 1000-1003, 1007-1014, 3000-4999.
    """
    async with IOWebSocketChannel.connect(echo_url) as channel:
        with pytest.raises(ValueError):
            channel.sink.close(code)
        channel.sink.add("still open")
        assert await next_message(aiter(channel.stream)) == "still open"
        assert channel.close_code is None


async def test_client_close_with_a_reason_over_123_bytes_raises_value_error_and_stays_open(
    echo_url: str,
) -> None:
    """X9: a reason over 123 UTF-8 bytes (here 62 two-byte characters) raises ValueError."""
    async with IOWebSocketChannel.connect(echo_url) as channel:
        with pytest.raises(ValueError):
            channel.sink.close(3000, "é" * 62)
        channel.sink.add("still open")
        assert await next_message(aiter(channel.stream)) == "still open"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1000, ""),
        (status.GOING_AWAY, "bye"),
        (1003, ""),
        (1007, ""),
        (1014, ""),
        (3000, "x" * 123),
        (4999, "🎨"),
    ],
)
async def test_server_sees_every_close_code_an_endpoint_may_send(code: int, reason: str) -> None:
    """X9: the codes design.md decision 2 allows reach the server with their reason
    (including the README's ``status.GOING_AWAY``, which Dart 3.x rejects)."""
    server_saw: asyncio.Future[tuple[int | None, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        server_saw.set_result((channel.close_code, channel.close_reason))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await within(IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}"))
        await within(channel.sink.close(code, reason))
        assert await within(server_saw) == (code, reason)
        # design.md decision 4: the client reports the server's echo of its close.
        assert (channel.close_code, channel.close_reason) == (code, reason)


# X10


@pytest.mark.parametrize("value", [object(), None, 42, [1, 2, 3], {"a": 1}])
async def test_client_add_of_an_unsupported_type_raises_type_error(
    echo_url: str, value: object
) -> None:
    """X10: ``add`` of anything but ``str`` or a bytes-like object raises TypeError at the
    call (design.md decisions 6 and 8: a ``list[int]`` is not a buffer), and the connection
    stays usable."""
    async with IOWebSocketChannel.connect(echo_url) as channel:
        with pytest.raises(TypeError):
            channel.sink.add(value)  # type: ignore[arg-type]
        channel.sink.add("after")
        assert await next_message(aiter(channel.stream)) == "after"


# X11


async def test_client_keepalive_closes_with_1001_when_no_pong_comes(raw_server: StartRaw) -> None:
    """X11: ``ping_interval`` against a peer that never answers pings: the stream ends and
    ``close_code`` is 1001 (design.md decision 11); the peer received an empty ping first."""
    frames: list[tuple[int, bytes]] = []

    async def no_pongs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        while True:
            opcode, payload, _ = await read_frame(reader)
            frames.append((opcode, payload))
            if opcode == OP_CLOSE:
                await read_until_eof(reader)
                return

    server = await raw_server(no_pongs)
    channel = await within(IOWebSocketChannel.connect(server.url, ping_interval=SHORT))
    assert await drain(channel.stream) == []
    assert channel.close_code == status.GOING_AWAY
    await eventually(lambda: bool(frames) and frames[-1][0] == OP_CLOSE)
    assert frames[0] == (OP_PING, b"")
    assert parse_close(frames[-1][1])[0] == 1001


async def test_client_keepalive_keeps_a_responsive_connection_open(echo_url: str) -> None:
    """X11: against a peer that answers pings, the connection stays up across several
    intervals."""
    async with IOWebSocketChannel.connect(echo_url, ping_interval=SHORT / 2) as channel:
        await asyncio.sleep(SHORT * 3)  # several intervals pass (time is the point)
        assert channel.close_code is None
        channel.sink.add("alive")
        assert await next_message(aiter(channel.stream)) == "alive"


# X12


async def test_client_reports_1005_for_a_close_frame_without_a_code(raw_server: StartRaw) -> None:
    """X12: a close frame with no payload gives ``close_code`` 1005 and ``close_reason``
    ``''``; the echo also has no code (design.md decision 4)."""
    echo: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def empty_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(OP_CLOSE))
        await writer.drain()
        opcode, payload, _ = await read_frame(reader)
        assert opcode == OP_CLOSE
        echo.set_result(payload)

    server = await raw_server(empty_close)
    channel = await within(IOWebSocketChannel.connect(server.url))
    assert await drain(channel.stream) == []
    assert channel.close_code == 1005
    assert channel.close_reason == ""
    assert await within(echo) == b""


async def test_client_reports_1006_for_eof_without_a_close_frame(raw_server: StartRaw) -> None:
    """X12: TCP EOF without a close frame: design.md decision 4 reports 1006 (RFC 6455
    §7.1.5), not Dart's 1005, with reason ``''``."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(OP_TEXT, b"last"))
        await writer.drain()

    server = await raw_server(hang_up)
    channel = await within(IOWebSocketChannel.connect(server.url))
    assert await drain(channel.stream) == ["last"]
    assert channel.close_code == status.ABNORMAL_CLOSURE
    assert channel.close_reason == ""
    await within(channel.sink.done)


# X13


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [
        (frame(OP_TEXT, b"\xff\xfe"), 1007),
        (frame(OP_TEXT, b"ok", mask=b"\x01\x02\x03\x04"), 1002),
        (bytes([0x80 | 0x40 | OP_TEXT, 0]), 1002),  # RSV2 without an extension
        (frame(0x3, b""), 1002),  # a reserved opcode
        (frame(OP_PING, b"x", fin=False), 1002),  # a fragmented control frame
    ],
    ids=["invalid-utf8", "masked-by-server", "rsv2", "reserved-opcode", "fragmented-ping"],
)
async def test_client_fails_the_connection_when_the_server_misbehaves(
    raw_server: StartRaw, bad_frame: bytes, code: int
) -> None:
    """X13: invalid UTF-8 text ends the stream with 1007; a masked server frame and other
    protocol violations with 1002. The client tells the server with a close frame."""
    sent: asyncio.Future[tuple[int, bytes, bool]] = asyncio.get_running_loop().create_future()

    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(bad_frame)
        await writer.drain()
        sent.set_result(await read_frame(reader))

    server = await raw_server(misbehave)
    channel = await within(IOWebSocketChannel.connect(server.url))
    assert await drain(channel.stream) == []
    assert channel.close_code == code
    opcode, payload, masked = await within(sent)
    assert opcode == OP_CLOSE
    assert masked
    assert parse_close(payload)[0] == code


async def test_server_fails_the_connection_with_1002_for_an_unmasked_client_frame() -> None:
    """X13: an unmasked client-to-server frame: the server closes with 1002 (RFC 6455 §5.1)
    and its channel reports 1002."""
    server_saw: asyncio.Future[tuple[list[Message], int | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(channel: IOWebSocketChannel) -> None:
        messages = [message async for message in channel.stream]
        server_saw.set_result((messages, channel.close_code))

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        reader, writer = await within(asyncio.open_connection("127.0.0.1", server.port))
        try:
            writer.write(upgrade_request())
            status_line, _ = await read_head(reader)
            assert status_line.split()[1] == "101"
            writer.write(frame(OP_TEXT, b"unmasked"))
            opcode, payload, masked = await read_frame(reader)
            assert opcode == OP_CLOSE
            assert not masked
            assert parse_close(payload)[0] == 1002
        finally:
            writer.close()
        assert await within(server_saw) == ([], 1002)


# X14


async def test_client_connect_timeout_raises_timeout_error_and_cancels_the_attempt(
    raw_server: StartRaw,
) -> None:
    """X14: ``connect_timeout`` elapsed: ``ready`` raises the built-in TimeoutError (design.md
    decision 7) and the socket is closed: the server sees EOF (no late socket)."""
    eof_seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_until_eof(reader)
        eof_seen.set_result(None)

    server = await raw_server(silent)
    channel = IOWebSocketChannel.connect(server.url, connect_timeout=SHORT)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await within(channel.ready)
    assert asyncio.get_running_loop().time() - started < TIMEOUT / 2
    await within(eof_seen)
    await within(channel.sink.done)


# X15


async def test_client_close_while_connecting_resolves_when_the_connection_is_refused() -> None:
    """X15: ``close()`` issued while connecting still resolves when the connect fails
    (design.md decision 5: ``done`` never hangs)."""
    channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{free_port()}")
    closing = channel.sink.close(3000, "never mind")
    await within(closing)
    with pytest.raises(WebSocketChannelException) as error:
        await within(channel.ready)
    assert isinstance(error.value.inner, OSError)


async def test_client_close_while_connecting_resolves_when_the_server_hangs_up(
    raw_server: StartRaw,
) -> None:
    """X15: the same when the server drops the connection before answering."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    server = await raw_server(hang_up)
    channel = IOWebSocketChannel.connect(server.url)
    closing = channel.sink.close()
    await within(closing)
    with pytest.raises(WebSocketChannelException):
        await within(channel.ready)


async def test_client_close_while_connecting_to_a_silent_server_resolves_after_close_timeout(
    raw_server: StartRaw,
) -> None:
    """X15: a close issued while connecting to a server that never answers still resolves,
    once ``close_timeout`` has passed (design.md decision 5: ``done`` never hangs), and the
    attempt is dropped: the server sees EOF."""
    eof_seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_until_eof(reader)
        eof_seen.set_result(None)

    server = await raw_server(silent)
    channel = IOWebSocketChannel.connect(server.url, close_timeout=SHORT)
    await within(server.connected)
    await within(channel.sink.close(), TIMEOUT)
    await within(eof_seen)


# X16


@pytest.mark.parametrize(
    ("offered", "chosen"), [(["chat"], "superchat"), (None, "chat")], ids=["other", "none-offered"]
)
async def test_client_fails_when_the_server_chooses_an_unoffered_protocol(
    raw_server: StartRaw, offered: list[str] | None, chosen: str
) -> None:
    """X16: a 101 that picks a subprotocol the client did not offer fails ``ready`` with
    WebSocketChannelException (design.md decision 3), and the stream with the same error."""

    async def pick(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer, protocol=chosen)
        await read_until_eof(reader)

    server = await raw_server(pick)
    channel = IOWebSocketChannel.connect(server.url, protocols=offered)
    with pytest.raises(WebSocketChannelException) as error:
        await within(channel.ready)
    assert chosen in str(error.value)
    with pytest.raises(WebSocketChannelException):
        await drain(channel.stream)
    assert channel.protocol is None


# X17


@pytest.mark.parametrize(
    "message",
    ["x" * 120_000, bytes(range(256)) * 3906 + b"\0" * 64, "🎨⛳🌈", ""],
    ids=["120000-char-text", "1000000-byte-binary", "non-ascii", "empty-text"],
)
async def test_client_receives_large_and_non_ascii_messages_back_unchanged(
    echo_url: str, message: Message
) -> None:
    """X17: large payloads and non-ASCII text round-trip with their type."""
    if isinstance(message, bytes):
        assert len(message) == 1_000_000
    async with IOWebSocketChannel.connect(echo_url) as channel:
        channel.sink.add(message)
        received = await next_message(aiter(channel.stream))
    assert type(received) is type(message)
    assert received == message


async def test_client_receives_interleaved_large_messages_in_order(echo_url: str) -> None:
    """X17: interleaved text and binary (payload_transfer's sequence test) keep order."""
    sent: list[Message] = ["a" * 70_000, b"\x01" * 70_000, "🌈" * 1000, b"", "", b"\xff"]
    async with IOWebSocketChannel.connect(echo_url) as channel:
        for message in sent:
            channel.sink.add(message)
        subscription = aiter(channel.stream)
        received = [await next_message(subscription) for _ in sent]
    assert received == sent
    assert [type(message) for message in received] == [type(message) for message in sent]


# design.md decisions with no Dart test.


def test_client_connect_without_a_running_loop_raises_runtime_error_naming_sync() -> None:
    """design.md decision 13: ``connect()`` outside an event loop raises RuntimeError that
    names ``wschannel.sync``."""
    with pytest.raises(RuntimeError, match=r"wschannel\.sync"):
        wschannel.connect("ws://127.0.0.1:1")
    with pytest.raises(RuntimeError, match=r"wschannel\.sync"):
        IOWebSocketChannel.connect("ws://127.0.0.1:1")


async def test_client_async_with_waits_for_ready_and_closes_on_exit() -> None:
    """design.md decision 13: ``async with connect(url)`` waits for ``ready`` and closes the
    sink on exit; the server sees 1000 (issue 13: as websockets; it was a close without a
    code, 1005)."""
    server_saw: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        server_saw.set_result(channel.close_code)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        async with wschannel.connect(f"ws://127.0.0.1:{server.port}") as channel:
            assert channel.ready.done()
            assert channel.ready.exception() is None
        assert channel.sink.done.done()
        assert await within(server_saw) == 1000


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "ftp://x", "ws://"])
async def test_client_connect_raises_value_error_for_a_url_it_cannot_use(url: str) -> None:
    """§5.6 #10 (``ValueError`` at the call for an invalid URL: design.md decision 6): a
    scheme other than ws/wss or a URL without a host raises ValueError synchronously."""
    with pytest.raises(ValueError):
        IOWebSocketChannel.connect(url)


async def test_client_reports_the_code_and_reason_of_the_server_close_frame(
    raw_server: StartRaw,
) -> None:
    """X12 (the other half of §2.5): a close frame with a code and a reason gives both;
    the echo repeats them (design.md decision 4)."""
    echo: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def close_with_reason(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        writer.write(frame(OP_BINARY, b"\x00") + frame(OP_CLOSE, close_payload(4123, "bye now")))
        await writer.drain()
        opcode, payload, _ = await read_frame(reader)
        assert opcode == OP_CLOSE
        echo.set_result(payload)

    server = await raw_server(close_with_reason)
    channel = await within(IOWebSocketChannel.connect(server.url))
    assert await drain(channel.stream) == [b"\x00"]
    assert (channel.close_code, channel.close_reason) == (4123, "bye now")
    assert parse_close(await within(echo)) == (4123, "bye now")
