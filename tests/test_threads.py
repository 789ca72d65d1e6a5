"""Threads: one blocking connection shared by many sending threads, many connections on many
threads, the engine's objects called from several threads at once, and (on free-threaded
CPython) the module running without the GIL.

Run as they are on CPython with the GIL and on free-threaded CPython 3.13 (``python3.13t``),
where the GIL is off unless ``PYTHON_GIL=1``; .ci/wheels.sh runs this file both ways there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import TIMEOUT, wait_until_sync
from sync_helpers import asyncio_server, sync_server, url_of

import wschannel.sync
from wschannel._wschannel import Connection, SocketIO
from wschannel.io import IOWebSocketChannel

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

SIZES = (0, 1, 125, 126, 1000, 9000, 40, 65536 + 7, 300)
"""Payload sizes, in turn: the frame-length boundaries, and bodies over the 8 KiB from which
a `bytes` body is queued by reference."""


def payload(thread: int, seq: int) -> str | bytes:
    """Message ``seq`` of sending thread ``thread``: it says whose it is and is checkable.
    Every third one is text, the others binary."""
    size = SIZES[(thread + seq) % len(SIZES)]
    head = f"{thread}:{seq}:"
    if seq % 3 == 0:
        return head + chr(ord("a") + (thread + seq) % 26) * size
    return head.encode() + (bytes([thread, seq % 256, seq >> 8 & 255]) * (size // 3 + 1))[:size]


def as_sent(message: str | bytes, seq: int) -> str | bytes | bytearray | memoryview:
    """Binary messages go out as ``bytes``, ``bytearray`` and ``memoryview`` in turn (the
    engine copies the mutable ones when the GIL is off)."""
    if isinstance(message, str):
        return message
    kind = seq % 3
    if kind == 1:
        return bytearray(message)
    if kind == 2:
        return memoryview(bytearray(message))
    return message


def owner_of(message: str | bytes) -> tuple[int, int]:
    """(thread, seq) of a message made by :func:`payload`."""
    text = message if isinstance(message, str) else message[:24].decode("latin-1")
    thread, seq, _ = text.split(":", 2)
    return int(thread), int(seq)


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``count`` threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            target(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    if errors:
        raise errors[0]


SENDERS = 8
PER_SENDER = 120


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
def test_sync_client_shared_by_many_sending_threads_delivers_each_message_once_in_order(
    compression: bool,
) -> None:
    """With permessage-deflate the frames must also leave in the order they were compressed
    in (one compression context for the connection), or the server fails the connection."""
    received: list[str | bytes] = []
    ended = threading.Event()

    def collect(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        received.extend(channel.stream)
        ended.set()

    with sync_server(collect, compression=compression) as server:
        with wschannel.sync.connect(url_of(server), compression=compression) as channel:

            def send(thread: int) -> None:
                for seq in range(PER_SENDER):
                    channel.sink.add(as_sent(payload(thread, seq), seq))

            run_threads(SENDERS, send)
            wait_until_sync(
                lambda: len(received) >= SENDERS * PER_SENDER, what="every message arrived"
            )
            channel.sink.close()
        assert ended.wait(TIMEOUT)
    assert channel.close_code == 1005
    assert len(received) == SENDERS * PER_SENDER
    next_seq = dict.fromkeys(range(SENDERS), 0)
    for message in received:
        thread, seq = owner_of(message)
        assert seq == next_seq[thread], f"thread {thread}: message {seq} out of order"
        assert message == payload(thread, seq), f"thread {thread}: message {seq} changed"
        next_seq[thread] += 1


@pytest.fixture(params=["asyncio server", "sync server"])
def echo_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "asyncio server":

        async def echo(channel: IOWebSocketChannel) -> None:
            async for message in channel.stream:
                channel.sink.add(message)

        with asyncio_server(echo) as running:
            yield running.url
    else:

        def sync_echo(channel: wschannel.sync.SyncWebSocketChannel) -> None:
            for message in channel.stream:
                channel.sink.add(message)

        with sync_server(sync_echo) as server:
            yield url_of(server)


def test_many_sync_clients_on_many_threads_get_their_own_echoes(echo_url: str) -> None:
    rounds = 60

    def converse(thread: int) -> None:
        with wschannel.sync.connect(echo_url) as channel:
            for seq in range(rounds):
                channel.sink.add(as_sent(payload(thread, seq), seq))
                assert channel.receive(TIMEOUT) == payload(thread, seq)
            channel.sink.close()

    run_threads(12, converse)


def test_engine_connection_called_from_many_threads_at_once_counts_every_frame() -> None:
    """Each call on an engine ``Connection`` is atomic, whichever threads make them (a
    metrics reader besides the senders here); a second thread waits for the first."""
    client = Connection(True, seed=7)
    frames: dict[int, list[bytes]] = {}
    done = threading.Event()
    seen: list[int] = []

    def read_counters() -> None:
        while not done.is_set():
            seen.append(client.counters[1])

    reader = threading.Thread(target=read_counters, daemon=True)
    reader.start()

    def send(thread: int) -> None:
        mine = frames.setdefault(thread, [])
        for seq in range(400):
            message = as_sent(payload(thread, seq), seq)
            if isinstance(message, str):
                mine.append(client.send_text(message))
            else:
                mine.append(client.send_binary(message))

    try:
        run_threads(SENDERS, send)
    finally:
        done.set()
        reader.join(TIMEOUT)
    assert client.counters[1] == SENDERS * 400
    assert seen == sorted(seen)  # the reader never saw a torn or going-back count
    server = Connection(False)
    for thread, sent in frames.items():
        messages = server.receive_data(b"".join(sent))
        assert messages == [payload(thread, seq) for seq in range(400)]


def test_socket_io_called_from_another_thread_raises_runtime_error_saying_what_to_do() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.setblocking(False)
        io = SocketIO(ours.fileno(), Connection(False), lambda: None)
        errors: list[BaseException] = []

        def call() -> None:
            try:
                io.send_text("from another thread")
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=call)
        thread.start()
        thread.join(TIMEOUT)
        assert len(errors) == 1
        assert isinstance(errors[0], RuntimeError)
        assert "call_soon_threadsafe" in str(errors[0])
        io.send_text("from its own thread")  # the owner still can
        assert peer.recv(100) == b"\x81\x13from its own thread"


@pytest.mark.skipif(not FREE_THREADED, reason="free-threaded CPython only")
def test_free_threaded_import_keeps_the_gil_off() -> None:
    """The engine declares it runs without the GIL: importing every module of the package
    does not turn the GIL back on (CPython would, with a RuntimeWarning, for a module that
    does not declare it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = (
        "import sys, wschannel, wschannel.sync, wschannel.io, wschannel.server, "
        "wschannel.bytestream, wschannel._wschannel; "
        "assert not sys._is_gil_enabled(), 'the GIL is on'"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
