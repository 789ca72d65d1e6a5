"""A chat server: every message a client sends goes to every other client.

Run it with ``python examples/chat.py`` (``--port``, ``--host``; ``--trio`` runs the same
handler on :mod:`wschannel.trio` instead of asyncio) and connect clients to
``ws://127.0.0.1:8765/?name=alice``, for instance with ``python -m wschannel connect``.
Ctrl-C stops it: every client gets a close with 1001 (going away).

The handler needs no global: ``channel.server`` is the server that accepted the connection,
and ``channel.server.broadcast(message, exclude=channel)`` sends to everyone else. A client
that does not read is skipped by ``broadcast`` once its write buffer is full, so it cannot
make the server hold more than ``write_limit`` for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import urllib.parse

import wschannel
import wschannel.server
import wschannel.trio

Channel = wschannel.server.ServerChannel | wschannel.trio.ServerChannel
"""What the handler gets from either server: both know their server and their request."""


def name_of(channel: Channel) -> str:
    """The ``name`` in the URL's query (``?name=alice``), or ``guest``."""
    query = urllib.parse.urlsplit(channel.request.path).query
    names = urllib.parse.parse_qs(query).get("name")
    return names[0][:40] if names else "guest"


async def chat(channel: Channel) -> None:
    """One client: announce it, relay what it says to the others, announce its leaving."""
    server = channel.server
    name = name_of(channel)
    server.broadcast(f"{name} joined", exclude=channel)
    async for message in channel.stream:
        if isinstance(message, str):
            server.broadcast(f"{name}: {message}", exclude=channel)
    server.broadcast(f"{name} left", exclude=channel)


def listening(host: str, port: int) -> None:
    print(f"chat: listening on ws://{host}:{port}/", flush=True)


async def main_asyncio(host: str, port: int) -> None:
    async with wschannel.serve(chat, host, port) as server:
        listening(host, server.port)
        await server.serve_forever()


async def main_trio(host: str, port: int) -> None:
    import trio

    # Ctrl-C as an event: trio raises KeyboardInterrupt in whichever task runs when the signal
    # comes, a connection's handler as well as this one, and the clients would then lose
    # their connections instead of getting their close.
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with wschannel.trio.serve(chat, host, port) as server:
            listening(host, server.port)
            async for _ in signals:
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0: any free port")
    parser.add_argument("--trio", action="store_true", help="serve with wschannel.trio")
    options = parser.parse_args(argv)
    if options.trio:
        import trio

        trio.run(main_trio, options.host, options.port)  # returns at Ctrl-C
    else:
        # asyncio.run cancels the main task at Ctrl-C (serve's block closes every client
        # with 1001), then raises KeyboardInterrupt.
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main_asyncio(options.host, options.port))
    print("chat: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
