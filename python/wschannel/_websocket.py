"""The low-level WebSocket interface: :class:`WebSocket` and the events it yields.

Dart's ``package:web_socket``: a low-level socket has no guarantees and no buffering, and
:class:`~wschannel.adapter.AdapterWebSocketChannel` turns one into a channel. Plain
definitions, below every channel, so that the platform's factory
(:class:`wschannel.channel.Platform`) can name the type. Importable from
:mod:`wschannel.adapter`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

__all__ = [
    "BinaryDataReceived",
    "CloseReceived",
    "TextDataReceived",
    "WebSocket",
    "WebSocketEvent",
]


@dataclass(frozen=True, slots=True)
class TextDataReceived:
    """A text message from the peer."""

    text: str


@dataclass(frozen=True, slots=True)
class BinaryDataReceived:
    """A binary message from the peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer closed the connection (RFC 6455 §7.1.5): ``code`` is 1005 for a close frame
    without a code, 1006 for a connection lost without one. The last event."""

    code: int | None = None
    reason: str = ""


WebSocketEvent: TypeAlias = TextDataReceived | BinaryDataReceived | CloseReceived
"""What :attr:`WebSocket.events` yields."""


@runtime_checkable
class WebSocket(Protocol):
    """A low-level WebSocket connection, open (``package:web_socket``'s ``WebSocket``).

    - ``send_text(text)``, ``send_bytes(data)``: send one message now; raise
      :class:`~wschannel.exceptions.WebSocketConnectionClosed` once either side has closed.
    - ``await close(code=None, reason=None)``: start the closing handshake; raises
      :class:`~wschannel.exceptions.WebSocketConnectionClosed` if already closed (by either
      side), ``ValueError`` for a code or reason that may not be sent.
    - ``events``: an async iterator (iterate it once) of :class:`TextDataReceived`,
      :class:`BinaryDataReceived` and, when the peer closes, one :class:`CloseReceived`,
      after which it ends. After a local ``close()`` it ends without a ``CloseReceived``.
    - ``protocol``: the negotiated subprotocol, ``''`` if none.
    """

    def send_text(self, text: str) -> None: ...
    def send_bytes(self, data: bytes) -> None: ...
    def close(self, code: int | None = None, reason: str | None = None) -> Awaitable[None]: ...
    @property
    def events(self) -> AsyncIterator[WebSocketEvent]: ...
    @property
    def protocol(self) -> str: ...
