"""``stream_channel``'s tests that WebSocket channels must pass (dart-web-socket-channel.md
§4.6): the guarantees of §4.1/§4.3 and the mixin methods of §4.2.

Each channel is an ``AdapterWebSocketChannel`` over one end of ``fake_pair()`` (in memory,
deterministic); the test drives the other end through the low-level interface.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable
from typing import Any

import pytest

from wschannel import StateError
from wschannel.adapter import (
    AdapterWebSocketChannel,
    BinaryDataReceived,
    CloseReceived,
    TextDataReceived,
    WebSocketEvent,
)
from wschannel.channel import Message, StreamChannelTransformer, StreamSink, json_document
from wschannel.testing import FakeWebSocket, fake_pair

from .conftest import drain, eventually, next_message, within


class Peer:
    """The other end of a fake pair, with its events as one iterator."""

    def __init__(self, socket: FakeWebSocket) -> None:
        self.socket = socket
        self._events = aiter(socket.events)

    async def next_event(self) -> WebSocketEvent:
        return await next_message(self._events)

    async def rest(self) -> list[WebSocketEvent]:
        return await drain(self._events)

    def send(self, text: str) -> None:
        self.socket.send_text(text)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        await within(self.socket.close(code, reason))


async def open_channel() -> tuple[AdapterWebSocketChannel, Peer]:
    local, remote = fake_pair()
    channel = AdapterWebSocketChannel(local)
    await within(channel.ready)
    return channel, Peer(remote)


async def texts(*messages: str) -> AsyncGenerator[Message, None]:
    for message in messages:
        yield message


# with_guarantees_test.dart


async def test_channel_buffers_messages_that_arrive_before_anyone_listens() -> None:
    """§4.6 with_guarantees: buffers events (nothing sent before listening is lost)."""
    channel, peer = await open_channel()
    peer.send("a")
    peer.send("b")
    await eventually(lambda: len(channel.stream._buffer) == 2)  # nobody listens yet
    subscription = aiter(channel.stream)
    assert await next_message(subscription) == "a"
    assert await next_message(subscription) == "b"


async def test_channel_stream_allows_a_single_subscription() -> None:
    """§4.6 with_guarantees / guarantee 1: only a single subscription is allowed."""
    channel, _ = await open_channel()
    aiter(channel.stream)
    with pytest.raises(StateError):
        aiter(channel.stream)
    with pytest.raises(StateError):
        channel.stream.listen(lambda message: None)


async def test_channel_close_while_handling_a_message_drops_the_rest() -> None:
    """§4.6 with_guarantees / guarantee 2: closing the sink while handling event 2 of 3
    means event 3 is never delivered, and the subscription completes."""
    channel, peer = await open_channel()
    for text in ("1", "2", "3"):
        peer.send(text)
    await eventually(lambda: len(channel.stream._buffer) == 3)  # all three are buffered
    received: list[Message] = []

    async def read() -> None:
        async for message in channel.stream:
            received.append(message)
            if message == "2":
                channel.sink.close()

    await within(read())
    assert received == ["1", "2"]


async def test_channel_sink_ignores_events_after_the_stream_closed() -> None:
    """§4.6 with_guarantees / guarantee 3: after the stream closes (the peer closed), added
    values and the close are dropped silently; ``close()`` returns ``done``."""
    channel, peer = await open_channel()
    await peer.close(4000, "bye")
    assert await drain(channel.stream) == []
    channel.sink.add("ignored")
    channel.sink.add(b"ignored")
    assert channel.sink.close(3000, "ignored") is channel.sink.done
    await within(channel.sink.done)
    assert (channel.close_code, channel.close_reason) == (4000, "bye")


async def test_channel_sink_drops_events_when_the_stream_closed_before_any_listener() -> None:
    """Guarantee 4: the stream closes before it has a listener: the sink drops events."""
    channel, peer = await open_channel()
    await peer.close()
    await eventually(lambda: channel.close_code is not None)
    channel.sink.add("dropped")
    await within(channel.sink.done)
    assert channel.close_code == 1005
    assert await drain(channel.stream) == []


async def test_channel_cancelling_the_subscription_leaves_the_sink_working() -> None:
    """§4.6 with_guarantees / guarantee 5: after cancelling, added values still reach the
    peer."""
    channel, peer = await open_channel()
    peer.send("one")
    async for message in channel.stream:
        assert message == "one"
        break
    channel.sink.add("still sent")
    assert await peer.next_event() == TextDataReceived("still sent")


async def test_channel_cancelling_the_subscription_does_not_stop_the_done_event() -> None:
    """§4.6 with_guarantees / guarantee 5: after cancel and the peer's close, the close is
    handled (``close_code``, ``done``) and the sink ignores further events."""
    channel, peer = await open_channel()
    subscription = channel.stream.listen(lambda message: None)
    subscription.cancel()
    await peer.close(4001, "after cancel")
    await eventually(lambda: channel.close_code is not None)
    assert (channel.close_code, channel.close_reason) == (4001, "after cancel")
    channel.sink.add("ignored")
    await within(channel.sink.done)


async def test_channel_sink_done_completes_once_the_stream_is_done() -> None:
    """§4.6 with_guarantees: ``Sink.done`` completes once the stream is done."""
    channel, peer = await open_channel()
    subscription = aiter(channel.stream)
    assert not channel.sink.done.done()
    await peer.close(3000)
    assert await drain(subscription) == []
    await within(channel.sink.done)


async def test_channel_sink_refuses_events_after_an_explicit_close() -> None:
    """§4.6 with_guarantees: events can't be added to an explicitly-closed sink: ``add``,
    ``add_error`` and ``add_stream`` raise StateError with Dart's messages; ``close``
    completes."""
    channel, peer = await open_channel()
    sink: Any = channel.sink
    closing = sink.close()
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        sink.add("x")
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        sink.add_error(ValueError("x"))
    source = texts("x")
    with pytest.raises(StateError, match=r"^Cannot add stream after closing\.$"):
        sink.add_stream(source)
    await source.aclose()
    assert sink.close() is closing
    await within(closing)
    assert await peer.rest() == [CloseReceived(1005, "")]


async def test_channel_sink_refuses_events_while_a_stream_is_being_added() -> None:
    """§4.6 with_guarantees: during ``add_stream``, ``add``/``add_error`` raise "Cannot add
    event while adding stream.", ``add_stream`` "Cannot add stream while adding stream.",
    ``close`` "Cannot close sink while adding stream."; the stream's items then arrive."""
    channel, peer = await open_channel()
    sink: Any = channel.sink
    release = asyncio.Event()

    async def held() -> AsyncIterator[Message]:
        yield "first"
        await release.wait()
        yield "second"

    adding = sink.add_stream(held())
    assert await peer.next_event() == TextDataReceived("first")
    with pytest.raises(StateError, match=r"^Cannot add event while adding stream\.$"):
        sink.add("x")
    with pytest.raises(StateError, match=r"^Cannot add event while adding stream\.$"):
        sink.add_error(ValueError("x"))
    other = texts("y")
    with pytest.raises(StateError, match=r"^Cannot add stream while adding stream\.$"):
        sink.add_stream(other)
    await other.aclose()
    with pytest.raises(StateError, match=r"^Cannot close sink while adding stream\.$"):
        sink.close()
    release.set()
    await within(adding)
    assert await peer.next_event() == TextDataReceived("second")
    sink.add("after")
    assert await peer.next_event() == TextDataReceived("after")


