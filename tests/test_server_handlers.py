"""Handlers reach their server: ``channel.server`` (its connections, ``broadcast``) on the
asyncio, blocking and trio servers, and ``examples/chat.py`` run over loopback with three
clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from conftest import TIMEOUT, next_message, wait, wait_until, wait_until_sync

import wschannel
import wschannel.server
import wschannel.sync
import wschannel.sync.server
import wschannel.trio
from wschannel import status
from wschannel.defaults import DEFAULT_WRITE_LIMIT
from wschannel.io import IOWebSocketChannel

CHAT = Path(__file__).resolve().parent.parent / "examples" / "chat.py"

# The asyncio server.


async def relay(channel: wschannel.server.ServerChannel) -> None:
    """Everything a client says goes to the others."""
    async for message in channel.stream:
        channel.server.broadcast(message, exclude=channel)


async def open_clients(url: str, count: int) -> list[IOWebSocketChannel]:
    clients = [IOWebSocketChannel.connect(url) for _ in range(count)]
    await wait(asyncio.gather(*(client.ready for client in clients)))
    return clients


async def test_asyncio_handler_reaches_its_server() -> None:
    seen: list[wschannel.server.ServerChannel] = []

    async def handler(channel: wschannel.server.ServerChannel) -> None:
        seen.append(channel)
        await relay(channel)

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        clients = await open_clients(f"ws://127.0.0.1:{server.port}/", 3)
        await wait_until(lambda: len(server.connections) == 3, what="three open")
        assert all(channel.server is server for channel in seen)
        assert set(server.connections) == set(seen)
        clients[0].sink.add("hello")
        clients[0].sink.add(b"\x00bytes")
        for other in clients[1:]:
            subscription = aiter(other.stream)
            assert await next_message(subscription) == "hello"
            assert await next_message(subscription) == b"\x00bytes"
        # The sender gets nothing back: the next thing it reads is another's message.
        clients[1].sink.add("from 1")
        assert await next_message(aiter(clients[0].stream)) == "from 1"
        for client in clients:
            await wait(client.sink.close())


async def test_asyncio_server_broadcast_counts_and_excludes() -> None:
    async with wschannel.serve(relay, "127.0.0.1", 0, compression=False) as server:
        clients = await open_clients(f"ws://127.0.0.1:{server.port}/", 3)
        await wait_until(lambda: len(server.connections) == 3, what="three open")
        first, second, _ = server.connections
        assert server.broadcast("all") == 3
        assert server.broadcast("two", exclude=first) == 2
        assert server.broadcast("one", exclude=[first, second]) == 1
        assert server.broadcast("none", exclude=server.connections) == 0
        with pytest.raises(TypeError, match="Cannot broadcast int"):
            server.broadcast(3)  # type: ignore[arg-type]
        assert server.broadcast("end") == 3
        counts: dict[str | bytes, int] = {}
        for client in clients:
            subscription = aiter(client.stream)
            while (message := await next_message(subscription)) != "end":
                counts[message] = counts.get(message, 0) + 1
            await wait(client.sink.close())
        assert counts == {"all": 3, "two": 2, "one": 1}


async def test_a_client_channel_has_no_server() -> None:
    async with wschannel.serve(relay, "127.0.0.1", 0) as server:
        client = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}/")
        await wait(client.ready)
        assert not hasattr(client, "server")  # only a server's handler gets a ServerChannel
        await wait(client.sink.close())


# The blocking server.


@contextlib.contextmanager
def sync_server(
    handler: wschannel.sync.server.Handler, **options: object
) -> Iterator[wschannel.sync.server.Server]:
    server = wschannel.sync.serve(handler, "127.0.0.1", 0, **options)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown(TIMEOUT)
        thread.join(TIMEOUT)


def sync_relay(channel: wschannel.sync.server.ServerChannel) -> None:
    for message in channel.stream:
        channel.server.broadcast(message, exclude=channel)


def test_sync_handler_reaches_its_server() -> None:
    with sync_server(sync_relay) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        clients = [wschannel.sync.connect(url) for _ in range(3)]
        wait_until_sync(lambda: len(server.connections) == 3, what="three open")
        assert all(channel.server is server for channel in server.connections)
        clients[0].sink.add("hello")
        clients[0].sink.add(b"\x00bytes")
        for other in clients[1:]:
            assert other.receive(timeout=TIMEOUT) == "hello"
            assert other.receive(timeout=TIMEOUT) == b"\x00bytes"
        clients[2].sink.add("from 2")
        assert clients[0].receive(timeout=TIMEOUT) == "from 2"
        for client in clients:
            client.sink.close()
            client.wait_closed(TIMEOUT)


def test_sync_broadcast_does_not_block_on_a_client_that_does_not_read() -> None:
    """A client that does not read fills its socket; broadcasts then skip it instead of
    blocking the sender (they queue for the writer thread, bounded by the write limit)."""
    big = "x" * 60_000  # under the limit: a client that reads is never skipped
    with sync_server(sync_relay, compression=None) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        reader = wschannel.sync.connect(url)
        stuck = wschannel.sync.connect(url)  # its application never reads
        wait_until_sync(lambda: len(server.connections) == 2, what="both open")
        reader_address, stuck_address = reader._sock.getsockname(), stuck._sock.getsockname()
        [reader_side] = [c for c in server.connections if c._sock.getpeername() == reader_address]
        [stuck_side] = [c for c in server.connections if c._sock.getpeername() == stuck_address]
        counts = []
        for _ in range(2000):  # bounded: its buffers fill within far fewer (a few MB)
            wait_until_sync(lambda: reader_side.unsent() == 0, what="the reader took it all")
            counts.append(server.broadcast(big))
            assert reader.receive(timeout=TIMEOUT) == big
            if counts[-1] == 1:
                break
        assert counts[-1] == 1, "the client that does not read was never skipped"
        assert counts[0] == 2
        # Queued only while under the limit: at most the limit and one message wait for it.
        assert stuck_side.unsent() <= DEFAULT_WRITE_LIMIT + len(big) + 16
        reader.sink.close()
        stuck.sink.close()
        reader.wait_closed(TIMEOUT)
        stuck.wait_closed(TIMEOUT)


# The trio server.


def test_trio_handler_reaches_its_server() -> None:
    async def handler(channel: wschannel.trio.ServerChannel) -> None:
        async for message in channel.stream:
            channel.server.broadcast(message, exclude=channel)

    async def body() -> None:
        async with wschannel.trio.serve(handler, "127.0.0.1", 0, compression=False) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            clients = [await wschannel.trio.connect(url) for _ in range(3)]
            with trio.fail_after(TIMEOUT):
                while len(server.connections) < 3:
                    await trio.sleep(0.005)
            assert all(channel.server is server for channel in server.connections)
            clients[0].sink.add("hello")
            for other in clients[1:]:
                assert await anext(aiter(other.stream)) == "hello"
            assert server.broadcast("all") == 3
            assert server.broadcast("two", exclude=server.connections[0]) == 2
            for client in clients:
                await client.sink.close()

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            await body()

    trio.run(main)


# examples/chat.py, as a program, with three clients.


@contextlib.asynccontextmanager
async def chat_program(*args: str) -> AsyncIterator[str]:
    """``examples/chat.py --port 0 *args`` running; its URL. Stopped with SIGINT, as Ctrl-C
    stops it, and it must then exit cleanly."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHAT),
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 4 * TIMEOUT)
        assert line.startswith(b"chat: listening on ws://"), line
        yield line.decode().split()[-1]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            out, err = await asyncio.wait_for(process.communicate(), 4 * TIMEOUT)
        except TimeoutError:
            process.kill()
            raise
    assert process.returncode == 0, err.decode()
    assert b"chat: stopped" in out


