"""Reconnecting with the trio and anyio clients (``async for channel in
wschannel.trio.connect(url)``), against real servers on 127.0.0.1: a wschannel.trio/anyio
server closed and started again on the same port, and raw servers (a thread per connection)
that refuse the upgrade with a status (503 with ``Retry-After``, 429, 403...) before they
accept it. ``anyio`` runs on its asyncio backend and on trio.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio
from conftest import TIMEOUT
from sync_helpers import accept_upgrade, frame, raw_server, read_request
from test_reconnect import Records, quick, records, refusal

import wschannel.anyio
import wschannel.trio
from wschannel.exceptions import InvalidStatus

__all__ = ["records"]  # the fixture, from test_reconnect

# (the library whose connect and serve are tested, the event loop it runs on)
FLAVOURS = [("trio", "trio"), ("anyio", "asyncio"), ("anyio", "trio")]
IDS = ["trio", "anyio-asyncio", "anyio-trio"]


def library(name: str) -> Any:
    return wschannel.trio if name == "trio" else wschannel.anyio


def run(loop: str, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on ``loop`` within twice TIMEOUT (anyio's primitives work on both)."""

    async def main() -> None:
        with anyio.fail_after(2 * TIMEOUT):
            await body()

    if loop == "trio":
        trio.run(main)
    else:
        anyio.run(main, backend="asyncio")


async def echo(channel: Any) -> None:
    async for message in channel.stream:
        channel.sink.add(message)


def answering(*responses: bytes | None) -> tuple[Callable[[socket.socket], None], list[int]]:
    """A raw handler answering its n-th request with ``responses[n]`` (``None``: accept the
    upgrade, then echo the client's close frame; the last one repeats), and the list where it
    counts the requests."""
    count: list[int] = []

    def handle(sock: socket.socket) -> None:
        response = responses[min(len(count), len(responses) - 1)]
        count.append(1)
        if response is None:
            accept_upgrade(sock)
            echo_close(sock)
            return
        read_request(sock)
        sock.sendall(response)

    return handle, count


