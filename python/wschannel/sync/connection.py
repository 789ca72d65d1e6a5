"""``SyncWebSocketChannel``: one WebSocket connection over a blocking socket, with the engine.

Four kinds of threads touch a connection, and none waits for another to make progress:

- **Application threads** read and write. The thread that asks for a message
  (``receive()``, iterating the stream) with none buffered reads the socket itself, under
  the read lock, and feeds each read to the engine (one
  :meth:`~wschannel._wschannel.Connection.receive_data` call per ``recv``): no other thread
  is woken on the way from the socket to the application. The engine's replies (pongs, the
  close echo, the failure close) are written at once by the same thread where the socket
  takes them without blocking, else queued for the writer thread. ``sink.add`` makes the
  frame under the engine lock (held for the engine call only, never during I/O) and writes it
  from the calling thread under the write lock. A full socket blocks the sender, never the
  reader.
- **The fallback reader thread** (one per connection) reads while the application does not:
  once no message was asked for during :data:`UNATTENDED` seconds, and at once while the
  connection closes (the user's close, the peer's, ``wait_closed``) or a :meth:`ping` waits
  for its pong. It puts the messages in the stream's bounded buffer; when that is full it
  stops reading (backpressure). It hands reading back as soon as the application asks
  again. So pings are answered, the peer's close is seen and a keepalive's pong arrives
  whether or not the application reads.
- **The writer thread** (one per connection) writes the queued replies and close frames.
- **The timer thread** (one per process, :data:`timers`) sends keepalive pings and enforces
  their deadline and the close timeout. Its callbacks never block (they queue frames, or
  shut the socket down), so a connection whose writes are stuck still times out.

So when both directions are full (each side sending faster than the other reads), each
side's reader keeps reading as long as its application keeps consuming (a reading thread
never blocks on a write): the situation that deadlocks a connection whose reader needs the
lock a blocked sender holds.

Closing (RFC 6455 §7.1): once the close frames have crossed, the server closes TCP; a
client waits for the server to do so, up to ``close_timeout``. After a failure, the side
that failed half-closes once its close frame is written and waits as long for the peer's
EOF (closing at once could reset the connection before the peer reads the close frame).
Then the socket is closed and :attr:`SyncWebSocketSink.done` resolves.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import select
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import AsyncIterable, Iterable, Iterator
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast

from .._driver import SessionDriver
from .._fragments import ABORTED, check_chunk, check_pieces_limit, closed_midway, pieces_limit
from .._message import Message, binary_view, check_close_args, settle
from .._net import kernel_unsent
from .._ping import check_payload
from .._reconnect import Redial, SyncReconnecting, close_code_for
from .._timers import TimerHandle, timers
from .._wschannel import (
    Connection,
    Fragment,
    Pong,
    Request,
)
from ..defaults import (
    COMPACT_INTERVAL,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PING_INTERVAL,
)
from ..exceptions import StateError
from .messages import SyncMessageStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Buffer

__all__ = ["SyncWebSocketChannel", "SyncWebSocketSink"]

logger = logging.getLogger("wschannel.sync")

if sys.platform == "linux":
    import fcntl

    # SIOCOUTQNSD (linux/sockios.h): the bytes the kernel holds for a socket, not yet sent.
    _SIOCOUTQNSD: int | None = 0x894B
else:
    _SIOCOUTQNSD = None


def kernel_holds(sock: socket.socket) -> bool:
    """Whether the kernel holds bytes it could not send yet (the peer's window is full);
    True where that cannot be asked."""
    if _SIOCOUTQNSD is None:
        return True
    try:
        answer = fcntl.ioctl(sock.fileno(), _SIOCOUTQNSD, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile
        return True
    return int.from_bytes(answer, sys.byteorder, signed=True) > 0


READ_SIZE: Final = 1 << 18
"""Bytes asked of each ``recv``: 256 KiB, into one reused buffer."""

UNATTENDED: Final = 0.25
"""Seconds without the application asking for a message after which the fallback reader
thread reads for it (at most twice that passes before it does): pings are answered and the
peer's close is seen while the application does other things. The thread wakes this often
while the connection is open, to look."""

_MSG_DONTWAIT: Final[int | None] = getattr(socket, "MSG_DONTWAIT", None)

_PING_HEADER: Final = 0x89  # the first byte of a ping frame: FIN, opcode 9


_CLOSED_PING: Final = (
    "Cannot ping: this side's close frame has gone (the connection is closing or closed)."
)


class SyncWebSocketSink:
    """Where messages to the peer go, from any thread.

    :meth:`add` sends a message (``str`` as text, any bytes-like object as binary);
    :meth:`close` starts the closing handshake and returns :attr:`done`.
    """

    __slots__ = (
        "_adding_stream",
        "_channel",
        "_disconnected",
        "_done",
        "_error",
        "_fragmenting",
        "_held",
        "_user_closed",
    )

    def __init__(self, channel: SyncWebSocketChannel) -> None:
        self._channel = channel
        self._user_closed = False  # close() was called
        self._disconnected = False  # no more frames may be sent (a close frame was)
        self._adding_stream = False  # add_stream() is running
        self._error: BaseException | None = None  # from add_error(): done fails with it
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._done.set_running_or_notify_cancel()  # it cannot be cancelled
        # While send_fragments() sends a message, what is added waits here (in order) and
        # follows it.
        self._fragmenting = False
        self._held: list[str | bytes] = []

    def add(self, data: str | Buffer) -> None:
        """Send one message: ``str`` as a text message, a bytes-like object as binary.

        Thread-safe. Blocks while the socket cannot take the frame (backpressure), never
        because of the reader. Raises ``TypeError`` for any other type and
        :class:`~wschannel.StateError` after :meth:`close`; after the peer closed the
        connection (or after :meth:`add_error`), the message is silently dropped.
        """
        if self._adding_stream:
            raise StateError("Cannot add event while adding stream.")
        self._send(data)

    def _send(self, data: str | Buffer) -> None:
        if self._user_closed and self._error is None:
            raise StateError("Cannot add event after closing.")
        channel = self._channel
        conn = channel._conn
        cls = type(data)
        # Nobody else writing (the usual case): this thread writes its frame at once, without
        # queueing it. Otherwise it is queued, and flushed in order.
        write_lock = channel._write_lock
        direct = write_lock.acquire(False)
        try:
            with channel._lock:
                if self._disconnected:
                    if self._user_closed and self._error is None:
                        raise StateError("Cannot add event after closing.")
                    _check_message_type(data)
                    return
                if self._fragmenting:
                    held = data if cls is str or cls is bytes else None
                    if held is None:
                        held = str(data) if isinstance(data, str) else bytes(binary_view(data))
                    self._held.append(held)  # type: ignore[arg-type]
                    return
                try:
                    if cls is str:
                        frame = conn.send_text(data)  # type: ignore[arg-type]
                    elif cls is bytes:
                        frame = conn.send_binary(data)  # type: ignore[arg-type]
                    elif isinstance(data, str):
                        frame = conn.send_text(str(data))
                    else:
                        frame = conn.send_binary(binary_view(data))
                except RuntimeError:  # the engine already sent its close frame
                    return
                if not direct or channel._outgoing or channel._sock_closed:
                    channel._outgoing.append(frame)
                    if direct:
                        direct = False
                        write_lock.release()
                else:
                    channel._in_flight = len(frame)
            if direct:
                try:
                    channel._sock.sendall(frame)
                except OSError:
                    channel._abort()  # the connection is lost; its reader finishes it
                    return
                finally:
                    channel._in_flight = 0
                # What others queued meanwhile waits for their flush, which waits for this
                # thread's write lock; the pong held while writes waited, for a flush here.
                if not channel._writes_waiting:
                    return
        finally:
            if direct:
                write_lock.release()
        channel._flush()

    def close(
        self, code: int | None = None, reason: str | None = None
    ) -> concurrent.futures.Future[None]:
        """Start the closing handshake (RFC 6455 §7.1.2) and return :attr:`done`.

        Does not block: the close frame is written by the connection's writer thread. The
        stream ends at once (messages still buffered are dropped). ``code`` must be one an
        endpoint may send (1000-1003, 1007-1014, 3000-4999) and ``reason`` at most 123 UTF-8
        bytes, else ``ValueError`` is raised and the connection stays open. Closing again
        returns :attr:`done`; closing while :meth:`add_stream` runs raises
        :class:`~wschannel.StateError`.
        """
        if self._adding_stream:
            raise StateError("Cannot close sink while adding stream.")
        if self._user_closed:
            return self._done
        check_close_args(code, reason)
        channel = self._channel
        with channel._lock:
            if self._user_closed:
                return self._done
            self._user_closed = True
            if not self._disconnected:
                channel.start_close(code, reason)
            channel._fallback_wakeup.notify()  # the answer is read whoever reads
        channel._stream._discard()
        return self._done

    def add_error(self, error: BaseException) -> None:
        """Close the connection because of ``error``: without a close code (the peer sees
        1005), ending the stream; :attr:`done` fails with ``error`` once the connection is
        closed. Messages added afterwards are dropped (as after the peer's close);
        :meth:`close` returns :attr:`done`. Raises :class:`~wschannel.StateError` after
        :meth:`close` or while :meth:`add_stream` runs."""
        if self._adding_stream:
            raise StateError("Cannot add event while adding stream.")
        if self._user_closed:
            raise StateError("Cannot add event after closing.")
        channel = self._channel
        with channel._lock:
            if self._user_closed:
                raise StateError("Cannot add event after closing.")
            self._error = error
            self._user_closed = True
            if not self._disconnected:
                channel._conn.close(None, "")
                channel.act()
            channel._fallback_wakeup.notify()
        channel._stream._discard()

    def add_stream(self, messages: Iterable[str | Buffer]) -> None:
        """Send every message of ``messages`` (any iterable), in order; returns once it is
        exhausted, or at once when the connection closes meanwhile (what is left is not
        taken). Meanwhile :meth:`add`, :meth:`add_error`, :meth:`close` and another
        :meth:`add_stream` raise :class:`~wschannel.StateError`; so does calling it after
        :meth:`close`."""
        if self._adding_stream:
            raise StateError("Cannot add stream while adding stream.")
        if self._user_closed and self._error is None:
            raise StateError("Cannot add stream after closing.")
        self._adding_stream = True
        try:
            for message in messages:
                if self._disconnected:
                    break
                self._send(message)
        finally:
            self._adding_stream = False

    @property
    def done(self) -> concurrent.futures.Future[None]:
        """Resolves once the connection is closed (socket included); fails only with the
        error given to :meth:`add_error`."""
        return self._done


def _pieces(messages: Iterator[Any]) -> Iterator[Fragment]:
    """The stream's items as pieces: a whole message (received before pieces were asked
    for) as one piece, with ``last``."""
    for item in messages:
        yield item if type(item) is Fragment else Fragment(item)


def _check_message_type(data: object) -> None:
    if not isinstance(data, str):
        binary_view(data)


def shutdown(sock: socket.socket, how: int) -> None:
    """Shut down the socket's TCP connection, ignoring errors (it may already be gone).

    ``socket.socket``'s method even for TLS: ``SSLSocket.shutdown`` drops the TLS state
    under the feet of a thread still reading.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


class SyncWebSocketChannel(SessionDriver):
    """A two-way WebSocket connection for threads: :attr:`stream` in, :attr:`sink` out.

    Made open by :func:`wschannel.sync.connect` (client) or by :func:`wschannel.sync.serve`
    (server side). A context manager: ``with`` closes it on exit (1000, or 1011 when the
    block raised; see :meth:`__exit__`) and waits until it is closed. One made by
    ``connect`` reconnects when iterated (``for channel in wschannel.sync.connect(url)``,
    see :meth:`__iter__`).
    """

    _redial: Redial[Any] | None = None  # set by connect (wschannel._reconnect.redialable)

    def __init__(
        self,
        sock: socket.socket,
        conn: Connection,
        *,
        protocol: str | None = None,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        leftover: bytes = b"",
        request: Request | None = None,
        pong_timeout: float | None = None,
    ) -> None:
        """Internal: use :func:`~wschannel.sync.connect` or :func:`~wschannel.sync.serve`.

        ``sock`` is a blocking socket whose opening handshake is done; ``leftover`` holds
        the bytes read after it (the first frames).
        """
        self._sock = sock
        self._conn = conn
        self._protocol = protocol
        self._request = request
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._stream = SyncMessageStream(max_queue=max_queue)
        self._sink = SyncWebSocketSink(self)
        # The engine, the frames waiting to be written and the state below: held for
        # engine calls and bookkeeping only, never during I/O.
        self._lock = threading.Lock()
        self.serial = self._lock  # for the session's timer and the consumer's answers
        self._wakeup = threading.Condition(self._lock)  # wakes the writer thread
        self._fallback_wakeup = threading.Condition(self._lock)  # wakes the fallback reader
        self._write_lock = threading.Lock()  # held while writing to the socket
        # Held by the thread reading the socket and feeding the engine: an application
        # thread waiting for a message, or the fallback reader.
        self._read_lock = threading.Lock()
        self._read_buffer = bytearray(READ_SIZE)
        self._read_view = memoryview(self._read_buffer)
        self._read_ended = False  # EOF or an error was read: nobody reads again
        self._poller: Any = None  # select.poll() for reads with a timeout, made when needed
        # Replies the engine makes while a thread reads are written by that thread, without
        # blocking, where the socket can be asked so (not TLS, not Windows).
        self._inline_writes = _MSG_DONTWAIT is not None and not isinstance(sock, ssl.SSLSocket)
        self._reading_inline = False  # the reading thread writes what is queued meanwhile
        self._awaiting_pong = False  # a keepalive ping went: its pong is read at once
        self._aborted = False  # the socket was shut down: the end is read at once
        self._outgoing: deque[bytes] = deque()
        self._fragments_lock = threading.Lock()  # one send_fragments() at a time
        self._in_flight = 0  # bytes of the frames a flush took and has not written yet
        # The most bytes seen waiting behind a write in progress (for metrics).
        self._write_high = 0
        self._flush_requested = False
        # Told to the session: a reply came while another thread was writing, so writes
        # wait (the session then answers only the latest ping until the queue is empty).
        self._writes_waiting = False
        # Once everything is written, close TCP: SHUT_RDWR after a closing handshake,
        # SHUT_WR after a failure (the peer may still be sending: wait for its EOF).
        self._shutdown_after_flush: int | None = None
        self._shut_down = False
        self._sock_closed = False
        self._finished = False
        conn.start_session(
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            close_timeout=close_timeout,
            consumer_wait=DEFAULT_CLOSE_TIMEOUT,
            # The reader goes on reading: each sender writes its own frames, so the peer's
            # messages cannot pile up answers here; pongs are coalesced instead.
            pause_reading_while_writes_wait=False,
            half_close=True,
            compact_interval=COMPACT_INTERVAL if conn.compressed else None,
        )
        self.conn = conn
        with self._lock:
            self._arm_session_timer()
        try:
            peer = sock.getpeername()
        except OSError:
            peer = "?"
        side = "client" if conn.client else "server"
        self._reader = threading.Thread(
            target=self._run_fallback_reader,
            name=f"wschannel-{side}-reader-{peer}",
            daemon=True,
        )
        self._writer = threading.Thread(
            target=self._run_writer, name=f"wschannel-{side}-writer-{peer}", daemon=True
        )
        self._writer.start()
        if leftover:  # before any thread may read the socket: these bytes came first
            with self._read_lock:
                self._receive(leftover)
        self._stream._read = self._read_for_consumer
        self._reader.start()

    # The public API.

    @property
    def protocol(self) -> str | None:
        """The subprotocol the server chose, or ``None``."""
        return self._protocol

    @property
    def close_code(self) -> int | None:
        """The code of the peer's close frame (RFC 6455 §7.1.5); ``None`` before.

        1005 when the frame had no code; 1006 when the connection was lost without one; the
        code this side sent when it failed the connection (1002, 1007, 1009...); 1001 when
        a keepalive ping got no pong.
        """
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The reason of the peer's close frame (RFC 6455 §7.1.6), ``''`` if none; ``None``
        before."""
        return self._close_reason

    @property
    def stream(self) -> SyncMessageStream:
        """The messages from the peer: ``for message in channel.stream`` (once)."""
        return self._stream

    @property
    def sink(self) -> SyncWebSocketSink:
        """Where messages to the peer go."""
        return self._sink

    @property
    def request(self) -> Request | None:
        """The HTTP upgrade request that opened a server-side channel (``None`` for a
        client): its ``path``, ``headers`` and ``header(name)``."""
        return self._request

    def receive(self, timeout: float | None = None) -> Message:
        """The next message from the peer, waiting up to ``timeout`` seconds (``None``: no
        limit).

        Raises ``TimeoutError`` when none came in time, and ``EOFError`` once the connection
        is closed and no message is left (as :meth:`multiprocessing.connection.Connection.recv`
        does). Takes from the same buffer as :attr:`stream`; only one thread may wait at a
        time (:class:`~wschannel.StateError` otherwise).
        """
        return self._stream._get(timeout)

    def send_fragments(self, chunks: Iterable[str | Buffer]) -> None:
        """Send the chunks of ``chunks`` (any iterable) as the fragments of one message
        (RFC 6455 §5.4): all ``str`` for a text message, all bytes-like for a binary one.

        Each chunk is written as it comes, from the calling thread, blocking while the
        socket cannot take it (so memory stays at one chunk); the message ends with an empty
        final fragment, and no chunk sends nothing. Meanwhile messages that other threads
        (or this one) add wait and follow the message, and another ``send_fragments`` waits
        its turn. Raises as the asyncio channel's ``send_fragments`` does (``TypeError``,
        :class:`~wschannel.StateError`,
        :class:`~wschannel.exceptions.WebSocketConnectionClosed`), and closes with 1011 when
        the message cannot be finished (a refused chunk, an error from ``chunks``).
        """
        if isinstance(chunks, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                "send_fragments() takes an iterable of chunks, not one message: "
                "send one message with sink.add(message)."
            )
        if isinstance(chunks, AsyncIterable) or not isinstance(chunks, Iterable):
            raise TypeError(
                "send_fragments() of a blocking channel takes an iterable of str or "
                f"bytes-like chunks, not {type(chunks).__name__}."
            )
        sink = self._sink
        if sink._user_closed and sink._error is None:
            raise StateError("Cannot send fragments after closing.")
        if sink._adding_stream:
            raise StateError("Cannot send fragments while adding stream.")
        with self._fragments_lock:
            with self._lock:
                sink._fragmenting = True
            text: bool | None = None  # the message's kind, from its first chunk
            try:
                for chunk in chunks:
                    data, is_text = check_chunk(chunk, text)
                    self._send_fragment(data, first=text is None, fin=False)
                    text = is_text
                if text is not None:
                    self._send_fragment("" if text else b"", first=False, fin=True)
            except BaseException:
                if text is not None:
                    self._abort_fragments()
                raise
            finally:
                with self._lock:
                    # Encoded before the lock is let go: a thread's later message cannot
                    # overtake its held one.
                    sink._fragmenting = False
                    held, sink._held = sink._held, []
                    for message in held:
                        if sink._disconnected:
                            break
                        with contextlib.suppress(RuntimeError):  # the close frame went
                            if isinstance(message, str):
                                self._outgoing.append(self._conn.send_text(message))
                            else:
                                self._outgoing.append(self._conn.send_binary(message))
                self._flush()

    def _send_fragment(self, data: str | Buffer, *, first: bool, fin: bool) -> None:
        with self._lock:
            if self._sink._disconnected:
                raise closed_midway()
            self._outgoing.append(self._conn.send_fragment(data, first=first, fin=fin))
        self._flush()

    def _abort_fragments(self) -> None:
        """A fragmented message cannot be finished: close with 1011."""
        with self._lock:
            if self._sink._disconnected or self._sink._user_closed:
                return
            self._conn.close(1011, ABORTED)
            self.act()
        self._stream._discard()

    def fragments(self, *, max_message_size: int | EllipsisType | None = ...) -> Iterator[Fragment]:
        """Receive messages in pieces, as they arrive, without assembling them:
        ``for piece in channel.fragments():`` gives :class:`~wschannel.Fragment` objects
        (``data``: ``str`` or ``bytes``; ``last`` on a message's last piece), as the
        asyncio channel's ``fragments`` does (see there and docs/client.md): at most 1 MiB
        each, ``max_queue`` of them buffered before reading pauses, each message at most
        ``max_message_size`` bytes in total (by default the channel's; ``None``: any).
        Subscribes to :attr:`stream` and applies at once, to a message being received
        too."""
        check_pieces_limit(max_message_size)
        messages = iter(self._stream)  # StateError if it was subscribed to already
        with self._lock:
            conn = self._conn
            limit = pieces_limit(conn.max_message_size, max_message_size)
            conn.set_delivery(True, max_message_size=limit)
        return _pieces(messages)

    def pipe(self, other: SyncWebSocketChannel) -> concurrent.futures.Future[None]:
        """Connect this channel to ``other`` until both directions have ended: this stream
        goes into ``other.sink`` and ``other.stream`` into this sink (each with
        :meth:`SyncWebSocketSink.add_stream`, in a thread of its own), and each sink is
        closed when its source ends. Returns a future that resolves once both have
        finished (with the first error a sink's :attr:`~SyncWebSocketSink.done` failed
        with)."""
        result: concurrent.futures.Future[None] = concurrent.futures.Future()
        result.set_running_or_notify_cancel()
        left = [2]
        errors: list[BaseException] = []
        lock = threading.Lock()

        def forward(source: SyncMessageStream, sink: SyncWebSocketSink) -> None:
            try:
                with contextlib.suppress(StateError):  # the sink was closed meanwhile
                    sink.add_stream(source)
                sink.close()
                sink.done.result()
            except BaseException as exc:
                errors.append(exc)
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                if errors:
                    result.set_exception(errors[0])
                else:
                    result.set_result(None)

        for source, sink in ((self.stream, other.sink), (other.stream, self.sink)):
            threading.Thread(
                target=forward, args=(source, sink), name="wschannel-pipe", daemon=True
            ).start()
        return result

    def ping(self, timeout: float | None = None, *, payload: str | Buffer | None = None) -> float:
        """Send a ping (RFC 6455 §5.5.2) and wait up to ``timeout`` seconds (``None``: no
        limit) for its pong: the round-trip time in seconds (also :attr:`latency` from then
        on).

        ``payload``: what the ping carries and its pong echoes, at most 125 bytes (``str``
        goes as UTF-8); ``None`` (default): 4 random bytes. ``ValueError`` at the call for a
        longer one, ``RuntimeError`` while a ping with the same payload waits for its pong.

        Thread-safe; pings sent at once all get their answer (a pong answers its ping and
        those before it, RFC 6455 §5.5.3). Raises ``TimeoutError`` when no pong came in time,
        and :class:`~wschannel.StateError` once this side's close frame has gone (closed by
        either side) or if the connection ends before the pong comes.
        """
        data = check_payload(payload)
        waiter: concurrent.futures.Future[float | None] = concurrent.futures.Future()
        with self._lock:
            conn = self._conn
            if self._finished or not conn.sending:
                raise StateError(_CLOSED_PING)
            self._outgoing.append(conn.send_ping(self.pings().add(waiter.set_result, data)))
            self._fallback_wakeup.notify()  # its pong is read whether or not anyone reads
        self._flush()
        try:
            rtt = waiter.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"No pong came within {timeout} seconds.") from None
        if rtt is None:
            raise StateError(
                f"The connection closed (code {self._close_code}) before the ping's pong came."
            )
        return rtt

    @property
    def latency(self) -> float | None:
        """The round-trip time last measured, in seconds: of a keepalive ping (see
        ``ping_interval``) or of :meth:`ping`; ``None`` before any was answered."""
        return super().latency

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close (see :meth:`SyncWebSocketSink.close`) and wait until the connection is
        closed, which takes at most ``close_timeout`` seconds."""
        self._sink.close(code, reason).result()

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the connection is closed; ``TimeoutError`` after ``timeout`` seconds."""
        self._stream._answered()  # the application answers nothing more: the close goes on
        with self._lock:
            self._fallback_wakeup.notify()  # and reads nothing more: the fallback reads
        self._sink._done.result(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close with 1000 (normal closure), 1011 (internal error) when the block raised an
        exception, or 1001 (going away) for ``KeyboardInterrupt`` or ``SystemExit``, and wait
        until closed."""
        self.close(close_code_for(exc))

    def __iter__(self) -> Iterator[Self]:
        """``for channel in wschannel.sync.connect(url):`` this channel, then, each time the
        loop comes back, a new connection made the same way (the previous one closed with
        1000 if still open, and waited for), reconnecting when the connection is lost or an
        attempt fails, with backoff (``reconnect_delays``), as the asyncio client does. The
        first attempt is ``connect``'s own, which raises if it fails; to retry that one too,
        use :func:`wschannel.sync.reconnect`.

        Only a channel made by ``connect`` can be iterated: ``TypeError`` otherwise.
        """
        redial = self._redial
        if redial is None:
            raise TypeError(
                "This SyncWebSocketChannel was not made by wschannel.sync.connect(), so it "
                "cannot reconnect."
            )
        return SyncReconnecting(self, cast("Redial[Self]", redial))

    def __repr__(self) -> str:
        if self._sink._done.done():
            state = f"closed {self._close_code}"
        elif self._sink._disconnected:
            state = "closing"
        else:
            state = "open"
        return f"<{type(self).__name__} {state}>"

    # Writing (application threads and the writer thread).

    def _flush(self) -> None:
        """Write the queued frames, in order, from the calling thread."""
        write_lock = self._write_lock
        if not write_lock.acquire(False):
            self._sample_waiting()  # another thread is writing: what is queued waits
            write_lock.acquire()
        try:
            outgoing = self._outgoing
            while True:
                with self._lock:
                    if self._sock_closed:
                        outgoing.clear()
                        return
                    if not outgoing:
                        if not self._writes_waiting:
                            return
                        self._writes_waiting = False  # the pong held meanwhile, if any
                        self._conn.set_writes_waiting(False)
                        self.act()
                        if not outgoing:
                            return
                    frames = list(outgoing)
                    outgoing.clear()
                    self._in_flight = sum(map(len, frames))
                try:
                    for frame in frames:
                        self._sock.sendall(frame)
                        self._in_flight -= len(frame)
                except OSError:
                    self._abort()  # the connection is lost; the reader will finish it
                    return
                finally:
                    self._in_flight = 0
        finally:
            write_lock.release()

    def _sample_waiting(self) -> None:
        """Note the bytes waiting in the queue (the write buffer's high-water mark)."""
        with self._lock:
            waiting = sum(map(len, self._outgoing))
            if waiting > self._write_high:
                self._write_high = waiting

    def _metrics(self) -> tuple[tuple[int, int, int, int], int]:
        """The engine's counters and the write buffer's high-water mark, for a server's
        metrics: the most bytes that waited in the queue behind a write in progress (frames
        that other threads sent, replies, the close frame). Each sender writes its own
        frames, blocking while the socket is full, so nothing waits unless another thread
        sends while one is blocked."""
        with self._lock:
            return self._conn.counters, self._write_high

    def _request_flush(self) -> None:
        """Hand the queued frames to the writer thread (with the lock held), unless the
        thread reading writes them when its read is done."""
        self._flush_requested = True
        if not self._reading_inline:
            self._wakeup.notify()

    def _flush_inline(self) -> None:
        """Write what the engine queued during a read (pongs, the close echo) from the reading
        thread, without blocking: what the socket does not take at once, or what must wait
        for another thread's write, goes to the writer thread."""
        sock = self._sock
        write_lock = self._write_lock
        if not write_lock.acquire(False):  # another thread writes: the writer thread will
            with self._lock:
                self._wakeup.notify()
            return
        try:
            with self._lock:
                outgoing = self._outgoing
                if self._sock_closed or self._shutdown_after_flush is not None or not outgoing:
                    self._wakeup.notify()  # the writer closes TCP once it has flushed
                    return
                frames = list(outgoing)
                outgoing.clear()
                self._in_flight = sum(map(len, frames))
            for index, frame in enumerate(frames):
                try:
                    sent = sock.send(frame, _MSG_DONTWAIT)  # type: ignore[arg-type]
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._in_flight = 0
                    self._abort()  # the connection is lost; its reader finishes it
                    return
                if sent < len(frame):
                    with self._lock:  # the rest first, by the writer thread
                        outgoing.extendleft(reversed(frames[index + 1 :]))
                        outgoing.appendleft(frame[sent:])
                        self._flush_requested = True
                        self._wakeup.notify()
                    break
            else:
                with self._lock:
                    if outgoing or self._writes_waiting:
                        self._wakeup.notify()
                    else:
                        self._flush_requested = False
            self._in_flight = 0
        finally:
            write_lock.release()

    def _run_writer(self) -> None:
        """Write the replies and close frames that other threads queued, as they come."""
        try:
            while True:
                with self._lock:
                    while not self._flush_requested and not self._finished:
                        self._wakeup.wait()
                    if self._finished:
                        return
                    self._flush_requested = False
                self._flush_and_close()
        except Exception:  # a bug: do not leave the connection open without a writer
            logger.exception("Unexpected error in a WebSocket writer thread")
            self._abort()

    def _flush_and_close(self) -> None:
        """Flush; then, if the session said so, close TCP."""
        self._flush()
        with self._lock:
            how = self._shutdown_after_flush
            if how is None or self._shut_down or self._sock_closed:
                return
            if self._outgoing:  # more came meanwhile: flush again first
                self._request_flush()
                return
            self._shut_down = True
            shutdown(self._sock, how)

    def _abort(self) -> None:
        """Drop the connection: wakes the reader (and a blocked sender) with an EOF/error."""
        with self._lock:
            self.abort()

    # The session's hooks (wschannel._driver): what it decided, done with threads and a
    # blocking socket. Always with the lock held.

    def write(self, data: bytes) -> None:
        if data[0] == _PING_HEADER:  # the session's keepalive ping: read until its pong
            self._awaiting_pong = True
            self._fallback_wakeup.notify()
        if not self._writes_waiting and self._write_lock.locked() and kernel_holds(self._sock):
            # A write is in progress and stuck on a full socket: from now on the session
            # holds only the latest pong. (Not while the kernel takes what is written at
            # once: a pong per ping then, as Autobahn 2.10 and 2.11 check.)
            self._writes_waiting = True
            self._conn.set_writes_waiting(True)
        self._outgoing.append(data)
        self._request_flush()

    # report_close: SessionDriver's, which keeps the code and reason on the driver (here).

    def stop_sending(self) -> None:
        self._sink._disconnected = True

    # pause_reading / resume_reading: the reader's own backpressure is the stream's bounded
    # buffer, and what it reads after a close frame the engine drops.

    def await_consumer(self) -> None:
        self._consumer_check_due = True  # once the read's messages are in the stream

    def end_stream(self) -> None:
        self._stream._end()
        self._fallback_wakeup.notify()  # nobody else reads now: read until the end

    def half_close(self) -> None:
        self._shutdown_after_flush = socket.SHUT_WR
        self._request_flush()

    def close_transport(self) -> None:
        if self._shutdown_after_flush is None:
            self._shutdown_after_flush = socket.SHUT_RDWR
        self._request_flush()

    def abort(self) -> None:
        self._aborted = True  # whoever reads sees the end: at once, the fallback reader
        self._fallback_wakeup.notify()
        if not self._sock_closed:
            shutdown(self._sock, socket.SHUT_RDWR)
        self._stream._stop_waiting_for_room()  # a paused reader must see it

    def finish(self) -> None:
        self._finished = True
        self._wakeup.notify()
        self._fallback_wakeup.notify()

    def unsent(self) -> int:
        """Bytes written but not yet taken by the peer: the queue, the frames a flush is
        writing, and what the kernel holds (Linux: unsent or unacknowledged)."""
        sock = None if self._sock_closed else self._sock
        return sum(map(len, self._outgoing)) + self._in_flight + kernel_unsent(sock)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return timers.call_later(delay, callback)

    # Reading (an application thread waiting for a message, or the fallback reader).

    def _read_for_consumer(self, timeout: float | None) -> bool:
        """The stream's ``_read`` hook: read the socket once in the calling thread (waiting
        at most ``timeout`` seconds for bytes) and feed the engine. False, at once, if another
        thread is reading."""
        read_lock = self._read_lock
        if not read_lock.acquire(False):
            return False
        try:
            if self._read_ended:
                return True
            if timeout is not None and not self._readable(timeout):
                return True
            self._read_once()
        finally:
            read_lock.release()
        return True

    def _readable(self, timeout: float) -> bool:
        """Whether the socket has bytes to read within ``timeout`` seconds (the read lock
        held). Polled, not with a socket timeout, which would apply to senders too."""
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted already
        try:
            if hasattr(select, "poll"):
                poller = self._poller
                if poller is None:
                    poller = self._poller = select.poll()
                    poller.register(sock, select.POLLIN)
                return bool(poller.poll(timeout * 1000))
            return bool(select.select([sock], [], [], timeout)[0])
        except (OSError, ValueError):  # closed meanwhile: the read says how
            return True

    def _read_once(self) -> None:
        """One ``recv`` into the read buffer, fed to the engine (the read lock held); at the
        end of the stream or on an error, the connection is finished."""
        try:
            size = self._sock.recv_into(self._read_buffer)
            if size:
                if not self._inline_writes:
                    self._receive(self._read_view[:size])
                    return
                self._reading_inline = True
                try:
                    self._receive(self._read_view[:size])
                finally:
                    with self._lock:
                        self._reading_inline = False
                        flush = self._flush_requested
                    if flush:
                        self._flush_inline()
                return
        except OSError:
            pass  # reset, aborted: the connection is lost
        except Exception:
            logger.exception("Unexpected error while reading a WebSocket connection")
        self._read_ended = True
        self._finish()

    def _must_read(self) -> bool:
        """Whether the fallback reader reads whatever the application does (the lock held):
        the connection is closing, or a ping (the application's or the keepalive's) waits
        for its pong."""
        stream = self._stream
        return (
            stream._ended
            or stream._done_answering
            or self._sink._user_closed
            or self._awaiting_pong
            or self._aborted
            or bool(self._pings)
        )

    def _run_fallback_reader(self) -> None:
        """Read while the application does not (see the module's docstring)."""
        stream = self._stream
        wakeup = self._fallback_wakeup
        try:
            seen = -1
            # Nobody asked for a message yet: read from the start (the first keepalive pong,
            # a peer that pings or closes at once), until the application asks. Counted from
            # none taken: this thread may start after the application has read and taken
            # its first message itself, and must not then sit in a read it does not need.
            self._read_unattended(0)
            while True:
                with self._lock:
                    while not self._finished and not self._read_ended:
                        if self._must_read():
                            break
                        if stream._waiting:
                            # A thread waits for a message and reads what comes itself:
                            # sleep until it stops waiting (it calls _on_leave), or until
                            # reading is needed at once. Then look again after an interval.
                            stream._on_leave = self._wake_fallback_reader
                            if stream._waiting:
                                wakeup.wait()
                                if not self._must_read():
                                    seen = stream._gets
                                    wakeup.wait(UNATTENDED)
                                continue
                            stream._on_leave = None
                        gets = stream._gets
                        if gets == seen:
                            break  # nobody asked for a message for a whole interval
                        seen = gets
                        wakeup.wait(UNATTENDED)
                    else:
                        return
                self._read_unattended(seen)
                seen = stream._gets
        except Exception:  # a bug: do not leave the connection without a reader
            logger.exception("Unexpected error in a WebSocket reader thread")
            self._abort()

    def _wake_fallback_reader(self) -> None:
        with self._lock:
            self._fallback_wakeup.notify()

    def _read_unattended(self, gets: int) -> None:
        """Read until the application asks for a message again (then it reads), or to the
        end while the connection closes. ``gets``: how many messages the application had
        taken when the caller saw it idle; any more, and it is back."""
        stream = self._stream
        wait_for_room = stream._wait_for_room
        read_lock = self._read_lock
        read_lock.acquire()
        try:
            while not self._read_ended and not self._finished:
                if (stream._waiting or stream._gets != gets) and not self._must_read():
                    return  # the application is back: it reads
                wait_for_room()
                self._read_once()
        finally:
            read_lock.release()
            stream._handed_off()

    def _receive(self, data: Buffer) -> None:
        """Feed one read to the engine; the session acts on its control events."""
        with self._lock:
            events = self._conn.receive_data(data)
            if not events:
                return
            messages: list[Message] | None = None
            for index, event in enumerate(events):
                cls = type(event)
                if cls is str or cls is bytes or cls is Fragment:
                    if messages is not None:
                        messages.append(event)  # type: ignore[arg-type]
                    continue
                if messages is None:
                    messages = events[:index]  # type: ignore[assignment]
                if cls is Pong:
                    self._awaiting_pong = False
                    self.pong_received(event.data)  # type: ignore[union-attr,arg-type]
            if messages is not None:
                self.act()
        stream = self._stream
        if messages is None:
            stream._put(events)  # type: ignore[arg-type]
        elif self._consumer_check_due:
            with self._lock:
                self.consumer_waited(stream._await_answers(self.consumer_caught_up, messages))
        elif messages:
            stream._put(messages)

    def _finish(self) -> None:
        """The reader saw the end: close the socket, then resolve ``done``."""
        with self._lock:
            self._conn.receive_eof()
            self.transport_lost()  # the session ends the stream, then finish()
            self._stream._on_drained = None
            shutdown(self._sock, socket.SHUT_RDWR)  # unblock senders
        with self._write_lock:  # no thread is writing any more
            with self._lock:
                self._sock_closed = True
                self._outgoing.clear()
            self._sock.close()
        # done's callbacks (the server's metrics) run here.
        settle(self._sink._done, self._sink._error)
        with self._lock:
            self._conn.release()  # compression state and buffers: now, not at collection
