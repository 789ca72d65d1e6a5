"""``HtmlWebSocketChannel``: the browser's WebSocket under Pyodide.

Dart's ``html.dart``. In the browser (and in Node, whose ``WebSocket`` has the same
interface) the platform speaks the protocol: this module only wraps its ``WebSocket`` object
into a :class:`~wschannel.WebSocketChannel`, with the same ``stream_channel`` guarantees and
the same decisions as the CPython channel. Pure Python, without the engine: it imports on
CPython too, but only Pyodide can open a channel.

The wrapped object is reached through Pyodide's ``js`` module: its ``open``, ``message``,
``error`` and ``close`` events are listened to with proxies (``pyodide.ffi.create_proxy``)
that are removed and destroyed once the channel is over.

What the browser decides (WHATWG WebSockets Standard):

- it can send only the close codes 1000 and 3000-4999, so the other codes RFC 6455 lets an
  endpoint send (1001-1003, 1007-1014), which :meth:`WebSocketSink.close` accepts, go out as
  1000 with the same reason;
- it cannot stop reading: received messages are buffered without bound (no backpressure);
- it tells nothing about a failure but "error": a connection that cannot be opened fails
  ``ready`` with ``WebSocketChannelException('WebSocket connection failed.')`` (its
  ``inner`` a ``ConnectionError`` saying the same);
- it sends each message whole and hands over each message whole: ``send_fragments`` raises
  ``NotImplementedError`` saying so (the memory bound it promises cannot be kept), and
  ``fragments()`` (or ``delivery="pieces"``) gives each message as one last piece.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Final, NoReturn, Self

from ._fragments import Delivery, check_pieces_limit, in_pieces
from ._reconnect import Delays, RetryRule, backoff, redialable, retryable
from ._sink import PendingSink
from ._stream import MessageStream
from ._tasks import _retrieve_exception
from .channel import StoredWebSocketChannel
from .defaults import DEFAULT_CLOSE_TIMEOUT, DEFAULT_WRITE_LIMIT
from .exceptions import WebSocketChannelException
from .status import ABNORMAL_CLOSURE, NORMAL_CLOSURE

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_WRITE_LIMIT",
    "BinaryType",
    "Fragment",
    "HtmlWebSocketChannel",
]

_FLUSH_POLL: Final = 0.005
"""Seconds between two looks at ``bufferedAmount`` (the browser has no drain event)."""

# WebSocket.readyState (WHATWG WebSockets Standard §"The WebSocket interface").
_CONNECTING: Final = 0
_OPEN: Final = 1

_CONNECTION_FAILED: Final = "WebSocket connection failed."

_EVENTS: Final = ("open", "message", "error", "close")


_NO_FRAGMENTS: Final = (
    "send_fragments(): the browser's WebSocket cannot send a message in fragments (its "
    "send() takes one whole message), so the bounded memory send_fragments promises cannot "
    "be kept here. Join the chunks and send one message instead, "
    "channel.sink.add(b''.join(chunks)) or ''.join(chunks), if the message fits in memory."
)


class Fragment:
    """A piece of a message, as :class:`wschannel.Fragment` is on CPython (whose class is
    the engine's, which Pyodide does not have): ``data`` (``str`` or ``bytes``, or a
    ``Blob`` proxy with ``binary_type=BinaryType.BLOB``) and ``last``. The browser hands
    over whole messages, so each is one piece with ``last`` true."""

    __slots__ = ("data", "last")

    def __init__(self, data: Any, last: bool = True) -> None:
        self.data = data
        self.last = last

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fragment):
            return NotImplemented
        return bool(self.data == other.data) and self.last == other.last

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Fragment({self.data!r}, last={self.last})"


async def _pieces(messages: AsyncIterator[Any]) -> AsyncIterator[Fragment]:
    async for message in messages:
        yield message if type(message) is Fragment else Fragment(message)


def _connection_failed() -> WebSocketChannelException:
    """The error of a connection the browser could not open: all it says is that it failed
    (a refused port, a 403 and a TLS failure look alike to a page), so ``inner`` is a
    ``ConnectionError`` saying the same; a reconnecting loop retries it."""
    return WebSocketChannelException.from_inner(ConnectionError(_CONNECTION_FAILED))


class BinaryType(enum.Enum):
    """How binary messages arrive: the browser WebSocket's ``binaryType``.

    The value is what the browser calls it.
    """

    BLOB = "blob"
    """As the browser's ``Blob`` (a ``JsProxy``; ``await blob.arrayBuffer()`` reads it)."""

    LIST = "arraybuffer"
    """As ``bytes``, the default (Dart's ``BinaryType.list``, a ``Uint8List``)."""


