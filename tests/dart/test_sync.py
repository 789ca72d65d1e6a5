"""The Dart behaviours that apply to the blocking API, ``wschannel.sync`` (design.md decision 1).

Clients run against the §3.0 echo server on its own thread's event loop, against
``wschannel.sync.serve`` servers, or against raw peers on blocking sockets. Every wait is
bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import pytest

import wschannel.sync
from wschannel import StateError, WebSocketChannelException, status
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.sync.connection import SyncWebSocketChannel
from wschannel.sync.server import Server as SyncServer

from .conftest import (
    ACCEPT,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    SHORT,
    TIMEOUT,
    close_payload,
    eventually_sync,
    frame,
    parse_close,
    serve_in_thread,
    upgrade_headers,
    upgrade_request,
)

T = TypeVar("T")


# Blocking helpers, every one bounded.


def collect(iterable: Iterable[T]) -> list[T]:
    """Iterate ``iterable`` to its end in a thread; fail if that takes over TIMEOUT."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.extend(iterable)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the iteration did not end in time"
    if errors:
        raise errors[0]
    return result


def connect(url: str, **options: Any) -> SyncWebSocketChannel:
    channel: SyncWebSocketChannel = wschannel.sync.connect(url, connect_timeout=TIMEOUT, **options)
    return channel


