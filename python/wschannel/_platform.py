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
from typing import TYPE_CHECKING, Any, Final, cast

from ._websocket import WebSocket
from .channel import ConnectOptions, WebSocketChannel

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["connect", "connect_socket", "over", "under_trio"]

BROWSER_OPTIONS: Final = (
    "protocols",
    "close_timeout",
    "write_limit",
    "reconnect_delays",
    "should_retry",
    "delivery",
)
"""The options of :func:`connect` the browser's WebSocket honours (under Pyodide)."""


def connect(url: str, **options: Unpack[ConnectOptions]) -> WebSocketChannel:
    """Connect to a ``ws://`` or ``wss://`` URL; returns the channel at once.

    The connection opens in the background and :attr:`WebSocketChannel.ready` reports how
    that went; ``async for channel in connect(url)`` reconnects (see
    :meth:`WebSocketChannel.__aiter__`). Picks :class:`~wschannel.io.IOWebSocketChannel` on
    CPython, which takes every option (:class:`~wschannel.channel.ConnectOptions`: those of
    :meth:`IOWebSocketChannel.connect <wschannel.io.IOWebSocketChannel.connect>`), and the
    browser's WebSocket under Pyodide, which honours only ``protocols``, ``close_timeout``,
    ``write_limit``, ``reconnect_delays``, ``should_retry`` and ``delivery``: another option raises
    ``TypeError`` naming it (a program meant for both leaves the others out). Needs a
    running event loop (``wschannel.sync`` blocks instead).

    Under trio (``trio.run``, or anyio on trio), :func:`wschannel.trio.connect`, with the
    same options: it returns a :class:`wschannel.trio.Connect`, which opens the channel in
    ``async with connect(url) as channel:``, ``channel = await connect(url)`` or ``async for
    channel in connect(url):`` (the three forms that work on asyncio too); using it as the
    channel itself (``ready``, ``stream``, ``sink``...) raises ``AttributeError`` saying so.
    """
    if in_browser():
        from .html import HtmlWebSocketChannel

        check_browser_options(options)
        return HtmlWebSocketChannel.connect(url, **options)  # type: ignore[misc]
    if under_trio():
        from .trio import connect as trio_connect

        # Not a channel: a Connect, which opens one in ``async with``, ``await`` or
        # ``async for`` (trio has no background task to open it in), and says so if used
        # as a channel. Typed as the channel asyncio's connect returns, which those three
        # forms also open, so that one program runs on both.
        return cast("WebSocketChannel", trio_connect(url, **options))
    from .io import IOWebSocketChannel

    return IOWebSocketChannel.connect(url, **options)


def under_trio() -> bool:
    """Whether this thread runs trio (``trio.run``, or anyio on its trio backend), as
    :mod:`sniffio` tells (trio and anyio depend on it; neither is imported if the program
    has not imported trio)."""
    if "trio" not in sys.modules:
        return False
    import sniffio

    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


def in_browser() -> bool:
    """Whether this is Pyodide, where the browser (or Node) speaks WebSocket."""
    return sys.platform == "emscripten" or "pyodide" in sys.modules


def check_browser_options(options: ConnectOptions) -> None:
    """``TypeError`` naming the options of ``options`` the browser's WebSocket cannot
    honour."""
    unsupported = sorted(set(options) - set(BROWSER_OPTIONS))
    if unsupported:
        names = ", ".join(f"{name}={options[name]!r}" for name in unsupported)  # type: ignore[literal-required]
        raise TypeError(
            f"connect(): the browser's WebSocket cannot honour {names} (under Pyodide, "
            f"wschannel.connect takes only {', '.join(BROWSER_OPTIONS)}). Leave "
            f"{'it' if len(unsupported) == 1 else 'them'} out, or pass "
            f"{'it' if len(unsupported) == 1 else 'them'} only where "
            "wschannel.io is used (sys.platform != 'emscripten')."
        )


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
