"""Presence (who is in a topic, across nodes) and ``publish(exclude=)``, through a real Redis
and a real NATS: node processes (tests/pubsub/node.py) for what crosses processes, including a
node killed with SIGKILL; two ``Topics`` in this process for the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from conftest import SHORT, TIMEOUT, wait_until
from pubsub.brokers import BrokerProcess, NatsServer, RedisServer, missing
from pubsub.clients import Client, Node
from redis.asyncio import Redis

import wschannel
from wschannel.io import IOWebSocketChannel
from wschannel.pubsub import History, NatsBroker, RedisBroker, Topics

PRESENCE_TTL = 3.0
"""The Redis nodes' presence_ttl here: a killed node's members must be gone within it (and a
live node's heartbeat, every second, must keep its own listed on a loaded machine)."""


def start_broker(kind: str) -> BrokerProcess:
    if reason := missing(f"{kind}-server"):
        pytest.skip(reason)
    return RedisServer() if kind == "redis" else NatsServer()


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    with start_broker(request.param) as server:
        yield server


@pytest.fixture
def two_nodes(broker: BrokerProcess) -> Iterator[list[Node]]:
    started = [Node(broker.url, "--presence-ttl", str(PRESENCE_TTL)) for _ in range(2)]
    try:
        yield Node.start_all(started)
    finally:
        for node in started:
            node.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    await asyncio.gather(*(client.close() for client in made))


async def join(client: Client, topic: str, presence: str | None) -> None:
    reply = await client.ask(join=topic, presence=presence)
    assert reply["reply"] == "joined", reply


async def presence(client: Client, topic: str) -> dict[str, str]:
    reply = await client.ask(presence=topic)
    assert reply["reply"] == "presence", reply
    members: dict[str, str] = reply["members"]
    return members


async def presence_becomes(client: Client, topic: str, expected: list[str]) -> float:
    """Ask ``client``'s node until the members' names are ``expected`` (bounded by
    4 times TIMEOUT); return how long it took. While the broker is away (a test restarts
    it) the node answers an error: asked again. (A 3.13t CI run asked while Redis was
    restarting: the node's handler failed with BrokerUnavailable and never answered.)"""
    started = time.monotonic()
    seen: list[str] | str = []
    for _ in range(1000):
        reply = await client.ask(presence=topic)
        if reply["reply"] == "error":
            seen = reply["error"]
        else:
            assert reply["reply"] == "presence", reply
            seen = sorted(reply["members"].values())
        if seen == expected:
            return time.monotonic() - started
        if time.monotonic() - started > 4 * TIMEOUT:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"presence of {topic!r} stayed {seen}, expected {expected}")


# -- across node processes -------------------------------------------------------------------


async def test_presence_lists_every_nodes_members_until_they_leave_or_close(
    two_nodes: list[Node], clients: list[Client]
) -> None:
    a, b = two_nodes
    alice, bob, carol, quiet = Client(a.url), Client(a.url), Client(b.url), Client(b.url)
    clients += [alice, bob, carol, quiet]
    await join(alice, "room", "alice")
    await join(bob, "room", "bob")
    await join(carol, "room", "carol")
    await join(quiet, "room", None)  # joined without presence: not listed
    await join(carol, "other", "carol")
    on_a, on_b = await presence(alice, "room"), await presence(carol, "room")
    assert on_a == on_b  # every node answers the same
    assert sorted(on_a.values()) == ["alice", "bob", "carol"]
    assert len({member.split(".")[0] for member in on_a}) == 2  # two nodes' members
    assert sorted((await presence(bob, "other")).values()) == ["carol"]
    assert await presence(bob, "nobody.here") == {}

    assert (await bob.ask(leave="room"))["reply"] == "left"
    await presence_becomes(carol, "room", ["alice", "carol"])
    await carol.close()
    await presence_becomes(alice, "room", ["alice"])
    await presence_becomes(alice, "other", [])


async def test_a_killed_nodes_members_are_gone_within_the_ttl(
    broker: BrokerProcess, two_nodes: list[Node], clients: list[Client]
) -> None:
    a, b = two_nodes
    here, there = Client(a.url), Client(b.url)
    clients += [here, there]
    await join(here, "room", "here")
    await join(there, "room", "there")
    if isinstance(broker, RedisServer):
        # The heartbeat keeps a live node's members listed past the TTL.
        deadline = time.monotonic() + 1.5 * PRESENCE_TTL
        while time.monotonic() < deadline:
            assert sorted((await presence(here, "room")).values()) == ["here", "there"]
            await asyncio.sleep(0.1)
    assert sorted((await presence(here, "room")).values()) == ["here", "there"]
    b.kill()  # no goodbye: its hash stays in Redis until it expires
    took = await presence_becomes(here, "room", ["here"])
    # Within the TTL, plus the time to ask (a few round trips) on a loaded machine.
    assert took <= PRESENCE_TTL + 1.0, f"the killed node's members were listed for {took:.1f} s"


