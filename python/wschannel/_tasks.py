"""Small asyncio helpers the channels share: tasks kept alive, iterators closed quietly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
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
