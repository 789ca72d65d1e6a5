"""``over``: WebSocket over any byte stream whose HTTP upgrade is already done.

Dart 2.x's ``WebSocketChannel(StreamChannel<List<int>> channel, {protocol, pingInterval,
serverSide = true})``: the caller has done the opening handshake (RFC 6455 §4) on some
transport and hands over the raw byte stream; :func:`over` runs the WebSocket protocol on it
with the Rust engine, so the result is an ordinary :class:`~wschannel.WebSocketChannel`
(``stream``, ``sink``, ``close_code``...) whose ``ready`` has already resolved.

The byte stream is one of:

- asyncio's :class:`asyncio.StreamReader` and :class:`asyncio.StreamWriter`;
- an anyio :class:`~anyio.abc.ByteReceiveStream` and :class:`~anyio.abc.ByteSendStream`
  (one :class:`~anyio.abc.ByteStream` passed as both), on asyncio or on trio;
- a trio :class:`~trio.abc.ReceiveStream` and :class:`~trio.abc.SendStream`.

How it runs. A reader task reads the stream and feeds each read to the engine with one
``receive_data`` call. Every frame to send is written straight away (asyncio) or queued for a
writer task (anyio and trio, whose ``send`` is a coroutine). The connection's lifecycle is
the engine's session (``Connection.start_session``; ``session/``): the replies to pings and
close frames, the consumer's answers before the close echo, keepalive, the close deadline,
the close code, when reading pauses and when the byte stream is half-closed, closed or
dropped. :class:`_Driver` does what the session's actions say with the byte stream, and keeps
one timer at the session's next deadline, as :mod:`wschannel.io` does with an asyncio
transport. Half-closing needs a stream that can send EOF alone (asyncio's ``write_eof``,
anyio's ``send_eof``, trio's :class:`~trio.abc.HalfCloseableStream`); on others the session
closes the stream instead.

The event loop is whichever is running: asyncio's, or trio's through :class:`_TrioLoop`, a
small facade with the part of asyncio's loop interface this module,
:class:`~wschannel.channel.MessageStream` and :class:`GuaranteeSink` use
(futures, tasks that are futures, ``call_soon``, ``call_later``, ``time``). Under trio the
tasks are system tasks (:func:`trio.lowlevel.spawn_system_task`): they live until the
connection is closed or ``trio.run`` returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
)
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

from ._channel_driver import ChannelDriver
from ._driver import HANDLING_FAILED
from ._fragments import (
    ABORTED,
    END_OF_CHUNKS,
    Delivery,
    Turns,
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
from ._ping import check_payload
from ._sink import GuaranteeSink
from ._stream import MessageStream
from ._tasks import Gate
from ._wschannel import (
    Connection,
    Fragment,
)
from .channel import StoredWebSocketChannel
from .defaults import (
    COMPACT_INTERVAL,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_WRITE_LIMIT,
)
from .exceptions import StateError
from .stream_channel import StreamChannel, _pipe_into

if TYPE_CHECKING:
    import anyio.abc
    import trio
    from typing_extensions import Buffer

    ByteReader = asyncio.StreamReader | anyio.abc.ByteReceiveStream | trio.abc.ReceiveStream
    ByteWriter = asyncio.StreamWriter | anyio.abc.ByteSendStream | trio.abc.SendStream

__all__ = ["ByteStreamWebSocketChannel", "over", "start_channel"]

logger = logging.getLogger("wschannel.bytestream")

READ_SIZE: Final = 1 << 16
"""The most bytes one read asks the byte stream for."""


def over(
    reader: ByteReader,
    writer: ByteWriter,
    *,
    protocol: str | None = None,
    ping_interval: float | None = None,
    server_side: bool = True,
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    delivery: Delivery = "messages",
) -> ByteStreamWebSocketChannel:
    """Run WebSocket on a byte stream whose HTTP upgrade is done; returns the open channel.

    No handshake happens here: ``protocol`` is the subprotocol that the caller's handshake
    chose, returned verbatim by :attr:`~WebSocketChannel.protocol`, and no extension was
    negotiated (so no compression).

    - ``reader``, ``writer``: asyncio's stream pair, an anyio byte stream (pass one
      ``ByteStream`` as both) or a trio stream; see the module docstring.
    - ``server_side``: ``True`` (default) for the server end, which sends unmasked frames and
      fails the connection with 1002 on an unmasked one (RFC 6455 §5.1); ``False`` for a
      client, which masks its frames and refuses masked ones.
    - ``ping_interval``: seconds between keepalive pings; no pong within as many again closes
      the connection with 1001 (Dart's algorithm). ``None`` (default) sends no pings.
    - ``max_message_size``: larger messages from the peer fail the connection with 1009.
    - ``max_queue``: received messages buffered before reading pauses (backpressure).
    - ``close_timeout``: seconds the closing handshake may take before the byte stream is
      closed regardless.
    - ``delivery``: ``"messages"`` (default) delivers whole messages; ``"pieces"`` delivers
      every message in pieces from the first frame (:meth:`~ByteStreamWebSocketChannel.
      fragments`), each at most ``max_message_size`` in total (``None``: any size).

    ``None`` disables each limit. Needs a running asyncio or trio event loop (the one the
    streams belong to); raises ``TypeError`` for a reader or writer of another kind.
    """
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError("ping_interval must be positive, or None.")
    if close_timeout is not None and close_timeout < 0:
        raise ValueError("close_timeout must not be negative, or None.")
    pieces_first = in_pieces(delivery)
    conn = Connection(not server_side, max_message_size=max_message_size)
    return start_channel(
        ByteStreamWebSocketChannel,
        reader,
        writer,
        conn,
        protocol=protocol,
        max_queue=max_queue,
        ping_interval=ping_interval,
        close_timeout=close_timeout,
        deliver_pieces=pieces_first,
    )


_Channel = TypeVar("_Channel", bound="ByteStreamWebSocketChannel")


def start_channel(
    cls: type[_Channel],
    reader: ByteReader,
    writer: ByteWriter,
    conn: Connection,
    *,
    protocol: str | None,
    max_queue: int | None,
    ping_interval: float | None,
    close_timeout: float | None,
    pong_timeout: float | None = None,
    write_limit: int | None = DEFAULT_WRITE_LIMIT,
    leftover: bytes = b"",
    preface: bytes = b"",
    deliver_pieces: bool = False,
) -> _Channel:
    """Run ``conn`` (a :class:`Connection` made from an opening handshake's outcome) over
    ``reader`` and ``writer``; the open channel, of class ``cls``.

    For :func:`over` and for the clients and servers that did the handshake on the byte
    stream themselves (:mod:`wschannel._structured`): ``leftover`` is what was read after
    the handshake (the first frames), ``preface`` what to send before any frame (a server's
    101 response: the channel exists, for the server's bookkeeping, before the client can
    see it is open), ``write_limit`` the bytes queued for the writer task above which the
    session hears that writes wait (a server then stops reading) and ``sink.flush()``
    waits; ``deliver_pieces``: deliver messages in pieces from the first frame (``delivery=
    "pieces"``), each at most the connection's ``max_message_size``. Needs the running
    loop the streams belong to.
    """
    if deliver_pieces:
        conn.set_delivery(True, max_message_size=conn.max_message_size)
    loop = _running_loop()
    streams = _byte_streams(loop, reader, writer, write_limit)
    if preface:
        streams.write(preface)
    channel = cls.__new__(cls)
    channel._start(
        loop,
        streams,
        conn,
        protocol=protocol,
        max_queue=max_queue,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        close_timeout=close_timeout,
        leftover=leftover,
    )
    return channel


class ByteStreamWebSocketChannel(StoredWebSocketChannel):
    """A WebSocket channel over a byte stream whose upgrade was done elsewhere; see :func:`over`.

    ``ready`` has resolved before :func:`over` returns; ``protocol`` is the one given to it.
    """

    __slots__ = ("_driver",)

    _sink: _ByteStreamSink

    def __init__(
        self,
        loop: _Loop,
        streams: _ByteStreams,
        conn: Connection,
        *,
        protocol: str | None,
        max_queue: int | None,
        ping_interval: float | None,
        close_timeout: float | None,
    ) -> None:
        """Internal: use :func:`over`. The connection runs from here on."""
        self._start(
            loop,
            streams,
            conn,
            protocol=protocol,
            max_queue=max_queue,
            ping_interval=ping_interval,
            pong_timeout=None,
            close_timeout=close_timeout,
            leftover=b"",
        )

    def _start(
        self,
        loop: _Loop,
        streams: _ByteStreams,
        conn: Connection,
        *,
        protocol: str | None,
        max_queue: int | None,
        ping_interval: float | None,
        pong_timeout: float | None,
        close_timeout: float | None,
        leftover: bytes,
    ) -> None:
        self._protocol = protocol
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._ready = loop.create_future()
        self._ready.set_result(None)
        # MessageStream needs create_future, call_soon and call_exception_handler: asyncio's
        # loop, or the trio facade, which has them.
        self._stream = MessageStream(cast(asyncio.AbstractEventLoop, loop), max_queue=max_queue)
        driver = _Driver(
            self,
            loop,
            streams,
            conn,
            self._stream,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            close_timeout=close_timeout,
        )
        self._driver = driver
        self._sink = driver.sink
        driver.start(leftover)

    async def ping(self, payload: str | Buffer | None = None) -> float:
        """Send a ping (RFC 6455 §5.5.2) and wait for its pong: the round-trip time in
        seconds (also :attr:`latency` from then on).

        ``payload``: what the ping carries and its pong echoes, at most 125 bytes
        (``str`` goes as UTF-8); ``None`` (default): 4 random bytes. ``ValueError`` for a
        longer one, ``RuntimeError`` while a ping with the same payload waits for its pong.
        Raises :class:`~wschannel.StateError` once this side's close frame has gone (closed
        by either side), and if the connection ends before the pong comes. A pong answers
        its ping and those sent before it (RFC 6455 §5.5.3). Bound the wait with a cancel
        scope (``trio.move_on_after``...) or ``asyncio.timeout`` if the peer may not answer.
        """
        data = check_payload(payload)
        driver = self._driver
        conn = driver.conn
        if conn is None or not conn.sending:
            raise StateError(
                "Cannot ping: this side's close frame has gone (the connection is closing or "
                "closed)."
            )
        answer: list[float | None] = []
        waiter = driver.loop.create_future()

        def answered(rtt: float | None) -> None:
            if not waiter.done():
                answer.append(rtt)
                waiter.set_result(None)

        driver.send_ping(answered, data)
        await waiter
        rtt = answer[0]
        if rtt is None:
            raise StateError(
                f"The connection closed (code {self._close_code}) before the ping's pong came."
            )
        return rtt

    @property
    def latency(self) -> float | None:
        """The round-trip time last measured, in seconds: of a keepalive ping (see
        ``ping_interval``) or of :meth:`ping`; ``None`` before any was answered."""
        return self._driver.latency

    async def send_fragments(
        self, chunks: Iterable[str | Buffer] | AsyncIterable[str | Buffer]
    ) -> None:
        """Send the chunks of ``chunks`` (an iterable or async iterable) as the fragments of
        one message (RFC 6455 §5.4): all ``str`` for a text message, all bytes-like for a
        binary one; as :meth:`wschannel.io.IOWebSocketChannel.send_fragments` does, on
        asyncio, anyio or trio.

        Memory stays bounded: each chunk is written as it comes, and while the byte stream's
        write queue is over ``write_limit`` (asyncio streams: the transport's buffer over
        its high-water mark) the next chunk waits for it to drain. Meanwhile messages added
        to the sink wait and follow the message, another ``send_fragments`` waits its turn,
        and a broadcast skips this connection; pings and pongs go out between fragments.

        Raises ``TypeError`` for chunks of mixed kinds or of another type,
        :class:`~wschannel.StateError` after ``sink.close()`` or while ``add_stream`` runs,
        and :class:`~wschannel.exceptions.WebSocketConnectionClosed` if the connection
        closes before the message is sent. If a chunk is refused or ``chunks`` raises (or
        the call is cancelled) after the first fragment went out, the connection is closed
        with 1011: the peer must not take part of the message for all of it.
        """
        await self._sink._send_fragments(chunks)

    def fragments(
        self, *, max_message_size: int | EllipsisType | None = ...
    ) -> AsyncIterator[Fragment]:
        """Receive messages in pieces, as they arrive, without assembling them:
        ``async for piece in channel.fragments():`` gives :class:`~wschannel.Fragment`
        objects (``data``: ``str``, cut only between characters, or ``bytes``; ``last`` on
        a message's last piece, which may be empty), as
        :meth:`wschannel.io.IOWebSocketChannel.fragments` does: at most 1 MiB each,
        ``max_queue`` of them waiting before reading pauses, each message at most
        ``max_message_size`` bytes in total (1009 beyond; by default the channel's,
        ``None``: any size).

        Subscribes to :attr:`stream` (``StateError`` if it was) and applies at once, to a
        message being received too; messages received whole before the call come as one
        piece each. To have pieces from the first frame, open the connection with
        ``delivery="pieces"``.
        """
        check_pieces_limit(max_message_size)
        messages = aiter(self.stream)  # StateError if it was subscribed to already
        conn = self._driver.conn
        if conn.phase != "closed":  # else released, or about to be: nothing more comes
            limit = pieces_limit(conn.max_message_size, max_message_size)
            conn.set_delivery(True, max_message_size=limit)
        return pieces(messages)

    async def pipe(self, other: StreamChannel) -> None:
        """:meth:`StreamChannel.pipe`, with the two directions run as tasks of the loop this
        channel runs on, so that it works under trio too."""
        loop = self._driver.loop
        directions = [
            loop.create_task(_pipe_into(self.stream, other.sink)),
            loop.create_task(_pipe_into(other.stream, self.sink)),
        ]
        errors: list[BaseException] = []
        for direction in directions:
            try:
                await cast("Awaitable[None]", direction)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class _ByteStreamSink(GuaranteeSink):
    """The sink of a :class:`ByteStreamWebSocketChannel`: :class:`GuaranteeSink`'s rules, each
    message encoded by the engine and written to the byte stream."""

    __slots__ = ("_conn", "_driver", "_live", "_turns", "_write")

    def __init__(self, loop: _Loop, messages: MessageStream, driver: _Driver) -> None:
        # GuaranteeSink needs create_future and create_task (tasks that are futures): asyncio's
        # loop, or the trio facade.
        super().__init__(cast(asyncio.AbstractEventLoop, loop), messages)
        self._driver = driver
        self._write = driver.streams.write
        self._live: Connection | None = driver.conn  # None once no message may be sent
        # The fast path of add(): also None while add_stream() or send_fragments() runs.
        self._conn: Connection | None = self._live
        self._turns: Turns | None = None  # send_fragments(): one at a time

    def add(self, data: str | Buffer) -> None:
        conn = self._conn
        if conn is not None:
            cls = type(data)
            if cls is str:
                self._write(conn.send_text(data))  # type: ignore[arg-type]
                return
            if cls is bytes:
                self._write(conn.send_binary(data))  # type: ignore[arg-type]
                return
        GuaranteeSink.add(self, data)

    def _send(self, data: str | Buffer) -> None:
        if isinstance(data, str):
            if self._live is not None:
                if self._fragmenting:
                    self._held.append(data)
                else:
                    self._write(self._live.send_text(data))
            return
        buffer = binary_view(data)  # TypeError for anything else, even once disconnected
        if self._live is not None:
            if self._fragmenting:
                self._held.append(bytes(buffer))  # the caller may change it meanwhile
            else:
                self._write(self._live.send_binary(buffer))

    def _start_close(self, code: int | None, reason: str | None) -> None:
        self._conn = self._live = None
        self._driver.start_close(code, reason)

    def _adding_stream_changed(self) -> None:
        self._conn = None if self._adding_stream or self._fragmenting else self._live

    def _write_buffer_full(self) -> bool:
        return self._driver.streams.writes_waiting()

    # send_fragments() (ByteStreamWebSocketChannel's).

    async def _send_fragments(
        self, chunks: Iterable[str | Buffer] | AsyncIterable[str | Buffer]
    ) -> None:
        source, items = chunk_source(chunks)
        self._check_fragments()
        turns = self._turns
        if turns is None:
            turns = self._turns = Turns(self._driver.loop)
        await turns.acquire()
        try:
            await self._fragmented(self._send_chunks(source, items))
        finally:
            turns.release()

    async def _send_chunks(
        self, source: AsyncIterator[str | Buffer] | None, items: Iterator[str | Buffer] | None
    ) -> None:
        """Each chunk as a fragment, then an empty final one; waits between chunks while the
        byte stream's write queue is over its limit. A failure after the first fragment
        closes with 1011: the peer must not take a part of the message for the whole."""
        streams = self._driver.streams
        text: bool | None = None  # the message's kind, from its first chunk
        try:
            while (chunk := await next_chunk(source, items)) is not END_OF_CHUNKS:
                data, is_text = check_chunk(chunk, text)
                conn = self._live
                if conn is None or self._disconnected:
                    raise closed_midway()
                self._write(conn.send_fragment(data, first=text is None, fin=False))
                text = is_text
                if streams.writes_waiting():
                    await streams.drain()
            if text is None:
                return  # no chunk: no message
            conn = self._live
            if conn is None or self._disconnected:
                raise closed_midway()
            self._write(conn.send_fragment("" if text else b"", first=False, fin=True))
        except BaseException:
            if text is not None and not self._disconnected:
                self._close_midway(ABORTED)
            raise
        finally:
            if source is not None and text is not None:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def flush(self) -> None:
        """Wait until the byte stream has taken what was written (asyncio streams: until the
        transport's buffer is under its limit); raise :class:`WebSocketConnectionClosed` once
        no message can be sent any more."""
        await self._driver.streams.drain()
        self._raise_if_disconnected()

    def _disconnect(self) -> None:
        super()._disconnect()
        self._conn = self._live = None


class _TrioByteStreamSink(_ByteStreamSink):
    """The sink under trio, where :meth:`add_stream`'s forwarding task stops differently.

    GuaranteeSink stops that task the asyncio way: ``Task.cancel()``, then, inside the task,
    ``asyncio.CancelledError``, ``asyncio.current_task()`` and ``uncancel()`` so that it can
    still close the source; none of these exist under trio, where a cancelled scope keeps
    cancelling every later wait inside it. Here the forwarding runs in a cancel scope of its
    own, which :meth:`_disconnect` cancels; the source is closed after the scope, outside it.
    Everything else is GuaranteeSink's, on :class:`_TrioLoop`'s futures and tasks.
    """

    __slots__ = ("_forward_scope",)

    def __init__(self, loop: _Loop, messages: MessageStream, driver: _Driver) -> None:
        super().__init__(loop, messages, driver)
        self._forward_scope: trio.CancelScope | None = None

    def _disconnect(self) -> None:
        scope, self._forward_scope = self._forward_scope, None
        self._forwarding = None  # stopped here, through its scope, not the asyncio way
        super()._disconnect()
        if scope is not None:
            scope.cancel()

    async def _forward(self, iterator: AsyncIterator[str | Buffer]) -> None:
        import trio

        error: Exception | None = None
        exhausted = False
        with trio.CancelScope() as scope:
            self._forward_scope = scope
            try:
                exhausted = await self._send_all(iterator)
            except Exception as exc:
                error = exc
            finally:
                self._forward_scope = None
                self._stop_adding()
        await self._forward_ended(iterator, exhausted, error)


class _Driver(ChannelDriver):
    """Runs one engine :class:`Connection` over a byte stream, for either side: it feeds the
    engine what it reads and does what the engine's session decides (its actions), as
    :mod:`wschannel.io`'s protocol does with an asyncio transport. It decides no close code,
    no timeout and no close: the session does.
    """

    conn: Connection  # set at once: the byte stream is open when the driver starts
    sink: _ByteStreamSink
    loop: _Loop

    def __init__(
        self,
        channel: ByteStreamWebSocketChannel,
        loop: _Loop,
        streams: _ByteStreams,
        conn: Connection,
        stream: MessageStream,
        *,
        ping_interval: float | None,
        pong_timeout: float | None,
        close_timeout: float | None,
    ) -> None:
        self.channel = channel
        self.loop = loop
        self.streams = streams
        self.conn = conn
        self.stream = stream
        sink_class = _TrioByteStreamSink if isinstance(loop, _TrioLoop) else _ByteStreamSink
        self.sink = sink_class(loop, stream, self)
        conn.start_session(
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            close_timeout=close_timeout,
            consumer_wait=DEFAULT_CLOSE_TIMEOUT,
            half_close=streams.can_half_close,
            compact_interval=COMPACT_INTERVAL if conn.compressed else None,
        )
        self._reader: _Handle | None = None
        self._closer: _Handle | None = None  # referenced so that asyncio keeps the task
        self._reading = Gate(loop.create_future)  # shut while the session pauses reading
        self._closing = False  # the byte stream is being closed (or was dropped)

    def start(self, leftover: bytes = b"") -> None:
        """Start reading: first ``leftover`` (bytes read with the opening handshake), then
        the byte stream."""
        self.stream._set_flow_control(self.consumer_full, self.consumer_has_room)
        self.streams.watch_writes(self.writes_waiting, self._write_failed)
        if leftover:
            self.deliver(self.conn.receive_data(leftover))
        self._reader = self.loop.create_task(self._read())
        self._arm_session_timer()

    def _write_failed(self) -> None:
        """Sending failed: the connection is lost (the reader may be paused, and would not
        find out)."""
        if not self._closing:
            logger.debug("The byte stream broke while writing")
            self.abort()

    # Reading.

    async def _read(self) -> None:
        """Read until EOF: one engine call per read, then its events in order."""
        read = self.streams.read
        receive_data = self.conn.receive_data
        reading = self._reading
        while not self._closing:
            if not reading.is_open:
                await reading.wait()
                continue
            try:
                data = await read()
            except Exception as exc:  # the byte stream broke: the connection is lost
                if not self._closing:
                    logger.debug("Reading the byte stream failed: %r", exc)
                    self.abort()
                return
            if self._closing:
                return  # closing: what comes now is not for the connection
            if not data:
                self.eof_received()
                return
            try:
                self.deliver(receive_data(data))
            except Exception as exc:
                self._handling_failed(exc)
                return

    def _handling_failed(self, exc: Exception) -> None:
        """A bug in handling a read (in the driver, or in a callback it runs, such as a
        ping's ``answered``): reported where this flavour reports a task's failure (the
        loop's exception handler; under trio, :class:`_TrioLoop` logs it), then the
        connection fails with 1006, as :mod:`wschannel._direct` does. Without this the
        reader task would end and the connection would stay open, with nobody reading.
        What the read delivered before the failure is in the stream already
        (``ChannelDriver.deliver``); the stream ends after it."""
        self.loop.call_exception_handler(
            {
                "message": HANDLING_FAILED,
                "exception": exc,
                "channel": self.channel,
            }
        )
        self.abort()

    # The session's hooks (wschannel._driver): what it decided, done with this byte stream.

    def write(self, data: bytes) -> None:
        self.streams.write(data)

    def pause_reading(self) -> None:
        self._reading.shut()

    def resume_reading(self) -> None:
        self._reading.open()

    def half_close(self) -> None:
        self.streams.half_close()

    def close_transport(self) -> None:
        if not self._closing:
            self._closing = True
            self._closer = self.loop.create_task(self._shut_down())

    async def _shut_down(self) -> None:
        await self.streams.aclose()
        self.transport_lost()

    def abort(self) -> None:
        if self.conn.phase != "closed":  # the byte stream is not closed yet
            self._closing = True
            self.streams.abort()
            self.transport_lost()

    def finish(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        super().finish()

    # unsent(): 0, the default: a byte stream cannot tell what the peer has taken.


# The byte streams.


def _byte_streams(
    loop: _Loop, reader: object, writer: object, write_limit: int | None = DEFAULT_WRITE_LIMIT
) -> _ByteStreams:
    """The adapter for ``reader`` and ``writer``, checked against the running loop;
    ``write_limit``: see :func:`start_channel` (asyncio streams have their transport's)."""
    if isinstance(reader, asyncio.StreamReader) or isinstance(writer, asyncio.StreamWriter):
        if not (
            isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter)
        ):
            raise TypeError("Pass an asyncio.StreamReader together with its asyncio.StreamWriter.")
        if isinstance(loop, _TrioLoop):
            raise RuntimeError("asyncio streams need a running asyncio event loop, not trio.")
        return _AsyncioStreams(reader, writer)
    if "anyio" in sys.modules:
        import anyio
        import anyio.abc

        if isinstance(reader, anyio.abc.ByteReceiveStream) and isinstance(
            writer, anyio.abc.ByteSendStream
        ):
            return _TaskStreams(
                loop,
                reader.receive,
                writer.send,
                _closers(reader, writer),
                anyio.EndOfStream,
                anyio.aclose_forcefully,
                writer.send_eof if isinstance(writer, anyio.abc.ByteStream) else None,
                write_limit,
            )
    if "trio" in sys.modules:
        import trio

        if isinstance(reader, trio.abc.ReceiveStream) and isinstance(writer, trio.abc.SendStream):
            if not isinstance(loop, _TrioLoop):
                raise RuntimeError("trio streams need a running trio event loop.")
            return _TaskStreams(
                loop,
                reader.receive_some,
                writer.send_all,
                _closers(reader, writer),
                None,
                trio.aclose_forcefully,
                writer.send_eof if isinstance(writer, trio.abc.HalfCloseableStream) else None,
                write_limit,
            )
    raise TypeError(
        "over() takes asyncio.StreamReader and asyncio.StreamWriter, anyio byte streams or trio "
        f"streams, not {type(reader).__name__} and {type(writer).__name__}."
    )


class _AsyncResource(Protocol):
    async def aclose(self) -> None: ...


def _closers(reader: _AsyncResource, writer: _AsyncResource) -> list[_AsyncResource]:
    """What to close, in order: the writer, then the reader unless it is the same stream."""
    return [writer] if reader is writer else [writer, reader]


class _ByteStreams(Protocol):
    """A byte stream as the driver sees it."""

    @property
    def can_half_close(self) -> bool:
        """Whether :meth:`half_close` can end the sending half alone."""

    async def read(self) -> bytes | bytearray:
        """Up to :data:`READ_SIZE` bytes; ``b''`` at EOF. Raises if the stream broke."""

    def write(self, data: bytes) -> None:
        """Send ``data`` after what was written before; dropped once closing."""

    def writes_waiting(self) -> bool:
        """Whether what was written and not taken yet is over the limit (``drain`` waits)."""

    def watch_writes(self, listener: Callable[[bool], None], broken: Callable[[], None]) -> None:
        """Call ``listener(True)`` when what waits to be sent goes over the limit and
        ``listener(False)`` when it is back under it (where the stream can tell), and
        ``broken()`` when sending failed: the peer is gone, even while reading is paused."""

    @property
    def high_water(self) -> int:
        """The most bytes that have waited to be sent (0 where the stream cannot tell)."""

    async def drain(self) -> None:
        """Wait until the stream can take more data."""

    def half_close(self) -> None:
        """Send EOF once what was written has been sent, and keep reading; closes the stream
        instead if it cannot."""

    async def aclose(self) -> None:
        """Send what was written, then close the stream. Never raises."""

    def abort(self) -> None:
        """Close the stream now, dropping what was not sent."""


class _AsyncioStreams:
    """asyncio's stream pair: ``write`` goes straight to the transport's buffer."""

    __slots__ = ("_closing", "_eof", "_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closing = False
        self._eof = False  # write_eof() was called

    @property
    def can_half_close(self) -> bool:
        return self._writer.can_write_eof()

    async def read(self) -> bytes:
        return await self._reader.read(READ_SIZE)

    def write(self, data: bytes) -> None:
        if not (self._closing or self._eof):
            self._writer.write(data)

    def writes_waiting(self) -> bool:
        transport = self._writer.transport  # over its high-water mark, drain() waits
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]

    def watch_writes(self, listener: Callable[[bool], None], broken: Callable[[], None]) -> None:
        pass  # the transport tells its own protocol (StreamWriter's drain), not us

    @property
    def high_water(self) -> int:
        return 0  # the transport does not keep one

    async def drain(self) -> None:
        if self._closing:
            return
        try:
            await self._writer.drain()
        except Exception as exc:  # the connection is lost; the driver finds out by reading
            logger.debug("Draining the byte stream failed: %r", exc)

    def half_close(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        try:
            self._writer.write_eof()
        except Exception as exc:  # the connection is lost; the driver finds out by reading
            logger.debug("Half-closing the byte stream failed: %r", exc)

    async def aclose(self) -> None:
        self._closing = True
        try:
            self._writer.close()
            await self._writer.wait_closed()
        except Exception as exc:
            logger.debug("Closing the byte stream failed: %r", exc)

    def abort(self) -> None:
        self._closing = True
        self._writer.transport.abort()


class _TaskStreams:
    """A stream whose ``send`` is a coroutine (anyio, trio): a writer task sends the queue."""

    __slots__ = (
        "_broken",
        "_busy",
        "_closed",
        "_closers",
        "_closing",
        "_end_of_stream",
        "_eof",
        "_force_close",
        "_high_water",
        "_idle_waiters",
        "_limit",
        "_listener",
        "_loop",
        "_over_limit",
        "_queue",
        "_queued",
        "_receive",
        "_send",
        "_send_eof",
        "_wakeup",
        "_writer",
    )

    def __init__(
        self,
        loop: _Loop,
        receive: Callable[[int], Awaitable[bytes | bytearray]],
        send: Callable[[bytes], Awaitable[None]],
        closers: list[_AsyncResource],
        end_of_stream: type[Exception] | None,
        force_close: Callable[[Any], Awaitable[None]],
        send_eof: Callable[[], Awaitable[None]] | None,
        write_limit: int | None = DEFAULT_WRITE_LIMIT,
    ) -> None:
        self._loop = loop
        self._limit = write_limit
        self._listener: Callable[[bool], None] | None = None
        self._broken: Callable[[], None] | None = None
        self._over_limit = False  # the queue is over write_limit (the listener was told)
        self._high_water = 0  # the most bytes the queue has held
        self._receive = receive
        self._send = send
        self._closers = closers
        self._end_of_stream = end_of_stream
        self._force_close = force_close
        self._send_eof = send_eof
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in the queue or being sent
        self._busy = False  # the writer task is sending
        self._closing = False
        self._eof = False  # half_close() was called: EOF goes out after the queue
        self._wakeup: asyncio.Future[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = loop.create_future()
        self._writer = loop.create_task(self._write_queue())

    @property
    def can_half_close(self) -> bool:
        return self._send_eof is not None

    async def read(self) -> bytes | bytearray:
        end_of_stream = self._end_of_stream
        if end_of_stream is None:
            return await self._receive(READ_SIZE)
        try:
            return await self._receive(READ_SIZE)
        except end_of_stream:
            return b""

    def write(self, data: bytes) -> None:
        if self._closing or self._eof:
            return
        self._queue.append(data)
        self._queued += len(data)
        self._high_water = max(self._high_water, self._queued)
        self._wake_writer()
        if not self._over_limit and self.writes_waiting():
            self._over_limit = True
            if self._listener is not None:
                self._listener(True)

    def writes_waiting(self) -> bool:
        limit = self._limit
        return limit is not None and self._queued > limit

    def watch_writes(self, listener: Callable[[bool], None], broken: Callable[[], None]) -> None:
        self._listener = listener
        self._broken = broken

    @property
    def high_water(self) -> int:
        return self._high_water

    def _sent(self, size: int) -> None:
        self._queued -= size
        if self._over_limit and not self.writes_waiting():
            self._over_limit = False
            if self._listener is not None:
                self._listener(False)

    async def drain(self) -> None:
        if self._busy or self._queue:
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter

    def half_close(self) -> None:
        if not self._closing:
            self._eof = True
            self._wake_writer()

    async def aclose(self) -> None:
        self._closing = True
        self._wake_writer()
        await self._closed

    def abort(self) -> None:
        self._closing = True
        self._queue.clear()
        self._queued = 0
        self._writer.cancel()
        self._loop.create_task(self._close_forcefully())

    async def _write_queue(self) -> None:
        """The writer task: send the queue; once half-closing, EOF; once closing, close."""
        queue = self._queue
        eof_sent = False
        try:
            while True:
                if queue:
                    data = queue.popleft() if len(queue) == 1 else b"".join(queue)
                    queue.clear()
                    self._busy = True
                    await self._send(data)
                    self._busy = False
                    self._sent(len(data))
                    continue
                self._wake_idle()
                if self._closing:
                    break
                if self._eof and not eof_sent:
                    eof_sent = True
                    await self._half_close()
                    continue
                self._wakeup = self._loop.create_future()
                await self._wakeup
            for resource in self._closers:
                await resource.aclose()
        except Exception as exc:  # the peer is gone: nothing more can be sent
            logger.debug("Writing to the byte stream failed: %r", exc)
            self._closing = True
            queue.clear()
            if self._broken is not None:
                self._broken()
            await self._close_forcefully()
        finally:
            self._closing = True
            self._busy = False
            self._queued = 0
            self._wake_idle()
            if not self._closed.done():
                self._closed.set_result(None)

    async def _half_close(self) -> None:
        send_eof = self._send_eof
        try:
            if send_eof is None:
                raise NotImplementedError("this stream cannot half-close")
            await send_eof()
        except NotImplementedError:  # anyio's TLS streams: close instead
            self._closing = True

    async def _close_forcefully(self) -> None:
        for resource in self._closers:
            try:
                await self._force_close(resource)
            except Exception as exc:
                logger.debug("Closing the byte stream failed: %r", exc)

    def _wake_writer(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


# The event loop: asyncio's, or a facade on trio.


class _Handle(Protocol):
    def cancel(self) -> object: ...


class _Loop(Protocol):
    """The part of an event loop this module uses; asyncio's loops have it."""

    def create_future(self) -> asyncio.Future[Any]: ...
    def create_task(self, coro: Coroutine[Any, Any, None]) -> _Handle: ...
    def call_soon(self, callback: Callable[[], object]) -> object: ...
    def call_later(self, delay: float, callback: Callable[[], object]) -> _Handle: ...
    def call_exception_handler(self, context: dict[str, Any]) -> None: ...
    def time(self) -> float: ...


def _running_loop() -> _Loop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    if "trio" in sys.modules:
        try:
            return _TrioLoop()
        except RuntimeError:
            pass
    raise RuntimeError("over() needs a running asyncio or trio event loop.")


class _TrioLoop:
    """asyncio's loop interface, as far as :class:`_Loop` and :class:`GuaranteeSink` go, on the
    running trio loop.

    Tasks are trio system tasks, each in a cancel scope, and futures (:class:`_TrioTask`);
    ``call_later`` is a task that sleeps; ``call_soon`` is
    :meth:`trio.lowlevel.TrioToken.run_sync_soon`. Exceptions from callbacks and tasks are
    logged (``wschannel.bytestream``), where asyncio would call its exception handler,
    instead of crashing ``trio.run``.
    """

    __slots__ = ("_token",)

    def __init__(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()  # RuntimeError outside trio

    def create_future(self) -> asyncio.Future[Any]:
        # _TrioFuture has the part of asyncio.Future's interface that is used here and that
        # users of ready/done rely on (done, result, exception, add_done_callback, await).
        return cast("asyncio.Future[Any]", _TrioFuture(self))

    def create_task(self, coro: Coroutine[Any, Any, None]) -> _TrioTask:
        import trio

        task = _TrioTask(self, trio.CancelScope())
        trio.lowlevel.spawn_system_task(
            self._run, coro, task, name=getattr(coro, "__qualname__", None)
        )
        return task

    def call_soon(self, callback: Callable[[], object]) -> None:
        self._token.run_sync_soon(self._call, callback)

    def call_later(self, delay: float, callback: Callable[[], object]) -> _TrioTask:
        return self.create_task(_call_later(delay, callback))

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        logger.error(
            context.get("message", "Error in a wschannel callback"),
            exc_info=context.get("exception"),
        )

    def time(self) -> float:
        import trio

        return trio.current_time()

    async def _run(self, coro: Coroutine[Any, Any, None], task: _TrioTask) -> None:
        try:
            if task.scope.cancel_called:
                coro.close()
                return
            with task.scope:
                await coro
        except Exception as exc:
            self.call_exception_handler(
                {"message": "Exception in a wschannel task", "exception": exc}
            )
        finally:
            if not task.done():
                task.set_result(None)

    def _call(self, callback: Callable[[], object]) -> None:
        try:
            callback()
        except Exception as exc:
            self.call_exception_handler(
                {"message": "Exception in a wschannel callback", "exception": exc}
            )


async def _call_later(delay: float, callback: Callable[[], object]) -> None:
    import trio

    await trio.sleep(delay)
    callback()


class _TrioFuture:
    """A future for trio: resolved once, with ``None`` or an exception (a sink's ``done``
    after ``add_error``), awaited any number of times."""

    __slots__ = ("_callbacks", "_event", "_exception", "_loop")

    def __init__(self, loop: _TrioLoop) -> None:
        import trio

        self._loop = loop
        self._event = trio.Event()
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Any], object]] = []

    def done(self) -> bool:
        return self._event.is_set()

    def cancelled(self) -> bool:
        return False

    def result(self) -> None:
        if not self._event.is_set():
            raise asyncio.InvalidStateError("Result is not set.")
        if self._exception is not None:
            raise self._exception

    def exception(self) -> BaseException | None:
        if not self._event.is_set():
            raise asyncio.InvalidStateError("Exception is not set.")
        return self._exception

    def set_result(self, result: None) -> None:
        self._resolve()

    def set_exception(self, exception: BaseException) -> None:
        if self._event.is_set():
            raise asyncio.InvalidStateError("The result is already set.")
        self._exception = exception
        self._resolve()

    def _resolve(self) -> None:
        if self._event.is_set():
            raise asyncio.InvalidStateError("The result is already set.")
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._loop.call_soon(functools.partial(callback, self))

    def add_done_callback(self, callback: Callable[[Any], object]) -> None:
        if self._event.is_set():
            self._loop.call_soon(functools.partial(callback, self))
        else:
            self._callbacks.append(callback)

    def __await__(self) -> Generator[Any, None, None]:
        if not self._event.is_set():
            yield from self._event.wait().__await__()
        return self.result()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'finished' if self.done() else 'pending'}>"


class _TrioTask(_TrioFuture):
    """A task of :class:`_TrioLoop`: a future that resolves with ``None`` when the task ends,
    however it ends (its exception is logged); ``cancel()`` cancels its scope."""

    __slots__ = ("scope",)

    def __init__(self, loop: _TrioLoop, scope: trio.CancelScope) -> None:
        super().__init__(loop)
        self.scope = scope

    def cancel(self) -> bool:
        self.scope.cancel()
        return True
