"""``IOWebSocketChannel``: WebSocket over asyncio sockets, with the Rust engine.

The connection is an :class:`asyncio.Protocol` driving a sans-I/O
:class:`~wschannel._wschannel.Connection`. Per network read: one ``receive_data`` call into
the engine, then the events it returns, in order. Messages go to the channel's
:class:`~wschannel.channel.MessageStream`; control events (ping, pong, close, failure) make the
protocol write the engine's automatic replies and, when the engine says so, close the
transport. Per message sent: one engine call that returns the complete frame, then one
``transport.write``.

Once the handshake is over, a plain TCP or Unix connection moves to a
:class:`~wschannel._direct.DirectTransport` (see :mod:`wschannel._direct`): the engine then
reads the socket itself (``events_received`` gets the events of each read) and ``sink.add``
encodes and sends in one call, with answers gathered into one ``sendmsg`` per read or burst.
TLS connections stay on their asyncio transport.

Closing (RFC 6455 §7.1): the server closes TCP first. A client that has sent and received a
close frame waits for the server's EOF up to ``close_timeout``, then closes the socket itself;
its stream ends once the socket is closed (at the close frame if ``close_timeout`` is None).

Logging: each connection logs to ``wschannel.client`` (client side, at DEBUG) or
``wschannel.server`` (server side, at INFO) when it opens and when it closes (code, reason,
duration). Every record carries ``peer`` (``host:port`` or ``unix:path``), ``connection_id``
(unique in the process) and ``forwarded_for`` (the request's ``X-Forwarded-For``, server
side) as attributes, for a :class:`logging.Formatter` such as
``"%(connection_id)s %(peer)s %(message)s"``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import ssl as ssl_module
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, cast

from ._adapter import AdapterWebSocketChannel
from ._direct import DirectTransport, take_over
from ._message import binary_view
from ._net import (
    USER_AGENT,
    Headers,
    _Target,
    client_handshake,
    deflate_level,
    deflate_options,
    format_peer,
    kernel_unsent,
)
from ._sink import GuaranteeSink
from ._tasks import _retrieve_exception
from ._wschannel import (
    ClientHandshake,
    Close,
    Connection,
    DeflateOptions,
    Failure,
    HandshakeError,
    Ping,
    Pong,
    Request,
)
from .defaults import (
    COMPACT_INTERVAL,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_WRITE_LIMIT,
)
from .exceptions import WebSocketChannelException
from .status import ABNORMAL_CLOSURE, GOING_AWAY

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from typing_extensions import Buffer

    from ._websocket import WebSocket

    Event = str | bytes | Ping | Pong | Close | Failure

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_WRITE_LIMIT",
    "USER_AGENT",
    "DeflateOptions",
    "Headers",
    "IOWebSocketChannel",
]

_NO_WRITE_LIMIT: Final = 1 << 62

client_logger = logging.getLogger("wschannel.client")

_connection_ids = itertools.count(1)

_NO_LOOP_MESSAGE: Final = (
    "IOWebSocketChannel.connect() needs a running asyncio event loop; "
    "from synchronous code, use wschannel.sync instead."
)


class _IOSink(GuaranteeSink):
    """The sink of an :class:`IOWebSocketChannel` over an asyncio transport."""

    __slots__ = (
        "_channel",
        "_close_args",
        "_conn",
        "_live",
        "_pending",
        "_send_binary",
        "_send_text",
        "_write",
    )

    def __init__(self, channel: IOWebSocketChannel) -> None:
        super().__init__(channel._loop, channel._stream)
        self._channel = channel
        # The fast path of add(): set while the connection is open, neither closed by the
        # user nor by the peer, and no add_stream() runs.
        self._conn: Connection | None = None
        self._live: Connection | None = None  # the same, add_stream() or not
        self._write: Callable[[bytes], None] = _write_nowhere
        # Encode and send one message (the transport's own methods on a direct socket).
        self._send_text: Callable[[str], None] = _write_nowhere
        self._send_binary: Callable[[Buffer], None] = _write_nowhere
        self._pending: list[str | bytes] = []  # added before the connection opened
        self._close_args: tuple[int | None, str | None] | None = None  # a close to send

    def add(self, data: str | Buffer) -> None:
        if self._conn is not None:
            cls = type(data)
            if cls is str:
                self._send_text(data)  # type: ignore[arg-type]
                return
            if cls is bytes:
                self._send_binary(data)  # type: ignore[arg-type]
                return
        GuaranteeSink.add(self, data)

    def _send(self, data: str | Buffer) -> None:
        if isinstance(data, str):
            if self._disconnected:
                return
            if self._live is None:
                self._pending.append(data)
            else:
                self._send_text(data)
            return
        buffer = binary_view(data)
        if self._disconnected:
            return
        if self._live is None:
            self._pending.append(bytes(buffer))  # the caller may change it meanwhile
        else:
            self._send_binary(buffer)

    def _start_close(self, code: int | None, reason: str | None) -> None:
        protocol = self._channel._transport_protocol
        if self._live is not None and protocol is not None:
            self._conn = self._live = None
            self._write = self._send_text = self._send_binary = _write_nowhere
            protocol.close(code, reason)
        else:
            self._close_args = (code, reason)  # sent once the connection opens
            self._channel._close_while_connecting()

    def _adding_stream_changed(self) -> None:
        self._conn = None if self._adding_stream else self._live

    def _write_buffer_full(self) -> bool:
        protocol = self._channel._transport_protocol
        if self._live is None or protocol is None:
            return not self._disconnected  # not open yet: flush() waits for it
        return protocol._writing_paused

    async def flush(self) -> None:
        channel = self._channel
        if not channel._ready.done():
            await asyncio.wait([channel._ready])
        protocol = channel._transport_protocol
        if protocol is not None:
            await protocol.drain()
        self._raise_if_disconnected()

    # For the protocol.

    def _open(self, protocol: _WebSocketProtocol, conn: Connection) -> None:
        write = protocol.write
        transport = protocol.transport
        send_text: Callable[[str], None]
        send_binary: Callable[[Buffer], None]
        if isinstance(transport, DirectTransport):
            send_text, send_binary = transport.send_text, transport.send_binary
            self._channel._stream._before_wait = transport.uncork
        else:
            send_text = _sender(write, conn.send_text)
            send_binary = _sender(write, conn.send_binary)

        pending, self._pending = self._pending, []
        for data in pending:
            if isinstance(data, str):
                send_text(data)
            else:
                send_binary(data)
        if self._close_args is not None:
            protocol.close(*self._close_args)
        elif not self._disconnected:
            self._live = conn
            self._write = write
            self._send_text = send_text
            self._send_binary = send_binary
            self._adding_stream_changed()

    def _disconnect(self) -> None:
        super()._disconnect()
        self._conn = self._live = None
        self._write = self._send_text = self._send_binary = _write_nowhere
        self._pending = []


def _sender(
    write: Callable[[bytes], None], encode: Callable[[Any], bytes]
) -> Callable[[Any], None]:
    """``encode`` a message, then ``write`` the frame (on an asyncio transport)."""

    def send(data: Any) -> None:
        write(encode(data))

    return send


def _write_nowhere(data: object) -> None:
    raise AssertionError("wschannel: a message was sent while the connection was not open")


class IOWebSocketChannel(AdapterWebSocketChannel):
    """A WebSocket channel over an asyncio socket (TCP or TLS), driven by the Rust engine.

    Made by :meth:`connect` (client) or by :func:`wschannel.serve` (server side), or
    ``IOWebSocketChannel(connection)`` to wrap an open low-level connection (a
    :class:`wschannel.adapter.WebSocket`, such as an :class:`~wschannel.adapter.IOWebSocket`
    or one of :func:`wschannel.testing.fake_pair`) or an awaitable of one, as
    :class:`~wschannel.adapter.AdapterWebSocketChannel` does (Dart's
    ``IOWebSocketChannel(FutureOr<WebSocket>)``).
    """

    __slots__ = ("_close_timeout", "_connect_task", "_request", "_transport_protocol")

    def __init__(
        self,
        connection: WebSocket | Awaitable[WebSocket],
        *,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
    ) -> None:
        super().__init__(connection, max_queue=max_queue)

    @classmethod
    def _unopened(cls, *, max_queue: int | None = DEFAULT_MAX_QUEUE) -> Self:
        """A channel for a connection over an asyncio transport, not open yet (internal)."""
        channel = cls.__new__(cls)
        channel._setup(max_queue)
        channel._sink = _IOSink(channel)
        return channel

    def _setup(self, max_queue: int | None) -> None:
        super()._setup(max_queue)
        self._transport_protocol: _WebSocketProtocol | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT
        self._request: Request | None = None

    def _close_while_connecting(self) -> None:
        """A close was issued before the connection opened: give the attempt
        ``close_timeout`` more seconds, then drop it (``done`` never hangs)."""
        task, timeout = self._connect_task, self._close_timeout
        if task is not None and timeout is not None:
            self._loop.call_later(timeout, self._give_up_connecting)

    def _give_up_connecting(self) -> None:
        task = self._connect_task
        if task is not None and not self._ready.done():
            task.cancel()

    @classmethod
    def connect(
        cls,
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
        ping_interval: float | None = None,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        user_agent: str | None = USER_AGENT,
        max_header_size: int = 16384,
        unix_socket: str | os.PathLike[str] | None = None,
    ) -> Self:
        """Connect to a ``ws://`` or ``wss://`` URL; returns the channel at once.

        The TCP connection, TLS and the opening handshake (RFC 6455 §4.1) happen in a task;
        :attr:`ready` resolves when the connection is open, or fails with
        :class:`WebSocketChannelException` (``inner`` holds the cause) or, after
        ``connect_timeout`` seconds, ``TimeoutError`` (the attempt is then cancelled).
        Messages added and a close issued before that are sent once it is open.

        - ``protocols``: subprotocols to offer; a server choosing another fails ``ready``.
        - ``headers``: extra request headers. ``user`` and ``password`` in the URL become a
          ``Basic`` ``Authorization`` header; ``user_agent=None`` sends no ``User-Agent``.
        - ``ssl``: for ``wss://``, ``None`` verifies the server with the default CA store,
          an :class:`ssl.SSLContext` is used as it is, ``False`` skips verification.
        - ``compression``: offer permessage-deflate (RFC 7692) with default settings
          (``True``), with given settings (a ``DeflateOptions``), or not (``False``).
        - ``max_message_size``: larger messages from the server fail the connection (1009).
        - ``max_queue``: received messages buffered before reading pauses (backpressure).
        - ``write_limit``: the write buffer size above which ``sink.flush()`` waits.
        - ``ping_interval``: seconds between keepalive pings; no pong within the same time
          closes the connection with 1001 (Dart's algorithm).
        - ``connect_timeout``: seconds for TCP, TLS and the opening handshake together.
        - ``close_timeout``: seconds the closing handshake may go without progress (see
          :data:`DEFAULT_CLOSE_TIMEOUT`).
        - ``unix_socket``: connect to the Unix-domain socket at this path instead of the
          URL's host and port (which still give the ``Host`` header, the path and TLS's
          server name).

        ``None`` disables each limit. Raises ``ValueError`` for an invalid URL, and
        ``RuntimeError`` without a running event loop (use ``wschannel.sync`` there).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(_NO_LOOP_MESSAGE) from None
        target = _Target.parse(str(url), ssl)
        offered = list(protocols or ())
        deflate = deflate_options(compression)
        handshake = client_handshake(target, offered, headers, user_agent, deflate, max_header_size)
        channel = cls._unopened(max_queue=max_queue)
        channel._close_timeout = close_timeout
        protocol = _ClientProtocol(
            channel,
            handshake,
            offered=offered,
            max_message_size=max_message_size,
            deflate_level=deflate_level(deflate),
            ping_interval=ping_interval,
            close_timeout=close_timeout,
            write_limit=write_limit,
        )
        path = None if unix_socket is None else os.fspath(unix_socket)
        channel._connect_task = loop.create_task(
            _open_connection(channel, protocol, target, connect_timeout, path)
        )
        return channel

    @property
    def request(self) -> Request | None:
        """The HTTP upgrade request that opened a server-side channel (``None`` for a
        client): its ``path``, ``headers`` and ``header(name)``."""
        return self._request


