"""The README's example, word for word, on CPython (tests/browser runs it in Chromium)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from conftest import TIMEOUT

import wschannel
from wschannel import WebSocketChannel, status


def readme_example() -> str:
    """The first Python program of README.md, as it is."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("```python\n") + len("```python\n")
    return readme[start : readme.index("```", start)]


async def test_readme_example_answers_a_greeting_and_closes_with_going_away() -> None:
    received: list[object] = []

    async def greet(channel: WebSocketChannel) -> None:
        channel.sink.add("hello")
        async for message in channel.stream:
            received.append(message)
        received.append((channel.close_code, channel.close_reason))

    try:
        server = await wschannel.serve(greet, "localhost", 1234)
    except OSError as error:  # another program holds the README's port
        pytest.skip(f"localhost:1234 is taken: {error}")
    async with server:
        program = await asyncio.create_subprocess_exec(sys.executable, "-c", readme_example())
        assert await asyncio.wait_for(program.wait(), TIMEOUT) == 0
        await asyncio.wait_for(server.close(), TIMEOUT)
    assert received == ["received!", (status.GOING_AWAY, "")]