def _pyodide() -> Any:
    """Pyodide's ``pyodide.ffi`` module; ``RuntimeError`` outside Pyodide."""
    try:
        import pyodide.ffi  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError(
            "HtmlWebSocketChannel needs Pyodide (the browser's WebSocket); on CPython, "
            "use wschannel.connect() or wschannel.io.IOWebSocketChannel."
        ) from None
    return pyodide.ffi


def _running_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "HtmlWebSocketChannel needs a running asyncio event loop (Pyodide's webloop: "
            "call it from a coroutine, e.g. under runPythonAsync)."
        ) from None


class _BrowserSocket:
    """The browser's ``WebSocket`` as the sink's :class:`~wschannel._sink.Target`: what a
    message, a close and backpressure are in the browser's terms."""

    __slots__ = ("_socket", "_to_js", "_write_limit")

    def __init__(self, socket: Any, to_js: Callable[[bytes], Any], write_limit: int) -> None:
        self._socket = socket
        self._to_js = to_js  # Pyodide's: bytes to a Uint8Array (a copy)
        self._write_limit = write_limit

    def send_text(self, text: str) -> None:
        self._socket.send(text)  # a CLOSING or CLOSED socket drops it (the peer closed)

    def send_bytes(self, data: bytes) -> None:
        self._socket.send(self._to_js(data))

    def close(self, code: int | None, reason: str | None) -> None:
        _close_socket(self._socket, code, reason)

    @property
    def write_buffer_full(self) -> bool:
        return int(self._socket.bufferedAmount) > self._write_limit

    async def flush(self) -> None:
        """Wait until the browser's ``bufferedAmount`` is at most the write limit, or the
        socket is no longer open (polled: the browser has no drain event)."""
        while self.write_buffer_full and int(self._socket.readyState) == _OPEN:
            await asyncio.sleep(_FLUSH_POLL)


def _close_socket(socket: Any, code: int | None, reason: str | None) -> None:
    """``socket.close()`` with the arguments the browser takes: no explicit ``undefined``
    (Dart's fix in 1.0.3), and only 1000 or 3000-4999 as a code (WHATWG ``close()``)."""
    if code is None:
        socket.close()
        return
    if not (code == NORMAL_CLOSURE or 3000 <= code <= 4999):
        code = NORMAL_CLOSURE  # 1001-1003, 1007-1014: valid on the wire, refused by browsers
    if reason:
        socket.close(code, reason)
    else:
        socket.close(code)


