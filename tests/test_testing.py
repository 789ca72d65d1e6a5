"""wschannel.testing.fake_pair: two connected in-memory low-level sockets (§1.10 fakes())."""

from __future__ import annotations

import asyncio

import pytest
from conftest import SHORT, TIMEOUT

from wschannel.adapter import (
    BinaryDataReceived,
    CloseReceived,
    TextDataReceived,
    WebSocket,
    WebSocketEvent,
)
from wschannel.exceptions import WebSocketConnectionClosed
from wschannel.testing import FakeWebSocket, fake_pair


async def rest(socket: FakeWebSocket) -> list[WebSocketEvent]:
    """Every event until the end."""
    return await asyncio.wait_for(_collect(socket), TIMEOUT)


async def _collect(socket: FakeWebSocket) -> list[WebSocketEvent]:
    return [event async for event in socket.events]


def test_fake_pair_sockets_are_low_level_websockets() -> None:
    first, second = fake_pair()
    assert isinstance(first, WebSocket)
    assert isinstance(second, WebSocket)
    assert first.protocol == second.protocol == ""
    assert fake_pair("chat")[0].protocol == "chat"


async def test_fake_pair_delivers_messages_both_ways_in_order() -> None:
    first, second = fake_pair()
    first.send_text("one")
    first.send_bytes(b"\x01\x02")
    second.send_text("back")
    await first.close()
    assert await rest(second) == [
        TextDataReceived("one"),
        BinaryDataReceived(b"\x01\x02"),
        CloseReceived(1005, ""),
    ]
    assert await rest(first) == [TextDataReceived("back")]  # queued before the close


async def test_fake_pair_close_delivers_code_and_reason_to_the_other_side() -> None:
    first, second = fake_pair()
    await second.close(4123, "server closed the connection")
    assert await rest(first) == [CloseReceived(4123, "server closed the connection")]
    assert await rest(second) == []


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [(4001, "bye", (4001, "bye")), (1000, None, (1000, "")), (None, None, (1005, ""))],
    ids=["code and reason", "code", "none"],
)
@pytest.mark.parametrize("closer", [0, 1], ids=["closing side", "other side"])
async def test_fake_pair_both_sides_report_the_close_that_ended_them(
    closer: int, code: int | None, reason: str | None, expected: tuple[int, str]
) -> None:
    sockets = fake_pair()
    assert [(s.close_code, s.close_reason) for s in sockets] == [(None, None)] * 2
    await sockets[closer].close(code, reason)
    assert [(s.close_code, s.close_reason) for s in sockets] == [expected] * 2


async def test_fake_pair_close_with_a_code_and_no_reason_delivers_an_empty_reason() -> None:
    first, second = fake_pair()
    await first.close(1000)
    assert await rest(second) == [CloseReceived(1000, "")]


async def test_fake_pair_wakes_a_waiting_reader() -> None:
    first, second = fake_pair()
    receiving = asyncio.ensure_future(anext(aiter(second.events)))
    await asyncio.sleep(0)
    first.send_text("late")
    assert await asyncio.wait_for(receiving, TIMEOUT) == TextDataReceived("late")


@pytest.mark.parametrize("closer", [0, 1], ids=["closing side", "other side"])
async def test_fake_pair_send_and_close_after_a_close_raise_connection_closed(
    closer: int,
) -> None:
    sockets = fake_pair()
    await sockets[closer].close()
    for socket in sockets:
        with pytest.raises(WebSocketConnectionClosed, match="Connection Closed"):
            socket.send_text("late")
        with pytest.raises(WebSocketConnectionClosed):
            socket.send_bytes(b"late")
        with pytest.raises(WebSocketConnectionClosed):
            await socket.close()


@pytest.mark.parametrize(("code", "reason"), [(1004, None), (5000, None), (1000, "x" * 124)])
async def test_fake_pair_close_rejects_what_may_not_be_sent(code: int, reason: str | None) -> None:
    first, second = fake_pair()
    with pytest.raises(ValueError):
        await first.close(code, reason)
    first.send_text("still open")
    assert await asyncio.wait_for(anext(aiter(second.events)), TIMEOUT) == TextDataReceived(
        "still open"
    )


async def test_fake_pair_send_bytes_copies_a_mutable_buffer() -> None:
    first, second = fake_pair()
    data = bytearray(b"abc")
    first.send_bytes(data)
    data[0] = ord("z")
    event = await asyncio.wait_for(anext(aiter(second.events)), TIMEOUT)
    assert event == BinaryDataReceived(b"abc")
    assert isinstance(event, BinaryDataReceived)
    assert type(event.data) is bytes


async def test_fake_pair_rejects_the_wrong_message_types() -> None:
    first, _ = fake_pair()
    with pytest.raises(TypeError):
        first.send_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        first.send_bytes("text")  # type: ignore[arg-type]


async def test_fake_pair_events_are_the_same_iterator_every_time() -> None:
    first, second = fake_pair()
    assert first.events is first.events
    first.send_text("x")
    waiting = asyncio.ensure_future(anext(first.events))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already waiting"):
        await anext(first.events)
    await second.close()
    assert await asyncio.wait_for(waiting, SHORT) == CloseReceived(1005, "")
