"""The client and server of :mod:`wschannel.trio` and :mod:`wschannel.anyio`: the opening
handshakes done on a byte stream of a structured-concurrency library, then the connection run
by the byte-stream driver (:mod:`wschannel.bytestream`).

One implementation for both libraries. What differs (opening a TCP or Unix connection, TLS,
listening, reading and writing, task groups, cancel scopes) is a :class:`Backend`, which
:mod:`wschannel.trio` and :mod:`wschannel.anyio` each provide; :class:`Api` holds one and
gives ``connect`` and ``serve`` their signatures and documentation, once.

The handshakes are the engine's, as the asyncio and blocking flavours use them:
:class:`~wschannel._wschannel.ClientHandshake` (built by :class:`~wschannel._net.ClientPlan`,
with redirects) and :class:`~wschannel._wschannel.ServerHandshake` (``check``, ``accept``:
``shelf_web_socket``'s rules, subprotocols, permessage-deflate). Once a handshake is done, the
negotiated extension goes to the engine's :class:`~wschannel._wschannel.Connection` and
:func:`~wschannel.bytestream.start_channel` runs the session over the byte stream; so
compression, keepalive, the close deadline and the close code are the engine session's, as
everywhere else.

Where things run. The opening handshake runs in the caller's task (``connect``) or in the
connection's task of the server's task group (``serve``), so a cancel scope around it cancels
it. The open connection's reader and writer are tasks of the byte-stream driver (trio system
tasks, or asyncio tasks under anyio's asyncio backend), bounded by the session: they end when
the connection does. The server's handler runs in the connection's task; when that task is
cancelled (the server's task group, an enclosing scope), the connection is closed with 1001
(going away) and the task waits, shielded, for the closing handshake (the session bounds it
with ``close_timeout``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

from ._fragments import Delivery, in_pieces
from ._net import (
    USER_AGENT,
    ClientHop,
    ClientPlan,
    Headers,
    Response,
    deflate_level,
    deflate_options,
    format_peer,
    handshake_error,
    header_list,
)
from ._proxy import Proxy, ProxySetting, open_tunnel
from ._reconnect import (
    Attempts,
    Delays,
    RetryRule,
    backoff,
    check_reconnect_options,
    close_code_for,
    retryable,
)
from ._sink import GuaranteeSink
from ._wschannel import (
    Connection,
    DeflateOptions,
    HandshakeError,
    Request,
    ServerHandshake,
    reject_response,
)
from .bytestream import ByteStreamWebSocketChannel, start_channel
from .channel import WebSocketChannel
from .defaults import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PING_INTERVAL,
    DEFAULT_WRITE_LIMIT,
)
from .exceptions import ProxyError, WebSocketChannelException, WebSocketConnectionClosed
from .metrics import (
    OPEN_TIMEOUT,
    PROCESS_REQUEST,
    PROCESS_REQUEST_ERROR,
    ServerMetrics,
    Tally,
    engine_reason,
)
from .server import broadcast
from .status import ABNORMAL_CLOSURE, GOING_AWAY, INTERNAL_SERVER_ERROR, NORMAL_CLOSURE

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Api", "Backend", "Connect", "Serve", "Server", "ServerChannel"]

client_logger = logging.getLogger("wschannel.client")
server_logger = logging.getLogger("wschannel.server")

READ_SIZE: Final = 1 << 16
"""The most bytes one read of an opening handshake asks for."""

_ACCEPT_RETRY: Final = 0.1
"""Seconds the server waits before accepting again after ``accept`` failed (out of file
descriptors, say): it does not spin meanwhile."""

_connection_ids = itertools.count(1)

Handler: TypeAlias = Callable[["ServerChannel"], Awaitable[None] | None]
"""Called with the channel of each new connection: an async function, or a plain function."""

ProcessRequest: TypeAlias = Callable[[Request], Awaitable[Response | None] | Response | None]
"""Looks at the upgrade request first: ``None`` to go on, or a
:data:`~wschannel.server.Response` (status, headers, body) to refuse it."""


class CancelScope(Protocol):
    """What this module uses of trio's and anyio's cancel scopes."""

    shield: bool

    @property
    def cancelled_caught(self) -> bool: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None: ...


class TaskGroup(Protocol):
    """What this module uses of a trio nursery or an anyio task group."""

    def start_soon(self, function: Callable[..., Awaitable[Any]], *args: Any) -> None: ...


class Event(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


class Backend(Protocol):
    """What differs between trio and anyio. Streams and listeners are the library's own."""

    name: str

    def check_running(self, what: str) -> None:
        """Raise ``RuntimeError`` saying what to use instead unless the library runs in
        this thread (``what`` names the call)."""

    def cancelled(self) -> type[BaseException]:
        """The exception a cancelled wait raises (``trio.Cancelled``; under anyio the
        backend's)."""

    async def connect_tcp(self, host: str, port: int) -> Any: ...

    async def connect_unix(self, path: str) -> Any: ...

    async def resolve(self, host: str, port: int) -> str:
        """The first address of ``host`` for TCP (for a ``socks5://`` proxy, which is given
        addresses); ``OSError`` if it does not resolve."""

    async def tls_client(self, stream: Any, context: ssl_module.SSLContext, hostname: str) -> Any:
        """``stream`` wrapped in TLS, the handshake done."""

    async def tls_server(self, stream: Any, context: ssl_module.SSLContext) -> Any:
        """``stream`` wrapped in TLS as a server, the handshake done."""

    async def listen_tcp(self, host: str | None, port: int, backlog: int) -> list[Any]:
        """The listeners for ``host`` (``None``: every interface) and ``port``."""

    async def accept(self, listener: Any) -> Any:
        """The next connection's stream; raises ``OSError`` for a failed accept and the
        library's closed-resource error once the listener is closed."""

    def closed_resource(self) -> type[Exception]:
        """The error of a listener used after it was closed."""

    def local_address(self, listener: Any) -> Any:
        """A listener's address, as ``socket.getsockname()`` gives it."""

    def peer_address(self, stream: Any) -> Any:
        """A stream's peer address, as ``socket.getpeername()`` gives it (``None`` if
        unknown)."""

    async def receive(self, stream: Any, max_bytes: int) -> bytes | bytearray:
        """Up to ``max_bytes``; ``b''`` at EOF."""

    async def send(self, stream: Any, data: bytes) -> None: ...

    async def aclose_forcefully(self, resource: Any) -> None: ...

    def task_group(self) -> contextlib.AbstractAsyncContextManager[TaskGroup]: ...

    def cancel_scope(self, *, shield: bool = False) -> CancelScope: ...

    def move_on_after(self, seconds: float | None) -> CancelScope:
        """A cancel scope with a deadline ``seconds`` from now (none for ``None``)."""

    def event(self) -> Event: ...

    async def sleep(self, seconds: float) -> None: ...


