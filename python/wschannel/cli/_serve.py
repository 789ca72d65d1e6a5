"""Run a WebSocket server: an echo server (every message goes back to its sender) or a chat
server (every message goes to every other client), on a host and port or a Unix socket.

It prints "listening on URL" on standard output once it accepts connections (port 0: a free
port, named there), logs connections on standard error with -v, and on SIGINT (ctrl-C) or
SIGTERM closes every connection with 1001 (going away) and exits with status 0.

--workers N runs N processes on the one port (the kernel spreads the connections); a chat
over several workers, or several servers, goes through a broker: --broker redis://HOST:PORT
or nats://HOST:PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..channel import WebSocketChannel
from ..server import Handler, Server, broadcast, serve, unix_serve

if TYPE_CHECKING:
    from ..pubsub import NatsBroker, RedisBroker, Topics

logger = logging.getLogger("wschannel.cli")

EXIT_OK = 0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
EXIT_NOT_LISTENING = 1
MAX_WORKERS = 256
CHAT_TOPIC = "chat"
BROKER_PREFIX = "wschannel-cli"
"""The brokers' key and subject prefix: the chats of `wschannel serve` meet each other only."""
BROKER_SCHEMES = ("redis://", "rediss://", "unix://", "nats://", "tls://")


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
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="serve from N processes on one port (auto: one per CPU; default: 1)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="--mode chat through this broker, across workers and servers: redis://HOST:PORT "
        "or nats://HOST:PORT",
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


def _workers(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of workers, or auto; not {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"workers are from 1 to {MAX_WORKERS}, not {count}")
    return count


def check_scaling(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The usage errors of --workers and --broker."""
    if args.broker is not None:
        if args.mode != "chat":
            parser.error("--broker carries the chat's messages: use it with --mode chat")
        if not args.broker.startswith(BROKER_SCHEMES):
            parser.error(
                f"--broker takes redis://HOST:PORT (rediss://, unix://) or nats://HOST:PORT "
                f"(tls://), not {args.broker!r}"
            )
    if args.workers > 1:
        if args.unix is not None:
            parser.error("--workers share a TCP port: it takes no --unix")
        if args.mode == "chat" and args.broker is None:
            parser.error(
                "--mode chat with --workers needs --broker redis://... or nats://...: "
                "the workers share nothing else"
            )


def ssl_context(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ssl.SSLContext | None:
    if args.certfile is None:
        if args.keyfile is not None:
            parser.error("--keyfile needs --certfile")
        return None
    try:
        return tls_context(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as error:
        parser.error(f"--certfile {args.certfile}: {error}")


def tls_context(certfile: Path, keyfile: Path | None) -> ssl.SSLContext:
    """The server's TLS context (also made in each worker of ``--workers``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.unix is not None and (args.port is not None or args.host != DEFAULT_HOST):
        parser.error("--unix listens on a socket file: it takes no --host or --port")
    check_scaling(args, parser)
    context = ssl_context(args, parser)
    configure_logging(args.verbose)
    if args.broker is not None:
        try:
            broker_type(args.broker)
        except ImportError as error:
            print(f"wschannel serve: --broker {args.broker}: {error}", file=sys.stderr)
            return EXIT_NOT_LISTENING
    if args.workers > 1:
        return run_workers(args, context is not None)
    return asyncio.run(run(args, context))


def configure_logging(verbose: int, worker: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(name_connection)
    where = "" if worker is None else f" [{worker}, pid %(process)d]"
    form = f"%(asctime)s %(levelname)s %(name)s{where}: %(who)s%(message)s"
    handler.setFormatter(logging.Formatter(form))
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)],
        handlers=[handler],
        force=True,
    )


def broker_type(url: str) -> type[RedisBroker] | type[NatsBroker]:
    """The broker of ``url``'s scheme; ``ImportError`` saying what to install if its client
    library is not there."""
    nats = url.startswith(("nats://", "tls://"))
    try:
        if nats:
            from ..pubsub import NatsBroker

            return NatsBroker
        from ..pubsub import RedisBroker

        return RedisBroker
    except ImportError:
        extra = "nats" if nats else "redis"
        raise ImportError(
            f"its client library is not installed: pip install 'wschannel[{extra}]'"
        ) from None


def make_topics(url: str) -> Topics:
    from ..pubsub import Topics

    return Topics(broker_type(url)(url, prefix=BROKER_PREFIX))


def chat_through(topics: Topics) -> Handler:
    """The chat's handler when a broker carries it: every client joins one topic; each
    message goes to every other client, on every worker and server."""
    from ..pubsub import BrokerUnavailable

    async def chat(channel: WebSocketChannel) -> None:
        await topics.join(channel, CHAT_TOPIC)
        logger.info("a client joined the chat (%d here)", topics.subscribers(CHAT_TOPIC))
        async for message in channel.stream:
            try:
                await topics.publish(CHAT_TOPIC, message, exclude=channel)
            except BrokerUnavailable as error:  # at most once: said, not retried
                logger.warning("a message was not sent: %s", error)

    return chat