async def test_presence_is_written_again_after_redis_restarts_without_its_data(
    clients: list[Client],
) -> None:
    with start_broker("redis") as redis:
        node = Node(redis.url, "--presence-ttl", str(PRESENCE_TTL))
        Node.start_all([node])
        try:
            client = Client(node.url)
            clients.append(client)
            await join(client, "room", "alice")
            redis.restart(kill=True)  # the data is gone with it
            # Once the node is back, its heartbeat finds its hash gone and writes it again.
            await presence_becomes(client, "room", ["alice"])
            await client.close()
            observer = Client(node.url)
            clients.append(observer)
            await presence_becomes(observer, "room", [])
        finally:
            node.stop()


# -- in this process -------------------------------------------------------------------------


@asynccontextmanager
async def node_of(topics: Topics) -> AsyncIterator[str]:
    """A server whose clients join "room" (with their first message as presence) and
    publish every later message to it, excluding themselves."""

    async def handler(channel: IOWebSocketChannel) -> None:
        name = None
        async for message in channel.stream:
            assert isinstance(message, str)
            if name is None:
                name = message
                await topics.join(channel, "room", presence=name)
                channel.sink.add("joined")
            else:
                await topics.publish("room", message, exclude=channel)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}"


async def joined_client(url: str, name: str) -> tuple[IOWebSocketChannel, list[str]]:
    channel = IOWebSocketChannel.connect(url)
    channel.sink.add(name)
    messages = aiter(channel.stream)
    assert await asyncio.wait_for(anext(messages), TIMEOUT) == "joined"
    got: list[str] = []

    async def read() -> None:
        async for message in messages:
            assert isinstance(message, str)
            got.append(message)

    asyncio.get_running_loop().create_task(read())
    return channel, got


@pytest.mark.parametrize("kind", ["local", "redis", "nats"])
async def test_publish_with_exclude_skips_the_sender_on_its_node_only(kind: str) -> None:
    """Regression: without ``exclude=``, a chat sent each message back to its sender."""
    server = None if kind == "local" else start_broker(kind)

    def make() -> Topics:
        if server is None:
            return Topics()
        return Topics(RedisBroker(server.url) if kind == "redis" else NatsBroker(server.url))

    if server is not None:
        server.start()
    try:
        async with make() as first, make() as second:
            nodes = [first] if kind == "local" else [first, second]
            async with node_of(nodes[0]) as one, node_of(nodes[-1]) as two:
                people = [await joined_client(url, name) for url, name in
                          [(one, "ann"), (one, "ben"), (two, "cy")]]  # fmt: skip
                for index, (channel, _) in enumerate(people):
                    channel.sink.add(f"from {index}")
                expected = [sorted(f"from {i}" for i in range(3) if i != me) for me in range(3)]
                await wait_until(
                    lambda: [sorted(got) for _, got in people] == expected,
                    what=f"each got the others' messages (have {[got for _, got in people]})",
                )
                await asyncio.sleep(SHORT)  # and not its own, late
                assert [sorted(got) for _, got in people] == expected
                assert sorted((await first.presence("room")).values()) == ["ann", "ben", "cy"]
                for channel, _ in people:
                    await channel.sink.close()
    finally:
        if server is not None:
            server.stop()


async def test_presence_and_exclude_refuse_misuse_with_what_to_do() -> None:
    async with Topics(recoverable=None) as topics:
        channel = IOWebSocketChannel.connect("ws://127.0.0.1:1")  # never opens
        with pytest.raises(TypeError, match="presence is a str"):
            await topics.join(channel, "room", presence=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at most 1024 characters"):
            await topics.join(channel, "room", presence="x" * 1025)
        with pytest.raises(ValueError, match="limit must be a positive int"):
            await topics.presence("room", limit=0)
        with pytest.raises(ValueError, match="A topic is 1 to 200"):
            await topics.presence("no..dots")
        with pytest.raises(TypeError, match="exclude is a WebSocketChannel"):
            await topics.publish("room", "hi", exclude="me")  # type: ignore[arg-type]
        assert await topics.presence("room") == {}
        await channel.sink.close()


async def test_exclude_on_a_recoverable_topic_is_refused() -> None:
    if reason := missing("redis-server"):
        pytest.skip(reason)
    with RedisServer() as redis:
        broker = RedisBroker(redis.url)
        async with Topics(broker, recoverable={"kept": History(10)}) as topics:
            channel = IOWebSocketChannel.connect("ws://127.0.0.1:1")
            with pytest.raises(ValueError, match="'kept' is recoverable"):
                await topics.publish("kept", "hi", exclude=channel)
            await channel.sink.close()


async def test_a_malformed_exclude_header_is_dropped_and_counted() -> None:
    if reason := missing("redis-server"):
        pytest.skip(reason)
    with RedisServer() as redis:
        client = Redis.from_url(redis.url)
        topics = Topics(RedisBroker(redis.url, prefix="hostile"))
        async with topics, node_of(topics) as url:
            _, got = await joined_client(url, "ann")
            for bad in (b"x", b"x123456789012", b"x123456789012abc:tno", b"x" + b"1" * 40):
                await client.publish(b"hostile:t:room", bad)
            # Another node's name: nobody here is excluded.
            await client.publish(b"hostile:t:room", b"xffffffffffff1:tfine")
            await wait_until(lambda: got == ["fine"], what="the good message came")
            assert topics.stats.malformed == 4
        await client.aclose()
