"""Small asyncio helpers the channels share: tasks kept alive, iterators closed quietly, a
gate where paused reading or writing waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any


def _retrieve_exception(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved: it is also reported elsewhere (the stream)."""
    if not future.cancelled():
        future.exception()


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that was not exhausted (an async generator, a subscription)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):  # the source is abandoned: its errors are moot
            await aclose()


def _close_iterator(iterator: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> None:
    if getattr(iterator, "aclose", None) is not None:
        spawn(loop, _aclose(iterator))


_background: set[asyncio.Task[Any]] = set()


def spawn(
    loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    """Run ``coroutine`` in a task that is kept alive until it finishes (asyncio keeps only
    weak references to tasks)."""
    task = loop.create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


class Gate:
    """Open, or shut until opened again: where a driver's reading (or a writer waiting
    for the write buffer to drain) waits while paused. ``create_future`` makes the future
    the waiters share (asyncio's loop's, or the byte stream's trio facade's)."""

    __slots__ = ("_create_future", "_opened", "is_open")

    def __init__(self, create_future: Callable[[], Any]) -> None:
        self._create_future = create_future
        self._opened: Any = None  # resolves when the gate opens; made by the first waiter
        self.is_open = True

    def shut(self) -> None:
        self.is_open = False

    def open(self) -> None:
        self.is_open = True
        opened, self._opened = self._opened, None
        if opened is not None and not opened.done():
            opened.set_result(None)

    async def wait(self) -> None:
        """Return once the gate is open (at once if it is)."""
        while not self.is_open:
            opened = self._opened
            if opened is None:
                opened = self._opened = self._create_future()
            await opened
