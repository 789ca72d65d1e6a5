"""Echo clients, one per implementation: keep ``inflight`` messages in flight on one connection.

Each client opens a connection, sends ``inflight`` messages, and sends one more for each
echo it receives (request/response is ``inflight=1``). A :class:`Meter` counts the echoes:
it marks the count when the warm-up ends and again when the measured window ends; the
client then stops sending, receives what is still in flight and closes. The result is
``(echoes in the window, window length in seconds)``.

Every client turns each echo into the Python object an application would use (``bytes`` for
binary, ``str`` for text); each sends with its library's fastest documented call.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

#: Clients by the name the tables use, and the server each talks to.
CLIENTS = {
    "wschannel": "wschannel",
    "wschannel-async-for": "wschannel-async-for",
    "wschannel-sync": "picows",
    "picows": "picows",
    "picows-websockets": "picows-websockets",
    "websockets": "websockets",
    "websockets-sync": "picows",
    "aiohttp": "aiohttp",
    "websocket-client": "picows",
    "raw-tcp": "raw-tcp",
}
#: Clients that block a thread; they run without an event loop (uvloop does not apply).
SYNC_CLIENTS = ("wschannel-sync", "websockets-sync", "websocket-client")
#: Clients that can offer permessage-deflate.
COMPRESSING = ("wschannel", "wschannel-async-for", "websockets", "aiohttp", "wschannel-sync")

Message = str | bytes


class Meter:
    """Counts echoes; marks the warm-up's end and the window's end by timers."""

    __slots__ = ("count", "duration", "marks", "stopping", "warmup")

    def __init__(self, warmup: float, duration: float) -> None:
        self.count = 0
        self.stopping = False
        self.warmup = warmup
        self.duration = duration
        self.marks: list[tuple[int, float]] = []

    def _mark(self) -> None:
        self.marks.append((self.count, time.perf_counter()))

    def _stop(self) -> None:
        self._mark()
        self.stopping = True

    def arm(self) -> None:
        """Start the timers: on the running event loop if there is one, else threads."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            for delay, action in (
                (self.warmup, self._mark),
                (self.warmup + self.duration, self._stop),
            ):
                timer = threading.Timer(delay, action)
                timer.daemon = True
                timer.start()
        else:
            loop.call_later(self.warmup, self._mark)
            loop.call_later(self.warmup + self.duration, self._stop)

    def result(self) -> tuple[int, float]:
        (count0, time0), (count1, time1) = self.marks
        return count1 - count0, time1 - time0


def _ssl_kwargs(context: ssl.SSLContext | None, name: str = "ssl") -> dict[str, Any]:
    return {} if context is None else {name: context}


# -- callback clients: a send per echo, straight from the read ------------------------------


