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
import functools
import itertools
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import EllipsisType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, cast

from ._adapter import AdapterWebSocketChannel
from ._channel_driver import ChannelDriver
from ._direct import DirectTransport, connect_tls, supports_tls, take_over
from ._fragments import (
    ABORTED,
    END_OF_CHUNKS,
    Delivery,
    check_chunk,
    check_pieces_limit,
    chunk_source,
    closed_midway,
    in_pieces,
    next_chunk,
    pieces,
    pieces_limit,
)
from ._message import binary_view
from ._net import (
    USER_AGENT,
    ClientHop,
    ClientPlan,
    Headers,
    deflate_level,
    deflate_options,
    format_peer,
    handshake_error,
    kernel_unsent,
)
from ._ping import check_keepalive, check_payload
from ._proxy import ProxySetting, Tunnel
from ._reconnect import Delays, RetryRule, backoff, redialable, retryable
from ._sink import GuaranteeSink, report_unsent
from ._tasks import Gate, _retrieve_exception
from ._timers import TimerHandle, call_later_in_loop
from ._tls import client_config
from ._wschannel import (
    ClientHandshake,
    Close,
    Connection,
    DeflateOptions,
    Failure,
    Fragment,
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
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_PING_INTERVAL,
    DEFAULT_WRITE_LIMIT,
)
from .exceptions import (
    ProxyError,
    StateError,
    WebSocketChannelException,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from typing_extensions import Buffer

    from ._net import _Target
    from ._websocket import WebSocket
    from ._wschannel import TlsClientConfig

    Event = str | bytes | Fragment | Ping | Pong | Close | Failure

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_WRITE_LIMIT",
    "USER_AGENT",
    "DeflateOptions",
    "Fragment",
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


_CLOSED_PING: Final = (
    "Cannot ping: this side's close frame has gone (the connection is closing or closed)."
)


class _IOSink(GuaranteeSink):
    """The sink of an :class:`IOWebSocketChannel` over an asyncio transport."""

    __slots__ = (
        "_channel",
        "_close_args",
        "_conn",
        "_fragments_lock",
        "_live",
        "_pending",
        "_send_binary",
        "_send_text",
        "_write",
    )

    def __init__(self, channel: IOWebSocketChannel) -> None:
        super().__init__(channel._loop, channel.stream)
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
        self._fragments_lock: asyncio.Lock | None = None  # send_fragments(): one at a time

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
            elif self._fragmenting:
                self._held.append(data)
            else:
                self._send_text(data)
            return
        buffer = binary_view(data)
        if self._disconnected:
            return
        if self._live is None:
            self._pending.append(bytes(buffer))  # the caller may change it meanwhile
        elif self._fragmenting:
            self._held.append(bytes(buffer))  # likewise
        else:
            self._send_binary(buffer)

    def _start_close(self, code: int | None, reason: str | None) -> None:
        protocol = self._channel._transport_protocol
        if self._live is not None and protocol is not None:
            self._conn = self._live = None
            self._write = self._send_text = self._send_binary = _write_nowhere
            protocol.start_close(code, reason)
        else:
            self._close_args = (code, reason)  # sent once the connection opens
            self._channel._close_while_connecting()

    def _adding_stream_changed(self) -> None:
        self._conn = None if self._adding_stream or self._fragmenting else self._live

    # send_fragments() (IOWebSocketChannel's).

    async def _send_fragments(
        self, chunks: Iterable[str | Buffer] | AsyncIterable[str | Buffer]
    ) -> None:
        source, items = chunk_source(chunks)
        self._check_fragments()
        await self._channel.ready
        lock = self._fragments_lock
        if lock is None:
            lock = self._fragments_lock = asyncio.Lock()
        async with lock:
            await self._fragmented(self._send_chunks(source, items))

    async def _send_chunks(
        self, source: AsyncIterator[str | Buffer] | None, items: Iterator[str | Buffer] | None
    ) -> None:
        """Each chunk as a fragment, then an empty final one; waits between chunks while the
        write buffer is over its limit. A failure after the first fragment closes with 1011:
        the message cannot be finished, and the peer must not take a part for the whole."""
        text: bool | None = None  # the message's kind, from its first chunk
        try:
            while (chunk := await next_chunk(source, items)) is not END_OF_CHUNKS:
                data, is_text = check_chunk(chunk, text)
                protocol = self._open_protocol()
                assert protocol.conn is not None
                protocol.write(protocol.conn.send_fragment(data, first=text is None, fin=False))
                text = is_text
                if protocol._writing_paused:
                    await protocol.drain()
            if text is None:
                return  # no chunk: no message
            protocol = self._open_protocol()
            assert protocol.conn is not None
            end = "" if text else b""
            protocol.write(protocol.conn.send_fragment(end, first=False, fin=True))
        except BaseException:
            if text is not None and not self._disconnected:
                self._close_midway(ABORTED)
            raise
        finally:
            if source is not None and text is not None:
                await _close_source(source)

    def _open_protocol(self) -> _WebSocketProtocol:
        """The protocol to send on, or raise: the connection closed meanwhile."""
        protocol = self._channel._transport_protocol
        if self._disconnected or self._live is None or protocol is None:
            raise closed_midway()
        return protocol

    def _write_buffer_full(self) -> bool:
        protocol = self._channel._transport_protocol
        if self._live is None or protocol is None:
            return not self._disconnected  # not open yet: flush() waits for it
        return protocol._writing_paused

    async def flush(self) -> None:
        channel = self._channel
        if not channel.ready.done():
            await asyncio.wait([channel.ready])
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
            self._channel.stream._before_wait = transport.uncork
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
            protocol.start_close(*self._close_args)
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
        report_unsent(len(self._pending), self._channel.ready)
        self._pending = []


async def _close_source(source: AsyncIterator[Any]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()


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

    __slots__ = (
        "_close_timeout",
        "_connect_task",
        "_pieces",
        "_request",
        "_transport_protocol",
    )

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
        # fragments(): messages arrive in pieces, each message at most this (... : the
        # connection's max_message_size); None: whole messages.
        self._pieces: tuple[int | EllipsisType | None] | None = None

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
    @redialable
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
        - ``ping_interval``: seconds between keepalive pings (a ping after each interval
          without a pong; 20 s, :data:`~wschannel.defaults.DEFAULT_PING_INTERVAL`);
          ``None`` sends none.
        - ``pong_timeout``: seconds a keepalive ping waits for its pong before the
          connection is closed with 1001; ``None`` (default): as long as ``ping_interval``.
        - ``connect_timeout``: seconds for TCP, TLS and the opening handshake together.
        - ``close_timeout``: seconds the closing handshake may go without progress (see
          :data:`DEFAULT_CLOSE_TIMEOUT`).
        - ``unix_socket``: connect to the Unix-domain socket at this path instead of the
          URL's host and port (which still give the ``Host`` header, the path and TLS's
          server name).
        - ``proxy``: the proxy to go through, as a URL: ``http://``, ``https://`` (TLS to
          the proxy), ``socks5://`` or ``socks5h://``, with ``user:password@`` for its
          credentials; ``True`` (default) takes the environment's (``wss_proxy``,
          ``https_proxy``, ``all_proxy``..., not for hosts in ``no_proxy``; see
          :mod:`wschannel._proxy` and docs/client.md), ``None`` connects directly.
        - ``proxy_ssl``: the TLS context for an ``https://`` proxy (default: verify it with
          the default CA store).
        - ``max_redirects``: how many redirects (301, 302, 303, 307, 308) the opening
          handshake follows; ``0`` follows none.
        - ``reconnect_delays``: when the channel is iterated (``async for channel in
          IOWebSocketChannel.connect(url)``, which reconnects), a function returning the
          delays in seconds before each new attempt; :func:`wschannel.backoff` by default.
        - ``should_retry``: when iterating, called with the exception of an attempt that
          failed: ``True`` to try again after the next delay, ``False`` to raise it;
          :func:`wschannel.retryable` by default (network errors, timeouts, 5xx and 429).
        - ``delivery``: ``"messages"`` (default), or ``"pieces"``: messages are received in
          pieces from the first frame (read them with :meth:`fragments`), each at most
          ``max_message_size`` in total (``None``: any size, since none is assembled).

        ``None`` disables each limit. Raises ``ValueError`` for an invalid URL or proxy, and
        ``RuntimeError`` without a running event loop (use ``wschannel.sync`` there). A
        connection that fails names the URL: :class:`~wschannel.exceptions.ProxyError` when
        the proxy refused or could not be reached.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(_NO_LOOP_MESSAGE) from None
        check_keepalive(ping_interval, pong_timeout)
        pieces_first = in_pieces(delivery)
        offered = list(protocols or ())
        deflate = deflate_options(compression)
        path = None if unix_socket is None else os.fspath(unix_socket)
        plan = ClientPlan(
            str(url),
            ssl=ssl,
            protocols=offered,
            headers=headers,
            user_agent=user_agent,
            deflate=deflate,
            max_header_size=max_header_size,
            proxy=proxy,
            proxy_ssl=proxy_ssl,
            max_redirects=max_redirects,
            unix_socket=path is not None,
        )
        channel = cls._unopened(max_queue=max_queue)
        channel._close_timeout = close_timeout
        if pieces_first:
            channel._pieces = (...,)  # the engine delivers pieces from the first frame

        def new_protocol(handshake: ClientHandshake) -> _ClientProtocol:
            return _ClientProtocol(
                channel,
                handshake,
                offered=offered,
                max_message_size=max_message_size,
                deflate_level=deflate_level(deflate),
                ping_interval=ping_interval,
                pong_timeout=pong_timeout,
                close_timeout=close_timeout,
                write_limit=write_limit,
            )

        channel._connect_task = loop.create_task(
            _open_connection(channel, plan, new_protocol, connect_timeout, path)
        )
        return channel

    @property
    def request(self) -> Request | None:
        """The HTTP upgrade request that opened a server-side channel (``None`` for a
        client): its ``path``, ``headers`` and ``header(name)``."""
        return self._request

    async def ping(self, payload: str | Buffer | None = None) -> float:
        """Send a ping (RFC 6455 §5.5.2) and wait for its pong: the round-trip time in
        seconds (also :attr:`latency` from then on).

        ``payload``: what the ping carries and its pong echoes, at most 125 bytes (``str``
        goes as UTF-8); ``None`` (default): 4 random bytes. ``ValueError`` at the call for a
        longer one, ``RuntimeError`` while a ping with the same payload waits for its pong.

        Waits for the connection to open first (raising its error if it could not). Raises
        :class:`~wschannel.StateError` once this side's close frame has gone (closed by
        either side), and if the connection ends before the pong comes. Pings sent at once
        all get their answer; a pong answers its ping and those before it (RFC 6455 §5.5.3).
        Bound the wait with ``asyncio.timeout`` if the peer may not answer.
        """
        data = check_payload(payload)
        await self.ready
        protocol = self._transport_protocol
        conn = None if protocol is None else protocol.conn
        if protocol is None or conn is None or not conn.sending:
            raise StateError(_CLOSED_PING)
        waiter: asyncio.Future[float | None] = self._loop.create_future()
        protocol.send_ping(functools.partial(_resolve, waiter), data)
        rtt = await waiter
        if rtt is None:
            raise StateError(
                f"The connection closed (code {self._close_code}) before the ping's pong came."
            )
        return rtt

    async def send_fragments(
        self, chunks: Iterable[str | Buffer] | AsyncIterable[str | Buffer]
    ) -> None:
        """Send the chunks of ``chunks`` (an iterable or async iterable) as the fragments of
        one message (RFC 6455 §5.4): all ``str`` for a text message, all bytes-like for a
        binary one; the peer receives one message (or its pieces, see :meth:`fragments`).

        Memory stays bounded: each chunk is sent as it comes, and while the write buffer is
        over ``write_limit`` the next chunk waits for it to drain. With compression each
        fragment is compressed as it goes. The message ends with an empty final fragment
        once ``chunks`` is exhausted; no chunk, no message.

        Meanwhile, messages added to the sink wait and follow the fragmented message, and
        another ``send_fragments`` waits its turn; a broadcast skips this connection (as
        during ``add_stream``); pings and pongs go out between fragments. Waits for the
        connection to open first (raising its error if it could not).

        Raises ``TypeError`` for chunks of mixed kinds (a ``str`` in a binary message...) or
        of another type, :class:`~wschannel.StateError` after ``sink.close()`` or while
        ``add_stream`` runs, and :class:`~wschannel.exceptions.WebSocketConnectionClosed` if
        the connection closes before the message is sent. If a chunk is refused or
        ``chunks`` raises (or the call is cancelled) after the first fragment went out, the
        connection is closed with 1011: the peer must not take part of the message for all
        of it.
        """
        sink = self._sink
        if not isinstance(sink, _IOSink):
            raise TypeError(
                f"send_fragments() needs a channel from connect() or serve(), not a "
                f"{type(self).__name__} over a {type(sink).__name__}."
            )
        await sink._send_fragments(chunks)

    def fragments(
        self, *, max_message_size: int | EllipsisType | None = ...
    ) -> AsyncIterator[Fragment]:
        """Receive messages in pieces, as they arrive, without assembling them:
        ``async for piece in channel.fragments():`` gives :class:`Fragment` objects whose
        ``data`` is ``str`` (text, cut only between characters) or ``bytes`` (binary) and
        whose ``last`` is true on a message's last piece (which may be empty).

        A piece is what arrived of a message in one network read, at most 1 MiB (inflated
        incrementally when compressed). Reading is flow-controlled as for messages: at most
        ``max_queue`` pieces wait before reading pauses. ``max_message_size`` bounds each
        message in total (1009 when exceeded), by default the channel's; ``None`` takes
        any size, since no message is held whole (but see docs/client.md on compression).

        This subscribes to :attr:`stream` (so it cannot be iterated as well: ``StateError``)
        and applies at once, to a message being received too (what was assembled of it
        comes first); messages received whole before the call come as one piece each. Call
        it before the peer sends more than ``max_message_size`` in one frame (first thing in
        a server handler, or right after ``connect``): until then that fails with 1009.
        """
        sink = self._sink
        if not isinstance(sink, _IOSink):
            raise TypeError(
                f"fragments() needs a channel from connect() or serve(), not a "
                f"{type(self).__name__} over a {type(sink).__name__}."
            )
        check_pieces_limit(max_message_size)
        messages = aiter(self.stream)  # StateError if it was subscribed to already
        self._pieces = (max_message_size,)
        protocol = self._transport_protocol
        if protocol is not None:
            protocol.apply_pieces()
        return pieces(messages)

    @property
    def latency(self) -> float | None:
        """The round-trip time last measured, in seconds: of a keepalive ping (see
        ``ping_interval``) or of :meth:`ping`; ``None`` before any was answered."""
        protocol = self._transport_protocol
        return None if protocol is None else protocol.latency