async def test_channel_add_error_goes_to_done_not_to_the_peer_and_ends_the_stream() -> None:
    """§4.6 allowSinkErrors: false / guarantee 6: the error goes to ``done`` only; the stream
    ends; the inner sink is closed empty (the peer sees a close without a code)."""
    channel, peer = await open_channel()
    sink: Any = channel.sink
    subscription = aiter(channel.stream)
    error = RuntimeError("local failure")
    sink.add_error(error)
    with pytest.raises(RuntimeError) as raised:
        await within(sink.done)
    assert raised.value is error
    assert await drain(subscription) == []
    assert await peer.rest() == [CloseReceived(1005, "")]


async def test_channel_add_stream_error_ends_the_stream_and_cancels_the_source() -> None:
    """§4.6 allowSinkErrors: false, via ``add_stream``: the ``add_stream`` future completes
    normally, the source is cancelled, the stream ends, ``done`` fails with the error, and a
    later ``add`` does not raise."""
    channel, peer = await open_channel()
    sink: Any = channel.sink
    subscription = aiter(channel.stream)
    error = ValueError("from the source")
    finished: list[str] = []

    async def failing() -> AsyncIterator[Message]:
        try:
            yield "sent"
            raise error
        finally:
            finished.append("source closed")

    await within(sink.add_stream(failing()))
    with pytest.raises(ValueError) as raised:
        await within(sink.done)
    assert raised.value is error
    assert finished == ["source closed"]
    assert await drain(subscription) == []
    sink.add("ignored")
    assert await peer.rest() == [TextDataReceived("sent"), CloseReceived(1005, "")]


