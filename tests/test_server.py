"""serve(): the shelf_web_socket rules, handlers and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import http.cookies
import importlib.util
import logging
import socket
import ssl
import threading
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
import trustme
from conftest import (
    SHORT,
    TIMEOUT,
    close_payload,
    frame,
    next_message,
    open_raw_client,
    read_frame,
    wait,
    wait_until,
)

import wschannel
import wschannel.sync
import wschannel.sync.server
from wschannel import WebSocketChannelException, status
from wschannel._net import DEFAULT_LEVEL, SERVER_WINDOW_BITS
from wschannel._wschannel import DEFAULT_DEFLATE_LEVEL, Connection, HandshakeError, Request
from wschannel.bench.payloads import json_corpus
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Response, Server, unix_serve
from wschannel.sync import SyncWebSocketChannel

KEY = "x3JJHMbDL1EzLkh9GBhXDw=="
UPGRADE = {
    "Host": "127.0.0.1",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": KEY,
    "Sec-WebSocket-Version": "13",
}


async def _echo_all(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


def request_bytes(headers: dict[str, str], method: str = "GET", path: str = "/") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def response_to(port: int, request: bytes) -> tuple[int, bytes]:
    """Send a raw request; the response's status and the rest of what the server sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_code = int(head.split(b" ", 2)[1])
        if status_code == 101:
            return status_code, head
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        return status_code, head + rest
    finally:
        writer.close()


@pytest.fixture
async def origin_server() -> AsyncIterator[Server]:
    async with wschannel.serve(
        _echo_all, "127.0.0.1", 0, allowed_origins=["pub.dartlang.org", "GoOgLe.CoM"]
    ) as server:
        yield server


# The opening handshake (shelf_web_socket's tests).


@pytest.mark.parametrize(
    ("change", "method", "expected"),
    [
        ({}, "GET", 101),
        ({"Connection": "Other-Token, Upgrade"}, "GET", 101),
        ({}, "DELETE", 404),
        ({"Connection": None}, "GET", 404),
        ({"Upgrade": "fblthp"}, "GET", 404),
        ({"Sec-WebSocket-Version": None}, "GET", 400),
        ({"Sec-WebSocket-Key": None}, "GET", 400),
    ],
    ids=["valid", "multiple connection tokens", "DELETE", "no Connection", "bad Upgrade",
         "no version", "no key"],
)  # fmt: skip
async def test_server_answers_upgrade_requests_with_shelf_status_codes(
    echo_server: Server, change: dict[str, str | None], method: str, expected: int
) -> None:
    headers = {**UPGRADE, **change}
    request = request_bytes({k: v for k, v in headers.items() if v is not None}, method)
    status_code, response = await response_to(echo_server.port, request)
    assert status_code == expected
    if expected == 101:
        assert wschannel.sign_key(KEY).encode() in response


async def test_server_rejects_an_unsupported_version(echo_server: Server) -> None:
    request = request_bytes({**UPGRADE, "Sec-WebSocket-Version": "15"})
    status_code, response = await response_to(echo_server.port, request)
    assert status_code == 426  # RFC 6455 §4.4; shelf_web_socket answers 404
    assert b"Sec-WebSocket-Version: 13" in response


async def test_server_answers_a_malformed_request_with_400(echo_server: Server) -> None:
    status_code, _ = await response_to(echo_server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status_code == 400


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("pub.dartlang.org", 101),
        ("dartlang.org", 403),
        (None, 101),
        ("PuB.DaRtLaNg.OrG", 101),
        ("google.com", 101),
    ],
)
async def test_server_checks_the_origin(
    origin_server: Server, origin: str | None, expected: int
) -> None:
    headers = dict(UPGRADE)
    if origin is not None:
        headers["Origin"] = origin
    status_code, _ = await response_to(origin_server.port, request_bytes(headers))
    assert status_code == expected


async def test_client_fails_with_403_from_an_origin_check(origin_server: Server) -> None:
    url = f"ws://127.0.0.1:{origin_server.port}"
    channel = IOWebSocketChannel.connect(url, headers={"Origin": "http://evil.example"})
    with pytest.raises(WebSocketChannelException) as info:
        await wait(channel.ready)
    assert isinstance(info.value.inner, HandshakeError)
    assert info.value.inner.status == 403


async def test_server_without_protocols_accepts_a_client_offering_some(echo_url: str) -> None:
    async with IOWebSocketChannel.connect(echo_url, protocols=["one", "two"]) as channel:
        assert channel.protocol is None


