"""wschannel's demo: an echo server and a client talking over 127.0.0.1.

Run it with ``make demo`` (or ``python examples/demo.py`` once the engine is built). The
server echoes every message; the client sends text, non-ASCII text and binary, reads the
echoes, then closes with a code and a reason, which the server reports back.
"""

from __future__ import annotations

import asyncio

import wschannel
from wschannel import status
from wschannel.io import IOWebSocketChannel


def show(message: str | bytes) -> str:
    kind = "text" if isinstance(message, str) else "binary"
    return f"{kind} {message!r}"


async def echo(channel: IOWebSocketChannel) -> None:
    """The server's handler: one call per connection."""
    print(f"server: connection opened (subprotocol {channel.protocol!r})")
    async for message in channel.stream:
        print(f"server: received {show(message)}, echoing it")
        channel.sink.add(message)
    print(f"server: the client closed with {channel.close_code} {channel.close_reason!r}")


async def main() -> None:
    async with wschannel.serve(echo, "127.0.0.1", 0, protocols=["demo"]) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        print(f"server: listening on {url}")

        channel = IOWebSocketChannel.connect(url, protocols=["demo"])
        messages: list[str | bytes] = ["Hello, WebSocket!", "Grüße, 世界 🌍", b"\x00\x01\x02\xff"]
        for message in messages:  # sent once the connection is open
            print(f"client: sending {show(message)}")
            channel.sink.add(message)
        await channel.ready
        print(f"client: connected (subprotocol {channel.protocol!r})")

        replies = aiter(channel.stream)
        for _ in messages:
            print(f"client: received {show(await anext(replies))}")

        print("client: closing with 1000 'demo over'")
        await channel.sink.close(status.NORMAL_CLOSURE, "demo over")
        print(f"client: closed; the server answered {channel.close_code} {channel.close_reason!r}")
    print("server: stopped")


if __name__ == "__main__":
    asyncio.run(main())