async def test_channel_add_stream_stops_when_the_peer_closes_midway() -> None:
    """§4.3 ``addStream``: if the channel disconnects mid-way, the source is cancelled and
    the future completes."""
    channel, peer = await open_channel()
    sink: Any = channel.sink
    finished: list[str] = []

    async def endless() -> AsyncIterator[Message]:
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0.01)  # the pace of an endless source
        finally:
            finished.append("source closed")

    adding = sink.add_stream(endless())
    assert await peer.next_event() == TextDataReceived("tick")
    await peer.close(4000)
    await within(adding)
    assert finished == ["source closed"]


# stream_channel_test.dart


async def test_channel_pipe_connects_each_stream_to_the_other_sink() -> None:
    """§4.6 pipe(): values from A's stream arrive in B's sink and the other way round; each
    sink is closed once its source ends."""
    a, a_peer = await open_channel()
    b, b_peer = await open_channel()
    piping = asyncio.ensure_future(a.pipe(b))
    for text in ("1", "2", "3"):
        a_peer.send(text)
    for text in ("4", "5", "6"):
        b_peer.send(text)
    assert [await b_peer.next_event() for _ in range(3)] == [
        TextDataReceived("1"),
        TextDataReceived("2"),
        TextDataReceived("3"),
    ]
    assert [await a_peer.next_event() for _ in range(3)] == [
        TextDataReceived("4"),
        TextDataReceived("5"),
        TextDataReceived("6"),
    ]
    await a_peer.close(4000, "a done")  # A's stream ends, so B's sink is closed
    assert await b_peer.rest() == [CloseReceived(1005, "")]
    await within(piping)


async def test_channel_transform_with_json_document_decodes_and_encodes() -> None:
    """§4.6 transform() with §4.5 ``json_document``: incoming JSON text comes out decoded;
    an added object goes out as its JSON text."""
    channel, peer = await open_channel()
    documents: Any = channel.transform(json_document)
    peer.send('{"a": [1, 2]}')
    assert await next_message(aiter(documents.stream)) == {"a": [1, 2]}
    documents.sink.add({"b": None})
    event = await peer.next_event()
    assert isinstance(event, TextDataReceived)
    assert json.loads(event.text) == {"b": None}


async def test_channel_change_stream_replaces_only_the_stream() -> None:
    """§4.6 changeStream(): the callback receives the original stream; the new channel
    yields the replacement's values; the sink is unchanged."""
    channel, peer = await open_channel()
    given: list[object] = []

    def upper(stream: AsyncIterable[Message]) -> AsyncIterator[Message]:
        given.append(stream)

        async def mapped() -> AsyncIterator[Message]:
            async for message in stream:
                assert isinstance(message, str)
                yield message.upper()

        return mapped()

    changed: Any = channel.change_stream(upper)
    assert given == [channel.stream]
    peer.send("shout")
    assert await next_message(aiter(changed.stream)) == "SHOUT"
    changed.sink.add("quiet")
    assert await peer.next_event() == TextDataReceived("quiet")


async def test_channel_change_sink_replaces_only_the_sink() -> None:
    """§4.6 changeSink(): the callback receives the original sink; values added go through
    the replacement only; the stream is unchanged."""
    channel, peer = await open_channel()
    given: list[object] = []

    class Prefixing(StreamSink):
        """A user's sink that prefixes each text before passing it on."""

        def __init__(self, inner: StreamSink) -> None:
            self.inner = inner

        def add(self, data: Any) -> None:
            self.inner.add(f"> {data}")

        def add_error(self, error: BaseException) -> None:
            self.inner.add_error(error)

        def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
            return self.inner.add_stream(source)

        def close(self) -> Awaitable[None]:
            return self.inner.close()

        @property
        def done(self) -> Awaitable[None]:
            return self.inner.done

    def prefix(sink: StreamSink) -> StreamSink:
        given.append(sink)
        return Prefixing(sink)

    changed: Any = channel.change_sink(prefix)
    assert given == [channel.sink]
    changed.sink.add("hi")
    assert await peer.next_event() == TextDataReceived("> hi")
    peer.send("plain")
    assert await next_message(aiter(changed.stream)) == "plain"


