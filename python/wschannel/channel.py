"""The channel: what every ``wschannel`` channel looks like (:class:`WebSocketChannel`).

Pure Python (no engine), so that every implementation shares it, including the browser one.
The channel's parts live in their own modules and are importable from here too:
:class:`MessageStream` (``wschannel._stream``), :class:`WebSocketSink` and
:class:`GuaranteeSink`, which holds the sink rules every WebSocket sink keeps
(``wschannel._sink``), Dart's ``stream_channel`` toolkit (:mod:`wschannel.stream_channel`:
:class:`StreamChannel`, :class:`StreamSink`, the transformers, :data:`json_document`), and
:data:`Message`, :func:`binary_view` and :func:`check_close_args` (``wschannel._message``).

A :class:`WebSocketChannel` is a pair: :attr:`~WebSocketChannel.stream`, the messages from the
peer, and :attr:`~WebSocketChannel.sink`, where messages to the peer go. It keeps
``stream_channel``'s guarantees:

1. The stream is single-subscription: :class:`MessageStream` can be iterated or listened to once.
2. Closing the sink ends the stream at once: messages still buffered are dropped.
3. Once the stream has ended because of the peer, the sink silently drops what is added.
4. The same holds when the stream ends before anyone listens.
5. Cancelling a subscription does not close the connection; a close from the peer is still
   handled (and ``close_code`` set).
6. An error added to the sink (``add_error``) is not sent: it closes the connection and fails
   ``sink.done``.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Generator, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypedDict, cast

from ._message import Message, binary_view, check_close_args
from ._reconnect import Delays, Reconnecting, Redial, RetryRule, close_code_for
from ._sink import GuaranteeSink, WebSocketSink
from ._stream import MessageStream, StreamSubscription
from .defaults import DEFAULT_MAX_QUEUE
from .stream_channel import (
    MappedSink,
    MappedStream,
    StreamChannel,
    StreamChannelTransformer,
    StreamSink,
    StreamSinkTransformer,
    StreamTransformer,
    json_document,
    with_close_guarantee,
)

if TYPE_CHECKING:
    import os
    import ssl

    from typing_extensions import Unpack

    from ._websocket import WebSocket
    from ._wschannel import DeflateOptions

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "ConnectOptions",
    "GuaranteeSink",
    "MappedSink",
    "MappedStream",
    "Message",
    "MessageStream",
    "StoredWebSocketChannel",
    "StreamChannel",
    "StreamChannelTransformer",
    "StreamSink",
    "StreamSinkTransformer",
    "StreamSubscription",
    "StreamTransformer",
    "WebSocketChannel",
    "WebSocketSink",
    "binary_view",
    "check_close_args",
    "connect",
    "json_document",
    "with_close_guarantee",
]


class WebSocketChannel(StreamChannel):
    """A two-way WebSocket connection: :attr:`stream` in, :attr:`sink` out.

    The channel is awaitable (``channel = await connect(url)`` waits for :attr:`ready`) and
    an async context manager (waits for :attr:`ready`, closes the sink on exit).
    """

    __slots__ = ()

    @property
    @abstractmethod
    def protocol(self) -> str | None:
        """The subprotocol the server chose, or ``None`` (none chosen, or not yet open)."""

    @property
    @abstractmethod
    def close_code(self) -> int | None:
        """The code of the peer's close frame (RFC 6455 §7.1.5); ``None`` before.

        1005 when the frame had no code; 1006 when the connection was lost without one; the
        code this side sent when it failed the connection (1002, 1007, 1009...).
        """

    @property
    @abstractmethod
    def close_reason(self) -> str | None:
        """The reason of the peer's close frame (RFC 6455 §7.1.6), ``''`` if none; ``None``
        before."""

    @property
    @abstractmethod
    def ready(self) -> asyncio.Future[None]:
        """Resolves when the connection is open; fails if it could not be opened.

        With :class:`~wschannel.WebSocketChannelException`, or ``TimeoutError`` for a
        connect timeout. The same error is raised once by :attr:`stream`, so an unawaited
        ``ready`` does not log "exception was never retrieved".
        """

    @property
    @abstractmethod
    def stream(self) -> MessageStream:
        """The messages from the peer (single-subscription)."""

    @property
    @abstractmethod
    def sink(self) -> WebSocketSink:
        """Where messages to the peer go."""

    def __await__(self) -> Generator[Any, None, Self]:
        yield from self.ready.__await__()
        return self

    async def __aenter__(self) -> Self:
        await self.ready
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close with 1000 (normal closure), 1011 (internal error) when the block raised, or
        1001 (going away) when the task was cancelled, and wait until the connection is
        closed (as websockets does; bounded by ``close_timeout``). A sink already closed
        keeps its code."""
        await self.sink.close(close_code_for(exc))

    def __aiter__(self) -> AsyncIterator[Self]:
        """``async for channel in wschannel.connect(url):`` this channel once open, then,
        each time the loop comes back, a new connection made the same way (the previous one
        closed with 1000 if it is still open), reconnecting when the connection is lost or
        an attempt fails, with backoff (``reconnect_delays``). See
        :class:`wschannel._reconnect.Reconnecting` for when it stops and what is retried.

        Only a channel made by ``connect`` can be iterated: ``TypeError`` otherwise.
        """
        redial: Redial[Any] | None = getattr(self, "_redial", None)
        if redial is None:
            raise TypeError(
                f"This {type(self).__name__} was not made by connect(), so it cannot "
                "reconnect: iterate over wschannel.connect(url, ...) instead."
            )
        return Reconnecting(self, cast("Redial[Self]", redial))

    @staticmethod
    def sign_key(key: str) -> str:
        """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
        from ._wschannel import sign_key

        return sign_key(key)

    @classmethod
    def connect(cls, url: str, **options: Unpack[ConnectOptions]) -> WebSocketChannel:
        """Connect to ``url`` with the platform's implementation and any of its options;
        see :func:`connect`."""
        return connect(url, **options)

    @classmethod
    def over(
        cls,
        reader: Any,
        writer: Any,
        *,
        protocol: str | None = None,
        ping_interval: float | None = None,
        server_side: bool = True,
        **options: Any,
    ) -> WebSocketChannel:
        """WebSocket framing over a byte stream whose HTTP upgrade is already done.

        Dart 2.x's ``WebSocketChannel(StreamChannel<List<int>>, ...)``: ``reader`` and
        ``writer`` are the two halves of the byte stream (asyncio streams, an anyio/trio
        byte stream, a pipe...), ``protocol`` the subprotocol that handshake chose (returned
        by :attr:`protocol`), ``ping_interval`` enables keepalive, ``server_side`` says which
        role this end plays (a server sends unmasked frames, a client masked ones; RFC 6455
        §5.3). The channel is open at once. See :func:`wschannel.bytestream.over`, which
        this calls, for the other ``options``.
        """
        return installed_platform().over(
            reader,
            writer,
            protocol=protocol,
            ping_interval=ping_interval,
            server_side=server_side,
            **options,
        )


class StoredWebSocketChannel(WebSocketChannel):
    """A channel that keeps its state in attributes, which its members report as they are.

    The implementations (:mod:`~wschannel.adapter`, :mod:`~wschannel.io`,
    :mod:`~wschannel.html`, :mod:`~wschannel.bytestream`) set these attributes; this class
    answers for them.
    """

    __slots__ = (
        "_close_code",
        "_close_reason",
        "_protocol",
        "_ready",
        "_redial",
        "_sink",
        "_stream",
    )

    _protocol: str | None
    _close_code: int | None
    _close_reason: str | None
    _ready: asyncio.Future[None]
    _stream: MessageStream
    _sink: WebSocketSink
    _redial: Redial[Any] | None  # set by connect (wschannel._reconnect.redialable)

    @property
    def protocol(self) -> str | None:
        return self._protocol

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def ready(self) -> asyncio.Future[None]:
        return self._ready

    @property
    def stream(self) -> MessageStream:
        return self._stream

    @property
    def sink(self) -> WebSocketSink:
        return self._sink

    def __repr__(self) -> str:
        if not self._ready.done():
            state = "connecting"
        elif self._sink.done.done():
            state = f"closed {self._close_code}"
        else:
            state = "open"
        return f"<{type(self).__name__} {state}>"


class ConnectOptions(TypedDict, total=False):
    """The options of :func:`wschannel.connect`: those of the platform's ``connect``,
    :meth:`IOWebSocketChannel.connect <wschannel.io.IOWebSocketChannel.connect>` on CPython
    (see there for each). Under Pyodide the browser's WebSocket honours only ``protocols``,
    ``close_timeout``, ``write_limit`` and ``reconnect_delays``; any other raises
    ``TypeError`` naming it."""

    protocols: Iterable[str] | None
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None
    ssl: ssl.SSLContext | bool | None
    compression: bool | DeflateOptions | None
    max_message_size: int | None
    max_queue: int | None
    write_limit: int | None
    connect_timeout: float | None
    ping_interval: float | None
    pong_timeout: float | None
    close_timeout: float | None
    user_agent: str | None
    max_header_size: int
    unix_socket: str | os.PathLike[str] | None
    proxy: str | Literal[True] | None
    proxy_ssl: ssl.SSLContext | None
    max_redirects: int
    reconnect_delays: Delays
    should_retry: RetryRule
    delivery: Literal["messages", "pieces"]


def connect(url: str, **options: Unpack[ConnectOptions]) -> WebSocketChannel:
    """Connect to a ``ws://`` or ``wss://`` URL with the platform's implementation; returns
    the channel at once. The same as :func:`wschannel.connect` (see there)."""
    return installed_platform().connect(url, **options)


class Platform(Protocol):
    """What :meth:`WebSocketChannel.connect`, :meth:`WebSocketChannel.over` and
    ``AdapterWebSocketChannel.connect`` call: the platform's implementations
    (:mod:`wschannel._platform`).

    They sit above this module, which must not import them (each imports this one): the
    package's ``__init__`` installs them with :func:`install_platform`, so they are in place
    before any code can reach this module.
    """

    def connect(self, url: str, **options: Unpack[ConnectOptions]) -> WebSocketChannel:
        """A channel to ``url`` (CPython's asyncio sockets, or the browser's WebSocket)."""
        ...

    def over(
        self,
        reader: Any,
        writer: Any,
        *,
        protocol: str | None = None,
        ping_interval: float | None = None,
        server_side: bool = True,
        **options: Any,
    ) -> WebSocketChannel:
        """A channel over a byte stream whose HTTP upgrade is done."""
        ...

    def connect_socket(
        self, url: str, *, protocols: Iterable[str] | None = None
    ) -> Awaitable[WebSocket]:
        """A low-level WebSocket to ``url``, to await (for ``AdapterWebSocketChannel.connect``)."""
        ...


_platform: Platform | None = None


def install_platform(platform: Platform) -> None:
    """Make ``platform`` the one :meth:`WebSocketChannel.connect`, :meth:`~WebSocketChannel.over`
    and :func:`connect` use (the package's ``__init__`` does, once)."""
    global _platform
    _platform = platform


def installed_platform() -> Platform:
    """The platform the package installed (:mod:`wschannel._platform`)."""
    platform = _platform
    if platform is None:  # only if the package's __init__ failed half-way
        raise RuntimeError("wschannel's platform is not installed: import wschannel first.")
    return platform
