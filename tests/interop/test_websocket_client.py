"""wschannel's server with ``websocket-client``, a blocking client (run in a thread).

``websocket-client`` does not implement permessage-deflate: it never offers it, so wschannel's
server must not answer with it, whether its compression is on or off. It answers a close frame
with 1000 and no reason.
"""

from __future__ import annotations

import asyncio
import struct

import websocket

from wschannel.channel import Message

from .conftest import (
    CLIENT_CLOSE_CODE,
    CLIENT_CLOSE_REASON,
    CLOSED_BY_SERVER,
    COMPRESSION,
    MESSAGES,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    TIMEOUT,
    WschannelServer,
    check_messages,
    has_deflate,
    within,
)

NORMAL_CLOSURE = 1000

Outcome = tuple[list[Message], int, str, str | None]
"""Messages received, the code and reason of the server's close frame, the extensions."""


def send(ws: websocket.WebSocket, message: Message) -> None:
    if isinstance(message, str):
        ws.send_text(message)
    else:
        ws.send_bytes(message)


def payload(frame: websocket.ABNF) -> bytes:
    data = frame.data
    assert isinstance(data, bytes)
    return data


def receive(ws: websocket.WebSocket) -> Message | websocket.ABNF:
    """The next message (``str`` or ``bytes``), or the close frame."""
    opcode, frame = ws.recv_data_frame()
    if opcode == websocket.ABNF.OPCODE_TEXT:
        return payload(frame).decode()
    if opcode == websocket.ABNF.OPCODE_BINARY:
        return payload(frame)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, opcode
    assert isinstance(frame, websocket.ABNF)
    return frame


def parse_close(frame: websocket.ABNF | None) -> tuple[int, str]:
    assert frame is not None and frame.opcode == websocket.ABNF.OPCODE_CLOSE
    data = payload(frame)
    (code,) = struct.unpack("!H", data[:2])
    return code, data[2:].decode()


def run_client(url: str, close_first: bool) -> Outcome:
    ws = websocket.create_connection(url, timeout=TIMEOUT)
    try:
        headers = ws.getheaders()
        assert headers is not None
        extensions = headers.get("sec-websocket-extensions")
        received: list[Message] = []
        if close_first:
            for message in MESSAGES:
                send(ws, message)
            for _ in MESSAGES:
                item = receive(ws)
                assert not isinstance(item, websocket.ABNF), parse_close(item)
                received.append(item)
            ws.close(CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON.encode(), timeout=TIMEOUT)
            code, reason = parse_close(ws.close_frame)
        else:
            for message in CLOSED_BY_SERVER:
                send(ws, message)
            while not isinstance(item := receive(ws), websocket.ABNF):
                received.append(item)
            code, reason = parse_close(item)  # receive() has answered it
        return received, code, reason, extensions
    finally:
        ws.shutdown()  # type: ignore[no-untyped-call]  # websocket-client leaves it untyped


@COMPRESSION
async def test_websocket_client_echoes_through_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, code, reason, extensions = await within(
        asyncio.to_thread(run_client, wschannel_server.url, True), 3 * TIMEOUT
    )
    check_messages(received, MESSAGES)
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert not has_deflate(extensions)
    record = await wschannel_server.next_record()
    check_messages(record.messages, MESSAGES)
    assert record.offered_extensions is None
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)


@COMPRESSION
async def test_websocket_client_receives_close_from_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, code, reason, _ = await within(
        asyncio.to_thread(run_client, wschannel_server.url, False), 3 * TIMEOUT
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await wschannel_server.next_record()
    check_messages(record.messages, CLOSED_BY_SERVER)
    # websocket-client answers with 1000 and no reason.
    assert (record.close_code, record.close_reason) == (NORMAL_CLOSURE, "")