@pytest.mark.parametrize("flavour", [[], ["--trio"]], ids=["asyncio", "trio"])
async def test_chat_example_with_three_clients(flavour: list[str]) -> None:
    async with chat_program(*flavour) as url:
        alice = IOWebSocketChannel.connect(f"{url}?name=alice")
        await wait(alice.ready)
        alice_hears = aiter(alice.stream)
        bob = IOWebSocketChannel.connect(f"{url}?name=bob")
        await wait(bob.ready)
        assert await next_message(alice_hears) == "bob joined"
        bob_hears = aiter(bob.stream)
        carol = IOWebSocketChannel.connect(f"{url}?name=carol")
        await wait(carol.ready)
        carol_hears = aiter(carol.stream)
        assert await next_message(alice_hears) == "carol joined"
        assert await next_message(bob_hears) == "carol joined"

        alice.sink.add("hi all")
        assert await next_message(bob_hears) == "alice: hi all"
        assert await next_message(carol_hears) == "alice: hi all"
        bob.sink.add("hi alice")
        assert await next_message(alice_hears) == "bob: hi alice"
        assert await next_message(carol_hears) == "bob: hi alice"
        # Nobody hears themselves: alice's next message after "hi all" was bob's.
        carol.sink.add("bye")
        assert await next_message(alice_hears) == "carol: bye"
        assert await next_message(bob_hears) == "carol: bye"
        await wait(carol.sink.close())
        assert await next_message(alice_hears) == "carol left"
        assert await next_message(bob_hears) == "carol left"
    # Ctrl-C: the server went away, and said so.
    for client, heard in ((alice, alice_hears), (bob, bob_hears)):
        assert [message async for message in heard] == []
        await wait(client.sink.done)
        assert client.close_code == status.GOING_AWAY


