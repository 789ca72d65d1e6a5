"""``serve``: a WebSocket server on asyncio, with ``shelf_web_socket``'s rules.

Each connection answers one HTTP upgrade request (RFC 6455 §4.2). The engine's
:meth:`~wschannel._wschannel.ServerHandshake.check` applies ``shelf_web_socket``'s checks, in
its order: not a WebSocket upgrade → 404, no version or no key → 400, a version other than 13
→ 426 (RFC 6455 §4.4), an origin not allowed → 403. An accepted request gets a 101 with the first
subprotocol, in the client's order, that the server supports, and permessage-deflate if both
sides want it. Then ``handler(channel)`` runs for the connection; ``channel.server`` is the
:class:`Server` (its ``connections`` and ``broadcast``), so a handler needs no global.

Limits keep slow or hostile clients from exhausting the server: ``open_timeout`` bounds the
TLS and opening handshakes, and at most ``max_pending_handshakes`` connections may be in their
handshake at once; connections beyond that are answered 503 (Service Unavailable) and closed.

:meth:`Server.close` closes every open connection with 1001 (going away) and waits. Each
connection logs to the ``wschannel.server`` logger with ``peer`` and ``connection_id`` in the
record (see :mod:`wschannel.io`): open and close at INFO, refused upgrades at INFO, handler
errors at ERROR.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeAlias, cast

from ._direct import DirectTransport, accept_tls, supports_tls
from ._fragments import Delivery, in_pieces
from ._net import Response, deflate_level, deflate_options, format_peer
from ._ping import check_keepalive
from ._sink import GuaranteeSink
from ._tls import server_config, server_context
from ._wschannel import (
    DeflateOptions,
    HandshakeError,
    Request,
    ServerHandshake,
    encode_shared_frame,
    reject_response,
)
from .bytestream import _ByteStreamSink
from .channel import WebSocketChannel
from .defaults import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_WRITE_LIMIT,
)
from .exceptions import WebSocketConnectionClosed
from .io import IOWebSocketChannel, _IOSink, _WebSocketProtocol
from .metrics import (
    OPEN_TIMEOUT,
    PROCESS_REQUEST,
    PROCESS_REQUEST_ERROR,
    TOO_MANY_PENDING,
    ServerMetrics,
    Tally,
    engine_reason,
)
from .status import ABNORMAL_CLOSURE, GOING_AWAY, INTERNAL_SERVER_ERROR, NORMAL_CLOSURE

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._wschannel import TlsServerConfig

__all__ = [
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "DEFAULT_OPEN_TIMEOUT",
    "Handler",
    "ProcessRequest",
    "Response",
    "Server",
    "ServerChannel",
    "broadcast",
    "serve",
    "unix_serve",
]

logger = logging.getLogger("wschannel.server")

_REFUSE_TIMEOUT: Final = 1.0
"""Seconds a refused client (503) has to finish sending its request before it is dropped."""

Handler: TypeAlias = Callable[["ServerChannel"], Awaitable[None] | None]
"""Called with the channel of each new connection: an async function, or a plain function.
The channel's :attr:`~ServerChannel.server` is the server (its connections, ``broadcast``)."""

ProcessRequest: TypeAlias = Callable[[Request], Awaitable[Response | None] | Response | None]
"""Looks at the upgrade request first: ``None`` to go on, or a :data:`Response` to refuse it."""


class ServerChannel(IOWebSocketChannel):
    """The channel a handler of :func:`serve` gets: an
    :class:`~wschannel.io.IOWebSocketChannel` that knows the :attr:`server` it came in
    through, so that a handler reaches the other connections without a global."""

    __slots__ = ("_server",)

    _server: Server

    @property
    def server(self) -> Server:
        """The server that accepted this connection: its :attr:`~Server.connections`,
        :meth:`~Server.broadcast`, :meth:`~Server.close`."""
        return self._server

    @property
    def request(self) -> Request:
        """The HTTP upgrade request that opened the connection: its ``path``, ``headers``
        and ``header(name)``."""
        request = self._request
        assert request is not None  # set before the handler runs
        return request


