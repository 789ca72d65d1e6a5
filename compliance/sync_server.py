"""The Autobahn|Testsuite echo server, built on the blocking ``wschannel.sync.serve``.

Each connection's handler thread echoes every message back with its type, as it comes out
of the stream (the plain ``for message in channel.stream`` loop of ``docs/reference/sync.md``).
Compression is accepted with the library's defaults; the message size limit is raised so
the 16 MiB cases of 9.x can pass.

    python compliance/sync_server.py --port 9002
"""

from __future__ import annotations

import argparse

from echo_options import MAX_MESSAGE_SIZE, SERVER_COMPRESSION

import wschannel.sync


def echo(channel: wschannel.sync.SyncWebSocketChannel) -> None:
    for message in channel.stream:
        channel.sink.add(message)


def main(port: int) -> None:
    # No keepalive: Autobahn judges each case by the frames it receives, and a ping
    # during one of its longest cases (over 20 s) would be an unexpected frame.
    with wschannel.sync.serve(
        echo,
        "127.0.0.1",
        port,
        max_message_size=MAX_MESSAGE_SIZE,
        compression=SERVER_COMPRESSION,
        ping_interval=None,
    ) as server:
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9002)
    main(parser.parse_args().port)
