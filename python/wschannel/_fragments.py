"""Streaming a message: what every flavour's ``send_fragments(chunks)``, ``fragments()``
and ``delivery=`` option check the same way (the chunks' types, the pieces' limit, the
option's value), and :class:`Turns`, the one-message-at-a-time lock of the drivers that run
on asyncio or on trio's facade (:mod:`wschannel.bytestream`). Pure Python: the browser's
channel (:mod:`wschannel.html`, no engine) uses it too."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

from ._message import binary_view
from .exceptions import WebSocketConnectionClosed

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._wschannel import Fragment

__all__ = [
    "ABORTED",
    "Delivery",
    "Turns",
    "check_chunk",
    "check_pieces_limit",
    "chunk_source",
    "closed_midway",
    "in_pieces",
    "pieces",
    "pieces_limit",
]

Delivery: TypeAlias = Literal["messages", "pieces"]
"""How a connection delivers what it receives, from its first frame (``connect`` and
``serve``'s ``delivery=``): whole messages, or pieces (:class:`~wschannel.Fragment`)."""

ABORTED: Final = "a fragmented message could not be finished"
"""The reason of the 1011 close that ends a fragmented message which cannot be finished."""


def in_pieces(delivery: object) -> bool:
    """``delivery=`` checked: true for ``"pieces"``; ``ValueError`` saying what to pass."""
    if delivery == "pieces":
        return True
    if delivery == "messages":
        return False
    raise ValueError(
        f"delivery must be 'messages' (whole messages, the default) or 'pieces' (messages "
        f"in pieces from the first frame, see fragments()), not {delivery!r}."
    )


def check_pieces_limit(max_message_size: object) -> None:
    """``fragments(max_message_size=...)`` checked: ``...``, ``None`` or bytes >= 0."""
    if max_message_size is ... or max_message_size is None:
        return
    if not isinstance(max_message_size, int) or max_message_size < 0:
        raise ValueError(
            f"max_message_size must be a number of bytes >= 0 or None, not {max_message_size!r}"
        )


def pieces_limit(default: int | None, max_message_size: int | EllipsisType | None) -> int | None:
    """The limit of a message in pieces: ``max_message_size``, or ``default`` for ``...``."""
    return default if max_message_size is ... else max_message_size


async def pieces(messages: AsyncIterator[Any]) -> AsyncIterator[Fragment]:
    """A stream's items as pieces: a whole message (received before pieces were asked for)
    as one piece, with ``last``."""
    from ._wschannel import Fragment  # not at import: the browser's channel has no engine

    async for item in messages:
        yield item if type(item) is Fragment else Fragment(item)


def chunk_source(
    chunks: object,
) -> tuple[AsyncIterator[str | Buffer] | None, Iterator[str | Buffer] | None]:
    """``send_fragments``'s argument as an async iterator or an iterator (one is ``None``);
    ``TypeError`` for one message or anything else."""
    if isinstance(chunks, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            "send_fragments() takes an iterable of chunks, not one message: "
            "send one message with sink.add(message)."
        )
    if isinstance(chunks, AsyncIterable):
        return aiter(chunks), None
    if isinstance(chunks, Iterable):
        return None, iter(chunks)
    raise TypeError(
        "send_fragments() takes an iterable or async iterable of str or bytes-like "
        f"chunks, not {type(chunks).__name__}."
    )


END_OF_CHUNKS: Final = object()
"""What :func:`next_chunk` returns once there are no more (not ``None``: a chunk that is
``None`` is refused by :func:`check_chunk`, as any chunk of the wrong type)."""


async def next_chunk(
    source: AsyncIterator[str | Buffer] | None, items: Iterator[str | Buffer] | None
) -> object:
    """The next chunk from :func:`chunk_source`'s pair, or :data:`END_OF_CHUNKS`."""
    if source is not None:
        try:
            return await anext(source)
        except StopAsyncIteration:
            return END_OF_CHUNKS
    assert items is not None
    return next(items, END_OF_CHUNKS)


def check_chunk(chunk: object, text: bool | None) -> tuple[str | Buffer, bool]:
    """One chunk checked against the message's kind so far (``text``; ``None`` before the
    first chunk): what to send and whether it is text. ``TypeError`` for a chunk of the
    other kind or of another type."""
    is_text = isinstance(chunk, str)
    data: str | Buffer = chunk if is_text else binary_view(chunk)  # type: ignore[assignment]
    if text is not None and is_text != text:
        raise TypeError(
            "send_fragments(): the chunks of one message are all str (a text message) or "
            f"all bytes-like (binary); got {type(chunk).__name__} in a "
            f"{'text' if text else 'binary'} message: encode or decode it first."
        )
    return data, is_text


def closed_midway() -> WebSocketConnectionClosed:
    """The error of a ``send_fragments`` whose connection closed before the last chunk."""
    return WebSocketConnectionClosed(
        "the connection closed while a fragmented message was being sent: the rest of it "
        "was not sent (the channel's close_code and close_reason say why)"
    )


class _Future(Protocol):
    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def set_result(self, result: None) -> None: ...
    def __await__(self) -> Any: ...


class _Loop(Protocol):
    def create_future(self) -> Any: ...


class Turns:
    """A first-come first-served lock made of the loop's futures, so that it works on
    asyncio and on :mod:`wschannel.bytestream`'s trio facade alike: one fragmented message
    at a time. A waiter cancelled after it was given its turn passes the turn on."""

    __slots__ = ("_busy", "_loop", "_waiters")

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self._busy = False
        self._waiters: deque[_Future] = deque()

    async def acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        waiter: _Future = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # it was this one's turn: the next one's now
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn goes to it: still busy
                return
        self._busy = False