def _resolve(waiter: asyncio.Future[float | None], rtt: float | None) -> None:
    if not waiter.done():
        waiter.set_result(rtt)


async def _open_connection(
    channel: IOWebSocketChannel,
    plan: ClientPlan,
    new_protocol: Callable[[ClientHandshake], _ClientProtocol],
    connect_timeout: float | None,
    unix_socket: str | None = None,
) -> None:
    """TCP (or a Unix socket), through the proxy if any, TLS and the opening handshake,
    again for each redirect, all within ``connect_timeout``."""
    loop = channel._loop
    timeout = asyncio.timeout(connect_timeout)
    hop = plan.first
    protocol = new_protocol(hop.handshake)
    try:
        async with timeout:
            while True:
                await _open_transport(loop, protocol, hop, plan, unix_socket)
                try:
                    await protocol.opening
                    return
                except WebSocketChannelException:
                    next_hop = plan.after(hop)
                    if next_hop is None:
                        raise
                protocol.abort()
                hop = next_hop
                protocol = new_protocol(hop.handshake)
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
            error = plan.timeout_error(connect_timeout)
        elif isinstance(exc, WebSocketChannelException):
            error = plan.name_url(exc)
        else:
            error = plan.name_url(WebSocketChannelException.from_inner(exc))
        channel._fail(error)


