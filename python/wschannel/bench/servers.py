"""Echo and broadcast servers, one per implementation, each with its fastest honest settings.

Every server echoes each message back as it came (text as text, binary as binary), or, with
``broadcast``, sends each message it receives to every open connection. Compression is off
unless asked for, and so are the message size and queue limits, as the peers' own
benchmarks do.

``start(impl, ...)`` runs inside a worker process (see :mod:`wschannel.bench.worker`) and returns
once the server listens.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

#: Servers, by the name the tables use. The sync clients talk to the ``picows`` server.
SERVERS = (
    "wschannel",
    "wschannel-async-for",
    "picows",
    "picows-websockets",
    "websockets",
    "aiohttp",
    "raw-tcp",
)
BACKLOG = 4096


async def start(
    impl: str,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    compression: bool,
    broadcast: bool,
) -> Any:
    """Start ``impl``'s server on ``host``:``port``; returns an object to keep alive."""
    return await _STARTERS[impl](host, port, context, compression, broadcast)


#: The server's certificate chain and key (PEM), when it serves TLS: wschannel's servers are
#: given the file (TLS in the engine, as an application serving wss:// would), the others
#: the context made from it.
CERTFILE: str | None = None


def _wschannel_tls(context: ssl.SSLContext | None) -> dict[str, Any]:
    if context is not None and CERTFILE is not None:
        return {"certfile": CERTFILE}
    return {"ssl": context}


async def _wschannel(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    import wschannel

    peers: set[Any] = set()

    def echo(channel: Any) -> None:  # the callback API: on_data is sink.add itself
        channel.stream.listen(channel.sink.add)

    def fan_out(channel: Any) -> None:
        peers.add(channel)

        def send_all(message: Any) -> None:
            for peer in peers:
                peer.sink.add(message)

        channel.stream.listen(send_all, on_done=lambda: peers.discard(channel))

    return await wschannel.serve(
        fan_out if broadcast else echo,
        host,
        port,
        **_wschannel_tls(context),
        compression=compression,
        max_message_size=None,
        max_queue=None,
        backlog=BACKLOG,
    )


async def _wschannel_async_for(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    import wschannel

    peers: set[Any] = set()

    async def echo(channel: Any) -> None:
        add = channel.sink.add
        async for message in channel.stream:
            add(message)

    async def fan_out(channel: Any) -> None:
        peers.add(channel)
        try:
            async for message in channel.stream:
                for peer in peers:
                    peer.sink.add(message)
        finally:
            peers.discard(channel)

    return await wschannel.serve(
        fan_out if broadcast else echo,
        host,
        port,
        **_wschannel_tls(context),
        compression=compression,
        max_message_size=None,
        max_queue=None,
        backlog=BACKLOG,
    )


async def _picows(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    from picows import WSListener, WSMsgType, ws_create_server

    if compression:
        raise ValueError("picows has no permessage-deflate")
    peers: set[Any] = set()

    class Echo(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif kind != WSMsgType.PING and kind != WSMsgType.PONG:
                transport.send(kind, frame.get_payload_as_memoryview())

    class FanOut(WSListener):
        def on_ws_connected(self, transport: Any) -> None:
            peers.add(transport)

        def on_ws_disconnected(self, transport: Any) -> None:
            peers.discard(transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif kind != WSMsgType.PING and kind != WSMsgType.PONG:
                payload = frame.get_payload_as_bytes()
                for peer in peers:
                    peer.send(kind, payload)

    listener = FanOut if broadcast else Echo
    return await ws_create_server(
        lambda request: listener(),
        host,
        port,
        ssl=context,
        max_frame_size=1 << 30,
        backlog=BACKLOG,
    )


async def _websockets_style(
    serve: Any,
    send_all: Callable[[Any, Any], None],
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    compression: bool,
    broadcast: bool,
) -> Any:
    peers: set[Any] = set()

    async def echo(connection: Any) -> None:
        send = connection.send
        async for message in connection:
            await send(message)

    async def fan_out(connection: Any) -> None:
        peers.add(connection)
        try:
            async for message in connection:
                send_all(peers, message)
        finally:
            peers.discard(connection)

    return await serve(
        fan_out if broadcast else echo,
        host,
        port,
        ssl=context,
        compression="deflate" if compression else None,
        max_size=None,
        max_queue=None,
        ping_interval=None,
        backlog=BACKLOG,
    )


async def _websockets(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    from websockets.asyncio.server import broadcast as send_all
    from websockets.asyncio.server import serve

    return await _websockets_style(serve, send_all, host, port, context, compression, broadcast)


async def _picows_websockets(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    from picows.websockets import broadcast as send_all
    from picows.websockets import serve

    return await _websockets_style(serve, send_all, host, port, context, compression, broadcast)


async def _aiohttp(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    from aiohttp import WSMsgType, web

    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=compression, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        peers.add(ws)
        try:
            async for message in ws:
                targets = peers if broadcast else (ws,)
                if message.type == WSMsgType.BINARY:
                    for peer in targets:
                        await peer.send_bytes(message.data)
                elif message.type == WSMsgType.TEXT:
                    for peer in targets:
                        await peer.send_str(message.data)
        finally:
            peers.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, backlog=BACKLOG)
    await site.start()
    return runner


class RawEcho(asyncio.Protocol):
    """The ceiling: messages with a 4-byte big-endian length, echoed one by one, no framing.

    Like a WebSocket server, it parses each message out of the stream and writes it back
    as a message of its own (an application that only copies bytes would be faster still).
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        end = len(buffer)
        write = self.transport.write  # type: ignore[union-attr]
        while end - start >= 4:
            (length,) = struct.unpack_from("!I", buffer, start)
            stop = start + 4 + length
            if stop > end:
                break
            write(bytes(buffer[start:stop]))
            start = stop
        del buffer[:start]


async def _raw_tcp(
    host: str, port: int, context: ssl.SSLContext | None, compression: bool, broadcast: bool
) -> Any:
    if compression or broadcast:
        raise ValueError("the raw TCP server only echoes")
    loop = asyncio.get_running_loop()
    return await loop.create_server(RawEcho, host, port, ssl=context, backlog=BACKLOG)


_STARTERS: dict[str, Callable[..., Awaitable[Any]]] = {
    "wschannel": _wschannel,
    "wschannel-async-for": _wschannel_async_for,
    "picows": _picows,
    "picows-websockets": _picows_websockets,
    "websockets": _websockets,
    "aiohttp": _aiohttp,
    "raw-tcp": _raw_tcp,
}
