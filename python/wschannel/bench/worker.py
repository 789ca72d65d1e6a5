"""The processes the runner starts: a server, or a client that takes commands.

``python -m wschannel.bench.worker server IMPL [--loop uvloop] [--tls DIR] [--compression]
[--broadcast]`` prints ``{"port": N}`` once it listens, and serves until its standard input
closes.

``python -m wschannel.bench.worker client IMPL [--loop uvloop]`` reads one JSON command a line
(see :func:`measure`) and answers each with one JSON line: ``{"count": N, "seconds": S}`` or
``{"error": "..."}``. Keeping the client process across measurements keeps interpreter
start-up and imports out of the numbers and makes a measurement cost little more than its
window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import sys
import traceback
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from . import clients, payloads, servers

HOST = "127.0.0.1"


def server_context(tls: str | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(tls, "server.pem"))
    return context


def client_context(tls: str | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    return ssl.create_default_context(cafile=str(Path(tls, "ca.pem")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def raise_fd_limit() -> None:
    """Allow as many sockets as the hard limit does (the memory cells open 10,000)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(args: argparse.Namespace) -> None:
    port = free_port()
    context = server_context(args.tls)
    if args.tls is not None:
        servers.CERTFILE = str(Path(args.tls, "server.pem"))
    server = await servers.start(args.impl, HOST, port, context, args.compression, args.broadcast)
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the runner closes our stdin
    del server
    os._exit(0)  # no graceful shutdown to wait for


def command_payloads(command: dict[str, Any]) -> list[clients.Message]:
    if command.get("corpus") == "json":
        return list(payloads.json_corpus())
    if command.get("text"):
        return [payloads.text(command["size"])]
    return [payloads.binary(command["size"])]


def measure(impl: str, command: dict[str, Any]) -> Coroutine[Any, Any, None] | None:
    """Run one measurement; returns a coroutine for an async client (None: done)."""
    meter = clients.Meter(command["warmup"], command["duration"])
    arguments = (
        command["url"],
        command_payloads(command),
        command["inflight"],
        meter,
        client_context(command.get("tls")),
        bool(command.get("compression")),
    )

    async def run_async() -> None:
        await asyncio.wait_for(clients.ASYNC[impl](*arguments), command["timeout"])
        report(meter)

    if impl in clients.SYNC:
        clients.SYNC[impl](*arguments)
        report(meter)
        return None
    return run_async()


def report(meter: clients.Meter) -> None:
    count, seconds = meter.result()
    print(json.dumps({"count": count, "seconds": seconds}), flush=True)


def report_error() -> None:
    print(json.dumps({"error": traceback.format_exc(limit=4)}), flush=True)


async def client_async(impl: str) -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        try:
            coroutine = measure(impl, json.loads(line))
            assert coroutine is not None
            await coroutine
        except Exception:
            report_error()


def client_sync(impl: str) -> None:
    for line in sys.stdin:
        try:
            measure(impl, json.loads(line))
        except Exception:
            report_error()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m wschannel.bench.worker")
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("impl")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--tls", help="directory with ca.pem and server.pem")
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--broadcast", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    if args.role == "server":
        run(serve(args), args.loop)
    elif args.impl in clients.SYNC:
        client_sync(args.impl)
    else:
        run(client_async(args.impl), args.loop)


if __name__ == "__main__":
    main()
