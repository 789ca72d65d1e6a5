"""wschannel.sync: the blocking client and server, against each other and against the asyncio
server and client, over real sockets on 127.0.0.1."""

from __future__ import annotations

import array
import asyncio
import hashlib
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from conftest import SHORT, TIMEOUT, wait_until_sync
from conftest import echo as async_echo
from sync_helpers import (
    accept_upgrade,
    asyncio_server,
    drain,
    frame,
    http_status,
    open_raw_websocket,
    raw_server,
    read_request,
    send_is_blocked,
    sync_server,
    upgrade_then_drain,
    url_of,
)

import wschannel
import wschannel.sync
from wschannel import StateError, WebSocketChannelException, status
from wschannel._timers import TIMER_THREAD
from wschannel._wschannel import HandshakeError
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.sync import SyncWebSocketChannel


def echo(channel: SyncWebSocketChannel) -> None:
    """Dart's echo server, blocking: echoes, and closes with 3001 on ``close``."""
    for message in channel.stream:
        if message == "close":
            channel.sink.close(3001, "you asked me to")
            return
        channel.sink.add(message)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wschannel_threads() -> list[threading.Thread]:
    """The threads of open connections (the shared timer thread lives on)."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("wschannel-") and thread.name != TIMER_THREAD
    ]


@pytest.fixture(autouse=True)
def no_thread_is_left_behind() -> Iterator[None]:
    """Every connection a test opens has finished, threads included, soon after it."""
    before = set(wschannel_threads())
    yield
    try:
        wait_until_sync(lambda: not set(wschannel_threads()) - before)
    except AssertionError:
        assert set(wschannel_threads()) - before == set()


@pytest.fixture(params=["asyncio server", "sync server"])
def server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An echo server: ``wschannel.serve`` in a thread's loop, or ``wschannel.sync.serve``."""
    if request.param == "asyncio server":
        with asyncio_server(async_echo) as running:
            yield running.url
    else:
        with sync_server(echo) as server:
            yield url_of(server)


def echo_of(url: str, message: str | bytes, **options: Any) -> Message:
    with wschannel.sync.connect(url, **options) as channel:
        channel.sink.add(message)
        return channel.receive(TIMEOUT)


# Messages.


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        b"\x00\x01\xfe\xff",
        "",
        b"",
        "🎨⛳🌈",
        "é" * 60_000,  # 120 000 UTF-8 bytes
        os.urandom(1_000_000),
    ],
    ids=["text", "binary", "empty-text", "empty-binary", "non-ascii", "large-text", "1MB-binary"],
)
def test_sync_client_receives_echo_of_each_message_kind(server_url: str, message: Message) -> None:
    received = echo_of(server_url, message)
    assert type(received) is type(message)
    assert received == message


def test_sync_client_receives_messages_in_order_with_their_types(server_url: str) -> None:
    sent: list[Message] = [f"text {i}" if i % 2 else f"binary {i}".encode() for i in range(100)]
    with wschannel.sync.connect(server_url) as channel:
        for message in sent:
            channel.sink.add(message)
        assert [channel.receive(TIMEOUT) for _ in sent] == sent


