"""Logging: each connection's records on wschannel.server / wschannel.client, with its peer
address and connection id."""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import wait, wait_until

import wschannel
import wschannel.sync.server
from wschannel import WebSocketChannelException
from wschannel.io import IOWebSocketChannel
from wschannel.sync import SyncWebSocketChannel


async def _echo_once(channel: IOWebSocketChannel) -> None:
    async for message in channel.stream:
        channel.sink.add(message)
        await channel.sink.close(4000, "done")


def records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == name]


async def test_server_logs_open_and_close_with_peer_and_connection_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wschannel.server")
    async with wschannel.serve(_echo_once, "127.0.0.1", 0, protocols=["chat"]) as server:
        url = f"ws://127.0.0.1:{server.port}/room"
        channel = IOWebSocketChannel.connect(
            url, protocols=["chat"], headers={"X-Forwarded-For": "203.0.113.7"}
        )
        channel.sink.add("hi")
        await wait(channel.sink.done)
        await wait_until(
            lambda: len(records(caplog, "wschannel.server")) >= 2, what="the close is logged"
        )
    opened, closed = records(caplog, "wschannel.server")[:2]
    assert opened.levelno == closed.levelno == logging.INFO
    assert opened.getMessage().startswith("Open /room (protocol chat, compressed)")
    assert closed.getMessage().startswith("Closed with 4000 'done' after ")
    local_port = channel._transport_protocol.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    for record in (opened, closed):
        assert record.peer == f"127.0.0.1:{local_port}"  # type: ignore[attr-defined]
        assert record.forwarded_for == "203.0.113.7"  # type: ignore[attr-defined]
    assert opened.connection_id == closed.connection_id  # type: ignore[attr-defined]
    assert isinstance(opened.connection_id, int)  # type: ignore[attr-defined]


async def test_server_connections_get_distinct_ids(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wschannel.server")
    async with wschannel.serve(_echo_once, "127.0.0.1", 0) as server:
        for _ in range(3):
            channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
            channel.sink.add("x")
            await wait(channel.sink.done)
    ids = {record.connection_id for record in records(caplog, "wschannel.server")}  # type: ignore[attr-defined]
    assert len(ids - {None}) == 3


async def test_server_logs_a_refused_upgrade_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wschannel.server")
    async with wschannel.serve(
        _echo_once, "127.0.0.1", 0, allowed_origins=["https://ok.example"]
    ) as server:
        channel = IOWebSocketChannel.connect(
            f"ws://127.0.0.1:{server.port}/x", headers={"Origin": "https://evil.example"}
        )
        with pytest.raises(WebSocketChannelException):
            await wait(channel.ready)
    (refused,) = records(caplog, "wschannel.server")
    assert refused.levelno == logging.INFO
    assert refused.getMessage() == "Refused GET /x with 403"
    assert refused.peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]


async def test_server_logs_a_handler_exception_at_error(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(channel: IOWebSocketChannel) -> None:
        raise ValueError("bad handler")

    caplog.set_level(logging.INFO, logger="wschannel.server")
    async with wschannel.serve(handler, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        await wait(channel.sink.done)
    (error,) = [r for r in records(caplog, "wschannel.server") if r.levelno == logging.ERROR]
    assert error.exc_info is not None
    assert "bad handler" in str(error.exc_info[1])
    assert isinstance(error.connection_id, int)  # type: ignore[attr-defined]


async def test_server_logs_nothing_below_warning_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with wschannel.serve(_echo_once, "127.0.0.1", 0) as server:
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{server.port}")
        channel.sink.add("quiet")
        await wait(channel.sink.done)
    assert records(caplog, "wschannel.server") == []


async def test_client_logs_open_and_close_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wschannel.client")
    async with wschannel.serve(_echo_once, "127.0.0.1", 0) as server:
        port = server.port
        channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{port}")
        channel.sink.add("hi")
        await wait(channel.sink.done)
    opened, closed = records(caplog, "wschannel.client")
    assert opened.levelno == closed.levelno == logging.DEBUG
    assert opened.getMessage().startswith("Open")
    assert closed.getMessage().startswith("Closed with 4000 'done' after ")
    assert opened.peer == f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    assert opened.connection_id == closed.connection_id  # type: ignore[attr-defined]


async def test_sync_server_logs_open_close_and_refusals_with_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(channel: SyncWebSocketChannel) -> None:
        channel.sink.add(channel.receive())

    caplog.set_level(logging.INFO, logger="wschannel.sync.server")
    server = wschannel.sync.server.serve(handler, "127.0.0.1", 0, allowed_origins=["a.example"])
    thread = asyncio.get_running_loop().run_in_executor(None, server.serve_forever)
    try:
        url = f"ws://127.0.0.1:{server.port}/sync"
        channel = IOWebSocketChannel.connect(url)
        channel.sink.add("hello")
        await wait(channel.sink.done)
        refused = IOWebSocketChannel.connect(url, headers={"Origin": "b.example"})
        with pytest.raises(WebSocketChannelException):
            await wait(refused.ready)
        await wait_until(
            lambda: len(records(caplog, "wschannel.sync.server")) >= 3,
            what="the open, the close and the refusal are logged",
        )
    finally:
        await asyncio.to_thread(server.shutdown)
        await wait(thread)
    messages = [record.getMessage() for record in records(caplog, "wschannel.sync.server")]
    # The connection's thread logs its close while the refused request may already be
    # logged by the accepting thread: the two connections' lines interleave either way.
    refusal = "Refused GET /sync with 403"
    assert refusal in messages
    opened, closed = [message for message in messages if message != refusal]
    assert opened == "Open /sync (compressed)"
    assert closed.startswith("Closed with 1000 '' after ")
    assert len(messages) == 3
    for record in records(caplog, "wschannel.sync.server"):
        assert record.peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
