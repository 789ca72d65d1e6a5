"""Keepalive as the application sees it: ``ping()`` returning the round-trip time,
``latency``, a ``pong_timeout`` apart from ``ping_interval``, and the defaults; asyncio and
blocking, over real sockets on 127.0.0.1 (wschannel peers, and raw peers that answer pings
as told or not at all)."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Awaitable, Callable

import pytest
from conftest import (
    SHORT,
    TIMEOUT,
    RawHandler,
    RawServer,
    accept_upgrade,
    close_payload,
    frame,
    next_message,
    unmask,
    wait,
    wait_until,
    wait_until_sync,
)
from sync_helpers import accept_upgrade as sync_accept_upgrade
from sync_helpers import raw_server as sync_raw_server
from sync_helpers import sync_server

import wschannel
import wschannel.sync
from wschannel import StateError
from wschannel.defaults import DEFAULT_PING_INTERVAL
from wschannel.io import IOWebSocketChannel

StartRaw = Callable[[RawHandler], Awaitable[RawServer]]

PING, CLOSE = 0x89, 0x88


def pong_for(payload: bytes) -> bytes:
    return frame(0xA, payload)


# The defaults.


@pytest.mark.parametrize(
    "function",
    [
        IOWebSocketChannel.connect,
        wschannel.serve,
        wschannel.unix_serve,
        wschannel.sync.connect,
        wschannel.sync.serve,
        wschannel.sync.unix_serve,
    ],
)
def test_keepalive_is_on_by_default_everywhere(function: Callable[..., object]) -> None:
    parameters = inspect.signature(function).parameters
    assert parameters["ping_interval"].default == DEFAULT_PING_INTERVAL == 20.0
    assert parameters["pong_timeout"].default is None  # as long as the interval: 20 s too


# asyncio: ping() and latency.


async def test_client_ping_returns_the_round_trip_time(echo_url: str) -> None:
    channel = IOWebSocketChannel.connect(echo_url)  # ping() waits for the connection to open
    assert channel.latency is None
    rtt = await asyncio.wait_for(channel.ping(), TIMEOUT)
    assert 0 < rtt < TIMEOUT
    assert channel.latency == rtt
    await channel.sink.close()


async def test_pings_sent_at_once_all_get_their_answer(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    rtts = await asyncio.wait_for(asyncio.gather(*(channel.ping() for _ in range(5))), TIMEOUT)
    assert all(0 < rtt < TIMEOUT for rtt in rtts)
    assert channel.latency == rtts[-1]
    await channel.sink.close()


async def test_a_pong_answers_its_ping_and_those_before_it(raw_server: StartRaw) -> None:
    # RFC 6455 §5.5.3: a peer may answer only the latest of several pings.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        payloads = [(await unmask(reader))[1] for _ in range(3)]
        writer.write(pong_for(payloads[-1]))
        assert await unmask(reader) == (CLOSE, close_payload(1000))
        writer.write(frame(0x8, close_payload(1000)))

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    pings = [asyncio.ensure_future(channel.ping()) for _ in range(3)]
    rtts = await asyncio.wait_for(asyncio.gather(*pings), TIMEOUT)
    assert rtts[0] >= rtts[1] >= rtts[2] > 0  # each measured from its own send
    assert channel.latency == rtts[2]
    await wait(channel.sink.close(1000))


async def test_server_side_channel_pings_its_client(echo_url: str) -> None:
    measured: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(channel: IOWebSocketChannel) -> None:
        measured.set_result(await channel.ping())
        await channel.sink.close(1000)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        client = await IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        rtt = await asyncio.wait_for(measured, TIMEOUT)
        assert 0 < rtt < TIMEOUT
        await wait(client.sink.done)


async def test_latency_comes_from_keepalive_pings_too(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url, ping_interval=SHORT / 4)
    await wait_until(lambda: channel.latency is not None, what="a keepalive pong came")
    latency = channel.latency
    assert latency is not None and 0 < latency < TIMEOUT
    await channel.sink.close()


async def test_keepalive_keeps_no_timer_in_the_event_loop(echo_url: str) -> None:
    """Keepalive on at both ends (the default), and asyncio's own timer heap holds nothing
    of theirs: wschannel's timer thread keeps their deadlines. While asyncio's heap holds a
    timer, every turn of its loop pays for it: about 5,000 interpreter instructions per
    message in a request/response echo, a fifth of the server's cost (callgrind)."""
    loop = asyncio.get_running_loop()
    channel = await IOWebSocketChannel.connect(echo_url)
    messages = aiter(channel.stream)
    channel.sink.add("hello")
    assert await next_message(messages) == "hello"
    live = [handle for handle in loop._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]
    assert live == [], live
    # And keepalive still runs: a short interval's ping gets its pong.
    pinging = await IOWebSocketChannel.connect(echo_url, ping_interval=SHORT / 4)
    await wait_until(lambda: pinging.latency is not None, what="a keepalive pong came")
    await pinging.sink.close()
    await channel.sink.close()


async def test_ping_after_close_raises(echo_url: str) -> None:
    channel = await IOWebSocketChannel.connect(echo_url)
    await channel.sink.close(1000)
    with pytest.raises(StateError, match="Cannot ping"):
        await channel.ping()


async def test_ping_of_a_channel_that_could_not_open_raises_its_error(
    raw_server: StartRaw,
) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    server = await raw_server(refuse)
    channel = IOWebSocketChannel.connect(server.url)
    with pytest.raises(wschannel.InvalidStatus):
        await channel.ping()