async def test_server_reads_frames_sent_with_the_request(echo_server: Server) -> None:
    # A masked text frame "hi" with an all-zero masking key, right behind the request.
    frame = b"\x81\x82\x00\x00\x00\x00hi"
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.port)
    writer.write(request_bytes(UPGRADE) + frame)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")
    assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"\x81\x02hi"
    writer.close()


async def test_server_drops_a_client_that_sends_no_request() -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0, open_timeout=SHORT) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()


# process_request.


async def test_server_process_request_can_answer_instead() -> None:
    def process_request(request: Request) -> Response | None:
        if request.path == "/health":
            return 200, [("Content-Type", "text/plain")], b"OK"
        return None

    async with wschannel.serve(
        _echo_all, "127.0.0.1", 0, process_request=process_request
    ) as server:
        status_code, response = await response_to(
            server.port, request_bytes({"Host": "x"}, path="/health")
        )
        assert status_code == 200
        assert response.endswith(b"OK")
        async with IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}/ws") as channel:
            channel.sink.add("through")
            assert await next_message(aiter(channel.stream)) == "through"


async def test_server_process_request_may_be_async() -> None:
    async def process_request(request: Request) -> Response | None:
        await asyncio.sleep(0)
        if request.header("Authorization") is None:
            return 401, [], b"who are you?"
        return None

    async with wschannel.serve(
        _echo_all, "127.0.0.1", 0, process_request=process_request
    ) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        with pytest.raises(WebSocketChannelException):
            await wait(channel.ready)
        async with IOWebSocketChannel.connect(f"ws://me:pw@127.0.0.1:{server.port}") as channel:
            channel.sink.add("in")
            assert await next_message(aiter(channel.stream)) == "in"


# Handlers.


async def test_server_closes_with_1000_when_an_async_handler_returns() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add("bye")

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        assert [message async for message in channel.stream] == ["bye"]
        assert channel.close_code == status.NORMAL_CLOSURE


async def test_server_closes_with_1011_when_a_handler_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        raise RuntimeError("handler bug")

    with caplog.at_level(logging.ERROR, logger="wschannel.server"):
        async with wschannel.serve(handler, "127.0.0.1", 0) as server:
            channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
            await wait(channel.sink.done)
    assert channel.close_code == status.INTERNAL_SERVER_ERROR
    assert "handler bug" in caplog.text


async def test_server_keeps_a_plain_function_handler_open_with_listen() -> None:
    called = asyncio.Event()

    def handler(channel: IOWebSocketChannel) -> None:
        def on_data(message: Message) -> None:
            channel.sink.add(message)

        channel.stream.listen(on_data)
        called.set()

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        subscription = aiter(channel.stream)
        await wait(called.wait())
        await wait_until(lambda: not server._handlers, what="the handler has returned")
        channel.sink.add("callback")
        assert await next_message(subscription) == "callback"
        await wait(channel.sink.close())


async def test_server_channel_sees_the_request_and_the_protocol() -> None:
    seen: list[object] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        assert channel.request is not None
        seen.extend([channel.request.path, channel.protocol, channel.ready.done()])

    async with wschannel.serve(handler, "127.0.0.1", 0, protocols=["chat"]) as server:
        url = f"ws://127.0.0.1:{server.port}/room/1"
        channel = IOWebSocketChannel.connect(url, protocols=["chat"])
        await wait(channel.sink.done)
    assert seen == ["/room/1", "chat", True]


async def test_server_sends_a_close_from_the_handler_with_code_and_reason() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add("hello!")
        async for message in channel.stream:
            assert message == "ping"
            channel.sink.add("pong")
            await channel.sink.close(3678, "raisin")

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        received: list[Message] = []
        async for message in channel.stream:
            received.append(message)
            if message == "hello!":
                channel.sink.add("ping")
        assert received == ["hello!", "pong"]
        assert channel.close_code == 3678
        assert channel.close_reason == "raisin"


# Shutdown.


async def test_server_closes_open_connections_with_1001_on_shutdown() -> None:
    server_channels: list[IOWebSocketChannel] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        server_channels.append(channel)
        async for _ in channel.stream:
            pass  # the server's close ends the stream at once

    server = await wschannel.serve(handler, "127.0.0.1", 0)
    channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
    await wait_until(lambda: len(server.connections) == 1, what="the server has the connection")
    server.close()
    await asyncio.wait_for(server.wait_closed(), TIMEOUT)
    await wait(channel.sink.done)
    assert channel.close_code == status.GOING_AWAY
    assert server_channels[0].close_code == status.GOING_AWAY  # the client's echo
    assert server.sockets == ()


