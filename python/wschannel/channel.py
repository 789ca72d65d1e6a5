"""The channel, its sink and its message stream: what every ``wschannel`` channel looks like.

Pure Python (no engine), so that every implementation shares it, including the browser one.
:class:`StreamChannel` and :class:`StreamSink` are Dart's ``StreamChannel``/``StreamSink``
with the ``StreamChannelMixin`` methods (``pipe``, ``transform``...); :class:`GuaranteeSink`
holds the sink rules every WebSocket sink keeps; :data:`json_document` is a transformer.

A :class:`WebSocketChannel` is a pair: :attr:`~WebSocketChannel.stream`, the messages from the
peer, and :attr:`~WebSocketChannel.sink`, where messages to the peer go. It keeps
``stream_channel``'s guarantees:

1. The stream is single-subscription: :class:`MessageStream` can be iterated or listened to once.
2. Closing the sink ends the stream at once: messages still buffered are dropped.
3. Once the stream has ended because of the peer, the sink silently drops what is added.
4. The same holds when the stream ends before anyone listens.
5. Cancelling a subscription does not close the connection; a close from the peer is still
   handled (and ``close_code`` set).
6. An error added to the sink (``add_error``) is not sent: it closes the connection and fails
   ``sink.done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, TypeAlias

from .defaults import DEFAULT_MAX_QUEUE
from .exceptions import StateError, WebSocketConnectionClosed

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "GuaranteeSink",
    "MappedSink",
    "MappedStream",
    "Message",
    "MessageStream",
    "StoredWebSocketChannel",
    "StreamChannel",
    "StreamChannelTransformer",
    "StreamSink",
    "StreamSinkTransformer",
    "StreamSubscription",
    "StreamTransformer",
    "WebSocketChannel",
    "WebSocketSink",
    "binary_view",
    "check_close_args",
    "connect",
    "json_document",
    "with_close_guarantee",
]

Message: TypeAlias = str | bytes
"""A message from the peer: ``str`` for a text message, ``bytes`` for a binary one."""

_MAX_REASON_BYTES: Final = 123


def binary_view(data: object) -> Buffer:
    """A binary message as one flat buffer of its raw bytes, without a copy where it is
    contiguous; ``TypeError`` for an object that is not bytes-like (api.md decision 6)."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"Cannot send {type(data).__name__}: send str (text) or a bytes-like object (binary)."
        ) from None
    if view.c_contiguous and view.format in ("B", "b", "c") and view.ndim == 1:
        return view
    if view.c_contiguous:
        return view.cast("B")  # e.g. array("i"): its raw bytes
    return view.tobytes()


def check_close_args(code: int | None, reason: str | None) -> None:
    """Raise ``ValueError`` unless an endpoint may send this close code and reason.

    RFC 6455 §7.4: 1000-1003 and 1007-1014 (registered codes an endpoint may send), and
    3000-4999 (libraries and applications). The reason is at most 123 UTF-8 bytes
    (RFC 6455 §5.5: a control frame's payload is at most 125 bytes) and needs a code.
    """
    if code is None:
        if reason:
            raise ValueError("A close reason needs a close code.")
        return
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"A close code must be an int, not {type(code).__name__}.")
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise ValueError(
            f"Invalid close code {code}: use 1000-1003, 1007-1014 or 3000-4999 (RFC 6455 §7.4)."
        )
    if reason is not None and len(reason.encode("utf-8")) > _MAX_REASON_BYTES:
        raise ValueError(f"A close reason must be at most {_MAX_REASON_BYTES} UTF-8 bytes.")


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved: it is also reported elsewhere (the stream)."""
    if not future.cancelled():
        future.exception()


class StreamSubscription:
    """One subscription to a :class:`MessageStream`: an async iterator, or a set of callbacks.

    ``async for`` uses it as an iterator. :meth:`MessageStream.listen` returns it so that the
    callbacks can be paused, resumed and cancelled. Cancelling does not close the connection:
    close the sink for that.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: MessageStream) -> None:
        self._stream = stream

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        stream = self._stream
        buffer = stream._buffer
        if buffer:
            message = buffer.popleft()
            if stream._reading_paused and len(buffer) <= stream._low_water:
                stream._resume_reading()
            return message
        return await stream._wait_next()

    async def aclose(self) -> None:
        """Stop iterating: the same as :meth:`cancel`."""
        self.cancel()

    def cancel(self) -> None:
        """Stop receiving messages. Messages still buffered, and any that arrive, are dropped."""
        self._stream._cancel()

    def pause(self) -> None:
        """Stop calling ``on_data`` until :meth:`resume`; messages are buffered meanwhile.

        While paused, a full buffer pauses reading from the network (backpressure).
        """
        self._stream._paused = True

    def resume(self) -> None:
        """Deliver the buffered messages and call ``on_data`` again as messages arrive."""
        stream = self._stream
        if stream._paused:
            stream._paused = False
            stream._schedule_drain()

    @property
    def is_paused(self) -> bool:
        return self._stream._paused


