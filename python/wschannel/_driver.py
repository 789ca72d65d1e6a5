"""What every driver shares: doing, in order, what the session core decided.

The connection's lifecycle (the close handshake, who closes TCP and when, keepalive, the close
deadline, the close code, replies owed before a close echo, pausing reading) is decided in one
place, the engine's session (the engine crate's ``session``), reached through
:class:`~wschannel._wschannel.Connection` (``start_session``, ``poll_action``, ``timeout``,
``handle_timeout``...). A driver (asyncio, the byte stream, the blocking threads) owns the
sockets, clocks, threads or tasks and the hot message path, and translates: it feeds the
session its inputs (received bytes, then :meth:`SessionDriver.act`; the others through
:class:`SessionDriver`'s input methods, which act), and implements the hooks below with its
own transport. It never decides a close code or a timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeAlias

from ._ping import Pings
from ._wschannel import (
    ABORT,
    AWAIT_CONSUMER,
    CLOSE_TRANSPORT,
    DONE,
    END_STREAM,
    HALF_CLOSE,
    PAUSE_READING,
    RESUME_READING,
    SAMPLE_UNSENT,
    STOP_SENDING,
)

if TYPE_CHECKING:
    from ._wschannel import Connection

__all__ = ["HANDLING_FAILED", "PingAnswered", "SessionDriver"]

#: What the loop's exception handler is told (under trio: what is logged) when handling a
#: read raises, in the direct transport (wschannel._direct) and in the byte-stream driver
#: (wschannel.bytestream): a bug in wschannel, or in a callback it runs; the connection
#: then fails with 1006.
HANDLING_FAILED = "wschannel: handling received data failed"

PingAnswered: TypeAlias = Callable[[float | None], None]
"""Called with an application ping's round-trip time in seconds when its pong comes, or with
``None`` when the connection ends first."""


class Cancellable(Protocol):
    def cancel(self) -> object: ...


class SessionDriver:
    """A driver's side of the session: the action loop and the one timer.

    Subclasses set :attr:`conn` once the connection is open (after ``start_session``) and
    implement the hooks. Everything here runs where the driver serialises access to the
    connection (its event loop, or the blocking channel's lock), except the two inputs that
    may come from another thread, :meth:`session_timed_out` and :meth:`consumer_caught_up`,
    which hold :attr:`serial` themselves.
    """

    conn: Connection | None
    _session_timer: Cancellable | None = None
    _pings: Pings[PingAnswered] | None = None  # the application's, made at the first
    _close_code: int | None = None  # as report_close records them by default
    _consumer_check_due = False  # AWAIT_CONSUMER came while a read was being handed over
    _close_reason: str | None = None
    _session_deadline = 0.0
    #: Held around the inputs that come from elsewhere than the driver's reading (the timer,
    #: the consumer catching up): the blocking channel's lock; nothing where the driver
    #: runs on one event loop.
    serial: contextlib.AbstractContextManager[object] = contextlib.nullcontext()

    #: The hook for each action.
    ACTIONS: ClassVar[dict[int, Callable[[SessionDriver], None]]] = {
        STOP_SENDING: lambda d: d.stop_sending(),
        PAUSE_READING: lambda d: d.pause_reading(),
        RESUME_READING: lambda d: d.resume_reading(),
        AWAIT_CONSUMER: lambda d: d.await_consumer(),
        SAMPLE_UNSENT: lambda d: d.sample_unsent(),
        END_STREAM: lambda d: d.stream_ends(),
        HALF_CLOSE: lambda d: d.half_close(),
        CLOSE_TRANSPORT: lambda d: d.close_transport(),
        ABORT: lambda d: d.abort(),
        DONE: lambda d: d.finish(),
    }

    def act(self) -> None:
        """Do what the session decided, in order, then set the timer at its deadline."""
        conn = self.conn
        assert conn is not None
        actions = self.ACTIONS
        reported = False
        while (action := conn.poll_action()) is not None:
            # The code is known before the stream ends (RFC 6455 §7.1.5), and before our
            # close frame leaves: a peer that has read it may look at ``close_code`` (from
            # another thread, where there is no GIL to make the two steps look as one).
            if not reported and (code := conn.close_code) is not None:
                self.report_close(code, conn.close_reason or "")
                reported = True
            if type(action) is bytes:
                self.write(action)
                continue
            actions[action](self)  # type: ignore[index]
        self._arm_session_timer()

    def sample_unsent(self) -> None:
        conn = self.conn
        assert conn is not None
        conn.sample_unsent(self.unsent())

    def _arm_session_timer(self) -> None:
        conn = self.conn
        delay = None if conn is None else conn.timeout
        timer = self._session_timer
        if delay is None:
            if timer is not None:
                timer.cancel()
                self._session_timer = None
            return
        deadline = time.monotonic() + delay
        if timer is not None:
            if abs(self._session_deadline - deadline) < 0.001:
                return
            timer.cancel()
        self._session_deadline = deadline
        self._session_timer = self.call_later(delay, self.session_timed_out)

    def session_timed_out(self) -> None:
        """The timer fired: the session applies its deadlines, then the driver acts."""
        with self.serial:
            self._session_timer = None
            conn = self.conn
            if conn is None or conn.phase == "closed":
                return
            conn.handle_timeout(0 if conn.phase == "open" else self.unsent())
            self.act()

    def cancel_session_timer(self) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
            self._session_timer = None

    def stream_ends(self) -> None:
        """``END_STREAM``: no more messages, and no more pongs for the application's pings."""
        self.end_stream()
        pings = self._pings
        if pings:
            for answered in pings.drop():
                answered(None)

    # The application's pings (wschannel._ping): their pongs and the latency.

    def pings(self) -> Pings[PingAnswered]:
        """The application's pings waiting for their pongs."""
        pings = self._pings
        if pings is None:
            pings = self._pings = Pings()
        return pings

    @property
    def latency(self) -> float | None:
        """The round-trip time last measured, by a keepalive ping or an application's."""
        pings = self._pings
        if pings is not None and pings.latency is not None:
            return pings.latency
        conn = self.conn
        return None if conn is None else conn.latency

    def pong_received(self, data: bytes) -> None:
        """A pong came (the session has seen it): the application's pings it answers."""
        conn = self.conn
        for answered, rtt in self.pings().pong(data, None if conn is None else conn.latency):
            answered(rtt)

    # The session's inputs, each followed by the actions it decided.

    def start_close(self, code: int | None, reason: str | None) -> None:
        """The user's close (RFC 6455 §5.5.1), its arguments checked: the session sends the
        frame and times the close."""
        conn = self.conn
        assert conn is not None
        conn.close(code, reason or "")
        self.act()

    def eof_received(self) -> None:
        """The peer's EOF (before the session started, the transport ends by itself)."""
        conn = self.conn
        if conn is not None:
            conn.receive_eof()
            self.act()

    def transport_lost(self) -> None:
        """The transport is closed, or broke: the connection is over."""
        self.cancel_session_timer()
        conn = self.conn
        if conn is not None:
            conn.connection_lost()
            self.act()

    def writes_waiting(self, waiting: bool) -> None:
        """The write buffer went over its limit (``True``), or back under it."""
        conn = self.conn
        if conn is not None and conn.phase != "closed":
            conn.set_writes_waiting(waiting)
            self.act()

    def consumer_waited(self, waiting: bool) -> None:
        """The consumer check that ``AWAIT_CONSUMER`` asked for, made once the read's
        messages are all in the stream: ``waiting`` if the stream will call
        :meth:`consumer_caught_up` once its consumer has answered them; else it has nothing
        to answer, and the session goes on at once."""
        self._consumer_check_due = False
        if not waiting:
            conn = self.conn
            assert conn is not None
            conn.consumer_caught_up()
        self.act()

    def consumer_caught_up(self) -> None:
        """The consumer answered what it received before the peer's close (see
        :meth:`await_consumer`)."""
        with self.serial:
            conn = self.conn
            if conn is not None and conn.phase != "closed":
                conn.consumer_caught_up()
                self.act()

    # The hooks.

    def write(self, data: bytes) -> None:
        """Write bytes after everything written before."""
        raise NotImplementedError

    def report_close(self, code: int, reason: str) -> None:
        """The close code and reason to report, as they are now (by default kept on the
        driver, as ``_close_code`` and ``_close_reason``: the blocking channel is its own
        driver)."""
        self._close_code = code
        self._close_reason = reason

    def stop_sending(self) -> None:
        """The sink takes no more messages (this side's close frame is out)."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        """Stop reading from the transport (by default the driver has its own backpressure)."""

    def resume_reading(self) -> None:
        """Read from the transport again."""

    def await_consumer(self) -> None:
        """Call ``conn.consumer_caught_up()`` once the consumer has answered the messages it
        received before the peer's close (at once if nothing is queued)."""
        conn = self.conn
        assert conn is not None
        conn.consumer_caught_up()

    def end_stream(self) -> None:
        """No more messages will arrive (:meth:`stream_ends` answers the pings)."""
        raise NotImplementedError

    def half_close(self) -> None:
        """Shut down writing, keep reading until the peer's EOF."""
        raise NotImplementedError

    def close_transport(self) -> None:
        """Close the transport once what was written has left."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the transport now."""
        raise NotImplementedError

    def finish(self) -> None:
        """The connection is over: resolve ``done``, free the engine's buffers."""
        raise NotImplementedError

    def unsent(self) -> int:
        """Bytes written that the peer has not taken yet (0 if the transport cannot tell)."""
        return 0

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Call ``callback()`` after ``delay`` seconds, where this driver runs."""
        raise NotImplementedError