async def _open_transport(
    loop: asyncio.AbstractEventLoop,
    protocol: _ClientProtocol,
    hop: ClientHop,
    plan: ClientPlan,
    unix_socket: str | None,
) -> None:
    """Connect ``protocol`` to ``hop``'s target: directly, or through its proxy."""
    target = hop.target
    server_hostname = target.host if target.ssl is not None else None
    if hop.proxy is None and target.ssl is not None and supports_tls(loop):
        config = client_config(target.ssl)
        if config is not None and await _open_tls(loop, protocol, target, config, unix_socket):
            return
    if hop.proxy is None:
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
        return
    transport = await _open_tunnel(loop, hop, plan)
    try:
        transport.set_protocol(protocol)
        if target.ssl is not None:
            # TLS inside the tunnel, which may itself be TLS to an https:// proxy.
            tls = await loop.start_tls(
                transport, protocol, target.ssl, server_hostname=server_hostname
            )
            assert tls is not None
            transport = tls
        protocol.connection_made(transport)
        transport.resume_reading()
    except BaseException:
        transport.abort()
        raise


async def _open_tls(
    loop: asyncio.AbstractEventLoop,
    protocol: _ClientProtocol,
    target: _Target,
    config: TlsClientConfig,
    unix_socket: str | None,
) -> bool:
    """TCP (or a Unix socket), then TLS in the engine: ``protocol`` on a DirectTransport
    from the start. False (nothing connected) when the server asks for a client
    certificate: the connection is then made with Python's ``ssl``, which presents the
    context's, if it has one."""
    if unix_socket is None:
        plain, _ = await loop.create_connection(asyncio.Protocol, target.host, target.port)
    else:
        plain, _ = await loop.create_unix_connection(asyncio.Protocol, unix_socket)
    try:
        direct = await connect_tls(loop, plain, config, target.host)
    except BaseException:
        plain.abort()
        raise
    if direct is None:
        return False
    direct.start(protocol)
    return True


