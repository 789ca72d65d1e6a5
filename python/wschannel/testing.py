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
:class:`~wschannel.exceptions.WebSocketConnectionClosed`.
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

    __slots__ = ("__weakref__", "_closed", "_events", "_other", "_protocol", "_queue", "_waiter")

    def __init__(self, protocol: str = "") -> None:
        self._protocol = protocol
        self._other: FakeWebSocket = self
        self._queue: deque[WebSocketEvent] = deque()
        self._closed = False  # no more events: closed by either side
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
        self._end()
        other = self._other
        other._deliver(CloseReceived(NO_STATUS_RECEIVED if code is None else code, reason or ""))
        other._end()

    @property
    def events(self) -> AsyncIterator[WebSocketEvent]:
        """What the other side sent, then its close; iterate once."""
        return self._events

    @property
    def protocol(self) -> str:
        return self._protocol

    def _check_open(self) -> None:
        if self._closed:
            raise WebSocketConnectionClosed()

    def _deliver(self, event: WebSocketEvent) -> None:
        if self._closed:
            return
        self._queue.append(event)
        self._wake()

    def _end(self) -> None:
        """No more events; those already queued are still delivered."""
        self._closed = True
        self._wake()

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
        socket = self._socket
        while True:
            if socket._queue:
                return socket._queue.popleft()
            if socket._closed:
                raise StopAsyncIteration
            if socket._waiter is not None:
                raise RuntimeError("Another task is already waiting for the next event.")
            waiter = asyncio.get_running_loop().create_future()
            socket._waiter = waiter
            try:
                await waiter
            finally:
                if socket._waiter is waiter:
                    socket._waiter = None


def fake_pair(protocol: str = "") -> tuple[FakeWebSocket, FakeWebSocket]:
    """Two connected in-memory low-level WebSockets whose ``protocol`` is ``protocol``."""
    first, second = FakeWebSocket(protocol), FakeWebSocket(protocol)
    first._other, second._other = second, first
    return first, second