async def test_server_serve_forever_closes_when_cancelled() -> None:
    server = await wschannel.serve(_echo_all, "127.0.0.1", 0)
    channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
    started = asyncio.Event()

    async def serve() -> None:
        started.set()
        await server.serve_forever()

    serving = asyncio.ensure_future(serve())
    await wait(started.wait())  # when this resumes, serve_forever() waits to be cancelled
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await wait(channel.sink.done)
    assert channel.close_code == status.GOING_AWAY


async def test_server_refuses_connections_after_close() -> None:
    server = await wschannel.serve(_echo_all, "127.0.0.1", 0)
    port = server.port
    server.close()
    await wait(server.wait_closed())
    channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{port}")
    with pytest.raises(WebSocketChannelException):
        await wait(channel.ready)


async def test_server_close_drops_connections_still_in_their_handshake() -> None:
    server = await wschannel.serve(_echo_all, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await wait_until(lambda: server.pending_handshakes == 1, what="the server has accepted it")
    server.close()
    await wait(server.wait_closed())
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()


async def test_server_gives_up_on_a_client_that_never_answers_its_close() -> None:
    closed: asyncio.Future[IOWebSocketChannel] = asyncio.Future()

    async def handler(channel: IOWebSocketChannel) -> None:
        await channel.sink.close(status.NORMAL_CLOSURE)
        closed.set_result(channel)

    async with wschannel.serve(handler, "127.0.0.1", 0, close_timeout=SHORT) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes(UPGRADE))
        channel = await asyncio.wait_for(closed, TIMEOUT)
        assert channel.close_code == status.ABNORMAL_CLOSURE
        writer.close()


async def test_server_keepalive_keeps_a_responsive_client_connected() -> None:
    interval = SHORT / 2  # a pong may take this long: a loaded machine needs the slack
    async with (
        wschannel.serve(_echo_all, "127.0.0.1", 0, ping_interval=interval) as server,
        IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}") as channel,
    ):
        await asyncio.sleep(interval * 4)  # several intervals pass (time is the point)
        channel.sink.add("still here")
        assert await next_message(aiter(channel.stream)) == "still here"
        assert channel.close_code is None


@pytest.mark.parametrize("compression", [True, False])
async def test_server_accepts_compression_only_when_enabled(compression: bool) -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0, compression=compression) as server:
        request = request_bytes({**UPGRADE, "Sec-WebSocket-Extensions": "permessage-deflate"})
        status_code, head = await response_to(server.port, request)
    assert status_code == 101
    assert (b"permessage-deflate" in head.lower()) is compression


async def test_server_compression_defaults_are_8_kib_windows_at_level_4() -> None:
    """``compression=True``: the server answers 8 KiB windows both ways (the client's only
    where its offer allows it) and both ends compress at level 4 (issue 15: about 8 % less
    CPU per message than level 6). On JSON documents of a few KiB that sends no more bytes
    than level 6 with websockets' 4 KiB windows did; level 4 with 4 KiB windows would."""
    async with wschannel.serve(_echo_all, "127.0.0.1", 0) as server:
        offer = "permessage-deflate; client_max_window_bits"
        request = request_bytes({**UPGRADE, "Sec-WebSocket-Extensions": offer})
        _, head = await response_to(server.port, request)
        plain = request_bytes({**UPGRADE, "Sec-WebSocket-Extensions": "permessage-deflate"})
        _, head_plain = await response_to(server.port, plain)
    answer = "permessage-deflate; server_max_window_bits=13; client_max_window_bits=13"
    assert f"sec-websocket-extensions: {answer}\r\n".encode() in head.lower()
    assert b"client_max_window_bits" not in head_plain.lower()
    assert wschannel.DeflateOptions().level == 4

    def compressed_bytes(bits: int, level: int) -> int:
        agreed = f"permessage-deflate; server_max_window_bits={bits}"
        server = Connection(False, deflate=agreed, deflate_level=level)
        return sum(len(server.send_text(document)) for document in json_corpus() * 2)

    defaults = compressed_bytes(SERVER_WINDOW_BITS, DEFAULT_LEVEL)
    assert defaults <= compressed_bytes(12, 6) < compressed_bytes(12, 4)