# The client.


class Connect:
    """What ``connect`` returns: ``await`` it for the open channel, ``async with`` it to
    close the channel on exit, or ``async for`` over it to reconnect.

    Leaving the ``async with`` block closes with 1000 (normal closure), 1011 (internal
    error) if the block raised, or 1001 (going away) if it was cancelled (or interrupted),
    then waits for the closing handshake, shielded from cancellation; the session bounds
    that wait with ``close_timeout``.

    ``async for channel in connect(url):`` gives a channel once open, then, each time the
    loop comes back, the previous one closed (1000 if still open) and a new one, as the
    asyncio client does (:class:`~wschannel._reconnect.Reconnecting`): attempts that fail
    are retried after ``reconnect_delays`` (a ``Retry-After`` of a 429 or 5xx is honoured)
    while ``should_retry`` says so, the first one too. The iteration stops when the loop
    does (``break`` leaves the channel open: ``async with channel:`` closes it), when the
    delays run out after a connection, or by raising an attempt's error. The waits are
    sleeps in the iterating task, so a cancel scope around the loop cancels them.
    """

    __slots__ = (
        "_api",
        "_channel",
        "_close_timeout",
        "_delays",
        "_make",
        "_options",
        "_rule",
        "_url",
    )

    def __init__(
        self,
        api: Api,
        url: str,
        options: dict[str, Any],
        make: Callable[[], dict[str, Any]],
        delays: Delays,
        rule: RetryRule,
    ) -> None:
        self._api = api
        self._url = url
        self._options: dict[str, Any] | None = options
        self._close_timeout: float | None = options["close_timeout"]
        self._make = make
        self._delays = delays
        self._rule = rule
        self._channel: ByteStreamWebSocketChannel | None = None

    def _take_options(self) -> dict[str, Any]:
        """The options made at the call for the first opening, new ones after."""
        options, self._options = self._options, None
        return self._make() if options is None else options

    def __await__(self) -> Generator[Any, None, ByteStreamWebSocketChannel]:
        return self._api._open(self._url, self._take_options()).__await__()

    async def __aenter__(self) -> ByteStreamWebSocketChannel:
        if self._channel is not None:
            raise RuntimeError(
                "This connect() is already in use: call connect() again for another connection."
            )
        self._channel = await self._api._open(self._url, self._take_options())
        return self._channel

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        channel = self._channel
        assert channel is not None
        # 1001 for a cancellation (or KeyboardInterrupt...), as every ``async with`` closes.
        code = close_code_for(exc)
        await _close_and_wait(self._api.backend, channel, code, self._close_timeout)

    def __aiter__(self) -> Reconnecting:
        return Reconnecting(self._api, self._url, self._take_options, self._delays, self._rule)

    def __getattr__(self, name: str) -> Any:
        # Only for names this class lacks: a channel's, used on what connect() returned
        # (as asyncio's wschannel.connect returns the channel at once).
        if name in _CHANNEL_ATTRIBUTES:
            library = self._api.backend.name
            raise AttributeError(
                f"connect() under {library} returns a Connect, not the channel, so it has no "
                f"{name!r}: open the channel with `async with connect(url) as channel:`, "
                "`channel = await connect(url)` or `async for channel in connect(url):` "
                "(these work with asyncio's connect too)."
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class Reconnecting:
    """``async for channel in connect(url)`` on trio or anyio: see :class:`Connect`."""

    __slots__ = ("_api", "_attempts", "_current", "_ended", "_options", "_url")

    def __init__(
        self,
        api: Api,
        url: str,
        options: Callable[[], dict[str, Any]],
        delays: Delays,
        rule: RetryRule,
    ) -> None:
        self._api = api
        self._url = url
        self._options = options
        self._attempts = Attempts(url, delays, rule)
        self._current: tuple[ByteStreamWebSocketChannel, float | None] | None = None
        self._ended = False

    def __aiter__(self) -> Reconnecting:
        return self

    async def __anext__(self) -> ByteStreamWebSocketChannel:
        if self._ended:
            raise StopAsyncIteration
        backend = self._api.backend
        attempts = self._attempts
        current, self._current = self._current, None
        if current is not None:
            channel, close_timeout = current
            await _close_and_wait(backend, channel, NORMAL_CLOSURE, close_timeout)
            delay = attempts.after_loss(channel.close_code)
            if delay is None:
                self._ended = True
                raise StopAsyncIteration
            await backend.sleep(delay)
        while True:
            attempts.attempt()
            options = self._options()
            try:
                channel = await self._api._open(self._url, options)
            except Exception as error:
                try:
                    delay = attempts.after_failure(error)
                except BaseException:
                    self._ended = True
                    raise
                await backend.sleep(delay)
            else:
                attempts.opened()
                self._current = (channel, options["close_timeout"])
                return channel


_CHANNEL_ATTRIBUTES: Final = frozenset(
    name for name in dir(ByteStreamWebSocketChannel) if not name.startswith("__")
) | {"ready", "stream", "sink", "protocol", "close_code", "close_reason"}
"""What a channel has and :class:`Connect` has not: named in the error when used on it."""


def _going_away(sink: GuaranteeSink, code: int) -> None:
    """Close with ``code``, even while ``add_stream`` runs (which it stops)."""
    if sink._closed or sink._close_started or sink._disconnected:
        return
    if not sink._adding_stream:
        sink.close(code)
        return
    sink._messages._discard()
    if not sink._disconnected:
        sink._close_started = True
        sink._start_close(code, None)
        sink._disconnect()


async def _close_and_wait(
    backend: Backend, channel: ByteStreamWebSocketChannel, code: int, close_timeout: float | None
) -> None:
    """Close ``channel`` with ``code`` (unless it is closing already), then wait, shielded
    from cancellation, until it is closed. The session aborts a closing handshake that takes
    longer than ``close_timeout``; without one, the wait stops after
    :data:`~wschannel.defaults.DEFAULT_CLOSE_TIMEOUT` and the connection goes on closing in
    the background."""
    sink = channel.sink
    assert isinstance(sink, GuaranteeSink)
    _going_away(sink, code)
    bound = DEFAULT_CLOSE_TIMEOUT if close_timeout is None else close_timeout + 1.0
    with backend.move_on_after(bound) as scope:
        scope.shield = True
        with contextlib.suppress(Exception):  # done fails with an add_error() error
            await sink.done


# The server.


class ServerChannel(ByteStreamWebSocketChannel):
    """The channel a server's handler gets: a :class:`~wschannel.bytestream.
    ByteStreamWebSocketChannel` that also knows its :attr:`server` and its upgrade
    :attr:`request`."""

    __slots__ = ("_id", "_peer", "_request", "_server")

    _server: Server
    _request: Request
    _id: int
    _peer: str | None

    @property
    def server(self) -> Server:
        """The server that accepted this connection: its other :attr:`~Server.connections`,
        :meth:`~Server.broadcast`, :meth:`~Server.close`."""
        return self._server

    @property
    def request(self) -> Request:
        """The HTTP upgrade request that opened the connection: its ``path``, ``headers``
        and ``header(name)``."""
        return self._request


class Server:
    """A running server, made by ``serve`` (``async with serve(...) as server:``).

    :attr:`connections` are the open channels; :meth:`broadcast` sends a message to them;
    :meth:`close` stops the server. A handler reaches its server as ``channel.server``.
    """

    def __init__(self, api: Api, handler: Handler, options: dict[str, Any]) -> None:
        limit = options["max_pending_handshakes"]
        if limit is not None and limit < 1:
            raise ValueError("max_pending_handshakes must be at least 1, or None.")
        self._api = api
        self._backend = api.backend
        self.handler = handler
        self._options = options
        self._deflate: DeflateOptions | None = options["deflate"]
        self._listeners: list[Any] = []
        self._group: TaskGroup | None = None
        self._channels: set[ServerChannel] = set()
        self._opening: set[CancelScope] = set()  # the opening handshakes' scopes
        self._handlers: set[CancelScope] = set()  # the handlers' scopes
        self._accepting: CancelScope | None = None
        self._slot_free: Event | None = None  # set when a handshake slot frees up
        self._tasks = 0  # connection tasks running
        self._idle: Event | None = None  # set: no connection task left, once closing
        self._closing = False
        self._tally = Tally()

    @property
    def port(self) -> int:
        """The port of the first listener (useful after binding port 0)."""
        if not self._listeners:
            raise ValueError("The server is not listening.")
        port: int = self._backend.local_address(self._listeners[0])[1]
        return port

    @property
    def addresses(self) -> list[Any]:
        """The listeners' addresses, as ``socket.getsockname()`` gives them."""
        return [self._backend.local_address(listener) for listener in self._listeners]

    @property
    def connections(self) -> list[ServerChannel]:
        """The channels of the open connections (opening handshake done, not closed)."""
        return [channel for channel in self._channels if not channel.sink.done.done()]

    @property
    def pending_handshakes(self) -> int:
        """How many connections are in their opening handshake."""
        return len(self._opening)

    @property
    def metrics(self) -> ServerMetrics:
        """A snapshot of the server's counters since it started (see
        :class:`~wschannel.metrics.ServerMetrics`)."""
        return self._tally.snapshot(
            (channel._driver.conn.counters, channel._driver.streams.high_water)
            for channel in self._channels
            if not channel.sink.done.done()
        )

    def broadcast(
        self,
        message: str | Buffer,
        *,
        exclude: WebSocketChannel | Iterable[WebSocketChannel] = (),
    ) -> int:
        """Send ``message`` to every open connection except ``exclude`` (a channel, or
        several: ``exclude=channel`` in a handler sends to the others); returns how many got
        it. The rules of :func:`wschannel.broadcast`: closing, slow (write buffer over
        ``write_limit``) and ``add_stream``-ing channels are skipped, and uncompressed
        connections share one encoded frame."""
        excluded = {exclude} if isinstance(exclude, WebSocketChannel) else set(exclude)
        return broadcast(
            (channel for channel in self._channels if channel not in excluded), message
        )

    def close(self) -> None:
        """Stop accepting, drop the connections in their opening handshake, and close the
        open ones with 1001 (going away).

        Does not wait: leaving ``async with serve(...)`` (or :meth:`aclose`) waits until
        every connection is closed and every handler has returned. Handlers still running
        ``close_timeout`` seconds (10 if ``None``) after that are cancelled. Safe to call
        from a handler, and more than once.
        """
        if self._closing:
            return
        self._closing = True
        server_logger.debug("Closing the server")
        if self._accepting is not None:
            self._accepting.cancel()
        for scope in list(self._opening):
            scope.cancel()
        for channel in list(self._channels):
            sink = channel.sink
            assert isinstance(sink, GuaranteeSink)
            _going_away(sink, GOING_AWAY)
        if self._tasks == 0:
            self._idle_now()
        elif self._group is not None:
            self._group.start_soon(self._reap)

    async def aclose(self) -> None:
        """:meth:`close`, then wait until every connection task has finished (not from a
        handler: it would wait for itself)."""
        self.close()
        await self._idle_event().wait()

    def _idle_event(self) -> Event:
        if self._idle is None:
            self._idle = self._backend.event()
        return self._idle

    def _idle_now(self) -> None:
        self._idle_event().set()

    def __repr__(self) -> str:
        where = ", ".join(str(address) for address in self.addresses)
        return f"<Server {where or 'not listening'}>"

    # Running.

    async def _run(self, group: TaskGroup, listeners: list[Any]) -> None:
        """Accept on every listener until closed (in ``group``'s task)."""
        self._group = group
        self._listeners = listeners
        with self._backend.cancel_scope() as scope:
            self._accepting = scope
            if self._closing:
                scope.cancel()
            async with self._backend.task_group() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept, listener)
        for listener in listeners:
            with contextlib.suppress(Exception):
                await self._backend.aclose_forcefully(listener)

    async def _accept(self, listener: Any) -> None:
        backend = self._backend
        limit = self._options["max_pending_handshakes"]
        group = self._group
        assert group is not None
        while True:
            while limit is not None and len(self._opening) >= limit:
                # Full: stop accepting; new connections wait in the listen backlog.
                self._slot_free = event = backend.event()
                await event.wait()
            try:
                stream = await backend.accept(listener)
            except backend.closed_resource():
                return
            except OSError as exc:  # out of file descriptors, say: the server goes on
                server_logger.error("accept() failed: %s", exc)
                await backend.sleep(_ACCEPT_RETRY)
                continue
            scope = backend.move_on_after(self._options["open_timeout"])
            self._opening.add(scope)  # counted at once, for max_pending_handshakes
            self._tasks += 1
            group.start_soon(self._connection, stream, scope)

    async def _connection(self, stream: Any, scope: CancelScope) -> None:
        """One connection's task: the opening handshake, then the handler."""
        try:
            channel = await self._open(stream, scope)
            if channel is not None:
                await self._serve(channel)
        finally:
            self._tasks -= 1
            if self._closing and self._tasks == 0:
                self._idle_now()

    async def _open(self, stream: Any, scope: CancelScope) -> ServerChannel | None:
        """TLS and the opening handshake within ``open_timeout``: the open channel, or
        ``None`` (refused, failed, timed out, or the server is closing; the stream is then
        closed)."""
        backend = self._backend
        peer = format_peer(backend.peer_address(stream))
        log = _ConnectionLog(server_logger, peer)
        channel = None
        try:
            with scope:
                if self._closing:
                    scope.cancel()
                ssl = self._options["ssl"]
                if ssl is not None:
                    stream = await backend.tls_server(stream, ssl)
                channel = await self._handshake(stream, log)
            if scope.cancelled_caught and not self._closing:
                log.info("Dropped: no opening handshake within open_timeout")
                self._tally.refused(None, OPEN_TIMEOUT)
        except Exception as exc:
            log.debug("Opening handshake failed: %r", exc)
        finally:
            self._opening.discard(scope)
            slot_free, self._slot_free = self._slot_free, None
            if slot_free is not None:
                slot_free.set()
            if channel is None:
                with contextlib.suppress(Exception):
                    await backend.aclose_forcefully(stream)
        return channel

    async def _handshake(self, stream: Any, log: _ConnectionLog) -> ServerChannel | None:
        """Read the upgrade request and answer it; the channel, or ``None`` if refused."""
        backend = self._backend
        options = self._options
        handshake = ServerHandshake(max_header_size=options["max_header_size"])
        request = None
        try:
            while request is None:
                data = await backend.receive(stream, READ_SIZE)
                if not data:
                    return None  # the client left
                request = handshake.receive_data(data)
        except HandshakeError as exc:
            status = exc.status or 400
            await self._refuse(stream, log, None, status, str(exc), (), engine_reason(status))
            return None
        log.forwarded_for = request.header("X-Forwarded-For")
        process_request = options["process_request"]
        if process_request is not None:
            try:
                response = process_request(request)
                if inspect.isawaitable(response):
                    response = await response
            except Exception:
                log.error("Error in process_request", exc_info=True)
                body = "Internal Server Error"
                await self._refuse(stream, log, request, 500, body, (), PROCESS_REQUEST_ERROR)
                return None
            if response is not None:
                status, headers, body_bytes = response
                await self._refuse(
                    stream, log, request, status, body_bytes, headers, PROCESS_REQUEST
                )
                return None
        rejection = handshake.check(request, allowed_origins=options["allowed_origins"])
        if rejection is not None:
            status, message, headers = rejection
            await self._refuse(
                stream, log, request, status, message, headers, engine_reason(status)
            )
            return None
        try:
            answer = handshake.accept(
                request, protocols=options["protocols"], deflate=self._deflate
            )
        except HandshakeError as exc:
            status = exc.status or 400
            await self._refuse(stream, log, request, status, str(exc), (), engine_reason(status))
            return None
        conn = Connection(
            False,
            max_message_size=options["max_message_size"],
            deflate=handshake.extensions,
            deflate_level=deflate_level(self._deflate),
        )
        channel = start_channel(
            ServerChannel,
            stream,
            stream,
            conn,
            protocol=handshake.protocol,
            max_queue=options["max_queue"],
            ping_interval=options["ping_interval"],
            pong_timeout=options["pong_timeout"],
            close_timeout=options["close_timeout"],
            write_limit=options["write_limit"],
            leftover=request.leftover(),
            preface=answer,  # the 101 goes out first, by the channel's writer
            deliver_pieces=options["pieces"],
        )
        channel._server = self
        channel._request = request
        channel._id = log.connection_id
        channel._peer = log.peer
        self._channels.add(channel)
        self._tally.connections_total += 1
        details = [] if handshake.protocol is None else [f"protocol {handshake.protocol}"]
        if handshake.extensions is not None:
            details.append("compressed")
        log.info("Open %s%s", request.path, f" ({', '.join(details)})" if details else "")
        return channel

    async def _refuse(
        self,
        stream: Any,
        log: _ConnectionLog,
        request: Request | None,
        status: int,
        message: str | bytes,
        headers: Iterable[tuple[str, str]],
        reason: str,
    ) -> None:
        """Answer with ``status`` instead of the upgrade; ``reason`` classifies it in the
        metrics."""
        self._tally.refused(status, reason)
        what = "a request" if request is None else f"{request.method} {request.path}"
        log.info("Refused %s with %d", what, status)
        body = message.encode() if isinstance(message, str) else message
        await self._backend.send(stream, reject_response(status, list(headers), body))
        with contextlib.suppress(Exception):
            await stream.aclose()

    async def _serve(self, channel: ServerChannel) -> None:
        """Run the handler; when it returns, close with 1000 if still open (1011 if it
        raised) and wait until the connection is closed. A plain function's channel stays
        open until one side closes it. A handler cancelled by the server (still running
        ``close_timeout`` after the server closed) is stopped silently; one cancelled from
        outside closes the connection with 1001 and lets the cancellation through."""
        backend = self._backend
        close_timeout = self._options["close_timeout"]
        log = _ConnectionLog(server_logger, channel._peer, channel._id)
        scope = backend.cancel_scope()
        self._handlers.add(scope)
        opened = time.monotonic()
        try:
            with scope:
                code = await self._call_handler(channel, log)
                if code is not None:
                    await _close_and_wait(backend, channel, code, close_timeout)
                else:
                    with contextlib.suppress(Exception):
                        await channel.sink.done
        finally:
            self._handlers.discard(scope)
            self._channels.discard(channel)
            self._count_closed(channel)
            log.info(
                "Closed with %s %r after %.3f s",
                channel.close_code,
                channel.close_reason or "",
                time.monotonic() - opened,
            )

    async def _call_handler(self, channel: ServerChannel, log: _ConnectionLog) -> int | None:
        """The handler's outcome: the close code to send, ``None`` for a plain function."""
        try:
            result = self.handler(channel)
            if not inspect.isawaitable(result):
                return None
            await result
        except WebSocketConnectionClosed:
            # flush() after the connection ended: the handler stopped sending, as it should.
            return NORMAL_CLOSURE
        except Exception:
            log.error("Error in a WebSocket connection handler", exc_info=True)
            return INTERNAL_SERVER_ERROR
        except BaseException as exc:
            if isinstance(exc, self._backend.cancelled()):
                await _close_and_wait(
                    self._backend, channel, GOING_AWAY, self._options["close_timeout"]
                )
            raise
        return NORMAL_CLOSURE

    def _count_closed(self, channel: ServerChannel) -> None:
        code = channel.close_code
        driver = channel._driver
        self._tally.closed(
            driver.conn.counters,
            ABNORMAL_CLOSURE if code is None else code,
            driver.streams.high_water,
        )

    async def _reap(self) -> None:
        """After :meth:`close`: cancel the handlers still running ``close_timeout`` after
        their connections closed."""
        timeout = self._options["close_timeout"]
        grace = DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout
        # The connections close within close_timeout (the session's deadline), then the
        # handlers have as long again.
        with self._backend.move_on_after(2 * grace + 1.0):
            await self._idle_event().wait()
            return
        if self._handlers:
            server_logger.warning(
                "Cancelled %d handlers still running at shutdown", len(self._handlers)
            )
        for scope in list(self._handlers):
            scope.cancel()


