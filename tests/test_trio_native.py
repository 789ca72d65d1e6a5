"""``wschannel.trio`` and ``wschannel.anyio``: connect and serve natively, over loopback.

trio ↔ trio, trio ↔ the asyncio server and client, trio ↔ websockets (both roles), anyio on
its asyncio and trio backends; compression negotiated in the handshake, TLS, close codes,
many clients at once, cancellation, the handshake's errors, redirects and limits.

The tests are plain functions that run trio (or anyio) themselves: pytest-asyncio's auto
mode claims every ``async def`` test for asyncio. Each run is bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
import trio
import trustme
import websockets.sync.client
import websockets.sync.server
from conftest import POLL, SHORT, TIMEOUT

import wschannel
import wschannel.anyio
import wschannel.trio
from wschannel import WebSocketChannelException, status
from wschannel._wschannel import Request
from wschannel.bytestream import ByteStreamWebSocketChannel
from wschannel.exceptions import InvalidStatus
from wschannel.io import IOWebSocketChannel
from wschannel.metrics import OPEN_TIMEOUT, ORIGIN, PROCESS_REQUEST
from wschannel.server import Response
from wschannel.trio import ServerChannel

Body = Callable[[], Coroutine[Any, Any, None]]


def run_trio(body: Body, timeout: float = TIMEOUT) -> None:
    """Run ``body`` under trio within ``timeout``."""

    async def main() -> None:
        with trio.fail_after(timeout):
            await body()

    trio.run(main)


def run_anyio(backend: str, body: Body, timeout: float = TIMEOUT) -> None:
    async def main() -> None:
        with anyio.fail_after(timeout):
            await body()

    anyio.run(main, backend=backend)


async def trio_wait_until(condition: Callable[[], object], *, what: str) -> None:
    """Wait (under trio or anyio) until ``condition()`` holds: for a state the code under
    test reaches on its own, with nothing to await."""
    with anyio.move_on_after(TIMEOUT) as scope:
        while not condition():
            await anyio.sleep(POLL)
    if scope.cancelled_caught:
        raise AssertionError(f"waited {TIMEOUT} s, but not until {what}")


async def echo(channel: ServerChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


def compressed(channel: ByteStreamWebSocketChannel | IOWebSocketChannel) -> bool:
    """Whether permessage-deflate was negotiated on ``channel``'s connection."""
    if isinstance(channel, ByteStreamWebSocketChannel):
        return channel._driver.conn.compressed
    protocol = channel._transport_protocol
    assert protocol is not None and protocol.conn is not None
    return protocol.conn.compressed


# trio ↔ trio.


def test_trio_client_and_server_echo_with_compression() -> None:
    async def body() -> None:
        seen: list[ServerChannel] = []

        async def handler(channel: ServerChannel) -> None:
            seen.append(channel)
            await echo(channel)

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/chat?room=1"
            async with wschannel.trio.connect(url) as channel:
                assert isinstance(channel, ByteStreamWebSocketChannel)
                messages = aiter(channel.stream)
                channel.sink.add("text é")
                channel.sink.add(b"\x00\xff" * 1000)
                assert await anext(messages) == "text é"
                assert await anext(messages) == b"\x00\xff" * 1000
                assert compressed(channel)
                [server_side] = seen
                assert compressed(server_side)
                assert server_side.request.path == "/chat?room=1"
                offer = server_side.request.header("Sec-WebSocket-Extensions")
                assert offer is not None and "permessage-deflate" in offer
                assert server.connections == [server_side]
            assert channel.close_code == status.NORMAL_CLOSURE  # the server's echo of 1000
        assert server.connections == []

    run_trio(body)


def test_trio_compression_off_on_either_side() -> None:
    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0, compression=False) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with wschannel.trio.connect(url) as channel:
                assert not compressed(channel)
        async with wschannel.trio.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with wschannel.trio.connect(url, compression=False) as channel:
                channel.sink.add("plain")
                assert await anext(aiter(channel.stream)) == "plain"
                assert not compressed(channel)

    run_trio(body)


def test_trio_await_connect_then_close_with_a_code() -> None:
    async def body() -> None:
        closed = trio.Event()
        codes: list[tuple[int | None, str | None]] = []

        async def handler(channel: ServerChannel) -> None:
            async for _ in channel.stream:
                pass
            codes.append((channel.close_code, channel.close_reason))
            closed.set()

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            channel = await wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/")
            assert channel.ready.done()
            await channel.sink.close(4000, "bye")
            await closed.wait()
        assert codes == [(4000, "bye")]
        assert channel.close_code == 4000

    run_trio(body)


