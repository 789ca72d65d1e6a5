"""The asyncio client and server on uvloop's event loop (its transports are not asyncio's)."""

from __future__ import annotations

import asyncio

import pytest

import wschannel
from wschannel import WebSocketChannel
from wschannel.io import IOWebSocketChannel

uvloop = pytest.importorskip("uvloop")


async def echo(channel: WebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


async def exchange(compression: bool) -> tuple[list[str | bytes], int | None, str | None]:
    async with wschannel.serve(echo, "127.0.0.1", 0, compression=compression) as server:
        url = f"ws://127.0.0.1:{server.port}"
        channel = IOWebSocketChannel.connect(url, compression=compression)
        await asyncio.wait_for(channel.ready, 5)
        sent: list[str | bytes] = ["héllo", b"\x00\xff" * 40_000, ""]
        for message in sent:
            channel.sink.add(message)
        stream = aiter(channel.stream)
        received = [await asyncio.wait_for(anext(stream), 5) for _ in sent]
        await asyncio.wait_for(channel.sink.close(4001, "uv"), 5)
        return received, channel.close_code, channel.close_reason


@pytest.mark.parametrize("compression", [False, True])
def test_client_and_server_echo_on_uvloop(compression: bool) -> None:
    received, code, reason = uvloop.run(exchange(compression))
    assert received == ["héllo", b"\x00\xff" * 40_000, ""]
    assert (code, reason) == (4001, "uv")