class HtmlWebSocketChannel(StoredWebSocketChannel):
    """A :class:`~wschannel.WebSocketChannel` over the browser's ``WebSocket``, under Pyodide.

    Made by :meth:`connect`, or ``HtmlWebSocketChannel(web_socket)`` to wrap a browser
    ``WebSocket`` (a ``JsProxy``) in any state, as Dart's constructor does:

    - open: ``ready`` resolves at once;
    - connecting: ``ready`` resolves on its ``open`` event, and messages added and a close
      issued meanwhile are sent once it is open;
    - closing or closed: ``ready`` fails with
      ``WebSocketChannelException('WebSocket state error: <readyState>')``, ``inner`` None.

    The wrapper does not change the socket's ``binaryType``: with ``'blob'`` (the browser's
    default) binary messages arrive as ``Blob`` proxies, with ``'arraybuffer'`` as
    ``bytes``. Text messages arrive as ``str``.

    An ``error`` event before the socket opened fails ``ready``, then the stream once, with
    ``WebSocketChannelException('WebSocket connection failed.')``; after that, the ``close``
    event that follows ends the stream and sets :attr:`close_code` (1006 for a lost
    connection). ``close_timeout`` bounds how long ``sink.done`` may wait for the closing
    handshake; ``write_limit`` is the ``bufferedAmount`` above which ``sink.flush()`` waits
    (``None`` disables each). Needs a running event loop (Pyodide's webloop).
    """

    __slots__ = (
        "_close_timeout",
        "_close_timer",
        "_ffi",
        "_listeners",
        "_loop",
        "_pieces",
        "_socket",
        "_write_limit",
    )

    _sink: PendingSink

    def __init__(
        self,
        web_socket: Any,
        *,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        write_limit: int | None = DEFAULT_WRITE_LIMIT,
        delivery: Delivery = "messages",
    ) -> None:
        self._pieces = in_pieces(delivery)  # each message as a Fragment (one, last)
        self._ffi = _pyodide()
        loop = self._loop = _running_loop()
        self._socket = web_socket
        self._ready: asyncio.Future[None] = loop.create_future()
        self._ready.add_done_callback(_retrieve_exception)
        self._stream = MessageStream(loop, max_queue=None)  # a browser cannot stop reading
        self._protocol: str | None = None
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._close_timeout = close_timeout
        self._close_timer: asyncio.TimerHandle | None = None
        self._write_limit = (1 << 62) if write_limit is None else write_limit
        # The close timer starts with the close, even while connecting: close_timeout bounds
        # the attempt too.
        self._sink = PendingSink(loop, self._stream, self._ready, closing=self._arm_close_timer)
        self._listeners: list[tuple[str, Any]] = []
        state = int(web_socket.readyState)
        if state > _OPEN:  # CLOSING or CLOSED
            self._fail(WebSocketChannelException(f"WebSocket state error: {state}"))
            return
        self._listen()
        if state == _OPEN:
            self._on_open()

    # Like Dart's factories, each class's connect takes its own options: this one does not
    # stand in for WebSocketChannel.connect (the platform's, whose other options the browser
    # cannot honour: wschannel._platform.connect rejects them by name).
    @classmethod
    @redialable
    def connect(  # type: ignore[override]
        cls,
        url: str,
        *,
        protocols: Iterable[str] | None = None,
        binary_type: BinaryType = BinaryType.LIST,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
        write_limit: int | None = DEFAULT_WRITE_LIMIT,
        reconnect_delays: Delays = backoff,
        should_retry: RetryRule = retryable,
        delivery: Delivery = "messages",
    ) -> Self:
        """Open a browser ``WebSocket`` to ``url`` and wrap it; returns the channel at once.

        ``protocols`` are the subprotocols to offer; ``binary_type`` says how binary
        messages arrive (``bytes`` by default, or ``Blob`` proxies). ``ready`` resolves once
        the socket is open, or fails with
        ``WebSocketChannelException('WebSocket connection failed.')``. Raises
        ``ValueError`` at once when the browser refuses the URL or the protocols (its
        ``SyntaxError``/``SecurityError``), ``RuntimeError`` outside Pyodide or without a
        running event loop. ``reconnect_delays``: the delays between attempts when the
        channel is iterated (``async for channel in HtmlWebSocketChannel.connect(url)``
        reconnects; see :meth:`WebSocketChannel.__aiter__`), and ``should_retry`` which
        failed attempts are tried again (:func:`wschannel.retryable` by default).
        ``delivery="pieces"``: the stream gives each message as a :class:`Fragment` (one
        piece, ``last`` true), as CPython's channels give pieces (see :meth:`fragments`).
        """
        in_pieces(delivery)
        ffi = _pyodide()
        _running_loop()
        import js  # type: ignore[import-not-found]

        offered = [str(protocol) for protocol in protocols or ()]
        try:
            web_socket = js.WebSocket.new(str(url), ffi.to_js(offered))
        except ffi.JsException as exc:
            raise ValueError(f"Cannot connect to {url!r}: {exc}") from exc
        web_socket.binaryType = BinaryType(binary_type).value
        return cls(
            web_socket, close_timeout=close_timeout, write_limit=write_limit, delivery=delivery
        )

    # The browser's events.

    def _listen(self) -> None:
        create_proxy = self._ffi.create_proxy
        handlers = (self._on_open, self._on_message, self._on_error, self._on_close)
        for name, handler in zip(_EVENTS, handlers, strict=True):
            proxy = create_proxy(handler)
            self._socket.addEventListener(name, proxy)
            self._listeners.append((name, proxy))

    def _unlisten(self) -> None:
        """Remove the listeners; destroy their proxies once the current event is over."""
        listeners, self._listeners = self._listeners, []
        for name, proxy in listeners:
            self._socket.removeEventListener(name, proxy)
        if listeners:
            self._loop.call_soon(_destroy, [proxy for _, proxy in listeners])

    def _on_open(self, event: Any = None) -> None:
        if self._ready.done():
            return
        sink = self._sink
        self._protocol = str(self._socket.protocol) or None
        sink._open(_BrowserSocket(self._socket, self._ffi.to_js, self._write_limit))
        self._ready.set_result(None)

    def _on_message(self, event: Any) -> None:
        data = event.data
        if type(data) is str:
            pass
        elif isinstance(data, self._ffi.JsBuffer):  # binaryType 'arraybuffer'
            data = data.to_bytes()
        # else binaryType 'blob': the Blob proxy itself
        item: Any = Fragment(data) if self._pieces else data  # the stream takes either
        self._stream._add(item)

    def _on_error(self, event: Any) -> None:
        # Open connections report their end through the close event (design.md decision 7: only a
        # failure to connect is an error on a channel).
        if not self._ready.done():
            self._fail(_connection_failed())

    def _on_close(self, event: Any) -> None:
        if not self._ready.done():
            self._fail(_connection_failed())
            return
        self._close_code = int(event.code)
        self._close_reason = str(event.reason)
        self._finish()

    # The end.

    def _arm_close_timer(self) -> None:
        timeout = self._close_timeout
        if timeout is not None and self._close_timer is None:
            self._close_timer = self._loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        """The closing handshake (or the connection attempt) took ``close_timeout``."""
        self._close_timer = None
        if self._sink.done.done():
            return
        if not self._ready.done():
            self._fail(WebSocketChannelException("The connection attempt was cancelled."))
        else:
            if self._close_code is None:
                self._close_code, self._close_reason = ABNORMAL_CLOSURE, ""
            self._finish()
        # After the listeners are gone: a close() while connecting may fire "error" at once.
        if int(self._socket.readyState) <= _OPEN:
            self._socket.close()  # allowed while connecting: the attempt is dropped

    def _finish(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._unlisten()
        self._stream._end()
        self._sink._finish()

    def _fail(self, error: BaseException) -> None:
        """The connection could not be opened: ``ready``, then the stream, raise ``error``."""
        if not self._ready.done():
            self._ready.set_exception(error)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._unlisten()
        self._stream._end(error)
        self._sink._finish()

    # The channel.

    def send_fragments(
        self, chunks: Iterable[str | Buffer] | AsyncIterable[str | Buffer]
    ) -> Awaitable[None]:
        """Not in the browser: its WebSocket sends each message whole, so a message cannot
        go out in pieces with bounded memory. Raises ``NotImplementedError`` at the call,
        saying what to do instead (join the chunks and ``sink.add`` the message)."""
        return _refuse_fragments()

    def fragments(
        self, *, max_message_size: int | EllipsisType | None = ...
    ) -> AsyncIterator[Fragment]:
        """Messages as pieces, as CPython's channels give them (``async for piece in
        channel.fragments():``): the browser hands over each message whole, so each is one
        :class:`Fragment` with ``last`` true. Subscribes to :attr:`stream`
        (``StateError`` if it was).

        The browser assembles messages itself and takes any size: ``max_message_size``
        other than ``...`` (the default) or ``None`` raises ``ValueError`` (no limit can be
        set here)."""
        check_pieces_limit(max_message_size)
        if max_message_size is not ... and max_message_size is not None:
            raise ValueError(
                f"fragments(max_message_size={max_message_size!r}): the browser's WebSocket "
                "assembles each message itself and takes any size; no limit can be set "
                "here. Leave max_message_size out (or None) in the browser."
            )
        return _pieces(aiter(self.stream))

    @property
    def inner_web_socket(self) -> Any:
        """The browser ``WebSocket`` this channel wraps (a ``JsProxy``)."""
        return self._socket

    @property
    def buffered_amount(self) -> int:
        """Bytes the browser has queued to send and not sent yet (``bufferedAmount``)."""
        return int(self._socket.bufferedAmount)


def _refuse_fragments() -> NoReturn:
    raise NotImplementedError(_NO_FRAGMENTS)


def _destroy(proxies: list[Any]) -> None:
    for proxy in proxies:
        proxy.destroy()