def test_trio_subprotocols_and_headers() -> None:
    async def body() -> None:
        async def handler(channel: ServerChannel) -> None:
            channel.sink.add(f"{channel.protocol} {channel.request.header('X-Token')}")
            await echo(channel)

        async with wschannel.trio.serve(handler, "127.0.0.1", 0, protocols=["v2", "v1"]) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with wschannel.trio.connect(
                url, protocols=["v1", "v2"], headers={"X-Token": "abc"}
            ) as channel:
                assert channel.protocol == "v1"  # the client's order wins
                assert await anext(aiter(channel.stream)) == "v1 abc"

    run_trio(body)


def test_trio_handler_outcome_sets_the_close_code() -> None:
    async def body() -> None:
        async def handler(channel: ServerChannel) -> None:
            message = await anext(aiter(channel.stream))
            if message == "fail":
                raise RuntimeError("handler failed")
            # returning closes with 1000

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            for message, code in [("fail", status.INTERNAL_SERVER_ERROR), ("ok", 1000)]:
                channel = await wschannel.trio.connect(url)
                channel.sink.add(message)
                assert [m async for m in channel.stream] == []
                await channel.sink.done
                assert channel.close_code == code

    run_trio(body)


def test_trio_async_with_block_that_raises_closes_with_1011() -> None:
    async def body() -> None:
        codes: list[int | None] = []
        done = trio.Event()

        async def handler(channel: ServerChannel) -> None:
            async for _ in channel.stream:
                pass
            codes.append(channel.close_code)
            done.set()

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            with pytest.raises(ValueError, match="in the block"):
                async with wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/"):
                    raise ValueError("in the block")
            await done.wait()
        assert codes == [status.INTERNAL_SERVER_ERROR]

    run_trio(body)


def test_trio_server_with_many_clients_at_once() -> None:
    count = 25

    async def body() -> None:
        all_in = trio.Event()

        async def handler(channel: ServerChannel) -> None:
            if len(channel.server.connections) == count:
                all_in.set()
            await all_in.wait()  # every connection is open at the same time
            await echo(channel)

        async def client(url: str, index: int) -> None:
            async with wschannel.trio.connect(url) as channel:
                channel.sink.add(f"client {index}")
                assert await anext(aiter(channel.stream)) == f"client {index}"

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with trio.open_nursery() as nursery:
                for index in range(count):
                    nursery.start_soon(client, url, index)
            assert all_in.is_set()
            await trio_wait_until(lambda: not server.connections, what="all closed")
            assert server.metrics.connections_total == count

    run_trio(body)


# Cancellation.


def test_trio_cancelled_client_closes_with_1001() -> None:
    async def body() -> None:
        codes: list[int | None] = []
        ended = trio.Event()
        opened = trio.Event()

        async def handler(channel: ServerChannel) -> None:
            async for _ in channel.stream:
                pass
            codes.append(channel.close_code)
            ended.set()

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            async with trio.open_nursery() as nursery:

                async def client() -> None:
                    async with wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/"):
                        opened.set()
                        await trio.sleep_forever()

                nursery.start_soon(client)
                await opened.wait()
                nursery.cancel_scope.cancel()
            await ended.wait()
        assert codes == [status.GOING_AWAY]

    run_trio(body)


def test_trio_cancelled_server_closes_its_connections_with_1001() -> None:
    async def body() -> None:
        handler_cancelled = trio.Event()
        opened = trio.Event()

        async def handler(channel: ServerChannel) -> None:
            opened.set()
            try:
                await trio.sleep_forever()
            finally:
                handler_cancelled.set()

        with trio.CancelScope() as scope:
            async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
                channel = await wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/")
                await opened.wait()
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert handler_cancelled.is_set()
        # The close handshake was done before the server's block ended.
        assert channel.close_code == status.GOING_AWAY
        assert [m async for m in channel.stream] == []

    run_trio(body)


