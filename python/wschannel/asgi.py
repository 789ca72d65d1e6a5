"""``wschannel.asgi``: run a channel handler under any ASGI server (uvicorn, hypercorn...).

:func:`app` turns ``async def handler(channel)`` — the handler :func:`wschannel.serve` takes —
into an ASGI application. Each WebSocket connection (ASGI's ``websocket`` scope) becomes an
:class:`ASGIWebSocketChannel`: ``websocket.receive`` events feed its stream,
``sink.add``/``sink.close`` become ``websocket.send``/``websocket.close``, and the
``websocket.disconnect`` event gives ``close_code`` and ``close_reason``. The ASGI server
speaks the protocol (framing, compression, pings); wschannel's engine is not used, so this
module is pure Python.

The channel is an :class:`~wschannel.adapter.AdapterWebSocketChannel` over a low-level
:class:`ASGIWebSocket`, so it keeps every ``stream_channel`` guarantee of the other channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any, TypeAlias

from ._adapter import AdapterWebSocketChannel
from ._websocket import BinaryDataReceived, CloseReceived, TextDataReceived, WebSocketEvent
from .defaults import DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_QUEUE, DEFAULT_WRITE_QUEUE
from .exceptions import WebSocketConnectionClosed
from .status import INTERNAL_SERVER_ERROR, NORMAL_CLOSURE

__all__ = [
    "ASGIApp",
    "ASGIWebSocket",
    "ASGIWebSocketChannel",
    "Handler",
    "Receive",
    "Scope",
    "Send",
    "app",
]

logger = logging.getLogger("wschannel.server")

Scope: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send: TypeAlias = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

Handler: TypeAlias = Callable[["ASGIWebSocketChannel"], Awaitable[None] | None]
"""Called with the channel of each connection: an async function, or a plain function."""

_connection_ids = itertools.count(1)


class ASGIWebSocket:
    """The low-level :class:`~wschannel.adapter.WebSocket` interface over an ASGI
    connection that has been accepted.

    ``send_text``/``send_bytes`` queue a ``websocket.send`` event that a task hands to the
    ASGI server's ``send``, in order (``send`` may wait for the network: that is the
    backpressure :meth:`flush` waits for). :meth:`close` sends ``websocket.close`` (code 1000
    when none is given: ASGI cannot send a close frame without a code) and waits for the
    ``websocket.disconnect``, up to ``close_timeout``.
    """

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        protocol: str | None = None,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        write_queue: int = DEFAULT_WRITE_QUEUE,
    ) -> None:
        self._receive = receive
        self._send = send
        self._protocol = protocol or ""
        self._close_timeout = close_timeout
        self._write_queue = write_queue
        self._outgoing: asyncio.Queue[MutableMapping[str, Any] | None] = asyncio.Queue()
        self._closed = False  # either side closed: nothing more is sent
        self._close_sent = False
        loop = asyncio.get_running_loop()
        self._disconnected: asyncio.Future[None] = loop.create_future()
        self._writer = loop.create_task(self._write())
        self._events = self._read()
        self.close_code: int | None = None
        """The code of the ``websocket.disconnect`` event (1005 without one)."""
        self.close_reason: str | None = None

    def send_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, not {type(text).__name__}.")
        self._check_open()
        self._outgoing.put_nowait({"type": "websocket.send", "text": text})

    def send_bytes(self, data: bytes) -> None:
        if isinstance(data, str):
            raise TypeError("send_bytes() takes a bytes-like object, not str.")
        self._check_open()
        self._outgoing.put_nowait({"type": "websocket.send", "bytes": bytes(data)})

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Send ``websocket.close`` after the queued messages; wait for the disconnect."""
        self._check_open()
        self._closed = self._close_sent = True
        message = {"type": "websocket.close", "code": code or NORMAL_CLOSURE}
        message["reason"] = reason or ""
        self._outgoing.put_nowait(message)
        self._outgoing.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._close_timeout):
                await asyncio.shield(self._disconnected)
                await asyncio.shield(self._writer)

    @property
    def events(self) -> AsyncIterator[WebSocketEvent]:
        return self._events

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def write_buffer_full(self) -> bool:
        """Whether ``write_queue`` messages or more wait for the ASGI server."""
        return self._outgoing.qsize() >= self._write_queue

    async def flush(self) -> None:
        """Wait until every queued message has been handed to the ASGI server."""
        if not self._writer.done():
            await self._outgoing.join()

    async def finished(self) -> None:
        """Wait until the connection is over and nothing is left to send."""
        await asyncio.wait([self._disconnected])
        self._stop_writer()
        await asyncio.wait([self._writer])

    def _check_open(self) -> None:
        if self._closed:
            raise WebSocketConnectionClosed()

    async def _read(self) -> AsyncIterator[WebSocketEvent]:
        try:
            while True:
                message = await self._receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    if text is not None:
                        yield TextDataReceived(text)
                    else:
                        yield BinaryDataReceived(bytes(message.get("bytes") or b""))
                elif kind == "websocket.disconnect":
                    code = message.get("code")
                    self.close_code = 1005 if code is None else int(code)
                    self.close_reason = message.get("reason") or ""
                    self._closed = True
                    self._stop_writer()
                    self._disconnected.set_result(None)  # the consumer stops at CloseReceived
                    if not self._close_sent:
                        yield CloseReceived(self.close_code, self.close_reason)
                    return
        finally:
            if not self._disconnected.done():
                self._disconnected.set_result(None)

    def _stop_writer(self) -> None:
        if not self._writer.done():
            self._outgoing.put_nowait(None)

    async def _write(self) -> None:
        outgoing = self._outgoing
        while True:
            message = await outgoing.get()
            try:
                if message is None:
                    return
                await self._send(message)
            except Exception:  # the client is gone: drop what is left
                self._closed = True
                while not outgoing.empty():
                    outgoing.get_nowait()
                    outgoing.task_done()
                return
            finally:
                outgoing.task_done()