@dataclass(frozen=True)
class WorkerSettings:
    """What each worker process needs of the command line (sent to it: it pickles)."""

    mode: str
    broker: str | None
    verbose: int


@contextlib.asynccontextmanager
async def worker_app(settings: WorkerSettings) -> AsyncIterator[Handler]:
    """One worker of ``--workers``: its logging, its broker connection, its handler."""
    import multiprocessing

    configure_logging(
        settings.verbose, multiprocessing.current_process().name.removeprefix("wschannel ")
    )
    if settings.broker is None:
        yield echo
        return
    async with make_topics(settings.broker) as topics:
        yield chat_through(topics)


async def unreachable(url: str) -> str | None:
    """Why the broker at ``url`` cannot be reached, or ``None`` if it can."""
    from ..pubsub import BrokerUnavailable

    try:
        async with make_topics(url):
            return None
    except BrokerUnavailable as error:
        return str(error)


def tls_files(args: argparse.Namespace) -> dict[str, Any]:
    """``--certfile``/``--keyfile`` as ``serve()``'s ``certfile``/``keyfile`` (TLS in the
    engine; plain strings, which each worker process is sent)."""
    keyfile = None if args.keyfile is None else str(args.keyfile)
    return {"certfile": str(args.certfile), "keyfile": keyfile}


def run_workers(args: argparse.Namespace, secure: bool) -> int:
    """``--workers N``: N processes on one port until SIGINT or SIGTERM."""
    from ..workers import Workers

    if args.broker is not None and (error := asyncio.run(unreachable(args.broker))):
        print(f"wschannel serve: {error}", file=sys.stderr)  # said once, before any worker
        return EXIT_NOT_LISTENING
    settings = WorkerSettings(args.mode, args.broker, args.verbose)
    port = DEFAULT_PORT if args.port is None else args.port
    workers = Workers(
        functools.partial(worker_app, settings),
        args.host,
        port,
        workers=args.workers,
        protocols=args.subprotocol,
        compression=args.compression,
        **tls_files(args) if secure else {},
    )
    try:
        workers.start()
    except OSError as error:
        print(
            f"wschannel serve: cannot listen on {args.host} port {port}: {error}", file=sys.stderr
        )
        return EXIT_NOT_LISTENING
    except RuntimeError as error:
        print(f"wschannel serve: {error}", file=sys.stderr)
        return EXIT_NOT_LISTENING
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            logger.info("stopping: each worker closes its connections with 1001")
            workers.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    host = f"[{args.host}]" if ":" in args.host else args.host
    scheme = "wss" if secure else "ws"
    print(f"listening on {scheme}://{host}:{workers.port}/", flush=True)
    pids = ", ".join(str(process.pid) for process in workers.processes)
    logger.info(
        "%s server, %d workers (pids %s)%s; stop with ctrl-C or SIGTERM",
        args.mode,
        workers.workers,
        pids,
        "" if args.broker is None else f", through {args.broker}",
    )
    try:
        workers.wait()
    finally:
        workers.stop()
    if not stopping:
        print("wschannel serve: every worker exited", file=sys.stderr)
        return EXIT_NOT_LISTENING
    logger.info("stopped")
    return EXIT_OK


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


async def echo(channel: WebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)
        await channel.sink.flush()


async def run(args: argparse.Namespace, context: ssl.SSLContext | None) -> int:
    async with contextlib.AsyncExitStack() as stack:
        topics = None
        if args.broker is not None:
            from ..pubsub import BrokerUnavailable

            try:
                topics = await stack.enter_async_context(make_topics(args.broker))
            except BrokerUnavailable as error:
                print(f"wschannel serve: {error}", file=sys.stderr)
                return EXIT_NOT_LISTENING
        return await serve_until_stopped(args, context, topics)
    raise AssertionError("unreachable")  # pragma: no cover


async def serve_until_stopped(
    args: argparse.Namespace, context: ssl.SSLContext | None, topics: Topics | None
) -> int:
    server: Server | None = None

    async def chat(channel: WebSocketChannel) -> None:
        async for message in channel.stream:
            assert server is not None
            others = [other for other in server.connections if other is not channel]
            broadcast(others, message)

    handler: Handler = echo
    if topics is not None:
        handler = chat_through(topics)
    elif args.mode == "chat":
        handler = chat
    protocols, compression = args.subprotocol, args.compression
    port = DEFAULT_PORT if args.port is None else args.port
    # The files (checked by loading them into ``context``) go to serve() as files: TLS in the
    # engine, the fastest wss://.
    tls = {} if context is None else {"certfile": args.certfile, "keyfile": args.keyfile}
    try:
        if args.unix is not None:
            server = await unix_serve(
                handler, args.unix, protocols=protocols, compression=compression, **tls
            )
        else:
            server = await serve(
                handler, args.host, port, protocols=protocols, compression=compression, **tls
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
