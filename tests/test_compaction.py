"""Idle compressed connections free their compressor and decompressor (and get them back).

The state is rebuilt from the history kept for context takeover, so messages after the
pause may refer back to messages before it. websockets (an independent implementation)
checks both directions: it decodes what the rebuilt compressor sends, and sends messages
that refer back into what the rebuilt decompressor must still know.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets.asyncio.client
import websockets.asyncio.server
from conftest import SHORT, TIMEOUT, wait_until, wait_until_sync

import wschannel
import wschannel.sync
import wschannel.sync.connection
from wschannel.io import IOWebSocketChannel

INTERVAL = SHORT / 4
"""The idle time after which a connection frees its compression state (shortened)."""

DOCUMENTS = [
    json.dumps({"id": i, "kind": "update", "values": list(range(i, i + 40)), "ok": True})
    for i in range(12)
]


def conn_of(channel: object) -> wschannel._wschannel.Connection:
    protocol = channel._transport_protocol  # type: ignore[attr-defined]
    assert protocol.conn is not None
    return protocol.conn  # type: ignore[no-any-return]


async def idle_until_compacted(conn: wschannel._wschannel.Connection) -> None:
    await wait_until(
        lambda: not conn.holds_compression_state, what="the compression state was freed"
    )


async def test_an_idle_client_frees_its_compression_state_and_still_talks_to_websockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wschannel.io, "COMPACT_INTERVAL", INTERVAL)

    async def echo(connection: websockets.asyncio.server.ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with websockets.asyncio.server.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with IOWebSocketChannel.connect(f"ws://127.0.0.1:{port}") as channel:
            stream = aiter(channel.stream)
            conn = conn_of(channel)
            assert conn.compressed
            for _ in range(3):  # each round refers back to the one before the pause
                for document in DOCUMENTS:
                    channel.sink.add(document)
                    channel.sink.add(document.encode())
                for document in DOCUMENTS:
                    assert await asyncio.wait_for(anext(stream), TIMEOUT) == document
                    assert await asyncio.wait_for(anext(stream), TIMEOUT) == document.encode()
                assert conn.holds_compression_state
                await idle_until_compacted(conn)


async def test_an_idle_server_frees_its_compression_state_and_still_talks_to_websockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wschannel.io, "COMPACT_INTERVAL", INTERVAL)
    channels: list[IOWebSocketChannel] = []

    async def echo(channel: IOWebSocketChannel) -> None:
        channels.append(channel)
        async for message in channel.stream:
            channel.sink.add(message)

    async with (
        wschannel.serve(echo, "127.0.0.1", 0) as server,
        websockets.asyncio.client.connect(f"ws://127.0.0.1:{server.port}") as client,
    ):
        for _ in range(3):
            for document in DOCUMENTS:
                await client.send(document)
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == document
            conn = conn_of(channels[0])
            assert conn.compressed
            assert conn.holds_compression_state
            await idle_until_compacted(conn)


async def test_an_idle_blocking_client_frees_its_compression_state(
    monkeypatch: pytest.MonkeyPatch, echo_url: str
) -> None:
    monkeypatch.setattr(wschannel.sync.connection, "COMPACT_INTERVAL", INTERVAL)

    def talk() -> None:
        with wschannel.sync.connect(echo_url) as channel:
            conn = channel._conn
            assert conn.compressed
            for _ in range(3):
                for document in DOCUMENTS:
                    channel.sink.add(document)
                    assert channel.receive(timeout=TIMEOUT) == document
                assert conn.holds_compression_state

                def compacted() -> bool:
                    with channel._lock:
                        return not conn.holds_compression_state

                wait_until_sync(compacted, what="the compression state was freed")

    await asyncio.to_thread(talk)
