"""broadcast(): one message to many channels, the frame encoded once where it can be."""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from collections.abc import AsyncIterator

import pytest
from conftest import SHORT, TIMEOUT, next_message, open_raw_client, read_frame, wait, wait_until

import wschannel
from wschannel.adapter import AdapterWebSocketChannel
from wschannel.channel import Message
from wschannel.io import IOWebSocketChannel
from wschannel.server import Server, broadcast
from wschannel.testing import fake_pair


async def _hold(channel: IOWebSocketChannel) -> None:
    """Keep the connection open until the client closes it."""
    async for _ in channel.stream:
        pass


@pytest.fixture
async def hub() -> AsyncIterator[Server]:
    async with wschannel.serve(_hold, "127.0.0.1", 0) as server:
        yield server


async def connect_clients(
    server: Server, count: int, **options: object
) -> list[IOWebSocketChannel]:
    url = f"ws://127.0.0.1:{server.port}"
    clients = [IOWebSocketChannel.connect(url, **options) for _ in range(count)]  # type: ignore[arg-type]
    await wait(asyncio.gather(*(client.ready for client in clients)))
    await wait_until(lambda: len(server.connections) >= len(clients), what="the server has them")
    return clients


def shares_frames(channel: IOWebSocketChannel) -> bool:
    protocol = channel._transport_protocol
    return (
        protocol is not None and protocol.conn is not None and protocol.conn.accepts_shared_frames
    )


async def test_broadcast_reaches_200_clients_half_of_them_compressed(hub: Server) -> None:
    plain = await connect_clients(hub, 100, compression=False)
    compressed = await connect_clients(hub, 100, compression=True)
    shared = [channel for channel in hub.connections if shares_frames(channel)]
    assert len(shared) == 100  # the uncompressed ones share the frame
    assert broadcast(hub.connections, "to everyone") == 200
    assert broadcast(hub.connections, b"\x00binary\xff") == 200
    for client in plain + compressed:
        subscription = aiter(client.stream)
        assert await next_message(subscription) == "to everyone"
        assert await next_message(subscription) == b"\x00binary\xff"
    await wait(asyncio.gather(*(client.sink.close() for client in plain + compressed)))


async def test_broadcast_sends_any_bytes_like_message(hub: Server) -> None:
    (client,) = await connect_clients(hub, 1, compression=False)
    (zipped,) = await connect_clients(hub, 1)
    assert broadcast(hub.connections, memoryview(b"view")) == 2
    assert broadcast(hub.connections, array("B", b"arr")) == 2
    for channel in (client, zipped):
        subscription = aiter(channel.stream)
        assert [await next_message(subscription) for _ in range(2)] == [b"view", b"arr"]


async def test_broadcast_writes_the_same_frame_a_server_would_send(hub: Server) -> None:
    reader, writer = await open_raw_client(hub.port)
    await wait_until(lambda: len(hub.connections) == 1, what="the server has the connection")
    assert broadcast(hub.connections, "raw") == 1
    assert await read_frame(reader) == (0x81, b"raw")
    writer.close()


async def test_broadcast_skips_closed_and_closing_channels(hub: Server) -> None:
    clients = await connect_clients(hub, 3, compression=False)
    everyone = hub.connections
    await wait(clients[1].sink.close())  # closed by the client
    hub.connections[0].sink.close(1000)  # closing on the server's side
    assert broadcast(everyone, "left") == 1
    assert broadcast([], "nobody") == 0
    # One of the two gets the message; the other's stream ends (the server closed it).
    messages: list[Message] = []
    for client in (clients[0], clients[2]):
        with contextlib.suppress(StopAsyncIteration):
            messages.append(await next_message(aiter(client.stream)))
    assert messages == ["left"]


async def test_broadcast_skips_a_channel_whose_write_buffer_is_full() -> None:
    async with wschannel.serve(
        _hold, "127.0.0.1", 0, write_limit=1024, close_timeout=SHORT
    ) as server:
        _, writer = await open_raw_client(server.port)  # it never reads
        await wait_until(lambda: len(server.connections) == 1, what="the server has it")
        (slow,) = server.connections
        big = b"x" * 65536
        sent = [broadcast([slow], big) for _ in range(1000)]  # until the kernel buffers fill
        assert sent[0] == 1
        assert sent[-1] == 0  # skipped: its write buffer is over write_limit
        (reader,) = await connect_clients(server, 1)
        assert broadcast(server.connections, "still flowing") == 1
        assert await next_message(aiter(reader.stream)) == "still flowing"
        writer.close()


async def test_broadcast_skips_a_channel_that_is_not_open_yet(hub: Server) -> None:
    channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{hub.port}")
    assert broadcast([channel], "too early") == 0
    await wait(channel.ready)
    assert broadcast([channel], "client side") == 1  # masked per connection, through the sink
    await wait(channel.sink.close())


async def test_broadcast_falls_back_to_the_sink_for_other_channels() -> None:
    mine, theirs = fake_pair()
    channel = AdapterWebSocketChannel(mine)
    await wait(channel.ready)
    assert broadcast([channel], "adapted") == 1
    event = await asyncio.wait_for(anext(aiter(theirs.events)), TIMEOUT)
    assert getattr(event, "text", None) == "adapted"
    channel.sink.close()
    assert broadcast([channel], "after close") == 0


def test_broadcast_rejects_a_message_that_is_neither_text_nor_bytes() -> None:
    with pytest.raises(TypeError, match="Cannot broadcast int"):
        broadcast([], 42)  # type: ignore[arg-type]


def test_package_broadcast_is_the_server_module_broadcast() -> None:
    assert wschannel.broadcast is broadcast
