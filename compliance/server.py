"""The Autobahn|Testsuite echo server, built on ``wschannel.serve``.

Echoes every message back with its type, from the ``listen`` callback: the reply leaves
before anything the engine does with later input (Autobahn's strict ordering, e.g. the echo
before the 1002 close in 3.3). Compression and the message size limit: echo_options.py.

    python compliance/server.py --port 9002
"""

from __future__ import annotations

import argparse
import asyncio

from echo_options import MAX_MESSAGE_SIZE, SERVER_COMPRESSION

import wschannel
from wschannel import WebSocketChannel


async def echo(channel: WebSocketChannel) -> None:
    channel.stream.listen(channel.sink.add)
    await channel.sink.done


async def main(port: int) -> None:
    # No keepalive: Autobahn judges each case by the frames it receives, and a ping
    # during one of its longest cases (over 20 s) would be an unexpected frame.
    server = await wschannel.serve(
        echo,
        "127.0.0.1",
        port,
        max_message_size=MAX_MESSAGE_SIZE,
        compression=SERVER_COMPRESSION,
        ping_interval=None,
    )
    async with server:
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9002)
    asyncio.run(main(parser.parse_args().port))