async def test_ping_waiting_when_the_connection_ends_raises(raw_server: StartRaw) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        assert (await unmask(reader))[0] == PING
        writer.close()  # no pong, no close frame

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(server.url)
    with pytest.raises(StateError, match="before the ping's pong came"):
        await asyncio.wait_for(channel.ping(), TIMEOUT)
    assert channel.close_code == 1006


# pong_timeout apart from ping_interval.


async def test_client_closes_with_1001_after_pong_timeout_not_ping_interval(
    raw_server: StartRaw,
) -> None:
    interval, pong_timeout = SHORT, 4 * SHORT
    seen: dict[str, float] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept_upgrade(reader, writer)
        opcode, _ = await unmask(reader)
        assert opcode == PING  # not answered
        seen["ping"] = time.monotonic()
        opcode, payload = await asyncio.wait_for(unmask(reader), TIMEOUT)
        seen["close"] = time.monotonic()
        assert (opcode, payload) == (CLOSE, close_payload(1001))
        writer.write(frame(0x8, close_payload(1001)))

    server = await raw_server(handler)
    channel = await IOWebSocketChannel.connect(
        server.url, ping_interval=interval, pong_timeout=pong_timeout
    )
    await wait(channel.sink.done)
    assert channel.close_code == 1001
    # The close came after pong_timeout, well past another ping_interval.
    assert seen["close"] - seen["ping"] >= pong_timeout * 0.9


async def test_server_takes_pong_timeout(raw_server: StartRaw) -> None:
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(channel: IOWebSocketChannel) -> None:
        await channel.sink.done
        closed.set_result(channel.close_code)

    async with wschannel.serve(
        handler, "127.0.0.1", 0, ping_interval=SHORT, pong_timeout=2 * SHORT
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        first = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        assert first[0] == PING
        await reader.readexactly(first[1])
        started = time.monotonic()
        close = await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
        assert close == b"\x88\x02\x03\xe9"  # 1001
        assert time.monotonic() - started >= 2 * SHORT * 0.9
        writer.close()
        assert await asyncio.wait_for(closed, TIMEOUT) == 1001


# The blocking flavour.


def echo_sync(channel: wschannel.sync.SyncWebSocketChannel) -> None:
    for message in channel.stream:
        channel.sink.add(message)


def test_blocking_ping_returns_the_round_trip_time() -> None:
    with (
        sync_server(echo_sync) as server,
        wschannel.sync.connect(f"ws://127.0.0.1:{server.port}") as channel,
    ):
        assert channel.latency is None
        rtt = channel.ping(TIMEOUT)
        assert 0 < rtt < TIMEOUT
        assert channel.latency == rtt
        results: list[float] = []
        threads = [
            threading.Thread(target=lambda: results.append(channel.ping(TIMEOUT))) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        assert len(results) == 4 and all(0 < rtt < TIMEOUT for rtt in results)
    with pytest.raises(StateError, match="Cannot ping"):
        channel.ping()


def test_blocking_server_channel_pings_its_client() -> None:
    measured: list[float] = []

    def handler(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        measured.append(channel.ping(TIMEOUT))

    with (
        sync_server(handler) as server,
        wschannel.sync.connect(f"ws://127.0.0.1:{server.port}") as client,
    ):
        client.wait_closed(TIMEOUT)
    assert len(measured) == 1 and 0 < measured[0] < TIMEOUT


def test_blocking_latency_comes_from_keepalive_pings_too() -> None:
    with (
        sync_server(echo_sync) as server,
        wschannel.sync.connect(f"ws://127.0.0.1:{server.port}", ping_interval=SHORT / 4) as channel,
    ):
        wait_until_sync(lambda: channel.latency is not None, what="a keepalive pong came")
        latency = channel.latency
        assert latency is not None and 0 < latency < TIMEOUT


def test_blocking_ping_times_out_and_pong_timeout_closes_with_1001() -> None:
    interval, pong_timeout = SHORT, 4 * SHORT
    done = threading.Event()

    def handler(sock: socket.socket) -> None:
        sync_accept_upgrade(sock)
        done.wait(TIMEOUT)  # reads nothing, answers nothing

    with sync_raw_server(handler) as server:
        channel = wschannel.sync.connect(
            server.url, ping_interval=interval, pong_timeout=pong_timeout
        )
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="No pong"):
            channel.ping(SHORT / 2)
        wait_until_sync(lambda: channel.close_code is not None, what="keepalive closed")
        assert channel.close_code == 1001
        assert time.monotonic() - started >= (interval + pong_timeout) * 0.9
        done.set()
        channel.wait_closed(TIMEOUT)


def test_blocking_ping_waiting_when_the_connection_ends_raises() -> None:
    def handler(sock: socket.socket) -> None:
        sync_accept_upgrade(sock)
        sock.recv(64)  # the ping; then hang up without a pong or a close frame

    with sync_raw_server(handler) as server:
        channel = wschannel.sync.connect(server.url)
        with pytest.raises(StateError, match="before the ping's pong came"):
            channel.ping(TIMEOUT)
        assert channel.close_code == 1006


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ping_interval": -1.0}, "ping_interval must be a positive number"),
        ({"ping_interval": 0}, "ping_interval must be a positive number"),
        ({"pong_timeout": 0.0}, "pong_timeout must be a positive number"),
        ({"pong_timeout": float("nan")}, "pong_timeout must be a positive number"),
    ],
)
async def test_keepalive_settings_that_cannot_work_raise_at_the_call(
    options: dict[str, float], message: str
) -> None:
    # They used to fail inside the event loop once the connection opened: ready then hung.
    url = "ws://127.0.0.1:9"
    with pytest.raises(ValueError, match=message):
        IOWebSocketChannel.connect(url, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        wschannel.sync.connect(url, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        await wschannel.serve(lambda channel: None, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        wschannel.sync.serve(lambda channel: None, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