async def _open_tunnel(
    loop: asyncio.AbstractEventLoop, hop: ClientHop, plan: ClientPlan
) -> asyncio.Transport:
    """A transport to ``hop``'s proxy whose tunnel to the target is open, reading paused;
    :class:`~wschannel.exceptions.ProxyError` if the proxy cannot be reached or refuses."""
    proxy = hop.proxy
    assert proxy is not None
    target = hop.target
    address = None
    if not proxy.resolves_names:
        try:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise WebSocketChannelException.from_inner(
                OSError(f"could not resolve {target.host!r} for the socks5:// proxy: {exc}")
            ) from exc
        address = str(infos[0][4][0])
    tunnel = _TunnelProtocol(loop, hop.tunnel(address, plan.user_agent, plan.tunnel_limit()))
    ssl = plan.proxy_ssl if proxy.tls else None
    try:
        transport, _ = await loop.create_connection(
            lambda: tunnel,
            proxy.host,
            proxy.port,
            ssl=ssl,
            server_hostname=proxy.host if ssl is not None else None,
        )
    except OSError as exc:
        raise ProxyError(f"could not reach proxy {proxy}: {exc}", proxy=str(proxy)) from exc
    try:
        await tunnel.opened
    except BaseException:
        transport.abort()
        raise
    return transport


