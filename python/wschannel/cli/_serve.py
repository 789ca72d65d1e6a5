"""Run a WebSocket server: an echo server (every message goes back to its sender) or a chat
server (every message goes to every other client), on a host and port or a Unix socket.

It prints "listening on URL" on standard output once it accepts connections (port 0: a free
port, named there), logs connections on standard error with -v, and on SIGINT (ctrl-C) or
SIGTERM closes every connection with 1001 (going away) and exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
from pathlib import Path

from ..channel import WebSocketChannel
from ..server import Server, broadcast, serve, unix_serve

logger = logging.getLogger("wschannel.cli")

EXIT_OK = 0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
EXIT_NOT_LISTENING = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=("echo", "chat"),
        default="echo",
        help="echo: send each message back; chat: send it to every other client (default: echo)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="the address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for every one)",
    )
    parser.add_argument(
        "--port", type=_port, help=f"the port (default: {DEFAULT_PORT}; 0: a free one)"
    )
    parser.add_argument(
        "--unix", metavar="PATH", type=Path, help="listen on a Unix socket instead of a port"
    )
    parser.add_argument(
        "-s",
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="a subprotocol the server speaks (repeat for more)",
    )
    parser.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="accept permessage-deflate (default: on)",
    )
    parser.add_argument(
        "--certfile", type=Path, metavar="PEM", help="serve wss:// with this certificate chain"
    )
    parser.add_argument(
        "--keyfile", type=Path, metavar="PEM", help="its private key (if not in --certfile)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log connections (-v), and everything (-vv), on standard error",
    )


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535, not {port}")
    return port


def ssl_context(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ssl.SSLContext | None:
    if args.certfile is None:
        if args.keyfile is not None:
            parser.error("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as error:
        parser.error(f"--certfile {args.certfile}: {error}")
    return context


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.unix is not None and (args.port is not None or args.host != DEFAULT_HOST):
        parser.error("--unix listens on a socket file: it takes no --host or --port")
    context = ssl_context(args, parser)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(name_connection)
    form = "%(asctime)s %(levelname)s %(name)s: %(who)s%(message)s"
    handler.setFormatter(logging.Formatter(form))
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        handlers=[handler],
    )
    return asyncio.run(run(args, context))


def name_connection(record: logging.LogRecord) -> bool:
    """A handler's filter: ``who`` is the connection a record is about, ``#3 127.0.0.1:50412: ``
    (the library's connection records carry ``connection_id`` and ``peer``), or nothing."""
    peer = getattr(record, "peer", None)
    number = getattr(record, "connection_id", None)
    if peer is None:
        record.who = ""
    else:
        record.who = f"#{number} {peer}: " if number is not None else f"{peer}: "
    return True


async def run(args: argparse.Namespace, context: ssl.SSLContext | None) -> int:
    server: Server | None = None

    async def echo(channel: WebSocketChannel) -> None:
        async for message in channel.stream:
            channel.sink.add(message)
            await channel.sink.flush()

    async def chat(channel: WebSocketChannel) -> None:
        async for message in channel.stream:
            assert server is not None
            others = [other for other in server.connections if other is not channel]
            broadcast(others, message)

    handler = chat if args.mode == "chat" else echo
    protocols, compression = args.subprotocol, args.compression
    port = DEFAULT_PORT if args.port is None else args.port
    try:
        if args.unix is not None:
            server = await unix_serve(
                handler, args.unix, protocols=protocols, compression=compression, ssl=context
            )
        else:
            server = await serve(
                handler, args.host, port, protocols=protocols, compression=compression, ssl=context
            )
    except OSError as error:
        where = args.unix if args.unix is not None else f"{args.host} port {port}"
        print(f"wschannel serve: cannot listen on {where}: {error}", file=sys.stderr)
        return EXIT_NOT_LISTENING
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    for line in listening(server, args, secure=context is not None):
        print(line, flush=True)
    logger.info("%s server; stop with ctrl-C or SIGTERM", args.mode)
    await stop.wait()
    logger.info("stopping: closing %d connections with 1001", len(server.connections))
    await server.close()
    logger.info("stopped")
    return EXIT_OK


def listening(server: Server, args: argparse.Namespace, *, secure: bool) -> list[str]:
    """A "listening on" line for each socket, with the URL a client connects to."""
    scheme = "wss" if secure else "ws"
    if args.unix is not None:
        return [
            f"listening on {args.unix} (wschannel connect --unix {args.unix} {scheme}://localhost/)"
        ]
    lines = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        if sock.family == socket.AF_INET6:
            host = f"[{host}]"
        lines.append(f"listening on {scheme}://{host}:{port}/")
    return lines
