"""Load: one server holding 1,000 concurrent connections keeps answering every client."""

from __future__ import annotations

import asyncio
import resource

import pytest
from conftest import SCALE, wait, wait_until

import wschannel
from wschannel.io import IOWebSocketChannel

CONNECTIONS = 1000


@pytest.fixture
def enough_file_descriptors() -> None:
    """Both ends of every connection live in this process: raise the soft limit if needed."""
    needed = 2 * CONNECTIONS + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def _echo(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


@pytest.mark.timeout(60 * SCALE)
@pytest.mark.usefixtures("enough_file_descriptors")
async def test_server_holds_1000_connections_and_answers_every_client() -> None:
    # A listen backlog for all of them: 1,000 clients connect at once, and with the default
    # 100 a server that accepts slowly (a loaded machine) overflows its accept queue; the
    # kernel then drops handshakes, and the clients' retransmissions back off (1, 3, 7 s…)
    # past connect_timeout: a CI run's connect timed out after 10 s.
    async with (
        asyncio.timeout(10 * SCALE),
        wschannel.serve(_echo, "127.0.0.1", 0, backlog=CONNECTIONS) as server,
    ):
        url = f"ws://127.0.0.1:{server.port}"
        clients = [
            IOWebSocketChannel.connect(url, compression=index % 2 == 0)
            for index in range(CONNECTIONS)
        ]
        await asyncio.gather(*(client.ready for client in clients))
        await wait_until(
            lambda: len(server.connections) == CONNECTIONS, 10 * SCALE, what="all are open"
        )

        async def round_trip(index: int, client: IOWebSocketChannel) -> None:
            subscription = aiter(client.stream)
            for turn in range(2):  # every connection answers, twice, all held at once
                client.sink.add(f"{index}-{turn}")
                assert await anext(subscription) == f"{index}-{turn}"

        await asyncio.gather(*(round_trip(index, client) for index, client in enumerate(clients)))
        assert len(server.connections) == CONNECTIONS
        await asyncio.gather(*(client.sink.close(1000) for client in clients))
    for client in clients:
        await wait(client.sink.done)
        assert client.close_code == 1000
