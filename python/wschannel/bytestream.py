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
``receive_data`` call; it stops reading while the message stream's buffer is full
(backpressure). Every frame to send is written straight away (asyncio) or queued for a writer
task (anyio and trio, whose ``send`` is a coroutine). Closing follows RFC 6455 §7.1.1: the
server side closes the byte stream once the close frames have crossed; the client side waits
for the server to close it, up to ``close_timeout``, then closes it itself.

The event loop is whichever is running: asyncio's, or trio's through :class:`_TrioLoop`, a
small facade with the part of asyncio's loop interface this module and
:class:`~wschannel.channel.MessageStream` use (futures, tasks, ``call_soon``, ``call_later``).
Under trio the tasks are system tasks (:func:`trio.lowlevel.spawn_system_task`): they live
until the connection is closed or ``trio.run`` returns.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from ._message import binary_view, check_close_args
from ._sink import WebSocketSink
from ._stream import MessageStream
from ._wschannel import Close, Connection, Failure, Ping, Pong
from .channel import StoredWebSocketChannel
from .defaults import DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_QUEUE
from .exceptions import StateError
from .status import ABNORMAL_CLOSURE, GOING_AWAY

if TYPE_CHECKING:
    import anyio.abc
    import trio
    from typing_extensions import Buffer

    ByteReader = asyncio.StreamReader | anyio.abc.ByteReceiveStream | trio.abc.ReceiveStream
    ByteWriter = asyncio.StreamWriter | anyio.abc.ByteSendStream | trio.abc.SendStream