def test_compression_level_default_is_one_value_from_python_to_the_engine() -> None:
    """The level is written once, in the binding (``DEFAULT_DEFLATE_LEVEL``): ``_net`` takes
    it from there, and both binding signatures default to it. A signature that said another
    number would compress differently, which the frames show (issue 15)."""
    assert DEFAULT_LEVEL == DEFAULT_DEFLATE_LEVEL == 4
    assert wschannel.DeflateOptions().level == DEFAULT_LEVEL
    assert wschannel.DeflateOptions(server_max_window_bits=9).level == DEFAULT_LEVEL
    agreed = f"permessage-deflate; server_max_window_bits={SERVER_WINDOW_BITS}"

    def frames(connection: Connection) -> list[bytes]:
        return [connection.send_text(document) for document in json_corpus()]

    by_default = frames(Connection(False, deflate=agreed))
    assert by_default == frames(Connection(False, deflate=agreed, deflate_level=DEFAULT_LEVEL))
    assert by_default != frames(Connection(False, deflate=agreed, deflate_level=6))


def _echo_options() -> ModuleType:
    """compliance/echo_options.py, what Autobahn's echo programs ask of wschannel."""
    path = Path(__file__).resolve().parents[1] / "compliance" / "echo_options.py"
    spec = importlib.util.spec_from_file_location("echo_options", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits",
        "permessage-deflate; client_no_context_takeover",
    ],
)
async def test_compliance_server_compression_answers_as_the_default(offer: str) -> None:
    """Autobahn's echo server compresses at level 1 but must shape its frames as
    ``compression=True`` does (compliance/README.md): it writes the server's windows out
    itself, as the public API has no name for them, so this catches the two drifting apart."""
    answers = []
    for compression in (True, _echo_options().SERVER_COMPRESSION):
        async with wschannel.serve(_echo_all, "127.0.0.1", 0, compression=compression) as server:
            request = request_bytes({**UPGRADE, "Sec-WebSocket-Extensions": offer})
            status_code, head = await response_to(server.port, request)
        assert status_code == 101
        answers.append(
            [line for line in head.lower().split(b"\r\n") if b"sec-websocket-extensions" in line]
        )
    assert answers[0] == answers[1] != []


# A close (or a protocol violation) behind messages the handler has not taken yet: the
# answers go out before the close frame.

MASK = b"\x01\x02\x03\x04"
HELLO_THEN_CLOSE = frame(0x1, b"Hello", mask=MASK) + frame(0x8, close_payload(1000), mask=MASK)
HELLO_THEN_VIOLATION = frame(0x1, b"Hello", mask=MASK) + frame(0x1, b"x", mask=MASK, rsv=0x20)


async def frames_after(port: int, data: bytes) -> list[tuple[int, bytes]]:
    """Write ``data`` in one write from a raw client; the frames the server sends back."""
    reader, writer = await open_raw_client(port)
    try:
        writer.write(data)
        frames: list[tuple[int, bytes]] = []
        while not frames or frames[-1][0] != 0x88:
            frames.append(await read_frame(reader))
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # then it closes TCP
        return frames
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("data", "close"),
    [
        (HELLO_THEN_CLOSE, close_payload(1000)),
        (HELLO_THEN_VIOLATION, close_payload(1002, "reserved bit RSV2 or RSV3 set")),
    ],
    ids=["close", "protocol violation"],
)
async def test_server_async_for_handler_answers_before_the_close_echo(
    data: bytes, close: bytes
) -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0) as server:
        frames = await frames_after(server.port, data)
    assert frames == [(0x81, b"Hello"), (0x88, close)]


async def test_server_handler_that_awaits_before_answering_still_answers_first() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            await asyncio.sleep(0.01)  # slow on purpose: the answer takes more than one loop turn
            assert isinstance(message, str)
            channel.sink.add(f"re: {message}")

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        frames = await frames_after(server.port, HELLO_THEN_CLOSE)
    assert frames == [(0x81, b"re: Hello"), (0x88, close_payload(1000))]


async def test_server_handler_that_answers_and_returns_answers_first() -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        message = await next_message(aiter(channel.stream))
        assert isinstance(message, str)
        channel.sink.add(f"only {message}")  # then it returns: the server closes with 1000

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        frames = await frames_after(server.port, HELLO_THEN_CLOSE)
    assert frames == [(0x81, b"only Hello"), (0x88, close_payload(1000))]


