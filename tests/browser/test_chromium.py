"""``wschannel.html`` in a real browser: Pyodide in headless Chromium (Debian's ``chromium``).

One Chromium and one page for the module: the page loads Pyodide (npm's ``pyodide``, served
from 127.0.0.1 with nothing fetched elsewhere), writes the pure-Python ``wschannel`` files into
its filesystem and imports ``suite.py``; each test runs one check of the suite there over the
DevTools protocol and asserts it passed. Chromium is killed when the module ends.

``tests/browser/setup.sh`` installs Chromium and Pyodide.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from interop.browser.devtools import Chromium, DevTools, find_chromium

import wschannel
from wschannel import WebSocketChannel

from .harness import BOOT_TIMEOUT, CHECK_NAMES, TIMEOUT, Peers, outcome, pyodide_installed

CHROMIUM = find_chromium()

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is missing: run tests/browser/setup.sh"),
    pytest.mark.skipif(
        not pyodide_installed(), reason="Pyodide is missing: run tests/browser/setup.sh"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

Page = tuple[DevTools, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peers() -> AsyncIterator[Peers]:
    peers = Peers()
    await peers.start()
    try:
        yield peers
    finally:
        await peers.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the module, killed at the end."""
    assert CHROMIUM is not None
    browser = Chromium(CHROMIUM, TIMEOUT)
    try:
        yield browser
    finally:
        browser.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page(chromium: Chromium, peers: Peers) -> AsyncIterator[Page]:
    """The suite's page, with Pyodide loaded and the suite imported."""
    async with (
        DevTools.open(chromium.endpoint, TIMEOUT) as devtools,
        devtools.page(f"{peers.http_url}/") as session,
    ):
        version = await devtools.evaluate(session, "window.booted", BOOT_TIMEOUT)
        assert isinstance(version, str) and version
        yield devtools, session


@pytest.mark.parametrize("name", CHECK_NAMES)
async def test_check_passes_under_pyodide_in_chromium(page: Page, peers: Peers, name: str) -> None:
    devtools, session = page
    expression = f"window.runCheck({json.dumps(name)}, {json.dumps(peers.config())})"
    result = outcome(await devtools.evaluate(session, expression, 4 * TIMEOUT))
    assert result["ok"], result["error"]


def readme_example() -> str:
    """The first Python program of README.md, as it is."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```python\n") + len("```python\n")
    return readme[start : readme.index("```", start)]


async def test_readme_example_runs_unchanged_in_chromium(page: Page) -> None:
    """The README's example, word for word, against a server on localhost:1234 that greets."""
    received: list[object] = []

    async def greet(channel: WebSocketChannel) -> None:
        channel.sink.add("hello")
        async for message in channel.stream:
            received.append(message)
        received.append(channel.close_code)

    source = readme_example()
    assert 'WebSocketChannel.connect("ws://localhost:1234")' in source
    try:
        server = await wschannel.serve(greet, "localhost", 1234)
    except OSError as error:  # another program holds the README's port
        pytest.skip(f"localhost:1234 is taken: {error}")
    async with server:
        devtools, session = page
        expression = f"window.runSource({json.dumps(source)})"
        assert await devtools.evaluate(session, expression, 4 * TIMEOUT) == "ok"
        await asyncio.wait_for(server.close(), TIMEOUT)
    # A browser sends the README's 1001 as 1000 (browsers may only send 1000 and 3000-4999).
    assert received == ["received!", 1000]