async def ctrl_c_during_traffic(flavour: list[str]) -> list[int | None]:
    """examples/chat.py with three clients talking at once, stopped with SIGINT while they
    talk; the clients' close codes."""
    stop = asyncio.Event()
    heard = [0, 0, 0]

    async def listen(index: int, client: IOWebSocketChannel) -> None:
        async for _ in client.stream:
            heard[index] += 1

    async def talk(client: IOWebSocketChannel) -> None:
        for sent in range(200_000):  # bounded; stopped once the program has exited
            if stop.is_set():
                return
            client.sink.add(f"message {sent}")  # dropped once the server has closed
            if sent % 20 == 0:
                await asyncio.sleep(0)

    async with chat_program(*flavour) as url:
        clients = await open_clients(url, 3)
        listeners = [asyncio.create_task(listen(i, c)) for i, c in enumerate(clients)]
        talkers = [asyncio.create_task(talk(c)) for c in clients]
        # Busy: each client has heard the others for a while. Ctrl-C comes as the block
        # ends, with the talkers still talking.
        await wait_until(lambda: min(heard) >= 300, what="every client heard 300 messages")
    stop.set()
    await wait(asyncio.gather(*talkers))
    await wait(asyncio.gather(*listeners))
    for client in clients:
        await wait(client.sink.done)
    return [client.close_code for client in clients]


@pytest.mark.parametrize("flavour", [[], ["--trio"]], ids=["asyncio", "trio"])
async def test_chat_example_closes_every_client_with_1001_at_ctrl_c_during_traffic(
    flavour: list[str],
) -> None:
    """Ctrl-C while the server relays a stream of messages: the signal then comes while a
    connection's task runs rather than the main one. Every client still gets its 1001 and
    the program exits cleanly (chat_program checks). Under trio, which raises
    KeyboardInterrupt in whichever task runs, the example lost a client's connection (1006)
    and exited 1 in most rounds here, and once in a CI run with the three-client
    test above."""
    for _ in range(4):
        assert await ctrl_c_during_traffic(flavour) == [status.GOING_AWAY] * 3