__all__ = ["ByteStreamWebSocketChannel", "over"]

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

    ``None`` disables each limit. Needs a running asyncio or trio event loop (the one the
    streams belong to); raises ``TypeError`` for a reader or writer of another kind.
    """
    if ping_interval is not None and ping_interval <= 0:
        raise ValueError("ping_interval must be positive, or None.")
    if close_timeout is not None and close_timeout < 0:
        raise ValueError("close_timeout must not be negative, or None.")
    loop = _running_loop()
    streams = _byte_streams(loop, reader, writer)
    conn = Connection(not server_side, max_message_size=max_message_size)
    channel = ByteStreamWebSocketChannel(
        loop,
        streams,
        conn,
        protocol=protocol,
        max_queue=max_queue,
        ping_interval=ping_interval,
        close_timeout=close_timeout,
    )
    channel._driver.start()
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
        """Internal: use :func:`over`."""
        self._protocol = protocol
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._ready = loop.create_future()
        self._ready.set_result(None)
        # MessageStream needs create_future, call_soon and call_exception_handler: asyncio's
        # loop, or the trio facade, which has them.
        self._stream = MessageStream(cast(asyncio.AbstractEventLoop, loop), max_queue=max_queue)
        self._driver = _Driver(
            self,
            loop,
            streams,
            conn,
            ping_interval=ping_interval,
            close_timeout=close_timeout,
        )
        self._sink = _ByteStreamSink(self._driver, conn, loop.create_future())
        self._stream._set_flow_control(self._driver.pause_reading, self._driver.resume_reading)

    def __repr__(self) -> str:
        state = f"closed {self._close_code}" if self._sink._done.done() else "open"
        return f"<{type(self).__name__} {state}>"


class _ByteStreamSink(WebSocketSink):
    """The sink of a :class:`ByteStreamWebSocketChannel`."""

    __slots__ = ("_conn", "_done", "_driver", "_user_closed", "_write")

    def __init__(self, driver: _Driver, conn: Connection, done: asyncio.Future[None]) -> None:
        self._driver = driver
        self._conn: Connection | None = conn  # None once no message may be sent
        self._write = driver.write
        self._user_closed = False
        self._done = done

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
        self._add_slowly(data)

    def _add_slowly(self, data: str | Buffer) -> None:
        if self._user_closed:
            raise StateError("Cannot add event after closing.")
        conn = self._conn
        if isinstance(data, str):
            if conn is not None:
                self._write(conn.send_text(data))
            return
        buffer = binary_view(data)
        if conn is None:
            return  # the peer closed the connection (stream channel guarantee 3)
        self._write(conn.send_binary(buffer))

    def close(self, code: int | None = None, reason: str | None = None) -> asyncio.Future[None]:
        if self._user_closed:
            return self._done
        check_close_args(code, reason)
        self._user_closed = True
        self._driver.close(code, reason)
        return self._done

    @property
    def done(self) -> asyncio.Future[None]:
        return self._done

    async def flush(self) -> None:
        await self._driver.streams.drain()


class _Driver:
    """Drives one engine :class:`Connection` over a byte stream, for either side."""

    def __init__(
        self,
        channel: ByteStreamWebSocketChannel,
        loop: _Loop,
        streams: _ByteStreams,
        conn: Connection,
        *,
        ping_interval: float | None,
        close_timeout: float | None,
    ) -> None:
        self.channel = channel
        self.loop = loop
        self.streams = streams
        self.write = streams.write
        self.conn = conn
        self._ping_interval = ping_interval
        self._close_timeout = close_timeout
        self._reader: _Handle | None = None
        self._closer: _Handle | None = None  # referenced so that asyncio keeps the task
        self._ping_timer: _Handle | None = None
        self._close_timer: _Handle | None = None
        self._reading_paused = False
        self._resume_waiter: asyncio.Future[None] | None = None
        self._closing = False  # the byte stream is being closed
        self._lost = False  # the byte stream is closed: the connection is over

    def start(self) -> None:
        self._reader = self.loop.create_task(self._read())
        if self._ping_interval is not None:
            self._ping_timer = self.loop.call_later(self._ping_interval, self._send_ping)

    # Reading, with backpressure from the message stream.

    async def _read(self) -> None:
        """Read until EOF: one engine call per read, then its events in order."""
        read = self.streams.read
        receive_data = self.conn.receive_data
        add_message = self.channel._stream._add
        control = self._control
        while True:
            if self._reading_paused:
                waiter = self.loop.create_future()
                self._resume_waiter = waiter
                await waiter
                continue
            try:
                data = await read()
            except Exception as exc:  # the byte stream failed: the connection is lost
                logger.debug("Reading the byte stream failed: %r", exc)
                break
            if not data:
                break
            for event in receive_data(data):
                cls = type(event)
                if cls is str or cls is bytes:
                    add_message(event)  # type: ignore[arg-type]
                else:
                    control(event)
        if not self._lost:
            self.conn.receive_eof()
            self._close_transport()

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        waiter, self._resume_waiter = self._resume_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _control(self, event: object) -> None:
        conn = self.conn
        if isinstance(event, Ping):
            self._write_reply()
        elif isinstance(event, Pong):
            if self._ping_timer is not None and self._ping_interval is not None:
                self._ping_timer.cancel()
                self._ping_timer = self.loop.call_later(self._ping_interval, self._send_ping)
        elif isinstance(event, Close | Failure):
            channel = self.channel
            channel._close_code = event.code
            channel._close_reason = event.reason
            self._write_reply()
            if conn.close_expected():
                self._disconnect()
                self._close_transport()
            elif self._close_timeout is None:
                self._disconnect()  # a client that may wait forever for the server's EOF
            else:
                # A client waits for the server to close first, up to close_timeout; its
                # stream ends then (in _connection_lost), with the byte stream closed.
                # Reading goes on even if the buffer is full, for the EOF.
                self._cancel_ping()
                self.channel._sink._conn = None
                self.channel._stream._resume_reading()
                self._arm_close_timer()

    def _write_reply(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.write(data)

    # Closing (RFC 6455 §7).

    def close(self, code: int | None, reason: str | None) -> None:
        """The user closed the sink: send a close frame and wait for the peer's."""
        channel = self.channel
        channel._stream._discard()
        sink = channel._sink
        if sink._conn is None:
            return  # the peer closed first, or the connection is gone
        sink._conn = None
        self.write(self.conn.send_close(code, reason or ""))
        self._cancel_ping()
        self._arm_close_timer()

    def _disconnect(self) -> None:
        """No more messages either way (RFC 6455 §7.1.4 once the close frames crossed)."""
        self._cancel_ping()
        self.channel._stream._end()
        self.channel._sink._conn = None

    def _close_transport(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._arm_close_timer()
        self._closer = self.loop.create_task(self._shut_down())

    async def _shut_down(self) -> None:
        await self.streams.aclose()
        self._connection_lost()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and self._close_timeout is not None and not self._lost:
            self._close_timer = self.loop.call_later(self._close_timeout, self._abort)

    def _abort(self) -> None:
        """The closing handshake took too long: close the byte stream now."""
        self._close_timer = None
        self._closing = True
        self.streams.abort()
        self._connection_lost()

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._cancel_ping()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._reader is not None:
            self._reader.cancel()
        channel = self.channel
        if channel._close_code is None:
            channel._close_code = ABNORMAL_CLOSURE
            channel._close_reason = ""
        self._disconnect()
        done = channel._sink._done
        if not done.done():
            done.set_result(None)

    # Keepalive (Dart's algorithm: ping, then wait one interval for the pong).

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self.channel._sink._conn is None or self._ping_interval is None:
            return
        self.write(self.conn.send_ping(b""))
        self._ping_timer = self.loop.call_later(self._ping_interval, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self._ping_timer = None
        channel = self.channel
        if channel._sink._conn is None:
            return
        channel._close_code = GOING_AWAY
        channel._close_reason = ""
        channel._sink._conn = None
        self.write(self.conn.send_close(GOING_AWAY, ""))
        self._arm_close_timer()
        self._disconnect()

    def _cancel_ping(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None


# The byte streams.


def _byte_streams(loop: _Loop, reader: object, writer: object) -> _ByteStreams:
    """The adapter for ``reader`` and ``writer``, checked against the running loop."""
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

    async def read(self) -> bytes | bytearray:
        """Up to :data:`READ_SIZE` bytes; ``b''`` at EOF. Raises if the stream broke."""

    def write(self, data: bytes) -> None:
        """Send ``data`` after what was written before; dropped once closing."""

    async def drain(self) -> None:
        """Wait until the stream can take more data."""

    async def aclose(self) -> None:
        """Send what was written, then close the stream. Never raises."""

    def abort(self) -> None:
        """Close the stream now, dropping what was not sent."""


class _AsyncioStreams:
    """asyncio's stream pair: ``write`` goes straight to the transport's buffer."""

    __slots__ = ("_closing", "_reader", "_writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closing = False

    async def read(self) -> bytes:
        return await self._reader.read(READ_SIZE)

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._writer.write(data)

    async def drain(self) -> None:
        if self._closing:
            return
        try:
            await self._writer.drain()
        except Exception as exc:  # the connection is lost; the driver finds out by reading
            logger.debug("Draining the byte stream failed: %r", exc)

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
        "_busy",
        "_closed",
        "_closers",
        "_closing",
        "_end_of_stream",
        "_force_close",
        "_idle_waiters",
        "_loop",
        "_queue",
        "_receive",
        "_send",
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
    ) -> None:
        self._loop = loop
        self._receive = receive
        self._send = send
        self._closers = closers
        self._end_of_stream = end_of_stream
        self._force_close = force_close
        self._queue: deque[bytes] = deque()
        self._busy = False  # the writer task is sending
        self._closing = False
        self._wakeup: asyncio.Future[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = loop.create_future()
        self._writer = loop.create_task(self._write_queue())

    async def read(self) -> bytes | bytearray:
        end_of_stream = self._end_of_stream
        if end_of_stream is None:
            return await self._receive(READ_SIZE)
        try:
            return await self._receive(READ_SIZE)
        except end_of_stream:
            return b""

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        self._queue.append(data)
        self._wake_writer()

    async def drain(self) -> None:
        if self._busy or self._queue:
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter

    async def aclose(self) -> None:
        self._closing = True
        self._wake_writer()
        await self._closed

    def abort(self) -> None:
        self._closing = True
        self._queue.clear()
        self._writer.cancel()
        self._loop.create_task(self._close_forcefully())

    async def _write_queue(self) -> None:
        """The writer task: send the queue, then, once closing, close the stream."""
        queue = self._queue
        try:
            while True:
                if queue:
                    data = queue.popleft() if len(queue) == 1 else b"".join(queue)
                    queue.clear()
                    self._busy = True
                    await self._send(data)
                    self._busy = False
                    continue
                self._wake_idle()
                if self._closing:
                    break
                self._wakeup = self._loop.create_future()
                await self._wakeup
            for resource in self._closers:
                await resource.aclose()
        except Exception as exc:  # the peer is gone: nothing more can be sent
            logger.debug("Writing to the byte stream failed: %r", exc)
            self._closing = True
            queue.clear()
            await self._close_forcefully()
        finally:
            self._closing = True
            self._busy = False
            self._wake_idle()
            if not self._closed.done():
                self._closed.set_result(None)

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
    """asyncio's loop interface, as far as :class:`_Loop` goes, on the running trio loop.

    Tasks are trio system tasks, each in a cancel scope; ``call_later`` is a task that sleeps;
    ``call_soon`` is :meth:`trio.lowlevel.TrioToken.run_sync_soon`. Exceptions from callbacks
    and tasks are logged (``wschannel.bytestream``), where asyncio would call its exception
    handler, instead of crashing ``trio.run``.
    """

    __slots__ = ("_token",)

    def __init__(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()  # RuntimeError outside trio

    def create_future(self) -> asyncio.Future[Any]:
        # _TrioFuture has the part of asyncio.Future's interface that is used here and that
        # users of ready/done rely on (done, result, add_done_callback, await).
        return cast("asyncio.Future[Any]", _TrioFuture(self))

    def create_task(self, coro: Coroutine[Any, Any, None]) -> _TrioTask:
        import trio

        task = _TrioTask(trio.CancelScope())
        trio.lowlevel.spawn_system_task(
            self._run, coro, task.scope, name=getattr(coro, "__qualname__", None)
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

    async def _run(self, coro: Coroutine[Any, Any, None], scope: Any) -> None:
        if scope.cancel_called:
            coro.close()
            return
        try:
            with scope:
                await coro
        except Exception as exc:
            self.call_exception_handler(
                {"message": "Exception in a wschannel task", "exception": exc}
            )

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


class _TrioTask:
    """A task of :class:`_TrioLoop`: ``cancel()`` cancels its scope."""

    __slots__ = ("scope",)

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope

    def cancel(self) -> None:
        self.scope.cancel()


class _TrioFuture:
    """A result-only future for trio: set once with ``None``, awaited any number of times."""

    __slots__ = ("_callbacks", "_event", "_loop")

    def __init__(self, loop: _TrioLoop) -> None:
        import trio

        self._loop = loop
        self._event = trio.Event()
        self._callbacks: list[Callable[[_TrioFuture], object]] = []

    def done(self) -> bool:
        return self._event.is_set()

    def cancelled(self) -> bool:
        return False

    def result(self) -> None:
        if not self._event.is_set():
            raise asyncio.InvalidStateError("Result is not set.")

    def exception(self) -> None:
        self.result()

    def set_result(self, result: None) -> None:
        if self._event.is_set():
            raise asyncio.InvalidStateError("The result is already set.")
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._loop.call_soon(functools.partial(callback, self))

    def add_done_callback(self, callback: Callable[[_TrioFuture], object]) -> None:
        if self._event.is_set():
            self._loop.call_soon(functools.partial(callback, self))
        else:
            self._callbacks.append(callback)

    def __await__(self) -> Generator[Any, None, None]:
        if not self._event.is_set():
            yield from self._event.wait().__await__()

    def __repr__(self) -> str:
        return f"<_TrioFuture {'finished' if self.done() else 'pending'}>"