async def test_server_listen_handler_answers_before_the_close_echo() -> None:
    def handler(channel: IOWebSocketChannel) -> None:
        subscription = channel.stream.listen(channel.sink.add)
        subscription.pause()  # so the messages wait in the buffer
        asyncio.get_running_loop().call_later(SHORT / 4, subscription.resume)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        frames = await frames_after(server.port, HELLO_THEN_CLOSE)
    assert frames == [(0x81, b"Hello"), (0x88, close_payload(1000))]


async def test_server_waits_for_a_stuck_consumer_only_until_close_timeout() -> None:
    took: list[Message] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        took.append(await next_message(aiter(channel.stream)))
        await asyncio.Event().wait()  # never comes back for more

    async with wschannel.serve(handler, "127.0.0.1", 0, close_timeout=SHORT) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        frames = await frames_after(server.port, HELLO_THEN_CLOSE)
        assert loop.time() - started >= SHORT * 0.9
    assert frames == [(0x88, close_payload(1000))]
    assert took == ["Hello"]


async def test_server_closes_at_once_when_the_close_comes_with_nothing_buffered() -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0, close_timeout=TIMEOUT) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        frames = await frames_after(server.port, frame(0x8, close_payload(1001), mask=MASK))
        assert loop.time() - started < SHORT
    assert frames == [(0x88, close_payload(1001))]


# Unix-domain sockets, reuse_port.


async def test_server_on_a_unix_socket_echoes_and_removes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "ws.sock"
    async with unix_serve(_echo_all, path) as server:
        assert path.exists()
        with pytest.raises(ValueError, match="no port"):
            _ = server.port
        url = "ws://localhost/chat"
        async with IOWebSocketChannel.connect(url, unix_socket=path) as channel:
            channel.sink.add("over a unix socket")
            assert await next_message(aiter(channel.stream)) == "over a unix socket"
            assert server.connections[0].request is not None
            assert server.connections[0].request.path == "/chat"
    assert not path.exists()


async def test_server_on_a_unix_socket_replaces_a_stale_socket_file(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, as after a crash
    async with (
        unix_serve(_echo_all, path),
        IOWebSocketChannel.connect("ws://localhost/", unix_socket=path) as channel,
    ):
        channel.sink.add(b"\x00\x01")
        assert await next_message(aiter(channel.stream)) == b"\x00\x01"


async def test_servers_with_reuse_port_share_a_port() -> None:
    first = await wschannel.serve(_echo_all, "127.0.0.1", 0, reuse_port=True)
    try:
        second = await wschannel.serve(_echo_all, "127.0.0.1", first.port, reuse_port=True)
        try:
            for _ in range(4):
                async with IOWebSocketChannel.connect(f"ws://127.0.0.1:{first.port}") as channel:
                    channel.sink.add("either")
                    assert await next_message(aiter(channel.stream)) == "either"
        finally:
            await wait(second.close())
    finally:
        await wait(first.close())


async def test_server_without_reuse_port_cannot_share_a_port(echo_server: Server) -> None:
    with pytest.raises(OSError):
        await wschannel.serve(_echo_all, "127.0.0.1", echo_server.port)


# Limits on the opening handshake.


async def test_server_drops_a_client_that_trickles_its_request() -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0, open_timeout=SHORT) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        request = request_bytes(UPGRADE)
        with contextlib.suppress(ConnectionError):
            for index in range(len(request) - 1):  # a slowloris never finishes its head
                writer.write(request[index : index + 1])
                await asyncio.sleep(SHORT / 10)  # slow on purpose: a byte at a time
                if reader.at_eof() or loop.time() - started > TIMEOUT:
                    break
        try:
            rest = await asyncio.wait_for(reader.read(), TIMEOUT)
        except ConnectionResetError:
            # A byte written after the server closed (between two of the checks above)
            # draws a reset from its kernel instead of the EOF: dropped all the same.
            rest = b""
        assert rest == b""
        assert SHORT * 0.9 <= loop.time() - started < TIMEOUT
        assert server.pending_handshakes == 0
        writer.close()


async def test_server_drops_a_client_that_never_starts_tls() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with wschannel.serve(
        _echo_all, "127.0.0.1", 0, ssl=context, open_timeout=SHORT
    ) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        assert loop.time() - started < TIMEOUT / 2
        writer.close()