async def _open_connection(
    channel: IOWebSocketChannel,
    protocol: _ClientProtocol,
    target: _Target,
    connect_timeout: float | None,
    unix_socket: str | None = None,
) -> None:
    """TCP (or a Unix socket), TLS and the opening handshake, within ``connect_timeout``."""
    loop = channel._loop
    timeout = asyncio.timeout(connect_timeout)
    server_hostname = target.host if target.ssl is not None else None
    try:
        async with timeout:
            if unix_socket is None:
                await loop.create_connection(
                    lambda: protocol,
                    target.host,
                    target.port,
                    ssl=target.ssl,
                    server_hostname=server_hostname,
                )
            else:
                await loop.create_unix_connection(
                    lambda: protocol, unix_socket, ssl=target.ssl, server_hostname=server_hostname
                )
            await protocol.opening
    except asyncio.CancelledError:
        protocol.abort()
        channel._fail(WebSocketChannelException("The connection attempt was cancelled."))
        raise
    except Exception as exc:
        if protocol.is_open:
            return  # the handshake finished just as the timeout expired
        protocol.abort()
        error: Exception
        if timeout.expired():
            error = TimeoutError(f"Connecting timed out after {connect_timeout} seconds.")
        elif isinstance(exc, WebSocketChannelException):
            error = exc
        else:
            error = WebSocketChannelException.from_inner(exc)
        channel._fail(error)


