"""Topics across processes and nodes, fanned out through a real broker (Redis or NATS).

::

    from wschannel.pubsub import RedisBroker, Topics

    async with Topics(RedisBroker("redis://127.0.0.1:6379")) as topics:
        async def handler(channel):
            await topics.join(channel, "news")
            async for message in channel.stream:
                await topics.publish("news", message)

        async with wschannel.serve(handler, "127.0.0.1", 8000):
            ...

Every process (node) has one :class:`Topics`. A publish from any node reaches every subscriber
of the topic on every node: the node subscribes at the broker only to the topics it has local
subscribers for, and writes each message, encoded once, to all of them
(:func:`wschannel.broadcast`'s shared frame). :func:`wschannel.workers.serve_workers` runs a
server on every core. ``join(channel, topic, presence=info)`` and :meth:`Topics.presence` tell
who is in a topic across nodes. docs/scaling.md: the topology, the guarantees, the failure
behaviour, presence.

The brokers' client libraries are optional extras: ``wschannel[redis]`` (redis-py, hiredis),
``wschannel[nats]`` (nats-py); :class:`RedisBroker` and :class:`NatsBroker` import them when
first named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._backoff import Backoff
from ._broker import Broker, BrokerUnavailable, History, Position, Recovery
from ._topics import Joined, Outage, Publication, Topics, TopicsStats, json_frame

if TYPE_CHECKING:
    from ._nats import NatsBroker
    from ._redis import RedisBroker

__all__ = [
    "Backoff",
    "Broker",
    "BrokerUnavailable",
    "History",
    "Joined",
    "NatsBroker",
    "Outage",
    "Position",
    "Publication",
    "Recovery",
    "RedisBroker",
    "Topics",
    "TopicsStats",
    "json_frame",
]


def __getattr__(name: str) -> Any:
    # The brokers import their client library only when used.
    if name == "RedisBroker":
        from ._redis import RedisBroker

        return RedisBroker
    if name == "NatsBroker":
        from ._nats import NatsBroker

        return NatsBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