async def test_server_answers_503_over_max_pending_handshakes() -> None:
    async with wschannel.serve(
        _echo_all, "127.0.0.1", 0, max_pending_handshakes=2, open_timeout=TIMEOUT
    ) as server:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await wait_until(lambda: server.pending_handshakes == 2, what="both are accepted")
        status_code, response = await response_to(server.port, request_bytes(UPGRADE))
        assert status_code == 503
        assert b"Retry-After: 1" in response
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        with pytest.raises(WebSocketChannelException) as info:
            await wait(channel.ready)
        assert isinstance(info.value.inner, HandshakeError)
        assert info.value.inner.status == 503
        for _, writer in idle:  # the slots free up: connections are accepted again
            writer.close()
        await wait_until(lambda: server.pending_handshakes == 0, what="both slots are free")
        async with IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}") as channel:
            channel.sink.add("in at last")
            assert await next_message(aiter(channel.stream)) == "in at last"


async def test_server_drops_a_refused_client_that_sends_nothing() -> None:
    async with wschannel.serve(
        _echo_all, "127.0.0.1", 0, max_pending_handshakes=1, open_timeout=SHORT
    ) as server:
        _, first = await asyncio.open_connection("127.0.0.1", server.port)
        await wait_until(lambda: server.pending_handshakes == 1, what="the first is accepted")
        reader, second = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        first.close()
        second.close()


def test_server_rejects_a_max_pending_handshakes_below_one() -> None:
    with pytest.raises(ValueError, match="max_pending_handshakes"):
        wschannel.serve(_echo_all, "127.0.0.1", 0, max_pending_handshakes=0)


# Authentication and routing with process_request.

TOKENS = {"s3cret": "alice"}


def authenticate(request: Request) -> Response | None:
    """A token in the Authorization header, a cookie or the query; routes under /rooms/."""
    path, _, query = request.path.partition("?")
    if not path.startswith("/rooms/"):
        return 404, [("Content-Type", "text/plain")], b"no such room"
    token = None
    authorization = request.header("Authorization")
    if authorization is not None and authorization.startswith("Bearer "):
        token = authorization.removeprefix("Bearer ")
    cookies = http.cookies.SimpleCookie(request.header("Cookie") or "")
    if token is None and "session" in cookies:
        token = cookies["session"].value
    if token is None:
        token = urllib.parse.parse_qs(query).get("token", [None])[0]
    if token not in TOKENS:
        return 401, [("WWW-Authenticate", 'Bearer realm="rooms"')], b"who are you?"
    return None


async def _room_handler(channel: IOWebSocketChannel) -> None:
    assert channel.request is not None
    channel.sink.add(channel.request.path.partition("?")[0].removeprefix("/rooms/"))
    await anext(aiter(channel.stream), None)


@pytest.fixture
async def rooms_server() -> AsyncIterator[Server]:
    async with wschannel.serve(
        _room_handler, "127.0.0.1", 0, process_request=authenticate
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/rooms/a", {"Authorization": "Bearer s3cret"}),
        ("/rooms/a", {"Cookie": "theme=dark; session=s3cret"}),
        ("/rooms/a?token=s3cret", {}),
    ],
    ids=["header", "cookie", "query"],
)
async def test_server_process_request_authenticates_by(
    rooms_server: Server, path: str, headers: dict[str, str]
) -> None:
    url = f"ws://127.0.0.1:{rooms_server.port}{path}"
    async with IOWebSocketChannel.connect(url, headers=headers) as channel:
        assert await next_message(aiter(channel.stream)) == "a"


async def test_server_process_request_refuses_with_its_status_headers_and_body(
    rooms_server: Server,
) -> None:
    status_code, response = await response_to(
        rooms_server.port, request_bytes({**UPGRADE, "Cookie": "session=wrong"}, path="/rooms/a")
    )
    assert status_code == 401
    assert b'WWW-Authenticate: Bearer realm="rooms"' in response
    assert response.endswith(b"who are you?")
    channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{rooms_server.port}/rooms/a")
    with pytest.raises(WebSocketChannelException) as info:
        await wait(channel.ready)
    assert isinstance(info.value.inner, HandshakeError)
    assert info.value.inner.status == 401