class MessageStream:
    """The messages received from the peer, in order: ``str`` for text, ``bytes`` for binary.

    Single-subscription (stream guarantee 1): either iterate it with ``async for`` or call
    :meth:`listen` once; a second subscription raises :class:`StateError`.

    Received messages are buffered until they are consumed. When ``max_queue`` messages are
    waiting, the stream asks its connection to stop reading from the network, and to resume
    once the buffer is down to a quarter of that (backpressure). ``max_queue=None`` buffers
    without bound. Note that a peer's close frame is read only after the messages before it:
    a connection whose stream nobody consumes sees a close only while its buffer has room.

    The only error a stream raises is the connection failure, once, after which it ends.
    """

    __slots__ = (
        "__weakref__",
        "_before_wait",
        "_buffer",
        "_drain_scheduled",
        "_ended",
        "_error",
        "_high_water",
        "_loop",
        "_low_water",
        "_notified",
        "_on_data",
        "_on_done",
        "_on_error",
        "_on_idle",
        "_pause_reading",
        "_paused",
        "_reading_paused",
        "_resume_reading_cb",
        "_subscribed",
        "_waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
    ) -> None:
        if max_queue is not None and max_queue < 1:
            raise ValueError("max_queue must be at least 1, or None.")
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._buffer: deque[Message] = deque()
        self._high_water = max_queue
        self._low_water = 0 if max_queue is None else max_queue // 4
        self._ended = False  # no more messages will be added
        self._error: BaseException | None = None  # to raise once, after the buffer
        self._subscribed = False
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[Message], object] | None = None
        self._on_error: Callable[[BaseException], object] | None = None
        self._on_done: Callable[[], object] | None = None
        self._paused = False  # a listen() subscription is paused
        self._drain_scheduled = False
        self._notified = False  # on_error/on_done were called
        self._reading_paused = False
        self._pause_reading: Callable[[], None] | None = None
        self._resume_reading_cb: Callable[[], None] | None = None
        # Called once when an ``async for`` consumer next waits on an empty buffer (the
        # connection uses it to learn that the answers to a peer's last messages are out).
        self._on_idle: Callable[[], None] | None = None
        # Called each time an ``async for`` consumer is about to wait on an empty buffer (the
        # connection sends what the consumer's answers gathered).
        self._before_wait: Callable[[], None] | None = None

    # Consumer side.

    def __aiter__(self) -> StreamSubscription:
        return self._subscribe()

    def listen(
        self,
        on_data: Callable[[Message], object],
        on_error: Callable[[BaseException], object] | None = None,
        on_done: Callable[[], object] | None = None,
    ) -> StreamSubscription:
        """Call ``on_data(message)`` for each message; the fastest way to receive.

        Messages that arrive from the network are passed to ``on_data`` straight from the
        read, without a task switch; messages buffered before ``listen`` are delivered soon
        after it returns. ``on_error(error)`` is called if the connection could not be
        established (without ``on_error`` the error goes to the event loop's exception
        handler), and ``on_done()`` when the stream ends. An exception raised by a callback
        goes to the event loop's exception handler.
        """
        subscription = self._subscribe()
        self._on_data = on_data
        self._on_error = on_error
        self._on_done = on_done
        if self._buffer or self._ended:
            self._schedule_drain()
        return subscription

    @property
    def is_subscribed(self) -> bool:
        """Whether the stream has been iterated or listened to."""
        return self._subscribed

    def _subscribe(self) -> StreamSubscription:
        if self._subscribed:
            raise StateError("Stream has already been listened to.")
        self._subscribed = True
        return StreamSubscription(self)

    async def _wait_next(self) -> Message:
        buffer = self._buffer
        while True:
            if buffer:
                message = buffer.popleft()
                if self._reading_paused and len(buffer) <= self._low_water:
                    self._resume_reading()
                return message
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._ended:
                raise StopAsyncIteration
            on_idle = self._on_idle
            if on_idle is not None:
                self._on_idle = None
                on_idle()
                continue
            if self._waiter is not None:
                raise StateError("Another task is already waiting for the next message.")
            before_wait = self._before_wait
            if before_wait is not None:
                before_wait()
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    def _cancel(self) -> None:
        self._on_data = self._on_error = self._on_done = None
        self._notified = True
        self._discard()

    # Producer side, for the channel implementations.

    def _set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Give the stream the connection's ``pause_reading``/``resume_reading``."""
        self._pause_reading = pause
        self._resume_reading_cb = resume

    def _add(self, message: Message) -> None:
        """A message arrived (the hot path)."""
        if self._ended:
            return
        on_data = self._on_data
        if on_data is not None and not self._buffer and not self._paused:
            try:
                on_data(message)
            except Exception as exc:
                self._report(exc, "Exception in a WebSocket stream's on_data callback")
            return
        buffer = self._buffer
        buffer.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif on_data is not None:
            self._schedule_drain()
        high_water = self._high_water
        if high_water is not None and len(buffer) >= high_water and not self._reading_paused:
            pause = self._pause_reading
            if pause is not None:
                self._reading_paused = True
                pause()

    def _end(self, error: BaseException | None = None) -> None:
        """No more messages: the consumer gets the buffered ones, then ``error``, then the end."""
        if self._ended:
            return
        self._ended = True
        if error is not None and not self._notified:
            self._error = error
        self._resume_reading()
        self._wake()

    def _discard(self) -> None:
        """End the stream at once, dropping buffered messages (the user closed the sink)."""
        self._ended = True
        self._buffer.clear()
        self._error = None
        self._resume_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._on_data is not None or self._on_done is not None or self._on_error is not None:
            self._schedule_drain()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            resume = self._resume_reading_cb
            if resume is not None:
                resume()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and not self._paused and not self._notified:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Deliver buffered messages, then the end, to the ``listen`` callbacks."""
        self._drain_scheduled = False
        buffer = self._buffer
        while buffer and not self._paused:
            on_data = self._on_data
            if on_data is None:
                break
            message = buffer.popleft()
            if self._reading_paused and len(buffer) <= self._low_water:
                self._resume_reading()
            try:
                on_data(message)
            except Exception as exc:
                self._report(exc, "Exception in a WebSocket stream's on_data callback")
        if buffer or not self._ended or self._paused or self._notified:
            return
        self._notified = True
        error, self._error = self._error, None
        on_error, on_done = self._on_error, self._on_done
        self._on_data = self._on_error = self._on_done = None
        if error is not None:
            if on_error is not None:
                try:
                    on_error(error)
                except Exception as exc:
                    self._report(exc, "Exception in a WebSocket stream's on_error callback")
            else:
                self._report(error, "Unhandled error in a WebSocket stream (no on_error)")
        if on_done is not None:
            try:
                on_done()
            except Exception as exc:
                self._report(exc, "Exception in a WebSocket stream's on_done callback")

    def _report(self, exc: BaseException, message: str) -> None:
        self._loop.call_exception_handler({"message": message, "exception": exc})


class StreamSink(ABC):
    """Where a :class:`StreamChannel`'s outgoing values go (Dart's ``StreamSink``).

    :meth:`add` sends a value, :meth:`add_error` closes the channel with an error,
    :meth:`add_stream` forwards a whole async iterable, :meth:`close` closes the channel
    and returns :attr:`done`, which resolves once the channel is closed.
    """

    __slots__ = ()

    @abstractmethod
    def add(self, data: Any) -> None:
        """Send one value."""

    def add_error(self, error: BaseException) -> None:
        """Close the channel because of ``error``, which :attr:`done` then raises."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_error().")

    def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
        """Send every value of ``source``; the result resolves when it is exhausted."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_stream().")

    @abstractmethod
    def close(self) -> Awaitable[None]:
        """Close the channel; returns :attr:`done`."""

    @property
    @abstractmethod
    def done(self) -> Awaitable[None]:
        """Resolves once the channel is closed."""

    async def flush(self) -> None:  # noqa: B027 (optional to override)
        """Wait until the transport can take more data (its write buffer is below the limit)."""


class WebSocketSink(StreamSink):
    """Where messages to the peer go.

    :meth:`add` sends a message (``str`` as text, any bytes-like object as binary);
    :meth:`close` starts the closing handshake and returns :attr:`done`.
    """

    __slots__ = ()

    @abstractmethod
    def add(self, data: str | Buffer) -> None:
        """Send one message: ``str`` as a text message, a bytes-like object as binary.

        Raises ``TypeError`` for any other type, and :class:`StateError` after :meth:`close`
        (``"Cannot add event after closing."``) or while
        :meth:`add_stream` runs (``"Cannot add event while adding stream."``). Added after the
        peer closed the connection, a message is silently dropped. Added before the
        connection is open, it is sent, in order, once it is.
        """

    @abstractmethod
    def close(self, code: int | None = None, reason: str | None = None) -> asyncio.Future[None]:
        """Start the closing handshake (RFC 6455 §7.1.2) and return :attr:`done`.

        A plain method, not a coroutine: the close starts even if the result is not awaited.
        The stream ends at once. ``code`` must be one an endpoint may send (1000-1003,
        1007-1014, 3000-4999) and ``reason`` at most 123 UTF-8 bytes, else ``ValueError`` is
        raised and the connection stays open. Closing again returns :attr:`done`; closing
        while :meth:`add_stream` runs raises :class:`StateError`.
        """

    def add_stream(self, source: AsyncIterable[str | Buffer]) -> asyncio.Future[None]:
        """Send every message of ``source``; the result resolves when it is exhausted."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_stream().")

    @property
    @abstractmethod
    def done(self) -> asyncio.Future[None]:
        """Resolves once the connection is closed (or could not be opened).

        It fails only with the error given to :meth:`add_error` (or raised by the source of
        :meth:`add_stream`).
        """


