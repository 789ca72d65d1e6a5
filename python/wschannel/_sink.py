"""The WebSocket sink: :class:`WebSocketSink`; :class:`GuaranteeSink`, which keeps
``stream_channel``'s sink rules for every channel implementation; and :class:`PendingSink`,
which keeps what is added until the platform's connection opens (the sink of the adapter and
of the browser's channel).

Pure Python (no engine), shared by every asyncio channel, the browser's included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._message import binary_view, check_close_args, settle
from ._stream import MessageStream
from ._tasks import _aclose, _close_iterator, spawn
from .exceptions import StateError, WebSocketConnectionClosed
from .stream_channel import StreamSink

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["GuaranteeSink", "PendingSink", "Target", "WebSocketSink", "report_unsent"]

client_logger = logging.getLogger("wschannel.client")


def report_unsent(count: int, ready: asyncio.Future[None]) -> None:
    """Warn (``wschannel.client``, WARNING) that ``count`` messages added before the
    connection opened are dropped unsent: it failed to open (``ready``'s error says why), or
    it was given up first (the program ended, the attempt was cancelled)."""
    if not count:
        return
    error = ready.exception() if ready.done() and not ready.cancelled() else None
    why = "the connection was given up before it opened" if error is None else str(error)
    client_logger.warning(
        "%d message%s added before the connection opened %s dropped unsent: %s",
        count,
        "" if count == 1 else "s",
        "was" if count == 1 else "were",
        why,
    )


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
        "_fragmenting",
        "_held",
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
        # send_fragments(): one fragmented message at a time (see _fragmented); what is
        # added meanwhile waits in _held and follows it.
        self._fragmenting = False
        self._held: list[str | bytes] = []

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

    # send_fragments(), for the channels that have it.

    def _check_fragments(self) -> None:
        """Raise unless a message may be sent in fragments now."""
        if self._closed:
            raise StateError("Cannot send fragments after closing.")
        if self._adding_stream:
            raise StateError("Cannot send fragments while adding stream.")

    async def _fragmented(self, sending: Awaitable[None]) -> None:
        """Await ``sending``, which writes one message in fragments (the channel's turn for
        it taken): messages added meanwhile wait (a copy of each, in :meth:`_send`, which
        appends to ``_held`` while ``_fragmenting``) and are sent after it, in order."""
        self._fragmenting = True
        self._adding_stream_changed()
        try:
            await sending
        finally:
            self._fragmenting = False
            self._adding_stream_changed()
            held, self._held = self._held, []
            for message in held:
                self._send(message)

    def _close_midway(self, reason: str) -> None:
        """A message in fragments cannot be finished: close with 1011, as :meth:`add_error`
        closes (the peer must not take a part of the message for the whole)."""
        self._messages._discard()
        if not self._disconnected and not self._close_started:
            self._close_started = True
            self._start_close(1011, reason)
            GuaranteeSink._disconnect(self)

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
        settle(self._done, self._error)

    async def _send_all(self, iterator: AsyncIterator[str | Buffer]) -> bool:
        """Send what ``iterator`` gives until it is exhausted (True) or the connection
        closes (False), waiting while the write buffer is full."""
        while not self._disconnected:
            try:
                message = await anext(iterator)
            except StopAsyncIteration:
                return True
            if self._disconnected:
                break
            self._send(message)
            if self._write_buffer_full():
                with contextlib.suppress(WebSocketConnectionClosed):
                    await self.flush()  # raises once disconnected: the loop ends
        return False

    async def _forward(self, iterator: AsyncIterator[str | Buffer]) -> None:
        error: BaseException | None = None
        exhausted = False
        try:
            exhausted = await self._send_all(iterator)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:
            error = exc
        finally:
            self._stopping = False
            self._stop_adding()
        await self._forward_ended(iterator, exhausted, error)

    def _stop_adding(self) -> None:
        """add_stream() is over: add, close and another add_stream work again."""
        self._forwarding = None
        self._adding_stream = False
        self._adding_stream_changed()

    async def _forward_ended(
        self, iterator: AsyncIterator[str | Buffer], exhausted: bool, error: BaseException | None
    ) -> None:
        """Close a source that was not exhausted; fail the sink with its error, if any."""
        if not exhausted:
            await _aclose(iterator)
        if error is not None:
            self._fail(error)


class Target(Protocol):
    """What a :class:`PendingSink` sends on: a low-level socket
    (:class:`~wschannel._websocket.WebSocket`'s sending side), or the browser's WebSocket
    wrapped as one (``wschannel.html``).

    ``send_text`` and ``send_bytes`` send one message now (they may raise
    :class:`WebSocketConnectionClosed` once either side has closed); ``close(code, reason)``
    starts the closing handshake: a coroutine that returns once it is over, or a plain
    call whose end the channel learns from its own events. Optional:
    ``write_buffer_full`` (a bool) and ``async flush()`` (backpressure).
    """

    def send_text(self, text: str, /) -> None: ...
    def send_bytes(self, data: bytes, /) -> None: ...
    def close(self, code: int | None, reason: str | None, /) -> Awaitable[None] | None: ...


class PendingSink(GuaranteeSink):
    """The one sink of the platform wrappers (the adapter, ASGI through it, the browser):
    a :class:`GuaranteeSink` over a :class:`Target` that may not be open yet.

    Until the channel calls :meth:`_open` with the target, messages added are kept (a copy
    of each bytes-like one) and a close is remembered; :meth:`_open` sends them in order,
    then starts the close. If the connection never opens, the channel calls
    :meth:`_finish` and they are dropped, :attr:`done` resolving. :meth:`flush` waits for
    ``ready`` first.

    The close: ``closing()`` (the channel's, optional) is called when it starts, open or
    not (the browser's channel times it from there); the target's ``close`` is called once
    it is open. With ``closed`` (a low-level socket, whose ``close`` returns when the
    handshake is over), that ``close`` is awaited in a task, its error (other than
    :class:`WebSocketConnectionClosed`: closed already) kept for :attr:`done`, then
    ``closed(target)`` is called and the sink finished. Without (the browser's), ``close``
    only starts closing, and the channel finishes the sink when its events say so.
    """

    __slots__ = ("_close_args", "_closed_hook", "_closing_hook", "_pending", "_ready", "_target")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        messages: MessageStream,
        ready: asyncio.Future[None],
        *,
        closing: Callable[[], None] | None = None,
        closed: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(loop, messages)
        self._ready = ready  # the channel's: resolves when the connection is open
        self._target: Target | None = None  # once open, until the close starts
        self._pending: list[str | bytes] = []  # added before that
        self._close_args: tuple[int | None, str | None] | None = None  # a close issued before
        self._closing_hook = closing
        self._closed_hook = closed

    # GuaranteeSink's hooks.

    def _send(self, data: str | Buffer) -> None:
        if isinstance(data, str):
            message: str | bytes = data
        elif type(data) is bytes:
            message = data
        else:
            message = bytes(binary_view(data))  # a copy: the caller may change it later
        if self._disconnected:
            return
        target = self._target
        if target is None:
            self._pending.append(message)
            return
        try:
            if isinstance(message, str):
                target.send_text(message)
            else:
                target.send_bytes(message)
        except WebSocketConnectionClosed:
            pass  # the peer closed; the channel learns it from the target's events

    def _start_close(self, code: int | None, reason: str | None) -> None:
        if self._closing_hook is not None:
            self._closing_hook()
        target = self._target
        if target is None:
            self._close_args = (code, reason)  # started once open
            return
        self._close_target(target, code, reason)

    def _write_buffer_full(self) -> bool:
        target = self._target
        if target is None:
            return not self._disconnected  # flush() waits for ready
        return bool(getattr(target, "write_buffer_full", False))

    async def flush(self) -> None:
        ready = self._ready
        if not ready.done():
            await asyncio.wait([ready])
        flush = getattr(self._target, "flush", None)
        if flush is not None:
            await flush()

    # For the channel.

    def _open(self, target: Target) -> None:
        """The connection is open: send what was kept, in order, then start the close."""
        self._target = target
        pending, self._pending = self._pending, []
        for message in pending:
            self._send(message)
        close_args = self._close_args
        if close_args is not None and self._target is target:
            self._close_target(target, *close_args)

    def _close_target(self, target: Target, code: int | None, reason: str | None) -> None:
        """Close ``target`` (once: the sink no longer holds it)."""
        self._target = None
        if self._closed_hook is None:
            target.close(code, reason)  # the channel finishes the sink when it is over
        else:
            spawn(self._loop, self._close_and_finish(target, code, reason))

    async def _close_and_finish(self, target: Target, code: int | None, reason: str | None) -> None:
        try:
            closing = target.close(code, reason)
            if closing is not None:
                await closing
        except WebSocketConnectionClosed:
            pass  # closing an already closed connection is not an error
        except Exception as exc:
            if self._error is None:
                self._error = exc
        assert self._closed_hook is not None
        self._closed_hook(target)
        self._finish()

    def _disconnect(self) -> None:
        super()._disconnect()
        self._target = None
        report_unsent(len(self._pending), self._ready)
        self._pending = []
