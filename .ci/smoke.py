"""An installed wschannel, tried once: an echo over loopback with the asyncio API and with
the blocking one. .ci/wheels.sh runs it in a fresh virtualenv that installed the sdist.

Run from outside the source tree, so that ``import wschannel`` finds the installed package.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import wschannel
import wschannel.sync
from wschannel.io import IOWebSocketChannel


async def asyncio_echo() -> None:
    async def echo(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)

    async with wschannel.serve(echo, "127.0.0.1", 0) as server:
        channel = wschannel.WebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await asyncio.wait_for(channel.ready, 10)
        channel.sink.add("hello")
        channel.sink.add(b"\x00\x01" * 40_000)
        replies = channel.stream.__aiter__()
        assert await asyncio.wait_for(anext(replies), 10) == "hello"
        assert await asyncio.wait_for(anext(replies), 10) == b"\x00\x01" * 40_000
        await asyncio.wait_for(channel.sink.close(), 10)


def blocking_echo() -> None:
    def echo(channel: wschannel.sync.SyncWebSocketChannel) -> None:
        for message in channel.stream:
            channel.sink.add(message)

    server = wschannel.sync.serve(echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with wschannel.sync.connect(f"ws://127.0.0.1:{server.port}") as channel:
            channel.sink.add("hello")
            assert channel.receive(10) == "hello"
    finally:
        server.shutdown(10)
        thread.join(10)


def main() -> None:
    asyncio.run(asyncio_echo())
    blocking_echo()
    print(f"smoke: echo OK with wschannel from {wschannel.__file__} on {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
