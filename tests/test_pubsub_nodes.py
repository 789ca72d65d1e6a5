"""wschannel.pubsub across processes: three node processes (tests/pubsub/node.py) on loopback
with clients spread over them, through a real Redis and a real NATS; a broker restart, a
killed node, and worker processes sharing one port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest
from conftest import TIMEOUT, wait_until
from pubsub.brokers import BrokerProcess, NatsServer, RedisServer, missing
from pubsub.clients import ROOT, Client, Node

EXAMPLE = ROOT / "examples" / "pubsub_chat.py"


def start_broker(kind: str) -> BrokerProcess:
    if reason := missing(f"{kind}-server"):
        pytest.skip(reason)
    return RedisServer() if kind == "redis" else NatsServer()


@pytest.fixture(params=["redis", "nats"])
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """A broker of the test's own (it may restart it)."""
    with start_broker(request.param) as server:
        yield server


@pytest.fixture
def nodes(broker: BrokerProcess) -> Iterator[list[Node]]:
    """Three nodes of the test's own (it may kill one)."""
    started = [Node(broker.url) for _ in range(3)]
    try:
        yield Node.start_all(started)
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="module", params=["redis", "nats"])
def shared_nodes(request: pytest.FixtureRequest) -> Iterator[list[Node]]:
    """Three nodes and their broker, for the tests that leave both as they found them (each
    on topics of its own): starting Python processes is slow on a loaded machine."""
    with start_broker(request.param) as server:
        started = [Node(server.url) for _ in range(3)]
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


async def spread(nodes: list[Node], clients: list[Client], count: int, topic: str) -> None:
    """``count`` clients, round robin over ``nodes``, each joined to ``topic``."""
    for index in range(count):
        clients.append(Client(nodes[index % len(nodes)].url))
    await asyncio.gather(*(client.join(topic) for client in clients))


def reached_all(message: str, clients: list[Client]) -> bool:
    return all(message in client.messages for client in clients)


async def test_every_subscriber_on_every_node_gets_every_message_once_in_order(
    shared_nodes: list[Node], clients: list[Client]
) -> None:
    await spread(shared_nodes, clients, 9, "room")
    before = [await client.ask(stats=True) for client in clients[:3]]  # one per node
    for round_ in range(5):
        replies = await asyncio.gather(
            *(client.publish("room", f"{index}:{round_}") for index, client in enumerate(clients))
        )
        assert all(reply["reply"] == "published" for reply in replies)
    expected = sorted(f"{index}:{round_}" for index in range(9) for round_ in range(5))
    for client in clients:
        await client.wait_for(45)
        assert sorted(client.messages) == expected  # each once
        for index in range(9):  # each publisher's in its order
            mine = [m for m in client.messages if m.startswith(f"{index}:")]
            assert mine == [f"{index}:{round_}" for round_ in range(5)]
    # Each node subscribed once at the broker and framed each message once for its clients.
    for client, earlier in zip(clients[:3], before, strict=True):
        stats = await client.ask(stats=True)
        assert stats["received"] - earlier["received"] == 45
        assert stats["delivered"] - earlier["delivered"] == 45 * 3


async def test_a_topic_reaches_only_its_subscribers(
    shared_nodes: list[Node], clients: list[Client]
) -> None:
    nodes = shared_nodes
    await spread(nodes, clients, 3, "a")
    others = [Client(nodes[0].url), Client(nodes[2].url)]
    clients.extend(others)
    await asyncio.gather(*(client.join("b") for client in others))
    await clients[1].publish("b", "to b")
    await clients[0].publish("a", "to a")
    for client in clients[:3]:
        await client.wait_for(1)
    for client in others:
        await client.wait_for(1)
    assert [c.messages for c in clients] == [["to a"]] * 3 + [["to b"]] * 2


