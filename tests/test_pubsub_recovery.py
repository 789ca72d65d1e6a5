"""Recoverable topics on Redis Streams: positions (offset + epoch), a client coming back with
its position gets what it missed or is told to resynchronise, and a node fills its own gaps
(after a lost pub/sub message, or a broker restart). Two nodes in this process, over real
sockets, through a real redis-server (tests/pubsub/brokers.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from conftest import TIMEOUT
from pubsub.brokers import RedisServer, missing
from pubsub.clients import Client
from pubsub.node import make_handler
from redis.asyncio import Redis

import wschannel
from wschannel.pubsub import History, RedisBroker, Topics

HISTORY = 5
_prefixes = itertools.count()


def recoverable(topic: str) -> History | None:
    return History(HISTORY) if topic.startswith("h.") else None


def start_redis(**options: Any) -> RedisServer:
    if reason := missing("redis-server"):
        pytest.skip(reason)
    return RedisServer(**options)


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with start_redis() as server:
        yield server


MakeNode = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    """Nodes in this process: ``await make_node(redis_url, prefix)`` gives a server's URL."""
    async with AsyncExitStack() as stack:

        async def make(url: str, prefix: str) -> str:
            broker = RedisBroker(url, prefix=prefix, health_interval=1.0)
            topics = await stack.enter_async_context(Topics(broker, recoverable=recoverable))
            server = await stack.enter_async_context(
                wschannel.serve(make_handler(topics), "127.0.0.1", 0)
            )
            return f"ws://127.0.0.1:{server.port}"

        yield make


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    await asyncio.gather(*(client.close() for client in made))


async def two_nodes(redis: RedisServer, make_node: MakeNode) -> tuple[str, str]:
    prefix = f"r{next(_prefixes)}"
    return await make_node(redis.url, prefix), await make_node(redis.url, prefix)


def offsets(client: Client) -> list[int]:
    return [frame["offset"] for frame in client.frames()]


async def test_each_message_of_a_recoverable_topic_carries_its_position(
    shared_redis: RedisServer, make_node: MakeNode, clients: list[Client]
) -> None:
    one, two = await two_nodes(shared_redis, make_node)
    a, b = Client(one), Client(two)
    clients += [a, b]
    joined = [await a.join("h.a"), await b.join("h.a")]
    epoch = joined[0]["position"][1]
    assert [reply["position"] for reply in joined] == [[0, epoch], [0, epoch]]
    replies = [await a.publish("h.a", f"m{index}") for index in range(1, 4)]
    assert [reply["position"] for reply in replies] == [[n, epoch] for n in (1, 2, 3)]
    for client in (a, b):
        await client.wait_for(3)
        assert client.frames() == [
            {"topic": "h.a", "offset": n, "epoch": epoch, "data": f"m{n}"} for n in (1, 2, 3)
        ]


async def test_a_client_back_with_its_position_gets_what_it_missed_then_the_live_ones(
    shared_redis: RedisServer, make_node: MakeNode, clients: list[Client]
) -> None:
    one, two = await two_nodes(shared_redis, make_node)
    publisher, leaving = Client(one), Client(two)
    clients += [publisher, leaving]
    await leaving.join("h.b")
    for index in range(1, 3):
        await publisher.publish("h.b", f"m{index}")
    await leaving.wait_for(2)
    last = leaving.frames()[-1]
    await leaving.close()  # gone, with its last position
    for index in range(3, 6):
        await publisher.publish("h.b", f"m{index}")
    back = Client(one)  # on the other node, as after a reconnection through a balancer
    clients.append(back)
    reply = await back.join("h.b", since=[last["offset"], last["epoch"]])
    assert reply["recovered"] == 3 and not reply["must_resynchronise"]
    assert reply["position"] == [5, last["epoch"]]
    await publisher.publish("h.b", "m6")
    await back.wait_for(4)
    assert offsets(back) == [3, 4, 5, 6]  # what it missed, in order, then live; no duplicate
    assert [frame["data"] for frame in back.frames()] == ["m3", "m4", "m5", "m6"]


async def test_live_messages_during_a_recovery_are_neither_lost_nor_doubled(
    shared_redis: RedisServer, make_node: MakeNode, clients: list[Client]
) -> None:
    one, two = await two_nodes(shared_redis, make_node)
    publisher, watcher = Client(one), Client(two)
    clients += [publisher, watcher]
    await watcher.join("h.c")
    epoch = (await publisher.publish("h.c", "m1"))["position"][1]
    back = Client(two)
    clients.append(back)
    # Publish while the newcomer recovers from offset 0: each message once, in order.
    await asyncio.gather(
        back.join("h.c", since=[0, epoch]),
        *(publisher.publish("h.c", f"m{index}") for index in range(2, 5)),
    )
    await back.wait_for(4)
    await publisher.publish("h.c", "m5")
    await back.wait_for(5)
    assert offsets(back) == [1, 2, 3, 4, 5]


