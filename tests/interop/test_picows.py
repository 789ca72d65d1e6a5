"""wschannel with ``picows``: its client (``ws_connect``) and server (``ws_create_server``).

``picows`` works with frames: the listeners here join fragments into messages and answer a
close frame with its own code and reason, as ``picows``' documentation shows. ``picows`` does
not implement permessage-deflate, so with compression on, wschannel offers it or accepts it
and the connection goes on without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import picows
import pytest
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest

from wschannel.channel import Message

from .conftest import (
    CLIENT_CLOSE_CODE,
    CLIENT_CLOSE_REASON,
    CLOSE_COMMAND,
    CLOSED_BY_SERVER,
    COMPRESSION,
    HOST,
    LARGE,
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

MAX_FRAME_SIZE = 2 * LARGE


def send(transport: WSTransport, message: Message) -> None:
    if isinstance(message, str):
        transport.send(WSMsgType.TEXT, message.encode())
    else:
        transport.send(WSMsgType.BINARY, message)


class Listener(WSListener):
    """Joins frames into messages, answers the peer's close, records the connection."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.record = ConnectionRecord()
        self.disconnected = asyncio.get_running_loop().create_future()
        self._text = False
        self._parts: list[bytes] = []

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.record.offered_extensions = transport.request.headers.get("Sec-WebSocket-Extensions")
        self.record.extensions = transport.response.headers.get("Sec-WebSocket-Extensions")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self._text = frame.msg_type == WSMsgType.TEXT
            self._parts = []
        elif frame.msg_type != WSMsgType.CONTINUATION:
            return
        self._parts.append(frame.get_payload_as_bytes())
        if frame.fin:
            data = b"".join(self._parts)
            message = data.decode() if self._text else data
            self.record.messages.append(message)
            self.on_message(transport, message)

    def on_message(self, transport: WSTransport, message: Message) -> None:
        self.messages.put_nowait(message)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        handshake = transport.close_handshake
        if handshake is not None and handshake.recv is not None:
            self.record.close_code = handshake.recv.code.value
            self.record.close_reason = handshake.recv.reason
        if not self.disconnected.done():
            self.disconnected.set_result(None)


# wschannel's server, picows' client.


async def picows_client(url: str, close_first: bool) -> tuple[list[Message], ConnectionRecord]:
    transport, listener = await within(
        picows.ws_connect(
            Listener, url, websocket_handshake_timeout=TIMEOUT, max_frame_size=MAX_FRAME_SIZE
        )
    )
    assert isinstance(listener, Listener)
    try:
        if close_first:
            for message in MESSAGES:
                send(transport, message)
            received = [await within(listener.messages.get()) for _ in MESSAGES]
            transport.send_close(WSCloseCode(CLIENT_CLOSE_CODE), CLIENT_CLOSE_REASON.encode())
        else:
            for message in CLOSED_BY_SERVER:
                send(transport, message)
            received = [await within(listener.messages.get()) for _ in CLOSED_BY_SERVER[:2]]
        await within(transport.wait_disconnected())
    finally:
        transport.disconnect(graceful=False)
    assert listener.messages.empty()
    return received, listener.record


@COMPRESSION
async def test_picows_client_echoes_through_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, peer = await picows_client(wschannel_server.url, close_first=True)
    check_messages(received, MESSAGES)
    assert (peer.close_code, peer.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert peer.extensions is None
    record = await wschannel_server.next_record()
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)


@COMPRESSION
async def test_picows_client_receives_close_from_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, peer = await picows_client(wschannel_server.url, close_first=False)
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (peer.close_code, peer.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await wschannel_server.next_record()
    check_messages(record.messages, CLOSED_BY_SERVER)
    assert (record.close_code, record.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)


# wschannel's client, picows' server.


class EchoListener(Listener):
    """The echo script on ``picows``' server side."""

    def __init__(self, records: asyncio.Queue[ConnectionRecord]) -> None:
        super().__init__()
        self.disconnected.add_done_callback(lambda _: records.put_nowait(self.record))

    def on_message(self, transport: WSTransport, message: Message) -> None:
        if message == CLOSE_COMMAND:
            transport.send_close(WSCloseCode(SERVER_CLOSE_CODE), SERVER_CLOSE_REASON.encode())
        else:
            send(transport, message)


class PicowsServer:
    def __init__(self, server: asyncio.Server, records: asyncio.Queue[ConnectionRecord]) -> None:
        self.server = server
        self.records = records

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.server.sockets[0].getsockname()[1]}/echo"


@pytest.fixture
async def picows_server() -> AsyncIterator[PicowsServer]:
    records: asyncio.Queue[ConnectionRecord] = asyncio.Queue()

    def listener_factory(request: WSUpgradeRequest) -> EchoListener:
        return EchoListener(records)

    server = await picows.ws_create_server(
        listener_factory,
        HOST,
        0,
        websocket_handshake_timeout=TIMEOUT,
        max_frame_size=MAX_FRAME_SIZE,
    )
    try:
        yield PicowsServer(server, records)
    finally:
        server.close()
        await within(server.wait_closed())


@COMPRESSION
async def test_wschannel_client_echoes_through_picows_server(
    picows_server: PicowsServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        picows_server.url, compression=compression, close_first=True
    )
    check_messages(received, MESSAGES)
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    record = await within(picows_server.records.get())
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert has_deflate(record.offered_extensions) is compression
    assert record.extensions is None


@COMPRESSION
async def test_wschannel_client_receives_close_from_picows_server(
    picows_server: PicowsServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        picows_server.url, compression=compression, close_first=False
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await within(picows_server.records.get())
    check_messages(record.messages, CLOSED_BY_SERVER)
    assert (record.close_code, record.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