class Server:
    """A running WebSocket server, made by :func:`serve` or :func:`unix_serve`.

    An async context manager: on exit it closes (see :meth:`close`) and waits until closed.
    Each handler reaches it as ``channel.server``.
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
        max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
        pong_timeout: float | None = None,
        pieces: bool = False,
    ) -> None:
        if max_pending_handshakes is not None and max_pending_handshakes < 1:
            raise ValueError("max_pending_handshakes must be at least 1, or None.")
        self.handler = handler
        self.protocols = protocols
        self.allowed_origins = allowed_origins
        self.deflate = deflate
        self.max_message_size = max_message_size
        self.max_queue = max_queue
        self.write_limit = write_limit
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.close_timeout = close_timeout
        self.open_timeout = open_timeout
        self.process_request = process_request
        self.max_header_size = max_header_size
        self.max_pending_handshakes = max_pending_handshakes
        self.pieces = pieces  # delivery="pieces": messages in pieces from the first frame
        self._server: asyncio.Server | None = None
        self._unix_path: str | None = None  # a socket file to remove on close
        self._connections: set[_ServerProtocol] = set()
        self._refusing: set[_RefusingProtocol] = set()
        self._pending_handshakes = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed: asyncio.Future[None] | None = None  # resolved once close() finished
        self._tally = Tally()
        self._tls: TlsServerConfig | None = None  # certfile=: TLS in the engine

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        if self._server is None:
            return ()
        return tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after binding port 0)."""
        sockets = self.sockets
        if sockets and sockets[0].family == socket.AF_UNIX:
            raise ValueError("A Unix socket server has no port.")
        port: int = sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> list[ServerChannel]:
        """The channels of the open connections (opening handshake done, not closed yet)."""
        return [conn.channel for conn in self._connections if conn.is_open and not conn.is_lost]

    def broadcast(
        self, message: str | Buffer, *, exclude: WebSocketChannel | Iterable[WebSocketChannel] = ()
    ) -> int:
        """Send ``message`` to every open connection except ``exclude`` (a channel, or
        several: ``exclude=channel`` in a handler sends to the others); returns how many got
        it. :func:`broadcast`'s rules: channels closing, slow (write buffer over
        ``write_limit``) or running ``add_stream`` are skipped, and connections without
        compression share one encoded frame."""
        excluded = {exclude} if isinstance(exclude, WebSocketChannel) else set(exclude)
        return broadcast(
            [channel for channel in self.connections if channel not in excluded], message
        )

    @property
    def pending_handshakes(self) -> int:
        """How many connections are in their opening handshake."""
        return self._pending_handshakes

    @property
    def metrics(self) -> ServerMetrics:
        """A snapshot of the server's counters since it started (see
        :class:`~wschannel.metrics.ServerMetrics`); read it in the event loop's thread."""
        return self._tally.snapshot(
            (protocol.conn.counters, protocol.write_high_water())
            for protocol in self._connections
            if protocol.conn is not None
        )

    def close(self) -> asyncio.Future[None]:
        """Stop accepting connections, close the open ones with 1001 (going away), and drop
        those still in their opening handshake.

        A plain method, like ``sink.close()``: it returns an awaitable that resolves once
        every connection is closed (each within ``close_timeout``) and every handler has
        returned. Handlers still running ``close_timeout`` seconds (10 if ``None``) after
        their connections closed are cancelled. :meth:`wait_closed` awaits the same.
        """
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        if self._closing:
            return self._closed
        self._closing = True
        logger.debug("Closing the server")
        if self._server is not None:
            self._server.close()
        for refusing in list(self._refusing):
            refusing.abort()
        for protocol in list(self._connections):
            if protocol.is_open:
                _going_away(protocol.sink)
            else:
                protocol.abort()
        task = asyncio.get_running_loop().create_task(self._finish_closing())
        task.add_done_callback(self._set_closed)
        return self._closed

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has been called and has finished."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until cancelled, then close."""
        try:
            await asyncio.Future()
        finally:
            await self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        where = ", ".join(str(sock.getsockname()) for sock in self.sockets)
        return f"<Server {where or 'not listening'}>"

    # Internals.

    async def _finish_closing(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._unix_path is not None:
            with contextlib.suppress(OSError):
                os.remove(self._unix_path)
        lost = [conn.lost for conn in self._connections]
        lost.extend(refusing.lost for refusing in self._refusing)
        if lost:
            await asyncio.wait(lost)
        handlers = set(self._handlers)
        if handlers:
            grace = DEFAULT_CLOSE_TIMEOUT if self.close_timeout is None else self.close_timeout
            _, pending = await asyncio.wait(handlers, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning("Cancelled %d handlers still running at shutdown", len(pending))
                await asyncio.wait(pending)

    def _set_closed(self, task: asyncio.Task[None]) -> None:
        closed = self._closed
        assert closed is not None
        if closed.done():
            return
        if task.cancelled():
            closed.cancel()
        elif task.exception() is not None:
            closed.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            closed.set_result(None)

    def _new_protocol(self) -> _ServerProtocol | _RefusingProtocol:
        limit = self.max_pending_handshakes
        if limit is not None and self._pending_handshakes >= limit:
            self._tally.refused(503, TOO_MANY_PENDING)
            return _RefusingProtocol(self)
        return _ServerProtocol(self)

    def _new_tls_protocol(self) -> _TLSAccept:
        return _TLSAccept(self)

    def _start_handler(self, channel: ServerChannel, protocol: _ServerProtocol) -> None:
        task = asyncio.get_running_loop().create_task(self._run_handler(channel, protocol))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _run_handler(self, channel: ServerChannel, protocol: _ServerProtocol) -> None:
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
        except WebSocketConnectionClosed:
            # flush() after the connection ended: the handler stopped sending, as it should.
            protocol.log(logging.DEBUG, "Handler ended: the connection was closed")
            code = NORMAL_CLOSURE
        except Exception:
            protocol.log(logging.ERROR, "Error in a WebSocket connection handler", exc_info=True)
            code = INTERNAL_SERVER_ERROR
        else:
            code = NORMAL_CLOSURE
        sink.close(code)


def _going_away(sink: _IOSink) -> None:
    """Close with 1001, even while ``add_stream`` runs (which it stops)."""
    if sink._closed or sink._close_started or sink._disconnected:
        return
    if not sink._adding_stream:
        sink.close(GOING_AWAY)
        return
    sink._messages._discard()
    if not sink._disconnected:
        sink._close_started = True
        sink._start_close(GOING_AWAY, None)
        GuaranteeSink._disconnect(sink)


class _ServerProtocol(_WebSocketProtocol):
    """The server side: the opening handshake (RFC 6455 §4.2), then the connection."""

    logger = logger
    open_level = logging.INFO
    pause_reading_while_writes_wait = True
    channel: ServerChannel

    def __init__(self, server: Server) -> None:
        channel = ServerChannel._unopened(max_queue=server.max_queue)
        channel._server = server
        if server.pieces:
            channel._pieces = (...,)  # the engine delivers pieces from the first frame
        super().__init__(
            channel,
            max_message_size=server.max_message_size,
            deflate_level=deflate_level(server.deflate),
            ping_interval=server.ping_interval,
            pong_timeout=server.pong_timeout,
            close_timeout=server.close_timeout,
            write_limit=server.write_limit,
        )
        self._server = server
        self._handshake: ServerHandshake | None = ServerHandshake(
            max_header_size=server.max_header_size
        )
        self._request_done = False
        self._in_handshake = False  # counted in the server's pending handshakes
        self._open_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        server._connections.add(self)
        server._pending_handshakes += 1
        self._in_handshake = True
        if server._closing:
            self.abort()
        elif server.open_timeout is not None:
            self._open_timer = self.loop.call_later(server.open_timeout, self._open_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self._server
        server._connections.discard(self)
        conn = self.conn
        if conn is not None:  # its counts move from the open connections to the totals
            code = self.channel._close_code
            server._tally.closed(
                conn.counters,
                ABNORMAL_CLOSURE if code is None else code,
                self.write_high_water(),
            )
        self._leave_handshake()
        super().connection_lost(exc)

    def handshake_data(self, data: bytes) -> None:
        handshake = self._handshake
        if self._request_done or handshake is None:
            return  # reading is paused while process_request runs; nothing else can arrive
        try:
            request = handshake.receive_data(data)
        except HandshakeError as exc:
            status = exc.status or 400
            self._reject(status, str(exc), reason=engine_reason(status))
            return
        if request is None:
            return
        self._request_done = True
        self.channel._request = request
        process_request = self._server.process_request
        if process_request is None:
            self._answer(request)
            return
        try:
            response = process_request(request)
        except Exception:
            self.log(logging.ERROR, "Error in process_request", exc_info=True)
            self._reject(500, "Internal Server Error", reason=PROCESS_REQUEST_ERROR)
            return
        if inspect.isawaitable(response):
            assert self.transport is not None
            self.transport.pause_reading()
            self.loop.create_task(self._await_response(request, response))
        elif response is None:
            self._answer(request)
        else:
            self._reject(response[0], response[2], response[1], reason=PROCESS_REQUEST)

    def handshake_lost(self, exc: Exception | None) -> None:
        self.log(logging.DEBUG, "Connection lost during the opening handshake: %r", exc)

    async def _await_response(self, request: Request, response: Awaitable[Response | None]) -> None:
        try:
            answer = await response
        except Exception:
            self.log(logging.ERROR, "Error in process_request", exc_info=True)
            self._reject(500, "Internal Server Error", reason=PROCESS_REQUEST_ERROR)
            return
        if self.transport is None or self.transport.is_closing():
            return
        if answer is None:
            self._answer(request)
            self.transport.resume_reading()
        else:
            self._reject(answer[0], answer[2], answer[1], reason=PROCESS_REQUEST)

    def _answer(self, request: Request) -> None:
        server = self._server
        handshake = self._handshake
        assert handshake is not None
        rejection = handshake.check(request, allowed_origins=server.allowed_origins)
        if rejection is not None:
            status, message, headers = rejection
            self._reject(status, message, headers, reason=engine_reason(status))
            return
        try:
            response = handshake.accept(request, protocols=server.protocols, deflate=server.deflate)
        except HandshakeError as exc:
            status = exc.status or 400
            self._reject(status, str(exc), reason=engine_reason(status))
            return
        self._leave_handshake()
        self.write(response)
        self._handshake = None  # its buffers are no longer needed
        self.open(self.new_connection(False, handshake.extensions), handshake.protocol)
        server._tally.connections_total += 1
        server._start_handler(self.channel, self)
        leftover = request.leftover()
        if leftover:
            self.data_received(leftover)

    def _reject(
        self,
        status: int,
        message: str | bytes,
        headers: Iterable[tuple[str, str]] = (),
        *,
        reason: str,
    ) -> None:
        """Answer with ``status`` instead of the upgrade; ``reason`` classifies it in the
        server's metrics."""
        self._server._tally.refused(status, reason)
        body = message.encode() if isinstance(message, str) else message
        request = self.channel._request
        self.log(
            logging.INFO,
            "Refused %s with %d",
            "a request" if request is None else f"{request.method} {request.path}",
            status,
        )
        self._leave_handshake()
        self.write(reject_response(status, list(headers), body))
        self.close_transport()

    def _open_timed_out(self) -> None:
        self._open_timer = None
        self.log(logging.INFO, "Dropped: no opening handshake within open_timeout")
        self._server._tally.refused(None, OPEN_TIMEOUT)
        self.abort()

    def _leave_handshake(self) -> None:
        """The opening handshake is over (answered, refused or lost): free its slot."""
        if self._in_handshake:
            self._in_handshake = False
            self._server._pending_handshakes -= 1
        if self._open_timer is not None:
            self._open_timer.cancel()
            self._open_timer = None


class _RefusingProtocol(asyncio.Protocol):
    """A connection over ``max_pending_handshakes``: read the request head (so that closing
    does not reset the connection before the client reads the answer), answer 503 and close.
    Dropped if the head does not come within a second."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._tail = b""  # the last bytes read, to find the end of the head across reads
        self._size = 0
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's does not subclass asyncio.Transport, so no isinstance.
        self._transport = transport = cast("asyncio.Transport", transport)
        self._server._refusing.add(self)
        timeout = min(_REFUSE_TIMEOUT, self._server.open_timeout or _REFUSE_TIMEOUT)
        self._timer = asyncio.get_running_loop().call_later(timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._size += len(data)
        seen = self._tail + data
        if b"\r\n\r\n" in seen or self._size > self._server.max_header_size:
            self._answer()
        else:
            self._tail = seen[-3:]

    def eof_received(self) -> bool | None:
        self._answer()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._refusing.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if not self.lost.done():
            self.lost.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _answer(self) -> None:
        if self._answered or self._transport is None:
            return
        self._answered = True
        transport = self._transport
        peer = transport.get_extra_info("peername")
        logger.info(
            "Refused with 503: %d connections are in their opening handshake",
            self._server._pending_handshakes,
            extra={"peer": format_peer(peer), "connection_id": None, "forwarded_for": None},
        )
        body = b"Too many connections are opening; try again.\n"
        transport.write(reject_response(503, [("Retry-After", "1")], body))
        transport.close()


class _TLSAccept(asyncio.Protocol):
    """A connection to a ``certfile=`` server: its socket moves to a DirectTransport whose
    engine runs the TLS handshake (within ``open_timeout``); then the server's protocol
    takes it, as it takes a transport asyncio's ``ssl`` has done the handshake on."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        config = server._tls
        assert config is not None
        loop = asyncio.get_running_loop()
        direct = accept_tls(loop, transport, config, self._done)
        if direct is None:
            cast("asyncio.Transport", transport).abort()
            return
        if server.open_timeout is not None:
            self._timer = loop.call_later(server.open_timeout, direct.abort)

    def _done(self, direct: DirectTransport, error: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server = self._server
        if error is not None:
            peer = format_peer(direct.get_extra_info("peername"))
            extra = {"peer": peer, "connection_id": None, "forwarded_for": None}
            # As with asyncio's ssl: not counted in the metrics (no request was read).
            logger.debug("TLS handshake failed: %s", error, extra=extra)
            return
        if server._closing:
            direct.abort()
            return
        direct.start(server._new_protocol())


class _Serve:
    """What :func:`serve` returns: await it for the :class:`Server`, or ``async with`` it."""

    def __init__(
        self,
        server: Server,
        host: str | Sequence[str] | None,
        port: int | None,
        *,
        path: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._server = server
        self._host = host
        self._port = port
        self._path = path
        self._kwargs = kwargs

    async def _start(self) -> Server:
        loop = asyncio.get_running_loop()
        server = self._server
        kwargs = dict(self._kwargs)
        certfile = kwargs.pop("certfile", None)
        keyfile = kwargs.pop("keyfile", None)
        factory: Callable[[], asyncio.Protocol] = server._new_protocol
        if certfile is not None:
            if supports_tls(loop):
                server._tls = server_config(certfile, keyfile)
                factory = server._new_tls_protocol
            else:
                kwargs["ssl"] = server_context(certfile, keyfile)
        if kwargs.get("ssl") is not None and server.open_timeout is not None:
            kwargs["ssl_handshake_timeout"] = server.open_timeout
        if self._path is not None or self._host is _UNIX:
            server._server = await loop.create_unix_server(factory, self._path, **kwargs)
            server._unix_path = self._path
        else:
            server._server = await loop.create_server(factory, self._host, self._port, **kwargs)
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
        await self._server.close()


_UNIX: Any = object()  # the host of a unix_serve() given only a socket


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
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    pong_timeout: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    process_request: ProcessRequest | None = None,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
    max_header_size: int = 16384,
    sock: socket.socket | None = None,
    reuse_address: bool | None = None,
    reuse_port: bool | None = None,
    backlog: int = 100,
    delivery: Delivery = "messages",
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
      ``ping_interval``, ``pong_timeout``, ``close_timeout``: as for
      :meth:`~wschannel.io.IOWebSocketChannel.connect` (keepalive is on: a ping every
      20 s, 20 s for its pong).
    - ``certfile``, ``keyfile``: serve ``wss://`` with this certificate chain and private
      key (PEM files; ``keyfile=None`` if the key is in ``certfile``), TLS done in the engine
      (rustls) on the direct socket path: the fastest ``wss://``. On an event loop without
      ``add_reader`` (or with ``WSCHANNEL_DIRECT_IO=0``) the same files make an
      ``ssl.SSLContext``.
    - ``ssl``: an :class:`ssl.SSLContext` to serve ``wss://`` with Python's ``ssl`` instead
      (client certificates, custom ciphers, SNI callbacks...).
    - ``process_request(request)``: sync or async; return ``None`` to go on, or
      ``(status, headers, body)`` to answer with that instead (authentication, routing,
      a health check).
    - ``open_timeout``: seconds a client has for TLS and its upgrade request; then it is
      dropped.
    - ``max_pending_handshakes``: connections that may be in their opening handshake at
      once; a connection over it is answered 503 (with ``Retry-After: 1``) and closed.
    - ``sock``, ``reuse_address``, ``reuse_port``, ``backlog``: as for
      :meth:`asyncio.loop.create_server`.
    - ``delivery``: ``"messages"`` (default), or ``"pieces"``: every connection receives
      messages in pieces from its first frame (its handler reads them with
      ``channel.fragments()``), each message at most ``max_message_size`` in total
      (``None``: any size, since none is assembled).
    """
    server = _make_server(handler, locals())
    return _Serve(
        server,
        host,
        port,
        ssl=_check_tls(ssl, certfile, keyfile),
        certfile=certfile,
        keyfile=keyfile,
        sock=sock,
        reuse_address=reuse_address,
        reuse_port=reuse_port,
        backlog=backlog,
    )


def unix_serve(
    handler: Handler,
    path: str | os.PathLike[str] | None = None,
    *,
    protocols: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    compression: bool | DeflateOptions | None = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    write_limit: int | None = DEFAULT_WRITE_LIMIT,
    ping_interval: float | None = DEFAULT_PING_INTERVAL,
    pong_timeout: float | None = None,
    ssl: ssl_module.SSLContext | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    process_request: ProcessRequest | None = None,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
    max_header_size: int = 16384,
    sock: socket.socket | None = None,
    backlog: int = 100,
    delivery: Delivery = "messages",
) -> _Serve:
    """:func:`serve` on a Unix-domain socket at ``path`` (or an already bound ``sock``):
    for a server behind a reverse proxy on the same machine. A stale socket file at
    ``path`` is replaced, and the file is removed when the server closes. Clients connect
    with ``IOWebSocketChannel.connect(url, unix_socket=path)``; the URL gives the ``Host``
    header and the path."""
    server = _make_server(handler, locals())
    return _Serve(
        server,
        _UNIX,
        None,
        path=None if path is None else os.fspath(path),
        ssl=_check_tls(ssl, certfile, keyfile),
        certfile=certfile,
        keyfile=keyfile,
        sock=sock,
        backlog=backlog,
    )


def _check_tls(
    ssl: ssl_module.SSLContext | None,
    certfile: str | os.PathLike[str] | None,
    keyfile: str | os.PathLike[str] | None,
) -> ssl_module.SSLContext | None:
    if certfile is not None and ssl is not None:
        raise ValueError(
            "Pass ssl= (an SSLContext) or certfile= (and keyfile=), not both: the files are "
            "the certificate and key TLS is served with."
        )
    if keyfile is not None and certfile is None:
        raise ValueError("keyfile= needs certfile=, the certificate chain the key is for.")
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise TypeError(
            f"ssl must be an ssl.SSLContext, not {type(ssl).__name__}; for certificate and "
            "key files pass certfile= and keyfile="
        )
    return ssl


def _make_server(handler: Handler, options: dict[str, Any]) -> Server:
    check_keepalive(options["ping_interval"], options["pong_timeout"])
    allowed_origins = options["allowed_origins"]
    return Server(
        handler,
        protocols=list(options["protocols"] or ()),
        allowed_origins=None if allowed_origins is None else list(allowed_origins),
        deflate=deflate_options(options["compression"], server=True),
        max_message_size=options["max_message_size"],
        max_queue=options["max_queue"],
        write_limit=options["write_limit"],
        ping_interval=options["ping_interval"],
        pong_timeout=options["pong_timeout"],
        close_timeout=options["close_timeout"],
        open_timeout=options["open_timeout"],
        process_request=options["process_request"],
        max_header_size=options["max_header_size"],
        max_pending_handshakes=options["max_pending_handshakes"],
        pieces=in_pieces(options["delivery"]),
    )


# Broadcast: a server without compression sends the same bytes to every client (its frames
# are not masked, RFC 6455 §5.1), so the frame is encoded once.


def broadcast(channels: Iterable[WebSocketChannel], message: str | Buffer) -> int:
    """Send ``message`` (``str``: text, bytes-like: binary) to every open channel of
    ``channels``; returns how many got it.

    Skipped, and not counted: channels not open yet, closed or closing (by either side),
    those running ``sink.add_stream``, and **slow** ones, whose write buffer is over their
    ``write_limit`` (the client is not reading): a broadcast never grows a buffer that is
    already full, so a slow client costs at most ``write_limit`` plus one message. Compare
    the count with the number of channels to notice, or close the slow ones.

    Server connections without compression (of :func:`serve`, and of
    :mod:`wschannel.trio` and :mod:`wschannel.anyio`'s servers) share one frame, written
    straight to their transport; the others (compressed, client side, other channel kinds)
    get ``sink.add``.
    Call it from the event loop's thread. Raises ``TypeError`` for another message type.
    """
    if not isinstance(message, str):
        try:
            memoryview(message)
        except TypeError:
            raise TypeError(
                f"Cannot broadcast {type(message).__name__}: send str (text) or a bytes-like "
                "object (binary)."
            ) from None
    frame: bytes | None = None
    sent = 0
    for channel in channels:
        sink = channel.sink
        if type(sink) is _IOSink:
            conn = sink._conn  # set only while open and not closing, without add_stream
            if conn is None:
                continue
            protocol = sink._channel._transport_protocol
            if protocol is None or protocol._writing_paused:
                continue
            if conn.accepts_shared_frames:
                if frame is None:
                    frame = encode_shared_frame(message)
                transport = protocol.transport
                if isinstance(transport, DirectTransport):
                    # One frame for many: no gathering per socket; counted as a message sent.
                    transport.write_shared(frame)
                else:
                    sink._write(frame)
                    conn.count_shared_frame(len(frame))
            else:
                sink.add(message)
            sent += 1
        elif isinstance(sink, _ByteStreamSink):  # wschannel.trio and wschannel.anyio
            conn = sink._conn  # set only while open and not closing, without add_stream
            if conn is None or sink._write_buffer_full():
                continue
            if conn.accepts_shared_frames:
                if frame is None:
                    frame = encode_shared_frame(message)
                sink._write(frame)
                conn.count_shared_frame(len(frame))
            else:
                sink.add(message)
            sent += 1
        elif isinstance(sink, GuaranteeSink):
            if sink._closed or sink._disconnected or sink._adding_stream:
                continue
            if sink._write_buffer_full():
                continue
            sink.add(message)
            sent += 1
        else:
            sink.add(message)
            sent += 1
    return sent
