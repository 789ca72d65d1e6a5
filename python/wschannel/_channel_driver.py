"""The session hooks that the two asyncio-style drivers (:mod:`wschannel.io` over an asyncio
transport, :mod:`wschannel.bytestream` over a byte stream) do the same way: both deliver to a
:class:`~wschannel._stream.MessageStream` and send through a
:class:`~wschannel._sink.GuaranteeSink`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._driver import Cancellable, PingAnswered, SessionDriver
from ._stream import ON_DATA_FAILED
from ._wschannel import Fragment, Pong

if TYPE_CHECKING:
    from ._sink import GuaranteeSink
    from ._stream import MessageStream

__all__ = ["ChannelDriver", "PingAnswered"]


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], object], /) -> Cancellable: ...


class ChannelDriver(SessionDriver):
    """:class:`SessionDriver` for a channel with a message stream and a guarantee sink."""

    channel: Any  # the channel whose close_code and close_reason are reported
    loop: Scheduler  # the event loop (or trio's facade) the driver runs on
    stream: MessageStream
    sink: GuaranteeSink
    _delivering = False  # a read's messages are being handed over

    def deliver(self, events: list[Any]) -> None:
        """What the engine made of one read: messages for the stream; the session has
        already acted on the control events among them. What it decided is done where the
        first control event is, so that a pong leaves between the answers around its ping;
        a close reply waiting for the consumer is considered once every message is in."""
        stream = self.stream
        on_data = stream._on_data
        if on_data is not None and len(events) == 1:
            # A listen() subscriber's one message from a read (request/response): handed to
            # on_data as MessageStream._add would, without the read's bookkeeping, which only
            # an async for consumer or a control event needs. The checks and the error report
            # twin _add's on_data branch on purpose: calling _add here instead (one place for
            # both) costs a Python call per message, about 500 instructions of 21,700 per
            # request/response round trip and 600 of 13,300 per message at 100 connections
            # (callgrind, benchmarks.server_instructions; issue 15). Change both together.
            message = events[0]
            cls = type(message)
            if (cls is str or cls is bytes) and not (
                stream._ended or stream._buffer or stream._paused
            ):
                try:
                    on_data(message)
                except Exception as exc:
                    stream._report(exc, ON_DATA_FAILED)
                return
        stream._holding = True  # a waiting async for consumer resumes once, with them all
        try:
            add_message = stream._add
            acted = False
            for event in events:
                cls = type(event)
                if cls is str or cls is bytes or cls is Fragment:
                    add_message(event)
                    continue
                if cls is Pong:
                    self.pong_received(event.data)
                if not acted:
                    acted = True
                    self._delivering = True
                    try:
                        self.act()
                    finally:
                        self._delivering = False
            if self._consumer_check_due:
                self.consumer_waited(stream._await_answers(self.consumer_caught_up))
        finally:  # also when handling raised: what came before reaches the consumer now
            stream._read_delivered()

    def report_close(self, code: int, reason: str) -> None:
        self.channel._close_code = code
        self.channel._close_reason = reason

    def stop_sending(self) -> None:
        self.sink._disconnect()

    def await_consumer(self) -> None:
        if self._delivering:  # once the read's messages are all in the stream
            self._consumer_check_due = True
        elif not self.stream._await_answers(self.consumer_caught_up):
            conn = self.conn
            assert conn is not None
            conn.consumer_caught_up()

    def end_stream(self) -> None:
        self.stream._end()

    def finish(self) -> None:
        self.sink._finish()
        conn = self.conn
        assert conn is not None
        # Free the compression state and buffers now: the driver, channel, transport and
        # engine refer to each other, so without this they would wait for the cyclic
        # garbage collector (300-550 KiB per compressed connection).
        conn.release()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return self.loop.call_later(delay, callback)

    # The application's pings (wschannel._ping).

    def send_ping(self, answered: PingAnswered, payload: bytes | None = None) -> None:
        """Send a ping now, with ``payload`` (checked by :func:`~wschannel._ping.check_payload`;
        ``None``: a random one); ``answered`` is called when its pong comes (see
        :data:`PingAnswered`). Only while the connection is open and sending."""
        conn = self.conn
        assert conn is not None
        self.write(conn.send_ping(self.pings().add(answered, payload)))

    # The stream's backpressure goes to the session, which decides about reading.

    def consumer_full(self) -> None:
        conn = self.conn
        assert conn is not None
        conn.set_consumer_full(True)
        self.act()

    def consumer_has_room(self) -> None:
        conn = self.conn
        assert conn is not None
        conn.set_consumer_full(False)
        self.act()
