"""``serve``: a WebSocket server on asyncio, with ``shelf_web_socket``'s rules.

Each connection answers one HTTP upgrade request (RFC 6455 §4.2). The engine's
:meth:`~wschannel._wschannel.ServerHandshake.check` applies ``shelf_web_socket``'s checks, in
its order: not a WebSocket upgrade → 404, no version or no key → 400, a version other than 13
→ 426 (RFC 6455 §4.4), an origin not allowed → 403. An accepted request gets a 101 with the first
subprotocol, in the client's order, that the server supports, and permessage-deflate if both
sides want it. Then ``handler(channel)`` runs for the connection.

Server shutdown closes every open connection with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

from ._wschannel import DeflateOptions, HandshakeError, Request, ServerHandshake, reject_response
from .channel import DEFAULT_MAX_QUEUE
from .io import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_WRITE_LIMIT,
    IOWebSocketChannel,
    _WebSocketProtocol,
    deflate_level,
    deflate_options,
)
from .status import GOING_AWAY, INTERNAL_SERVER_ERROR, NORMAL_CLOSURE

__all__ = [
    "DEFAULT_OPEN_TIMEOUT",
    "Handler",
    "ProcessRequest",
    "Response",
    "Server",
    "serve",
]

logger = logging.getLogger("wschannel.server")

DEFAULT_OPEN_TIMEOUT: Final = 10.0
"""Seconds a client has to send its upgrade request."""

Handler: TypeAlias = Callable[[IOWebSocketChannel], Awaitable[None] | None]
"""Called with the channel of each new connection: an async function, or a plain function."""

Response: TypeAlias = tuple[int, Sequence[tuple[str, str]], bytes]
"""An HTTP response refusing an upgrade: status, headers, body."""

ProcessRequest: TypeAlias = Callable[[Request], Awaitable[Response | None] | Response | None]
"""Looks at the upgrade request first: ``None`` to go on, or a :data:`Response` to refuse it."""


class Server:
    """A running WebSocket server, made by :func:`serve`.

    An async context manager: on exit it closes (see :meth:`close`) and waits until closed.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        protocols: Sequence[str],
        allowed_origins: Sequence[str] | None,
        deflate: DeflateOptions | None,
        max_message_size: int | None,
        max_queue: int | None,
        write_limit: int | None,
        ping_interval: float | None,
        close_timeout: float | None,
        open_timeout: float | None,
        process_request: ProcessRequest | None,
        max_header_size: int,
    ) -> None:
        self.handler = handler
        self.protocols = protocols
        self.allowed_origins = allowed_origins
        self.deflate = deflate
        self.max_message_size = max_message_size
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.ping_interval = ping_interval
        self.close_timeout = close_timeout
        self.open_timeout = open_timeout
        self.process_request = process_request
        self.max_header_size = max_header_size
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerProtocol] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        if self._server is None:
            return ()
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after binding port 0)."""
        port: int = self.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> list[IOWebSocketChannel]:
        """The channels of the open connections."""
        return [conn.channel for conn in self._connections if conn.is_open]

    def close(self) -> None:
        """Stop accepting connections and close the open ones with 1001 (going away).

        Connections still in their opening handshake are dropped. Returns at once; await
        :meth:`wait_closed` for the connections to finish closing.
        """
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for protocol in list(self._connections):
            if protocol.is_open:
                protocol.channel.sink.close(GOING_AWAY)
            else:
                protocol.abort()

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its connections and handlers have finished."""
        if self._server is not None:
            await self._server.wait_closed()
        pending: list[asyncio.Future[Any]] = [conn.lost for conn in self._connections]
        pending.extend(self._handlers)
        if pending:
            await asyncio.wait(pending)

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close."""
        try:
            await asyncio.Future()
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        where = ", ".join(str(sock.getsockname()) for sock in self.sockets)
        return f"<Server {where or 'not listening'}>"

    # Internals.

    def _new_protocol(self) -> _ServerProtocol:
        return _ServerProtocol(self)

    def _start_handler(self, channel: IOWebSocketChannel) -> None:
        task = asyncio.get_running_loop().create_task(self._run_handler(channel))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _run_handler(self, channel: IOWebSocketChannel) -> None:
        """Run the handler; when an async handler returns, close with 1000 if still open.

        A plain function's channel stays open after it returns (Dart's callback style: it
        calls ``channel.stream.listen``), until one side closes it.
        """
        sink = channel.sink
        try:
            result = self.handler(channel)
            if not inspect.isawaitable(result):
                return
            await result
        except Exception:
            logger.exception("Error in a WebSocket connection handler")
            code = INTERNAL_SERVER_ERROR
        else:
            code = NORMAL_CLOSURE
        sink.close(code)


class _ServerProtocol(_WebSocketProtocol):
    """The server side: the opening handshake (RFC 6455 §4.2), then the connection."""

    def __init__(self, server: Server) -> None:
        super().__init__(
            IOWebSocketChannel._unopened(max_queue=server.max_queue),
            max_message_size=server.max_message_size,
            deflate_level=deflate_level(server.deflate),
            ping_interval=server.ping_interval,
            close_timeout=server.close_timeout,
            write_limit=server.write_limit,
        )
        self._server = server
        self._handshake = ServerHandshake(max_header_size=server.max_header_size)
        self._request_done = False
        self._open_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        server._connections.add(self)
        if server._closing:
            self.abort()
        elif server.open_timeout is not None:
            self._open_timer = self.loop.call_later(server.open_timeout, self.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)
        if self._open_timer is not None:
            self._open_timer.cancel()
        super().connection_lost(exc)

    def handshake_data(self, data: bytes) -> None:
        if self._request_done:
            return  # reading is paused while process_request runs; nothing else can arrive
        try:
            request = self._handshake.receive_data(data)
        except HandshakeError as exc:
            self._reject(exc.status or 400, str(exc))
            return
        if request is None:
            return
        self._request_done = True
        process_request = self._server.process_request
        if process_request is None:
            self._answer(request)
            return
        try:
            response = process_request(request)
        except Exception:
            logger.exception("Error in process_request")
            self._reject(500, "Internal Server Error")
            return
        if inspect.isawaitable(response):
            assert self.transport is not None
            self.transport.pause_reading()
            self.loop.create_task(self._await_response(request, response))
        elif response is None:
            self._answer(request)
        else:
            self._reject(response[0], response[2], response[1])

    def handshake_lost(self, exc: Exception | None) -> None:
        logger.debug("Connection lost during the opening handshake: %r", exc)

    async def _await_response(self, request: Request, response: Awaitable[Response | None]) -> None:
        try:
            answer = await response
        except Exception:
            logger.exception("Error in process_request")
            self._reject(500, "Internal Server Error")
            return
        if self.transport is None or self.transport.is_closing():
            return
        if answer is None:
            self._answer(request)
            self.transport.resume_reading()
        else:
            self._reject(answer[0], answer[2], answer[1])

    def _answer(self, request: Request) -> None:
        server = self._server
        handshake = self._handshake
        rejection = handshake.check(request, allowed_origins=server.allowed_origins)
        if rejection is not None:
            status, message, headers = rejection
            self._reject(status, message, headers)
            return
        try:
            response = handshake.accept(request, protocols=server.protocols, deflate=server.deflate)
        except HandshakeError as exc:
            self._reject(exc.status or 400, str(exc))
            return
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None
        self.write(response)
        self.channel._request = request
        self.open(self.new_connection(False, handshake.extensions), handshake.protocol)
        server._start_handler(self.channel)
        leftover = request.leftover()
        if leftover:
            self.data_received(leftover)

    def _reject(
        self, status: int, message: str | bytes, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        body = message.encode() if isinstance(message, str) else message
        self.write(reject_response(status, list(headers), body))
        self._close_transport()


class _Serve:
    """What :func:`serve` returns: await it for the :class:`Server`, or ``async with`` it."""

    def __init__(
        self, server: Server, host: str | Sequence[str] | None, port: int | None, **kwargs: Any
    ) -> None:
        self._server = server
        self._host = host
        self._port = port
        self._kwargs = kwargs

    async def _start(self) -> Server:
        loop = asyncio.get_running_loop()
        server = self._server
        server._server = await loop.create_server(
            server._new_protocol, self._host, self._port, **self._kwargs
        )
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.close()
        await self._server.wait_closed()


def serve(
    handler: Handler,
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    protocols: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    compression: bool | DeflateOptions | None = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    write_limit: int | None = DEFAULT_WRITE_LIMIT,
    ping_interval: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    process_request: ProcessRequest | None = None,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    max_header_size: int = 16384,
    sock: socket.socket | None = None,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    backlog: int = 100,
) -> _Serve:
    """Listen on ``host``:``port`` and run ``handler(channel)`` for each WebSocket connection.

    ``await serve(...)`` returns the running :class:`Server`; ``async with serve(...) as
    server:`` closes it on exit. When an async ``handler`` returns, its connection is closed
    with 1000 if still open (1011 if it raised).

    - ``protocols``: the subprotocols the server supports; the first one the client offers
      that is here is chosen (the client's order wins, as in ``shelf_web_socket``).
    - ``allowed_origins``: the ``Origin`` values accepted (case-insensitively); a request
      with another origin gets a 403. ``None`` accepts any; requests without ``Origin``
      are accepted.
    - ``compression``, ``max_message_size``, ``max_queue``, ``write_limit``,
      ``ping_interval``, ``close_timeout``: as for
      :meth:`~wschannel.io.IOWebSocketChannel.connect`.
    - ``ssl``: an :class:`ssl.SSLContext` to serve ``wss://``.
    - ``process_request(request)``: sync or async; return ``None`` to go on, or
      ``(status, headers, body)`` to answer with that instead (e.g. a health check).
    - ``open_timeout``: seconds a client has to complete its upgrade request.
    """
    server = Server(
        handler,
        protocols=list(protocols or ()),
        allowed_origins=None if allowed_origins is None else list(allowed_origins),
        deflate=deflate_options(compression),
        max_message_size=max_message_size,
        max_queue=max_queue,
        write_limit=write_limit,
        ping_interval=ping_interval,
        close_timeout=close_timeout,
        open_timeout=open_timeout,
        process_request=process_request,
        max_header_size=max_header_size,
    )
    return _Serve(
        server,
        host,
        port,
        ssl=ssl,
        sock=sock,
        reuse_address=reuse_address,
        reuse_port=reuse_port,
        backlog=backlog,
    )