async def _wschannel(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    from wschannel.io import IOWebSocketChannel

    channel = IOWebSocketChannel.connect(
        url, ssl=context, compression=compression, max_message_size=None, max_queue=None
    )
    await channel.ready
    add = channel.sink.add
    following = itertools.cycle(payloads).__next__
    done = asyncio.get_running_loop().create_future()
    outstanding = inflight

    def on_data(message: Message) -> None:
        nonlocal outstanding
        meter.count += 1
        if meter.stopping:
            outstanding -= 1
            if not outstanding:
                done.set_result(None)
        else:
            add(following())

    channel.stream.listen(on_data)
    meter.arm()
    for _ in range(inflight):
        add(following())
    await done
    await channel.sink.close()


async def _picows(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    assert not compression, "picows has no permessage-deflate"
    kind = WSMsgType.TEXT if isinstance(payloads[0], str) else WSMsgType.BINARY
    encoded = [p.encode() if isinstance(p, str) else p for p in payloads]
    following = itertools.cycle(encoded).__next__
    done = asyncio.get_running_loop().create_future()

    class Client(WSListener):
        outstanding = inflight

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                frame.get_payload_as_utf8_text()
            elif frame.msg_type == WSMsgType.BINARY:
                frame.get_payload_as_bytes()
            else:
                return
            meter.count += 1
            if meter.stopping:
                self.outstanding -= 1
                if not self.outstanding:
                    done.set_result(None)
            else:
                transport.send(kind, following())

    transport, _ = await ws_connect(
        Client, url, max_frame_size=1 << 30, **_ssl_kwargs(context, "ssl_context")
    )
    meter.arm()
    for _ in range(inflight):
        transport.send(kind, following())
    await done
    transport.send_close()
    transport.disconnect()
    await transport.wait_disconnected()


class _RawClient(asyncio.Protocol):
    """Length-prefixed messages: the framing cost of no framing at all."""

    def __init__(self, frames: list[bytes], text: bool, inflight: int, meter: Meter) -> None:
        self.following = itertools.cycle(frames).__next__
        self.text = text
        self.outstanding = inflight
        self.meter = meter
        self.buffer = bytearray()
        self.done = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start, end = 0, len(buffer)
        meter = self.meter
        write = self.transport.write  # type: ignore[union-attr]
        while end - start >= 4:
            (length,) = struct.unpack_from("!I", buffer, start)
            stop = start + 4 + length
            if stop > end:
                break
            message = bytes(buffer[start + 4 : stop])
            if self.text:
                message.decode()
            start = stop
            meter.count += 1
            if meter.stopping:
                self.outstanding -= 1
                if not self.outstanding:
                    self.done.set_result(None)
            else:
                write(self.following())
        del buffer[:start]


async def _raw_tcp(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    assert not compression
    host, _, port = url.split("//", 1)[1].rstrip("/").rpartition(":")
    encoded = [p.encode() if isinstance(p, str) else p for p in payloads]
    frames = [struct.pack("!I", len(p)) + p for p in encoded]
    loop = asyncio.get_running_loop()
    text = isinstance(payloads[0], str)
    transport, protocol = await loop.create_connection(
        lambda: _RawClient(frames, text, inflight, meter), host, int(port), ssl=context
    )
    meter.arm()
    for _ in range(inflight):
        transport.write(protocol.following())
    await protocol.done
    transport.close()


# -- async-iterator clients: await each message, then send -----------------------------------


async def _echo_loop(
    messages: Any,
    send: Callable[[Message], Any],
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    unwrap: Callable[[Any], Message] | None = None,
) -> None:
    """Pipelining over ``async for``; ``send`` may return an awaitable (awaited)."""
    following = itertools.cycle(payloads).__next__
    meter.arm()
    for _ in range(inflight):
        sent = send(following())
        if sent is not None:
            await sent
    outstanding = inflight
    async for message in messages:
        if unwrap is not None:
            unwrap(message)
        meter.count += 1
        if meter.stopping:
            outstanding -= 1
            if not outstanding:
                break
        else:
            sent = send(following())
            if sent is not None:
                await sent


async def _wschannel_async_for(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    from wschannel.io import IOWebSocketChannel

    channel = IOWebSocketChannel.connect(
        url, ssl=context, compression=compression, max_message_size=None, max_queue=None
    )
    await channel.ready
    await _echo_loop(channel.stream, channel.sink.add, payloads, inflight, meter)
    await channel.sink.close()


async def _websockets_style(
    connect: Any,
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    async with connect(
        url,
        compression="deflate" if compression else None,
        max_size=None,
        max_queue=None,
        ping_interval=None,
        proxy=None,
        **_ssl_kwargs(context),
    ) as connection:
        await _echo_loop(connection, connection.send, payloads, inflight, meter)


async def _websockets(url: str, payloads: list[Message], *args: Any) -> None:
    from websockets.asyncio.client import connect

    await _websockets_style(connect, url, payloads, *args)


async def _picows_websockets(url: str, payloads: list[Message], *args: Any) -> None:
    from picows.websockets import connect

    await _websockets_style(connect, url, payloads, *args)


async def _aiohttp(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            url,
            compress=15 if compression else 0,
            max_msg_size=0,
            **_ssl_kwargs(context),
        ) as ws,
    ):
        send = ws.send_str if isinstance(payloads[0], str) else ws.send_bytes
        await _echo_loop(ws, send, payloads, inflight, meter, unwrap=lambda m: m.data)


# -- blocking clients: request/response in one thread, pipelining with a sender thread -------


def _sync_echo(
    send: Callable[[Any], object],
    receive: Callable[[], object],
    payloads: list[Message],
    inflight: int,
    meter: Meter,
) -> None:
    following = itertools.cycle(payloads).__next__
    meter.arm()
    if inflight == 1:
        while not meter.stopping:
            send(following())
            receive()
            meter.count += 1
        return
    credit = threading.Semaphore(inflight)
    sent = 0

    def sender() -> None:
        nonlocal sent
        while True:
            credit.acquire()
            if meter.stopping:
                return
            send(following())
            sent += 1

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    received = 0
    while True:
        if received < sent:
            receive()
            received += 1
            meter.count += 1
            credit.release()
        elif meter.stopping and not thread.is_alive():
            break
        else:
            thread.join(0.0001)


def _wschannel_sync(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    import wschannel.sync

    channel = wschannel.sync.connect(
        url, ssl=context, compression=compression, max_message_size=None, max_queue=None
    )
    with channel:
        _sync_echo(channel.sink.add, channel.receive, payloads, inflight, meter)


def _websockets_sync(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    from websockets.sync.client import connect

    with connect(
        url,
        compression="deflate" if compression else None,
        max_size=None,
        max_queue=None,
        proxy=None,
        **_ssl_kwargs(context),
    ) as connection:
        _sync_echo(connection.send, connection.recv, payloads, inflight, meter)


def _websocket_client(
    url: str,
    payloads: list[Message],
    inflight: int,
    meter: Meter,
    context: ssl.SSLContext | None,
    compression: bool,
) -> None:
    import websocket

    assert not compression, "websocket-client has no permessage-deflate"
    sslopt = {} if context is None else {"context": context}
    connection = websocket.create_connection(url, sslopt=sslopt)
    send = connection.send if isinstance(payloads[0], str) else connection.send_binary
    try:
        _sync_echo(send, connection.recv, payloads, inflight, meter)
    finally:
        connection.close()


AsyncClient = Callable[..., Awaitable[None]]
ASYNC: dict[str, AsyncClient] = {
    "wschannel": _wschannel,
    "wschannel-async-for": _wschannel_async_for,
    "picows": _picows,
    "picows-websockets": _picows_websockets,
    "websockets": _websockets,
    "aiohttp": _aiohttp,
    "raw-tcp": _raw_tcp,
}
SYNC: dict[str, Callable[..., None]] = {
    "wschannel-sync": _wschannel_sync,
    "websockets-sync": _websockets_sync,
    "websocket-client": _websocket_client,
}
