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
from typing import Any, Final, Self

from ._sink import GuaranteeSink, PendingSink
from ._stream import MessageStream
from ._tasks import Gate, _retrieve_exception, spawn
from ._websocket import (
    BinaryDataReceived,
    CloseReceived,
    TextDataReceived,
    WebSocket,
)
from .channel import StoredWebSocketChannel, installed_platform
from .defaults import DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_QUEUE
from .exceptions import WebSocketChannelException
from .status import ABNORMAL_CLOSURE, NO_STATUS_RECEIVED

__all__ = ["AdapterWebSocketChannel"]

_CONSUMER_WAIT: Final = DEFAULT_CLOSE_TIMEOUT
"""Seconds the adapter waits for its stream's consumer to answer what it took before it
reads ahead anyway (as the asyncio connection waits before it answers a peer's close)."""


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
    ``CloseReceived``.

    Once the stream has a consumer, the adapter takes the socket's next event only after
    the consumer's turn: a consumer waiting for a message gets one loop turn to take it and
    answer; one that has not taken it by then is waited for until it asks for the next
    message with none left, at most ``DEFAULT_CLOSE_TIMEOUT`` seconds. So a socket that
    holds its answer to the peer's close until its reader has taken what came before
    (:class:`IOWebSocket` does) sends the consumer's answers first. Without a consumer, or
    with one that does not answer, the adapter reads ahead: ``max_queue`` bounds the
    messages buffered for the stream, and when it is full, the adapter stops taking events
    from the socket.
    """

    __slots__ = (
        "_answers",
        "_consumer_late",
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
        self._sink = PendingSink(self._loop, self._stream, self._ready, closed=self._closed_by_us)
        self._adapt(socket)

    # Like Dart's factories, each class's connect takes its own options: this one does not
    # stand in for WebSocketChannel.connect (the platform's, with all of its options).
    @classmethod
    def connect(  # type: ignore[override]
        cls, url: str, *, protocols: Iterable[str] | None = None
    ) -> Self:
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
        self._flow = Gate(loop.create_future)  # shut while the stream is full
        self._answers: asyncio.Future[None] | None = None  # set while the consumer answers
        self._consumer_late = False  # it did not answer within _CONSUMER_WAIT: read ahead

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
        assert isinstance(sink, PendingSink)
        self._protocol = socket.protocol or None
        self._stream._set_flow_control(self._flow.shut, self._flow.open)
        self._spawn(self._read(socket, sink))
        sink._open(socket)
        if not self._ready.done():
            self._ready.set_result(None)

    async def _read(self, socket: WebSocket, sink: PendingSink) -> None:
        """Move the socket's events into the stream, pausing while it is full."""
        stream = self._stream
        add = stream._add
        flow = self._flow
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
                if not flow.is_open:
                    await flow.wait()
                if stream.is_subscribed:
                    await self._consumer_turn()
        if not closed and not sink._close_started:
            self._close_code, self._close_reason = ABNORMAL_CLOSURE, ""
        stream._end()
        if closed or not sink._close_started:
            sink._finish()  # after a local close, the close task finishes the sink

    async def _consumer_turn(self) -> None:
        """Before the socket's next event: let the consumer take what the stream holds and
        answer it, so that a socket that holds its answer to the peer's close until its
        reader has taken the messages before it (:class:`~wschannel.adapter.IOWebSocket`,
        as every wschannel connection) sends the consumer's answers first.

        A consumer waiting for a message takes it, and answers, in the next loop turn. One
        that has not by then (busy, or paused) is waited for until it asks for the next
        message with none left, at most :data:`_CONSUMER_WAIT` (then the adapter reads
        ahead until it catches up)."""
        await asyncio.sleep(0)
        if self._consumer_late or not self._stream._await_answers(self._answered):
            return
        waiter = self._answers = self._loop.create_future()
        await asyncio.wait([waiter], timeout=_CONSUMER_WAIT)
        self._answers = None
        if not waiter.done():
            self._consumer_late = True

    def _answered(self) -> None:
        """The stream's: the consumer has answered what it held."""
        self._consumer_late = False
        waiter = self._answers
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _closed_by_us(self, socket: WebSocket) -> None:
        """Our close of ``socket`` is over: the peer's echo, when the socket reports it
        (design.md decision 4)."""
        if self._close_code is None:
            self._close_code = getattr(socket, "close_code", None)
            self._close_reason = getattr(socket, "close_reason", None)

    def _fail(self, error: BaseException) -> None:
        """The connection could not be opened."""
        if not self._ready.done():
            self._ready.set_exception(error)
        self._stream._end(error)
        sink = self._sink
        if isinstance(sink, GuaranteeSink):
            sink._finish()
