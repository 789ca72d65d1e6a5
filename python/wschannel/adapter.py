"""``AdapterWebSocketChannel``: a channel over any low-level WebSocket.

Dart's ``AdapterWebSocketChannel`` and the ``package:web_socket`` interface it wraps. A
low-level :class:`WebSocket` has no guarantees and no buffering: ``send_text``/``send_bytes``
send at once, ``close()`` closes, ``events`` yields what arrives. The adapter turns one into
a :class:`~wschannel.WebSocketChannel`, with ``ready``, a single-subscription stream, a sink
keeping ``stream_channel``'s guarantees, and ``close_code``/``close_reason``.

Implementations: :class:`IOWebSocket` (wschannel's asyncio connection), the in-memory pair
of :func:`wschannel.testing.fake_pair`, or any object with the same five members.

The interface and the adapter live in ``wschannel._websocket`` and ``wschannel._adapter``,
below :mod:`wschannel.io` (an :class:`~wschannel.io.IOWebSocketChannel` is an adapter
channel); this module adds :class:`IOWebSocket`, which wraps an ``IOWebSocketChannel``, and
so sits above :mod:`wschannel.io`. Pure Python: io and the engine are imported only by
:meth:`IOWebSocket.connect`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from ._adapter import AdapterWebSocketChannel
from ._sink import GuaranteeSink
from ._websocket import (
    BinaryDataReceived,
    CloseReceived,
    TextDataReceived,
    WebSocket,
    WebSocketEvent,
)
from .exceptions import WebSocketChannelException, WebSocketConnectionClosed, WebSocketException

if TYPE_CHECKING:
    from .io import IOWebSocketChannel

__all__ = [
    "AdapterWebSocketChannel",
    "BinaryDataReceived",
    "CloseReceived",
    "IOWebSocket",
    "TextDataReceived",
    "WebSocket",
    "WebSocketConnectionClosed",
    "WebSocketEvent",
    "WebSocketException",
]


class IOWebSocket:
    """The low-level :class:`WebSocket` interface over wschannel's asyncio connection.

    Made by :meth:`connect`, or from an open :class:`~wschannel.io.IOWebSocketChannel`
    (``IOWebSocket(channel)``, which then belongs to it: use only the socket). It sends at
    once (nothing is buffered before it is open) and raises :class:`WebSocketConnectionClosed`
    once either side has closed.
    """

    __slots__ = ("_channel", "_events")

    def __init__(self, channel: IOWebSocketChannel) -> None:
        self._channel = channel
        self._events = self._receive()

    @classmethod
    def connect(
        cls, url: str, *, protocols: Iterable[str] | None = None, **options: Any
    ) -> asyncio.Task[IOWebSocket]:
        """Connect to a ``ws://`` or ``wss://`` URL; returns a task to await for the socket.

        ``options`` are those of :meth:`wschannel.io.IOWebSocketChannel.connect`. Raises
        ``ValueError`` at once for an invalid URL; the task raises
        :class:`WebSocketException` if the connection cannot be opened (``__cause__`` says
        why: a refused connection, a non-101 answer...), or ``TimeoutError``.
        """
        from .io import IOWebSocketChannel

        channel = IOWebSocketChannel.connect(url, protocols=protocols, **options)
        return asyncio.get_running_loop().create_task(cls._opened(channel))

    @classmethod
    async def _opened(cls, channel: IOWebSocketChannel) -> IOWebSocket:
        try:
            await channel.ready
        except WebSocketChannelException as exc:
            cause = exc.inner if exc.inner is not None else exc
            raise WebSocketException(exc.message or "The connection failed.") from cause
        return cls(channel)

    def send_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, not {type(text).__name__}.")
        self._check_open()
        self._channel.sink.add(text)

    def send_bytes(self, data: bytes) -> None:
        if isinstance(data, str):
            raise TypeError("send_bytes() takes a bytes-like object, not str.")
        self._check_open()
        self._channel.sink.add(data)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close (RFC 6455 §7.1.2) and wait until the connection is closed."""
        self._check_open()
        await self._channel.sink.close(code, reason)

    @property
    def events(self) -> AsyncIterator[WebSocketEvent]:
        return self._events

    @property
    def protocol(self) -> str:
        return self._channel.protocol or ""

    @property
    def close_code(self) -> int | None:
        """The code of the peer's close frame (its echo of ours, after :meth:`close`), 1005
        without a code, 1006 if the connection was lost; ``None`` before."""
        return self._channel.close_code

    @property
    def close_reason(self) -> str | None:
        return self._channel.close_reason

    @property
    def write_buffer_full(self) -> bool:
        """Whether the transport's write buffer is over its limit (see :meth:`flush`)."""
        protocol = self._channel._transport_protocol
        return protocol is not None and protocol._writing_paused

    async def flush(self) -> None:
        """Wait until the transport's write buffer is below its limit."""
        await self._channel.sink.flush()

    def _check_open(self) -> None:
        sink = self._channel.sink
        assert isinstance(sink, GuaranteeSink)
        if sink._closed or sink._disconnected:
            raise WebSocketConnectionClosed()

    async def _receive(self) -> AsyncIterator[WebSocketEvent]:
        channel = self._channel
        async for message in channel.stream:
            if type(message) is str:
                yield TextDataReceived(message)
            else:
                yield BinaryDataReceived(message)  # type: ignore[arg-type]
        sink = channel.sink
        assert isinstance(sink, GuaranteeSink)
        if not sink._close_started:  # after a local close, no CloseReceived (web_socket)
            yield CloseReceived(channel.close_code, channel.close_reason or "")

    def __repr__(self) -> str:
        return f"<IOWebSocket of {self._channel!r}>"
