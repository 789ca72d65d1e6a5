"""The message stream, the sink's guarantees and StreamChannel, without a network.

The sink rules are checked on an AdapterWebSocketChannel over wschannel.testing.fake_pair();
test_io.py checks them again over sockets.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import pytest
from conftest import TIMEOUT, next_message, wait, wait_until

from wschannel import StateError
from wschannel.adapter import (
    AdapterWebSocketChannel,
    BinaryDataReceived,
    CloseReceived,
    TextDataReceived,
    WebSocketEvent,
)
from wschannel.channel import (
    MappedSink,
    Message,
    MessageStream,
    StreamChannel,
    StreamChannelTransformer,
    StreamSink,
    check_close_args,
    json_document,
    with_close_guarantee,
)
from wschannel.testing import FakeWebSocket, fake_pair


def test_close_args_accept_every_code_an_endpoint_may_send() -> None:
    for code in [*range(1000, 1004), *range(1007, 1015), 3000, 3999, 4000, 4999]:
        check_close_args(code, None)
    check_close_args(None, None)
    check_close_args(None, "")
    check_close_args(1000, "x" * 123)
    check_close_args(1000, "é" * 61)  # 122 bytes


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, -1])
def test_close_args_reject_codes_an_endpoint_may_not_send(code: int) -> None:
    with pytest.raises(ValueError, match="Invalid close code"):
        check_close_args(code, None)


def test_close_args_reject_a_reason_over_123_bytes() -> None:
    with pytest.raises(ValueError, match="123"):
        check_close_args(1000, "x" * 124)
    with pytest.raises(ValueError, match="123"):
        check_close_args(1000, "é" * 62)  # 124 bytes


def test_close_args_reject_a_reason_without_code() -> None:
    with pytest.raises(ValueError, match="needs a close code"):
        check_close_args(None, "why")


def test_close_args_reject_a_code_that_is_not_an_int() -> None:
    with pytest.raises(TypeError):
        check_close_args("1000", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_close_args(True, None)


async def test_stream_delivers_buffered_messages_in_order_then_ends() -> None:
    stream = MessageStream()
    stream._add("a")
    stream._add(b"b")
    stream._end()
    assert [message async for message in stream] == ["a", b"b"]


async def test_stream_wakes_a_waiting_consumer() -> None:
    stream = MessageStream()
    subscription = aiter(stream)
    receiving = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    stream._add("late")
    assert await asyncio.wait_for(receiving, TIMEOUT) == "late"


async def test_stream_runs_a_waiting_consumer_in_the_callback_that_adds() -> None:
    # The messages of a read handed over in one of the loop's callbacks resume the consumer's
    # task right there, as listen() calls on_data, not on the loop's next turn; in its own task
    # and context, and the callback's context is left as it was.
    stream = MessageStream()
    where = contextvars.ContextVar("where", default="test")
    got: list[tuple[Message, str, bool]] = []

    async def consume() -> None:
        where.set("consumer")
        async for message in stream:
            got.append((message, where.get(), asyncio.current_task() is task))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # waiting for a message
    seen: list[list[tuple[Message, str, bool]]] = []

    def read() -> None:  # as a driver hands over a read's messages
        where.set("callback")
        stream._holding = True
        stream._add("a")
        stream._add(b"b")
        assert got == []  # woken once, with both
        stream._read_delivered()
        seen.append(list(got))
        assert where.get() == "callback"

    asyncio.get_running_loop().call_soon(read)
    await wait_until(lambda: seen)
    assert seen == [[("a", "consumer", True), (b"b", "consumer", True)]]
    stream._end()
    await wait(task)


async def test_stream_consumer_cancelled_while_waiting_keeps_the_message_that_came() -> None:
    stream = MessageStream()
    subscription = aiter(stream)
    receiving = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)

    def cancel_then_read() -> None:
        receiving.cancel()  # the wakeup is scheduled; the message must not be lost
        stream._holding = True
        stream._add("kept")
        stream._read_delivered()

    asyncio.get_running_loop().call_soon(cancel_then_read)
    with pytest.raises(asyncio.CancelledError):
        await receiving
    assert await asyncio.wait_for(anext(subscription), TIMEOUT) == "kept"

    # Cancelled while waiting, then the stream goes on for the next consumer.
    receiving = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    asyncio.get_running_loop().call_soon(stream._add, "next")  # not in a driver's read
    assert await asyncio.wait_for(anext(subscription), TIMEOUT) == "next"


async def test_stream_allows_a_single_subscription() -> None:
    stream = MessageStream()
    aiter(stream)
    with pytest.raises(StateError, match="already been listened to"):
        aiter(stream)
    with pytest.raises(StateError):
        stream.listen(print)


async def test_stream_raises_its_error_once_then_ends() -> None:
    stream = MessageStream()
    error = ConnectionError("no")
    stream._end(error)
    subscription = aiter(stream)
    with pytest.raises(ConnectionError):
        await anext(subscription)
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_stream_discard_drops_buffered_messages_and_ends_at_once() -> None:
    stream = MessageStream()
    stream._add("dropped")
    subscription = aiter(stream)
    receiving = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    # The buffered message was taken; discarding ends what follows.
    assert await receiving == "dropped"
    stream._add("also dropped")
    stream._discard()
    stream._add("after the end")
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_stream_cancelled_subscription_drops_messages() -> None:
    stream = MessageStream()
    subscription = aiter(stream)
    stream._add("a")
    subscription.cancel()
    stream._add("b")
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_stream_pauses_reading_when_full_and_resumes_when_drained() -> None:
    stream = MessageStream(max_queue=4)
    calls: list[str] = []
    stream._set_flow_control(lambda: calls.append("pause"), lambda: calls.append("resume"))
    for index in range(4):
        stream._add(str(index))
    assert calls == ["pause"]
    stream._add("4")  # the stream keeps what the network already delivered
    assert calls == ["pause"]
    subscription = aiter(stream)
    for _ in range(3):
        await anext(subscription)
    assert calls == ["pause"]
    await anext(subscription)  # one left: a quarter of max_queue
    assert calls == ["pause", "resume"]


async def test_stream_without_max_queue_never_pauses() -> None:
    stream = MessageStream(max_queue=None)
    calls: list[str] = []
    stream._set_flow_control(lambda: calls.append("pause"), lambda: calls.append("resume"))
    for index in range(1000):
        stream._add(str(index))
    assert calls == []


async def test_stream_rejects_max_queue_below_one() -> None:
    with pytest.raises(ValueError):
        MessageStream(max_queue=0)


async def test_stream_listen_delivers_buffered_messages_after_returning() -> None:
    stream = MessageStream()
    received: list[Message] = []
    done = asyncio.Event()
    stream._add("before")
    stream.listen(received.append, on_done=done.set)
    assert received == []  # never called from inside listen()
    stream._add("after")
    stream._end()
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert received == ["before", "after"]


async def test_stream_listen_calls_on_data_directly_when_nothing_is_buffered() -> None:
    stream = MessageStream()
    received: list[Message] = []
    stream.listen(received.append)
    stream._add("now")
    assert received == ["now"]


async def test_stream_listen_reports_the_error_then_done() -> None:
    stream = MessageStream()
    events: list[object] = []
    stream.listen(events.append, on_error=events.append, on_done=lambda: events.append("done"))
    error = ConnectionError("no")
    stream._end(error)
    await wait_until(lambda: "done" in events, what="on_done was called")
    assert events == [error, "done"]


async def test_stream_listen_pause_buffers_until_resume() -> None:
    stream = MessageStream()
    received: list[Message] = []
    subscription = stream.listen(received.append)
    subscription.pause()
    assert subscription.is_paused
    stream._add("a")
    stream._add("b")
    assert received == []
    subscription.resume()
    stream._add("c")
    await asyncio.sleep(0)
    assert received == ["a", "b", "c"]


async def test_stream_listen_callback_error_goes_to_the_loop_handler() -> None:
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: contexts.append(context))
    try:
        stream = MessageStream()
        received: list[Message] = []

        def on_data(message: Message) -> None:
            if message == "bad":
                raise ValueError("bad message")
            received.append(message)

        stream.listen(on_data)
        stream._add("bad")
        stream._add("good")
    finally:
        loop.set_exception_handler(None)
    assert received == ["good"]
    assert isinstance(contexts[0]["exception"], ValueError)


async def test_stream_rejects_two_tasks_waiting_at_once() -> None:
    stream = MessageStream()
    subscription = aiter(stream)
    first = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    with pytest.raises(StateError):
        await anext(subscription)
    stream._add("x")
    assert await first == "x"


# The sink's guarantees (stream_channel §4.1, §4.3), over an in-memory pair.


async def open_pair(**options: Any) -> tuple[AdapterWebSocketChannel, FakeWebSocket]:
    """A channel, open, and the low-level socket of its peer."""
    mine, theirs = fake_pair()
    channel = AdapterWebSocketChannel(mine, **options)
    await wait(channel.ready)
    return channel, theirs


async def peer_events(peer: FakeWebSocket) -> list[WebSocketEvent]:
    """What the peer received, until the connection ended."""

    async def collect() -> list[WebSocketEvent]:
        return [event async for event in peer.events]

    return await asyncio.wait_for(collect(), TIMEOUT)


class Gate:
    """An async source that yields its messages, then waits until released."""

    def __init__(self, *messages: Message) -> None:
        self.messages = messages
        self.released = asyncio.Event()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[Message]:
        try:
            for message in self.messages:
                yield message
            await self.released.wait()
        finally:
            self.closed = True


async def test_sink_raises_state_errors_while_adding_a_stream() -> None:
    channel, peer = await open_pair()
    sink = channel.sink
    gate = Gate("a")
    adding = sink.add_stream(gate)
    with pytest.raises(StateError, match=r"^Cannot add event while adding stream\.$"):
        sink.add("b")
    with pytest.raises(StateError, match=r"^Cannot add event while adding stream\.$"):
        sink.add_error(ValueError())
    with pytest.raises(StateError, match=r"^Cannot add stream while adding stream\.$"):
        sink.add_stream(Gate())
    with pytest.raises(StateError, match=r"^Cannot close sink while adding stream\.$"):
        sink.close()
    gate.released.set()
    await wait(adding)
    sink.add("b")
    await wait(sink.close())
    assert await peer_events(peer) == [
        TextDataReceived("a"),
        TextDataReceived("b"),
        CloseReceived(1005, ""),
    ]


async def test_sink_raises_state_errors_after_close() -> None:
    channel, _ = await open_pair()
    sink = channel.sink
    done = sink.close()
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        sink.add("late")
    with pytest.raises(StateError, match=r"^Cannot add event after closing\.$"):
        sink.add_error(ValueError())
    with pytest.raises(StateError, match=r"^Cannot add stream after closing\.$"):
        sink.add_stream(Gate())
    assert sink.close() is done
    await wait(done)
    assert sink.close(4000, "ignored") is done


async def test_sink_close_ends_the_stream_before_buffered_messages() -> None:
    channel, peer = await open_pair()
    for index in range(3):
        peer.send_text(str(index))
    subscription = aiter(channel.stream)
    assert await next_message(subscription) == "0"
    channel.sink.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(subscription), TIMEOUT)


async def test_sink_drops_everything_silently_after_the_peer_closed() -> None:
    channel, peer = await open_pair()
    await peer.close(4000)
    assert [message async for message in channel.stream] == []
    sink = channel.sink
    sink.add("dropped")
    sink.add_error(ValueError("dropped"))
    gate = Gate("dropped")
    await wait(sink.add_stream(gate))
    await wait(sink.done)  # resolved, not failed
    assert sink.close() is sink.done


async def test_sink_drops_silently_when_the_stream_ended_before_anyone_listened() -> None:
    channel, peer = await open_pair()
    await peer.close()
    await wait(channel.sink.done)
    channel.sink.add("dropped")
    assert channel.close_code == 1005
    assert [message async for message in channel.stream] == []


async def test_stream_cancel_does_not_close_and_a_later_peer_close_is_seen() -> None:
    channel, peer = await open_pair()
    subscription = aiter(channel.stream)
    peer.send_text("one")
    assert await next_message(subscription) == "one"
    await subscription.aclose()
    channel.sink.add("still open")
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("still open")
    await peer.close(4001, "later")
    await wait(channel.sink.done)
    assert (channel.close_code, channel.close_reason) == (4001, "later")


async def test_sink_add_error_closes_without_code_and_fails_done() -> None:
    channel, peer = await open_pair()
    subscription = aiter(channel.stream)
    peer.send_text("dropped with the stream")
    await asyncio.sleep(0)
    error = ValueError("broken")
    channel.sink.add("before")
    channel.sink.add_error(error)
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)
    with pytest.raises(ValueError) as raised:
        await wait(channel.sink.done)
    assert raised.value is error
    channel.sink.add("after: dropped")
    channel.sink.add_error(ValueError("dropped"))
    assert channel.sink.close() is channel.sink.done
    assert await peer_events(peer) == [TextDataReceived("before"), CloseReceived(1005, "")]
    assert channel.close_code == 1005  # what a peer answers to a close without a code


async def test_sink_add_error_takes_only_exceptions() -> None:
    channel, _ = await open_pair()
    with pytest.raises(TypeError):
        channel.sink.add_error("not an exception")  # type: ignore[arg-type]
    await wait(channel.sink.close())


async def test_sink_add_stream_forwards_in_order_without_being_awaited() -> None:
    channel, peer = await open_pair()

    async def source() -> AsyncIterator[Message]:
        for index in range(5):
            await asyncio.sleep(0)
            yield str(index) if index % 2 else bytes([index])

    adding = channel.sink.add_stream(source())  # runs without an await
    assert isinstance(adding, asyncio.Future)
    events = [await asyncio.wait_for(anext(peer.events), TIMEOUT) for _ in range(5)]
    assert events == [
        BinaryDataReceived(b"\x00"),
        TextDataReceived("1"),
        BinaryDataReceived(b"\x02"),
        TextDataReceived("3"),
        BinaryDataReceived(b"\x04"),
    ]
    await wait(adding)
    await wait(channel.sink.close())


async def test_sink_add_stream_error_acts_like_add_error() -> None:
    channel, peer = await open_pair()
    error = RuntimeError("source failed")
    finished: list[str] = []

    async def failing() -> AsyncIterator[Message]:
        try:
            yield "sent"
            raise error
        finally:
            finished.append("closed")

    await wait(channel.sink.add_stream(failing()))  # resolves normally
    with pytest.raises(RuntimeError) as raised:
        await wait(channel.sink.done)
    assert raised.value is error
    assert finished == ["closed"]
    assert [message async for message in channel.stream] == []
    channel.sink.add("dropped")
    assert await peer_events(peer) == [TextDataReceived("sent"), CloseReceived(1005, "")]


async def test_sink_add_stream_with_an_unsupported_message_acts_like_add_error() -> None:
    channel, peer = await open_pair()

    async def source() -> AsyncIterator[Any]:
        yield "ok"
        yield 42

    await wait(channel.sink.add_stream(source()))
    with pytest.raises(TypeError, match="Cannot send int"):
        await wait(channel.sink.done)
    assert await peer_events(peer) == [TextDataReceived("ok"), CloseReceived(1005, "")]


async def test_sink_add_stream_stops_and_closes_the_source_when_the_peer_closes() -> None:
    channel, peer = await open_pair()
    gate = Gate("first")
    adding = channel.sink.add_stream(gate)
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("first")
    await peer.close()
    await wait(adding)
    assert gate.closed
    assert not adding.cancelled()
    channel.sink.add("dropped")  # no longer adding a stream; the peer closed


async def test_sink_add_stream_rejects_a_source_that_is_not_async_iterable() -> None:
    channel, _ = await open_pair()
    with pytest.raises(TypeError):
        channel.sink.add_stream(["a", "b"])  # type: ignore[arg-type]
    channel.sink.add("not adding a stream")
    await wait(channel.sink.close())


async def test_sink_add_stream_cancelled_by_its_caller_stops_without_closing() -> None:
    channel, peer = await open_pair()
    gate = Gate("one")
    adding = channel.sink.add_stream(gate)
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("one")
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding
    channel.sink.add("two")
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("two")
    await wait(channel.sink.close())


# StreamChannel: pipe, transform, change (stream_channel §4.2).


async def test_channel_pipe_connects_two_channels_until_both_directions_end() -> None:
    left, left_peer = await open_pair()
    right, right_peer = await open_pair()
    piping = asyncio.ensure_future(left.pipe(right))
    left_peer.send_text("to the right")
    right_peer.send_bytes(b"to the left")
    assert await asyncio.wait_for(anext(right_peer.events), TIMEOUT) == TextDataReceived(
        "to the right"
    )
    assert await asyncio.wait_for(anext(left_peer.events), TIMEOUT) == BinaryDataReceived(
        b"to the left"
    )
    await left_peer.close(4000, "left is done")
    await wait(piping)
    assert await peer_events(right_peer) == [CloseReceived(1005, "")]
    assert left.close_code == 4000
    await wait(left.sink.done)
    await wait(right.sink.done)


async def test_channel_transform_with_json_document_decodes_and_encodes() -> None:
    channel, peer = await open_pair()
    documents = channel.transform(json_document)
    assert isinstance(documents, StreamChannel)
    documents.sink.add({"answer": [4, 2]})
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived(
        '{"answer": [4, 2]}'
    )
    peer.send_text('{"a": null}')
    peer.send_text("not json")
    peer.send_bytes(b"[1]")
    subscription = aiter(documents.stream)
    assert await asyncio.wait_for(anext(subscription), TIMEOUT) == {"a": None}
    with pytest.raises(json.JSONDecodeError):
        await asyncio.wait_for(anext(subscription), TIMEOUT)
    assert await asyncio.wait_for(anext(subscription), TIMEOUT) == [1]  # it goes on
    with pytest.raises(TypeError):
        documents.sink.add(object())
    sink: Any = documents.sink  # the WebSocket sink's close(code, reason), passed through
    await wait(sink.close(4000, "bye"))
    assert await peer_events(peer) == [CloseReceived(4000, "bye")]


async def test_channel_transform_stream_changes_only_the_stream() -> None:
    channel, peer = await open_pair()

    async def upper(stream: AsyncIterable[Any]) -> AsyncIterator[str]:
        async for message in stream:
            yield message.upper()

    shouting = channel.transform_stream(upper)
    peer.send_text("hi")
    assert await next_message(aiter(shouting.stream)) == "HI"
    shouting.sink.add("as is")
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("as is")


async def test_channel_transform_sink_changes_only_the_sink() -> None:
    channel, peer = await open_pair()

    class Reverse:
        def bind(self, sink: StreamSink) -> StreamSink:
            return MappedSink(sink, lambda text: text[::-1])

    reversing = channel.transform_sink(Reverse())
    reversing.sink.add("abc")
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("cba")
    peer.send_text("abc")
    assert await next_message(aiter(reversing.stream)) == "abc"


async def test_channel_change_stream_and_change_sink_get_the_originals() -> None:
    channel, peer = await open_pair()
    seen: list[object] = []

    async def replacement() -> AsyncIterator[str]:
        yield "replaced"

    def change(stream: AsyncIterable[Any]) -> AsyncIterable[Any]:
        seen.append(stream)
        return replacement()

    changed = channel.change_stream(change)
    assert seen == [channel.stream]
    assert [message async for message in changed.stream] == ["replaced"]

    def change_sink(sink: StreamSink) -> StreamSink:
        seen.append(sink)
        return MappedSink(sink, str)

    other = channel.change_sink(change_sink)
    assert seen[-1] is channel.sink
    other.sink.add(12)
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("12")


async def test_derived_channel_ends_a_waiting_consumer_when_its_sink_closes() -> None:
    channel, _ = await open_pair()
    started = asyncio.Event()

    async def slow(stream: AsyncIterable[Any]) -> AsyncIterator[Any]:
        started.set()
        async for message in stream:  # nothing comes: the consumer waits
            yield message

    derived = channel.change_stream(slow)
    subscription = aiter(derived.stream)
    waiting = asyncio.ensure_future(anext(subscription))
    await wait(started.wait())  # the consumer now waits inside slow()
    assert not waiting.done()
    derived.sink.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, TIMEOUT)
    await wait(channel.sink.done)


async def test_derived_channel_drops_a_value_that_arrives_with_the_close() -> None:
    produced = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        yield "first"
        produced.set()
        await asyncio.Event().wait()  # never yields again

    channel, _ = await open_pair()
    derived = with_close_guarantee(source(), channel.sink)
    subscription = aiter(derived.stream)
    assert await next_message(subscription) == "first"
    derived.sink.close()
    with pytest.raises(StopAsyncIteration):
        await anext(subscription)


async def test_derived_channel_stream_is_single_subscription() -> None:
    channel, _ = await open_pair()
    derived = channel.transform(json_document)
    aiter(derived.stream)
    with pytest.raises(StateError, match="already been listened to"):
        aiter(derived.stream)


async def test_channel_transformer_takes_bind_objects_or_functions() -> None:
    channel, peer = await open_pair()

    class Twice:
        def bind(self, stream: AsyncIterable[Any]) -> AsyncIterable[Any]:
            async def doubled() -> AsyncIterator[Any]:
                async for message in stream:
                    yield message * 2

            return doubled()

    transformer = StreamChannelTransformer(Twice(), lambda sink: MappedSink(sink, str.upper))
    transformed = channel.transform(transformer)
    transformed.sink.add("up")
    assert await asyncio.wait_for(anext(peer.events), TIMEOUT) == TextDataReceived("UP")
    peer.send_text("ab")
    assert await next_message(aiter(transformed.stream)) == "abab"
    with pytest.raises(TypeError):
        StreamChannelTransformer(42, str)  # type: ignore[arg-type]


async def test_mapped_sink_add_stream_maps_every_value() -> None:
    channel, peer = await open_pair()
    documents = channel.transform(json_document)

    async def values() -> AsyncIterator[object]:
        yield 1
        yield [True]

    await wait(documents.sink.add_stream(values()))
    await wait(documents.sink.close())
    assert await peer_events(peer) == [
        TextDataReceived("1"),
        TextDataReceived("[true]"),
        CloseReceived(1005, ""),
    ]
