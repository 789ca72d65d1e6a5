"""``wschannel.connect`` / ``WebSocketChannel.connect`` under trio (and anyio on trio): the
platform's connect picks :mod:`wschannel.trio`, with every option; and ``ping(payload)`` with
``latency`` on the trio/anyio channel (and the payload on the asyncio and blocking ones).
Over loopback, against wschannel's own trio server and raw servers.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from conftest import TIMEOUT
from sync_helpers import accept_upgrade, frame, raw_server

import wschannel
import wschannel.anyio
import wschannel.sync
import wschannel.trio
from wschannel import StateError, WebSocketChannel
from wschannel._platform import under_trio
from wschannel.bytestream import ByteStreamWebSocketChannel
from wschannel.channel import ConnectOptions
from wschannel.io import IOWebSocketChannel

Body = Callable[[], Coroutine[Any, Any, None]]


def run_trio(body: Body) -> None:
    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            await body()

    trio.run(main)


async def echo(channel: Any) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


# The platform's connect under trio.


@pytest.mark.parametrize("connect", [wschannel.connect, WebSocketChannel.connect])
def test_platform_connect_under_trio_opens_a_trio_channel(connect: Any) -> None:
    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            # async with, as on asyncio; with an option of IOWebSocketChannel.connect's.
            async with connect(url, proxy=None, compression=None) as channel:
                assert isinstance(channel, ByteStreamWebSocketChannel)
                assert not channel._driver.conn.compressed
                channel.sink.add("with")
                assert await anext(aiter(channel.stream)) == "with"
            assert channel.close_code == 1000
            # await
            channel = await connect(url, proxy=None)
            channel.sink.add("await")
            assert await anext(aiter(channel.stream)) == "await"
            assert channel._driver.conn.compressed  # the default: compression on
            channel.sink.close(1000)
            await channel.sink.done
            # async for (reconnecting)
            async for channel in connect(url, proxy=None, reconnect_delays=lambda: []):
                channel.sink.add("for")
                assert await anext(aiter(channel.stream)) == "for"
            assert channel.close_code == 1000

    run_trio(body)


def test_platform_connect_under_anyio_on_trio_opens_a_trio_channel() -> None:
    async def body() -> None:
        async with (
            wschannel.trio.serve(echo, "127.0.0.1", 0) as server,
            wschannel.connect(f"ws://127.0.0.1:{server.port}/") as channel,
        ):
            assert isinstance(channel, ByteStreamWebSocketChannel)
            channel.sink.add("anyio")
            assert await anext(aiter(channel.stream)) == "anyio"

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            await body()

    anyio.run(main, backend="trio")


def test_platform_connect_under_trio_used_as_a_channel_says_how_to_open_it() -> None:
    async def body() -> None:
        opening = wschannel.connect("ws://127.0.0.1:9/")
        for name in ("ready", "stream", "sink", "protocol"):
            with pytest.raises(AttributeError, match=name) as caught:
                getattr(opening, name)
            assert "async with connect(url) as channel:" in str(caught.value)
        with pytest.raises(AttributeError, match="no attribute 'nothing_of_a_channel'"):
            opening.nothing_of_a_channel  # type: ignore[attr-defined]  # noqa: B018

    run_trio(body)


def test_platform_connect_under_trio_takes_every_option_of_the_asyncio_connect() -> None:
    parameters = inspect.signature(wschannel.trio.connect).parameters
    missing = set(ConnectOptions.__annotations__) - set(parameters)
    assert missing == set()
    asyncio_parameters = inspect.signature(IOWebSocketChannel.connect).parameters
    assert set(asyncio_parameters) - {"cls"} == set(parameters)


def test_platform_connect_under_trio_raises_misuse_at_the_call() -> None:
    async def body() -> None:
        with pytest.raises(ValueError, match="Unsupported URL scheme"):
            wschannel.connect("http://127.0.0.1/")
        with pytest.raises(TypeError, match="unexpected keyword argument 'nonsense'"):
            wschannel.connect("ws://127.0.0.1/", nonsense=1)  # type: ignore[call-arg]

    run_trio(body)


def test_asyncio_is_still_asyncio_with_trio_imported() -> None:
    async def body() -> None:
        assert not under_trio()
        async with wschannel.serve(echo, "127.0.0.1", 0) as server:
            channel = wschannel.connect(f"ws://127.0.0.1:{server.port}/", proxy=None)
            assert isinstance(channel, IOWebSocketChannel)
            await asyncio.wait_for(channel.ready, TIMEOUT)
            await asyncio.wait_for(channel.sink.close(1000), TIMEOUT)

    asyncio.run(body())


def test_under_trio_only_inside_trio() -> None:
    assert not under_trio()

    async def body() -> None:
        assert under_trio()

    run_trio(body)


# ping(payload) and latency.


def pong_server(pongs: list[bytes]) -> Callable[[socket.socket], None]:
    """A raw server handler: accepts the upgrade, answers each ping with a pong echoing its
    payload (recording it), until the client's close, which it echoes."""

    def handle(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.settimeout(TIMEOUT)
        while True:
            head = read_exactly(sock, 2)
            length = head[1] & 0x7F
            assert length < 126, "control frames only here"
            mask = read_exactly(sock, 4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(read_exactly(sock, length)))
            opcode = head[0] & 0x0F
            if opcode == 0x9:
                pongs.append(payload)
                sock.sendall(frame(0xA, payload))
            elif opcode == 0x8:
                sock.sendall(frame(0x8, payload))
                return

    return handle


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("EOF")
        data += chunk
    return data


@pytest.mark.parametrize("flavour", ["trio", "anyio-asyncio", "anyio-trio"])
def test_structured_ping_carries_the_payload_and_measures_latency(flavour: str) -> None:
    pongs: list[bytes] = []
    library: Any = wschannel.trio if flavour == "trio" else wschannel.anyio

    async def body() -> None:
        with raw_server(pong_server(pongs)) as server:
            async with library.connect(server.url, proxy=None, ping_interval=None) as channel:
                assert channel.latency is None
                rtt = await channel.ping(b"hello")
                assert rtt > 0
                assert channel.latency == rtt
                await channel.ping("héllo")  # a str goes as UTF-8
                await channel.ping(bytearray(125))  # the most a control frame carries
                await channel.ping()  # 4 random bytes
                with pytest.raises(ValueError, match=r"at most 125 bytes .* this one is 126"):
                    await channel.ping(b"x" * 126)
                with pytest.raises(TypeError, match="bytes-like or a str"):
                    await channel.ping(12)
            with pytest.raises(StateError, match="Cannot ping"):
                await channel.ping()

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            await body()

    if flavour == "anyio-asyncio":
        anyio.run(main, backend="asyncio")
    else:
        trio.run(main)
    assert pongs[:3] == [b"hello", "héllo".encode(), bytes(125)]
    assert len(pongs) == 4 and len(pongs[3]) == 4


def test_structured_ping_waiting_when_the_connection_ends_raises() -> None:
    # The server reads the ping and never answers: the client closes meanwhile.
    reading = threading.Event()

    def handle(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.settimeout(TIMEOUT)
        read_exactly(sock, 2 + 4 + 3)  # the ping, unanswered
        reading.set()
        head = read_exactly(sock, 2)  # the close, echoed
        mask, masked = read_exactly(sock, 4), read_exactly(sock, head[1] & 0x7F)
        sock.sendall(frame(0x8, bytes(b ^ mask[i % 4] for i, b in enumerate(masked))))

    async def body() -> None:
        with raw_server(handle) as server:
            channel = await wschannel.trio.connect(server.url, proxy=None, ping_interval=None)
            async with trio.open_nursery() as nursery:
                errors: list[BaseException] = []

                async def ping() -> None:
                    try:
                        await channel.ping(b"abc")
                    except StateError as exc:
                        errors.append(exc)

                nursery.start_soon(ping)
                await trio.to_thread.run_sync(reading.wait, TIMEOUT)
                channel.sink.close(1000)
                await channel.sink.done
            assert len(errors) == 1
            assert "closed (code 1000) before the ping's pong came" in str(errors[0])

    run_trio(body)


def test_structured_ping_with_a_payload_still_waiting_raises() -> None:
    unanswered = threading.Event()

    def handle(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.settimeout(TIMEOUT)
        read_exactly(sock, 2 + 4 + 4)  # the first ping: unanswered
        unanswered.wait(TIMEOUT)

    async def body() -> None:
        with raw_server(handle) as server:
            channel = await wschannel.trio.connect(server.url, proxy=None, ping_interval=None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.ping, b"same")
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(RuntimeError, match="still waiting for its pong"):
                    await channel.ping(b"same")
                nursery.cancel_scope.cancel()
            unanswered.set()
            channel.sink.close(1000)

    run_trio(body)


def test_asyncio_ping_carries_the_payload() -> None:
    pongs: list[bytes] = []

    async def body() -> None:
        with raw_server(pong_server(pongs)) as server:
            channel = IOWebSocketChannel.connect(server.url, proxy=None, ping_interval=None)
            await asyncio.wait_for(channel.ready, TIMEOUT)
            rtt = await asyncio.wait_for(channel.ping(b"asyncio"), TIMEOUT)
            assert channel.latency == rtt
            with pytest.raises(ValueError, match="at most 125 bytes"):
                await channel.ping(bytes(126))
            await asyncio.wait_for(channel.sink.close(1000), TIMEOUT)

    asyncio.run(body())
    assert pongs == [b"asyncio"]


def test_blocking_ping_carries_the_payload() -> None:
    pongs: list[bytes] = []
    with (
        raw_server(pong_server(pongs)) as server,
        wschannel.sync.connect(server.url, proxy=None, ping_interval=None) as channel,
    ):
        rtt = channel.ping(TIMEOUT, payload=b"blocking")
        assert channel.latency == rtt
        with pytest.raises(ValueError, match="at most 125 bytes"):
            channel.ping(TIMEOUT, payload=bytes(126))
    assert pongs == [b"blocking"]