# with_close_guarantee_test.dart


async def test_channel_closing_a_changed_sink_ends_the_changed_stream_at_once() -> None:
    """§4.6 with_close_guarantee: closing the sink before events are emitted closes the
    (transformed) stream immediately, through layers of async transformation."""
    channel, peer = await open_channel()

    def slow_copy(stream: AsyncIterable[Message]) -> AsyncIterator[Message]:
        async def copied() -> AsyncIterator[Message]:
            async for message in stream:
                await asyncio.sleep(0)
                yield message

        return copied()

    changed: Any = channel.change_stream(slow_copy)
    changed = changed.change_stream(slow_copy)
    for text in ("1", "2", "3"):
        peer.send(text)
    changed.sink.close()
    assert await drain(changed.stream) == []


async def test_channel_transform_with_a_codec_decodes_and_encodes() -> None:
    """§4.6 transform(): with a UTF-8 codec transformer (``from_codec``), incoming bytes
    ``foobar`` come out as the string ``foobar``, and an added ``fblthp`` goes out as its
    UTF-8 bytes."""
    channel, peer = await open_channel()
    utf8 = StreamChannelTransformer.from_codec(decode=bytes.decode, encode=str.encode)
    decoded = channel.transform(utf8)
    peer.socket.send_bytes(b"foobar")
    assert await next_message(aiter(decoded.stream)) == "foobar"
    decoded.sink.add("fblthp")
    assert await peer.next_event() == BinaryDataReceived(b"fblthp")


async def test_channel_transform_stream_changes_only_the_stream() -> None:
    """§4.6 transformStream(): a line splitter re-chunks incoming text into lines; the sink
    passes text unchanged."""
    channel, peer = await open_channel()

    def lines(stream: AsyncIterable[Any]) -> AsyncIterator[str]:
        async def split() -> AsyncIterator[str]:
            pending = ""
            async for chunk in stream:
                pending += chunk
                *complete, pending = pending.split("\n")
                for line in complete:
                    yield line

        return split()

    transformed = channel.transform_stream(lines)
    for chunk in ("hello\nwor", "ld\nfoo\nbar\nbaz\n"):
        peer.send(chunk)
    subscription = aiter(transformed.stream)
    assert [await next_message(subscription) for _ in range(5)] == [
        "hello",
        "world",
        "foo",
        "bar",
        "baz",
    ]
    transformed.sink.add("unchanged\n")
    assert await peer.next_event() == TextDataReceived("unchanged\n")


async def test_channel_transform_sink_changes_only_the_sink() -> None:
    """§4.6 transformSink(): a line splitter on the sink sends each line of an added text
    as its own message; the stream is unchanged."""
    channel, peer = await open_channel()

    class LineSink(StreamSink):
        def __init__(self, inner: StreamSink) -> None:
            self.inner = inner

        def add(self, data: Any) -> None:
            for line in str(data).splitlines():
                self.inner.add(line)

        def add_error(self, error: BaseException) -> None:
            self.inner.add_error(error)

        def add_stream(self, source: AsyncIterable[Any]) -> Awaitable[None]:
            return self.inner.add_stream(source)

        def close(self) -> Awaitable[None]:
            return self.inner.close()

        @property
        def done(self) -> Awaitable[None]:
            return self.inner.done

    transformed = channel.transform_sink(LineSink)
    transformed.sink.add("hello\nworld")
    assert [await peer.next_event() for _ in range(2)] == [
        TextDataReceived("hello"),
        TextDataReceived("world"),
    ]
    peer.send("a\nb")
    assert await next_message(aiter(transformed.stream)) == "a\nb"


async def test_channel_json_document_reports_invalid_json_for_that_message_only() -> None:
    """§4.5 ``json_document``: invalid JSON is an error for that message (Dart's
    FormatException event; here ``ValueError``), and the next one still decodes; an object
    JSON cannot encode raises at ``add``."""
    channel, peer = await open_channel()
    documents = channel.transform(json_document)
    peer.send("{not json")
    peer.send("[true]")
    subscription = aiter(documents.stream)
    with pytest.raises(ValueError):
        await next_message(subscription)
    assert await next_message(subscription) == [True]
    with pytest.raises(TypeError):
        documents.sink.add(object())