async def test_a_gap_longer_than_the_history_must_resynchronise(
    shared_redis: RedisServer, make_node: MakeNode, clients: list[Client]
) -> None:
    one, two = await two_nodes(shared_redis, make_node)
    publisher, leaving = Client(one), Client(two)
    clients += [publisher, leaving]
    await leaving.join("h.d")
    epoch = (await publisher.publish("h.d", "m1"))["position"][1]
    await leaving.wait_for(1)
    await leaving.close()
    for index in range(2, 2 + HISTORY + 3):  # the history keeps the last HISTORY only
        await publisher.publish("h.d", f"m{index}")
    back = Client(two)
    clients.append(back)
    reply = await back.join("h.d", since=[1, epoch])
    assert reply["must_resynchronise"] and reply["recovered"] == 0
    assert reply["position"] == [HISTORY + 3 + 1, epoch]  # go on from here
    await publisher.publish("h.d", "next")
    await back.wait_for(1)
    assert back.frames() == [{"topic": "h.d", "offset": 10, "epoch": epoch, "data": "next"}]
    # A position from the future, or from another epoch, cannot be recovered either.
    for since in ([99, epoch], [1, "0ther"]):
        other = Client(one)
        clients.append(other)
        assert (await other.join("h.d", since=since))["must_resynchronise"]


async def test_a_node_fills_a_gap_in_the_offsets_from_the_history(
    shared_redis: RedisServer, make_node: MakeNode, clients: list[Client]
) -> None:
    prefix = f"gap{next(_prefixes)}"
    url = await make_node(shared_redis.url, prefix)
    publisher, watcher = Client(url), Client(url)
    clients += [publisher, watcher]
    await watcher.join("h.e")
    epoch = (await publisher.publish("h.e", "m1"))["position"][1]
    # Two messages reach the history but never the node (as if pub/sub had dropped them).
    redis = Redis.from_url(shared_redis.url)
    for offset in (2, 3):
        await redis.hincrby(f"{prefix}:m:h.e", "o", 1)
        envelope = f"T{offset}:{epoch}:m{offset}".encode()
        await redis.xadd(f"{prefix}:h:h.e", {"d": envelope}, id=f"0-{offset}")
    await redis.aclose()
    await publisher.publish("h.e", "m4")  # offset 4 after 1: the node fetches 2 and 3 first
    await watcher.wait_for(4)
    assert offsets(watcher) == [1, 2, 3, 4]
    assert [frame["data"] for frame in watcher.frames()] == ["m1", "m2", "m3", "m4"]
    stats = await watcher.ask(stats=True)
    assert stats["recovered"] == 3  # 2 and 3, and 4 itself: the history had it first


async def test_a_redis_that_lost_its_data_starts_a_new_epoch_and_subscribers_resynchronise(
    make_node: MakeNode, clients: list[Client]
) -> None:
    with start_redis() as redis:  # no persistence: a restart loses every stream
        url = await make_node(redis.url, "lost")
        publisher, watcher = Client(url), Client(url)
        clients += [publisher, watcher]
        await watcher.join("h.f")
        await publisher.join("h.f")
        old = (await publisher.publish("h.f", "m1"))["position"]
        await watcher.wait_for(1)
        redis.restart(kill=True)
        # The node notices the new epoch once back: its subscribers are closed with 1012
        # (service restart) so that they come back with their position...
        assert await asyncio.wait_for(watcher.closed, 4 * TIMEOUT) == 1012
        assert watcher.channel.close_reason == "topic history lost: resynchronise"
        back = Client(url)
        clients.append(back)
        reply = await back.join("h.f", since=old)
        # ... and are told to resynchronise: the history they knew is gone.
        assert reply["must_resynchronise"]
        assert reply["position"][1] != old[1] and reply["position"][0] == 0


async def test_a_persistent_redis_restart_loses_nothing_of_a_recoverable_topic(
    make_node: MakeNode, clients: list[Client]
) -> None:
    with start_redis(persistent=True) as redis:  # append-only file, fsync always
        url = await make_node(redis.url, "kept")
        publisher, watcher = Client(url), Client(url)
        clients += [publisher, watcher]
        await watcher.join("h.g")
        epoch = (await publisher.publish("h.g", "m1"))["position"][1]
        await watcher.wait_for(1)
        redis.restart(kill=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4 * TIMEOUT
        while (await publisher.publish("h.g", "m2"))["reply"] != "published":
            assert loop.time() < deadline, "the node did not come back"
            await asyncio.sleep(0.05)  # BrokerUnavailable until the node reconnects
        await watcher.wait_for(2)
        assert watcher.frames()[1] == {"topic": "h.g", "offset": 2, "epoch": epoch, "data": "m2"}
        assert not watcher.closed.done()  # same epoch: nobody had to resynchronise
