"""``AdapterWebSocketChannel``: a channel over any low-level WebSocket (the generic part).

Dart's ``AdapterWebSocketChannel``. A low-level :class:`~wschannel.adapter.WebSocket` has no
guarantees and no buffering: ``send_text``/``send_bytes`` send at once, ``close()`` closes,
``events`` yields what arrives. The adapter turns one into a
:class:`~wschannel.WebSocketChannel`, with ``ready``, a single-subscription stream, a sink
keeping ``stream_channel``'s guarantees, and ``close_code``/``close_reason``.

Below :mod:`wschannel.io`, whose :class:`~wschannel.io.IOWebSocketChannel` builds on it, and
:mod:`wschannel.asgi`; :mod:`wschannel.adapter`, the public module, adds
:class:`~wschannel.adapter.IOWebSocket` (which wraps an ``IOWebSocketChannel``) and sits
above them. Pure Python, without the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Self

from ._message import binary_view
from ._sink import GuaranteeSink
from ._stream import MessageStream
from ._tasks import _retrieve_exception, spawn
from ._websocket import (
    BinaryDataReceived,
    CloseReceived,
    TextDataReceived,
    WebSocket,
)
from .channel import StoredWebSocketChannel, installed_platform
from .defaults import DEFAULT_MAX_QUEUE
from .exceptions import WebSocketChannelException, WebSocketConnectionClosed
from .status import ABNORMAL_CLOSURE, NO_STATUS_RECEIVED

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["AdapterWebSocketChannel"]


class _AdapterSink(GuaranteeSink):
    """The sink of an :class:`AdapterWebSocketChannel`: the guarantees, then the socket."""

    __slots__ = ("_channel", "_close_args", "_pending", "_socket")

    def __init__(self, channel: AdapterWebSocketChannel) -> None:
        super().__init__(channel._loop, channel._stream)
        self._channel = channel
        self._socket: WebSocket | None = None  # once open
        self._pending: list[str | bytes] = []  # added before that
        self._close_args: tuple[int | None, str | None] | None = None

    def _send(self, data: str | Buffer) -> None:
        if isinstance(data, str):
            message: str | bytes = data
        elif type(data) is bytes:
            message = data
        else:
            message = bytes(binary_view(data))  # a copy: the caller may change it later
        if self._disconnected:
            return
        socket = self._socket
        if socket is None:
            self._pending.append(message)
            return
        try:
            if type(message) is str:
                socket.send_text(message)
            else:
                socket.send_bytes(message)  # type: ignore[arg-type]
        except WebSocketConnectionClosed:
            pass  # the peer closed; its CloseReceived is on its way

    def _start_close(self, code: int | None, reason: str | None) -> None:
        socket = self._socket
        if socket is None:
            self._close_args = (code, reason)  # performed once open
            return
        self._socket = None
        spawn(self._loop, self._close_socket(socket, code, reason))

    async def _close_socket(self, socket: WebSocket, code: int | None, reason: str | None) -> None:
        try:
            await socket.close(code, reason)
        except WebSocketConnectionClosed:
            pass  # closing an already closed connection is not an error
        except Exception as exc:
            if self._error is None:
                self._error = exc
        channel = self._channel
        if channel._close_code is None:
            # api.md decision 4: the peer's echo of our close, when the socket reports it.
            channel._close_code = getattr(socket, "close_code", None)
            channel._close_reason = getattr(socket, "close_reason", None)
        self._finish()

    def _write_buffer_full(self) -> bool:
        socket = self._socket
        if socket is None:
            return not self._disconnected  # flush() waits for ready
        return bool(getattr(socket, "write_buffer_full", False))

    async def flush(self) -> None:
        ready = self._channel._ready
        if not ready.done():
            await asyncio.wait([ready])
        flush = getattr(self._socket, "flush", None)
        if flush is not None:
            await flush()

    def _open(self, socket: WebSocket) -> None:
        self._socket = socket
        pending, self._pending = self._pending, []
        for message in pending:
            self._send(message)
        if self._close_args is not None:
            self._start_close(*self._close_args)

    def _disconnect(self) -> None:
        super()._disconnect()
        self._socket = None
        self._pending = []


class AdapterWebSocketChannel(StoredWebSocketChannel):
    """A :class:`~wschannel.WebSocketChannel` over a low-level :class:`WebSocket`.

    ``socket`` is an open low-level socket, or an awaitable of one (a coroutine, a Task, a
    Future): ``AdapterWebSocketChannel(IOWebSocket.connect(url))``. Needs a running event
    loop. Until the socket is there, added messages and a ``close()`` wait, then are sent in
    order. If awaiting it fails, ``ready`` and then the stream raise the error wrapped in a
    :class:`WebSocketChannelException` (``inner`` and ``__cause__`` hold it), except a
    ``TimeoutError``, raised as it is.

    ``protocol`` is ``None`` when the socket's is ``''``. ``close_code`` and
    ``close_reason`` come from the socket's :class:`CloseReceived`; after a close started by
    this side (which gets no ``CloseReceived``), from the socket's ``close_code`` and
    ``close_reason`` attributes if it has them (:class:`IOWebSocket` reports the peer's echo),
    else they stay ``None``. They are 1006 and ``''`` when the events end without a
    ``CloseReceived``. ``max_queue`` bounds the messages buffered for
    the stream: when it is full, the adapter stops taking events from the socket.
    """

    __slots__ = (
        "_flow",
        "_loop",
    )

    def __init__(
        self,
        socket: WebSocket | Awaitable[WebSocket],
        *,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
    ) -> None:
        self._setup(max_queue)
        self._sink = _AdapterSink(self)
        self._adapt(socket)

    @classmethod
    def connect(cls, url: str, *, protocols: Iterable[str] | None = None) -> Self:
        """Connect to a ``ws://`` or ``wss://`` URL with the platform's low-level WebSocket
        (:class:`~wschannel.adapter.IOWebSocket`); returns at once.

        Raises ``ValueError`` for an invalid URL and ``RuntimeError`` without a running event
        loop; every other failure goes to ``ready`` (see the class).
        """
        return cls(installed_platform().connect_socket(url, protocols=protocols))

    def _setup(self, max_queue: int | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{type(self).__name__} needs a running asyncio event loop; "
                "from synchronous code, use wschannel.sync instead."
            ) from None
        self._loop = loop
        self._ready: asyncio.Future[None] = loop.create_future()
        self._ready.add_done_callback(_retrieve_exception)
        self._stream = MessageStream(loop, max_queue=max_queue)
        self._protocol: str | None = None
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._flow: asyncio.Future[None] | None = None  # set while the stream is full

    def _adapt(self, socket: WebSocket | Awaitable[WebSocket]) -> None:
        """Dart's adapter algorithm (§1.4): await the socket, then wire it up."""
        if inspect.isawaitable(socket):
            self._spawn(self._await_socket(socket))
        else:
            self._open(socket)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        spawn(self._loop, coroutine)

    async def _await_socket(self, awaitable: Awaitable[WebSocket]) -> None:
        try:
            socket = await awaitable
        except TimeoutError as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            self._fail(WebSocketChannelException("The connection attempt was cancelled."))
            raise
        except Exception as exc:
            self._fail(WebSocketChannelException.from_inner(exc))
        else:
            self._open(socket)

    def _open(self, socket: WebSocket) -> None:
        sink = self._sink
        assert isinstance(sink, _AdapterSink)
        self._protocol = socket.protocol or None
        self._stream._set_flow_control(self._pause, self._resume)
        self._spawn(self._read(socket, sink))
        sink._open(socket)
        if not self._ready.done():
            self._ready.set_result(None)

    async def _read(self, socket: WebSocket, sink: _AdapterSink) -> None:
        """Move the socket's events into the stream, pausing while it is full."""
        stream = self._stream
        add = stream._add
        closed = False
        with contextlib.suppress(Exception):  # a broken socket is a lost connection
            async for event in socket.events:
                if type(event) is TextDataReceived:
                    add(event.text)
                elif type(event) is BinaryDataReceived:
                    data = event.data
                    add(data if type(data) is bytes else bytes(data))
                elif isinstance(event, CloseReceived):
                    self._close_code = NO_STATUS_RECEIVED if event.code is None else event.code
                    self._close_reason = event.reason
                    closed = True
                    break
                if self._flow is not None:
                    await self._flow
        if not closed and not sink._close_started:
            self._close_code, self._close_reason = ABNORMAL_CLOSURE, ""
        stream._end()
        if closed or not sink._close_started:
            sink._finish()  # after a local close, the close task finishes the sink

    def _pause(self) -> None:
        if self._flow is None:
            self._flow = self._loop.create_future()

    def _resume(self) -> None:
        flow, self._flow = self._flow, None
        if flow is not None and not flow.done():
            flow.set_result(None)

    def _fail(self, error: BaseException) -> None:
        """The connection could not be opened."""
        if not self._ready.done():
            self._ready.set_exception(error)
        self._stream._end(error)
        sink = self._sink
        if isinstance(sink, GuaranteeSink):
            sink._finish()