def test_sync_client_sends_any_bytes_like_object_as_binary(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        channel.sink.add(bytearray(b"bytearray"))
        channel.sink.add(memoryview(b"memoryview"))
        channel.sink.add(memoryview(b"a-b-c-")[::2])  # not contiguous
        channel.sink.add(array.array("B", b"array"))
        assert [channel.receive(TIMEOUT) for _ in range(4)] == [
            b"bytearray",
            b"memoryview",
            b"abc",
            b"array",
        ]


@pytest.mark.parametrize("data", [None, object(), 42, ["a"], 1.5])
def test_sync_client_add_raises_type_error_for_unsupported_types(
    server_url: str, data: object
) -> None:
    with wschannel.sync.connect(server_url) as channel:
        with pytest.raises(TypeError, match="Cannot send"):
            channel.sink.add(data)  # type: ignore[arg-type]
        channel.sink.add("still open")
        assert channel.receive(TIMEOUT) == "still open"


def test_sync_client_iterating_the_stream_twice_raises_state_error(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        iter(channel.stream)
        assert channel.stream.is_subscribed
        with pytest.raises(StateError):
            iter(channel.stream)
        with pytest.raises(StateError):
            for _ in channel.stream:
                pass


def test_sync_client_receive_raises_timeout_error_when_nothing_comes(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            channel.receive(SHORT)
        assert time.monotonic() - start >= SHORT * 0.9
        channel.sink.add("later")
        assert channel.receive(TIMEOUT) == "later"


def test_sync_client_receive_in_a_second_thread_meanwhile_raises_state_error(
    server_url: str,
) -> None:
    with wschannel.sync.connect(server_url) as channel:
        waiter = threading.Thread(target=lambda: channel.receive(TIMEOUT))
        waiter.start()
        wait_until_sync(lambda: channel.stream._waiting, what="the waiter waits in receive()")
        with pytest.raises(StateError):
            channel.receive(SHORT)
        channel.sink.add("for the waiter")
        waiter.join(TIMEOUT)
        assert not waiter.is_alive()


def test_sync_client_receive_raises_eof_error_once_the_connection_is_closed(
    server_url: str,
) -> None:
    with wschannel.sync.connect(server_url) as channel:
        channel.sink.add("last")
        channel.sink.add("close")
        channel.wait_closed(TIMEOUT)
        assert channel.receive(TIMEOUT) == "last"  # buffered messages come first
        with pytest.raises(EOFError):
            channel.receive(TIMEOUT)


# Closing.


def test_sync_client_stream_ends_with_the_servers_close_code_and_reason(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        assert (channel.close_code, channel.close_reason) == (None, None)
        channel.sink.add("one")
        channel.sink.add("close")
        assert list(channel.stream) == ["one"]
        assert channel.close_code == 3001
        assert channel.close_reason == "you asked me to"
        channel.sink.done.result(TIMEOUT)


def test_sync_client_sees_server_close_without_iterating(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        channel.sink.add("close")
        channel.wait_closed(TIMEOUT)
        assert channel.close_code == 3001


@pytest.mark.parametrize("side", ["asyncio server", "sync server"])
def test_sync_client_close_reaches_the_server_with_code_and_reason(side: str) -> None:
    seen: list[tuple[int | None, str | None]] = []
    closed = threading.Event()

    async def async_handler(channel: IOWebSocketChannel) -> None:
        async for _ in channel.stream:
            pass
        await channel.sink.done
        seen.append((channel.close_code, channel.close_reason))
        closed.set()

    def sync_handler(channel: SyncWebSocketChannel) -> None:
        for _ in channel.stream:
            pass
        seen.append((channel.close_code, channel.close_reason))
        closed.set()

    if side == "asyncio server":
        with asyncio_server(async_handler) as running:
            channel = wschannel.sync.connect(running.url)
            channel.close(4001, "goodbye")
            assert closed.wait(TIMEOUT)
    else:
        with sync_server(sync_handler) as server:
            channel = wschannel.sync.connect(url_of(server))
            channel.close(4001, "goodbye")
            assert closed.wait(TIMEOUT)
    assert seen == [(4001, "goodbye")]
    assert (channel.close_code, channel.close_reason) == (4001, "goodbye")  # the echo


def test_sync_client_close_without_code_gets_1005(server_url: str) -> None:
    channel = wschannel.sync.connect(server_url)
    channel.close()
    assert (channel.close_code, channel.close_reason) == (status.NO_STATUS_RECEIVED, "")


def test_sync_client_close_returns_done_without_blocking_and_done_resolves(
    server_url: str,
) -> None:
    channel = wschannel.sync.connect(server_url)
    done = channel.sink.close(status.GOING_AWAY)  # the README's code works
    assert done is channel.sink.done
    assert done.result(TIMEOUT) is None
    assert not done.cancel()


def test_sync_client_add_after_close_raises_state_error_and_closing_again_is_fine(
    server_url: str,
) -> None:
    channel = wschannel.sync.connect(server_url)
    done = channel.sink.close()
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        channel.sink.add("late")
    assert channel.sink.close(1000, "again") is done
    channel.wait_closed(TIMEOUT)
    with pytest.raises(StateError):
        channel.sink.add(b"later")


def test_sync_client_add_after_server_close_is_dropped(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        channel.sink.add("close")
        assert list(channel.stream) == []
        channel.sink.add("dropped")
        channel.sink.add(b"dropped")
        channel.wait_closed(TIMEOUT)
        channel.sink.add("dropped")
        with pytest.raises(TypeError):
            channel.sink.add(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        *[(code, None) for code in (999, 1004, 1005, 1006, 1015, 2999, 5000)],
        (None, "a reason needs a code"),
        (1000, "x" * 124),
        (1000, "é" * 62),
    ],
)
def test_sync_client_invalid_close_raises_value_error_and_the_connection_still_works(
    server_url: str, code: int | None, reason: str | None
) -> None:
    with wschannel.sync.connect(server_url) as channel:
        with pytest.raises(ValueError):
            channel.sink.close(code, reason)
        channel.sink.add("still open")
        assert channel.receive(TIMEOUT) == "still open"
        assert channel.close_code is None


def test_sync_client_close_ends_the_stream_at_once_dropping_buffered_messages(
    server_url: str,
) -> None:
    channel = wschannel.sync.connect(server_url)
    subscription = iter(channel.stream)
    for i in range(5):
        channel.sink.add(f"message {i}")
    assert next(subscription) == "message 0"
    wait_until_sync(lambda: len(channel.stream._buffer) == 4, what="the others are buffered")
    channel.sink.close()
    assert list(subscription) == []
    channel.wait_closed(TIMEOUT)


def test_sync_client_stops_iterating_without_closing_and_still_sees_server_close(
    server_url: str,
) -> None:
    with wschannel.sync.connect(server_url) as channel:
        channel.sink.add("one")
        for message in channel.stream:
            assert message == "one"
            break
        channel.sink.add("two")
        assert channel.receive(TIMEOUT) == "two"
        channel.sink.add("close")
        channel.wait_closed(TIMEOUT)
        assert channel.close_code == 3001


def test_sync_client_context_manager_closes_on_exit() -> None:
    codes: list[int | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        for _ in channel.stream:
            pass
        codes.append(channel.close_code)

    with sync_server(handler) as server:
        with wschannel.sync.connect(url_of(server)) as channel:
            channel.sink.add("hello")
        assert channel.sink.done.done()
        assert repr(channel).startswith("<SyncWebSocketChannel closed")
    assert codes == [status.NORMAL_CLOSURE]  # leaving the block closes with 1000 (issue 13)


def test_sync_client_wait_closed_raises_timeout_error_while_open(server_url: str) -> None:
    with wschannel.sync.connect(server_url) as channel:
        with pytest.raises(TimeoutError):
            channel.wait_closed(SHORT)
        assert repr(channel) == "<SyncWebSocketChannel open>"


def test_sync_client_reports_1006_when_the_connection_is_lost_without_close_frame() -> None:
    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(frame(0x1, b"bye"))
        sock.shutdown(socket.SHUT_RDWR)

    with raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url)
        assert list(channel.stream) == ["bye"]
        channel.wait_closed(TIMEOUT)
        assert (channel.close_code, channel.close_reason) == (status.ABNORMAL_CLOSURE, "")


def test_sync_client_close_gives_up_after_close_timeout() -> None:
    with raw_server(upgrade_then_drain) as server:
        channel = wschannel.sync.connect(server.url, close_timeout=SHORT)
        start = time.monotonic()
        channel.close(1000)
        assert SHORT * 0.9 <= time.monotonic() - start < TIMEOUT
        assert channel.close_code == status.ABNORMAL_CLOSURE


# Connecting.


def test_sync_client_connect_to_a_refused_port_raises_channel_exception() -> None:
    with pytest.raises(WebSocketChannelException) as info:
        wschannel.sync.connect(f"ws://127.0.0.1:{free_port()}")
    assert isinstance(info.value.inner, ConnectionRefusedError)
    assert info.value.__cause__ is info.value.inner


def test_sync_client_connect_to_an_http_404_server_raises_channel_exception() -> None:
    def handler(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found")
        drain(sock)

    with raw_server(handler) as server, pytest.raises(WebSocketChannelException) as info:
        wschannel.sync.connect(server.url)
    assert isinstance(info.value.inner, HandshakeError)
    assert info.value.inner.status == 404
    assert info.value.__cause__ is info.value.inner


def test_sync_client_connect_fails_when_the_server_closes_before_answering() -> None:
    with raw_server(read_request) as server, pytest.raises(WebSocketChannelException) as info:
        wschannel.sync.connect(server.url)
    assert isinstance(info.value.inner, ConnectionError)


def test_sync_client_connect_timeout_raises_timeout_error_and_leaves_no_socket() -> None:
    peer_closed = threading.Event()

    def handler(sock: socket.socket) -> None:
        drain(sock)  # never answers; returns at EOF
        peer_closed.set()

    with raw_server(handler) as server:
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            wschannel.sync.connect(server.url, connect_timeout=SHORT)
        assert SHORT * 0.9 <= time.monotonic() - start < TIMEOUT
        assert not isinstance(info.value, WebSocketChannelException)
        assert peer_closed.wait(TIMEOUT)


def test_sync_client_connect_timeout_does_not_fire_for_a_fast_server(server_url: str) -> None:
    with wschannel.sync.connect(server_url, connect_timeout=SHORT) as channel:
        channel.sink.add("quick")
        assert channel.receive(TIMEOUT) == "quick"
        time.sleep(SHORT)  # past connect_timeout (time is the point): still open
        assert channel.close_code is None
        channel.sink.add("still open")
        assert channel.receive(TIMEOUT) == "still open"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "ws://", "ws://127.0.0.1:99999/", "ws://127.0.0.1/#fragment"]
)
def test_sync_client_connect_raises_value_error_for_an_invalid_url(url: str) -> None:
    with pytest.raises(ValueError):
        wschannel.sync.connect(url)


def test_sync_connect_and_serve_refuse_an_empty_queue_before_opening_a_socket() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        wschannel.sync.connect(f"ws://127.0.0.1:{free_port()}", max_queue=0)
    with pytest.raises(ValueError, match="max_queue"):
        wschannel.sync.serve(echo, "127.0.0.1", 0, max_queue=0)


def test_sync_client_negotiates_the_subprotocol_in_its_own_order() -> None:
    with (
        asyncio_server(async_echo, protocols=["three", "two", "x"]) as running,
        wschannel.sync.connect(running.url, protocols=["one", "two", "three"]) as channel,
    ):
        assert channel.protocol == "two"
    with sync_server(echo, protocols=["three", "two", "x"]) as server:
        with wschannel.sync.connect(url_of(server), protocols=["one", "two", "three"]) as channel:
            assert channel.protocol == "two"
        with wschannel.sync.connect(url_of(server)) as channel:
            assert channel.protocol is None
        with wschannel.sync.connect(url_of(server), protocols=["one"]) as channel:
            assert channel.protocol is None


def test_sync_client_fails_when_the_server_chooses_an_unoffered_subprotocol() -> None:
    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock, protocol="other")
        drain(sock)

    with raw_server(handler) as server, pytest.raises(WebSocketChannelException, match="other"):
        wschannel.sync.connect(server.url, protocols=["mine"])


def test_sync_client_sends_its_headers_user_agent_and_credentials() -> None:
    requests: list[dict[str, str | None]] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        request = channel.request
        assert request is not None
        requests.append(
            {
                name: request.header(name)
                for name in ("x-one", "user-agent", "authorization", "host")
            }
        )

    with sync_server(handler) as server:
        with wschannel.sync.connect(
            f"ws://me:secret@127.0.0.1:{server.port}/path?q=1", headers={"X-One": "1"}
        ) as channel:
            channel.wait_closed(TIMEOUT)
        with wschannel.sync.connect(url_of(server), user_agent=None) as channel:
            channel.wait_closed(TIMEOUT)
    assert requests[0]["x-one"] == "1"
    assert (requests[0]["user-agent"] or "").startswith("Python/")
    assert requests[0]["authorization"] == "Basic bWU6c2VjcmV0"
    assert requests[0]["host"] == f"127.0.0.1:{server.port}"
    assert requests[1]["user-agent"] is None


def test_sync_client_receives_frames_sent_with_the_handshake_response() -> None:
    def handler(sock: socket.socket) -> None:
        headers = read_request(sock)
        accept = wschannel.sign_key(headers["sec-websocket-key"])
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
            + frame(0x1, b"early")
            + frame(0x8, b"\x03\xe8done")
        )
        drain(sock)

    with raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url, close_timeout=SHORT)
        assert list(channel.stream) == ["early"]
        assert (channel.close_code, channel.close_reason) == (1000, "done")
        channel.wait_closed(TIMEOUT)


# The engine's automatic behaviour, through the blocking layer.


def test_sync_client_answers_a_ping_with_a_pong() -> None:
    pongs: list[bytes] = []

    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(frame(0x9, b"are you there"))
        data = b""
        while len(data) < 2 + 4 + 13:
            data += sock.recv(100)
        pongs.append(data)
        drain(sock)

    with raw_server(handler) as server, wschannel.sync.connect(server.url, close_timeout=SHORT):
        wait_until_sync(lambda: pongs, what="the pong arrived")
    head, key, masked = pongs[0][:2], pongs[0][2:6], pongs[0][6:19]
    assert head == bytes([0x8A, 0x80 | 13])
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == b"are you there"


def test_sync_client_receive_reads_the_socket_in_the_calling_thread(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread hop per message: with the fallback reader kept out once the application
    reads (it would read again only after an hour without a receive), ``receive()`` still
    gets every echo, and the fallback never read again (it read only until the first
    ``receive()``, and handed reading over once)."""
    monkeypatch.setattr(wschannel.sync.connection, "UNATTENDED", 3600.0)
    sent = [f"message {i}" if i % 2 else f"message {i}".encode() for i in range(200)]
    with wschannel.sync.connect(server_url, ping_interval=None) as channel:
        # The fallback reader may read the first echo before the application asks for it
        # (a loaded machine schedules this thread late): then it sits in its next read until
        # more comes, and hands over after that one. So two, before it must have handed over.
        for opening in ("first", "second"):
            channel.sink.add(opening)
            assert channel.receive(TIMEOUT) == opening
        wait_until_sync(lambda: channel._stream._handoffs == 1, what="the fallback handed over")
        for message in sent:
            channel.sink.add(message)
            assert channel.receive(TIMEOUT) == message
        sent_at_once = [b"x" * size for size in (1, 100, 70_000, 300_000)]
        for message in sent_at_once:
            channel.sink.add(message)
        assert [channel.receive(TIMEOUT) for _ in sent_at_once] == sent_at_once
        assert channel._stream._handoffs == 1


def test_sync_client_fallback_reader_that_read_first_hands_over_at_the_next_message(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback reader reads the first echo before the application asks for it, and
    then sits in its next read: the application's next message comes through it, and from
    then on the application reads, with one hand-over in all."""
    monkeypatch.setattr(wschannel.sync.connection, "UNATTENDED", 3600.0)
    with wschannel.sync.connect(server_url, ping_interval=None) as channel:
        channel.sink.add("first")
        wait_until_sync(lambda: len(channel._stream._buffer) == 1, what="the fallback read it")
        assert channel.receive(TIMEOUT) == "first"
        for message in ("second", "third", "fourth"):
            channel.sink.add(message)
            assert channel.receive(TIMEOUT) == message
        assert channel._stream._handoffs == 1


def test_sync_client_fallback_reader_that_starts_late_does_not_keep_reading(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback reader's thread starts only after the application has read and taken its
    first message itself (a loaded machine schedules it late): it hands reading over at
    once, instead of sitting in a read nobody needs (it used to count the application's
    messages from when it started, saw none taken since, and read on; a CI run under load
    failed the test above so)."""
    monkeypatch.setattr(wschannel.sync.connection, "UNATTENDED", 3600.0)
    taken_first = threading.Event()
    run = SyncWebSocketChannel._run_fallback_reader

    def late(self: SyncWebSocketChannel) -> None:
        taken_first.wait(TIMEOUT)
        run(self)

    monkeypatch.setattr(SyncWebSocketChannel, "_run_fallback_reader", late)
    with wschannel.sync.connect(server_url, ping_interval=None) as channel:
        channel.sink.add("first")
        assert channel.receive(TIMEOUT) == "first"
        assert channel._stream._handoffs == 0  # the application read it, in its own thread
        taken_first.set()
        wait_until_sync(lambda: channel._stream._handoffs == 1, what="the fallback handed over")
        channel.sink.add("second")
        assert channel.receive(TIMEOUT) == "second"
        assert channel._stream._handoffs == 1


def _reading_unattended(channel: wschannel.sync.SyncWebSocketChannel) -> bool:
    """Whether the channel's fallback reader thread is reading for the application now (its
    stack, as the interpreter shows it)."""
    frame_: Any = sys._current_frames().get(channel._reader.ident or 0)
    while frame_ is not None:
        if frame_.f_code.co_name == "_read_unattended":
            return True
        frame_ = frame_.f_back
    return False


def test_sync_client_reads_while_the_application_does_not_and_gives_reading_back() -> None:
    """The application reads some messages, then stops asking for a while: the fallback
    reader reads meanwhile (the peer's ping is answered, and what it reads is buffered), then
    hands reading back when the application asks again. Nothing is lost or reordered."""
    answered = threading.Event()
    resume = threading.Event()
    handed_back = threading.Event()

    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(b"".join(frame(0x1, f"first {i}".encode()) for i in range(20)))
        sock.sendall(frame(0x9, b"ping while idle"))
        data = b""
        while len(data) < 2 + 4 + 15:  # the pong: masked, 15 bytes of payload
            chunk = sock.recv(100)
            if not chunk:
                return
            data += chunk
        key, masked = data[2:6], data[6:21]
        if data[0] != 0x8A or bytes(b ^ key[i % 4] for i, b in enumerate(masked)) != (
            b"ping while idle"
        ):
            return  # not the pong: the test fails waiting for it
        sock.sendall(b"".join(frame(0x1, f"idle {i}".encode()) for i in range(20)))
        answered.set()
        assert resume.wait(TIMEOUT)
        sock.sendall(b"".join(frame(0x1, f"then {i}".encode()) for i in range(20)))
        assert handed_back.wait(TIMEOUT)
        sock.sendall(frame(0x1, b"last"))
        drain(sock)

    with raw_server(handler) as server:
        channel = wschannel.sync.connect(
            server.url, ping_interval=None, close_timeout=SHORT, max_queue=None
        )
        stream = channel._stream

        def watch() -> None:
            # The application asks for a message the peer has not sent, perhaps while the
            # fallback reader sits in a read: the peer sends then. When the application asks
            # for the one after those, the reader must have handed reading back (until then
            # the peer sends nothing more, and the test fails waiting for "last").
            wait_until_sync(lambda: stream._gets == 40 and stream._waiting, what="it asks")
            resume.set()
            wait_until_sync(
                lambda: stream._gets == 60 and stream._waiting and not _reading_unattended(channel),
                what="the fallback reader handed reading back",
            )
            handed_back.set()

        watcher = threading.Thread(target=watch, daemon=True)
        with channel:
            assert [channel.receive(TIMEOUT) for _ in range(5)] == [f"first {i}" for i in range(5)]
            assert answered.wait(TIMEOUT), "the ping was not answered while nobody read"
            wait_until_sync(
                lambda: len(stream._buffer) >= 35,
                what="the fallback reader buffered what came meanwhile",
            )
            watcher.start()
            received = [channel.receive(TIMEOUT) for _ in range(56)]
        watcher.join(TIMEOUT)
        assert received == (
            [f"first {i}" for i in range(5, 20)]
            + [f"idle {i}" for i in range(20)]
            + [f"then {i}" for i in range(20)]
            + ["last"]
        )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x1, b"\xff\xfe"), status.INVALID_FRAME_PAYLOAD_DATA),
        (frame(0x1, b"masked", mask=True), status.PROTOCOL_ERROR),
        (frame(0x3), status.PROTOCOL_ERROR),
    ],
    ids=["invalid-utf8", "masked-server-frame", "reserved-opcode"],
)
def test_sync_client_fails_the_connection_when_the_server_misbehaves(
    data: bytes, code: int
) -> None:
    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(data)
        drain(sock)

    with raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url, close_timeout=SHORT)
        assert list(channel.stream) == []
        assert channel.close_code == code
        channel.wait_closed(TIMEOUT)


def test_sync_client_fails_with_1009_for_a_message_over_its_max_size(server_url: str) -> None:
    with wschannel.sync.connect(server_url, max_message_size=1000) as channel:
        channel.sink.add("x" * 1000)
        assert channel.receive(TIMEOUT) == "x" * 1000
        channel.sink.add("x" * 1001)
        assert list(channel.stream) == []
        assert channel.close_code == status.MESSAGE_TOO_BIG


def test_sync_client_message_over_the_servers_max_size_closes_with_1009() -> None:
    with (
        sync_server(echo, max_message_size=1000) as server,
        wschannel.sync.connect(url_of(server)) as channel,
    ):
        channel.sink.add(b"x" * 1001)
        assert list(channel.stream) == []
        assert channel.close_code == status.MESSAGE_TOO_BIG


@pytest.mark.parametrize("compression", [True, False])
def test_sync_client_offers_compression_only_when_asked(compression: bool) -> None:
    offers: list[str | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        assert channel.request is not None
        offers.append(channel.request.header("sec-websocket-extensions"))
        echo(channel)

    with sync_server(handler) as server:
        assert echo_of(url_of(server), "zip " * 1000, compression=compression) == "zip " * 1000
    assert (offers[0] is not None and "permessage-deflate" in offers[0]) is compression


@pytest.mark.parametrize(("client", "server"), [(True, False), (False, True), (True, True)])
def test_sync_client_and_server_talk_whichever_side_compresses(client: bool, server: bool) -> None:
    with sync_server(echo, compression=server) as running:
        message = "plain " * 10_000
        assert echo_of(url_of(running), message, compression=client) == message


# Keepalive.


def test_sync_client_keepalive_keeps_a_responsive_connection_open(server_url: str) -> None:
    interval = SHORT / 2  # a pong may take this long: a loaded machine needs the slack
    with wschannel.sync.connect(server_url, ping_interval=interval) as channel:
        time.sleep(interval * 4)  # several intervals pass (time is the point)
        channel.sink.add("alive")
        assert channel.receive(TIMEOUT) == "alive"
        assert channel.close_code is None


def test_sync_client_keepalive_closes_with_1001_when_no_pong_comes() -> None:
    with raw_server(upgrade_then_drain) as server:
        start = time.monotonic()
        channel = wschannel.sync.connect(server.url, ping_interval=SHORT, close_timeout=SHORT)
        assert list(channel.stream) == []
        assert SHORT * 1.8 <= time.monotonic() - start < TIMEOUT
        assert (channel.close_code, channel.close_reason) == (status.GOING_AWAY, "")
        channel.wait_closed(TIMEOUT)
        channel.sink.add("dropped")


def test_sync_server_keepalive_closes_with_1001_when_the_client_never_answers() -> None:
    codes: list[int | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        for _ in channel.stream:
            pass
        codes.append(channel.close_code)

    with sync_server(handler, ping_interval=SHORT, close_timeout=SHORT) as server:
        sock = open_raw_websocket(server.port)
        with sock:
            drain(sock)  # pings, then the close frame, then EOF
    assert codes == [status.GOING_AWAY]


# Threads and flow control.


def test_sync_client_sink_is_safe_to_use_from_many_threads_at_once() -> None:
    threads, per_thread = 8, 200
    received: list[Message] = []
    finished = threading.Event()

    def collect(channel: SyncWebSocketChannel) -> None:
        for message in channel.stream:
            received.append(message)
            if len(received) == threads * per_thread:
                finished.set()

    def send(channel: SyncWebSocketChannel, thread: int) -> None:
        for i in range(per_thread):
            payload = f"{thread}:{i}:" + "abc" * (i * 37 % 3000)
            channel.sink.add(payload if i % 2 else payload.encode())

    with (  # compression on: frames share one deflate context
        sync_server(collect) as server,
        wschannel.sync.connect(url_of(server)) as channel,
    ):
        senders = [
            threading.Thread(target=send, args=(channel, thread)) for thread in range(threads)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(TIMEOUT)
        assert finished.wait(TIMEOUT)
    by_thread: dict[int, list[int]] = {}
    for message in received:
        text = message if isinstance(message, str) else message.decode()
        thread, i, padding = text.split(":")
        assert padding == "abc" * (int(i) * 37 % 3000)
        assert isinstance(message, str) is (int(i) % 2 == 1)
        by_thread.setdefault(int(thread), []).append(int(i))
    assert by_thread == {thread: list(range(per_thread)) for thread in range(threads)}


async def _slow_async_echo(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        await asyncio.sleep(0.002)  # slow on purpose: the server's reading falls behind
        channel.sink.add(message)
        await channel.sink.flush()


def _slow_sync_echo(channel: SyncWebSocketChannel) -> None:
    for message in channel.stream:
        time.sleep(0.002)  # slow on purpose: the server's reading falls behind
        channel.sink.add(message)


@pytest.mark.parametrize("side", ["sync server", "asyncio server"])
def test_sync_client_pipelines_64_messages_of_1_mib_when_both_directions_are_full(
    side: str,
) -> None:
    """The case that deadlocks ``websockets.sync``: the client sends faster than a server
    that applies backpressure reads, while that server's echoes fill the other direction.
    A reader that needed the lock a blocked sender holds would stop reading for good."""
    count, size = 64, 1 << 20
    messages = [bytes([i]) * (size - 1) + os.urandom(1) for i in range(count)]
    digests = [hashlib.sha256(message).digest() for message in messages]
    received: list[bytes] = []
    options: dict[str, Any] = {"compression": False, "max_queue": 1}

    def exchange(url: str) -> float:
        start = time.monotonic()
        with wschannel.sync.connect(url, close_timeout=SHORT, **options) as channel:

            def send() -> None:
                for message in messages:
                    channel.sink.add(message)

            def receive() -> None:
                for _ in range(count):
                    message = channel.receive(TIMEOUT * 4)
                    assert isinstance(message, bytes)
                    received.append(hashlib.sha256(message).digest())

            sender = threading.Thread(target=send, daemon=True)
            receiver = threading.Thread(target=receive, daemon=True)
            sender.start()
            receiver.start()
            sender.join(TIMEOUT * 6)
            receiver.join(TIMEOUT * 6)
            stuck = sender.is_alive() or receiver.is_alive()
            elapsed = time.monotonic() - start
        assert not stuck, f"deadlocked: {len(received)} of {count} echoes after {elapsed:.1f}s"
        return elapsed

    if side == "sync server":
        with sync_server(_slow_sync_echo, **options) as server:
            elapsed = exchange(url_of(server))
    else:
        with asyncio_server(_slow_async_echo, **options) as running:
            elapsed = exchange(running.url)
    assert received == digests
    print(f"{count} x 1 MiB echoed through a slow {side} in {elapsed:.2f}s")


def _send_until_stuck(channel: SyncWebSocketChannel) -> threading.Thread:
    """Start a thread adding 1 MiB messages until ``add`` raises; return once it is stuck."""

    def send() -> None:
        chunk = b"x" * (1 << 20)
        try:
            while not channel.sink.done.done():  # adding after a peer close is a no-op
                channel.sink.add(chunk)
        except StateError:  # the test closed the channel
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wait_until_sync(lambda: send_is_blocked(channel), what="the sender is stuck")
    return sender


def test_sync_client_reader_keeps_receiving_while_its_sends_are_blocked() -> None:
    """The server never reads: the client's sends block on a full socket, and the pongs its
    reader owes cannot be written. The reader must still read and deliver messages."""
    send_now, finished = threading.Event(), threading.Event()

    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        assert send_now.wait(TIMEOUT)
        sock.sendall(frame(0x9, b"ping") * 100 + frame(0x1, b"still reading"))
        finished.wait(TIMEOUT)  # never reads; wait for the test to end

    with raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url, close_timeout=SHORT, compression=False)
        sender = _send_until_stuck(channel)
        send_now.set()
        assert channel.receive(TIMEOUT) == "still reading"
        finished.set()
        channel.close()
        sender.join(TIMEOUT)
        assert not sender.is_alive()


@pytest.mark.parametrize("how", ["keepalive", "close"])
def test_sync_client_timers_fire_while_its_sends_are_stuck(how: str) -> None:
    """A peer that neither reads nor writes: the sender is stuck, and so is any write, but
    the keepalive and the close timeout still end the connection in time."""

    release = threading.Event()

    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        release.wait(TIMEOUT)  # neither reads nor writes

    with raw_server(handler) as server:
        interval = SHORT if how == "keepalive" else None
        channel = wschannel.sync.connect(
            server.url, ping_interval=interval, close_timeout=SHORT, compression=False
        )
        sender = _send_until_stuck(channel)
        start = time.monotonic()
        if how == "keepalive":
            channel.wait_closed(TIMEOUT)
            assert channel.close_code == status.GOING_AWAY
        else:
            channel.close()
            assert channel.close_code == status.ABNORMAL_CLOSURE
        assert time.monotonic() - start < TIMEOUT
        sender.join(TIMEOUT)
        assert not sender.is_alive()
        release.set()


def test_sync_client_pauses_reading_when_its_queue_is_full_and_loses_nothing() -> None:
    count = 200

    def flood(channel: SyncWebSocketChannel) -> None:
        for i in range(count):
            channel.sink.add(f"{i:04d}" + "-" * 10_000)
        channel.sink.close(1000)

    # Uncompressed, so the 2 MB cannot arrive in one read: backpressure acts between reads
    # (a read's messages are all queued), and compressed, all 200 fit in a single read.
    with (
        sync_server(flood) as server,
        wschannel.sync.connect(url_of(server), max_queue=2, compression=False) as channel,
    ):
        wait_until_sync(lambda: channel.stream._reading_paused, what="reading has paused")
        assert len(channel.stream._buffer) < count
        received = [message[:4] for message in channel.stream]
    assert received == [f"{i:04d}" for i in range(count)]


# The server, against the asyncio client.


async def _async_echo_of(url: str, *messages: Message, **options: Any) -> list[Message]:
    async with IOWebSocketChannel.connect(url, **options) as channel:
        subscription = aiter(channel.stream)
        received = []
        for message in messages:
            channel.sink.add(message)
            received.append(await asyncio.wait_for(anext(subscription), TIMEOUT))
        return received


def test_sync_server_echoes_every_message_kind_to_the_asyncio_client() -> None:
    messages: list[Message] = ["hello", b"\x00\xff", "", b"", "🎨⛳🌈", os.urandom(1_000_000)]
    with sync_server(echo) as server:
        assert asyncio.run(_async_echo_of(url_of(server), *messages)) == messages
        received = asyncio.run(_async_echo_of(url_of(server), "x" * 50_000, compression=False))
        assert received == ["x" * 50_000]


@pytest.mark.parametrize(
    ("raises", "code"),
    [(False, status.NORMAL_CLOSURE), (True, status.INTERNAL_SERVER_ERROR)],
)
def test_sync_server_closes_when_the_handler_returns(
    raises: bool, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(channel: SyncWebSocketChannel) -> None:
        channel.sink.add("hi")
        if raises:
            raise RuntimeError("boom")

    async def client(url: str) -> tuple[list[Message], int | None]:
        channel = await IOWebSocketChannel.connect(url)
        messages = [message async for message in channel.stream]
        return messages, channel.close_code

    with sync_server(handler) as server:
        assert asyncio.run(client(url_of(server))) == (["hi"], code)
    assert ("Error in a WebSocket connection handler" in caplog.text) is raises


def test_sync_server_reports_the_asyncio_clients_close_code_and_reason() -> None:
    seen: list[tuple[int | None, str | None]] = []
    closed = threading.Event()

    def handler(channel: SyncWebSocketChannel) -> None:
        assert list(channel.stream) == ["last words"]
        seen.append((channel.close_code, channel.close_reason))
        closed.set()

    async def client(url: str) -> None:
        channel = await IOWebSocketChannel.connect(url)
        channel.sink.add("last words")
        await asyncio.wait_for(channel.sink.close(4321, "over"), TIMEOUT)

    with sync_server(handler) as server:
        asyncio.run(client(url_of(server)))
        assert closed.wait(TIMEOUT)
    assert seen == [(4321, "over")]


def test_sync_server_shutdown_closes_connections_with_1001() -> None:
    started = threading.Event()

    def handler(channel: SyncWebSocketChannel) -> None:
        started.set()
        for _ in channel.stream:
            pass

    async def client(url: str, server: wschannel.sync.Server) -> int | None:
        channel = await IOWebSocketChannel.connect(url)
        await asyncio.to_thread(started.wait, TIMEOUT)
        shutdown = asyncio.create_task(asyncio.to_thread(server.shutdown))
        assert [message async for message in channel.stream] == []
        await asyncio.wait_for(shutdown, TIMEOUT)
        return channel.close_code

    server = wschannel.sync.serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    assert asyncio.run(client(url_of(server), server)) == status.GOING_AWAY
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert server.connections == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), TIMEOUT)


def test_sync_server_is_a_context_manager_and_serves_in_any_thread() -> None:
    with wschannel.sync.serve(echo, "127.0.0.1", 0) as server:
        assert server.port > 0
        assert repr(server).startswith("<Server ")
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        with wschannel.sync.connect(url_of(server)) as channel:
            channel.sink.add("served")
            assert channel.receive(TIMEOUT) == "served"
            assert server.connections[0].request is not None
        wait_until_sync(lambda: not server.connections, what="the connection is gone")
        assert server.connections == []
    thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_sync_server_negotiates_the_subprotocol_in_the_clients_order() -> None:
    chosen: list[str | None] = []

    def handler(channel: SyncWebSocketChannel) -> None:
        chosen.append(channel.protocol)

    async def client(url: str, protocols: list[str]) -> str | None:
        async with IOWebSocketChannel.connect(url, protocols=protocols) as channel:
            return channel.protocol

    with sync_server(handler, protocols=["three", "two", "x"]) as server:
        assert asyncio.run(client(url_of(server), ["one", "two", "three"])) == "two"
        assert asyncio.run(client(url_of(server), ["one"])) is None
    assert chosen == ["two", None]


_UPGRADE = (
    "Host: 127.0.0.1\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
)


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        (f"DELETE / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{_UPGRADE}\r\n", 404),
        (f"GET / HTTP/1.1\r\nUpgrade: websocket\r\n{_UPGRADE}\r\n", 404),
        (f"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: fblthp\r\n{_UPGRADE}\r\n", 404),
        (
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nHost: h\r\n"
            "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nHost: h\r\n"
            "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 15\r\n\r\n",
            426,
        ),
        (
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nHost: h\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        (
            f"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{_UPGRADE}"
            "Origin: https://dartlang.org\r\n\r\n",
            403,
        ),
        (
            f"GET / HTTP/1.1\r\nConnection: Other-Token, Upgrade\r\nUpgrade: websocket\r\n"
            f"{_UPGRADE}Origin: https://GOOGLE.com\r\n\r\n",
            101,
        ),
        ("GET / HTTP/1.1\r\n" + "X: y\r\n" * 200 + "\r\n", 431),
        ("NOT HTTP\r\n\r\n", 400),
    ],
    ids=[
        "delete-404",
        "no-connection-404",
        "wrong-upgrade-404",
        "no-version-400",
        "version-15-426",
        "no-key-400",
        "origin-403",
        "allowed-101",
        "too-many-headers-431",
        "garbage-400",
    ],
)
def test_sync_server_answers_upgrades_with_shelf_web_socket_status_codes(
    request_text: str, expected: int
) -> None:
    origins = ["https://pub.dartlang.org", "https://GoOgLe.CoM"]
    with sync_server(echo, allowed_origins=origins) as server:
        assert http_status(server.port, request_text) == expected


def test_sync_server_process_request_can_answer_instead() -> None:
    def process_request(request: wschannel._wschannel.Request) -> Any:
        if request.path == "/health":
            return 200, [("Content-Type", "text/plain")], b"OK"
        if request.path == "/broken":
            raise RuntimeError("bug")
        return None

    with sync_server(echo, process_request=process_request) as server:
        assert http_status(server.port, f"GET /health HTTP/1.1\r\n{_UPGRADE}\r\n") == 200
        assert http_status(server.port, f"GET /broken HTTP/1.1\r\n{_UPGRADE}\r\n") == 500
        assert echo_of(url_of(server), "upgraded") == "upgraded"
        with pytest.raises(WebSocketChannelException) as info:
            wschannel.sync.connect(url_of(server) + "/health")
        assert isinstance(info.value.inner, HandshakeError)
        assert info.value.inner.status == 200


def test_sync_server_drops_a_client_that_sends_no_request_within_open_timeout() -> None:
    with (
        sync_server(echo, open_timeout=SHORT) as server,
        socket.create_connection(("127.0.0.1", server.port), TIMEOUT) as sock,
    ):
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert SHORT * 0.9 <= time.monotonic() - start < TIMEOUT


def test_sync_server_fails_the_connection_when_the_client_sends_an_unmasked_frame() -> None:
    with sync_server(echo) as server:
        sock = open_raw_websocket(server.port)
        with sock:
            sock.sendall(frame(0x1, b"unmasked"))
            data = b""
            while chunk := sock.recv(100):
                data += chunk
    assert data[0] == 0x88
    assert data[2:4] == status.PROTOCOL_ERROR.to_bytes(2, "big")


def test_sync_server_message_over_its_max_size_closes_the_asyncio_client_with_1009() -> None:
    async def client(url: str) -> int | None:
        channel = await IOWebSocketChannel.connect(url)
        channel.sink.add("x" * 2000)
        assert [message async for message in channel.stream] == []
        return channel.close_code

    with sync_server(echo, max_message_size=1000) as server:
        assert asyncio.run(client(url_of(server))) == status.MESSAGE_TOO_BIG


def test_sync_server_keeps_a_responsive_asyncio_client_with_keepalive_open() -> None:
    async def client(url: str) -> list[Message]:
        async with IOWebSocketChannel.connect(url, ping_interval=SHORT / 2) as channel:
            await asyncio.sleep(SHORT * 2)  # several intervals pass (time is the point)
            channel.sink.add("alive")
            return [await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT)]

    with sync_server(echo, ping_interval=SHORT / 2) as server:
        assert asyncio.run(client(url_of(server))) == ["alive"]


# TLS.


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    return context


def test_sync_client_and_server_talk_over_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with sync_server(echo, ssl=server_context) as server:
        url = url_of(server, "wss")
        assert echo_of(url, "secret", ssl=client_context) == "secret"
        big = os.urandom(1_000_000)
        assert echo_of(url, big, ssl=client_context) == big
        assert echo_of(url, b"unverified", ssl=False) == b"unverified"
        with pytest.raises(WebSocketChannelException) as info:
            wschannel.sync.connect(url)  # the default CA store does not trust it
        assert isinstance(info.value.inner, ssl.SSLError)


def test_sync_client_talks_to_the_asyncio_server_over_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with asyncio_server(async_echo, ssl=server_context) as running:
        url = f"wss://127.0.0.1:{running.server.port}"
        assert echo_of(url, "🔒", ssl=client_context) == "🔒"


def test_sync_server_talks_to_the_asyncio_client_over_tls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with sync_server(echo, ssl=server_context) as server:
        url = url_of(server, "wss")
        assert asyncio.run(_async_echo_of(url, "a", b"b", ssl=client_context)) == ["a", b"b"]


def test_sync_server_drops_a_client_that_fails_the_tls_handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with sync_server(echo, ssl=server_context) as server:
        with pytest.raises(WebSocketChannelException):
            wschannel.sync.connect(url_of(server))  # plain HTTP to a TLS port
        assert echo_of(url_of(server, "wss"), "after", ssl=client_context) == "after"


# Answers to the messages before a protocol failure go out before the close frame, however
# the threads are scheduled (Autobahn 3.2-3.4, 4.1.3-4.2.5 and 5.15 in strict mode).

RSV3_TEXT = bytes([0x80 | 0x30 | 0x1, 0x80 | 1]) + b"\0\0\0\0" + b"y"
"""A masked text frame with RSV2 and RSV3 set, which fails the connection with 1002."""


def frames_until_close(sock: socket.socket) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each frame up to the close frame, unmasked if masked."""
    frames: list[tuple[int, bytes]] = []
    data = b""
    while not frames or frames[-1][0] != 0x8:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before the close frame, after {frames}"
        data += chunk
        while len(data) >= 2:
            masked, length = data[1] & 0x80, data[1] & 0x7F
            start = 6 if masked else 2
            if length > 125 or len(data) < start + length:
                break
            payload = data[start : start + length]
            if masked:
                payload = bytes(b ^ data[2 + i % 4] for i, b in enumerate(payload))
            frames.append((data[0] & 0x0F, payload))
            data = data[start + length :]
    return frames


def failure_frames(frames: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    return [(opcode, payload[:2]) for opcode, payload in frames]


def test_sync_server_answers_the_message_it_holds_before_failing_the_connection() -> None:
    """The handler took the message (the buffer is empty) and is still answering it when
    the failure arrives: the close frame waits for it to ask for the next one."""
    taken = threading.Event()

    def slow_echo(channel: SyncWebSocketChannel) -> None:
        for message in channel.stream:
            taken.set()
            time.sleep(SHORT)  # the failure arrives meanwhile
            channel.sink.add(message)

    with sync_server(slow_echo) as server, open_raw_websocket(server.port) as sock:
        sock.sendall(frame(0x1, b"x", mask=True))
        assert taken.wait(TIMEOUT)
        sock.sendall(RSV3_TEXT)
        frames = frames_until_close(sock)
    assert failure_frames(frames) == [(0x1, b"x"), (0x8, b"\x03\xea")]


def test_sync_server_answers_messages_that_came_before_its_handler_consumed() -> None:
    """The message and the failure arrive before the handler's thread iterates the stream:
    the close frame waits for the handler to answer the message."""

    def late_echo(channel: SyncWebSocketChannel) -> None:
        time.sleep(SHORT)  # the reader has handled both frames by now
        for message in channel.stream:
            channel.sink.add(message)

    with sync_server(late_echo) as server, open_raw_websocket(server.port) as sock:
        sock.sendall(frame(0x1, b"x", mask=True) + RSV3_TEXT)
        frames = frames_until_close(sock)
    assert failure_frames(frames) == [(0x1, b"x"), (0x8, b"\x03\xea")]


def test_sync_client_answers_messages_that_came_with_the_101_before_failing() -> None:
    """Frames right behind the 101 reach the reader before connect() returns: the close
    frame waits for the application to answer them."""
    seen: list[list[tuple[int, bytes]]] = []

    def handler(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(frame(0x1, b"x") + bytes([0x80 | 0x30 | 0x1, 1]) + b"y")
        seen.append(frames_until_close(sock))

    with raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url, compression=False)
        time.sleep(SHORT)  # the reader has handled both frames by now
        for message in channel.stream:
            channel.sink.add(message)
        channel.wait_closed(TIMEOUT)
    assert channel.close_code == status.PROTOCOL_ERROR
    assert [failure_frames(frames) for frames in seen] == [[(0x1, b"x"), (0x8, b"\x03\xea")]]


def test_sync_server_answers_every_ping_while_a_write_that_is_not_stuck_is_in_progress() -> None:
    """Pongs are coalesced only while writes really wait (Autobahn 2.10 and 2.11 failed at
    random: a ping read while the writer thread was writing the previous pong, which the
    kernel took at once, had its pong dropped for the next one's)."""
    channels: list[SyncWebSocketChannel] = []
    opened = threading.Event()

    def handler(channel: SyncWebSocketChannel) -> None:
        channels.append(channel)
        opened.set()
        echo(channel)

    with sync_server(handler) as server, open_raw_websocket(server.port) as sock:
        assert opened.wait(TIMEOUT)
        channel = channels[0]
        with channel._write_lock:  # as while a thread writes a frame the kernel takes at once
            for index in range(3):
                sock.sendall(frame(0x9, b"%d" % index, mask=True))
            wait_until_sync(lambda: bytes_read(channel) >= 3 * 7, what="the pings were read")
        sock.sendall(frame(0x8, mask=True))
        frames = frames_until_close(sock)
    assert frames[:-1] == [(0xA, b"0"), (0xA, b"1"), (0xA, b"2")]


def bytes_read(channel: SyncWebSocketChannel) -> int:
    with channel._lock:
        return channel._conn.counters[2]