class _ConnectionLog:
    """One connection's records: ``peer``, ``connection_id`` and ``forwarded_for`` in each,
    as :mod:`wschannel.io` logs them."""

    __slots__ = ("connection_id", "forwarded_for", "logger", "peer")

    def __init__(
        self, logger: logging.Logger, peer: str | None, connection_id: int | None = None
    ) -> None:
        self.logger = logger
        self.peer = peer
        self.connection_id = next(_connection_ids) if connection_id is None else connection_id
        self.forwarded_for: str | None = None

    def _log(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        if self.logger.isEnabledFor(level):
            extra = {
                "peer": self.peer,
                "connection_id": self.connection_id,
                "forwarded_for": self.forwarded_for,
            }
            self.logger.log(level, message, *args, exc_info=exc_info, extra=extra)

    def debug(self, message: str, *args: object) -> None:
        self._log(logging.DEBUG, message, *args)

    def info(self, message: str, *args: object) -> None:
        self._log(logging.INFO, message, *args)

    def error(self, message: str, *args: object, exc_info: bool = False) -> None:
        self._log(logging.ERROR, message, *args, exc_info=exc_info)


class Serve:
    """What ``serve`` returns: ``async with`` it for the running :class:`Server`.

    On exit the server closes (:meth:`Server.close`) and the block waits until every
    connection is closed and every handler has returned. An exception from the block goes
    through unchanged (not wrapped in an exception group).
    """

    __slots__ = ("_host", "_port", "_server", "_stack")

    def __init__(self, server: Server, host: str | None, port: int) -> None:
        self._server = server
        self._host = host
        self._port = port
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Server:
        if self._stack is not None:
            raise RuntimeError("This serve() is already running: call serve() again.")
        server = self._server
        backend = server._backend
        backend.check_running("serve()")
        listeners = await backend.listen_tcp(self._host, self._port, server._options["backlog"])
        stack = contextlib.AsyncExitStack()
        try:
            group = await stack.enter_async_context(backend.task_group())
            server._listeners = listeners
            group.start_soon(server._run, group, listeners)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        for address in server.addresses:
            server_logger.info("Listening on %s", format_peer(address))
        return server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack = self._stack
        assert stack is not None
        self._server.close()
        # The block's exception is not handed to the task group, which would cancel the
        # handlers (they get their close instead) and wrap it in an exception group.
        await stack.__aexit__(None, None, None)


# The API, for a backend.


class Api:
    """``connect`` and ``serve`` on one :class:`Backend`: :mod:`wschannel.trio` and
    :mod:`wschannel.anyio` export these bound methods."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def connect(
        self,
        url: str,
        *,
        protocols: Iterable[str] | None = None,
        headers: Headers | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        compression: bool | DeflateOptions | None = True,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        write_limit: int | None = DEFAULT_WRITE_LIMIT,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        pong_timeout: float | None = None,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        user_agent: str | None = USER_AGENT,
        max_header_size: int = 16384,
        unix_socket: str | os.PathLike[str] | None = None,
        proxy: ProxySetting = True,
        proxy_ssl: ssl_module.SSLContext | None = None,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        reconnect_delays: Delays = backoff,
        should_retry: RetryRule = retryable,
        delivery: Delivery = "messages",
    ) -> Connect:
        """Connect to a ``ws://`` or ``wss://`` URL: ``channel = await connect(url)``, or
        ``async with connect(url) as channel:``, which closes it on exit (1000; 1011 if the
        block raised, 1001 if it was cancelled) and waits for the closing handshake, or
        ``async for channel in connect(url):``, which reconnects (:class:`Connect`).

        TCP (or a Unix socket), the proxy's tunnel, TLS and the opening handshake (RFC 6455
        §4.1) run in the calling task, so a cancel scope around them cancels them. The
        channel is a :class:`~wschannel.bytestream.ByteStreamWebSocketChannel`: open, its
        ``protocol`` the subprotocol the server chose, compressed if permessage-deflate was
        negotiated.

        The options and their defaults are :meth:`wschannel.io.IOWebSocketChannel.connect`'s:
        ``protocols``, ``headers``, ``ssl``, ``compression``, ``max_message_size``,
        ``max_queue``, ``write_limit`` (bytes waiting to be written above which
        ``sink.flush()`` waits), ``connect_timeout`` (TCP, the proxy, TLS and the handshake,
        redirects included), ``ping_interval``, ``pong_timeout``, ``close_timeout``,
        ``user_agent``, ``max_header_size``, ``unix_socket`` (the path of a Unix-domain
        socket to connect to; the URL still gives the ``Host`` header, the path and TLS's
        server name), ``proxy`` (a proxy URL: ``http://``, ``https://``, ``socks5://`` or
        ``socks5h://``, with ``user:password@``; ``True``, the default: the environment's,
        not for hosts in ``no_proxy``; ``None``: direct), ``proxy_ssl`` (the TLS context
        for an ``https://`` proxy), ``max_redirects``, ``reconnect_delays`` and
        ``should_retry`` (when iterated: the delays between attempts, and which errors are
        tried again; :func:`wschannel.retryable` by default), ``delivery`` (``"pieces"``:
        messages in pieces from the first frame, see
        :meth:`~wschannel.bytestream.ByteStreamWebSocketChannel.fragments`).

        Raises at the call ``ValueError`` for an invalid URL or proxy; when awaited,
        :class:`~wschannel.WebSocketChannelException` naming the URL when the connection
        could not be opened (:class:`~wschannel.exceptions.InvalidStatus` if the server
        answered with another status than 101, :class:`~wschannel.exceptions.ProxyError`
        if the proxy could not be reached or refused; ``inner`` holds the cause otherwise),
        and ``TimeoutError`` after ``connect_timeout``.
        """
        check_reconnect_options(
            {"reconnect_delays": reconnect_delays, "should_retry": should_retry}
        )
        _check_timeouts(ping_interval, close_timeout)
        pieces_first = in_pieces(delivery)
        make = functools.partial(
            _client_options,
            str(url),
            protocols=list(protocols or ()),
            headers=header_list(headers),
            ssl=ssl,
            compression=compression,
            max_message_size=max_message_size,
            max_queue=max_queue,
            write_limit=write_limit,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            close_timeout=close_timeout,
            user_agent=user_agent,
            max_header_size=max_header_size,
            unix_socket=None if unix_socket is None else os.fspath(unix_socket),
            proxy=proxy,
            proxy_ssl=proxy_ssl,
            max_redirects=max_redirects,
            pieces=pieces_first,
        )
        # Made now, so that an invalid URL, proxy or option raises at the call; each
        # reconnection makes its own (a redirect chain is one attempt's).
        options = make()
        return Connect(self, str(url), options, make, reconnect_delays, should_retry)

    def serve(
        self,
        handler: Handler,
        host: str | None = None,
        port: int = 0,
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
        process_request: ProcessRequest | None = None,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
        max_header_size: int = 16384,
        backlog: int = 100,
        delivery: Delivery = "messages",
    ) -> Serve:
        """Listen on ``host`` (``None``: every interface) and ``port`` (``0``: any free
        one) and run ``handler(channel)`` for each WebSocket connection, in a task of the
        server's own: ``async with serve(handler, host, port) as server:``.

        The handler gets a :class:`ServerChannel`, whose ``server`` is the :class:`Server`
        (its ``connections``, ``broadcast``). When an async handler returns, its
        connection is closed with 1000 if still open (1011 if it raised); a plain
        function's stays open until one side closes it. Leaving the block closes the server
        (1001 to every connection) and waits for the connections and handlers.

        The options and their defaults are :func:`wschannel.serve`'s: ``protocols``,
        ``allowed_origins``, ``compression``, ``max_message_size``, ``max_queue``,
        ``write_limit`` (bytes waiting to be written above which the server stops reading
        from that client, and ``sink.flush()`` waits), ``ping_interval``,
        ``pong_timeout``, ``ssl`` (an :class:`ssl.SSLContext` to serve ``wss://``),
        ``process_request`` (sync or async), ``close_timeout``, ``open_timeout`` (TLS and
        the upgrade request), ``max_header_size``, ``backlog`` and ``delivery``
        (``"pieces"``: messages in pieces from the first frame). One difference:
        ``max_pending_handshakes`` connections in their opening handshake make the server
        stop accepting until one is done (new ones wait in the listen backlog), as the
        blocking server does, instead of answering 503.
        """
        _check_timeouts(ping_interval, close_timeout)
        if open_timeout is not None and open_timeout <= 0:
            raise ValueError("open_timeout must be positive, or None.")
        origins = None if allowed_origins is None else list(allowed_origins)
        options = {
            "protocols": list(protocols or ()),
            "allowed_origins": origins,
            "deflate": deflate_options(compression, server=True),
            "max_message_size": max_message_size,
            "max_queue": max_queue,
            "write_limit": write_limit,
            "ping_interval": ping_interval,
            "pong_timeout": pong_timeout,
            "ssl": ssl,
            "process_request": process_request,
            "close_timeout": close_timeout,
            "open_timeout": open_timeout,
            "max_pending_handshakes": max_pending_handshakes,
            "max_header_size": max_header_size,
            "backlog": backlog,
            "pieces": in_pieces(delivery),
        }
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext, not {type(ssl).__name__}.")
        return Serve(Server(self, handler, options), host, port)

    # The client's opening.

    async def _open(self, url: str, options: dict[str, Any]) -> ByteStreamWebSocketChannel:
        """TCP, TLS and the opening handshake, again for each redirect, all within
        ``connect_timeout``; the open channel."""
        plan: ClientPlan = options["plan"]
        backend = self.backend
        backend.check_running("connect()")
        timeout = options["connect_timeout"]
        with backend.move_on_after(timeout):
            hop = plan.first
            while True:
                stream = await self._connect(plan, hop, options["unix_socket"])
                try:
                    outcome = await self._handshake(plan, hop, stream, options)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await backend.aclose_forcefully(stream)
                    raise
                if isinstance(outcome, ClientHop):
                    hop = outcome  # a redirect
                    continue
                return outcome
        raise plan.timeout_error(timeout)

    async def _connect(self, plan: ClientPlan, hop: ClientHop, unix_socket: str | None) -> Any:
        """A stream to ``hop``'s target, directly or through its proxy, TLS done if its URL
        is ``wss://``."""
        backend = self.backend
        target = hop.target
        if hop.proxy is not None:
            stream = await self._tunnel(plan, hop)
        else:
            try:
                if unix_socket is None:
                    stream = await backend.connect_tcp(target.host, target.port)
                else:
                    stream = await backend.connect_unix(unix_socket)
            except Exception as exc:
                cause = _root_cause(exc)
                raise plan.name_url(WebSocketChannelException.from_inner(cause)) from cause
        if target.ssl is None:
            return stream
        try:
            return await backend.tls_client(stream, target.ssl, target.host)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await backend.aclose_forcefully(stream)
            if isinstance(exc, Exception):
                # trio's BrokenResourceError says nothing: the SSLError under it does (a
                # certificate that does not verify is then not retried when reconnecting).
                cause = _root_cause(exc)
                raise plan.name_url(WebSocketChannelException.from_inner(cause)) from cause
            raise

    async def _tunnel(self, plan: ClientPlan, hop: ClientHop) -> Any:
        """A stream to ``hop``'s proxy (TLS to an ``https://`` one) whose tunnel to the
        target is open: :class:`~wschannel.exceptions.ProxyError` naming the URL if the proxy
        cannot be reached or refuses (the tunnels are :mod:`wschannel._proxy`'s, as the
        asyncio and blocking clients use them)."""
        backend = self.backend
        proxy = hop.proxy
        assert proxy is not None
        target = hop.target
        address = None
        if not proxy.resolves_names:  # socks5://: the client resolves the target's name
            try:
                address = await backend.resolve(target.host, target.port)
            except OSError as exc:
                raise plan.name_url(
                    WebSocketChannelException.from_inner(
                        OSError(f"could not resolve {target.host!r} for the socks5:// proxy: {exc}")
                    )
                ) from exc
        tunnel = hop.tunnel(address, plan.user_agent, plan.tunnel_limit())
        try:
            stream = await backend.connect_tcp(proxy.host, proxy.port)
        except OSError as exc:
            unreachable = _unreachable(plan, proxy, exc)
            raise unreachable from unreachable.inner
        try:
            if proxy.tls:
                assert plan.proxy_ssl is not None
                try:
                    stream = await backend.tls_client(stream, plan.proxy_ssl, proxy.host)
                except Exception as exc:
                    unreachable = _unreachable(plan, proxy, exc)
                    raise unreachable from unreachable.inner

            async def receive() -> bytes | bytearray:
                return await backend.receive(stream, READ_SIZE)

            async def send(data: bytes) -> None:
                await backend.send(stream, data)

            try:
                await open_tunnel(tunnel, send, receive)
            except ProxyError as exc:
                raise plan.name_url(exc) from exc.__cause__
            except Exception as exc:  # the proxy's connection broke
                error = ProxyError(
                    f"proxy {proxy} broke the connection before the tunnel was open: "
                    f"{_root_cause(exc)}",
                    proxy=str(proxy),
                )
                error.inner = _root_cause(exc)
                raise plan.name_url(error) from error.inner
        except BaseException:
            with contextlib.suppress(Exception):
                await backend.aclose_forcefully(stream)
            raise
        return stream

    async def _handshake(
        self, plan: ClientPlan, hop: ClientHop, stream: Any, options: dict[str, Any]
    ) -> ByteStreamWebSocketChannel | ClientHop:
        """The opening handshake on ``stream``: the open channel, or the next hop of a
        redirect (the stream is then closed)."""
        backend = self.backend
        handshake = hop.handshake
        try:
            await backend.send(stream, handshake.request())
            complete = False
            while not complete:
                data = await backend.receive(stream, READ_SIZE)
                if not data:
                    raise ConnectionResetError(
                        "The server closed the connection during the handshake."
                    )
                complete = handshake.receive_data(data)
        except HandshakeError as exc:
            error = handshake_error(exc, handshake)
            try:
                next_hop = plan.after(hop)
            except WebSocketChannelException as refused:  # a redirect it cannot follow
                raise plan.name_url(refused) from exc
            except ValueError as invalid:  # a redirect to an unusable URL
                raise plan.name_url(WebSocketChannelException.from_inner(invalid)) from exc
            if next_hop is None:
                raise plan.name_url(error) from exc
            with contextlib.suppress(Exception):
                await backend.aclose_forcefully(stream)
            return next_hop
        except Exception as exc:
            raise plan.name_url(WebSocketChannelException.from_inner(exc)) from exc
        protocol = handshake.protocol
        if protocol is not None and protocol not in options["offered"]:
            raise plan.name_url(
                WebSocketChannelException(
                    f"The server chose the subprotocol {protocol!r}, which was not offered."
                )
            )
        conn = Connection(
            True,
            max_message_size=options["max_message_size"],
            deflate=handshake.extensions,
            deflate_level=options["deflate_level"],
        )
        channel = start_channel(
            ByteStreamWebSocketChannel,
            stream,
            stream,
            conn,
            protocol=protocol,
            max_queue=options["max_queue"],
            ping_interval=options["ping_interval"],
            pong_timeout=options["pong_timeout"],
            close_timeout=options["close_timeout"],
            write_limit=options["write_limit"],
            leftover=handshake.leftover(),
            deliver_pieces=options["pieces"],
        )
        if client_logger.isEnabledFor(logging.DEBUG):
            client_logger.debug(
                "Open %s%s (%s)",
                hop.url,
                "" if protocol is None else f" protocol {protocol}",
                self.backend.name,
                extra={"peer": format_peer(backend.peer_address(stream)), "connection_id": None},
            )
        return channel


def _client_options(
    url: str,
    *,
    protocols: list[str],
    headers: list[tuple[str, str]],
    ssl: ssl_module.SSLContext | bool | None,
    compression: bool | DeflateOptions | None,
    max_message_size: int | None,
    max_queue: int | None,
    write_limit: int | None,
    connect_timeout: float | None,
    ping_interval: float | None,
    pong_timeout: float | None,
    close_timeout: float | None,
    user_agent: str | None,
    max_header_size: int,
    unix_socket: str | None,
    proxy: ProxySetting,
    proxy_ssl: ssl_module.SSLContext | None,
    max_redirects: int,
    pieces: bool,
) -> dict[str, Any]:
    """The options of one attempt to open a client connection, its :class:`ClientPlan`
    (hops, proxies, redirects) new."""
    deflate = deflate_options(compression)
    plan = ClientPlan(
        url,
        ssl=ssl,
        protocols=protocols,
        headers=headers,
        user_agent=user_agent,
        deflate=deflate,
        max_header_size=max_header_size,
        proxy=proxy,
        proxy_ssl=proxy_ssl,
        max_redirects=max_redirects,
        unix_socket=unix_socket is not None,
    )
    return {
        "plan": plan,
        "offered": protocols,
        "deflate_level": deflate_level(deflate),
        "max_message_size": max_message_size,
        "max_queue": max_queue,
        "write_limit": write_limit,
        "connect_timeout": connect_timeout,
        "ping_interval": ping_interval,
        "pong_timeout": pong_timeout,
        "close_timeout": close_timeout,
        "unix_socket": unix_socket,
        "pieces": pieces,
    }


def _check_timeouts(ping_interval: float | None, close_timeout: float | None) -> None:
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError("ping_interval must be positive, or None.")
    if close_timeout is not None and close_timeout < 0:
        raise ValueError("close_timeout must not be negative, or None.")


def _root_cause(error: BaseException) -> BaseException:
    """The error under a library's wrappers, for messages and ``__cause__``: trio's and
    anyio's ``OSError("all attempts to connect ... failed")`` over a group of one error, a
    ``BrokenResourceError`` raised from the ``SSLError`` of a TLS handshake."""
    for _ in range(8):  # bounded: a cause chain is short
        cause = error.__cause__
        if isinstance(cause, BaseExceptionGroup):
            if len(cause.exceptions) != 1:
                break
            cause = cause.exceptions[0]
        if not isinstance(cause, OSError):
            break
        if isinstance(error, OSError) and type(error) is not OSError:
            break  # a specific error (ConnectionRefusedError, SSLError...) says it best
        error = cause
    return error


def _unreachable(plan: ClientPlan, proxy: Proxy, error: BaseException) -> ProxyError:
    """The error of a proxy that could not be reached (TCP, or TLS to an https:// one)."""
    cause = _root_cause(error)
    failure = ProxyError(f"could not reach proxy {proxy}: {cause}", proxy=str(proxy))
    failure.inner = cause
    failure.__cause__ = cause
    plan.name_url(failure)
    return failure