def test_trio_cancelled_connect_leaves_nothing_behind() -> None:
    async def body() -> None:
        # A server that accepts TCP and never answers the upgrade.
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.move_on_after(SHORT) as scope:
            await wschannel.trio.connect(f"ws://127.0.0.1:{port}/")
        assert scope.cancelled_caught
        peer, _ = await listener.accept()
        with trio.fail_after(TIMEOUT):
            while await peer.recv(4096):  # the request, then EOF: the client closed
                pass
        peer.close()
        listener.close()

    run_trio(body)


def test_trio_server_close_from_a_handler_closes_everyone_with_1001() -> None:
    async def body() -> None:
        async def handler(channel: ServerChannel) -> None:
            async for message in channel.stream:
                if message == "shut down":
                    channel.server.close()

        async with wschannel.trio.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            first = await wschannel.trio.connect(url)
            second = await wschannel.trio.connect(url)
            await trio_wait_until(lambda: len(server.connections) == 2, what="both open")
            first.sink.add("shut down")
            for channel in (first, second):
                assert [m async for m in channel.stream] == []
                assert channel.close_code == status.GOING_AWAY
            await server.aclose()
            with pytest.raises(WebSocketChannelException, match="Could not connect"):
                await wschannel.trio.connect(url, connect_timeout=SHORT)

    run_trio(body)


# The opening handshake's errors, trio-style.


def test_trio_connect_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed

    async def body() -> None:
        url = f"ws://127.0.0.1:{port}/"
        with pytest.raises(WebSocketChannelException) as caught:
            await wschannel.trio.connect(url)
        assert url in str(caught.value)
        assert isinstance(caught.value.inner, OSError)

    run_trio(body)


def test_trio_invalid_url_and_options_raise_at_the_call() -> None:
    with pytest.raises(ValueError, match="scheme"):
        wschannel.trio.connect("http://127.0.0.1/")
    with pytest.raises(ValueError, match="ping_interval"):
        wschannel.trio.connect("ws://127.0.0.1/", ping_interval=0)
    with pytest.raises(ValueError, match="max_pending_handshakes"):
        wschannel.trio.serve(echo, "127.0.0.1", 0, max_pending_handshakes=0)


async def test_trio_functions_under_asyncio_say_what_to_use() -> None:
    with pytest.raises(RuntimeError, match=r"wschannel.trio.connect\(\) needs trio"):
        await wschannel.trio.connect("ws://127.0.0.1:1/")
    with pytest.raises(RuntimeError, match=r"wschannel.trio.serve\(\) needs trio"):
        async with wschannel.trio.serve(echo, "127.0.0.1", 0):
            pass


def test_anyio_functions_without_a_loop_say_what_to_use() -> None:
    connecting = wschannel.anyio.connect("ws://127.0.0.1:1/")
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        # Driven by hand, outside any event loop: the check is its first step.
        connecting.__await__().send(None)


def test_trio_refused_upgrade_is_invalid_status() -> None:
    async def body() -> None:
        def refuse(request: Request) -> Response | None:
            if request.path == "/private":
                return (403, [("X-Why", "private")], b"no\n")
            return None

        async with wschannel.trio.serve(
            echo, "127.0.0.1", 0, process_request=refuse, allowed_origins=["https://a.test"]
        ) as server:
            with pytest.raises(InvalidStatus) as caught:
                await wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/private")
            assert caught.value.status == 403
            assert ("X-Why", "private") in caught.value.headers
            with pytest.raises(InvalidStatus) as caught:
                await wschannel.trio.connect(
                    f"ws://127.0.0.1:{server.port}/", headers={"Origin": "https://b.test"}
                )
            assert caught.value.status == 403
            async with wschannel.trio.connect(
                f"ws://127.0.0.1:{server.port}/", headers={"Origin": "https://a.test"}
            ) as channel:
                channel.sink.add("allowed")
                assert await anext(aiter(channel.stream)) == "allowed"
            assert server.metrics.refusals == {(403, PROCESS_REQUEST): 1, (403, ORIGIN): 1}

    run_trio(body)


def test_trio_async_process_request_and_its_errors() -> None:
    async def body() -> None:
        async def check(request: Request) -> Response | None:
            await trio.lowlevel.checkpoint()
            if request.path == "/boom":
                raise RuntimeError("process_request failed")
            return None

        async with wschannel.trio.serve(echo, "127.0.0.1", 0, process_request=check) as server:
            with pytest.raises(InvalidStatus) as caught:
                await wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/boom")
            assert caught.value.status == 500
            async with wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/") as channel:
                assert channel.ready.done()

    run_trio(body)


