"""``wschannel.workers``: what ``app`` may be (a top-level function, or a
``functools.partial`` of one whose arguments pickle), and settings reaching real worker
processes that share a port."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import ssl
import threading
from collections.abc import AsyncIterator

import pytest
from conftest import TIMEOUT

from wschannel.io import IOWebSocketChannel
from wschannel.server import Handler
from wschannel.workers import Workers


@contextlib.asynccontextmanager
async def greeter(greeting: str) -> AsyncIterator[Handler]:
    """Each client is sent ``greeting`` and the worker's pid."""

    async def handler(channel: IOWebSocketChannel) -> None:
        channel.sink.add(json.dumps([greeting, os.getpid()]))
        async for _ in channel.stream:
            pass

    yield handler


def hello() -> contextlib.AbstractAsyncContextManager[Handler]:
    return greeter("hello")


def test_app_must_be_importable_by_the_workers() -> None:
    @contextlib.asynccontextmanager
    async def nested() -> AsyncIterator[Handler]:
        yield lambda channel: None  # pragma: no cover

    with pytest.raises(ValueError, match="at the top level of a module"):
        Workers(nested)
    with pytest.raises(ValueError, match="at the top level of a module"):
        Workers(lambda: nested())
    with pytest.raises(ValueError, match="at the top level of a module"):
        Workers(functools.partial(nested))
    with pytest.raises(ValueError, match=r"give functools\.partial only arguments that pickle"):
        Workers(functools.partial(greeter, threading.Lock()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sets no reuse_port"):
        Workers(hello, reuse_port=True)
    with pytest.raises(TypeError, match="ssl is a function that makes the SSLContext"):
        Workers(hello, ssl=ssl.create_default_context())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ssl cannot be sent to the worker processes"):
        Workers(hello, ssl=lambda: ssl.create_default_context())
    Workers(functools.partial(greeter, "hello"), workers=2)  # accepted (not started)
    Workers(hello, ssl=functools.partial(ssl.create_default_context, ssl.Purpose.CLIENT_AUTH))


async def test_a_partial_sends_its_settings_to_every_worker() -> None:
    workers = Workers(functools.partial(greeter, "hello from"), workers=2)
    await asyncio.to_thread(workers.start)
    try:
        pids = {process.pid for process in workers.processes}
        seen: set[int] = set()
        for _ in range(40):  # until both workers answered: the kernel spreads at random
            channel = IOWebSocketChannel.connect(f"ws://127.0.0.1:{workers.port}")
            greeting = await asyncio.wait_for(anext(aiter(channel.stream)), TIMEOUT)
            await channel.sink.close()
            assert isinstance(greeting, str)
            text, pid = json.loads(greeting)
            assert text == "hello from"
            seen.add(pid)
            if seen == pids:
                break
        assert seen == pids
    finally:
        await asyncio.to_thread(workers.stop)