@contextlib.contextmanager
def sync_server(
    handler: Callable[[SyncWebSocketChannel], object], **options: Any
) -> Iterator[SyncServer]:
    """``wschannel.sync.serve`` on 127.0.0.1, serving from a thread until the block ends."""
    server: SyncServer = wschannel.sync.serve(handler, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown(TIMEOUT)
        thread.join(TIMEOUT)


def recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("EOF")
        data += chunk
    return data


def recv_head(conn: socket.socket) -> dict[str, str]:
    """Read an HTTP head byte by byte (so nothing after it is consumed); its headers."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exactly(conn, 1)
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def accept(conn: socket.socket, protocol: str | None = None) -> None:
    headers = recv_head(conn)
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {wschannel.sign_key(headers['sec-websocket-key'])}\r\n"
    )
    if protocol is not None:
        response += f"Sec-WebSocket-Protocol: {protocol}\r\n"
    conn.sendall((response + "\r\n").encode())


def recv_frame(conn: socket.socket) -> tuple[int, bytes]:
    first, second = recv_exactly(conn, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", recv_exactly(conn, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", recv_exactly(conn, 8))
    mask = recv_exactly(conn, 4) if second & 0x80 else b"\0\0\0\0"
    data = recv_exactly(conn, length)
    return first & 0x0F, bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def drain_socket(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass


@contextlib.contextmanager
def raw_peer(handler: Callable[[socket.socket], None]) -> Iterator[str]:
    """A blocking TCP server on 127.0.0.1 running ``handler`` for one connection; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            with contextlib.suppress(OSError):
                handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        listener.close()
        thread.join(TIMEOUT)


def http_status(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as conn:
        conn.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            assert chunk, "the server closed without answering"
            head += chunk
    first, *lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    return int(first.split()[1]), headers


# Messages (A3-A7, X17).


@pytest.mark.parametrize(
    "message",
    ["", b"", "hello", b"\x01\x02\x03", "🎨⛳🌈", "x" * 120_000, b"\x07" * 1_000_000],
    ids=["A3-empty-text", "A4-empty-binary", "A5", "A6", "X17-non-ascii", "X17-text", "X17-1MB"],
)
def test_sync_client_receives_the_echo_of_each_message_kind(
    threaded_echo_url: str, message: Message
) -> None:
    """A3-A6, X17: each message comes back unchanged with its type."""
    with connect(threaded_echo_url) as channel:
        channel.sink.add(message)
        received = channel.receive(TIMEOUT)
    assert type(received) is type(message)
    assert received == message


def test_sync_client_receives_alternating_text_and_binary_in_order(threaded_echo_url: str) -> None:
    """A7: alternative string and binary request and response, through ``stream``."""
    sent: list[Message] = ["hello", b"\x01\x02\x03", "world", b"\x04\x05\x06"]
    with connect(threaded_echo_url) as channel:
        for message in sent:
            channel.sink.add(message)
        channel.sink.add("close")
        received = collect(channel.stream)
    assert received == sent
    assert [type(message) for message in received] == [str, bytes, str, bytes]
    assert (channel.close_code, channel.close_reason) == (3001, "you asked me to")


# Closing (A2, A8, A9, X3-X9).


def test_sync_client_connects_and_closes(threaded_echo_url: str) -> None:
    """A2: good connect; ``sink.close()`` returns ``done``, which resolves (design.md decision
    4: the echo of a close without a code is 1005)."""
    channel = connect(threaded_echo_url)
    assert channel.protocol is None  # X2, design.md decision 3
    before_close = channel.close_code
    assert before_close is None
    channel.sink.close().result(TIMEOUT)
    assert (channel.close_code, channel.close_reason) == (1005, "")


def test_sync_client_sees_the_remote_close_without_reading(threaded_echo_url: str) -> None:
    """A8: remote close: ``close_code``/``close_reason`` are set without anyone reading; a
    later close completes."""
    channel = connect(threaded_echo_url)
    channel.sink.add("close")
    eventually_sync(lambda: channel.close_code is not None)
    assert (channel.close_code, channel.close_reason) == (3001, "you asked me to")
    assert channel.sink.close().result(TIMEOUT) is None


def test_sync_client_local_close_reports_the_server_echo(threaded_echo_url: str) -> None:
    """A9: local close with 3005 / ``please close``; design.md decision 4: the echo is
    reported (Dart 3.x leaves null)."""
    channel = connect(threaded_echo_url)
    channel.sink.close(3005, "please close").result(TIMEOUT)
    assert (channel.close_code, channel.close_reason) == (3005, "please close")


def test_sync_client_add_after_its_own_close_raises_state_error(threaded_echo_url: str) -> None:
    """X3: after close, ``add`` raises StateError with Dart's message; closing again returns
    the same ``done``."""
    channel = connect(threaded_echo_url)
    done = channel.sink.close()
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        channel.sink.add("late")
    assert channel.sink.close() is done
    done.result(TIMEOUT)


def test_sync_client_add_after_the_server_closed_is_dropped(threaded_echo_url: str) -> None:
    """X4: after the peer's close ended the stream, ``add`` drops silently and ``done``
    resolves."""
    channel = connect(threaded_echo_url)
    channel.sink.add("close")
    assert collect(channel.stream) == []
    channel.sink.add("dropped")
    channel.sink.done.result(TIMEOUT)


def test_sync_client_close_ends_iteration_at_once() -> None:
    """X5 / guarantee 2: closing the sink while handling message 1 of 3 ends the
    iteration; the rest are dropped."""

    async def three(channel: IOWebSocketChannel) -> None:
        for text in ("1", "2", "3"):
            channel.sink.add(text)
        async for _ in channel.stream:
            pass

    with serve_in_thread(three) as server:
        channel = connect(f"ws://127.0.0.1:{server.port}")
        eventually_sync(lambda: len(channel.stream._buffer) == 3)  # all three are buffered
        received: list[Message] = []

        def read() -> list[Message]:
            for message in channel.stream:
                received.append(message)
                channel.sink.close(3000)
            return received

        assert collect(read()) == ["1"]
        channel.sink.done.result(TIMEOUT)


def test_sync_client_stops_iterating_without_closing(threaded_echo_url: str) -> None:
    """X6: breaking out of the loop does not close; the server's close is still seen."""
    channel = connect(threaded_echo_url)
    channel.sink.add("one")
    for message in channel.stream:
        assert message == "one"
        break
    channel.sink.add("close")
    eventually_sync(lambda: channel.close_code is not None)
    assert channel.close_code == 3001


def test_sync_client_stream_cannot_be_iterated_twice(threaded_echo_url: str) -> None:
    """X7: a second iteration raises StateError."""
    with connect(threaded_echo_url) as channel:
        iter(channel.stream)
        with pytest.raises(StateError):
            iter(channel.stream)


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_sync_client_close_with_an_invalid_code_raises_value_error(
    threaded_echo_url: str, code: int
) -> None:
    """X9 (design.md decision 2): ValueError at the call, and the connection stays open."""
    with connect(threaded_echo_url) as channel:
        with pytest.raises(ValueError):
            channel.sink.close(code)
        with pytest.raises(ValueError):
            channel.sink.close(3000, "x" * 124)
        channel.sink.add("still open")
        assert channel.receive(TIMEOUT) == "still open"


def test_sync_server_sees_going_away_from_the_readme() -> None:
    """X9: ``status.GOING_AWAY`` (the README's close) is accepted and reaches the server."""
    seen: list[tuple[int | None, str | None]] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        collect(channel.stream)
        seen.append((channel.close_code, channel.close_reason))

    with sync_server(handler) as server:
        channel = connect(f"ws://127.0.0.1:{server.port}")
        channel.sink.close(status.GOING_AWAY, "bye").result(TIMEOUT)
        eventually_sync(lambda: bool(seen))
    assert seen == [(1001, "bye")]


@pytest.mark.parametrize("value", [object(), None, 42, [1, 2, 3]])
def test_sync_client_add_of_an_unsupported_type_raises_type_error(
    threaded_echo_url: str, value: object
) -> None:
    """X10 (design.md decisions 6 and 8)."""
    with connect(threaded_echo_url) as channel:
        with pytest.raises(TypeError):
            channel.sink.add(value)  # type: ignore[arg-type]
        channel.sink.add("after")
        assert channel.receive(TIMEOUT) == "after"


def test_sync_client_context_manager_closes_on_exit() -> None:
    """design.md decision 1 (``wschannel.sync``: same channel/sink shape): ``with`` closes on
    exit and the server sees 1000 (issue 13: as websockets; it was a close without a code)."""
    seen: list[int | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        collect(channel.stream)
        seen.append(channel.close_code)

    with sync_server(handler) as server:
        with connect(f"ws://127.0.0.1:{server.port}") as channel:
            channel.sink.add("hi")
        assert channel.sink.done.done()
        eventually_sync(lambda: bool(seen))
    assert seen == [1000]


# Keepalive and misbehaving peers (X11-X13).


def test_sync_client_keepalive_closes_with_1001_when_no_pong_comes() -> None:
    """X11: no pong within the interval: the stream ends with ``close_code`` 1001."""
    frames: list[tuple[int, bytes]] = []

    def no_pongs(conn: socket.socket) -> None:
        accept(conn)
        while True:
            opcode, payload = recv_frame(conn)
            frames.append((opcode, payload))
            if opcode == OP_CLOSE:
                drain_socket(conn)
                return

    with raw_peer(no_pongs) as url:
        channel = connect(url, ping_interval=SHORT)
        assert collect(channel.stream) == []
        assert channel.close_code == 1001
        eventually_sync(lambda: bool(frames) and frames[-1][0] == OP_CLOSE)
    assert frames[0] == (OP_PING, b"")


def test_sync_client_keepalive_keeps_a_responsive_connection_open(threaded_echo_url: str) -> None:
    """X11: against a peer that answers pings, the connection stays up."""
    with connect(threaded_echo_url, ping_interval=SHORT / 2) as channel:
        time.sleep(SHORT * 3)  # several intervals pass (time is the point)
        assert channel.close_code is None
        channel.sink.add("alive")
        assert channel.receive(TIMEOUT) == "alive"


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [(b"", 1005, ""), (close_payload(4123, "bye"), 4123, "bye")],
    ids=["no-code", "code-and-reason"],
)
def test_sync_client_reports_the_server_close_frame(payload: bytes, code: int, reason: str) -> None:
    """X12: a close frame without a code gives 1005 and ``''``; one with a code and reason
    gives both; the echo repeats it (design.md decision 4)."""
    echoes: list[bytes] = []

    def close_first(conn: socket.socket) -> None:
        accept(conn)
        conn.sendall(frame(OP_CLOSE, payload))
        opcode, echo = recv_frame(conn)
        assert opcode == OP_CLOSE
        echoes.append(echo)

    with raw_peer(close_first) as url:
        channel = connect(url)
        assert collect(channel.stream) == []
        assert (channel.close_code, channel.close_reason) == (code, reason)
    assert echoes == [payload]


def test_sync_client_reports_1006_for_eof_without_a_close_frame() -> None:
    """X12: EOF without a close frame: 1006 (design.md decision 4), not Dart's 1005."""

    def hang_up(conn: socket.socket) -> None:
        accept(conn)
        conn.sendall(frame(OP_TEXT, b"last"))

    with raw_peer(hang_up) as url:
        channel = connect(url)
        assert collect(channel.stream) == ["last"]
        assert (channel.close_code, channel.close_reason) == (1006, "")
        channel.sink.done.result(TIMEOUT)


@pytest.mark.parametrize(
    ("bad_frame", "code"),
    [(frame(OP_TEXT, b"\xff\xfe"), 1007), (frame(OP_TEXT, b"x", mask=b"\1\2\3\4"), 1002)],
    ids=["invalid-utf8", "masked-by-server"],
)
def test_sync_client_fails_the_connection_when_the_server_misbehaves(
    bad_frame: bytes, code: int
) -> None:
    """X13: invalid UTF-8 ⇒ 1007; a masked server frame ⇒ 1002; the server is told so."""
    told: list[int] = []

    def misbehave(conn: socket.socket) -> None:
        accept(conn)
        conn.sendall(bad_frame)
        opcode, payload = recv_frame(conn)
        assert opcode == OP_CLOSE
        told.append(parse_close(payload)[0])

    with raw_peer(misbehave) as url:
        channel = connect(url)
        assert collect(channel.stream) == []
        assert channel.close_code == code
    assert told == [code]


# Connecting (IO5-IO10, X14, X16).


def test_sync_client_connect_to_an_http_404_raises_channel_exception() -> None:
    """IO5: a plain 404 ⇒ WebSocketChannelException with the cause in ``inner``."""

    def not_found(conn: socket.socket) -> None:
        recv_head(conn)
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    with raw_peer(not_found) as url, pytest.raises(WebSocketChannelException) as error:
        connect(url)
    assert "404" in str(error.value)
    assert error.value.inner is not None


def test_sync_client_connect_to_a_refused_port_raises_channel_exception() -> None:
    """A1 (blocking): a refused connection ⇒ WebSocketChannelException, ``inner`` OSError."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(WebSocketChannelException) as error:
        connect(f"ws://127.0.0.1:{port}")
    assert isinstance(error.value.inner, OSError)


def test_sync_client_reports_the_negotiated_protocol() -> None:
    """IO7 / S2: the client's order wins; both sides report ``two``."""
    seen: list[str | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        seen.append(channel.protocol)

    with sync_server(handler, protocols=["three", "two", "x"]) as server:
        with connect(f"ws://127.0.0.1:{server.port}", protocols=["one", "two", "three"]) as channel:
            assert channel.protocol == "two"
        eventually_sync(lambda: bool(seen))
    assert seen == ["two"]


def test_sync_client_connect_timeout_raises_timeout_error_and_closes_the_socket() -> None:
    """IO9 / X14: ``connect_timeout`` elapsed ⇒ the built-in TimeoutError (design.md decision 7)
    and the socket is closed (the server sees EOF)."""
    eof = threading.Event()

    def silent(conn: socket.socket) -> None:
        drain_socket(conn)
        eof.set()

    with raw_peer(silent) as url:
        with pytest.raises(TimeoutError) as error:
            wschannel.sync.connect(url, connect_timeout=SHORT)
        assert not isinstance(error.value, WebSocketChannelException)
        assert eof.wait(TIMEOUT)


def test_sync_client_settings_reach_the_upgrade_request() -> None:
    """IO10: ``user_agent`` and ``headers`` reach the server."""
    seen: list[tuple[str | None, str | None]] = []

    def record(request: Any) -> None:
        seen.append((request.header("user-agent"), request.header("x-custom")))

    with (
        sync_server(lambda channel: None, process_request=record) as server,
        connect(f"ws://127.0.0.1:{server.port}", user_agent="custom", headers={"X-Custom": "yes"}),
    ):
        pass
    assert seen == [("custom", "yes")]


def test_sync_client_fails_when_the_server_chooses_an_unoffered_protocol() -> None:
    """X16 (design.md decision 3): a 101 with a protocol not offered ⇒ WebSocketChannelException."""

    def pick(conn: socket.socket) -> None:
        accept(conn, protocol="superchat")
        drain_socket(conn)

    with raw_peer(pick) as url, pytest.raises(WebSocketChannelException, match="superchat"):
        connect(url, protocols=["chat"])


# The server (S1, S3, S6-S17).


def test_sync_client_talks_to_a_sync_handler_that_greets_answers_and_closes() -> None:
    """S1: the handler sends ``hello!``, reads ``ping``, replies ``pong`` and closes."""
    server_received: list[Message] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        channel.sink.add("hello!")
        server_received.append(channel.receive(TIMEOUT))
        channel.sink.add("pong")
        channel.sink.close().result(TIMEOUT)

    with sync_server(handler) as server:
        channel = connect(f"ws://127.0.0.1:{server.port}")
        received: list[Message] = []

        def converse() -> list[Message]:
            for message in channel.stream:
                received.append(message)
                if message == "hello!":
                    channel.sink.add("ping")
            return received

        assert collect(converse()) == ["hello!", "pong"]
    assert server_received == ["ping"]
    assert channel.close_code == 1005


def test_sync_server_without_protocols_accepts_a_client_offering_some() -> None:
    """S3 / S4: the connection opens; both sides' protocol is ``None``."""
    seen: list[str | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        seen.append(channel.protocol)

    with sync_server(handler) as server:
        with connect(f"ws://127.0.0.1:{server.port}", protocols=["one", "two"]) as channel:
            assert channel.protocol is None
        eventually_sync(lambda: bool(seen))
    assert seen == [None]


@pytest.mark.parametrize(
    ("dart_id", "request_bytes", "expected"),
    [
        ("S6", upgrade_request(headers=upgrade_headers(Origin="pub.dartlang.org")), 101),
        ("S7", upgrade_request(headers=upgrade_headers(Origin="dartlang.org")), 403),
        ("S8", upgrade_request(), 101),
        ("S9", upgrade_request(headers=upgrade_headers(Origin="pub.DartLang.org")), 101),
        ("S10", upgrade_request(headers=upgrade_headers(Origin="google.com")), 101),
        ("S11", upgrade_request(headers=upgrade_headers(Connection="Other-Token, Upgrade")), 101),
        ("S12", upgrade_request(method="DELETE"), 404),
        ("S13", upgrade_request(headers=upgrade_headers(Connection=None)), 404),
        ("S14", upgrade_request(headers=upgrade_headers(Upgrade="fblthp")), 404),
        ("S15", upgrade_request(headers=upgrade_headers(Sec_WebSocket_Version=None)), 400),
        ("S16", upgrade_request(headers=upgrade_headers(Sec_WebSocket_Version="15")), 426),
        ("S17", upgrade_request(headers=upgrade_headers(Sec_WebSocket_Key=None)), 400),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("S") else None,
)
def test_sync_server_answers_upgrade_requests_with_shelf_status_codes(
    dart_id: str, request_bytes: bytes, expected: int
) -> None:
    """S6-S17 for ``wschannel.sync.serve`` (allowed origins ``pub.dartlang.org`` and
    ``GoOgLe.CoM``); shelf's status codes, except S16: 426 with ``Sec-WebSocket-Version: 13``
    (RFC 6455 §4.4, issue 2) where shelf answers 404."""
    with sync_server(
        lambda channel: None, allowed_origins=["pub.dartlang.org", "GoOgLe.CoM"]
    ) as server:
        status_code, headers = http_status(server.port, request_bytes)
    assert status_code == expected, dart_id
    if expected == 426:
        assert headers["sec-websocket-version"] == "13"
    if expected == 101:
        assert headers["sec-websocket-accept"] == ACCEPT