def test_trio_connect_timeout() -> None:
    async def body() -> None:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(TimeoutError, match="timed out"):
            await wschannel.trio.connect(url, connect_timeout=SHORT)
        listener.close()

    run_trio(body)


def test_trio_server_drops_a_client_silent_past_open_timeout() -> None:
    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0, open_timeout=SHORT) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio_wait_until(lambda: server.pending_handshakes == 1, what="accepted")
            assert await stream.receive_some(100) == b""  # dropped, nothing said
            await trio_wait_until(lambda: server.pending_handshakes == 0, what="counted")
            assert server.metrics.refusals == {(None, OPEN_TIMEOUT): 1}

    run_trio(body)


def test_trio_server_stops_accepting_at_max_pending_handshakes() -> None:
    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0, max_pending_handshakes=1) as server:
            silent = await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio_wait_until(lambda: server.pending_handshakes == 1, what="accepted")
            url = f"ws://127.0.0.1:{server.port}/"
            async with trio.open_nursery() as nursery:
                opened: list[ByteStreamWebSocketChannel] = []

                async def second() -> None:
                    opened.append(await wschannel.trio.connect(url))

                nursery.start_soon(second)
                await trio.sleep(SHORT)  # time is the point: it must stay waiting meanwhile
                assert not opened and server.pending_handshakes == 1
                await silent.aclose()  # the slot frees up: the second one is accepted
            [channel] = opened
            await channel.sink.close()

    run_trio(body)


def test_trio_client_follows_a_redirect() -> None:
    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0) as target:

            def redirect(request: Request) -> Response:
                where = f"ws://127.0.0.1:{target.port}/there"
                return (302, [("Location", where)], b"")

            async with wschannel.trio.serve(
                echo, "127.0.0.1", 0, process_request=redirect
            ) as moved:
                url = f"ws://127.0.0.1:{moved.port}/here"
                async with wschannel.trio.connect(url) as channel:
                    assert [c.request.path for c in target.connections] == ["/there"]
                    channel.sink.add("arrived")
                    assert await anext(aiter(channel.stream)) == "arrived"
                with pytest.raises(InvalidStatus) as caught:
                    await wschannel.trio.connect(url, max_redirects=0)
                assert caught.value.status == 302

    run_trio(body)


