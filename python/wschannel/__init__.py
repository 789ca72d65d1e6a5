"""WebSocket channels for Python: a port of Dart's ``web_socket_channel`` on a Rust engine.

.. code-block:: python

    import wschannel

    async with wschannel.connect("ws://localhost:1234") as channel:
        channel.sink.add("hello")
        async for message in channel.stream:
            print(message)

The names that need the compiled engine (``serve``, ``unix_serve``, ``broadcast``,
``sign_key``) are imported on first use, so ``import wschannel``, :mod:`wschannel.status`,
the exceptions and the channel base classes work where the engine is not available
(Pyodide, where the browser speaks WebSocket).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _platform, channel, status
from ._platform import connect
from ._reconnect import backoff, retryable
from .channel import WebSocketChannel, WebSocketSink
from .exceptions import InvalidStatus, ProxyError, StateError, WebSocketChannelException
from .status import CloseCode

# The abstract channel's connect() and over() reach the implementations through this: they
# sit above it in the layers (io, html, bytestream; each imported on first use).
channel.install_platform(_platform)

if TYPE_CHECKING:
    from ._wschannel import DeflateOptions, Fragment, __version__, sign_key
    from .server import broadcast, serve, unix_serve

__all__ = [
    "CloseCode",
    "DeflateOptions",
    "Fragment",
    "InvalidStatus",
    "ProxyError",
    "StateError",
    "WebSocketChannel",
    "WebSocketChannelException",
    "WebSocketSink",
    "__version__",
    "backoff",
    "broadcast",
    "connect",
    "retryable",
    "serve",
    "sign_key",
    "status",
    "unix_serve",
]


def __getattr__(name: str) -> object:
    if name == "Fragment" and _platform.in_browser():  # Pyodide: no engine, the html one
        from .html import Fragment

        return Fragment
    if name in ("sign_key", "__version__", "DeflateOptions", "Fragment"):
        from . import _wschannel

        return getattr(_wschannel, name)
    if name == "serve":
        from .server import serve

        return serve
    if name == "broadcast":
        from .server import broadcast

        return broadcast
    if name == "unix_serve":
        from .server import unix_serve

        return unix_serve
    raise AttributeError(f"module 'wschannel' has no attribute {name!r}")
