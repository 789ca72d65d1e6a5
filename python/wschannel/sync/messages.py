"""The message stream of a blocking channel: the messages read and not yet taken, and the
application's side of reading.

The application takes messages with ``for message in channel.stream`` or
:meth:`~wschannel.sync.SyncWebSocketChannel.receive`. When none is buffered, the thread asking
reads the socket itself (the channel's ``_read`` hook: one ``recv``, fed to the engine), so a
message goes from the socket to the application in the thread that wants it. While the
application is not asking, the channel's fallback reader thread reads instead and buffers what
it reads; when ``max_queue`` messages are waiting it stops reading until the application has
taken all but a quarter of them (backpressure: the peer's sends then block in its kernel, not
in our memory). It keeps ``stream_channel``'s guarantees, as :mod:`wschannel.channel` does for
asyncio.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Self

from .._message import Message
from ..defaults import DEFAULT_MAX_QUEUE
from ..exceptions import StateError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SyncMessageStream", "SyncStreamSubscription", "check_max_queue"]


def check_max_queue(max_queue: int | None) -> None:
    """Raise ``ValueError`` unless ``max_queue`` is at least 1, or ``None``."""
    if max_queue is not None and max_queue < 1:
        raise ValueError("max_queue must be at least 1, or None.")


class SyncStreamSubscription:
    """The one iterator over a :class:`SyncMessageStream`: ``for message in channel.stream``.

    Iteration blocks until the next message and stops when the connection is closed (or
    the sink was closed). Breaking out of the loop does not close the connection: close the
    sink for that.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: SyncMessageStream) -> None:
        self._stream = stream

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Message:
        try:
            return self._stream._get(None)
        except EOFError:
            raise StopIteration from None

    def __del__(self) -> None:
        # The loop that iterated this subscription is over (``break``, or its frame is
        # gone): the application has answered the message it held; a peer's close that
        # waits on it goes on (what is still buffered is still waited for).
        self._stream._let_go()

    def cancel(self) -> None:
        """Stop receiving: messages buffered, and any that arrive later, are dropped.

        The connection stays open (stream guarantee 5) and reading goes on, so a close
        from the peer is still handled.
        """
        self._stream._discard()


