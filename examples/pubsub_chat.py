"""A chat on every core, through Redis: rooms are topics; each worker process serves some of
the clients, and a message said in a room reaches everyone in it, whichever worker (or
machine) they are on. The "history" room is recoverable: a client that comes back with the
position of the last message it saw gets what it missed.

    redis-server --port 6379 &                     # or any Redis 7 (tests/pubsub/setup.sh)
    python examples/pubsub_chat.py                 # ws://127.0.0.1:8765, one worker per CPU
    python examples/pubsub_chat.py --nats nats://127.0.0.1:4222   # NATS (no history room)

The protocol, JSON text both ways:

- ``{"join": "lobby"}`` (or ``{"join": "history", "since": [offset, epoch]}``): joins; the
  answer says where the room stands and whether the client must reload it;
- ``{"say": "hello", "to": "lobby"}``: sends to everyone in the room;
- ``{"who": "lobby"}``: who is in the room, whichever worker or machine they are on;
- the room's messages come as they were said (``"alice: hello"``), or, in the recoverable
  room, as ``{"topic", "offset", "epoch", "data"}`` (keep the last offset and epoch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator

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
from wschannel.server import Handler
from wschannel.workers import serve_workers


def broker() -> tuple[Broker, dict[str, History] | None]:
    url = os.environ.get("CHAT_BROKER", "redis://127.0.0.1:6379")
    if url.startswith("nats://"):
        return NatsBroker(url), None
    return RedisBroker(url), {"history": History(size=100, ttl=3600)}


@contextlib.asynccontextmanager
async def chat() -> AsyncIterator[Handler]:
    """One worker: its Topics (its own broker connections), and the handler of its clients."""
    chosen, recoverable = broker()
    async with Topics(chosen, recoverable=recoverable) as topics:

        async def handler(channel: IOWebSocketChannel) -> None:
            name = f"guest{id(channel) % 1000}"
            async for message in channel.stream:
                try:
                    command = json.loads(message)
                    if "join" in command:
                        since = command.get("since")
                        joined = await topics.join(
                            channel,
                            command["join"],
                            since=since and Position(*since),
                            presence=name,  # listed in the room's "who"
                        )
                        position = joined.position
                        channel.sink.add(
                            json.dumps(
                                {
                                    "joined": command["join"],
                                    "position": position and [position.offset, position.epoch],
                                    "recovered": joined.recovered,
                                    "reload": joined.must_resynchronise,
                                }
                            )
                        )
                    elif "say" in command:
                        await topics.publish(command["to"], f"{name}: {command['say']}")
                    elif "who" in command:  # everyone in the room, on every worker and node
                        members = await topics.presence(command["who"])
                        here = sorted(members.values())
                        channel.sink.add(json.dumps({"who": command["who"], "here": here}))
                except (ValueError, TypeError, KeyError) as exc:  # the client's mistake
                    channel.sink.add(json.dumps({"error": str(exc)}))
                except BrokerUnavailable:
                    channel.sink.add(json.dumps({"error": "the chat is restarting: try again"}))

        yield handler


def main() -> None:
    parser = argparse.ArgumentParser(description="A chat on every core, through a broker.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--nats", metavar="URL", help="NATS instead of Redis")
    parser.add_argument("--redis", metavar="URL", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    os.environ["CHAT_BROKER"] = args.nats or args.redis  # the workers read it
    serve_workers(
        chat,
        "127.0.0.1",
        args.port,
        workers=args.workers,
        ready=lambda port: print(f"chat on ws://127.0.0.1:{port} (ctrl-C to stop)", flush=True),
    )


if __name__ == "__main__":
    main()
