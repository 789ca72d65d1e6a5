"""The message stream: what a channel's ``stream`` is (:class:`MessageStream`).

Single-subscription, buffered, with backpressure towards the connection that feeds it. Pure
Python (no engine), shared by every asyncio channel, the browser's included.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from ._message import Message
from .defaults import DEFAULT_MAX_QUEUE
from .exceptions import StateError

__all__ = ["ON_DATA_FAILED", "MessageStream", "StreamSubscription"]

#: What the loop's exception handler is told when a ``listen`` callback raises.
ON_DATA_FAILED = "Exception in a WebSocket stream's on_data callback"

if sys.version_info >= (3, 12):
    _current_task = asyncio.current_task  # in C
else:  # the same lookup as asyncio.current_task(loop) without its Python frame
    _current_task = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]


class _Waiter(asyncio.Future[None]):
    """What an ``async for`` consumer awaits while the buffer is empty: a future whose waiting
    task is woken at once by the message's arrival.

    An asyncio future schedules its done callbacks, so a task waiting on one resumes on the
    event loop's next turn: a second turn of the loop for each message (a ``select`` and the
    loop's bookkeeping). This future keeps the callback its task registers (the task's
    wakeup) and, when the message arrives in one of the loop's callbacks (a socket read; no
    task running), :meth:`MessageStream._add` runs it right there, as
    :meth:`MessageStream.listen` runs ``on_data``. From inside a task (a driver that reads in
    a task), at the stream's end, when cancelled, or for any further callback, it behaves as
    an ordinary future.
    """

    # No __init__ of its own (one fewer call per wait): whoever makes one sets _wakeup to
    # None; the first add_done_callback sets both.
    __slots__ = ("_wakeup", "_wakeup_context")
    _wakeup: Callable[[Any], object] | None
    _wakeup_context: contextvars.Context

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        if self._wakeup is None and not self.done():
            self._wakeup = fn
            self._wakeup_context = context if context is not None else contextvars.copy_context()
        else:
            super().add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        removed = super().remove_done_callback(fn)
        wakeup = self._wakeup
        if wakeup is not None and wakeup == fn:
            self._wakeup = None
            removed += 1
        return removed

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg):
            return False
        self._schedule_wakeup()
        return True

    def _schedule_wakeup(self) -> None:
        """The kept callback, the ordinary way: on the loop's next turn."""
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            self.get_loop().call_soon(wakeup, self, context=self._wakeup_context)

    def wake_later(self) -> None:
        """Resolve, the ordinary way: the waiting task resumes on the loop's next turn."""
        if not self.done():
            self.set_result(None)
            self._schedule_wakeup()


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
        # One coroutine per message: the wait is written out here rather than awaited from
        # a helper coroutine.
        stream = self._stream
        buffer = stream._buffer
        while True:
            if buffer:
                message = buffer.popleft()
                if stream._reading_paused and len(buffer) <= stream._low_water:
                    stream._resume_reading()
                return message
            if stream._on_answered is not None:
                stream._answered()
                continue
            if stream._error is not None:
                error, stream._error = stream._error, None
                raise error
            if stream._ended:
                raise StopAsyncIteration
            on_idle = stream._on_idle
            if on_idle is not None:
                stream._on_idle = None
                on_idle()
                continue
            if stream._waiter is not None:
                raise StateError("Another task is already waiting for the next message.")
            before_wait = stream._before_wait
            if before_wait is not None and not stream._resuming:
                # (Resumed by a read, it waits again within it: the driver sends what the
                # answers gathered once the read is handled, in one go.)
                before_wait()
            waiter: asyncio.Future[None]
            if stream._wakes_now:
                waiter = _Waiter(loop=stream._loop)
                waiter._wakeup = None
            else:
                waiter = stream._loop.create_future()
            stream._waiter = waiter
            try:
                await waiter
            finally:
                if stream._waiter is waiter:
                    stream._waiter = None

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
        "_holding",
        "_loop",
        "_low_water",
        "_notified",
        "_on_answered",
        "_on_data",
        "_on_done",
        "_on_error",
        "_on_idle",
        "_pause_reading",
        "_paused",
        "_reading_paused",
        "_resume_reading_cb",
        "_resuming",
        "_subscribed",
        "_waiter",
        "_wakes_now",
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
        # An asyncio loop's: the consumer waits on a _Waiter (trio's facade makes its own).
        self._wakes_now = isinstance(self._loop, asyncio.AbstractEventLoop)
        # A driver is handing over one read's messages (it sets this, then calls
        # _read_delivered): a waiting async for consumer is woken once they are all in.
        self._holding = False
        self._resuming = False  # _read_delivered is running the consumer's task
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
        # Called once the consumer has answered what was buffered when a peer's close came
        # (see _await_answers).
        self._on_answered: Callable[[], None] | None = None
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

    def _cancel(self) -> None:
        self._on_data = self._on_error = self._on_done = None
        self._notified = True
        self._discard()

    # Producer side, for the channel implementations.

    def _set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Give the stream the connection's ``pause_reading``/``resume_reading``."""
        self._pause_reading = pause
        self._resume_reading_cb = resume

    def _await_answers(self, answered: Callable[[], None]) -> bool:
        """The peer closed behind messages still buffered: call ``answered()`` once the
        consumer has answered them. It has when it asks for the next message with the buffer
        empty (``async for``), one loop turn after the last one was delivered (``listen``),
        or when it stops consuming (cancelled, or the sink closed). False, and no call, when
        nothing is buffered or nobody consumes."""
        if not (self._buffer and self._subscribed):
            return False
        self._on_answered = answered
        return True

    def _answered(self) -> None:
        answered, self._on_answered = self._on_answered, None
        if answered is not None:
            answered()

    def _add(self, message: Message) -> None:
        """A message arrived (the hot path)."""
        if self._ended:
            return
        on_data = self._on_data
        if on_data is not None and not self._buffer and not self._paused:
            # ChannelDriver.deliver (_channel_driver.py) repeats this branch inline for a
            # read of one message, to save this call on the hot path (its comment says what
            # that is worth): change both together.
            try:
                on_data(message)
            except Exception as exc:
                self._report(exc, ON_DATA_FAILED)
            return
        buffer = self._buffer
        buffer.append(message)
        waiter = self._waiter
        if waiter is not None:
            if not self._holding:  # else _read_delivered wakes it, once the read is all in
                self._waiter = None
                if type(waiter) is _Waiter:
                    waiter.wake_later()
                elif not waiter.done():
                    waiter.set_result(None)
        elif on_data is not None:
            self._schedule_drain()
        high_water = self._high_water
        if high_water is not None and len(buffer) >= high_water and not self._reading_paused:
            pause = self._pause_reading
            if pause is not None:
                self._reading_paused = True
                pause()

    def _read_delivered(self) -> None:
        """The read's messages are all in: resume a waiting ``async for`` consumer now, in
        this callback of the loop's, if no task is running (see :class:`_Waiter`). It takes
        what the read brought from the buffer in one step; what it sends meanwhile goes out
        when the driver ends the read."""
        self._holding = False
        waiter = self._waiter
        if waiter is None or not self._buffer:
            return
        self._waiter = None
        if type(waiter) is not _Waiter:
            if not waiter.done():
                waiter.set_result(None)
            return
        if waiter.done():
            return
        wakeup = waiter._wakeup
        if wakeup is None or _current_task(self._loop) is not None:
            waiter.wake_later()  # not awaited by a task, or a task is running
            return
        waiter.set_result(None)
        waiter._wakeup = None
        self._resuming = True
        try:
            waiter._wakeup_context.run(wakeup, waiter)
        finally:
            self._resuming = False

    def _end(self, error: BaseException | None = None) -> None:
        """No more messages: the consumer gets the buffered ones, then ``error``, then the end."""
        if self._ended:
            return
        self._ended = True
        if error is not None and not self._notified:
            self._error = error
        self._resume_reading()
        self._wake()
        self._answered()

    def _discard(self) -> None:
        """End the stream at once, dropping buffered messages (the user closed the sink)."""
        self._ended = True
        self._buffer.clear()
        self._error = None
        self._resume_reading()
        self._wake()
        self._answered()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if type(waiter) is _Waiter:
                waiter.wake_later()  # the end: on the loop's next turn, as ever
            elif not waiter.done():
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
                self._report(exc, ON_DATA_FAILED)
        if not buffer and self._on_answered is not None and not self._paused:
            self._loop.call_soon(self._answered)  # once what on_data sent has gone out
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