class ASGIWebSocketChannel(AdapterWebSocketChannel):
    """The channel of one ASGI WebSocket connection, given to the handler of :func:`app`.

    ``scope`` is the ASGI connection scope: ``scope["path"]``, ``scope["query_string"]``,
    ``scope["headers"]``, ``scope["client"]``... :attr:`path` and :meth:`header` are
    shortcuts.
    """

    __slots__ = ("scope",)

    def __init__(
        self,
        socket: ASGIWebSocket,
        scope: Scope,
        *,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
    ) -> None:
        super().__init__(socket, max_queue=max_queue)
        self.scope = scope

    @property
    def path(self) -> str:
        """The request path (``scope["path"]``), without the query string."""
        path: str = self.scope.get("path", "/")
        return path

    def header(self, name: str) -> str | None:
        """The first value of a request header, case-insensitively."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.scope.get("headers", ()):
            if bytes(key).lower() == wanted:
                return bytes(value).decode("latin-1")
        return None


def app(
    handler: Handler,
    *,
    protocols: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    fallback: ASGIApp | None = None,
) -> ASGIApp:
    """An ASGI application that runs ``handler(channel)`` for each WebSocket connection.

    - ``protocols``: the subprotocols the server supports; the first one the client offers
      (``scope["subprotocols"]``, in the client's order) that is here is accepted.
    - ``allowed_origins``: the ``Origin`` values accepted (case-insensitively); another
      origin is refused before the upgrade (the ASGI server answers 403). ``None`` accepts
      any; requests without ``Origin`` are accepted.
    - ``max_queue``: received messages buffered before the channel stops asking for more.
    - ``close_timeout``: how long ``sink.close()`` waits for the disconnect.
    - ``fallback``: the ASGI app for every other scope (plain HTTP, lifespan). Without it,
      HTTP requests get a 404 and lifespan events are acknowledged.

    As with :func:`wschannel.serve`, when an async handler returns its connection is closed
    with 1000 (1011 if it raised, which is logged to ``wschannel.server``); a plain
    function's connection stays open until a side closes it.
    """
    supported = list(protocols or ())
    origins = None if allowed_origins is None else {origin.lower() for origin in allowed_origins}

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await _serve_websocket(scope, receive, send)
        elif fallback is not None:
            await fallback(scope, receive, send)
        elif kind == "http":
            await _not_found(send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _serve_websocket(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left first
        extra = _log_extra(scope)
        origin = _header(scope, "origin")
        if origins is not None and origin is not None and origin.lower() not in origins:
            logger.info("Refused %s: origin %r not allowed", scope.get("path"), origin, extra=extra)
            await send({"type": "websocket.close", "code": 1008})
            return
        offered = [str(protocol).strip() for protocol in scope.get("subprotocols") or ()]
        protocol = next((p for p in offered if p in supported), None)
        await send({"type": "websocket.accept", "subprotocol": protocol})
        socket = ASGIWebSocket(receive, send, protocol=protocol, close_timeout=close_timeout)
        channel = ASGIWebSocketChannel(socket, scope, max_queue=max_queue)
        loop = asyncio.get_running_loop()
        opened = loop.time()
        logger.info("Open %s", scope.get("path"), extra=extra)
        try:
            result = handler(channel)
            if inspect.isawaitable(result):
                code = NORMAL_CLOSURE
                try:
                    await result
                except Exception:
                    logger.exception("Error in a WebSocket connection handler", extra=extra)
                    code = INTERNAL_SERVER_ERROR
                channel.sink.close(code)
            with contextlib.suppress(Exception):
                await channel.sink.done
            await socket.finished()
        finally:
            logger.info(
                "Closed with %s %r after %.3f s",
                channel.close_code,
                channel.close_reason or "",
                loop.time() - opened,
                extra=extra,
            )

    return application


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def _log_extra(scope: Scope) -> dict[str, object]:
    client = scope.get("client")
    peer = None if not client else f"{client[0]}:{client[1]}"
    return {
        "peer": peer,
        "connection_id": next(_connection_ids),
        "forwarded_for": _header(scope, "x-forwarded-for"),
    }


async def _not_found(send: Send) -> None:
    body = b"Not Found: this endpoint speaks WebSocket only.\n"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