class _WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection over an asyncio transport, for either side."""

    logger: ClassVar[logging.Logger] = client_logger
    open_level: ClassVar[int] = logging.DEBUG  # for open and close records
    #: Whether reading pauses while the write buffer is over ``write_limit``. Servers: a
    #: peer that sends without reading cannot make the server hold what it answers (echoes,
    #: pongs). Clients keep reading, so that two peers that both write more than they read
    #: cannot wait for each other forever; a client's pongs are coalesced instead.
    pause_reading_while_writes_wait: ClassVar[bool] = False

    def __init__(
        self,
        channel: IOWebSocketChannel,
        *,
        max_message_size: int | None,
        deflate_level: int,
        ping_interval: float | None,
        close_timeout: float | None,
        write_limit: int | None,
    ) -> None:
        self.channel = channel
        sink = channel._sink
        assert isinstance(sink, _IOSink)
        self.sink = sink
        self.loop = channel._loop
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        # conn.receive_data once open
        self._receive_data: Callable[[Buffer], list[Event]] = _receive_nothing
        self._add_message = channel._stream._add
        self._max_message_size = max_message_size
        self._deflate_level = deflate_level
        self._ping_interval = ping_interval
        self._close_timeout = close_timeout
        self._write_limit = write_limit
        self._writing_paused = False
        self._write_high = 0  # the write buffer's size when writing paused or flush() waited
        self._stream_paused = False  # the stream's buffer is full (backpressure)
        self._owed_pong = b""  # the pong to the latest ping, while writing is paused
        self._close_progress = 0  # bytes unsent when the close timer was last armed
        self._lingering = False  # failed: writing shut down, reading drops until the EOF
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._compact_timer: asyncio.TimerHandle | None = None
        self._closing_transport = False
        # A peer's close (or a failure) whose reply waits for the stream's consumer to answer
        # the messages before it, and the timer that bounds that wait.
        self._deferred_close: Connection | None = None
        self._deferred_timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.id = next(_connection_ids)
        self._opened_at = 0.0

    @property
    def is_open(self) -> bool:
        """Whether the opening handshake finished."""
        return self.conn is not None

    @property
    def is_lost(self) -> bool:
        """Whether the transport is closed."""
        return self.lost.done()

    # Logging.

    def log(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        """Log to this side's logger, with ``peer``, ``connection_id`` and ``forwarded_for``."""
        logger = self.logger
        if logger.isEnabledFor(level):
            logger.log(level, message, *args, exc_info=exc_info, extra=self.log_extra())

    def log_extra(self) -> dict[str, object]:
        transport = self.transport
        peer = None if transport is None else transport.get_extra_info("peername")
        request = self.channel._request
        return {
            "peer": format_peer(peer),
            "connection_id": self.id,
            "forwarded_for": None if request is None else request.header("X-Forwarded-For"),
        }

    def _log_open(self, protocol: str | None) -> None:
        self._opened_at = self.loop.time()
        if self.logger.isEnabledFor(self.open_level):
            request = self.channel._request
            where = "" if request is None else f" {request.path}"
            details = [f"protocol {protocol}"] if protocol is not None else []
            if (
                self.conn is not None
                and not self.conn.accepts_shared_frames
                and not self.conn.client
            ):
                details.append("compressed")
            suffix = f" ({', '.join(details)})" if details else ""
            self.log(self.open_level, "Open%s%s", where, suffix)

    def _log_close(self) -> None:
        if self.logger.isEnabledFor(self.open_level):
            channel = self.channel
            self.log(
                self.open_level,
                "Closed with %s %r after %.3f s",
                channel._close_code,
                channel._close_reason or "",
                self.loop.time() - self._opened_at,
            )

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's does not subclass asyncio.Transport, so no isinstance.
        self.transport = transport = cast("asyncio.Transport", transport)
        limit = self._write_limit
        transport.set_write_buffer_limits(high=_NO_WRITE_LIMIT if limit is None else limit)

    def data_received(self, data: bytes) -> None:
        if self.conn is None:
            self.handshake_data(data)
            return
        self.events_received(self._receive_data(data))

    def events_received(self, events: list[Event]) -> None:
        """What the engine made of the bytes read: messages for the stream, the rest here."""
        add_message = self._add_message
        for event in events:
            cls = type(event)
            if cls is str or cls is bytes:
                add_message(event)  # type: ignore[arg-type]
            else:
                self._control(event)

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn.receive_eof()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._writing_paused = False  # flush() no longer waits: nothing more can be written
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if self.conn is None:
            self.handshake_lost(exc)
        else:
            channel = self.channel
            if channel._close_code is None:
                channel._close_code = ABNORMAL_CLOSURE
                channel._close_reason = ""
            self._disconnect()
            self.sink._finish()
            self._log_close()
            # Free the compression state and buffers now: the protocol, channel, transport
            # and engine refer to each other, so without this they would wait for the
            # cyclic garbage collector (300-550 KiB per compressed connection).
            self.conn.release()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._sample_write_buffer()
        if self.pause_reading_while_writes_wait:
            self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._send_owed_pong()
        if self.pause_reading_while_writes_wait:
            self._update_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # The opening handshake, by side.

    def handshake_data(self, data: bytes) -> None:
        raise NotImplementedError

    def handshake_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    # The open connection.

    def open(self, conn: Connection, protocol: str | None) -> None:
        """The opening handshake succeeded: hand over to the engine's connection."""
        transport = self.transport
        assert transport is not None
        limit = self._write_limit
        direct = take_over(
            self.loop, transport, self, conn, _NO_WRITE_LIMIT if limit is None else limit
        )
        if direct is not None:
            self.transport = transport = cast("asyncio.Transport", direct)
        self.conn = conn
        self._receive_data = conn.receive_data
        channel = self.channel
        channel._transport_protocol = self
        channel._protocol = protocol
        channel._stream._set_flow_control(self._pause_for_stream, self._resume_for_stream)
        self.sink._open(self, conn)
        if not channel._ready.done():
            channel._ready.set_result(None)
        if self._ping_interval is not None and self.sink._live is not None:
            self._ping_timer = self.loop.call_later(self._ping_interval, self._send_ping)
        if conn.compressed:
            self._compact_timer = self.loop.call_later(COMPACT_INTERVAL, self._compact)
        self._log_open(protocol)

    def new_connection(self, client: bool, deflate: str | None) -> Connection:
        return Connection(
            client,
            max_message_size=self._max_message_size,
            deflate=deflate,
            deflate_level=self._deflate_level,
        )

    def write(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(data)

    def write_high_water(self) -> int:
        """The largest write buffer this connection has had, in bytes (for metrics): exact
        on a direct socket, whose queue keeps its own mark as it grows; on an asyncio
        transport (TLS), the largest size seen when writing paused or ``flush()`` waited."""
        transport = self.transport
        if isinstance(transport, DirectTransport):
            return transport.high_water
        return self._write_high

    def _sample_write_buffer(self) -> None:
        transport = self.transport
        if transport is not None:
            self._write_high = max(self._write_high, transport.get_write_buffer_size())

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its limit, or the connection is
        lost (``connection_lost`` wakes every waiter)."""
        if self._writing_paused and not self.is_lost:
            self._sample_write_buffer()
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def close(self, code: int | None, reason: str | None) -> None:
        """Send a close frame (RFC 6455 §5.5.1) and wait for the peer's, up to the timeout."""
        conn = self.conn
        assert conn is not None
        self._send_owed_pong()  # before the close frame, after which nothing may follow
        self.write(conn.send_close(code, reason or ""))
        self._cancel_ping()
        self._arm_close_timer()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _control(self, event: object) -> None:
        conn = self.conn
        assert conn is not None
        if isinstance(event, Ping):
            if self._writing_paused:
                # RFC 6455 §5.5.3: only the latest ping needs an answer. A peer that pings
                # without reading cannot grow the write buffer by a pong per ping.
                self._owed_pong = conn.data_to_send()
            else:
                self._write_replies(conn)
        elif isinstance(event, Pong):
            if self._ping_timer is not None and self._ping_interval is not None:
                self._ping_timer.cancel()
                self._ping_timer = self.loop.call_later(self._ping_interval, self._send_ping)
        elif isinstance(event, Close | Failure):
            channel = self.channel
            channel._close_code = event.code
            channel._close_reason = event.reason
            stream = channel._stream
            if stream._buffer and stream._subscribed and self.sink._live is not None:
                self._defer_close(conn)
            else:
                self._finish_close(conn)

    def _finish_close(self, conn: Connection) -> None:
        """Send the reply to the peer's close (or the failure's close frame) and close."""
        self._send_owed_pong()  # before the close frame, after which nothing may follow
        self._write_replies(conn)
        if conn.close_expected():
            self._disconnect()
            self._linger_or_close(conn)
        elif self._close_timeout is None:
            self._disconnect()  # a client that may wait forever for the server's EOF
        else:
            # A client waits for the server to close TCP, up to close_timeout. Its stream
            # ends then (in connection_lost), not now: a program that leaves its event loop
            # once the stream has ended must not leave the socket open behind it. Reading
            # goes on even if the buffer is full (nothing follows a close frame), for the EOF.
            self._cancel_ping()
            self.sink._disconnect()
            self.channel._stream._resume_reading()
            self._arm_close_timer()

    # A close that arrives behind messages the consumer has not taken yet: its reply waits
    # until the consumer has answered them (the engine lets answers go out until the reply
    # is taken). The consumer has answered when it asks for the next message with the buffer
    # empty (async for), one loop turn after the last one was delivered (listen), when it
    # stops consuming or closes the sink, or after close_timeout. Reading stops meanwhile.

    def _defer_close(self, conn: Connection) -> None:
        self._deferred_close = conn
        self._cancel_ping()
        self._update_reading()
        stream = self.channel._stream
        stream._set_flow_control(_pass, self._consumer_drained)
        stream._low_water = 0
        stream._reading_paused = True  # so that emptying the buffer calls _consumer_drained
        timeout = self._close_timeout
        self._deferred_timer = self.loop.call_later(
            DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout, self._finish_deferred_close
        )

    def _consumer_drained(self) -> None:
        """The stream's buffer is empty, or the stream ended (cancelled, or the sink closed)."""
        stream = self.channel._stream
        if stream._ended:
            self._finish_deferred_close()
            return
        stream._reading_paused = True  # called again if the consumer stops or closes
        if stream._on_data is not None:
            self.loop.call_soon(self._finish_deferred_close)
        else:
            stream._on_idle = self._finish_deferred_close

    def _finish_deferred_close(self) -> None:
        conn = self._deferred_close
        if conn is None:
            return
        self._deferred_close = None
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        stream = self.channel._stream
        stream._on_idle = None
        stream._reading_paused = self._stream_paused = False
        stream._set_flow_control(self._pause_for_stream, self._resume_for_stream)
        self._update_reading()  # a client still reads the server's EOF
        self._finish_close(conn)

    def _send_owed_pong(self) -> None:
        pong, self._owed_pong = self._owed_pong, b""
        if pong:
            self.write(pong)

    def _write_replies(self, conn: Connection) -> None:
        data = conn.data_to_send()
        if data:
            self.write(data)

    def _disconnect(self) -> None:
        """No more messages either way (RFC 6455 §7.1.4 once the close frames crossed)."""
        self._cancel_ping()
        channel = self.channel
        channel._stream._end()
        self.sink._disconnect()

    def _linger_or_close(self, conn: Connection) -> None:
        """Close TCP; but after failing a peer that may still be sending, first shut writing
        down and read (the engine drops it) until the peer's EOF, for close_timeout at most:
        closing with unread data would reset the connection, and the reset can destroy the
        close frame on its way (the peer would see 1006, not why it failed; RFC 6455
        §7.1.1, as websockets does)."""
        transport = self.transport
        if (
            conn.close_received
            or transport is None
            or transport.is_closing()
            or not transport.can_write_eof()
        ):
            self._close_transport()
            return
        self._lingering = True
        transport.write_eof()
        self._update_reading()
        self._arm_close_timer()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not self._closing_transport:
            self._closing_transport = True
            transport.close()
            self._arm_close_timer()

    # Reading: paused while the stream's buffer is full, while a deferred close waits for the
    # consumer, and (servers) while the write buffer is over its limit. Once the peer's
    # close frame is in, the engine takes nothing more: reading only looks for the EOF.

    def _pause_for_stream(self) -> None:
        self._stream_paused = True
        self._update_reading()

    def _resume_for_stream(self) -> None:
        self._stream_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        conn = self.conn
        closing = self._lingering or (conn is not None and conn.close_received)
        paused = self._deferred_close is not None or (
            not closing
            and (
                self._stream_paused
                or (self._writing_paused and self.pause_reading_while_writes_wait)
            )
        )
        if paused:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()

    # The close timer. While what was written before the close frame is still leaving (the
    # peer reads it, however slowly), close_timeout counts time without progress; once all
    # of it has left, the peer has close_timeout to answer. Then the connection is aborted.

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self._close_timeout is not None:
            self._close_progress = self._unsent()
            self._close_timer = self.loop.call_later(self._close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        unsent, before = self._unsent(), self._close_progress
        if unsent < before:  # the peer took some since the last check: give it more time
            self._arm_close_timer()
        else:
            self.abort()

    def _unsent(self) -> int:
        """Bytes written but not yet taken by the peer: the transport's buffer and what
        the kernel still holds (Linux: unsent or unacknowledged)."""
        transport = self.transport
        if transport is None:
            return 0
        sock = transport.get_extra_info("socket")
        return transport.get_write_buffer_size() + kernel_unsent(sock)

    def _send_ping(self) -> None:
        """Keepalive: ping, then wait one interval for the pong (Dart's algorithm)."""
        self._ping_timer = None
        conn = self.sink._live
        if conn is None or self._ping_interval is None:
            return
        self.write(conn.send_ping(b""))
        self._ping_timer = self.loop.call_later(self._ping_interval, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self._ping_timer = None
        if self.sink._live is None:
            return
        channel = self.channel
        channel._close_code = GOING_AWAY
        channel._close_reason = ""
        self.close(GOING_AWAY, None)
        self._disconnect()

    def _compact(self) -> None:
        """Free the compression state if the connection was idle since the last check."""
        self._compact_timer = None
        conn = self.conn
        if conn is None or self.is_lost:
            return
        conn.compact_if_idle()
        self._compact_timer = self.loop.call_later(COMPACT_INTERVAL, self._compact)

    def _cancel_ping(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_ping()
        if self._compact_timer is not None:
            self._compact_timer.cancel()
            self._compact_timer = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        self._deferred_close = None
        self.channel._stream._on_idle = None


def _pass() -> None:
    pass


def _receive_nothing(data: Buffer) -> list[Event]:
    raise AssertionError("wschannel: data received before the opening handshake finished")


class _ClientProtocol(_WebSocketProtocol):
    """The client side: the opening handshake (RFC 6455 §4.1), then the connection."""

    def __init__(
        self,
        channel: IOWebSocketChannel,
        handshake: ClientHandshake,
        *,
        offered: list[str],
        max_message_size: int | None,
        deflate_level: int,
        ping_interval: float | None,
        close_timeout: float | None,
        write_limit: int | None,
    ) -> None:
        super().__init__(
            channel,
            max_message_size=max_message_size,
            deflate_level=deflate_level,
            ping_interval=ping_interval,
            close_timeout=close_timeout,
            write_limit=write_limit,
        )
        self._handshake = handshake
        self._offered = offered
        self.opening: asyncio.Future[None] = self.loop.create_future()
        self.opening.add_done_callback(_retrieve_exception)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.write(self._handshake.request())

    def handshake_data(self, data: bytes) -> None:
        handshake = self._handshake
        try:
            complete = handshake.receive_data(data)
        except HandshakeError as exc:
            self._handshake_failed(WebSocketChannelException.from_inner(exc))
            return
        if not complete:
            return
        protocol = handshake.protocol
        if protocol is not None and protocol not in self._offered:
            self._handshake_failed(
                WebSocketChannelException(
                    f"The server chose the subprotocol {protocol!r}, which was not offered."
                )
            )
            return
        self.open(self.new_connection(True, handshake.extensions), protocol)
        if not self.opening.done():
            self.opening.set_result(None)
        leftover = handshake.leftover()
        if leftover:
            self.data_received(leftover)

    def handshake_lost(self, exc: Exception | None) -> None:
        if not self.opening.done():
            if exc is None:
                exc = ConnectionResetError("The server closed the connection during the handshake.")
            self.opening.set_exception(WebSocketChannelException.from_inner(exc))

    def _handshake_failed(self, error: WebSocketChannelException) -> None:
        if not self.opening.done():
            self.opening.set_exception(error)
        self.abort()
