"""wschannel with ``websockets``: its asyncio and sync clients, and its asyncio server.

Each test runs over plain TCP and over TLS (``wss``: wschannel's ends run TLS in the engine,
``websockets``' ends Python's ``ssl``). Besides the defaults, one test each way negotiates
every permessage-deflate parameter."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.sync.client import connect as connect_sync

import wschannel
from wschannel._wschannel import DeflateOptions
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
    Tls,
    WschannelServer,
    check_messages,
    echo_handler,
    has_deflate,
    run_wschannel_client,
    within,
)

Outcome = tuple[list[Message], int | None, str | None, str | None]
"""What a peer client saw: messages, the server's close code and reason, the extensions."""


MAX_SIZE = 2 * LARGE
"""``websockets`` applies ``max_size`` to frames before decompression too, and 1 MiB of random
bytes deflates to a little more than 1 MiB."""


def deflate(compression: bool) -> str | None:
    """``websockets``' ``compression`` argument."""
    return "deflate" if compression else None


@pytest.fixture(params=["ws", "wss"])
def scheme(request: pytest.FixtureRequest) -> str:
    """Every test here over plain TCP and over TLS."""
    return str(request.param)


# wschannel's server, websockets' asyncio client.


async def asyncio_client(
    url: str, compression: bool, close_first: bool, context: ssl.SSLContext | None = None
) -> Outcome:
    received: list[Message] = []
    async with connect(
        url,
        ssl=context,
        compression=deflate(compression),
        max_size=MAX_SIZE,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as ws:
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        if close_first:
            for message in MESSAGES:
                await ws.send(message)
            for _ in MESSAGES:
                received.append(await within(ws.recv()))
            await within(ws.close(CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON))
        else:
            for message in CLOSED_BY_SERVER:
                await ws.send(message)
            with pytest.raises(ConnectionClosed):
                while True:
                    received.append(await within(ws.recv()))
    assert ws.protocol.close_rcvd is not None
    return received, ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason, extensions


@COMPRESSION
async def test_websockets_asyncio_client_echoes_through_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, code, reason, extensions = await asyncio_client(
        wschannel_server.url, compression, True, wschannel_server.client_ssl
    )
    check_messages(received, MESSAGES)
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert has_deflate(extensions) is compression
    record = await wschannel_server.next_record()
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)


