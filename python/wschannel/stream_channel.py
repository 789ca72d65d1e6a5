"""Dart's ``stream_channel`` toolkit: :class:`StreamChannel`, :class:`StreamSink` and what
builds channels from channels.

:class:`StreamChannel` and :class:`StreamSink` are Dart's ``StreamChannel``/``StreamSink``
with the ``StreamChannelMixin`` methods (``pipe``, ``transform``...); the transformers,
:class:`MappedStream`, :class:`MappedSink` and :func:`with_close_guarantee` derive channels
that keep guarantee 2 (closing the sink ends the stream at once); :data:`json_document` is a
transformer. Every :class:`~wschannel.WebSocketChannel` is a :class:`StreamChannel`.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Final, Protocol, Self

from ._stream import StreamSubscription
from ._tasks import _aclose, _close_iterator
from .exceptions import StateError

__all__ = [
    "MappedSink",
    "MappedStream",
    "StreamChannel",
    "StreamChannelTransformer",
    "StreamSink",
    "StreamSinkTransformer",
    "StreamTransformer",
    "json_document",
    "with_close_guarantee",
]


class StreamSink(ABC):
    """Where a :class:`StreamChannel`'s outgoing values go (Dart's ``StreamSink``).

    :meth:`add` sends a value, :meth:`add_error` closes the channel with an error,
    :meth:`add_stream` forwards a whole async iterable, :meth:`close` closes the channel
    and returns :attr:`done`, which resolves once the channel is closed.
    """

    __slots__ = ()

    @abstractmethod
    def add(self, data: Any) -> None:
        """Send one value."""

    def add_error(self, error: BaseException) -> None:
        """Close the channel because of ``error``, which :attr:`done` then raises."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_error().")

    def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
        """Send every value of ``source``; the result resolves when it is exhausted."""
        raise NotImplementedError(f"{type(self).__name__} does not support add_stream().")

    @abstractmethod
    def close(self) -> Awaitable[None]:
        """Close the channel; returns :attr:`done`."""

    @property
    @abstractmethod
    def done(self) -> Awaitable[None]:
        """Resolves once the channel is closed."""

    async def flush(self) -> None:  # noqa: B027 (optional to override)
        """Wait until the transport can take more data (its write buffer is below the limit)."""


