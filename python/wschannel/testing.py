"""Test helpers: two connected in-memory low-level WebSockets (``package:web_socket``'s
``fakes()``).

.. code-block:: python

    from wschannel.adapter import AdapterWebSocketChannel
    from wschannel.testing import fake_pair

    client, server = fake_pair()
    channel = AdapterWebSocketChannel(client)  # code under test talks to `server`

Pure Python, no network: what one side sends, the other receives, in order. Closing one
side delivers ``CloseReceived(code or 1005, reason or '')`` to the other and ends both event
streams; sending or closing after that (on either side) raises
:class:`~wschannel.exceptions.WebSocketConnectionClosed`. Both sides then report that close
in ``close_code`` and ``close_reason``, as :class:`~wschannel.adapter.IOWebSocket` does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Self

from ._message import check_close_args
from ._websocket import BinaryDataReceived, CloseReceived, TextDataReceived, WebSocketEvent
from .exceptions import WebSocketConnectionClosed
from .status import NO_STATUS_RECEIVED

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["FakeWebSocket", "fake_pair"]


class FakeWebSocket:
    """One end of :func:`fake_pair`: a :class:`wschannel.adapter.WebSocket` in memory."""

    __slots__ = (
        "__weakref__",
        "_close_code",
        "_close_reason",
        "_closed",
        "_events",
        "_other",
        "_protocol",
        "_queue",
        "_waiter",
    )

    def __init__(self, protocol: str = "") -> None:
        self._protocol = protocol
        self._other: FakeWebSocket = self
        self._queue: deque[WebSocketEvent] = deque()
        self._closed = False  # no more events: closed by either side
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._events = _Events(self)

    def send_text(self, text: str) -> None:
        """Deliver a text message to the other side."""
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, not {type(text).__name__}.")
        self._check_open()
        self._other._deliver(TextDataReceived(text))

    def send_bytes(self, data: Buffer) -> None:
        """Deliver a binary message (a copy of ``data``) to the other side."""
        if isinstance(data, str):
            raise TypeError("send_bytes() takes a bytes-like object, not str.")
        self._check_open()
        self._other._deliver(BinaryDataReceived(bytes(data)))

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """End both sides; the other receives ``CloseReceived(code or 1005, reason or '')``.

        Raises ``ValueError`` for a code or reason that may not be sent (as a channel's
        ``close()`` does) and :class:`WebSocketConnectionClosed` if already closed.
        """
        self._check_open()
        check_close_args(code, reason)
        event = CloseReceived(NO_STATUS_RECEIVED if code is None else code, reason or "")
        self._end(event)
        other = self._other
        other._deliver(event)
        other._end(event)

    @property
    def events(self) -> AsyncIterator[WebSocketEvent]:
        """What the other side sent, then its close; iterate once."""
        return self._events

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def close_code(self) -> int | None:
        """The code of the close that ended the pair (1005 without one), on either side;
        ``None`` while it is open.

        The pair has no closing handshake: one side's ``close()`` ends both at once, and
        counts as the other side's answer too (the echo an RFC 6455 peer sends), so the side
        that closed reports its own code, as :class:`~wschannel.adapter.IOWebSocket` reports
        the peer's echo.
        """
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The reason of the close that ended the pair (``''`` without one); ``None`` while
        it is open."""
        return self._close_reason

    def _check_open(self) -> None:
        if self._closed:
            raise WebSocketConnectionClosed()

    def _deliver(self, event: WebSocketEvent) -> None:
        if self._closed:
            return
        self._queue.append(event)
        self._wake()

    def _end(self, close: CloseReceived) -> None:
        """No more events (those already queued are still delivered); ``close`` ended it."""
        self._closed = True
        self._close_code, self._close_reason = close.code, close.reason
        self._wake()

    async def _next_event(self) -> WebSocketEvent:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            if self._waiter is not None:
                raise RuntimeError("Another task is already waiting for the next event.")
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<FakeWebSocket {'closed' if self._closed else 'open'}>"


class _Events:
    """The async iterator of a :class:`FakeWebSocket`'s events."""

    __slots__ = ("_socket",)

    def __init__(self, socket: FakeWebSocket) -> None:
        self._socket = socket

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WebSocketEvent:
        return await self._socket._next_event()


def fake_pair(protocol: str = "") -> tuple[FakeWebSocket, FakeWebSocket]:
    """Two connected in-memory low-level WebSockets whose ``protocol`` is ``protocol``."""
    first, second = FakeWebSocket(protocol), FakeWebSocket(protocol)
    first._other, second._other = second, first
    return first, second