def echo_close(sock: socket.socket) -> None:
    """Read the client's (masked) close frame and answer it with the same code."""
    sock.settimeout(TIMEOUT)
    head = _read_exactly(sock, 2)
    assert head[0] == 0x88, head
    length = head[1] & 0x7F
    assert length < 126
    mask, payload = _read_exactly(sock, 4), _read_exactly(sock, length)
    sock.sendall(frame(0x8, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("EOF")
        data += chunk
    return data


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_client_reconnects_to_a_server_restarted_on_the_same_port(
    name: str, loop: str, records: Records
) -> None:
    lib = library(name)
    first_stop = anyio.Event()
    second_stop = anyio.Event()

    async def serve(port: int, stop: anyio.Event, *, task_status: Any) -> None:
        async with lib.serve(echo, "127.0.0.1", port) as server:
            task_status.started(server.port)
            await stop.wait()

    async def body() -> None:
        async with anyio.create_task_group() as group:
            port = await group.start(serve, 0, first_stop)
            url = f"ws://127.0.0.1:{port}"

            async def restart_once_refused() -> None:
                refused = records.event("failed (attempt 1)")
                assert await anyio.to_thread.run_sync(refused.wait, TIMEOUT)
                await group.start(serve, port, second_stop)

            echoed: list[object] = []
            channels = []
            async for channel in lib.connect(url, reconnect_delays=quick(), proxy=None):
                channels.append(channel)
                channel.sink.add(f"hello {len(echoed)}")
                messages = aiter(channel.stream)
                echoed.append(await anext(messages))
                if len(echoed) == 2:
                    break
                group.start_soon(restart_once_refused)
                first_stop.set()  # the server closes: 1001 to the connection
                async for _ in messages:  # until it ends
                    pass
                assert channel.close_code == 1001
            assert echoed == ["hello 0", "hello 1"]
            assert channels[1].close_code is None  # break leaves it open
            channels[1].sink.close(1000)
            await channels[1].sink.done
            assert channels[1].close_code == 1000
            second_stop.set()
        assert records.count(f"Connection to {url} closed (1001); reconnecting in") == 1
        assert records.count(f"Connecting to {url} failed (attempt 1); retrying in") == 1
        assert records.count(f"Connected to {url} after") == 1

    run(loop, body)


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_client_retries_503_and_429_honouring_retry_after(
    name: str, loop: str, records: Records
) -> None:
    handle, requests = answering(
        refusal(503, "Service Unavailable", [("Retry-After", "1")]),
        refusal(429, "Too Many Requests"),
        None,
    )

    async def body() -> None:
        with raw_server(handle) as server:
            started = time.monotonic()
            reconnecting = library(name).connect(server.url, reconnect_delays=quick(), proxy=None)
            channel = await anext(aiter(reconnecting))
            assert time.monotonic() - started >= 1.0  # the 503's Retry-After
            assert len(requests) == 3
            channel.sink.close(1000)
            await channel.sink.done
            assert channel.close_code == 1000

    run(loop, body)
    assert records.count("failed (attempt 1); retrying in 1.00 s") == 1
    assert records.count("failed (attempt 2); retrying in") == 1


@pytest.mark.parametrize("status", [403, 404, 400])
@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_client_does_not_retry_other_4xx(name: str, loop: str, status: int) -> None:
    handle, requests = answering(refusal(status, "No"), None)

    async def body() -> None:
        with raw_server(handle) as server, pytest.raises(InvalidStatus) as caught:
            async for _ in library(name).connect(server.url, reconnect_delays=quick(), proxy=None):
                raise AssertionError("no channel should open")
        assert caught.value.status == status

    run(loop, body)
    assert len(requests) == 1


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_client_raises_the_last_error_when_the_delays_run_out(
    name: str, loop: str, records: Records
) -> None:
    handle, requests = answering(refusal(502, "Bad Gateway"))

    async def body() -> None:
        with raw_server(handle) as server, pytest.raises(InvalidStatus) as caught:
            async for _ in library(name).connect(server.url, reconnect_delays=quick(2), proxy=None):
                raise AssertionError("no channel should open")
        assert caught.value.status == 502

    run(loop, body)
    assert len(requests) == 3  # the first attempt and one per delay
    assert records.count("failed (attempt 3), no more attempts") == 1


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_should_retry_decides_which_errors_are_retried(name: str, loop: str) -> None:
    handle, requests = answering(refusal(404, "Not Found"), None)
    seen: list[Exception] = []

    def rule(error: Exception) -> bool:
        seen.append(error)
        return isinstance(error, InvalidStatus) and error.status == 404

    async def body() -> None:
        with raw_server(handle) as server:
            reconnecting = library(name).connect(
                server.url, reconnect_delays=quick(), should_retry=rule, proxy=None
            )
            channel = await anext(aiter(reconnecting))
            channel.sink.close(1000)
            await channel.sink.done

    run(loop, body)
    assert len(requests) == 2
    assert [getattr(error, "status", None) for error in seen] == [404]

    handle, requests = answering(refusal(503, "Service Unavailable"), None)

    async def refused() -> None:
        with raw_server(handle) as server, pytest.raises(InvalidStatus):
            async for _ in library(name).connect(
                server.url, reconnect_delays=quick(), should_retry=lambda error: False
            ):
                raise AssertionError("no channel should open")

    run(loop, refused)
    assert len(requests) == 1


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_iteration_closes_the_channel_the_loop_comes_back_with(name: str, loop: str) -> None:
    lib = library(name)
    codes: list[int | None] = []
    both_closed = anyio.Event()

    async def record(channel: Any) -> None:
        async for _ in channel.stream:
            pass
        codes.append(channel.close_code)
        if len(codes) == 2:
            both_closed.set()

    async def body() -> None:
        async with lib.serve(record, "127.0.0.1", 0) as server:
            channels = []
            url = f"ws://127.0.0.1:{server.port}"
            async for channel in lib.connect(url, reconnect_delays=quick(), proxy=None):
                channels.append(channel)  # and come back at once: the next one replaces it
                if len(channels) == 2:
                    break
            assert [channel.close_code for channel in channels] == [1000, None]
            channels[1].sink.close(3000)
            await channels[1].sink.done
            await both_closed.wait()
            assert codes == [1000, 3000]

    run(loop, body)


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_iteration_ends_after_a_connection_when_no_delay_is_left(name: str, loop: str) -> None:
    lib = library(name)

    async def body() -> None:
        async with lib.serve(echo, "127.0.0.1", 0) as server:
            url = f"ws://127.0.0.1:{server.port}"
            reconnecting = lib.connect(url, reconnect_delays=lambda: [], proxy=None)
            channels = [channel async for channel in reconnecting]
            assert len(channels) == 1
            assert channels[0].close_code == 1000

    run(loop, body)


@pytest.mark.parametrize(("name", "loop"), FLAVOURS, ids=IDS)
def test_a_cancel_scope_stops_the_waits_between_attempts(name: str, loop: str) -> None:
    # Every attempt refused, with a delay far longer than the scope: cancelled in the sleep.
    handle, requests = answering(refusal(503, "Service Unavailable"))

    async def body() -> None:
        with raw_server(handle) as server:
            with anyio.move_on_after(TIMEOUT / 5) as scope:
                async for _ in library(name).connect(
                    server.url, reconnect_delays=lambda: [10 * TIMEOUT], proxy=None
                ):
                    raise AssertionError("no channel should open")
            assert scope.cancelled_caught

    run(loop, body)
    assert len(requests) == 1


@pytest.mark.parametrize("name", ["trio", "anyio"])
def test_reconnect_options_that_are_not_functions_raise_at_the_call(name: str) -> None:
    with pytest.raises(TypeError, match="reconnect_delays must be a function"):
        library(name).connect("ws://127.0.0.1/", reconnect_delays=[1, 2])
    with pytest.raises(TypeError, match="should_retry must be a function"):
        library(name).connect("ws://127.0.0.1/", should_retry=None)