async def test_server_process_request_routes_by_path(rooms_server: Server) -> None:
    headers = {"Authorization": "Bearer s3cret"}
    for room in ("lobby", "kitchen"):
        url = f"ws://127.0.0.1:{rooms_server.port}/rooms/{room}"
        async with IOWebSocketChannel.connect(url, headers=headers) as channel:
            assert await next_message(aiter(channel.stream)) == room
    status_code, response = await response_to(
        rooms_server.port, request_bytes(UPGRADE, path="/elsewhere")
    )
    assert (status_code, response.endswith(b"no such room")) == (404, True)


async def test_server_process_request_that_raises_answers_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def process_request(request: Request) -> Response | None:
        raise RuntimeError("auth backend down")

    with caplog.at_level(logging.ERROR, logger="wschannel.server"):
        async with wschannel.serve(
            _echo_all, "127.0.0.1", 0, process_request=process_request
        ) as server:
            status_code, _ = await response_to(server.port, request_bytes(UPGRADE))
    assert status_code == 500
    assert "auth backend down" in caplog.text


# Graceful shutdown.


async def test_server_close_returns_an_awaitable_that_waits_for_every_connection() -> None:
    async with wschannel.serve(_echo_all, "127.0.0.1", 0) as server:
        clients = [
            await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}") for _ in range(5)
        ]
        await wait_until(lambda: len(server.connections) == 5, what="the server has all five")
        await wait(server.close())
        assert server.connections == []
        for channel in clients:
            await wait(channel.sink.done)
            assert channel.close_code == status.GOING_AWAY
        await wait(server.wait_closed())  # already closed: returns at once


async def test_server_close_cancels_a_handler_that_ignores_its_closed_channel() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(channel: IOWebSocketChannel) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # ignores its channel: waits forever
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await wschannel.serve(handler, "127.0.0.1", 0, close_timeout=SHORT)
    channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
    await wait(started.wait())
    await wait(server.close())
    assert cancelled.is_set()
    assert channel.close_code == status.GOING_AWAY


async def test_server_close_stops_an_add_stream_with_1001() -> None:
    async def forever() -> AsyncIterator[str]:
        while True:
            yield "tick"
            await asyncio.sleep(SHORT / 10)  # the pace of an endless source

    async def handler(channel: IOWebSocketChannel) -> None:
        await channel.sink.add_stream(forever())

    server = await wschannel.serve(handler, "127.0.0.1", 0)
    channel = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
    assert await next_message(aiter(channel.stream)) == "tick"
    await wait(server.close())
    await wait(channel.sink.done)
    assert channel.close_code == status.GOING_AWAY


async def test_server_wait_closed_waits_for_close_to_be_called(echo_server: Server) -> None:
    waiting = asyncio.ensure_future(echo_server.wait_closed())
    await asyncio.sleep(SHORT)  # nothing may happen before close(): time is the point
    assert not waiting.done()
    echo_server.close()
    await wait(waiting)


# The thread server: the same options.


def _sync_echo(channel: SyncWebSocketChannel) -> None:
    for message in channel.stream:
        channel.sink.add(message)


async def test_sync_server_on_a_unix_socket_echoes_and_removes_its_file(tmp_path: Path) -> None:
    path = tmp_path / "sync.sock"
    server = wschannel.sync.server.unix_serve(_sync_echo, path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ValueError, match="no port"):
            _ = server.port
        url = "ws://localhost/sync"
        async with IOWebSocketChannel.connect(url, unix_socket=path) as channel:
            channel.sink.add("thread over unix")
            assert await next_message(aiter(channel.stream)) == "thread over unix"
    finally:
        await asyncio.to_thread(server.shutdown, TIMEOUT)
        thread.join(TIMEOUT)
    assert not path.exists()


async def test_sync_server_leaves_connections_in_the_backlog_over_max_pending_handshakes() -> None:
    server = wschannel.sync.serve(
        _sync_echo, "127.0.0.1", 0, max_pending_handshakes=1, open_timeout=TIMEOUT
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _, idle = await asyncio.open_connection("127.0.0.1", server.port)
        await wait_until(lambda: server._accepting_paused, what="the server stops accepting")
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await asyncio.sleep(SHORT)  # nothing may happen while it waits: time is the point
        assert not channel.ready.done()  # waiting in the backlog, not refused
        idle.close()  # its slot frees: the waiting one is accepted
        await wait(channel.ready)
        channel.sink.add("let in")
        assert await next_message(aiter(channel.stream)) == "let in"
        await wait(channel.sink.close())
    finally:
        await asyncio.to_thread(server.shutdown, TIMEOUT)
        thread.join(TIMEOUT)