_AFTER_CLOSING: Final = "Cannot add event after closing."
_WHILE_ADDING: Final = "Cannot add event while adding stream."


class GuaranteeSink(WebSocketSink):
    """A :class:`WebSocketSink` that keeps ``stream_channel``'s sink rules (Dart's
    ``_GuaranteeSink``), for channel implementations.

    Subclasses provide :meth:`_send` (one validated message), :meth:`_start_close` (close the
    connection, once) and optionally :meth:`_write_buffer_full` and :meth:`flush`; they call
    :meth:`_disconnect` when the peer ends the connection and :meth:`_finish` once it is over.

    - After :meth:`close`: :meth:`add` and :meth:`add_error` raise
      ``StateError("Cannot add event after closing.")``, :meth:`add_stream` raises
      ``StateError("Cannot add stream after closing.")``, :meth:`close` returns :attr:`done`.
    - While :meth:`add_stream` runs: ``"Cannot add event while adding stream."``,
      ``"Cannot add stream while adding stream."``, ``"Cannot close sink while adding
      stream."``.
    - After the peer closed (guarantee 3): everything added is dropped silently.
    - :meth:`add_error` closes the connection without a close code (the peer sees 1005), ends
      the stream and fails :attr:`done` with the error (guarantee 6); what is added after it
      is dropped, as after a peer's close, and :meth:`close` returns :attr:`done`.
    """

    __slots__ = (
        "_adding_stream",
        "_close_started",
        "_closed",
        "_disconnected",
        "_done",
        "_error",
        "_forwarding",
        "_loop",
        "_messages",
        "_stopping",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, messages: MessageStream) -> None:
        self._loop = loop
        self._messages = messages  # the channel's stream, ended when the sink closes
        self._closed = False  # by the user's close()
        self._close_started = False  # by close() or add_error(): _start_close was called
        self._adding_stream = False
        self._disconnected = False  # nothing more can be sent
        self._error: BaseException | None = None  # from add_error, for done
        self._forwarding: asyncio.Task[None] | None = None
        self._stopping = False
        self._done: asyncio.Future[None] = loop.create_future()

    # Hooks.

    @abstractmethod
    def _send(self, data: str | Buffer) -> None:
        """Send one message once the state allows it: raise ``TypeError`` for an unsupported
        type, drop it after a disconnect, keep it until the connection opens."""

    @abstractmethod
    def _start_close(self, code: int | None, reason: str | None) -> None:
        """Close the connection (now, or once it opens). Called at most once."""

    def _write_buffer_full(self) -> bool:
        """Whether :meth:`add_stream` should ``await flush()`` before the next message."""
        return False

    def _adding_stream_changed(self) -> None:
        """:meth:`add_stream` started or finished (a fast path may need to know)."""

    # The sink.

    def add(self, data: str | Buffer) -> None:
        if self._closed:
            raise StateError(_AFTER_CLOSING)
        if self._adding_stream:
            raise StateError(_WHILE_ADDING)
        self._send(data)

    def add_error(self, error: BaseException) -> None:
        """Close the connection because of ``error``: the peer sees a close frame without a
        code (1005), the stream ends, and :attr:`done` fails with ``error``. Nothing is sent
        about the error itself. Dropped if the peer already closed; what is added afterwards
        is dropped too."""
        if not isinstance(error, BaseException):
            raise TypeError(f"add_error() takes an exception, not {type(error).__name__}.")
        if self._closed:
            raise StateError(_AFTER_CLOSING)
        if self._adding_stream:
            raise StateError(_WHILE_ADDING)
        self._fail(error)

    def add_stream(self, source: AsyncIterable[str | Buffer]) -> asyncio.Future[None]:
        """Send every message of the async iterable ``source``, in order.

        A plain method: the forwarding starts at once, in a task that the result (an
        :class:`asyncio.Task`) awaits; it resolves when ``source`` is exhausted. Between
        messages it waits for :meth:`flush` when the write buffer is full (backpressure).
        An exception raised by ``source`` (or a message of an unsupported type) acts like
        :meth:`add_error` and the result still resolves normally. If the connection closes
        meanwhile, forwarding stops, ``source`` is closed and the result resolves. Nothing
        else may be added, and the sink cannot be closed, until the result resolves.
        """
        if self._closed:
            raise StateError("Cannot add stream after closing.")
        if self._adding_stream:
            raise StateError("Cannot add stream while adding stream.")
        iterator = aiter(source)  # TypeError now for a source that is not async-iterable
        if self._disconnected:
            _close_iterator(iterator, self._loop)
            future: asyncio.Future[None] = self._loop.create_future()
            future.set_result(None)
            return future
        self._adding_stream = True
        self._adding_stream_changed()
        task = self._loop.create_task(self._forward(iterator))
        self._forwarding = task
        return task

    def close(self, code: int | None = None, reason: str | None = None) -> asyncio.Future[None]:
        if self._adding_stream:
            raise StateError("Cannot close sink while adding stream.")
        if self._closed:
            return self._done
        check_close_args(code, reason)
        self._closed = True
        if not self._disconnected:  # else the stream keeps what the peer sent before its close
            self._messages._discard()  # guarantee 2 (this may finish a deferred close)
            if not self._disconnected:
                self._close_started = True
                self._start_close(code, reason)
        return self._done

    @property
    def done(self) -> asyncio.Future[None]:
        return self._done

    # For the channel.

    def _fail(self, error: BaseException) -> None:
        """Dart's ``_addError`` without foreign errors: like both directions disconnecting."""
        if self._disconnected:
            return  # guarantee 3: the peer closed; nothing is sent any more
        self._error = error
        self._messages._discard()
        if not self._disconnected:
            self._close_started = True
            self._start_close(None, None)
            GuaranteeSink._disconnect(self)  # what is added from now on is dropped

    def _disconnect(self) -> None:
        """The connection is closing: drop whatever is added from now on, stop add_stream."""
        self._disconnected = True
        task = self._forwarding
        if task is not None and not task.done() and task is not asyncio.current_task():
            self._stopping = True
            task.cancel()

    def _raise_if_disconnected(self) -> None:
        """For :meth:`flush`: no message can be sent any more, so waiting is over."""
        if self._disconnected:
            raise WebSocketConnectionClosed(
                "the connection is closed: messages added now are dropped; stop sending "
                "(the channel's close_code and close_reason say why)"
            )

    def _finish(self) -> None:
        """The connection is over: resolve :attr:`done` (with the add_error error, if any)."""
        self._disconnect()
        done = self._done
        if not done.done():
            if self._error is not None:
                done.set_exception(self._error)
            else:
                done.set_result(None)

    async def _forward(self, iterator: AsyncIterator[str | Buffer]) -> None:
        error: BaseException | None = None
        exhausted = False
        try:
            while not self._disconnected:
                try:
                    message = await anext(iterator)
                except StopAsyncIteration:
                    exhausted = True
                    break
                if self._disconnected:
                    break
                self._send(message)
                if self._write_buffer_full():
                    with contextlib.suppress(WebSocketConnectionClosed):
                        await self.flush()  # raises once disconnected: the loop ends
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:
            error = exc
        finally:
            self._forwarding = None
            self._stopping = False
            self._adding_stream = False
            self._adding_stream_changed()
        if not exhausted:
            await _aclose(iterator)
        if error is not None:
            self._fail(error)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that was not exhausted (an async generator, a subscription)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):  # the source is abandoned: its errors are moot
            await aclose()


