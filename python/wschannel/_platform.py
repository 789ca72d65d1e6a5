"""The platform's WebSocket: which implementation :func:`wschannel.connect`,
:meth:`WebSocketChannel.over <wschannel.WebSocketChannel.over>` and
:meth:`AdapterWebSocketChannel.connect <wschannel.adapter.AdapterWebSocketChannel.connect>`
use.

The top of the package's layers. The abstract channel (:mod:`wschannel.channel`) knows none
of its implementations: the package's ``__init__`` installs this module into it
(:func:`wschannel.channel.install_platform`). This module imports the implementation it picks
only when it is called: CPython's asyncio sockets (:mod:`wschannel.io`), the browser's
WebSocket under Pyodide (:mod:`wschannel.html`), a byte stream (:mod:`wschannel.bytestream`),
or the low-level socket of :mod:`wschannel.adapter`. So ``import wschannel`` loads none of
them, and none needs the engine before it is used.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Iterable
from typing import Any

from ._websocket import WebSocket
from .channel import WebSocketChannel

__all__ = ["connect", "connect_socket", "over"]


def connect(url: str, *, protocols: Iterable[str] | None = None) -> WebSocketChannel:
    """Connect to a ``ws://`` or ``wss://`` URL; returns the channel at once.

    The connection opens in the background and :attr:`WebSocketChannel.ready` reports how
    that went. Picks :class:`~wschannel.io.IOWebSocketChannel` on CPython and the browser's
    WebSocket under Pyodide. Needs a running event loop (``wschannel.sync`` blocks instead).
    """
    if sys.platform == "emscripten" or "pyodide" in sys.modules:
        from .html import HtmlWebSocketChannel

        return HtmlWebSocketChannel.connect(url, protocols=protocols)
    from .io import IOWebSocketChannel

    return IOWebSocketChannel.connect(url, protocols=protocols)


def over(
    reader: Any,
    writer: Any,
    *,
    protocol: str | None = None,
    ping_interval: float | None = None,
    server_side: bool = True,
    **options: Any,
) -> WebSocketChannel:
    """WebSocket framing over a byte stream whose HTTP upgrade is already done: see
    :meth:`WebSocketChannel.over` and :func:`wschannel.bytestream.over`, which this calls."""
    from .bytestream import over

    return over(
        reader,
        writer,
        protocol=protocol,
        ping_interval=ping_interval,
        server_side=server_side,
        **options,
    )


def connect_socket(url: str, *, protocols: Iterable[str] | None = None) -> Awaitable[WebSocket]:
    """A low-level WebSocket to ``url``, to await: :meth:`wschannel.adapter.IOWebSocket.connect`
    (Dart's ``WebSocket.connect``; the browser's is not wrapped as a low-level socket)."""
    from .adapter import IOWebSocket

    return IOWebSocket.connect(url, protocols=protocols)