async def eventually_published(publishers: list[Client], topic: str, clients: list[Client]) -> None:
    """Publish probes through each publisher until one from each reaches every client (every
    node is back at the broker, subscribing and publishing). A publish may fail meanwhile:
    the node says so (BrokerUnavailable), and the probe is sent again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 4 * TIMEOUT
    for publisher in publishers:
        attempt = 0
        while True:
            assert loop.time() < deadline, "the nodes did not come back to the broker"
            probe = f"probe {publishers.index(publisher)} {attempt}"
            reply = await publisher.publish(topic, probe)
            if reply["reply"] == "published":
                try:
                    await wait_until(partial(reached_all, probe, clients), 0.5)
                    break
                except AssertionError:
                    pass
            else:
                assert "Cannot" in reply["error"]  # BrokerUnavailable: said, not hidden
                await asyncio.sleep(0.05)
            attempt += 1


async def test_nodes_reconnect_and_resubscribe_after_a_broker_restart(
    broker: BrokerProcess, nodes: list[Node], clients: list[Client]
) -> None:
    await spread(nodes, clients, 6, "room")
    await clients[0].publish("room", "before")
    for client in clients:
        await client.wait_for(1)
    broker.restart(kill=True)  # SIGKILL: no goodbye; Redis without persistence loses all
    await eventually_published(clients[:3], "room", clients)
    marks = [len(client.messages) for client in clients]
    for index in range(10):
        reply = await clients[index % 6].publish("room", f"after {index}")
        assert reply["reply"] == "published"
    for client, mark in zip(clients, marks, strict=True):
        await client.wait_for(mark + 10)
        # Each once (publishers on different nodes: no order between them).
        assert sorted(client.messages[mark:]) == [f"after {index}" for index in range(10)]
    for client in clients[:3]:  # each node says it lost the broker
        stats = await client.ask(stats=True)
        assert stats["outages"] == 1


async def test_the_other_nodes_carry_on_when_one_is_killed(
    nodes: list[Node], clients: list[Client]
) -> None:
    await spread(nodes, clients, 6, "room")
    nodes[2].kill()  # SIGKILL: its connections drop, its broker connection too
    lost = [clients[2], clients[5]]
    for client in lost:
        assert await asyncio.wait_for(client.closed, TIMEOUT) == 1006
    alive = [c for c in clients if c not in lost]
    for index, client in enumerate(alive):
        assert (await client.publish("room", f"m{index}"))["reply"] == "published"
    for client in alive:
        await client.wait_for(4)
        assert sorted(client.messages) == ["m0", "m1", "m2", "m3"]
    newcomer = Client(nodes[0].url)
    clients.append(newcomer)
    await newcomer.join("room")
    await alive[0].publish("room", "late")
    for client in [*alive, newcomer]:
        await wait_until(partial(reached_all, "late", [client]), what="late arrived")


async def test_the_chat_example_runs_on_two_workers_through_redis(clients: list[Client]) -> None:
    with start_broker("redis") as redis:
        chat = Node("--port", "0", "--workers", "2", "--redis", redis.url, script=EXAMPLE)
        Node.start_all([chat])
        try:
            alice, bob = Client(chat.url), Client(chat.url)
            clients += [alice, bob]
            for client in (alice, bob):
                client.channel.sink.add(json.dumps({"join": "lobby"}))
                client.channel.sink.add(json.dumps({"join": "history"}))
            # Both joined before anyone speaks: a plain topic's message reaches the
            # subscribers its broker knows when it is published, and the two may be on
            # different workers, each subscribing to Redis at its own pace (under load the
            # other worker's SUBSCRIBE could come after the PUBLISH, and a message be missed).
            for client in (alice, bob):
                await client.wait_for(2, what="(the two joins' answers)")
            alice.channel.sink.add(json.dumps({"say": "hi", "to": "lobby"}))
            bob.channel.sink.add(json.dumps({"say": "hello", "to": "history"}))
            for client in (alice, bob):
                await client.wait_for(4)  # two answers, then the two messages
                objects = [json.loads(m) for m in client.messages if m.startswith("{")]
                assert [o["joined"] for o in objects if "joined" in o] == ["lobby", "history"]
                history = [o for o in objects if "offset" in o]
                assert [(o["offset"], o["data"][-7:]) for o in history] == [(1, ": hello")]
                assert any(m.endswith(": hi") for m in client.messages if not m.startswith("{"))
            bob.channel.sink.add(json.dumps({"who": "lobby"}))  # presence, across the workers
            await bob.wait_for(5)
            who = json.loads(bob.messages[4])
            speakers = {m.split(":")[0] for m in bob.messages if not m.startswith("{")}
            assert who["who"] == "lobby"
            assert len(who["here"]) == 2
            assert speakers <= set(who["here"])
        finally:
            chat.stop()


@pytest.fixture
def workers_node(broker: BrokerProcess) -> Iterator[Node]:
    node = Node(broker.url, "--workers", "2")
    Node.start_all([node])
    yield node
    node.stop()


async def test_worker_processes_share_a_port_and_fan_out_through_the_broker(
    workers_node: Node, clients: list[Client]
) -> None:
    await spread([workers_node], clients, 16, "room")
    pids: set[Any] = set()
    for client in clients:
        pids.add((await client.ask(stats=True))["pid"])
    assert len(pids) == 2  # the kernel spread the 16 connections over both workers
    await clients[0].publish("room", "hello")
    for client in clients:
        await client.wait_for(1)
        assert client.messages == ["hello"]
    workers_node.stop()  # SIGTERM: each worker closes its connections with 1001
    codes = await asyncio.gather(*(asyncio.wait_for(c.closed, TIMEOUT) for c in clients))
    assert set(codes) == {1001}