def _close_iterator(iterator: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> None:
    if getattr(iterator, "aclose", None) is not None:
        spawn(loop, _aclose(iterator))


_background: set[asyncio.Task[Any]] = set()


def spawn(
    loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    """Run ``coroutine`` in a task that is kept alive until it finishes (asyncio keeps only
    weak references to tasks)."""
    task = loop.create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


class StreamChannel(ABC):
    """A two-way channel: :attr:`stream` in, :attr:`sink` out (Dart's ``StreamChannel``).

    Every :class:`WebSocketChannel` is one. The methods here (Dart's ``StreamChannelMixin``)
    build plain :class:`StreamChannel` objects from it: they keep guarantee 2 (closing the
    sink ends the stream at once), but not the WebSocket-specific API (``protocol``,
    ``close_code``, ``ready``), which stays on the original channel.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def stream(self) -> AsyncIterable[Any]:
        """The incoming values (single-subscription)."""

    @property
    @abstractmethod
    def sink(self) -> StreamSink:
        """Where outgoing values go."""

    async def pipe(self, other: StreamChannel) -> None:
        """Connect this channel to ``other`` until both directions have ended.

        This stream goes into ``other.sink`` and ``other.stream`` into this sink, each with
        :meth:`StreamSink.add_stream`; each sink is closed when its source ends. Raises the
        first error a sink's :attr:`~StreamSink.done` failed with, once both have finished.
        """
        results = await asyncio.gather(
            _pipe_into(self.stream, other.sink),
            _pipe_into(other.stream, self.sink),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def transform(self, transformer: StreamChannelTransformer) -> StreamChannel:
        """``transformer.bind(self)``: e.g. ``channel.transform(json_document)``."""
        return transformer.bind(self)

    def transform_stream(
        self, transformer: StreamTransformer | Callable[[AsyncIterable[Any]], AsyncIterable[Any]]
    ) -> StreamChannel:
        """A channel whose stream is ``transformer.bind(self.stream)`` (or
        ``transformer(self.stream)`` for a function); the sink is unchanged."""
        return self.change_stream(_binder(transformer))

    def transform_sink(
        self, transformer: StreamSinkTransformer | Callable[[StreamSink], StreamSink]
    ) -> StreamChannel:
        """A channel whose sink is ``transformer.bind(self.sink)`` (or
        ``transformer(self.sink)``); the stream is unchanged."""
        return self.change_sink(_binder(transformer))

    def change_stream(
        self, change: Callable[[AsyncIterable[Any]], AsyncIterable[Any]]
    ) -> StreamChannel:
        """A channel with the stream ``change(self.stream)`` and this sink, with the close
        guarantee: closing the sink ends the new stream at once."""
        return with_close_guarantee(change(self.stream), self.sink)

    def change_sink(self, change: Callable[[StreamSink], StreamSink]) -> StreamChannel:
        """A channel with this stream and the sink ``change(self.sink)``, with the close
        guarantee: closing the new sink ends the stream at once."""
        return with_close_guarantee(self.stream, change(self.sink))


async def _pipe_into(stream: AsyncIterable[Any], sink: StreamSink) -> None:
    await sink.add_stream(stream)
    await sink.close()


def _binder(transformer: Any) -> Callable[[Any], Any]:
    bind = getattr(transformer, "bind", None)
    if bind is not None:
        return bind  # type: ignore[no-any-return]
    if callable(transformer):
        return transformer  # type: ignore[no-any-return]
    raise TypeError(f"A transformer has a bind() method or is callable, not {transformer!r}.")


class StreamTransformer(Protocol):
    """Turns a stream into another (Dart's ``StreamTransformer``)."""

    def bind(self, stream: AsyncIterable[Any], /) -> AsyncIterable[Any]: ...


class StreamSinkTransformer(Protocol):
    """Turns a sink into another (Dart's ``StreamSinkTransformer``)."""

    def bind(self, sink: StreamSink, /) -> StreamSink: ...


class StreamChannelTransformer:
    """Transforms both halves of a channel (Dart's ``StreamChannelTransformer``).

    ``stream_transformer`` maps the incoming stream, ``sink_transformer`` the outgoing sink
    (each an object with ``bind()`` or a function). :meth:`bind` returns a channel with the
    close guarantee. :meth:`from_codec` builds one from two functions, as
    :data:`json_document` does.
    """

    __slots__ = ("_bind_sink", "_bind_stream")

    def __init__(
        self,
        stream_transformer: StreamTransformer | Callable[[AsyncIterable[Any]], AsyncIterable[Any]],
        sink_transformer: StreamSinkTransformer | Callable[[StreamSink], StreamSink],
    ) -> None:
        self._bind_stream = _binder(stream_transformer)
        self._bind_sink = _binder(sink_transformer)

    @classmethod
    def from_codec(
        cls, *, decode: Callable[[Any], Any], encode: Callable[[Any], Any]
    ) -> StreamChannelTransformer:
        """Decode each incoming value with ``decode``; encode each outgoing one with
        ``encode`` (its errors are raised by ``add``; ``decode``'s by the iteration, for that
        value only)."""
        return cls(
            lambda stream: MappedStream(stream, decode),
            lambda sink: MappedSink(sink, encode),
        )

    def bind(self, channel: StreamChannel) -> StreamChannel:
        stream = self._bind_stream(channel.stream)
        return with_close_guarantee(stream, self._bind_sink(channel.sink))


class MappedStream:
    """``source`` with ``function`` applied to each value (lazily, as they are taken).

    An exception raised by ``function`` is raised for that value only: the iteration can go
    on. Single-subscription when ``source`` is.
    """

    __slots__ = ("_function", "_source")

    def __init__(self, source: AsyncIterable[Any], function: Callable[[Any], Any]) -> None:
        self._source = source
        self._function = function

    def __aiter__(self) -> _MappedIterator:
        return _MappedIterator(aiter(self._source), self._function)


class _MappedIterator:
    __slots__ = ("_function", "_iterator")

    def __init__(self, iterator: AsyncIterator[Any], function: Callable[[Any], Any]) -> None:
        self._iterator = iterator
        self._function = function

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        return self._function(await anext(self._iterator))

    async def aclose(self) -> None:
        await _aclose(self._iterator)


class MappedSink(StreamSink):
    """A sink that passes each value through ``function`` before adding it to ``sink``.

    Everything else (``add_error``, ``close``, ``done``, ``flush``) goes to ``sink``;
    ``close(code, reason)`` too when ``sink`` is a :class:`WebSocketSink`.
    """

    __slots__ = ("_function", "_sink")

    def __init__(self, sink: StreamSink, function: Callable[[Any], Any]) -> None:
        self._sink = sink
        self._function = function

    def add(self, data: Any) -> None:
        self._sink.add(self._function(data))

    def add_error(self, error: BaseException) -> None:
        self._sink.add_error(error)

    def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
        return self._sink.add_stream(MappedStream(source, self._function))

    def close(self, *args: Any) -> Awaitable[None]:
        return self._sink.close(*args)

    @property
    def done(self) -> Awaitable[None]:
        return self._sink.done

    async def flush(self) -> None:
        await self._sink.flush()


def with_close_guarantee(stream: AsyncIterable[Any], sink: StreamSink) -> StreamChannel:
    """A channel of ``stream`` and ``sink`` where closing the sink ends the stream before it
    yields anything more, however the stream was derived (guarantee 2; Dart's
    ``StreamChannel.withCloseGuarantee``)."""
    return _CloseGuaranteeChannel(stream, sink)


class _CloseGuaranteeChannel(StreamChannel):
    __slots__ = ("_sink", "_stream")

    def __init__(self, stream: AsyncIterable[Any], sink: StreamSink) -> None:
        guarded = _GuardedStream(stream)
        self._stream = guarded
        self._sink = _GuardedSink(sink, guarded)

    @property
    def stream(self) -> _GuardedStream:
        return self._stream

    @property
    def sink(self) -> StreamSink:
        return self._sink

    def __repr__(self) -> str:
        return f"<StreamChannel of {self._sink._sink!r}>"


class _GuardedStream:
    """A single-subscription stream that ends as soon as its channel's sink is closed."""

    __slots__ = ("_closed", "_closing", "_iterator", "_pending", "_source", "_subscribed")

    def __init__(self, source: AsyncIterable[Any]) -> None:
        self._source = source
        self._subscribed = False
        self._closed = False
        self._iterator: AsyncIterator[Any] | None = None
        self._pending: asyncio.Future[Any] | None = None  # the source's next value
        self._closing: asyncio.Future[None] | None = None  # resolved by _close()

    def __aiter__(self) -> _GuardedIterator:
        if self._subscribed:
            raise StateError("Stream has already been listened to.")
        self._subscribed = True
        return _GuardedIterator(self)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        elif self._iterator is not None:
            _close_iterator(self._iterator, asyncio.get_running_loop())

    async def _next(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = aiter(self._source)
        if type(iterator) is StreamSubscription and iterator._stream._buffer:
            return await iterator.__anext__()  # buffered: returns without suspending
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(anext(iterator))
        closing = self._closing
        if closing is None:
            closing = self._closing = loop.create_future()
        await asyncio.wait((pending, closing), return_when=asyncio.FIRST_COMPLETED)
        if self._closed or not pending.done():
            raise StopAsyncIteration
        self._pending = None
        return pending.result()


class _GuardedIterator:
    __slots__ = ("_stream",)

    def __init__(self, stream: _GuardedStream) -> None:
        self._stream = stream

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return self._stream._next()

    async def aclose(self) -> None:
        self._stream._close()


class _GuardedSink(StreamSink):
    __slots__ = ("_sink", "_stream")

    def __init__(self, sink: StreamSink, stream: _GuardedStream) -> None:
        self._sink = sink
        self._stream = stream

    def add(self, data: Any) -> None:
        self._sink.add(data)

    def add_error(self, error: BaseException) -> None:
        self._sink.add_error(error)

    def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
        return self._sink.add_stream(source)

    def close(self, *args: Any) -> Awaitable[None]:
        done = self._sink.close(*args)
        self._stream._close()
        return done

    @property
    def done(self) -> Awaitable[None]:
        return self._sink.done

    async def flush(self) -> None:
        await self._sink.flush()


json_document: Final = StreamChannelTransformer.from_codec(decode=json.loads, encode=json.dumps)
"""Decodes each incoming message as JSON (``json.loads``) and encodes each value added to the
sink as a JSON text message (``json.dumps``). Invalid JSON raises ``json.JSONDecodeError``
for that message; a value that cannot be encoded raises ``TypeError`` from ``add``."""


class WebSocketChannel(StreamChannel):
    """A two-way WebSocket connection: :attr:`stream` in, :attr:`sink` out.

    The channel is awaitable (``channel = await connect(url)`` waits for :attr:`ready`) and
    an async context manager (waits for :attr:`ready`, closes the sink on exit).
    """

    __slots__ = ()

    @property
    @abstractmethod
    def protocol(self) -> str | None:
        """The subprotocol the server chose, or ``None`` (none chosen, or not yet open)."""

    @property
    @abstractmethod
    def close_code(self) -> int | None:
        """The code of the peer's close frame (RFC 6455 §7.1.5); ``None`` before.

        1005 when the frame had no code; 1006 when the connection was lost without one; the
        code this side sent when it failed the connection (1002, 1007, 1009...).
        """

    @property
    @abstractmethod
    def close_reason(self) -> str | None:
        """The reason of the peer's close frame (RFC 6455 §7.1.6), ``''`` if none; ``None``
        before."""

    @property
    @abstractmethod
    def ready(self) -> asyncio.Future[None]:
        """Resolves when the connection is open; fails if it could not be opened.

        With :class:`~wschannel.WebSocketChannelException`, or ``TimeoutError`` for a
        connect timeout. The same error is raised once by :attr:`stream`, so an unawaited
        ``ready`` does not log "exception was never retrieved".
        """

    @property
    @abstractmethod
    def stream(self) -> MessageStream:
        """The messages from the peer (single-subscription)."""

    @property
    @abstractmethod
    def sink(self) -> WebSocketSink:
        """Where messages to the peer go."""

    def __await__(self) -> Generator[Any, None, Self]:
        yield from self.ready.__await__()
        return self

    async def __aenter__(self) -> Self:
        await self.ready
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.sink.close()

    @staticmethod
    def sign_key(key: str) -> str:
        """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
        from ._wschannel import sign_key

        return sign_key(key)

    @classmethod
    def connect(cls, url: str, *, protocols: Iterable[str] | None = None) -> WebSocketChannel:
        """Connect to ``url`` with the platform's implementation; see :func:`connect`."""
        return connect(url, protocols=protocols)

    @classmethod
    def over(
        cls,
        reader: Any,
        writer: Any,
        *,
        protocol: str | None = None,
        ping_interval: float | None = None,
        server_side: bool = True,
        **options: Any,
    ) -> WebSocketChannel:
        """WebSocket framing over a byte stream whose HTTP upgrade is already done.

        Dart 2.x's ``WebSocketChannel(StreamChannel<List<int>>, ...)``: ``reader`` and
        ``writer`` are the two halves of the byte stream (asyncio streams, an anyio/trio
        byte stream, a pipe...), ``protocol`` the subprotocol that handshake chose (returned
        by :attr:`protocol`), ``ping_interval`` enables keepalive, ``server_side`` says which
        role this end plays (a server sends unmasked frames, a client masked ones; RFC 6455
        §5.3). The channel is open at once. See :func:`wschannel.bytestream.over`, which
        this calls, for the other ``options``.
        """
        bytestream: Any = importlib.import_module("wschannel.bytestream")
        channel: WebSocketChannel = bytestream.over(
            reader,
            writer,
            protocol=protocol,
            ping_interval=ping_interval,
            server_side=server_side,
            **options,
        )
        return channel


class StoredWebSocketChannel(WebSocketChannel):
    """A channel that keeps its state in attributes, which its members report as they are.

    The implementations (:mod:`~wschannel.adapter`, :mod:`~wschannel.io`,
    :mod:`~wschannel.html`, :mod:`~wschannel.bytestream`) set these attributes; this class
    answers for them.
    """

    __slots__ = ("_close_code", "_close_reason", "_protocol", "_ready", "_sink", "_stream")

    _protocol: str | None
    _close_code: int | None
    _close_reason: str | None
    _ready: asyncio.Future[None]
    _stream: MessageStream
    _sink: WebSocketSink

    @property
    def protocol(self) -> str | None:
        return self._protocol

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def ready(self) -> asyncio.Future[None]:
        return self._ready

    @property
    def stream(self) -> MessageStream:
        return self._stream

    @property
    def sink(self) -> WebSocketSink:
        return self._sink

    def __repr__(self) -> str:
        if not self._ready.done():
            state = "connecting"
        elif self._sink.done.done():
            state = f"closed {self._close_code}"
        else:
            state = "open"
        return f"<{type(self).__name__} {state}>"


def connect(url: str, *, protocols: Iterable[str] | None = None) -> WebSocketChannel:
    """Connect to a ``ws://`` or ``wss://`` URL; returns the channel at once.

    The connection opens in the background and :attr:`WebSocketChannel.ready` reports how
    that went. Picks :class:`~wschannel.io.IOWebSocketChannel` on CPython and the browser's
    WebSocket under Pyodide. Needs a running event loop (``wschannel.sync`` blocks instead).
    """
    if sys.platform == "emscripten" or "pyodide" in sys.modules:
        from .html import HtmlWebSocketChannel

        return HtmlWebSocketChannel.connect(url, protocols=protocols)
    from .io import IOWebSocketChannel

    return IOWebSocketChannel.connect(url, protocols=protocols)
