"""The channel, its sink and its message stream: what every ``wschannel`` channel looks like.

Pure Python (no engine), so that every implementation shares it, including the browser one.

A :class:`WebSocketChannel` is a pair: :attr:`~WebSocketChannel.stream`, the messages from the
peer, and :attr:`~WebSocketChannel.sink`, where messages to the peer go. It keeps
``stream_channel``'s guarantees:

1. The stream is single-subscription: :class:`MessageStream` can be iterated or listened to once.
2. Closing the sink ends the stream at once: messages still buffered are dropped.
3. Once the stream has ended because of the peer, the sink silently drops what is added.
4. The same holds when the stream ends before anyone listens.
5. Cancelling a subscription does not close the connection; a close from the peer is still
   handled (and ``close_code`` set).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeAlias

from .exceptions import StateError

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "Message",
    "MessageStream",
    "StreamSubscription",
    "WebSocketChannel",
    "WebSocketSink",
    "check_close_args",
    "connect",
]

Message: TypeAlias = str | bytes
"""A message from the peer: ``str`` for a text message, ``bytes`` for a binary one."""

DEFAULT_MAX_QUEUE: Final = 16
"""How many received messages a stream buffers before reading from the network pauses."""

_MAX_REASON_BYTES: Final = 123


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
            if self._waiter is not None:
                raise StateError("Another task is already waiting for the next message.")
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


class WebSocketSink(ABC):
    """Where messages to the peer go.

    :meth:`add` sends a message (``str`` as text, any bytes-like object as binary);
    :meth:`close` starts the closing handshake and returns :attr:`done`.
    """

    __slots__ = ()

    @abstractmethod
    def add(self, data: str | Buffer) -> None:
        """Send one message: ``str`` as a text message, a bytes-like object as binary.

        Raises ``TypeError`` for any other type, and :class:`StateError` after :meth:`close`.
        Added after the peer closed the connection, a message is silently dropped. Added
        before the connection is open, it is sent, in order, once it is.
        """

    @abstractmethod
    def close(self, code: int | None = None, reason: str | None = None) -> asyncio.Future[None]:
        """Start the closing handshake (RFC 6455 §7.1.2) and return :attr:`done`.

        A plain method, not a coroutine: the close starts even if the result is not awaited.
        The stream ends at once. ``code`` must be one an endpoint may send (1000-1003,
        1007-1014, 3000-4999) and ``reason`` at most 123 UTF-8 bytes, else ``ValueError`` is
        raised and the connection stays open. Closing again returns :attr:`done`.
        """

    @property
    @abstractmethod
    def done(self) -> asyncio.Future[None]:
        """Resolves once the connection is closed (or could not be opened); never fails."""

    async def flush(self) -> None:  # noqa: B027 (optional to override)
        """Wait until the transport can take more data (its write buffer is below the limit)."""


class WebSocketChannel(ABC):
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


def connect(url: str, *, protocols: Iterable[str] | None = None) -> WebSocketChannel:
    """Connect to a ``ws://`` or ``wss://`` URL; returns the channel at once.

    The connection opens in the background and :attr:`WebSocketChannel.ready` reports how
    that went. Picks :class:`~wschannel.io.IOWebSocketChannel` on CPython and the browser's
    WebSocket under Pyodide. Needs a running event loop (``wschannel.sync`` blocks instead).
    """
    if sys.platform == "emscripten":
        html: Any = importlib.import_module("wschannel.html")
        channel: WebSocketChannel = html.HtmlWebSocketChannel.connect(url, protocols=protocols)
        return channel
    from .io import IOWebSocketChannel

    return IOWebSocketChannel.connect(url, protocols=protocols)
