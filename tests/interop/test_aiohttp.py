"""wschannel with ``aiohttp``: its client (``ClientSession.ws_connect``) and its web server.

``aiohttp`` answers a close frame with 1000 and no reason rather than an echo, and keeps only
the code of the close frame that answers its own close: the tests check what it exposes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from wschannel.channel import Message

from .conftest import (
    CLIENT_CLOSE_CODE,
    CLIENT_CLOSE_REASON,
    CLOSE_COMMAND,
    CLOSED_BY_SERVER,
    COMPRESSION,
    HOST,
    MESSAGES,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    TIMEOUT,
    ConnectionRecord,
    WschannelServer,
    check_messages,
    has_deflate,
    run_wschannel_client,
    within,
)

NORMAL_CLOSURE = 1000


async def send(
    ws: aiohttp.ClientWebSocketResponse | web.WebSocketResponse, message: Message
) -> None:
    if isinstance(message, str):
        await ws.send_str(message)
    else:
        await ws.send_bytes(message)


def data_message(msg: aiohttp.WSMessage) -> Message:
    """The payload of a text or binary message, failing on anything else."""
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    assert isinstance(msg.data, str | bytes)
    return msg.data


# wschannel's server, aiohttp's client.


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3 * TIMEOUT))


def ws_timeout() -> aiohttp.ClientWSTimeout:
    return aiohttp.ClientWSTimeout(ws_receive=TIMEOUT, ws_close=TIMEOUT)


@COMPRESSION
async def test_aiohttp_client_echoes_through_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    async with (
        client_session() as session,
        session.ws_connect(
            wschannel_server.url, compress=15 if compression else 0, timeout=ws_timeout()
        ) as ws,
    ):
        assert bool(ws.compress) is compression
        for message in MESSAGES:
            await send(ws, message)
        received = [data_message(await within(ws.receive())) for _ in MESSAGES]
        assert await within(ws.close(code=CLIENT_CLOSE_CODE, message=CLIENT_CLOSE_REASON.encode()))
        # The code of wschannel's echo (aiohttp drops its reason).
        assert ws.close_code == CLIENT_CLOSE_CODE
    check_messages(received, MESSAGES)
    record = await wschannel_server.next_record()
    check_messages(record.messages, MESSAGES)
    assert has_deflate(record.offered_extensions) is compression
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)


@COMPRESSION
async def test_aiohttp_client_receives_close_from_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    async with (
        client_session() as session,
        session.ws_connect(
            wschannel_server.url, compress=15 if compression else 0, timeout=ws_timeout()
        ) as ws,
    ):
        for message in CLOSED_BY_SERVER:
            await send(ws, message)
        received = [data_message(await within(ws.receive())) for _ in CLOSED_BY_SERVER[:2]]
        close = await within(ws.receive())
        assert close.type is aiohttp.WSMsgType.CLOSE
        assert (close.data, close.extra) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    check_messages(received, CLOSED_BY_SERVER[:2])
    record = await wschannel_server.next_record()
    check_messages(record.messages, CLOSED_BY_SERVER)
    # aiohttp answers with 1000 and no reason.
    assert (record.close_code, record.close_reason) == (NORMAL_CLOSURE, "")


# wschannel's client, aiohttp's server.


class AiohttpServer:
    """``aiohttp``'s web server running the echo script at ``/echo``, with compression on."""

    def __init__(self) -> None:
        self.records: asyncio.Queue[ConnectionRecord] = asyncio.Queue()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/echo"

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=True, max_msg_size=4 * len(MESSAGES[5]))
        await ws.prepare(request)
        record = ConnectionRecord(
            extensions=ws.headers.get("Sec-WebSocket-Extensions"),
            offered_extensions=request.headers.get("Sec-WebSocket-Extensions"),
        )
        try:
            await self.echo(ws, record)
        finally:
            self.records.put_nowait(record)
        return ws

    async def echo(self, ws: web.WebSocketResponse, record: ConnectionRecord) -> None:
        while True:
            msg = await within(ws.receive())
            if msg.type is aiohttp.WSMsgType.CLOSE:
                record.close_code, record.close_reason = msg.data, msg.extra
                break
            if msg.type is not aiohttp.WSMsgType.TEXT and msg.type is not aiohttp.WSMsgType.BINARY:
                break
            record.messages.append(msg.data)
            if msg.data == CLOSE_COMMAND:
                await within(ws.close(code=SERVER_CLOSE_CODE, message=SERVER_CLOSE_REASON.encode()))
                record.close_code = ws.close_code  # aiohttp keeps only the code of the answer
                break
            await send(ws, msg.data)


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[AiohttpServer]:
    peer = AiohttpServer()
    app = web.Application()
    app.router.add_get("/echo", peer.handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    peer.port = runner.addresses[0][1]
    try:
        yield peer
    finally:
        await runner.cleanup()


@COMPRESSION
async def test_wschannel_client_echoes_through_aiohttp_server(
    aiohttp_server: AiohttpServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        aiohttp_server.url, compression=compression, close_first=True
    )
    check_messages(received, MESSAGES)
    # aiohttp answers with 1000 and no reason.
    assert (code, reason) == (NORMAL_CLOSURE, "")
    record = await within(aiohttp_server.records.get())
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert has_deflate(record.offered_extensions) is compression
    assert has_deflate(record.extensions) is compression


@COMPRESSION
async def test_wschannel_client_receives_close_from_aiohttp_server(
    aiohttp_server: AiohttpServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        aiohttp_server.url, compression=compression, close_first=False
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await within(aiohttp_server.records.get())
    check_messages(record.messages, CLOSED_BY_SERVER)
    assert record.close_code == SERVER_CLOSE_CODE  # wschannel's echo
    assert has_deflate(record.extensions) is compression