def test_trio_server_logs_open_refused_and_close(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with wschannel.trio.serve(
            echo, "127.0.0.1", 0, allowed_origins=["https://a.test"]
        ) as server:
            async with wschannel.trio.connect(f"ws://127.0.0.1:{server.port}/logged"):
                pass
            with pytest.raises(InvalidStatus):
                await wschannel.trio.connect(
                    f"ws://127.0.0.1:{server.port}/", headers={"Origin": "https://b.test"}
                )

    with caplog.at_level(logging.INFO, logger="wschannel.server"):
        run_trio(body)
    records = [r for r in caplog.records if r.getMessage().startswith(("Open", "Closed", "Ref"))]
    messages = [record.getMessage() for record in records]
    assert "Open /logged (compressed)" in messages
    assert any(message.startswith("Closed with 1000 ''") for message in messages)
    assert "Refused GET / with 403" in messages
    for record in records:
        assert str(getattr(record, "peer", "")).startswith("127.0.0.1:")
        assert isinstance(getattr(record, "connection_id", None), int)


# TLS.


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client one that trusts it."""
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


def test_trio_tls_with_compression(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls

    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
            url = f"wss://127.0.0.1:{server.port}/"
            async with wschannel.trio.connect(url, ssl=client_context) as channel:
                channel.sink.add("secret" * 100)
                assert await anext(aiter(channel.stream)) == "secret" * 100
                assert compressed(channel)
            assert channel.close_code == 1000
            # Without trusting the certificate: the TLS error, named.
            with pytest.raises(WebSocketChannelException, match="Could not connect"):
                await wschannel.trio.connect(url)

    run_trio(body)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_tls(backend: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls

    async def body() -> None:
        async with wschannel.anyio.serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
            url = f"wss://127.0.0.1:{server.port}/"
            async with wschannel.anyio.connect(url, ssl=client_context) as channel:
                channel.sink.add("over tls")
                assert await anext(aiter(channel.stream)) == "over tls"
            assert channel.close_code == 1000

    run_anyio(backend, body)


# anyio, on both backends.


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_client_and_server(backend: str) -> None:
    async def body() -> None:
        async def handler(channel: wschannel.anyio.ServerChannel) -> None:
            channel.sink.add(f"hello from {len(channel.server.connections)}")
            await echo(channel)

        async with wschannel.anyio.serve(handler, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"
            async with wschannel.anyio.connect(url) as channel:
                messages = aiter(channel.stream)
                assert await anext(messages) == "hello from 1"
                channel.sink.add("x" * 100_000)
                assert await anext(messages) == "x" * 100_000
                assert compressed(channel)
            assert channel.close_code == 1000

    run_anyio(backend, body)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_cancellation_closes_with_1001(backend: str) -> None:
    async def body() -> None:
        codes: list[int | None] = []
        ended = anyio.Event()
        opened = anyio.Event()

        async def handler(channel: wschannel.anyio.ServerChannel) -> None:
            async for _ in channel.stream:
                pass
            codes.append(channel.close_code)
            ended.set()

        async with wschannel.anyio.serve(handler, "127.0.0.1", 0) as server:
            async with anyio.create_task_group() as group:

                async def client() -> None:
                    async with wschannel.anyio.connect(f"ws://127.0.0.1:{server.port}/"):
                        opened.set()
                        await anyio.sleep_forever()

                group.start_soon(client)
                await opened.wait()
                group.cancel_scope.cancel()
            await ended.wait()
        assert codes == [status.GOING_AWAY]

    run_anyio(backend, body)


# Across flavours and libraries.


async def test_trio_client_with_the_asyncio_server() -> None:
    seen: list[IOWebSocketChannel] = []
    server_compressed: list[bool] = []

    async def handler(channel: IOWebSocketChannel) -> None:
        seen.append(channel)
        server_compressed.append(compressed(channel))
        async for message in channel.stream:
            channel.sink.add(f"asyncio got {message!r}")

    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.port}/"

        async def client() -> tuple[str | bytes, bool]:
            async with wschannel.trio.connect(url) as channel:
                channel.sink.add("from trio")
                return await anext(aiter(channel.stream)), compressed(channel)

        def in_trio() -> tuple[str | bytes, bool]:
            return trio.run(client)

        reply, client_compressed = await asyncio.wait_for(asyncio.to_thread(in_trio), TIMEOUT)
        assert reply == "asyncio got 'from trio'"
        assert client_compressed
        [channel] = seen
        assert server_compressed == [True]
        await asyncio.wait_for(channel.sink.done, TIMEOUT)
        assert channel.close_code == 1000


async def test_asyncio_client_with_the_trio_server() -> None:
    ports: list[int] = []
    ready = threading.Event()
    stop = threading.Event()

    async def serve() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0) as server:
            ports.append(server.port)
            ready.set()
            while not stop.is_set():  # bounded by run_trio's timeout
                await trio.sleep(POLL)

    thread = threading.Thread(target=run_trio, args=(serve,), daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, TIMEOUT)
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{ports[0]}/")
        await asyncio.wait_for(channel.ready, TIMEOUT)
        channel.sink.add("from asyncio")
        assert await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT) == "from asyncio"
        assert compressed(channel)
        await asyncio.wait_for(channel.sink.close(3001, "done"), TIMEOUT)
        assert channel.close_code == 3001
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, TIMEOUT)


def test_websockets_client_with_the_trio_server() -> None:
    async def body() -> None:
        async with wschannel.trio.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}/"

            def client() -> tuple[str, object, int | None]:
                with websockets.sync.client.connect(url, open_timeout=TIMEOUT) as websocket:
                    response = websocket.response
                    assert response is not None
                    extensions = response.headers.get("Sec-WebSocket-Extensions")
                    websocket.send("from websockets " * 50)
                    reply = websocket.recv(timeout=TIMEOUT)
                    assert isinstance(reply, str)
                    websocket.close(4001, "enough")
                    return reply, extensions, websocket.close_code

            reply, extensions, code = await trio.to_thread.run_sync(client)
            assert reply == "from websockets " * 50
            assert isinstance(extensions, str) and extensions.startswith("permessage-deflate")
            assert code == 4001

    run_trio(body)


def test_trio_client_with_the_websockets_server() -> None:
    requests: list[str | None] = []

    def handler(websocket: websockets.sync.server.ServerConnection) -> None:
        request = websocket.request
        assert request is not None
        requests.append(request.headers.get("Sec-WebSocket-Extensions"))
        for message in websocket:
            websocket.send(message)

    with websockets.sync.server.serve(handler, "127.0.0.1", 0) as ws_server:
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        port = ws_server.socket.getsockname()[1]

        async def body() -> None:
            async with wschannel.trio.connect(f"ws://127.0.0.1:{port}/") as channel:
                channel.sink.add("to websockets " * 50)
                assert await anext(aiter(channel.stream)) == "to websockets " * 50
                assert compressed(channel)
            assert channel.close_code == 1000

        try:
            run_trio(body)
        finally:
            ws_server.shutdown()
            thread.join(TIMEOUT)
    [offer] = requests
    assert offer is not None and offer.startswith("permessage-deflate")


# What the handshake leaves and what the writer holds.


def test_trio_client_reads_frames_sent_with_the_101() -> None:
    """The first frames in the same read as the 101 response reach the stream (the
    handshake's leftover)."""

    async def body() -> None:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"

        async def peer() -> None:
            sock, _ = await listener.accept()
            request = b""
            while b"\r\n\r\n" not in request:
                request += await sock.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = wschannel.WebSocketChannel.sign_key(key)
            response = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
            await sock.send(response + b"\x81\x05first" + b"\x88\x02\x03\xe8")
            echo = b""
            while len(echo) < 8:  # the client's masked close echo: 2 + 4 + 2 bytes
                data = await sock.recv(4096)
                assert data, "the client left without echoing the close"
                echo += data
            sock.close()  # the server closes TCP first (RFC 6455 §7.1.1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            channel = await wschannel.trio.connect(url)
            assert [m async for m in channel.stream] == ["first"]
            assert channel.close_code == 1000
        listener.close()

    run_trio(body)


def test_trio_server_stops_reading_from_a_client_that_does_not_read() -> None:
    """The writer task's queue over ``write_limit`` tells the session, which stops reading
    from that client: echoes it does not read cannot pile up in the server."""
    limit = 1 << 16
    max_queue = 2

    async def body() -> None:
        served: list[ServerChannel] = []

        async def handler(channel: ServerChannel) -> None:
            served.append(channel)
            await echo(channel)

        # close_timeout: a failing assertion leaves the block while the client, which reads
        # nothing, is still there; the server's closing handshake with it would outlast the
        # test's deadline, and the timeout would hide the assertion.
        async with wschannel.trio.serve(
            handler,
            "127.0.0.1",
            0,
            write_limit=limit,
            max_queue=max_queue,
            compression=False,
            close_timeout=SHORT,
        ) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            await stream.send_all(
                (
                    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    f"Sec-WebSocket-Key: {key}\r\n\r\n"
                ).encode()
            )
            await trio_wait_until(lambda: served, what="the handler started")
            [channel] = served
            driver = channel._driver
            payload = b"\x00" * 60_000
            frame = b"\x82\xfe" + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload

            async def send_without_reading() -> None:
                while True:  # until the kernel's buffers are full, then blocked, cancelled
                    await stream.send_all(frame)

            streams = driver.streams

            def paused_for_writes() -> bool:
                # Both at once: a full stream pauses reading too. Until every kernel buffer
                # on the way is full the writer may still drain under the limit, and reading
                # resume (under load a CI run found the queue at 60,004 < 65,536 right after
                # the first pause); so the client goes on sending meanwhile.
                return streams.writes_waiting() and not driver._reading.is_open

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_without_reading)
                await trio_wait_until(paused_for_writes, what="reading paused for the writes")
                nursery.cancel_scope.cancel()
            # What waits for the client: at most the limit, the echo being sent, and the
            # echoes of the messages the stream had taken when reading paused.
            queued = streams._queued  # type: ignore[attr-defined]
            assert queued <= limit + (max_queue + 2) * len(frame)
            assert server.metrics.write_buffer_high_water > limit
            # The client goes away without reading: the blocked write fails, and the server
            # finds the connection lost although it is not reading.
            await trio.aclose_forcefully(stream)
            await channel.sink.done
            assert channel.close_code == status.ABNORMAL_CLOSURE

    run_trio(body)