class StreamChannel(ABC):
    """A two-way channel: :attr:`stream` in, :attr:`sink` out (Dart's ``StreamChannel``).

    Every :class:`WebSocketChannel` is one. The methods here (Dart's ``StreamChannelMixin``)
    build plain :class:`StreamChannel` objects from it: they keep guarantee 2 (closing the
    sink ends the stream at once), but not the WebSocket-specific API (``protocol``,
    ``close_code``, ``ready``), which stays on the original channel.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def stream(self) -> AsyncIterable[Any]:
        """The incoming values (single-subscription)."""

    @property
    @abstractmethod
    def sink(self) -> StreamSink:
        """Where outgoing values go."""

    async def pipe(self, other: StreamChannel) -> None:
        """Connect this channel to ``other`` until both directions have ended.

        This stream goes into ``other.sink`` and ``other.stream`` into this sink, each with
        :meth:`StreamSink.add_stream`; each sink is closed when its source ends. Raises the
        first error a sink's :attr:`~StreamSink.done` failed with, once both have finished.
        """
        results = await asyncio.gather(
            _pipe_into(self.stream, other.sink),
            _pipe_into(other.stream, self.sink),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def transform(self, transformer: StreamChannelTransformer) -> StreamChannel:
        """``transformer.bind(self)``: e.g. ``channel.transform(json_document)``."""
        return transformer.bind(self)

    def transform_stream(
        self, transformer: StreamTransformer | Callable[[AsyncIterable[Any]], AsyncIterable[Any]]
    ) -> StreamChannel:
        """A channel whose stream is ``transformer.bind(self.stream)`` (or
        ``transformer(self.stream)`` for a function); the sink is unchanged."""
        return self.change_stream(_binder(transformer))

    def transform_sink(
        self, transformer: StreamSinkTransformer | Callable[[StreamSink], StreamSink]
    ) -> StreamChannel:
        """A channel whose sink is ``transformer.bind(self.sink)`` (or
        ``transformer(self.sink)``); the stream is unchanged."""
        return self.change_sink(_binder(transformer))

    def change_stream(
        self, change: Callable[[AsyncIterable[Any]], AsyncIterable[Any]]
    ) -> StreamChannel:
        """A channel with the stream ``change(self.stream)`` and this sink, with the close
        guarantee: closing the sink ends the new stream at once."""
        return with_close_guarantee(change(self.stream), self.sink)

    def change_sink(self, change: Callable[[StreamSink], StreamSink]) -> StreamChannel:
        """A channel with this stream and the sink ``change(self.sink)``, with the close
        guarantee: closing the new sink ends the stream at once."""
        return with_close_guarantee(self.stream, change(self.sink))


async def _pipe_into(stream: AsyncIterable[Any], sink: StreamSink) -> None:
    await sink.add_stream(stream)
    await sink.close()


def _binder(transformer: Any) -> Callable[[Any], Any]:
    bind = getattr(transformer, "bind", None)
    if bind is not None:
        return bind  # type: ignore[no-any-return]
    if callable(transformer):
        return transformer  # type: ignore[no-any-return]
    raise TypeError(f"A transformer has a bind() method or is callable, not {transformer!r}.")


class StreamTransformer(Protocol):
    """Turns a stream into another (Dart's ``StreamTransformer``)."""

    def bind(self, stream: AsyncIterable[Any], /) -> AsyncIterable[Any]: ...


class StreamSinkTransformer(Protocol):
    """Turns a sink into another (Dart's ``StreamSinkTransformer``)."""

    def bind(self, sink: StreamSink, /) -> StreamSink: ...


class StreamChannelTransformer:
    """Transforms both halves of a channel (Dart's ``StreamChannelTransformer``).

    ``stream_transformer`` maps the incoming stream, ``sink_transformer`` the outgoing sink
    (each an object with ``bind()`` or a function). :meth:`bind` returns a channel with the
    close guarantee. :meth:`from_codec` builds one from two functions, as
    :data:`json_document` does.
    """

    __slots__ = ("_bind_sink", "_bind_stream")

    def __init__(
        self,
        stream_transformer: StreamTransformer | Callable[[AsyncIterable[Any]], AsyncIterable[Any]],
        sink_transformer: StreamSinkTransformer | Callable[[StreamSink], StreamSink],
    ) -> None:
        self._bind_stream = _binder(stream_transformer)
        self._bind_sink = _binder(sink_transformer)

    @classmethod
    def from_codec(
        cls, *, decode: Callable[[Any], Any], encode: Callable[[Any], Any]
    ) -> StreamChannelTransformer:
        """Decode each incoming value with ``decode``; encode each outgoing one with
        ``encode`` (its errors are raised by ``add``; ``decode``'s by the iteration, for that
        value only)."""
        return cls(
            lambda stream: MappedStream(stream, decode),
            lambda sink: MappedSink(sink, encode),
        )

    def bind(self, channel: StreamChannel) -> StreamChannel:
        stream = self._bind_stream(channel.stream)
        return with_close_guarantee(stream, self._bind_sink(channel.sink))


class MappedStream:
    """``source`` with ``function`` applied to each value (lazily, as they are taken).

    An exception raised by ``function`` is raised for that value only: the iteration can go
    on. Single-subscription when ``source`` is.
    """

    __slots__ = ("_function", "_source")

    def __init__(self, source: AsyncIterable[Any], function: Callable[[Any], Any]) -> None:
        self._source = source
        self._function = function

    def __aiter__(self) -> _MappedIterator:
        return _MappedIterator(aiter(self._source), self._function)


class _MappedIterator:
    __slots__ = ("_function", "_iterator")

    def __init__(self, iterator: AsyncIterator[Any], function: Callable[[Any], Any]) -> None:
        self._iterator = iterator
        self._function = function

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        return self._function(await anext(self._iterator))

    async def aclose(self) -> None:
        await _aclose(self._iterator)


class MappedSink(StreamSink):
    """A sink that passes each value through ``function`` before adding it to ``sink``.

    Everything else (``add_error``, ``close``, ``done``, ``flush``) goes to ``sink``;
    ``close(code, reason)`` too when ``sink`` is a :class:`WebSocketSink`.
    """

    __slots__ = ("_function", "_sink")

    def __init__(self, sink: StreamSink, function: Callable[[Any], Any]) -> None:
        self._sink = sink
        self._function = function

    def add(self, data: Any) -> None:
        self._sink.add(self._function(data))

    def add_error(self, error: BaseException) -> None:
        self._sink.add_error(error)

    def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
        return self._sink.add_stream(MappedStream(source, self._function))

    def close(self, *args: Any) -> Awaitable[None]:
        return self._sink.close(*args)

    @property
    def done(self) -> Awaitable[None]:
        return self._sink.done

    async def flush(self) -> None:
        await self._sink.flush()


def with_close_guarantee(stream: AsyncIterable[Any], sink: StreamSink) -> StreamChannel:
    """A channel of ``stream`` and ``sink`` where closing the sink ends the stream before it
    yields anything more, however the stream was derived (guarantee 2; Dart's
    ``StreamChannel.withCloseGuarantee``)."""
    return _CloseGuaranteeChannel(stream, sink)


class _CloseGuaranteeChannel(StreamChannel):
    __slots__ = ("_sink", "_stream")

    def __init__(self, stream: AsyncIterable[Any], sink: StreamSink) -> None:
        guarded = _GuardedStream(stream)
        self._stream = guarded
        self._sink = _GuardedSink(sink, guarded)

    @property
    def stream(self) -> _GuardedStream:
        return self._stream

    @property
    def sink(self) -> StreamSink:
        return self._sink

    def __repr__(self) -> str:
        return f"<StreamChannel of {self._sink._sink!r}>"


class _GuardedStream:
    """A single-subscription stream that ends as soon as its channel's sink is closed."""

    __slots__ = ("_closed", "_closing", "_iterator", "_pending", "_source", "_subscribed")

    def __init__(self, source: AsyncIterable[Any]) -> None:
        self._source = source
        self._subscribed = False
        self._closed = False
        self._iterator: AsyncIterator[Any] | None = None
        self._pending: asyncio.Future[Any] | None = None  # the source's next value
        self._closing: asyncio.Future[None] | None = None  # resolved by _close()

    def __aiter__(self) -> _GuardedIterator:
        if self._subscribed:
            raise StateError("Stream has already been listened to.")
        self._subscribed = True
        return _GuardedIterator(self)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._closing is not None and not self._closing.done():
            self._closing.set_result(None)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        elif self._iterator is not None:
            _close_iterator(self._iterator, asyncio.get_running_loop())

    async def _next(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = aiter(self._source)
        if type(iterator) is StreamSubscription and iterator._stream._buffer:
            return await iterator.__anext__()  # buffered: returns without suspending
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(anext(iterator))
        closing = self._closing
        if closing is None:
            closing = self._closing = loop.create_future()
        await asyncio.wait((pending, closing), return_when=asyncio.FIRST_COMPLETED)
        if self._closed or not pending.done():
            raise StopAsyncIteration
        self._pending = None
        return pending.result()


class _GuardedIterator:
    __slots__ = ("_stream",)

    def __init__(self, stream: _GuardedStream) -> None:
        self._stream = stream

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return self._stream._next()

    async def aclose(self) -> None:
        self._stream._close()


class _GuardedSink(StreamSink):
    __slots__ = ("_sink", "_stream")

    def __init__(self, sink: StreamSink, stream: _GuardedStream) -> None:
        self._sink = sink
        self._stream = stream

    def add(self, data: Any) -> None:
        self._sink.add(data)

    def add_error(self, error: BaseException) -> None:
        self._sink.add_error(error)

    def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
        return self._sink.add_stream(source)

    def close(self, *args: Any) -> Awaitable[None]:
        done = self._sink.close(*args)
        self._stream._close()
        return done

    @property
    def done(self) -> Awaitable[None]:
        return self._sink.done

    async def flush(self) -> None:
        await self._sink.flush()


json_document: Final = StreamChannelTransformer.from_codec(decode=json.loads, encode=json.dumps)
"""Decodes each incoming message as JSON (``json.loads``) and encodes each value added to the
sink as a JSON text message (``json.dumps``). Invalid JSON raises ``json.JSONDecodeError``
for that message; a value that cannot be encoded raises ``TypeError`` from ``add``."""
