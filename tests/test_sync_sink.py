"""The blocking sink keeps the seed's whole sink contract (issue 11): ``add_error``,
``add_stream`` and the channel's ``pipe``, with the same rules as the asyncio sinks, over real
sockets on 127.0.0.1; and the close reply waits for the application to take the messages
before the peer's close, as on asyncio."""

from __future__ import annotations

import socket
import threading

import pytest
from conftest import TIMEOUT
from sync_helpers import sync_server, url_of

import wschannel.sync
from wschannel import StateError
from wschannel.sync import SyncWebSocketChannel

MASK = b"\x01\x02\x03\x04"


def masked(opcode: int, payload: bytes) -> bytes:
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + body


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked frame from the server."""
    head = read_exactly(sock, 2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(read_exactly(sock, 2), "big")
    return head[0] & 0x0F, read_exactly(sock, length)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def upgrade(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk
        response += chunk
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def echo(channel: SyncWebSocketChannel) -> None:
    for message in channel.stream:
        channel.sink.add(message)


def test_answers_to_messages_before_the_close_go_out_before_the_echo() -> None:
    """Before the session core, the reader thread queued the echo at once: the answers the
    handler sent after it were dropped."""
    with sync_server(echo) as server:
        sock = upgrade(server.port)
        with sock:
            sock.sendall(
                masked(0x1, b"one")
                + masked(0x1, b"two")
                + masked(0x1, b"three")
                + masked(0x8, (4000).to_bytes(2, "big") + b"bye")
            )
            frames = [read_frame(sock) for _ in range(4)]
    assert frames == [(1, b"one"), (1, b"two"), (1, b"three"), (8, b"\x0f\xa0bye")]


def test_add_error_closes_without_a_code_and_fails_done() -> None:
    error = ValueError("stop")
    seen: list[tuple[int, bytes]] = []
    with sync_server(lambda channel: channel.sink.add_error(error)) as server:
        sock = upgrade(server.port)
        with sock:
            seen.append(read_frame(sock))
            sock.sendall(masked(0x8, b""))
    assert seen == [(8, b"")]


def test_add_error_rules_on_a_client() -> None:
    with sync_server(echo) as server:
        channel = wschannel.sync.connect(url_of(server))
        error = RuntimeError("broken")
        channel.sink.add_error(error)
        channel.sink.add("dropped")  # dropped silently, as after the peer's close
        with pytest.raises(StateError, match="after closing"):
            channel.sink.add_error(error)
        assert channel.sink.close() is channel.sink.done
        assert channel.sink.done.exception(TIMEOUT) is error
        assert channel.close_code == 1005


def test_add_stream_sends_in_order_and_refuses_everything_else_meanwhile() -> None:
    with sync_server(echo) as server, wschannel.sync.connect(url_of(server)) as channel:
        release = threading.Event()
        refusals: list[str] = []

        def messages() -> object:
            yield "one"
            yield b"two"
            for call in (
                lambda: channel.sink.add("x"),
                lambda: channel.sink.close(),
                lambda: channel.sink.add_stream([]),
            ):
                try:
                    call()
                except StateError as exc:
                    refusals.append(str(exc))
            release.set()
            yield "three"

        channel.sink.add_stream(messages())  # type: ignore[arg-type]
        assert release.is_set()
        channel.sink.add("after")
        assert [channel.receive(TIMEOUT) for _ in range(4)] == ["one", b"two", "three", "after"]
    assert refusals == [
        "Cannot add event while adding stream.",
        "Cannot close sink while adding stream.",
        "Cannot add stream while adding stream.",
    ]
    with pytest.raises(StateError, match="Cannot add stream after closing"):
        channel.sink.add_stream(["late"])


def test_pipe_connects_two_channels_until_both_end() -> None:
    def greet_then_close(channel: SyncWebSocketChannel) -> None:
        channel.sink.add("from second")
        for message in channel.stream:
            if message == "from second":  # it went round: second -> first -> back
                channel.sink.close(4001, "end")
                return

    with sync_server(echo) as first_server, sync_server(greet_then_close) as second_server:
        first = wschannel.sync.connect(url_of(first_server))
        second = wschannel.sync.connect(url_of(second_server))
        # second's greeting: second.stream -> first.sink -> first's echo -> first.stream ->
        # second.sink -> second's server, which closes; then each sink closes in turn.
        piping = first.pipe(second)
        assert piping.result(TIMEOUT) is None
        assert (second.close_code, second.close_reason) == (4001, "end")
        assert first.sink.done.result(TIMEOUT) is None
        assert first.close_code == 1005  # first's sink closed without a code, echoed


def test_a_loop_left_with_break_does_not_hold_the_close_reply() -> None:
    """The close reply waits for a message the application holds, but a ``for`` loop left
    with ``break`` holds none: the peer's close is answered at once, not at close_timeout
    (with the wait for a held message alone, this took the whole 30 s)."""

    def greet_then_close(channel: SyncWebSocketChannel) -> None:
        channel.sink.add("one")
        for message in channel.stream:
            if message == "bye":
                channel.sink.close(4000, "done")
                return

    with sync_server(greet_then_close, close_timeout=30) as server:
        channel = wschannel.sync.connect(url_of(server), close_timeout=30)
        for message in channel.stream:
            assert message == "one"
            break
        channel.sink.add("bye")
        assert channel.sink.done.result(TIMEOUT) is None
        assert (channel.close_code, channel.close_reason) == (4000, "done")
