"""The message stream and close argument rules, without a network."""

from __future__ import annotations

import asyncio

import pytest
from conftest import SHORT, TIMEOUT

from wschannel import StateError
from wschannel.channel import Message, MessageStream, check_close_args


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
    await asyncio.sleep(SHORT)
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