class SyncMessageStream:
    """The messages received from the peer, in order: ``str`` for text, ``bytes`` for binary.

    Single-subscription (stream guarantee 1): iterating it a second time raises
    :class:`~wschannel.StateError`. :meth:`SyncWebSocketChannel.receive
    <wschannel.sync.SyncWebSocketChannel.receive>` takes from the same buffer.

    ``max_queue`` received messages are buffered before reading pauses (backpressure);
    reading resumes once a quarter of that is left. ``None`` buffers without bound. A
    peer's close frame is read only after the messages before it.
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_done_answering",
        "_ended",
        "_gets",
        "_handoffs",
        "_high_water",
        "_in_hand",
        "_low_water",
        "_mutex",
        "_not_empty",
        "_not_full",
        "_on_drained",
        "_on_leave",
        "_read",
        "_reading_paused",
        "_subscribed",
        "_waiting",
    )

    def __init__(self, *, max_queue: int | None = DEFAULT_MAX_QUEUE) -> None:
        check_max_queue(max_queue)
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)  # the consumer waits here
        self._not_full = threading.Condition(self._mutex)  # the reader waits here
        self._buffer: deque[Message] = deque()
        self._high_water = max_queue
        self._low_water = 0 if max_queue is None else max_queue // 4
        self._ended = False  # no more messages will be added
        self._subscribed = False
        self._waiting = False  # a thread is blocked waiting for a message
        self._reading_paused = False
        self._in_hand = False  # it took one and has not asked for the next since
        self._done_answering = False  # it waits for the close (wait_closed)
        # Called (once, then cleared) when the application asks for a message with the
        # buffer empty, or stops consuming: it has answered what came before.
        self._on_drained: Callable[[], None] | None = None
        # The channel's reader for a thread that waits: ``_read(timeout)`` reads the socket
        # once (at most ``timeout`` seconds of waiting for bytes; None: no limit) and feeds
        # the engine, which puts the messages here; False, at once, when another thread holds
        # the socket's read side (then wait: it puts what it reads, or hands reading back).
        self._read: Callable[[float | None], bool] | None = None
        self._gets = 0  # messages taken so far: the fallback reader sees the application is busy
        # Set by the fallback reader when it sleeps because a thread waits here (that thread
        # reads what comes): called, once, when the thread stops waiting.
        self._on_leave: Callable[[], None] | None = None
        self._handoffs = 0  # times another thread stopped reading for this one

    # Consumer side.

    def __iter__(self) -> SyncStreamSubscription:
        if self._subscribed:
            raise StateError("Stream has already been listened to.")
        self._subscribed = True
        return SyncStreamSubscription(self)

    @property
    def is_subscribed(self) -> bool:
        """Whether the stream has been iterated."""
        return self._subscribed

    def _get(self, timeout: float | None) -> Message:
        """The next message; ``EOFError`` once there are none left and the stream ended."""
        leave: Callable[[], None] | None = None
        try:
            return self._take(timeout)
        finally:
            if self._on_leave is not None:  # the fallback reader sleeps while this waited
                with self._mutex:
                    leave, self._on_leave = self._on_leave, None
                if leave is not None:
                    leave()

    def _take(self, timeout: float | None) -> Message:
        with self._mutex:
            self._in_hand = False  # it has answered the last one, if it meant to
            buffer = self._buffer
            if not buffer and self._on_drained is not None:
                callback, self._on_drained = self._on_drained, None
                self._mutex.release()  # it takes the connection's lock
                try:
                    callback()
                finally:
                    self._mutex.acquire()
            if not buffer:
                if self._ended:
                    raise EOFError("The WebSocket connection is closed.")
                if self._waiting:
                    raise StateError("Another thread is already waiting for the next message.")
                self._waiting = True
                try:
                    self._fill(timeout)
                finally:
                    self._waiting = False
                if not buffer:
                    raise EOFError("The WebSocket connection is closed.")
            message = buffer.popleft()
            self._in_hand = True
            self._gets += 1
            if self._reading_paused and len(buffer) <= self._low_water:
                self._reading_paused = False
                self._not_full.notify()
            return message

    def _fill(self, timeout: float | None) -> None:
        """Until a message or the end arrives (the mutex held on entry and exit): read the
        socket in this thread, or wait while another thread reads it. ``TimeoutError`` after
        ``timeout`` seconds; one attempt to read is made even with none left (``timeout=0``
        takes what the socket already holds)."""
        buffer = self._buffer
        read = self._read
        deadline = None if timeout is None else time.monotonic() + timeout
        attempted = False
        while not buffer and not self._ended:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if attempted:
                        raise TimeoutError(f"No message arrived within {timeout} seconds.")
                    remaining = 0.0
            attempted = True
            if read is not None:
                handoffs = self._handoffs
                self._mutex.release()  # reading takes the connection's lock, then this one
                try:
                    reading = read(remaining)
                finally:
                    self._mutex.acquire()
                if reading or buffer or self._ended or self._handoffs != handoffs:
                    continue
            # Another thread reads: it puts what it reads here, or hands reading back.
            self._not_empty.wait(remaining)

    def _await_answers(self, answered: Callable[[], None], messages: list[Message]) -> bool:
        """The peer closed behind ``messages`` (the same read's, added here): call
        ``answered()`` once the application has answered what is buffered and the message
        it holds (it asks for one more with the buffer empty) or stops consuming. False,
        and no call, when nothing is buffered or held. One step under the mutex, so that an
        application that takes the messages at once is still waited for. An application
        that has not consumed yet is waited for too: its thread may not have started
        (messages that came with the 101, or before a server's handler runs); one that
        never consumes makes the reply wait until the session's deadline."""
        with self._mutex:
            if messages and not self._ended:
                self._buffer.extend(messages)
                if self._waiting:
                    self._not_empty.notify()
            if self._ended or self._done_answering or not (self._buffer or self._in_hand):
                return False
            self._on_drained = answered
            return True

    def _let_go(self) -> None:
        """The iterating loop ended: the message it held counts as answered."""
        with self._mutex:
            self._in_hand = False
            if self._buffer:
                return
        self._drained()

    def _answered(self) -> None:
        """The application answers nothing more (it waits for the close)."""
        with self._mutex:
            self._done_answering = True
        self._drained()

    def _drained(self) -> None:
        """Call ``_on_drained`` once (never with the mutex held: it takes the connection's
        lock, which is taken before the mutex elsewhere)."""
        callback, self._on_drained = self._on_drained, None
        if callback is not None:
            callback()

    # Producer side, for the connection.

    def _wait_for_room(self) -> None:
        """Block the reader while the buffer is full (backpressure), until the consumer has
        taken all but ``max_queue // 4`` messages or the stream has ended."""
        high_water = self._high_water
        if high_water is None or len(self._buffer) < high_water:
            return
        with self._mutex:
            if len(self._buffer) < high_water or self._ended:
                return
            self._reading_paused = True
            while self._reading_paused and not self._ended:
                self._not_full.wait()
            self._reading_paused = False

    def _handed_off(self) -> None:
        """The fallback reader stopped reading: a thread waiting in :meth:`_fill` reads now."""
        with self._mutex:
            self._handoffs += 1
            if self._waiting:
                self._not_empty.notify()

    def _stop_waiting_for_room(self) -> None:
        """Let a reader blocked in :meth:`_wait_for_room` go on (its socket was shut down:
        its next read fails, and it finishes the connection)."""
        with self._mutex:
            self._reading_paused = False
            self._not_full.notify_all()

    def _put(self, messages: list[Message]) -> None:
        """Messages arrived (the hot path: one call per network read)."""
        with self._mutex:
            if self._ended:
                return
            self._buffer.extend(messages)
            if self._waiting:
                self._not_empty.notify()

    def _end(self) -> None:
        """No more messages: the consumer gets the buffered ones, then the end."""
        with self._mutex:
            self._ended = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def _discard(self) -> None:
        """End at once, dropping buffered messages (the user closed the sink, or cancelled)."""
        with self._mutex:
            self._ended = True
            self._buffer.clear()
            self._not_empty.notify_all()
            self._not_full.notify_all()
        self._drained()