@COMPRESSION
async def test_websockets_asyncio_client_receives_close_from_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, code, reason, _ = await asyncio_client(
        wschannel_server.url, compression, False, wschannel_server.client_ssl
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await wschannel_server.next_record()
    check_messages(record.messages, CLOSED_BY_SERVER)
    # websockets echoes the close frame it received (RFC 6455 §5.5.1).
    assert (record.close_code, record.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)


# wschannel's server, websockets' sync client (in a thread).


def sync_client(
    url: str, compression: bool, close_first: bool, context: ssl.SSLContext | None = None
) -> Outcome:
    received: list[Message] = []
    with connect_sync(
        url,
        ssl=context,
        compression=deflate(compression),
        max_size=MAX_SIZE,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as ws:
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        if close_first:
            for message in MESSAGES:
                ws.send(message)
            for _ in MESSAGES:
                received.append(ws.recv(timeout=TIMEOUT))
            ws.close(CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
        else:
            for message in CLOSED_BY_SERVER:
                ws.send(message)
            with pytest.raises(ConnectionClosed):
                while True:
                    received.append(ws.recv(timeout=TIMEOUT))
    assert ws.protocol.close_rcvd is not None
    return received, ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason, extensions


@COMPRESSION
async def test_websockets_sync_client_echoes_through_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, code, reason, extensions = await within(
        asyncio.to_thread(
            sync_client, wschannel_server.url, compression, True, wschannel_server.client_ssl
        ),
        3 * TIMEOUT,
    )
    check_messages(received, MESSAGES)
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert has_deflate(extensions) is compression
    record = await wschannel_server.next_record()
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)


@COMPRESSION
async def test_websockets_sync_client_receives_close_from_wschannel_server(
    wschannel_server: WschannelServer, compression: bool
) -> None:
    received, code, reason, _ = await within(
        asyncio.to_thread(
            sync_client, wschannel_server.url, compression, False, wschannel_server.client_ssl
        ),
        3 * TIMEOUT,
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await wschannel_server.next_record()
    check_messages(record.messages, CLOSED_BY_SERVER)
    assert (record.close_code, record.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)


# wschannel's client, websockets' asyncio server.


class WebsocketsServer:
    """``websockets``' server running the echo script, with permessage-deflate on."""

    def __init__(self, client_ssl: ssl.SSLContext | None = None) -> None:
        self.records: asyncio.Queue[ConnectionRecord] = asyncio.Queue()
        self.port = 0
        self.client_ssl = client_ssl
        """The context a client trusts this server with (over TLS), else None."""

    @property
    def url(self) -> str:
        return f"{'ws' if self.client_ssl is None else 'wss'}://{HOST}:{self.port}/echo"

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None and ws.response is not None
        record = ConnectionRecord(
            extensions=ws.response.headers.get("Sec-WebSocket-Extensions"),
            offered_extensions=ws.request.headers.get("Sec-WebSocket-Extensions"),
        )
        try:
            async for message in ws:
                record.messages.append(message)
                if message == CLOSE_COMMAND:
                    await within(ws.close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON))
                    break
                await ws.send(message)
            await within(ws.wait_closed())
        finally:
            if ws.protocol.close_rcvd is not None:
                record.close_code = ws.protocol.close_rcvd.code
                record.close_reason = ws.protocol.close_rcvd.reason
            self.records.put_nowait(record)


@pytest.fixture
async def websockets_server(
    scheme: str, request: pytest.FixtureRequest
) -> AsyncIterator[WebsocketsServer]:
    files: Tls | None = request.getfixturevalue("tls") if scheme == "wss" else None
    peer = WebsocketsServer(None if files is None else files.client)
    async with serve(
        peer.handler,
        HOST,
        0,
        compression="deflate",
        max_size=MAX_SIZE,
        ssl=None if files is None else files.server,
    ) as server:
        peer.port = server.sockets[0].getsockname()[1]
        yield peer


@COMPRESSION
async def test_wschannel_client_echoes_through_websockets_server(
    websockets_server: WebsocketsServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        websockets_server.url,
        compression=compression,
        close_first=True,
        ssl=websockets_server.client_ssl,
    )
    check_messages(received, MESSAGES)
    # websockets echoes the close frame it received.
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    record = await within(websockets_server.records.get())
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    assert has_deflate(record.offered_extensions) is compression
    assert has_deflate(record.extensions) is compression


@COMPRESSION
async def test_wschannel_client_receives_close_from_websockets_server(
    websockets_server: WebsocketsServer, compression: bool
) -> None:
    received, code, reason = await run_wschannel_client(
        websockets_server.url,
        compression=compression,
        close_first=False,
        ssl=websockets_server.client_ssl,
    )
    check_messages(received, CLOSED_BY_SERVER[:2])
    assert (code, reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    record = await within(websockets_server.records.get())
    check_messages(record.messages, CLOSED_BY_SERVER)
    # wschannel echoes the code and reason of the close it received (design.md decision 4).
    assert (record.close_code, record.close_reason) == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    assert has_deflate(record.extensions) is compression


# permessage-deflate with its four parameters (RFC 7692 §7.1): the smallest window, no context
# takeover, both ways.

SMALL_WINDOW = 9


@pytest.fixture
async def small_window_websockets_server() -> AsyncIterator[WebsocketsServer]:
    peer = WebsocketsServer()
    extension = ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=SMALL_WINDOW,
        client_max_window_bits=SMALL_WINDOW,
    )
    async with serve(
        peer.handler, HOST, 0, extensions=[extension], compression=None, max_size=MAX_SIZE
    ) as server:
        peer.port = server.sockets[0].getsockname()[1]
        yield peer


async def test_wschannel_client_echoes_through_websockets_server_with_small_window(
    small_window_websockets_server: WebsocketsServer,
) -> None:
    received, code, reason = await run_wschannel_client(
        small_window_websockets_server.url, compression=True, close_first=True
    )
    check_messages(received, MESSAGES)
    assert (code, reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
    record = await within(small_window_websockets_server.records.get())
    check_messages(record.messages, MESSAGES)
    assert record.extensions == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        f"server_max_window_bits={SMALL_WINDOW}; client_max_window_bits={SMALL_WINDOW}"
    )


async def test_websockets_client_echoes_through_wschannel_server_with_small_window() -> None:
    records: asyncio.Queue[ConnectionRecord] = asyncio.Queue()
    options = DeflateOptions(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=SMALL_WINDOW,
        client_max_window_bits=SMALL_WINDOW,
    )
    extension = ClientPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=SMALL_WINDOW,
        client_max_window_bits=SMALL_WINDOW,
    )
    async with wschannel.serve(echo_handler(records), HOST, 0, compression=options) as server:
        async with connect(
            f"ws://{HOST}:{server.port}/echo",
            extensions=[extension],
            compression=None,
            max_size=MAX_SIZE,
            open_timeout=TIMEOUT,
            close_timeout=TIMEOUT,
        ) as ws:
            assert ws.response is not None
            assert ws.response.headers["Sec-WebSocket-Extensions"] == (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                f"server_max_window_bits={SMALL_WINDOW}; client_max_window_bits={SMALL_WINDOW}"
            )
            for message in MESSAGES:
                await ws.send(message)
            received = [await within(ws.recv()) for _ in MESSAGES]
            await within(ws.close(CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON))
        record = await within(records.get())
    check_messages(received, MESSAGES)
    check_messages(record.messages, MESSAGES)
    assert (record.close_code, record.close_reason) == (CLIENT_CLOSE_CODE, CLIENT_CLOSE_REASON)