class _TunnelProtocol(asyncio.Protocol):
    """Opens a tunnel through a proxy (:class:`~wschannel._proxy.Tunnel`); reading pauses
    once it is open, until the WebSocket's protocol takes the transport over."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tunnel: Tunnel) -> None:
        self._tunnel = tunnel
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.opened.add_done_callback(_retrieve_exception)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast("asyncio.Transport", transport)
        transport.write(self._tunnel.data_to_send())

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        try:
            done = self._tunnel.receive_data(data)
        except ProxyError as exc:
            self._fail(exc)
            return
        outgoing = self._tunnel.data_to_send()
        if outgoing:
            transport.write(outgoing)
        if done:
            transport.pause_reading()
            if not self.opened.done():
                self.opened.set_result(None)

    def eof_received(self) -> bool | None:
        try:
            self._tunnel.receive_eof()
        except ProxyError as exc:
            self._fail(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            try:
                self._tunnel.receive_eof()
            except ProxyError as error:
                if exc is not None:
                    error.inner = error.__cause__ = exc
                self._fail(error)

    def _fail(self, error: ProxyError) -> None:
        if not self.opened.done():
            self.opened.set_exception(error)
        if self._transport is not None:
            self._transport.abort()


class _WebSocketProtocol(ChannelDriver, asyncio.Protocol):
    """One WebSocket connection over an asyncio transport, for either side."""

    sink: _IOSink
    loop: asyncio.AbstractEventLoop

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
        pong_timeout: float | None = None,
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
        self.stream = channel.stream
        self._max_message_size = max_message_size
        self._deflate_level = deflate_level
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._close_timeout = close_timeout
        self._write_limit = write_limit
        self._writing_paused = False
        self._write_high = 0  # the write buffer's size when writing paused or flush() waited
        self._drained = Gate(self.loop.create_future)  # shut while writing is paused
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

    # What the engine made of the bytes read (``DirectTransport`` reads the socket and calls
    # this): without a wrapper, as this is once per read.
    events_received = ChannelDriver.deliver

    # eof_received: SessionDriver's, which lets the transport close itself.

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is None:
            self.handshake_lost(exc)
        self.transport_lost()
        self.resume_writing()  # flush() no longer waits: nothing more can be written
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._drained.shut()
        self._sample_write_buffer()
        self.writes_waiting(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.writes_waiting(False)
        self._drained.open()

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
        conn.start_session(
            ping_interval=self._ping_interval,
            pong_timeout=self._pong_timeout,
            close_timeout=self._close_timeout,
            consumer_wait=DEFAULT_CLOSE_TIMEOUT,
            pause_reading_while_writes_wait=self.pause_reading_while_writes_wait,
            half_close=transport.can_write_eof(),
            compact_interval=COMPACT_INTERVAL if conn.compressed else None,
        )
        self.conn = conn
        self._receive_data = conn.receive_data
        self.apply_pieces()
        channel = self.channel
        channel._transport_protocol = self
        channel._protocol = protocol
        self.stream._set_flow_control(self.consumer_full, self.consumer_has_room)
        self.sink._open(self, conn)
        if not channel.ready.done():
            channel.ready.set_result(None)
        self._arm_session_timer()
        self._log_open(protocol)

    def apply_pieces(self) -> None:
        """The channel asked for messages in pieces (``fragments()``): tell the engine."""
        asked = self.channel._pieces
        conn = self.conn
        if asked is None or conn is None:
            return
        conn.set_delivery(True, max_message_size=pieces_limit(conn.max_message_size, asked[0]))

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
            await self._drained.wait()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # The session's hooks (wschannel._driver): what it decided, done with this transport.

    def pause_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.is_reading():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    # The session asks for each at most once; a transport's close() may come after its
    # write_eof() and does nothing when it is already closing.

    def half_close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write_eof()

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def finish(self) -> None:
        super().finish()
        self._log_close()

    def unsent(self) -> int:
        """Bytes written but not yet taken by the peer: the transport's buffer and what
        the kernel still holds (Linux: unsent or unacknowledged)."""
        transport = self.transport
        if transport is None:
            return 0
        sock = transport.get_extra_info("socket")
        return transport.get_write_buffer_size() + kernel_unsent(sock)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        # Kept out of asyncio's own heap: see wschannel._timers.
        return call_later_in_loop(self.loop, delay, callback)


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
        pong_timeout: float | None,
        close_timeout: float | None,
        write_limit: int | None,
    ) -> None:
        super().__init__(
            channel,
            max_message_size=max_message_size,
            deflate_level=deflate_level,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
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
            self._handshake_failed(handshake_error(exc, handshake))
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
