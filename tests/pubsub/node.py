"""A node of the pub/sub tests: a WebSocket server whose clients join, leave and publish to
topics through a broker, as a process of its own.

    python tests/pubsub/node.py BROKER_URL [--workers N] [--port P] [--recoverable PREFIX]
                                           [--history N] [--slow close|drop]
                                           [--presence-ttl SECONDS]

``BROKER_URL``: ``redis://…`` or ``nats://…``. ``--workers 0`` (default) serves in this
process; ``N`` starts N worker processes on one port (:class:`wschannel.workers.Workers`).
Prints ``listening PORT`` once it accepts connections; stops on SIGTERM.

Each client message is a JSON command, answered with a JSON object that has ``"reply"``:

- ``{"join": topic, "since": [offset, epoch] or null, "presence": name or null}`` →
  ``joined`` with ``position``, ``recovered``, ``must_resynchronise``;
- ``{"presence": topic}`` → ``presence`` with ``members`` (every node's);
- ``{"leave": topic}`` → ``left``;
- ``{"publish": topic, "data": text}`` → ``published`` (with ``position``) or ``error``;
- ``{"stats": true}`` → ``stats``: the node's counters, ``pid``.

A topic's messages come as they were published (plain topics) or as
:func:`wschannel.pubsub.json_frame` objects (recoverable topics: ``"topic"``, no ``"reply"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from wschannel.io import IOWebSocketChannel
from wschannel.pubsub import (
    Broker,
    BrokerUnavailable,
    History,
    NatsBroker,
    Position,
    RedisBroker,
    Topics,
)
from wschannel.server import Handler, serve
from wschannel.workers import Workers

# The options reach spawned workers through the environment.
_OPTIONS = "WSCHANNEL_TEST_NODE"


def _position(position: Position | None) -> list[Any] | None:
    return None if position is None else [position.offset, position.epoch]


def make_broker(url: str, presence_ttl: float = 30.0) -> Broker:
    # Reconnect quickly: the tests restart brokers and wait for the nodes to come back.
    if url.startswith("nats://"):
        return NatsBroker(url, health_interval=1.0)
    return RedisBroker(url, health_interval=1.0, presence_ttl=presence_ttl)


def make_handler(topics: Topics) -> Handler:
    async def handler(channel: IOWebSocketChannel) -> None:
        async for message in channel.stream:
            command = json.loads(message)
            reply: dict[str, Any]
            if "join" in command:
                since = command.get("since")
                joined = await topics.join(
                    channel,
                    command["join"],
                    since=since and Position(since[0], since[1]),
                    presence=command.get("presence"),
                )
                reply = {
                    "reply": "joined",
                    "topic": command["join"],
                    "position": _position(joined.position),
                    "recovered": joined.recovered,
                    "must_resynchronise": joined.must_resynchronise,
                }
            elif "presence" in command:
                try:
                    members = await topics.presence(command["presence"])
                except BrokerUnavailable as exc:  # the broker is restarting, say
                    reply = {"reply": "error", "error": str(exc)}
                else:
                    reply = {"reply": "presence", "members": members}
            elif "leave" in command:
                topics.leave(channel, command["leave"])
                reply = {"reply": "left", "topic": command["leave"]}
            elif "publish" in command:
                try:
                    position = await topics.publish(command["publish"], command["data"])
                except BrokerUnavailable as exc:
                    reply = {"reply": "error", "error": str(exc)}
                else:
                    reply = {"reply": "published", "position": _position(position)}
            else:
                reply = {"reply": "stats", "pid": os.getpid(), **dataclasses.asdict(topics.stats)}
            channel.sink.add(json.dumps(reply))

    return handler


@contextlib.asynccontextmanager
async def app() -> AsyncIterator[Handler]:
    options = json.loads(os.environ[_OPTIONS])
    prefix, size = options["recoverable"], options["history"]

    def recoverable(topic: str) -> History | None:
        return History(size) if prefix and topic.startswith(prefix) else None

    topics = Topics(
        make_broker(options["broker"], options["presence_ttl"]),
        recoverable=recoverable if prefix else None,
        slow=options["slow"],
    )
    async with topics:
        yield make_handler(topics)


async def serve_here(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.cancel)
    async with app() as handler, serve(handler, "127.0.0.1", port) as server:
        print(f"listening {server.port}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--recoverable", default="")
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--slow", default="close")
    parser.add_argument("--presence-ttl", type=float, default=30.0)
    args = parser.parse_args()
    os.environ[_OPTIONS] = json.dumps(
        {
            "broker": args.broker,
            "recoverable": args.recoverable,
            "history": args.history,
            "slow": args.slow,
            "presence_ttl": args.presence_ttl,
        }
    )
    if args.workers == 0:
        asyncio.run(serve_here(args.port))
        return
    with Workers(app, "127.0.0.1", args.port, workers=args.workers) as workers:
        print(f"listening {workers.port}", flush=True)
        signal.signal(signal.SIGTERM, lambda signum, frame: workers.stop())
        workers.wait()


if __name__ == "__main__":
    main()
